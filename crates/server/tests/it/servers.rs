//! Two servers on one PostgreSQL database, as replicas behind one address run: a runner's
//! reports may reach either, a viewer on one follows a log the other stores, and a delivery
//! that reaches both makes one build and one set of messages.

use std::time::Duration;

use gantry_proto::StepState;
use gantry_test_support::{GitRepo, postgres_database, webhook};

use crate::support::{PIPELINE, Receiver, TestServer};

/// Two servers on one fresh PostgreSQL database (the second finds the first's admin token).
async fn two_servers(
    tweak: impl Fn(&mut gantry_server::ServerConfig) + Clone,
) -> (TestServer, TestServer) {
    let url = postgres_database().await;
    let a = TestServer::start_with(&url, tweak.clone()).await;
    let mut b = TestServer::start_with(&url, tweak).await;
    b.token = a.token.clone();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_one_server_follows_a_log_stored_through_the_other() {
    let (a, b) = two_servers(|_| {}).await;
    let (_git, _sha) = a.push_app().await;
    // The runner talks to B, then to A (B died, say), then to B again.
    let (on_b, assignment) = b.claim("r1").await;
    let on_a = a.runner("r1");
    on_b.step(&assignment, "test", StepState::Running, None)
        .await;
    on_b.logs(&assignment, "test", 1, &["one", "two"]).await;

    let url = format!("{}/api/repos/acme/app/builds/1/logs/1/2/stream", a.url);
    let mut stream = a.http.get(&url).send().await.expect("streams");
    let mut seen = String::new();
    let mut next = 3u64;
    let started = std::time::Instant::now();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), stream.chunk())
        .await
        .expect("lines arrive")
        .expect("reads")
    {
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if seen.contains(&format!("id: {}\n", next - 1)) && next <= 30 {
            // Lines go out through either server; some batches are sent twice (a retry
            // after a lost answer).
            let batch = (next - 3) / 2;
            let through = if batch.is_multiple_of(2) {
                &on_a
            } else {
                &on_b
            };
            let texts = [format!("line {next}"), format!("line {}", next + 1)];
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            through.logs(&assignment, "test", next, &texts).await;
            if batch.is_multiple_of(3) {
                on_b.logs(&assignment, "test", next, &texts).await;
            }
            next += 2;
            if next > 30 {
                on_b.step(&assignment, "test", StepState::Success, Some(0))
                    .await;
            }
        }
        if seen.contains("event: end") {
            break;
        }
    }
    let ids: Vec<u64> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|n| n.parse().expect("a number"))
        .collect();
    assert_eq!(
        ids,
        (1..=30).collect::<Vec<_>>(),
        "every line once, in order:\n{seen}"
    );
    eprintln!(
        "30 lines through two servers followed in {:?}",
        started.elapsed()
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_reaches_both_servers_makes_one_build_and_one_set_of_messages() {
    let receiver = Receiver::start().await;
    let github = format!("{}/github", receiver.url);
    let (a, b) = two_servers(move |config| {
        config.github_api = github.clone();
        config.github_token = Some("gh-token".into());
    })
    .await;
    let git = GitRepo::new();
    let mut shas = Vec::new();
    for n in 0..6 {
        shas.push(git.commit(
            &[(".gantry.yml", PIPELINE), ("n", &n.to_string())],
            "change",
        ));
    }
    a.add_repo("app", &git).await;
    // Each push goes to both servers at once, and once more to one of them.
    for (n, sha) in shas.iter().enumerate() {
        let payload = webhook::push("acme/app", "main", sha, "change");
        let delivery = format!("d-{n}");
        let (first, second) = tokio::join!(
            a.deliver("push", &delivery, &payload),
            b.deliver("push", &delivery, &payload)
        );
        assert!(first.status().is_success() && second.status().is_success());
        let again = if n % 2 == 0 { &a } else { &b };
        assert!(
            again
                .deliver("push", &delivery, &payload)
                .await
                .status()
                .is_success()
        );
    }
    for number in 1..=6u64 {
        let build = a.wait_build("app", number).await;
        assert_eq!(build["status"], "pending", "{build}");
    }
    // Each build's two `pending` statuses (build and pipeline) arrive once, though both
    // servers' notifiers ran.
    let expected = 6 * 2;
    let statuses = || -> Vec<(String, serde_json::Value)> {
        receiver
            .received
            .lock()
            .expect("received")
            .iter()
            .filter(|r| r.path.contains("/statuses/"))
            .map(|r| (r.path.clone(), r.body["context"].clone()))
            .collect()
    };
    for _ in 0..200 {
        if statuses().len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both notifiers have had time for a second copy.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = statuses();
    let unique: std::collections::BTreeSet<_> =
        all.iter().map(|(p, c)| (p, c.to_string())).collect();
    assert_eq!(
        (all.len(), unique.len()),
        (expected, expected),
        "one status each: {all:#?}"
    );
    let builds = a.get_json("/repos/acme/app/builds").await;
    assert_eq!(builds.as_array().map(Vec::len), Some(6), "{builds}");
    a.stop().await;
    b.stop().await;
}
