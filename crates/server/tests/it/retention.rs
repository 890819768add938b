//! The retention job as a server runs it: due at start and then every `every`, by the
//! server's clock; what it removed shows in `/api/retention` and in `/metrics`.

use std::time::Duration;

use gantry_server::clock::Clock;
use reqwest::Method;
use serde_json::Value;

use crate::on_both;
use crate::support::TestServer;

on_both!(old_builds_go_and_the_run_is_reported);

const DAY_MS: i64 = 24 * 3600 * 1000;

async fn last_run(server: &TestServer) -> Value {
    let status = server.api(Method::GET, "/retention", None).await;
    assert_eq!(status.status(), 200);
    let status: Value = status.json().await.expect("json");
    status["last_run"].clone()
}

mod cases {
    use super::*;

    pub async fn old_builds_go_and_the_run_is_reported(db: &str) {
        let clock = Clock::manual(gantry_store::now_ms());
        let server = TestServer::start_with(db, |config| {
            config.clock = clock.clone();
            config.schedule_poll = Duration::from_millis(30);
            config.retention = gantry_server::Retention {
                build_days: 7,
                builds_per_branch: 1,
                log_days: 2,
                every: Duration::from_secs(3600),
                ..gantry_server::Retention::default()
            };
        })
        .await;
        let (_git, _sha) = server.push_app().await;
        let (runner, assignment) = server.claim("r1").await;
        runner.pass(&assignment).await;
        server.wait_finished("app", 1).await;
        let restarted = server
            .api(Method::POST, "/repos/acme/app/builds/1/restart", None)
            .await;
        assert_eq!(restarted.status(), 201);
        let (runner, assignment) = server.claim("r1").await;
        runner.pass(&assignment).await;
        server.wait_finished("app", 2).await;
        // Wait for the notifier to report both (only reported builds may go).
        for _ in 0..100 {
            if server
                .store
                .builds_to_notify(10)
                .await
                .expect("reads")
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }

        // The start-up run found nothing old.
        let mut first = Value::Null;
        for _ in 0..100 {
            first = last_run(&server).await;
            if !first.is_null() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert_eq!(first["builds"], 0, "{first}");

        // Eight days on: build #1 goes, #2 (its branch's newest) stays without its logs.
        clock.advance(Duration::from_millis(8 * DAY_MS as u64));
        let mut report = Value::Null;
        for _ in 0..200 {
            report = last_run(&server).await;
            if report["at"] != first["at"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert_eq!(report["builds"], 1, "{report}");
        assert_eq!(report["build_logs"], 1, "{report}");
        let gone = server
            .api(Method::GET, "/repos/acme/app/builds/1", None)
            .await;
        assert_eq!(gone.status(), 404);
        let kept = server.wait_build("app", 2).await;
        assert_eq!(kept["status"], "success");
        assert!(kept["logs_removed_at"].is_i64(), "{kept}");
        let log = server
            .http
            .get(format!(
                "{}/api/repos/acme/app/builds/2/logs/1/1",
                server.url
            ))
            .send()
            .await
            .expect("answers")
            .text()
            .await
            .expect("text");
        assert!(
            log.contains("removed") && log.contains("--keep-logs-days"),
            "the raw log says where it went: {log}"
        );
        let page = server
            .http
            .get(format!("{}/acme/app/2/1/1", server.url))
            .send()
            .await
            .expect("answers")
            .text()
            .await
            .expect("html");
        assert!(page.contains("id=\"log-removed\""), "{page}");

        let metrics = server
            .http
            .get(format!("{}/metrics", server.url))
            .send()
            .await
            .expect("scrapes")
            .text()
            .await
            .expect("text");
        assert!(
            metrics.contains("gantry_retention_removed_total{kind=\"builds\"} 1"),
            "{metrics}"
        );
        server.stop().await;
    }
}
