//! The stage's scheduler: which step is due, which is skipped and why, which to get ready
//! ahead, what a step's end means for the rest, and how the stage ends. Pure state: no
//! backend, no task, no clock. The executor asks it what to do and tells it what happened;
//! the rules (status gating, `when`, `failure: ignore | fast`, `depends_on`, `detach`, exit
//! code 78, cancel and time-out) live here only, tested table by table below.
//!
//! A step is due when every step it depends on is done. Due steps are handed out in passes
//! over the steps in file order, as many passes as it takes until none changes, so a step
//! skipped or ended at once makes its dependants due in the same round.

use std::collections::HashMap;

use gantry_pipeline::model::Failure;
use gantry_pipeline::{PlanStep, StageStatus, StepKind};
use gantry_proto::StepState;

/// A step that ends "successfully" with this code ends the stage early, as in Drone.
pub const EXIT_EARLY: i32 = 78;

/// Why the stage stopped starting steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Cancelled,
    TimedOut,
    ExitedEarly,
}

/// A step that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Due {
    /// It does not run, for this reason: report it skipped. It is done.
    Skip(usize, String),
    /// Start it. It is running until [`Scheduler::finished`] (a detached step: until
    /// [`Scheduler::detached`]; one that cannot start: [`Scheduler::could_not_start`]).
    Start(usize),
}

/// What a step's end asks of the steps still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reaction {
    Carry,
    /// Cancel every running step (`failure: fast`, exit code 78, the time-out).
    CancelRunning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Running,
    Done,
}

/// The steps each step waits for (its `depends_on`), by index.
pub(crate) fn parents(steps: &[PlanStep]) -> Vec<Vec<usize>> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    steps
        .iter()
        .map(|s| {
            s.depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect()
}

#[derive(Debug)]
pub(crate) struct Scheduler<'a> {
    steps: &'a [PlanStep],
    parents: Vec<Vec<usize>>,
    phase: Vec<Phase>,
    prepared: Vec<bool>,
    gate: StageStatus,
    failed: bool,
    errored: bool,
    stop: Option<Stop>,
    /// Where the current pass over the steps is, and whether it handed anything out.
    cursor: usize,
    changed: bool,
}

impl<'a> Scheduler<'a> {
    /// `services_errored`: a service could not start, so the stage is failing from the start.
    pub(crate) fn new(steps: &'a [PlanStep], services_errored: bool) -> Self {
        Self {
            steps,
            parents: parents(steps),
            phase: vec![Phase::Waiting; steps.len()],
            prepared: vec![false; steps.len()],
            gate: if services_errored {
                StageStatus::Failing
            } else {
                StageStatus::Passing
            },
            failed: false,
            errored: services_errored,
            stop: None,
            cursor: 0,
            changed: false,
        }
    }

    /// The next step that is due, if any: a skip is done at once, a start is running.
    pub(crate) fn next_due(&mut self) -> Option<Due> {
        loop {
            while self.cursor < self.steps.len() {
                let i = self.cursor;
                self.cursor += 1;
                if self.phase[i] != Phase::Waiting
                    || !self.parents[i]
                        .iter()
                        .all(|&p| self.phase[p] == Phase::Done)
                {
                    continue;
                }
                self.changed = true;
                return Some(match self.skip_reason(&self.steps[i]) {
                    Some(reason) => {
                        self.phase[i] = Phase::Done;
                        Due::Skip(i, reason)
                    }
                    None => {
                        self.phase[i] = Phase::Running;
                        Due::Start(i)
                    }
                });
            }
            self.cursor = 0;
            if !std::mem::take(&mut self.changed) {
                return None;
            }
        }
    }

    fn skip_reason(&self, step: &PlanStep) -> Option<String> {
        match self.stop {
            Some(Stop::Cancelled) => Some("the build was cancelled".to_owned()),
            Some(Stop::TimedOut) => Some("the stage timed out".to_owned()),
            Some(Stop::ExitedEarly) => {
                Some("a step ended the stage early (exit code 78)".to_owned())
            }
            None if !step.run => Some(
                step.reason
                    .clone()
                    .unwrap_or_else(|| "its conditions do not hold".into()),
            ),
            None if !step.runs_when(self.gate) => Some(match self.gate {
                StageStatus::Passing => "it runs only after a failure".to_owned(),
                StageStatus::Failing => "an earlier step failed".to_owned(),
            }),
            None => None,
        }
    }

