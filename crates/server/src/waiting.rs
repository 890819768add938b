//! Why a stage is not running yet, in words, for the build page, the API and `gantry build
//! info`: waiting for approval, for a runner that can take it (by the same rules the claim
//! applies: `gantry_proto::place` for the type and trust, `gantry_proto::labels_mismatch`
//! for labels and platform), or for one of those to have room. Said from the runners seen
//! lately, so it changes as runners come and go.

use gantry_store::{Runner, Stage, Status, StoreError};

use crate::AppState;

/// A runner seen lately and how many stages it holds.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    runner: Runner,
    busy: i64,
}

/// The runners that asked for work lately (two long polls and a margin), each with its use.
pub(crate) async fn runners_seen(state: &AppState) -> Result<Vec<Seen>, StoreError> {
    let recent =
        state.config.clock.now_ms() - 2 * state.config.max_poll.as_millis() as i64 - 30_000;
    let running = state.store.running_stages_by_runner().await?;
    Ok(state
        .store
        .runners()
        .await?
        .into_iter()
        .filter(|r| r.last_seen_at >= recent)
        .map(|runner| {
            let busy = running
                .iter()
                .find(|(name, _)| *name == runner.name)
                .map_or(0, |(_, n)| *n);
            Seen { runner, busy }
        })
        .collect())
}

fn describe(runner: &Runner) -> String {
    let labels = if runner.labels.is_empty() {
        "no labels".to_owned()
    } else {
        let labels: Vec<String> = runner
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("labels: {}", labels.join(", "))
    };
    format!(
        "{} ({}, {}, {labels})",
        runner.name,
        runner.offer.describe(),
        runner.platform
    )
}

/// Why `stage` of `repo` waits: a lock another stage holds, its pipeline's concurrency limit,
/// or what [`waiting_for`] says of the runners; `None` when it does not wait.
pub(crate) async fn reason(
    state: &AppState,
    seen: &[Seen],
    repo: &gantry_store::Repo,
    stage: &Stage,
) -> Result<Option<String>, StoreError> {
    if stage.status == Status::Pending {
        let holders = state.store.lock_holders(&stage.locks).await?;
        if !holders.is_empty() {
            // Another repository's build is never named: whoever reads this one may not
            // see that one (a global lock, or a private repository of the same owner).
            let held: Vec<String> = holders
                .iter()
                .map(|h| {
                    let lock = crate::trigger::shown_lock(&h.lock);
                    if h.repo == repo.full_name() {
                        format!("`{lock}`, held by #{} (stage {})", h.build, h.stage)
                    } else {
                        format!("`{lock}`, held by a build of another repository")
                    }
                })
                .collect();
            return Ok(Some(format!("waiting for lock {}", held.join("; "))));
        }
        if let Some(limit) = stage.concurrency {
            let running = state.store.running_pipeline(repo.id, &stage.name).await?;
            if running.len() as i64 >= limit {
                let builds: Vec<String> = running.iter().map(|n| format!("#{n}")).collect();
                return Ok(Some(format!(
                    "waiting: pipeline `{}` runs in at most {limit} build(s) of {} at once (concurrency limit); running now: {}",
                    stage.name,
                    repo.full_name(),
                    builds.join(", ")
                )));
            }
        }
    }
    Ok(waiting_for(seen, repo.trusted, stage))
}

