//! Sign-in with GitHub against a fake GitHub of the test's own (OAuth endpoints and the
//! API's `/user`): the whole flow, a wrong `state`, a tampered session cookie, admins by
//! login, and sign-out ending the session.

use axum::extract::Query;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use serde_json::json;
use std::collections::HashMap;

use crate::on_both;
use crate::support::TestServer;

on_both!(signing_in_with_github_starts_a_session_and_checks_its_state);

/// A fake GitHub: authorize redirects back with a code; the token endpoint accepts only
/// that code and the right secret; `/user` answers for the token it gave.
async fn fake_github() -> String {
    let app = axum::Router::new()
        .route(
            "/login/oauth/authorize",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                let back = format!(
                    "{}?code=good-code&state={}",
                    q.get("redirect_uri").cloned().unwrap_or_default(),
                    q.get("state").cloned().unwrap_or_default()
                );
                Redirect::to(&back)
            }),
        )
        .route(
            "/login/oauth/access_token",
            post(|axum::Json(body): axum::Json<serde_json::Value>| async move {
                if body["code"] == "good-code" && body["client_secret"] == "shh" {
                    axum::Json(json!({"access_token": "gho_fake", "token_type": "bearer"}))
                } else {
                    axum::Json(json!({"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."}))
                }
            }),
        )
        .route(
            "/user",
            get(|headers: axum::http::HeaderMap| async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer gho_fake") {
                    axum::Json(json!({"login": "octocat", "id": 1})).into_response()
                } else {
                    axum::http::StatusCode::UNAUTHORIZED.into_response()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

fn cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.strip_prefix(&format!("{name}="))
                .map(|rest| rest.split(';').next().unwrap_or("").to_owned())
        })
}

mod cases {
    use super::*;

    pub async fn signing_in_with_github_starts_a_session_and_checks_its_state(db: &str) {
        let github = fake_github().await;
        let (web, api) = (github.clone(), github.clone());
        let server = TestServer::start_with(db, move |config| {
            config.github_api = api;
            config.oauth = Some(gantry_server::oauth::OAuthConfig {
                github_url: web,
                client_id: "client-1".into(),
                client_secret: "shh".into(),
                admins: vec!["OctoCat".into()],
            });
        })
        .await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client");
        let login_page = http
            .get(format!("{}/login", server.url))
            .send()
            .await
            .expect("answers")
            .text()
            .await
            .expect("html");
        assert!(login_page.contains("Sign in with GitHub"));

        // To GitHub, with a state kept in a cookie.
        let start = http
            .get(format!("{}/login/github", server.url))
            .send()
            .await
            .expect("answers");
        assert!(start.status().is_redirection());
        let state_cookie = cookie(&start, "gantry_oauth_state").expect("a state cookie");
        let to_github = start.headers()["location"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(to_github.starts_with(&format!(
            "{github}/login/oauth/authorize?client_id=client-1"
        )));
        assert!(to_github.contains(&format!("state={state_cookie}")));

        // GitHub sends the browser back with a code and the state.
        let back = http.get(&to_github).send().await.expect("answers");
        let callback = back.headers()["location"]
            .to_str()
            .expect("ascii")
            .to_owned();

        // A wrong state, or none, is refused.
        let forged = callback.replace(&state_cookie, "forged-state");
        let refused = http
            .get(&forged)
            .header("cookie", format!("gantry_oauth_state={state_cookie}"))
            .send()
            .await
            .expect("answers");
        assert_eq!(refused.status(), 400);
        assert!(
            refused
                .text()
                .await
                .expect("body")
                .contains("state does not match")
        );
        let no_cookie = http.get(&callback).send().await.expect("answers");
        assert_eq!(no_cookie.status(), 400);

        // The right one starts a session.
        let done = http
            .get(&callback)
            .header("cookie", format!("gantry_oauth_state={state_cookie}"))
            .send()
            .await
            .expect("answers");
        assert!(done.status().is_redirection(), "{}", done.status());
        let session = cookie(&done, "gantry_session").expect("a session cookie");
        let set = done
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let home = http
            .get(format!("{}/", server.url))
            .header("cookie", format!("gantry_session={session}"))
            .send()
            .await
            .expect("answers")
            .text()
            .await
            .expect("html");
        assert!(
            home.contains(r#"<span class="who">octocat</span>"#),
            "{home}"
        );
        let tokens = server.store.tokens().await.expect("reads");
        let stored = tokens
            .iter()
            .find(|t| t.name == "session:octocat")
            .expect("the session");
        assert!(stored.admin, "octocat is an admin by login");

        // A tampered cookie is no session.
        let tampered = http
            .get(format!("{}/", server.url))
            .header("cookie", format!("gantry_session={session}x"))
            .send()
            .await
            .expect("answers")
            .text()
            .await
            .expect("html");
        assert!(!tampered.contains("octocat") && tampered.contains("Sign in"));

        // Signing out ends the session for good.
        let csrf = home
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("a CSRF token")
            .to_owned();
        let out = http
            .post(format!("{}/logout", server.url))
            .header("cookie", format!("gantry_session={session}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}"))
            .send()
            .await
            .expect("answers");
        assert!(out.status().is_redirection());
        assert!(
            server
                .store
                .tokens()
                .await
                .expect("reads")
                .iter()
                .all(|t| t.name != "session:octocat")
        );
        server.stop().await;
    }
}
