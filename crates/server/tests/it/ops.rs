//! The operations layer decides once: each check of a request gives the same verdict through
//! the JSON API and through the pages' forms (same status, same message).

use reqwest::Method;
use serde_json::{Value, json};

use crate::on_both;
use crate::support::TestServer;

on_both!(validation_gives_the_same_verdict_through_the_api_and_the_pages);

/// `application/x-www-form-urlencoded` of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// One check: the API call, the page's form post, and the field both must name.
struct Case {
    what: &'static str,
    api: (Method, &'static str, Value),
    page: (&'static str, String),
    field: &'static str,
}

mod cases {
    use super::*;

    pub async fn validation_gives_the_same_verdict_through_the_api_and_the_pages(db: &str) {
        let server = TestServer::start(db).await;
        let git = gantry_test_support::GitRepo::new();
        git.commit(&[(".gantry.yml", crate::support::PIPELINE)], "first");
        server.add_repo("app", &git).await;
        let cookie = format!("gantry_session={}", server.token);
        let settings = server
            .http
            .get(format!("{}/acme/app/settings", server.url))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("answers")
            .text()
            .await
            .expect("html");
        let csrf = crate::support::csrf_of(&settings);
        // A build whose page holds the manual build form.
        let first = server
            .api(Method::POST, "/repos/acme/app/builds", Some(json!({})))
            .await;
        assert_eq!(first.status(), 201);
        let settings_form = |field: &str, value: &str| {
            let mut pairs = vec![
                ("csrf", csrf.as_str()),
                ("visibility", "public"),
                ("fork_policy", "run"),
                ("default_branch", "main"),
                ("timeout_minutes", "10"),
            ];
            pairs.retain(|(k, _)| *k != field);
            pairs.push((field, value));
            form(&pairs)
        };
        let public_key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me";
        let patch = |body: Value| (Method::PATCH, "/repos/acme/app", body);
        let cases = vec![
            Case {
                what: "a timeout out of range",
                api: patch(json!({"timeout_secs": 0})),
                page: ("/acme/app/settings", settings_form("timeout_minutes", "0")),
                field: "timeout_secs",
            },
            Case {
                what: "an empty default branch",
                api: patch(json!({"default_branch": " "})),
                page: ("/acme/app/settings", settings_form("default_branch", " ")),
                field: "default_branch",
            },
            Case {
                what: "an unknown fork policy",
                api: patch(json!({"fork_policy": "maybe"})),
                page: ("/acme/app/settings", settings_form("fork_policy", "maybe")),
                field: "fork_policy",
            },
            Case {
                what: "a public key given as a deploy key",
                api: patch(json!({"ssh_key": public_key})),
                page: (
                    "/acme/app/settings/credentials",
                    form(&[("csrf", &csrf), ("ssh_key", public_key)]),
                ),
                field: "ssh_key",
            },
            Case {
                what: "a parameter that is no variable name",
                api: (
                    Method::POST,
                    "/repos/acme/app/builds",
                    json!({"params": {"1BAD": "x"}}),
                ),
                page: (
                    "/acme/app/builds",
                    form(&[
                        ("csrf", &csrf),
                        ("branch", "main"),
                        ("params", "1BAD=x"),
                        ("from", "1"),
                    ]),
                ),
                field: "params",
            },
            Case {
                what: "a secret name with a space",
                api: (
                    Method::POST,
                    "/repos/acme/app/secrets",
                    json!({"name": "bad name", "value": "x"}),
                ),
                page: (
                    "/acme/app/settings/secrets",
                    form(&[("csrf", &csrf), ("name", "bad name"), ("value", "x")]),
                ),
                field: "name",
            },
            Case {
                what: "a role the server does not know",
                api: (
                    Method::PUT,
                    "/repos/acme/app/roles/octocat",
                    json!({"role": "boss"}),
                ),
                page: (
                    "/acme/app/settings/roles",
                    form(&[("csrf", &csrf), ("login", "octocat"), ("role", "boss")]),
                ),
                field: "role",
            },
            Case {
                what: "a token without a name",
                api: (Method::POST, "/tokens", json!({"name": " "})),
                page: ("/account/tokens", form(&[("csrf", &csrf), ("name", " ")])),
                field: "name",
            },
        ];
        for Case {
            what,
            api: (method, path, body),
            page: (page_path, page_form),
            field,
        } in cases
        {
            let api = server.api(method, path, Some(body)).await;
            let api_status = api.status();
            let answer: Value = api.json().await.expect("a JSON refusal");
            let message = answer["message"].as_str().expect("a message").to_owned();
            assert_eq!(
                (answer["error"].as_str(), answer["field"].as_str()),
                (Some("invalid"), Some(field)),
                "{what}: {answer}"
            );
            let page = server
                .http
                .post(format!("{}{page_path}", server.url))
                .header("cookie", &cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(page_form)
                .send()
                .await
                .expect("answers");
            let page_status = page.status();
            let html = page.text().await.expect("html");
            assert_eq!(api_status, page_status, "{what}: {message}\n{html}");
            assert_eq!(api_status, 400, "{what}");
            assert!(
                html.contains(&format!("id=\"refused\">{message}</p>")),
                "{what}: the page shows the refusal beside its form:\n{html}"
            );
        }
        // And a valid change passes both ways.
        let api = server
            .api(
                Method::PATCH,
                "/repos/acme/app",
                Some(json!({"timeout_secs": 1200})),
            )
            .await;
        assert_eq!(api.status(), 200);
        let page = server
            .http
            .post(format!("{}/acme/app/settings", server.url))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(settings_form("timeout_minutes", "30"))
            .send()
            .await
            .expect("answers");
        assert_eq!(page.status(), 200, "redirected to the settings page");
        let repo = server
            .store
            .repo_by_name("acme", "app")
            .await
            .expect("reads")
            .expect("exists");
        assert_eq!(repo.timeout_secs, 1800);
        server.stop().await;
    }
}
