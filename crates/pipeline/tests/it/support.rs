//! Helpers shared by the modules of this test binary.

use gantry_pipeline::{
    Context, Limits, Parsed, Plan, Source, Stage, StageStatus, StepKind, compile, parse,
    parse_files,
};
use gantry_test_support::fixture_upstream_path;

/// Parses and compiles `yaml` for `ctx`, failing the test with every diagnostic if invalid.
pub fn plan(yaml: &str, ctx: &Context) -> Plan {
    let parsed = parse(".gantry.yml", yaml);
    let Some(config) = parsed.config else {
        panic!("invalid pipeline:\n{}\n---\n{yaml}", parsed.diagnostics);
    };
    compile(&config, ctx).unwrap_or_else(|e| panic!("{e}\n---\n{yaml}"))
}

/// The warnings `file` gets, one line each.
pub fn warnings(file: &str, yaml: &str) -> Vec<String> {
    parse(file, yaml)
        .diagnostics
        .warnings()
        .map(ToString::to_string)
        .collect()
}

/// The errors `file` gets, one line each.
pub fn errors(file: &str, yaml: &str) -> Vec<String> {
    parse(file, yaml)
        .diagnostics
        .errors()
        .map(ToString::to_string)
        .collect()
}

/// A push to `main` of `acme/app`.
pub fn push() -> Context {
    let mut ctx = Context::push("acme/app", "main");
    ctx.commit = "0123456789abcdef0123456789abcdef01234567".into();
    ctx
}

/// Runs the steps of a stage in plan order the way the executor gates them: a step starts
/// if its conditions allow it at the stage's status at that moment; a step in `failing`
/// fails and, unless its failure is ignored, fails the stage. Returns the steps that started
/// (the clone left out).
pub fn simulate(stage: &Stage, failing: &[&str]) -> Vec<String> {
    let mut status = StageStatus::Passing;
    let mut started = Vec::new();
    for step in &stage.steps {
        if step.kind == StepKind::Clone || !step.runs_when(status) {
            continue;
        }
        started.push(step.name.clone());
        if failing.contains(&step.name.as_str()) && step.fails_stage() {
            status = StageStatus::Failing;
        }
    }
    started
}

/// The steps that start in the first stage of `yaml` for `ctx`, when `failing` steps fail.
pub fn started(yaml: &str, ctx: &Context, failing: &[&str]) -> Vec<String> {
    let plan = plan(yaml, ctx);
    simulate(&plan.stages[0], failing)
}

/// Builds a single-pipeline file from step bodies written as YAML list items.
pub fn pipeline(steps: &str) -> String {
    format!("kind: pipeline\nname: ci\nsteps:\n{steps}")
}

/// Each step of a stage with the steps it depends on, in plan order.
pub fn edges(stage: &Stage) -> Vec<(&str, Vec<&str>)> {
    stage
        .steps
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.depends_on.iter().map(String::as_str).collect(),
            )
        })
        .collect()
}

/// Parses a shared fixture under the path it has in its repository.
pub fn parse_fixture(file: &str, text: &str) -> Parsed {
    let name = fixture_upstream_path(file);
    parse_files(&[Source { name: &name, text }], &Limits::default())
}

/// A small deterministic generator (xorshift64*): seeded, so a failure replays.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}
