//! The claim: the oldest pending stage this runner can take (type, platform, labels,
//! owners, trust, locks and concurrency), read a page at a time until one is found, taken
//! under a fresh random epoch in the transaction that read it.

use std::collections::BTreeMap;

use super::*;

/// A pending stage as the claim sees it.
#[derive(sqlx::FromRow)]
struct Candidate {
    id: i64,
    labels: String,
    platform: String,
    backend: String,
    trusted: bool,
    name: String,
    repo_id: i64,
    owner: String,
    locks: String,
    concurrency: Option<i64>,
}

impl Candidate {
    fn gated(&self) -> bool {
        self.locks != "[]" || self.concurrency.is_some()
    }
}

/// What running stages hold against gated candidates: their locks, and how many run of each
/// repository's pipeline. Read once per claim (running stages are as many as the runners'
/// capacity), so a queue of held-back stages costs no query each.
#[derive(Debug, Default)]
struct Gates {
    locks: std::collections::BTreeSet<String>,
    running: BTreeMap<(i64, String), i64>,
}

impl Gates {
    fn from_running(rows: Vec<(i64, String, String)>) -> Self {
        let mut gates = Gates::default();
        for (repo_id, name, locks) in rows {
            gates
                .locks
                .extend(serde_json::from_str::<Vec<String>>(&locks).unwrap_or_default());
            *gates.running.entry((repo_id, name)).or_default() += 1;
        }
        gates
    }

    /// Whether a gated candidate may start now: none of its locks is held, and its pipeline
    /// runs fewer than its limit in its repository.
    fn open(&self, candidate: &Candidate) -> bool {
        let wanted: Vec<String> = serde_json::from_str(&candidate.locks).unwrap_or_default();
        let free = wanted.iter().all(|lock| !self.locks.contains(lock));
        let under_limit = candidate.concurrency.is_none_or(|limit| {
            let key = (candidate.repo_id, candidate.name.clone());
            self.running.get(&key).copied().unwrap_or(0) < limit
        });
        free && under_limit
    }
}

/// Whether the runner's offer may run the stage, and its labels and platform match.
fn runner_can_take(request: &ClaimRequest, candidate: &Candidate) -> bool {
    let placeable = crate::builds::backend_from_column(&candidate.backend).is_some_and(|backend| {
        gantry_proto::place(request.offer, backend, candidate.trusted).is_ok()
    });
    let owner_allowed = request.owners.is_empty()
        || request
            .owners
            .iter()
            .any(|owner| owner.eq_ignore_ascii_case(&candidate.owner));
    owner_allowed
        && placeable
        && labels_and_platform_match(request, &candidate.labels, &candidate.platform)
}

/// Whether a stage's labels and platform are among what a runner offers.
fn labels_and_platform_match(request: &ClaimRequest, labels: &str, platform: &str) -> bool {
    serde_json::from_str::<BTreeMap<String, String>>(labels).is_ok_and(|wanted| {
        gantry_proto::labels_mismatch(&request.labels, &request.platform, &wanted, platform)
            .is_none()
    })
}

/// A claimed stage: its id, epoch, build, plan, and whether the build started with it.
type Taken = (i64, i64, i64, String, bool);

