//! Sign-in with GitHub against a fake GitHub of the test's own (OAuth endpoints and the
//! API's `/user`): the whole flow, a wrong `state`, a tampered session cookie, admins by
//! login, and sign-out ending the session.

use crate::on_both;
use crate::support::{FakeGitHub, TestServer, set_cookie};

on_both!(signing_in_with_github_starts_a_session_and_checks_its_state);

mod cases {
    use super::*;

    pub async fn signing_in_with_github_starts_a_session_and_checks_its_state(db: &str) {
        let fake = FakeGitHub::start().await;
        fake.sign_in_as("octocat");
        let github = fake.url.clone();
        let server =
            TestServer::start_with(db, |config| fake.configure(config, &["OctoCat"])).await;
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
        let state_cookie = set_cookie(&start, "gantry_oauth_state").expect("a state cookie");
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
        let session = set_cookie(&done, "gantry_session").expect("a session cookie");
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
            home.contains(r#"<a class="who" href="/account">octocat</a>"#),
            "{home}"
        );
        let user = server
            .store
            .user_by_login("octocat")
            .await
            .expect("reads")
            .expect("the user is recorded");
        assert!(user.admin, "octocat is an admin by login");
        let tokens = server.store.tokens_of(user.id).await.expect("reads");
        assert!(
            tokens.len() == 1 && tokens[0].session && !tokens[0].admin,
            "{tokens:?}"
        );
        let sealed = server
            .store
            .user_github_token(user.id)
            .await
            .expect("reads")
            .expect("the GitHub token is kept");
        assert!(
            !String::from_utf8_lossy(&sealed).contains("gho_octocat"),
            "sealed, never in the clear"
        );

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
        let csrf = crate::support::csrf_of(&home);
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
                .tokens_of(user.id)
                .await
                .expect("reads")
                .is_empty(),
            "the session is gone"
        );
        server.stop().await;
        fake.stop();
    }
}