    /// Steps worth getting ready now (their containers created) so they start as soon as
    /// they are due: ones that will run, whose dependencies are done or running. Each is
    /// named once. None once the stage stops.
    pub(crate) fn ready_ahead(&mut self) -> Vec<usize> {
        if self.stop.is_some() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            if self.prepared[i]
                || self.phase[i] != Phase::Waiting
                || !step.run
                || step.kind == StepKind::Clone
                || !self.parents[i]
                    .iter()
                    .all(|&p| self.phase[p] != Phase::Waiting)
            {
                continue;
            }
            self.prepared[i] = true;
            out.push(i);
        }
        out
    }

    /// Whether `ready_ahead` named step `i`.
    pub(crate) fn was_prepared(&self, i: usize) -> bool {
        self.prepared[i]
    }

    /// A started step ended.
    pub(crate) fn finished(
        &mut self,
        i: usize,
        state: StepState,
        exit_code: Option<i32>,
    ) -> Reaction {
        self.phase[i] = Phase::Done;
        match state {
            StepState::Success if exit_code == Some(EXIT_EARLY) => {
                self.stop.get_or_insert(Stop::ExitedEarly);
                Reaction::CancelRunning
            }
            StepState::Failure if self.steps[i].failure == Failure::Ignore => Reaction::Carry,
            StepState::Failure | StepState::Error | StepState::Killed => {
                self.gate = StageStatus::Failing;
                self.failed |= state == StepState::Failure;
                self.errored |= state == StepState::Error;
                if self.steps[i].failure == Failure::Fast {
                    Reaction::CancelRunning
                } else {
                    Reaction::Carry
                }
            }
            _ => Reaction::Carry,
        }
    }

    /// A started step could not be started (its environment could not be resolved): it
    /// errored.
    pub(crate) fn could_not_start(&mut self, i: usize) {
        self.phase[i] = Phase::Done;
        self.gate = StageStatus::Failing;
        self.errored = true;
    }

    /// A started step runs detached: its dependants need not wait for it.
    pub(crate) fn detached(&mut self, i: usize) {
        self.phase[i] = Phase::Done;
    }

    /// The stage stops starting steps (the first reason stays). Returns what to do with
    /// the running ones: a time-out cancels them; a cancel reaches them by itself.
    pub(crate) fn stop(&mut self, why: Stop) -> Reaction {
        if self.stop.is_some() {
            return Reaction::Carry;
        }
        self.stop = Some(why);
        match why {
            Stop::TimedOut | Stop::ExitedEarly => Reaction::CancelRunning,
            Stop::Cancelled => Reaction::Carry,
        }
    }

    pub(crate) fn stopped(&self) -> Option<Stop> {
        self.stop
    }

    /// How the stage ended, and why when it was stopped.
    pub(crate) fn outcome(&self, timeout: impl FnOnce() -> String) -> (StepState, Option<String>) {
        let status = match self.stop {
            Some(Stop::Cancelled | Stop::TimedOut) => StepState::Killed,
            _ if self.errored => StepState::Error,
            _ if self.failed => StepState::Failure,
            _ => StepState::Success,
        };
        let error = match self.stop {
            Some(Stop::Cancelled) => Some("cancelled".to_owned()),
            Some(Stop::TimedOut) => Some(timeout()),
            _ => None,
        };
        (status, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(yaml_steps: &str) -> Vec<PlanStep> {
        let yaml =
            format!("kind: pipeline\nname: ci\nclone: {{disable: true}}\nsteps:\n{yaml_steps}");
        let config = gantry_pipeline::parse(".gantry.yml", &yaml)
            .config
            .unwrap_or_else(|| panic!("a valid test pipeline:\n{yaml}"));
        let ctx = gantry_pipeline::Context::push("a/b", "main");
        gantry_pipeline::compile(&config, &ctx)
            .expect("plans")
            .stages
            .remove(0)
            .steps
    }

    /// A step that runs `x`, with extra keys (`when`, `failure`, `depends_on`...).
    fn step(name: &str, extra: &str) -> String {
        format!("  - name: {name}\n    image: x\n    commands: [x]\n{extra}")
    }

    /// What happened, as a test writes it.
    #[derive(Debug, Clone, Copy)]
    enum Happens {
        Ends(&'static str, StepState, Option<i32>),
        CannotStart(&'static str),
        Detaches(&'static str),
        Stops(Stop),
    }

    /// Runs `script` against the scheduler: after each event, every due step is taken.
    /// Returns the log of what the scheduler said, one line each.
    fn run(plan: &[PlanStep], script: &[Happens]) -> Vec<String> {
        let mut scheduler = Scheduler::new(plan, false);
        let mut log = Vec::new();
        let take_due = |scheduler: &mut Scheduler, log: &mut Vec<String>| {
            while let Some(due) = scheduler.next_due() {
                log.push(match due {
                    Due::Skip(i, reason) => format!("skip {}: {reason}", plan[i].name),
                    Due::Start(i) => format!("start {}", plan[i].name),
                });
            }
        };
        take_due(&mut scheduler, &mut log);
        let index = |name: &str| {
            plan.iter()
                .position(|s| s.name == name)
                .unwrap_or_else(|| panic!("no step {name}"))
        };
        for happens in script {
            let reaction = match *happens {
                Happens::Ends(name, state, code) => scheduler.finished(index(name), state, code),
                Happens::CannotStart(name) => {
                    scheduler.could_not_start(index(name));
                    Reaction::Carry
                }
                Happens::Detaches(name) => {
                    scheduler.detached(index(name));
                    Reaction::Carry
                }
                Happens::Stops(why) => scheduler.stop(why),
            };
            if reaction == Reaction::CancelRunning {
                log.push("cancel running".to_owned());
            }
            take_due(&mut scheduler, &mut log);
        }
        let (state, error) = scheduler.outcome(|| "timed out".to_owned());
        log.push(format!(
            "stage {} {}",
            state.as_str(),
            error.unwrap_or_default()
        ));
        log
    }

    use Happens::*;
    use StepState::{Error, Failure as Failed, Killed, Success};

    #[test]
    fn steps_run_in_order_and_a_failure_skips_the_rest_but_failure_steps() {
        let plan = steps(
            &[
                step("build", ""),
                step("test", ""),
                step("notify", "    when: {status: [failure]}\n"),
                step("always", "    when: {status: [success, failure]}\n"),
            ]
            .concat(),
        );
        let cases: &[(&[Happens], &[&str])] = &[
            (
                &[
                    Ends("build", Success, Some(0)),
                    Ends("test", Success, Some(0)),
                    Ends("always", Success, Some(0)),
                ],
                &[
                    "start build",
                    "start test",
                    "skip notify: it runs only after a failure",
                    "start always",
                    "stage success ",
                ],
            ),
            (
                &[
                    Ends("build", Failed, Some(1)),
                    Ends("notify", Success, Some(0)),
                    Ends("always", Success, Some(0)),
                ],
                &[
                    "start build",
                    "skip test: an earlier step failed",
                    "start notify",
                    "start always",
                    "stage failure ",
                ],
            ),
            (
                &[
                    Ends("build", Error, None),
                    Ends("notify", Success, Some(0)),
                    Ends("always", Failed, Some(2)),
                ],
                &[
                    "start build",
                    "skip test: an earlier step failed",
                    "start notify",
                    "start always",
                    "stage error ",
                ],
            ),
        ];
        for (script, expected) in cases {
            assert_eq!(run(&plan, script), *expected, "{script:?}");
        }
    }

    #[test]
    fn an_ignored_failure_keeps_the_stage_passing_and_a_fast_one_cancels_the_others() {
        let plan = steps(
            &[
                step("lint", "    failure: ignore\n    depends_on: []\n"),
                step("unit", "    failure: fast\n    depends_on: []\n"),
                step("slow", "    depends_on: []\n"),
                step("after", "    depends_on: [lint, unit, slow]\n"),
            ]
            .concat(),
        );
        assert_eq!(
            run(
                &plan,
                &[
                    Ends("lint", Failed, Some(1)),
                    Ends("unit", Success, Some(0)),
                    Ends("slow", Success, Some(0)),
                    Ends("after", Success, Some(0)),
                ]
            ),
            [
                "start lint",
                "start unit",
                "start slow",
                "start after",
                "stage success "
            ],
            "an ignored failure"
        );
        assert_eq!(
            run(
                &plan,
                &[
                    Ends("unit", Failed, Some(1)),
                    Ends("slow", Killed, None),
                    Ends("lint", Success, Some(0)),
                ]
            ),
            [
                "start lint",
                "start unit",
                "start slow",
                "cancel running",
                "skip after: an earlier step failed",
                "stage failure "
            ],
            "failure: fast"
        );
    }

    #[test]
    fn depends_on_waits_for_every_parent_and_a_skipped_parent_counts_as_done() {
        let plan = steps(
            &[
                step("a", "    depends_on: []\n"),
                step("b", "    depends_on: []\n    when: {branch: other}\n"),
                step("c", "    depends_on: [a, b]\n"),
                step("d", "    depends_on: [c]\n"),
            ]
            .concat(),
        );
        let why_not_b = plan[1]
            .reason
            .clone()
            .expect("the compiler says why b does not run");
        assert_eq!(
            run(
                &plan,
                &[
                    Ends("a", Success, Some(0)),
                    Ends("c", Success, Some(0)),
                    Ends("d", Success, Some(0))
                ]
            ),
            [
                "start a".to_owned(),
                format!("skip b: {why_not_b}"),
                "start c".to_owned(),
                "start d".to_owned(),
                "stage success ".to_owned()
            ]
        );
    }

    #[test]
    fn detached_steps_free_their_dependants_at_once() {
        let plan = steps(&[step("db", "    detach: true\n"), step("test", "")].concat());
        assert_eq!(
            run(&plan, &[Detaches("db"), Ends("test", Success, Some(0))]),
            ["start db", "start test", "stage success "]
        );
    }

    #[test]
    fn a_step_that_cannot_start_errors_the_stage() {
        let plan = steps(&[step("a", ""), step("b", "")].concat());
        assert_eq!(
            run(&plan, &[CannotStart("a")]),
            ["start a", "skip b: an earlier step failed", "stage error "]
        );
    }

    #[test]
    fn exit_code_78_ends_the_stage_early_as_a_success() {
        let plan = steps(
            &[
                step("check", ""),
                step("build", ""),
                step("report", "    when: {status: [success, failure]}\n"),
            ]
            .concat(),
        );
        assert_eq!(
            run(&plan, &[Ends("check", Success, Some(EXIT_EARLY))]),
            [
                "start check",
                "cancel running",
                "skip build: a step ended the stage early (exit code 78)",
                "skip report: a step ended the stage early (exit code 78)",
                "stage success "
            ]
        );
    }

    #[test]
    fn a_cancel_or_a_time_out_skips_what_did_not_start_and_kills_the_stage() {
        let plan = steps(&[step("a", ""), step("b", "")].concat());
        assert_eq!(
            run(
                &plan,
                &[
                    Stops(Stop::Cancelled),
                    Ends("a", Killed, None),
                    Stops(Stop::TimedOut)
                ]
            ),
            [
                "start a",
                "skip b: the build was cancelled",
                "stage killed cancelled"
            ],
            "a cancel reaches running steps by itself; the first reason stays"
        );
        assert_eq!(
            run(&plan, &[Stops(Stop::TimedOut), Ends("a", Killed, None)]),
            [
                "start a",
                "cancel running",
                "skip b: the stage timed out",
                "stage killed timed out"
            ]
        );
    }

    #[test]
    fn steps_are_prepared_once_when_their_parents_have_started() {
        let plan = steps(
            &[
                step("a", ""),
                step("b", ""),
                step("c", "    when: {branch: other}\n"),
                step("d", ""),
            ]
            .concat(),
        );
        let mut scheduler = Scheduler::new(&plan, false);
        assert_eq!(scheduler.next_due(), Some(Due::Start(0)));
        assert_eq!(scheduler.next_due(), None, "b waits for a");
        assert_eq!(scheduler.ready_ahead(), [1], "b, whose parent runs");
        assert_eq!(scheduler.ready_ahead(), Vec::<usize>::new(), "once");
        scheduler.finished(0, Success, Some(0));
        assert_eq!(scheduler.next_due(), Some(Due::Start(1)));
        assert_eq!(
            scheduler.ready_ahead(),
            Vec::<usize>::new(),
            "c never runs; d waits for c"
        );
        scheduler.stop(Stop::Cancelled);
        scheduler.finished(1, Killed, None);
        assert_eq!(
            scheduler.ready_ahead(),
            Vec::<usize>::new(),
            "nothing once stopped"
        );
    }

    #[test]
    fn a_service_that_could_not_start_makes_the_stage_fail_from_the_start() {
        let plan = steps(
            &[
                step("test", ""),
                step("report", "    when: {status: [failure]}\n"),
            ]
            .concat(),
        );
        let mut scheduler = Scheduler::new(&plan, true);
        assert_eq!(
            scheduler.next_due(),
            Some(Due::Skip(0, "an earlier step failed".to_owned()))
        );
        assert_eq!(scheduler.next_due(), Some(Due::Start(1)));
        scheduler.finished(1, Success, Some(0));
        assert_eq!(scheduler.outcome(String::new), (Error, None));
    }
}
