//! Tokens scoped to a repository, from a GitHub App of the test's own: the server signs an
//! RS256 JWT that this GitHub verifies with the App's public key, asks for an installation
//! token restricted to the repository with `contents: read` (checked here), gives it to the
//! stage's clone and steps, and revokes it when the stage ends. The server's own personal
//! token is used only for its own fetch from its own GitHub host, and never reaches a step.

use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    KeyPair as _, RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey,
};
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use gantry_proto::{GitCredential, StepState};
use gantry_server::github_app::GitHubApp;
use gantry_test_support::git_http::PrivateGitServer;
use gantry_test_support::{GitRepo, webhook};
use serde_json::{Value, json};

use crate::on_both;
use crate::support::{PIPELINE, TestServer};

on_both!(a_stage_gets_an_app_token_for_its_repository_alone_revoked_when_it_ends);

const APP_ID: u64 = 4242;
const SERVER_TOKEN: &str = "ghp_server_personal_token";

#[derive(Default)]
struct Issued {
    /// Request bodies of token requests.
    requests: Vec<Value>,
    tokens: Vec<String>,
    revoked: Vec<String>,
    /// Requests whose JWT did not verify.
    refused: usize,
}

/// GitHub's App endpoints, verifying each JWT with the App's public key.
async fn fake_github(public_key: Vec<u8>) -> (String, Arc<Mutex<Issued>>) {
    let issued: Arc<Mutex<Issued>> = Arc::default();
    let verified = {
        let issued = Arc::clone(&issued);
        move |headers: &HeaderMap| {
            let ok = app_jwt_verifies(&public_key, headers);
            if !ok {
                issued.lock().expect("state").refused += 1;
            }
            ok
        }
    };
    let (v1, v2) = (verified.clone(), verified);
    let (i2, i3) = (Arc::clone(&issued), Arc::clone(&issued));
    let app = axum::Router::new()
        .route(
            "/repos/{owner}/{name}/installation",
            get(
                move |headers: HeaderMap, Path((owner, name)): Path<(String, String)>| async move {
                    if !v1(&headers) {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    if (owner.as_str(), name.as_str()) != ("acme", "app") {
                        return StatusCode::NOT_FOUND.into_response();
                    }
                    axum::Json(json!({"id": 77})).into_response()
                },
            ),
        )
        .route(
            "/app/installations/{id}/access_tokens",
            post(
                move |headers: HeaderMap,
                      Path(id): Path<u64>,
                      axum::Json(body): axum::Json<Value>| async move {
                    if !v2(&headers) || id != 77 {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    let mut state = i2.lock().expect("state");
                    let token = format!("ghs_minted_{}", state.tokens.len() + 1);
                    state.requests.push(body);
                    state.tokens.push(token.clone());
                    (
                        StatusCode::CREATED,
                        axum::Json(json!({"token": token, "expires_at": "2099-01-01T00:00:00Z"})),
                    )
                        .into_response()
                },
            ),
        )
        .route(
            "/installation/token",
            delete(move |headers: HeaderMap| async move {
                let token = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or_default()
                    .to_owned();
                i3.lock().expect("state").revoked.push(token);
                StatusCode::NO_CONTENT
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, issued)
}

/// Whether the request carries a JWT signed by the App's key (RS256), issued by the App, and
/// valid now.
fn app_jwt_verifies(public_key: &[u8], headers: &HeaderMap) -> bool {
    let Some(jwt) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return false;
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    if UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key)
        .verify(format!("{header}.{claims}").as_bytes(), &signature)
        .is_err()
    {
        return false;
    }
    let decode = |part: &str| -> Value {
        URL_SAFE_NO_PAD
            .decode(part)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    };
    let (header, claims) = (decode(header), decode(claims));
    let now = chrono::Utc::now().timestamp();
    header["alg"] == "RS256"
        && claims["iss"]
            .as_str()
            .and_then(|iss| iss.parse::<u64>().ok())
            == Some(APP_ID)
        && claims["iat"].as_i64().is_some_and(|iat| iat <= now)
        && claims["exp"]
            .as_i64()
            .is_some_and(|exp| exp > now && exp <= now + 600)
}

mod cases {
    use super::*;

    pub async fn a_stage_gets_an_app_token_for_its_repository_alone_revoked_when_it_ends(db: &str) {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).expect("generates a key");
        let der: Pkcs8V1Der = key.as_der().expect("encodes");
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(der.as_ref())
        );
        let (api, issued) = fake_github(key.public_key().as_ref().to_vec()).await;

        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", PIPELINE)], "first");
        // The repository on "GitHub", readable with the server's personal token.
        let github = PrivateGitServer::start(&git, "acme/app", "x-access-token", SERVER_TOKEN);
        let origin = github.url.trim_end_matches("/acme/app.git").to_owned();
        let app = GitHubApp::from_pem(APP_ID, &pem).expect("reads the App's key");
        let server = TestServer::start_with(db, |config| {
            config.github_api = api.clone();
            config.github_url = origin.clone();
            config.github_token = Some(SERVER_TOKEN.to_owned());
            config.github_app = Some(Arc::new(app));
        })
        .await;
        server.add_repo("app", &git).await;
        let updated = server
            .api(
                reqwest::Method::PATCH,
                "/repos/acme/app",
                Some(json!({"clone_url": github.url})),
            )
            .await;
        assert_eq!(updated.status(), 200);
        let pushed = server
            .deliver(
                "push",
                "d-app-1",
                &webhook::push("acme/app", "main", &sha, "first"),
            )
            .await;
        assert_eq!(pushed.status(), 202);

        let (runner, assignment) = server.claim("r1").await;
        let minted = "ghs_minted_1";
        match &assignment.clone_credential {
            Some(GitCredential::Basic { username, password }) => {
                assert_eq!(
                    (username.as_str(), password.as_str()),
                    ("x-access-token", minted)
                );
            }
            other => panic!("the clone gets the App's token, not {other:?}"),
        }
        let netrc = assignment
            .netrc
            .as_ref()
            .expect("steps get the scoped token");
        assert_eq!(netrc.password, minted);
        assert_ne!(netrc.password, SERVER_TOKEN);
        {
            let state = issued.lock().expect("state");
            assert_eq!(state.refused, 0, "every JWT verified");
            assert_eq!(
                state.requests,
                vec![json!({"repositories": ["app"], "permissions": {"contents": "read"}})],
                "one repository, contents read"
            );
        }
        // The server's own fetch used its personal token on its own host.
        assert!(github.served() > 0);

        runner.pass(&assignment).await;
        server.wait_finished("app", 1).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while issued.lock().expect("state").revoked.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the token was never revoked"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            issued.lock().expect("state").revoked,
            vec![minted.to_owned()]
        );

        // A fork's pull request: the clone still gets a scoped token, its steps none.
        let mut payload = webhook::pull_request("acme/app", 9, "feature", "main", &sha);
        payload["pull_request"]["head"]["repo"]["full_name"] = Value::from("evil/app");
        let delivered = server.deliver("pull_request", "d-app-2", &payload).await;
        assert_eq!(delivered.status(), 202);
        let (runner, assignment) = server.claim("r1").await;
        assert!(assignment.netrc.is_none(), "a fork's steps get no token");
        assert!(matches!(
            &assignment.clone_credential,
            Some(GitCredential::Basic { password, .. }) if password == "ghs_minted_2"
        ));
        runner.done(&assignment, StepState::Success).await;
        server.stop().await;
    }
}