/// Takes the lease on stage `id` inside `tx`, if it is still pending.
async fn take(tx: &mut Tx, id: i64, request: &ClaimRequest, now: i64) -> Result<Option<Taken>> {
    let row: Option<(i64, i64, i64, String)> = db::query_as(
        "UPDATE stages SET status = 'running', runner = $2, runner_instance = $3, \
         lease_epoch = $6, lease_expires_at = $4, started_at = $5 \
         WHERE id = $1 AND status = 'pending' RETURNING id, lease_epoch, build_id, plan",
    )
    .bind(id)
    .bind(&request.runner)
    .bind(&request.instance)
    .bind(request.lease_until)
    .bind(now)
    .bind(super::fresh_epoch())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((stage, epoch, build_id, plan)) = row else {
        return Ok(None);
    };
    let started = db::query(
        "UPDATE builds SET status = 'running', started_at = COALESCE(started_at, $2) \
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(build_id)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    Ok(Some((stage, epoch, build_id, plan, started)))
}

/// Pending stages a claim reads at once, in queue order, until it finds one to take.
const CLAIM_PAGE: i64 = 100;

/// PostgreSQL: a transaction-wide advisory lock taken before a claim looks at locks and
/// limits. The candidates' row locks alone would not keep two claims from both seeing a lock
/// free when the two stages are on different pages. (SQLite's
/// `BEGIN IMMEDIATE` serialises every claim.)
const SERIALISE_GATED_CLAIMS: &str = "SELECT pg_advisory_xact_lock(7254713498125541)";

/// The pending stages in queue order, a page at a time; the first one the runner can take
/// is taken, however many it cannot take wait ahead of it.
async fn claim_first(tx: &mut Tx, request: &ClaimRequest, now: i64) -> Result<Option<Taken>> {
    let postgres = tx.is_postgres();
    // PostgreSQL locks the page for this transaction and passes over what another claim
    // holds; SQLite's `BEGIN IMMEDIATE` already let no one else in.
    let lock = if postgres {
        " FOR UPDATE OF s SKIP LOCKED"
    } else {
        ""
    };
    let candidates_sql = format!(
        "SELECT s.id, s.labels, s.platform, s.backend, (r.trusted AND NOT b.fork) AS trusted, \
         s.name, b.repo_id, r.owner, s.locks, s.concurrency FROM stages s \
         JOIN builds b ON b.id = s.build_id JOIN repos r ON r.id = b.repo_id \
         WHERE s.status = 'pending' AND s.id > $1 ORDER BY s.id LIMIT $2{lock}"
    );
    let mut gates: Option<Gates> = None;
    let mut after = 0_i64;
    loop {
        let candidates: Vec<Candidate> = db::query_as(sqlx::AssertSqlSafe(candidates_sql.as_str()))
            .bind(after)
            .bind(CLAIM_PAGE)
            .fetch_all(&mut *tx)
            .await?;
        let Some(last) = candidates.last() else {
            return Ok(None);
        };
        after = last.id;
        for candidate in candidates.iter().filter(|c| runner_can_take(request, c)) {
            if candidate.gated() {
                if gates.is_none() {
                    if postgres {
                        // One gated claim at a time: two claims of stages wanting one lock
                        // must not both see it free.
                        db::query(SERIALISE_GATED_CLAIMS).execute(&mut *tx).await?;
                    }
                    let running: Vec<(i64, String, String)> = db::query_as(
                        "SELECT b.repo_id, s.name, s.locks FROM stages s \
                         JOIN builds b ON b.id = s.build_id WHERE s.status = 'running'",
                    )
                    .fetch_all(&mut *tx)
                    .await?;
                    gates = Some(Gates::from_running(running));
                }
                if !gates.as_ref().is_some_and(|g| g.open(candidate)) {
                    continue;
                }
            }
            return take(tx, candidate.id, request, now).await;
        }
        if (candidates.len() as i64) < CLAIM_PAGE {
            return Ok(None);
        }
    }
}

impl Store {
    /// Claims the oldest pending stage this runner can take, or `None`.
    pub async fn claim_next(&self, request: &ClaimRequest) -> Result<Option<Claim>> {
        let now = self.clock.now_ms();
        // SQLite: IMMEDIATE takes the write lock first, so the read and the update see one
        // state.
        let mut tx = self.begin_writing().await?;
        let claimed = claim_first(&mut tx, request, now).await?;
        tx.commit().await?;
        let Some((stage_id, epoch, build_id, plan, build_started)) = claimed else {
            return Ok(None);
        };
        if build_started {
            self.publish(Event::BuildChanged { build: build_id }).await;
        }
        let plan = serde_json::from_str(&plan).map_err(|e| StoreError::corrupt("stage plan", e))?;
        Ok(Some(Claim {
            stage_id,
            epoch,
            build_id,
            plan,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(labels: &[(&str, &str)], platform: &str) -> ClaimRequest {
        ClaimRequest {
            runner: "r".into(),
            instance: "i".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            platform: platform.into(),
            offer: Offer {
                docker: true,
                kubernetes: false,
                host: false,
            },
            lease_until: 0,
            owners: Vec::new(),
        }
    }

    fn candidate(labels: &str, platform: &str, backend: &str, trusted: bool) -> Candidate {
        Candidate {
            id: 1,
            labels: labels.into(),
            platform: platform.into(),
            backend: backend.into(),
            trusted,
            name: "ci".into(),
            repo_id: 1,
            owner: "acme".into(),
            locks: "[]".into(),
            concurrency: None,
        }
    }

    #[test]
    fn a_runner_of_some_owners_takes_their_stages_only() {
        let mut runner = request(&[], "linux/amd64");
        let stage = candidate("{}", "", "docker", false);
        assert!(runner_can_take(&runner, &stage), "no restriction");
        runner.owners = vec!["ACME".into()];
        assert!(
            runner_can_take(&runner, &stage),
            "owners compare without case"
        );
        runner.owners = vec!["evil".into()];
        assert!(!runner_can_take(&runner, &stage));
    }

    #[test]
    fn a_runner_takes_stages_whose_labels_and_platform_it_offers() {
        let runner = request(&[("gpu", "yes"), ("zone", "eu")], "linux/amd64");
        let takes = |labels, platform| {
            runner_can_take(&runner, &candidate(labels, platform, "docker", false))
        };
        assert!(takes("{}", ""));
        assert!(takes(r#"{"gpu":"yes"}"#, "linux/"));
        assert!(takes("{}", "linux/amd64"));
        assert!(!takes(r#"{"gpu":"no"}"#, ""));
        assert!(!takes(r#"{"arch":"x"}"#, ""));
        assert!(!takes("{}", "linux/arm64"));
        assert!(!takes("{}", "windows/"));
        assert!(!takes("not json", ""));
        assert!(takes("{}", "/amd64"));
    }

    /// An arm pipeline that names a variant runs only where the runner reports it (set with
    /// its `platform` label), never on a runner of another arch.
    #[test]
    fn a_variant_is_matched_when_the_stage_names_one() {
        let arm7 = request(&[], "linux/arm/v7");
        let arm = request(&[], "linux/arm");
        let takes = |runner: &ClaimRequest, platform| {
            runner_can_take(runner, &candidate("{}", platform, "docker", false))
        };
        assert!(takes(&arm7, "linux/arm/v7"));
        assert!(takes(&arm7, "linux/arm"));
        assert!(!takes(&arm7, "linux/arm/v6"));
        assert!(
            !takes(&arm, "linux/arm/v7"),
            "the runner's variant is unknown"
        );
        assert!(!takes(&arm7, "linux/arm64"));
    }

    #[test]
    fn a_runner_takes_only_stages_its_offer_may_run() {
        let docker = request(&[], "linux/amd64");
        let mut host = request(&[], "linux/amd64");
        host.offer = Offer {
            docker: false,
            kubernetes: false,
            host: true,
        };
        let takes = |runner: &ClaimRequest, backend, trusted| {
            runner_can_take(runner, &candidate("{}", "", backend, trusted))
        };
        assert!(takes(&docker, "docker", false));
        assert!(!takes(&docker, "local", true));
        assert!(!takes(&docker, "kubernetes", true));
        let mut cluster = request(&[], "linux/amd64");
        cluster.offer = Offer {
            kubernetes: true,
            ..Offer::default()
        };
        assert!(takes(&cluster, "kubernetes", false));
        assert!(
            takes(&cluster, "docker", false),
            "docker files run in pods unchanged"
        );
        assert!(!takes(&cluster, "local", true));
        assert!(
            !takes(&host, "docker", false),
            "untrusted work never runs on a host"
        );
        assert!(!takes(&host, "local", false));
        assert!(takes(&host, "local", true));
        assert!(takes(&host, "docker", true));
        assert!(!takes(&host, "no such backend", true));
    }
}