/// Why `stage` (of a repository `trusted` or not) waits for a runner, or `None` when it does
/// not (it runs, it ended, or a runner with room is about to take it).
pub(crate) fn waiting_for(seen: &[Seen], trusted: bool, stage: &Stage) -> Option<String> {
    match stage.status {
        Status::Blocked if stage.approval.is_some() => {
            let approval = stage.approval.as_ref()?;
            return Some(format!(
                "waiting for approval by {} to deploy to environment `{}` (Approve on the build page, or `gantry env approve`)",
                approval.approvers(),
                approval.environment
            ));
        }
        Status::Blocked => {
            return Some(
                "waiting for approval: a pull request from a fork runs once a user with write \
                 access approves it (the Approve button, or `gantry build approve`)"
                    .to_owned(),
            );
        }
        Status::Pending => {}
        _ => return None,
    }
    if seen.is_empty() {
        return Some(
            "waiting: no runner has asked for work lately; start one with `gantry runner \
             --server URL --secret SECRET`, or the server's embedded runner"
                .to_owned(),
        );
    }
    let mut refusals = Vec::new();
    let mut full = Vec::new();
    for Seen { runner, busy } in seen {
        let refused = gantry_proto::place(runner.offer, stage.backend, trusted)
            .err()
            .map(|refusal| refusal.to_string())
            .or_else(|| {
                gantry_proto::labels_mismatch(
                    &runner.labels,
                    &runner.platform,
                    &stage.labels,
                    &stage.platform,
                )
            });
        match refused {
            Some(reason) => refusals.push(format!("{}: {reason}", describe(runner))),
            None if *busy >= runner.capacity => {
                full.push(format!(
                    "{} ({busy} of {} stages)",
                    runner.name, runner.capacity
                ));
            }
            None => return None,
        }
    }
    Some(if full.is_empty() {
        format!("waiting: no runner can take it; {}", refusals.join("; "))
    } else {
        format!(
            "waiting: every runner that can take it is busy: {}",
            full.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use gantry_pipeline::model::PipelineType;
    use gantry_proto::Offer;

    use super::*;

    fn runner(name: &str, labels: &[(&str, &str)], platform: &str, capacity: i64) -> Runner {
        Runner {
            name: name.to_owned(),
            instance: format!("{name}-1"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            platform: platform.to_owned(),
            capacity,
            offer: Offer {
                docker: true,
                kubernetes: false,
                host: false,
            },
            last_seen_at: 0,
        }
    }

    fn stage(labels: &[(&str, &str)], platform: &str, status: Status) -> Stage {
        Stage {
            id: 1,
            build_id: 1,
            number: 1,
            name: "ci".to_owned(),
            status,
            error: None,
            depends_on: Vec::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            platform: platform.to_owned(),
            backend: PipelineType::Docker,
            runner: None,
            created_at: 0,
            started_at: None,
            finished_at: None,
            locks: Vec::new(),
            concurrency: None,
            approval: None,
            decided_by: None,
        }
    }

    #[test]
    fn a_stage_says_which_runner_lacks_what() {
        let seen = [
            Seen {
                runner: runner("r1", &[], "linux/amd64", 2),
                busy: 0,
            },
            Seen {
                runner: runner("r2", &[("gpu", "yes")], "linux/arm64", 1),
                busy: 0,
            },
        ];
        let gpu = stage(&[("gpu", "yes")], "linux/amd64", Status::Pending);
        assert_eq!(
            waiting_for(&seen, false, &gpu).as_deref(),
            Some(
                "waiting: no runner can take it; r1 (docker, linux/amd64, no labels): no label \
                 `gpu=yes`; r2 (docker, linux/arm64, labels: gpu=yes): it is linux/arm64, not \
                 linux/amd64"
            )
        );
        let plain = stage(&[], "", Status::Pending);
        assert_eq!(waiting_for(&seen, false, &plain), None, "r1 takes it now");
        assert_eq!(
            waiting_for(&seen, false, &stage(&[], "", Status::Running)),
            None
        );
    }

    #[test]
    fn a_stage_says_when_its_runners_are_busy_or_absent() {
        let seen = [Seen {
            runner: runner("r1", &[], "linux/amd64", 2),
            busy: 2,
        }];
        let plain = stage(&[], "", Status::Pending);
        assert_eq!(
            waiting_for(&seen, false, &plain).as_deref(),
            Some("waiting: every runner that can take it is busy: r1 (2 of 2 stages)")
        );
        let none = waiting_for(&[], false, &plain).unwrap_or_default();
        assert!(
            none.contains("no runner has asked for work lately"),
            "{none}"
        );
        let held = waiting_for(&seen, false, &stage(&[], "", Status::Blocked)).unwrap_or_default();
        assert!(held.starts_with("waiting for approval"), "{held}");
    }
}
