//! `/metrics` scraped and read with a real Prometheus text parser (`prometheus-parse`), after
//! a build, a duplicate delivery and a bad signature; the metrics token; `/readyz`.

use std::collections::BTreeMap;

use gantry_test_support::webhook;

use crate::on_both;
use crate::support::TestServer;

on_both!(
    a_scrape_counts_builds_deliveries_runners_and_steps,
    the_metrics_token_guards_the_scrape,
);

/// Every sample as `name{label="value",...}` → value, labels sorted.
fn scrape(text: &str) -> BTreeMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    parsed
        .samples
        .into_iter()
        .filter_map(|sample| {
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            labels.sort();
            let name = if labels.is_empty() {
                sample.metric
            } else {
                format!("{}{{{}}}", sample.metric, labels.join(","))
            };
            Some((name, value))
        })
        .collect()
}

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = server.http.get(format!("{}{path}", server.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("answers")
}

/// `/metrics` of `server`, read.
async fn scraped(server: &TestServer) -> BTreeMap<String, f64> {
    let text = get(server, "/metrics", None)
        .await
        .text()
        .await
        .expect("text");
    scrape(&text)
}

mod cases {
    use super::*;

    pub async fn a_scrape_counts_builds_deliveries_runners_and_steps(db: &str) {
        let server = TestServer::start(db).await;
        let (_git, sha) = server.push_app().await;
        // The same delivery again, and one with a wrong signature.
        let payload = webhook::push("acme/app", "main", &sha, "first");
        let again = server.deliver("push", "d-1", &payload).await;
        assert_eq!(again.status(), 200);
        let body = serde_json::to_vec(&payload).expect("json");
        let forged = server
            .deliver_raw("push", "d-2", body, Some("sha256=00"))
            .await;
        assert_eq!(forged.status(), 401);

        server.wait_build("app", 1).await;
        let queued = scraped(&server).await;
        assert_eq!(
            queued.get("gantry_stage_queue_depth"),
            Some(&1.0),
            "{queued:#?}"
        );
        assert!(queued["gantry_stage_queue_oldest_wait_seconds"] >= 0.0);

        let (runner, assignment) = server.claim("r1").await;
        let running = scraped(&server).await;
        assert_eq!(
            running.get("gantry_stages_running"),
            Some(&1.0),
            "{running:#?}"
        );
        assert_eq!(running.get("gantry_runners_connected"), Some(&1.0));
        assert_eq!(running.get("gantry_runner_busy{runner=\"r1\"}"), Some(&1.0));
        assert!(running.contains_key("gantry_runner_capacity{runner=\"r1\"}"));
        runner.pass(&assignment).await;
        server.wait_finished("app", 1).await;

        let response = get(&server, "/metrics", None).await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("text");
        let done = scrape(&text);
        assert_eq!(
            done.get("gantry_builds{status=\"success\"}"),
            Some(&1.0),
            "{text}"
        );
        assert_eq!(done.get("gantry_stage_queue_depth"), Some(&0.0));
        assert_eq!(done.get("gantry_stages_running"), Some(&0.0));
        for (outcome, count) in [("queued", 1.0), ("duplicate", 1.0), ("refused", 1.0)] {
            assert_eq!(
                done.get(&format!(
                    "gantry_webhook_deliveries_total{{outcome=\"{outcome}\"}}"
                )),
                Some(&count),
                "{outcome}: {text}"
            );
        }
        let steps = assignment.stage.steps.iter().filter(|s| s.run).count() as f64;
        assert_eq!(
            done.get("gantry_step_duration_seconds_count"),
            Some(&steps),
            "{text}"
        );
        assert_eq!(done.get("gantry_lease_expiries_total"), Some(&0.0));

        let ready = get(&server, "/readyz", None).await;
        assert_eq!(ready.status(), 200);
        server.stop().await;
    }

    pub async fn the_metrics_token_guards_the_scrape(db: &str) {
        let server = TestServer::start_with(db, |config| {
            config.metrics_token = Some("scrape-me".into());
        })
        .await;
        let refused = get(&server, "/metrics", None).await;
        assert_eq!(refused.status(), 401);
        let body = refused.text().await.expect("text");
        assert!(body.contains("--metrics-token"), "{body}");
        assert_eq!(get(&server, "/metrics", Some("wrong")).await.status(), 401);
        let allowed = get(&server, "/metrics", Some("scrape-me")).await;
        assert_eq!(allowed.status(), 200);
        let text = allowed.text().await.expect("text");
        assert!(
            scrape(&text).contains_key("gantry_runners_connected"),
            "{text}"
        );
        // Health and readiness stay open.
        assert_eq!(get(&server, "/healthz", None).await.status(), 200);
        assert_eq!(get(&server, "/readyz", None).await.status(), 200);
        server.stop().await;
    }
}
