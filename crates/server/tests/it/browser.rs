//! The web UI in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (chromedriver). Each test starts the real server, plays the runner, and looks at what a
//! reader sees. Screenshots of each page go to `$CARGO_TARGET_TMPDIR/screenshots/`.

use fantoccini::Locator;
use gantry_proto::StepState;
use gantry_test_support::browser::Browser;
use gantry_test_support::{GitRepo, TempDir, webhook};
use serde_json::json;

use crate::support::{TestServer, line_in_view, shots, sign_in, sign_in_with};

/// The line numbers the log view shows, in order.
const SHOWN: &str = "Array.from(document.querySelectorAll('#log .line')).filter(l => l.querySelector('.text').textContent !== '').map(l => parseInt(l.id.slice(1)))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_step_s_log_arrives_live_and_a_reload_loses_no_line() {
    let dir = TempDir::new("browser-live");
    let server = TestServer::start(&dir.path().join("gantry.db").to_string_lossy()).await;
    let (runner, assignment) = server.running_step().await;
    runner
        .logs(
            &assignment,
            "test",
            1,
            &["one", "\u{1b}[32mtwo in green\u{1b}[0m", "three"],
        )
        .await;

    let browser = Browser::start().await;
    browser
        .open(&format!("{}/acme/app/1/1/2", server.url))
        .await;
    browser.until("line 3", "document.getElementById('L3') && document.getElementById('L3').textContent.includes('three')").await;
    let green = browser
        .value("getComputedStyle(document.querySelector('#L2 .text span')).color")
        .await;
    assert_eq!(green, "rgb(63, 185, 80)", "ANSI green is rendered");
    runner.logs(&assignment, "test", 4, &["four", "five"]).await;
    browser.until("line 5, live", "document.getElementById('L5') && document.getElementById('L5').textContent.includes('five')").await;
    browser.screenshot(&shots(), "step-live").await;

    // A reload mid-stream: what was there, then what comes, each line once.
    browser.client.refresh().await.expect("reloads");
    browser.until("line 5 after the reload", "document.getElementById('L5') && document.getElementById('L5').textContent.includes('five')").await;
    runner.logs(&assignment, "test", 6, &["six"]).await;
    browser.until("line 6 after the reload", "document.getElementById('L6') && document.getElementById('L6').textContent.includes('six')").await;
    let shown = browser.value(SHOWN).await;
    assert_eq!(shown, json!([1, 2, 3, 4, 5, 6]), "no gap and no duplicate");
    let texts = browser
        .value("Array.from(document.querySelectorAll('#log .line .text')).map(t => t.textContent).join('|')")
        .await;
    assert_eq!(texts, "one|two in green|three|four|five|six");

    runner
        .step(&assignment, "test", StepState::Success, Some(0))
        .await;
    runner.done(&assignment, StepState::Success).await;
    browser
        .until(
            "the step's final status",
            "document.querySelector('#step-status .s-success') !== null",
        )
        .await;
    browser.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_link_opens_on_its_line_highlighted_and_shift_click_selects_a_range() {
    let dir = TempDir::new("browser-anchor");
    let server = TestServer::start(&dir.path().join("gantry.db").to_string_lossy()).await;
    let (runner, assignment) = server.running_step().await;
    let texts: Vec<String> = (1..=1200).map(|n| format!("line number {n}")).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    runner.logs(&assignment, "test", 1, &texts).await;
    runner
        .step(&assignment, "test", StepState::Failure, Some(1))
        .await;
    runner.done(&assignment, StepState::Failure).await;

    let browser = Browser::start().await;
    browser
        .open(&format!("{}/acme/app/1/1/2#L700", server.url))
        .await;
    browser
        .until(
            "line 700 highlighted",
            "document.querySelector('#L700.hl') !== null",
        )
        .await;
    let visible = browser.value(&line_in_view(700)).await;
    assert_eq!(visible, json!(true), "the linked line is in view");
    assert_eq!(
        browser
            .value("document.querySelectorAll('#log .line.hl').length")
            .await,
        json!(1)
    );
    browser.screenshot(&shots(), "step-line-link").await;

    browser
        .client
        .execute("document.querySelector('#L702 .num').click();", vec![])
        .await
        .expect("clicks");
    browser
        .client
        .execute(
            "document.querySelector('#L705 .num').dispatchEvent(new MouseEvent('click', {bubbles: true, cancelable: true, shiftKey: true}));",
            vec![],
        )
        .await
        .expect("shift-clicks");
    browser
        .until("the range in the address", "location.hash === '#L702-L705'")
        .await;
    browser
        .until(
            "lines 702 to 705 highlighted",
            "document.querySelectorAll('#log .line.hl').length === 4 && document.querySelector('#L705.hl') !== null",
        )
        .await;
    browser.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_the_build_page_stops_the_build_and_the_status_changes() {
    let dir = TempDir::new("browser-cancel");
    let server = TestServer::start(&dir.path().join("gantry.db").to_string_lossy()).await;
    let (runner, assignment) = server.running_step().await;

    let browser = Browser::start().await;
    sign_in(&browser, &server).await;
    browser.open(&format!("{}/acme/app/1", server.url)).await;
    browser
        .until(
            "the running build",
            "document.querySelector('.build-status .s-running') !== null",
        )
        .await;
    browser.screenshot(&shots(), "build-running").await;
    // The runner, watching its lease, learns of the cancel and reports the stage killed.
    let watching = {
        let assignment = assignment.clone();
        tokio::spawn(async move {
            let status = runner.watch(&assignment).await;
            assert!(status.cancelled);
            runner
                .step(&assignment, "test", StepState::Killed, Some(137))
                .await;
            runner.done(&assignment, StepState::Killed).await;
        })
    };
    browser
        .client
        .find(Locator::Id("cancel"))
        .await
        .expect("a cancel button")
        .click()
        .await
        .expect("clicks cancel");
    watching.await.expect("the runner saw the cancel");
    browser
        .until(
            "the killed build, without a reload",
            "document.querySelector('.build-status .s-killed') !== null",
        )
        .await;
    browser.screenshot(&shots(), "build-killed").await;
    browser.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_errored_build_shows_the_pipeline_file_s_errors_and_pages_render() {
    let dir = TempDir::new("browser-errors");
    let server = TestServer::start(&dir.path().join("gantry.db").to_string_lossy()).await;
    let git = GitRepo::new();
    let broken = "kind: pipeline\nname: ci\nsteps:\n  - name: test\n    commands: [make]\n";
    let sha = git.commit(&[(".gantry.yml", broken)], "break the pipeline");
    server.add_repo("app", &git).await;
    server
        .deliver(
            "push",
            "d-1",
            &webhook::push("acme/app", "main", &sha, "break the pipeline"),
        )
        .await;
    server.wait_finished("app", 1).await;

    let browser = Browser::start().await;
    browser.open(&format!("{}/acme/app/1", server.url)).await;
    let errors = browser
        .client
        .find(Locator::Css("pre.errors"))
        .await
        .expect("the errors box")
        .text()
        .await
        .expect("its text");
    assert!(
        errors.starts_with(".gantry.yml:4:5: error: step `test` has no image"),
        "{errors}"
    );
    browser.screenshot(&shots(), "build-errored").await;

    browser.open(&format!("{}/", server.url)).await;
    browser
        .until(
            "the repository",
            "document.body.innerText.includes('acme/app')",
        )
        .await;
    browser.screenshot(&shots(), "repositories").await;
    browser.open(&format!("{}/acme/app", server.url)).await;
    browser
        .until(
            "the build in the list",
            "document.querySelector('tr[data-number=\"1\"] .s-error') !== null",
        )
        .await;
    browser.screenshot(&shots(), "builds").await;
    browser.open(&format!("{}/acme/nope", server.url)).await;
    browser
        .until("a 404 page", "document.body.innerText.includes('404')")
        .await;
    browser.screenshot(&shots(), "not-found").await;
    browser.open(&format!("{}/login", server.url)).await;
    browser.screenshot(&shots(), "login").await;
    // A phone's width: the build page still reads.
    browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("resizes");
    browser.open(&format!("{}/acme/app/1", server.url)).await;
    let overflow = browser
        .value("document.documentElement.scrollWidth <= window.innerWidth + 1")
        .await;
    assert_eq!(overflow, json!(true), "nothing wider than a phone's screen");
    browser.screenshot(&shots(), "build-phone").await;
    browser.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_keeps_secrets_and_settings_on_the_settings_page_and_makes_a_token() {
    let dir = TempDir::new("browser-settings");
    let server = TestServer::start(&dir.path().join("gantry.db").to_string_lossy()).await;
    let git = GitRepo::new();
    git.commit(&[(".gantry.yml", crate::support::PIPELINE)], "first");
    let repo = server.add_repo("app", &git).await;
    let browser = Browser::start().await;
    sign_in(&browser, &server).await;
    browser.open(&format!("{}/acme/app", server.url)).await;
    browser.click("#settings-link").await;
    browser
        .until(
            "the settings page",
            "document.querySelector('#add-secret') !== null",
        )
        .await;

    // A secret through the form: listed by name, its value nowhere on the page.
    browser
        .fill("#add-secret input[name=name]", "kubeconfig")
        .await;
    browser
        .fill(
            "#add-secret textarea[name=value]",
            "apiVersion: v1\nclusters: [very-secret-value]",
        )
        .await;
    browser.click("#add-secret button").await;
    browser
        .until(
            "the secret in the list",
            "document.querySelector('tr[data-secret=\"kubeconfig\"]') !== null",
        )
        .await;
    let shown = browser.value("document.body.innerHTML").await;
    assert!(
        !shown.to_string().contains("very-secret-value"),
        "the value never comes back"
    );
    let stored = server
        .store
        .secrets(&gantry_store::SecretScope::Repo(repo.id))
        .await
        .expect("reads");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].name, "kubeconfig");

    // A registry login through the form: listed by host and user, its password nowhere on the
    // page; then removed.
    browser
        .fill("#add-registry input[name=host]", "https://GHCR.io/")
        .await;
    browser
        .fill("#add-registry input[name=username]", "ci-bot")
        .await;
    browser
        .fill("#add-registry input[name=password]", "very-secret-token")
        .await;
    browser.click("#add-registry button").await;
    browser
        .until(
            "the login in the list",
            "document.querySelector('tr[data-registry=\"ghcr.io\"]') !== null",
        )
        .await;
    let shown = browser.value("document.body.innerHTML").await;
    assert!(
        shown.to_string().contains("ci-bot") && !shown.to_string().contains("very-secret-token"),
        "the user shown, the password never"
    );
    browser
        .click("tr[data-registry=\"ghcr.io\"] button.danger")
        .await;
    browser
        .until(
            "the login removed",
            "document.querySelector('#add-registry') !== null && document.querySelector('tr[data-registry]') === null",
        )
        .await;
    assert!(
        server
            .store
            .registries(&gantry_store::RegistryScope::Repo(repo.id))
            .await
            .expect("reads")
            .is_empty()
    );

    // Settings: private, held pull requests from forks.
    browser
        .value("(() => { document.getElementById('visibility').value = 'private'; document.querySelector('select[name=fork_policy]').value = 'approve'; window.unsaved = true; return true; })()")
        .await;
    browser.click("#save-settings").await;
    // The page the form leads to is a new document: the marker on the old one is gone.
    browser
        .until(
            "the saved settings",
            "!window.unsaved && document.getElementById('visibility') && document.getElementById('visibility').value === 'private'",
        )
        .await;
    let saved = server.store.repo(repo.id).await.expect("reads");
    assert_eq!(
        (saved.visibility, saved.fork_policy.as_str()),
        (gantry_store::Visibility::Private, "approve")
    );
    browser.screenshot(&shots(), "settings").await;

    // Credentials: a GitHub token and a deploy key, sealed, never shown; then removed.
    browser
        .fill(
            "#save-credentials input[name=github_token]",
            "ghp_from_the_page",
        )
        .await;
    browser
        .fill(
            "#save-credentials textarea[name=ssh_key]",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAsecretbody\n-----END OPENSSH PRIVATE KEY-----\n",
        )
        .await;
    browser.click("#save-credentials button").await;
    browser
        .until(
            "both credentials set",
            "document.querySelector('input[name=remove_github_token]') !== null && document.querySelector('input[name=remove_ssh_key]') !== null",
        )
        .await;
    let shown = browser.value("document.body.innerHTML").await.to_string();
    assert!(
        !shown.contains("ghp_from_the_page") && !shown.contains("secretbody"),
        "credentials never come back"
    );
    let saved = server.store.repo(repo.id).await.expect("reads");
    assert!(saved.github_token.starts_with("sealed:") && saved.ssh_key.starts_with("sealed:"));
    assert!(!saved.ssh_key.contains("secretbody") && !saved.ssh_key.contains('\r'));
    browser.click("input[name=remove_ssh_key]").await;
    browser.click("#save-credentials button").await;
    browser
        .until(
            "the deploy key removed",
            "document.querySelector('input[name=remove_ssh_key]') === null",
        )
        .await;
    let saved = server.store.repo(repo.id).await.expect("reads");
    assert!(saved.ssh_key.is_empty() && saved.github_token.starts_with("sealed:"));

    // Removing the secret.
    browser.click("tr[data-secret=\"kubeconfig\"] button").await;
    browser
        .until(
            "no secrets",
            "document.querySelector('tr[data-secret]') === null && document.querySelector('#secrets .empty') !== null",
        )
        .await;

    // A user's account page makes an API token, shown once, that works.
    let dev = server.user_with_token("dev").await;
    sign_in_with(&browser, &server, &dev).await;
    browser.open(&format!("{}/account", server.url)).await;
    browser
        .fill("#tokens input[name=name]", "deploy script")
        .await;
    browser.click("#create-token").await;
    browser
        .until(
            "the new token",
            "document.getElementById('new-token') !== null",
        )
        .await;
    let token = browser
        .value("document.getElementById('new-token').textContent.trim()")
        .await;
    let token = token.as_str().expect("the token's text").to_owned();
    assert!(token.starts_with("gantry_"), "{token}");
    browser.screenshot(&shots(), "account").await;
    let me: serde_json::Value = server
        .api_as(Some(&token), reqwest::Method::GET, "/user", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["login"], "dev", "the new token acts for its user");
    server.stop().await;
    browser.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_kept_on_the_settings_page_and_a_build_is_promoted_from_its_page() {
    let dir = TempDir::new("browser-schedules");
    let server = TestServer::start(&dir.path().join("gantry.db").to_string_lossy()).await;
    let (_git, _) = server.push_app().await;
    let (runner, assignment) = server.claim("r1").await;
    runner.pass(&assignment).await;
    server.wait_finished("app", 1).await;
    let browser = Browser::start().await;
    sign_in(&browser, &server).await;

    // A schedule through the form: listed with its next run; a wrong one says why.
    browser
        .open(&format!("{}/acme/app/settings", server.url))
        .await;
    browser
        .fill("#add-schedule input[name=name]", "nightly")
        .await;
    browser
        .fill("#add-schedule input[name=expression]", "every night")
        .await;
    browser.click("#add-schedule button").await;
    browser
        .until(
            "the refusal beside the form",
            "document.querySelector('#schedules #refused') !== null",
        )
        .await;
    let refused = browser
        .value("document.querySelector('#schedules #refused').textContent")
        .await;
    assert!(
        refused.to_string().contains("5 fields"),
        "the refusal says what to write: {refused}"
    );
    browser
        .fill("#add-schedule input[name=name]", "nightly")
        .await;
    browser
        .fill("#add-schedule input[name=expression]", "0 3 * * *")
        .await;
    browser
        .fill("#add-schedule input[name=timezone]", "Europe/Berlin")
        .await;
    browser.click("#add-schedule button").await;
    browser
        .until(
            "the schedule in the list",
            "document.querySelector('tr[data-schedule=\"nightly\"] .next-run') !== null",
        )
        .await;
    let next = browser
        .value("document.querySelector('tr[data-schedule=\"nightly\"] .next-run').textContent")
        .await;
    assert!(
        next.to_string().contains(":00 UTC"),
        "its next run shows: {next}"
    );
    browser.screenshot(&shots(), "settings-schedules").await;
    // Run now: it builds at once and opens the build.
    browser
        .click("tr[data-schedule=\"nightly\"] form.inline button")
        .await;
    browser
        .until(
            "the cron build's page",
            "location.pathname === '/acme/app/2'",
        )
        .await;
    let cron = server.wait_build("app", 2).await;
    assert_eq!(cron["event"], "cron");

    // Promote build #1 to production from its page.
    browser.open(&format!("{}/acme/app/1", server.url)).await;
    browser
        .fill("#promote-form input[name=target]", "production")
        .await;
    browser.click("#promote").await;
    browser
        .until(
            "the promotion's page",
            "location.pathname === '/acme/app/3'",
        )
        .await;
    let promoted = server.wait_build("app", 3).await;
    assert_eq!(promoted["event"], "promote");
    assert_eq!(promoted["deploy_to"], "production");
    browser.screenshot(&shots(), "build-promoted").await;
    browser.stop().await;
    server.stop().await;
}

/// The Environments page in a browser: a deployed environment with its URL and history;
/// Stop runs its `on_stop` pipeline and opens that build; the page then says it is stopping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_is_stopped_from_its_page() {
    let dir = TempDir::new("browser-environments");
    let server = TestServer::start(&dir.path().join("gantry.db").to_string_lossy()).await;
    let (_git, _) = server
        .push_app_with(
            "kind: pipeline\nname: ship\ndeploy: {environment: staging, url: \"https://staging.example.com\", on_stop: teardown}\nsteps:\n  - name: up\n    image: busybox\n    commands: [true]\n---\nkind: pipeline\nname: teardown\nsteps:\n  - name: down\n    image: busybox\n    commands: [true]\n",
        )
        .await;
    let (runner, assignment) = server.claim("r1").await;
    runner.pass(&assignment).await;
    server.wait_finished("app", 1).await;
    let browser = Browser::start().await;
    sign_in(&browser, &server).await;
    browser
        .open(&format!("{}/acme/app/environments", server.url))
        .await;
    browser
        .until(
            "the environment, available",
            "document.querySelector('section[data-environment=\"staging\"][data-state=\"available\"]') !== null",
        )
        .await;
    let url = browser
        .value("document.querySelector('section[data-environment=\"staging\"] .env-url').href")
        .await;
    assert_eq!(url, "https://staging.example.com/");
    browser.screenshot(&shots(), "environments").await;
    browser
        .click("section[data-environment=\"staging\"] button.env-stop")
        .await;
    browser
        .until(
            "the stop build's page",
            "location.pathname === '/acme/app/2'",
        )
        .await;
    let stop = server.wait_build("app", 2).await;
    let stages: Vec<(&str, &str)> = stop["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default(),
                s["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(stages, [("ship", "skipped"), ("teardown", "pending")]);
    browser
        .open(&format!("{}/acme/app/environments", server.url))
        .await;
    browser
        .until(
            "the environment, stopping, with no second Stop",
            "document.querySelector('section[data-environment=\"staging\"][data-state=\"stopping\"]') !== null && document.querySelector('button.env-stop') === null",
        )
        .await;
    browser.stop().await;
    server.stop().await;
}

/// A deployment to a protected environment waits on the build page for its approver, who
/// approves one build's and declines the next one's there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_is_approved_and_declined_from_the_build_page() {
    let dir = TempDir::new("browser-approvals");
    let server = TestServer::start(&dir.path().join("gantry.db").to_string_lossy()).await;
    let git = GitRepo::new();
    let first = git.commit(
        &[(
            ".gantry.yml",
            "kind: pipeline\nname: production\ndeploy: {environment: production, url: \"https://app.example.com\"}\nsteps:\n  - name: ship\n    image: busybox\n    commands: [true]\n",
        )],
        "first",
    );
    server.add_repo("app", &git).await;
    let alice = server.user_with_token("alice").await;
    server.set_role("app", "alice", "read").await;
    let rule = server
        .api(
            reqwest::Method::PUT,
            "/repos/acme/app/environments/protected",
            Some(json!({"pattern": "production", "approvers": ["alice"]})),
        )
        .await;
    assert_eq!(rule.status(), 200);
    assert_eq!(server.push_to("main", &first, "d-1").await, 202);
    server.wait_build("app", 1).await;

    let browser = Browser::start().await;
    sign_in_with(&browser, &server, &alice).await;
    browser.open(&format!("{}/acme/app/1", server.url)).await;
    browser
        .until(
            "the stage, held for alice",
            "(document.querySelector('.stage[data-stage=\"1\"] .stage-waiting') || {}).textContent === 'waiting for approval by alice to deploy to environment `production` (Approve on the build page, or `gantry env approve`)' && document.querySelector('.stage[data-stage=\"1\"] .stage-deploy a[href=\"https://app.example.com\"]') !== null",
        )
        .await;
    browser.screenshot(&shots(), "approval").await;
    browser
        .click(".stage[data-stage=\"1\"] button.approve-deployment")
        .await;
    browser
        .until(
            "the build page again, approved by alice",
            "location.pathname === '/acme/app/1' && (document.querySelector('.stage[data-stage=\"1\"] .stage-decided') || {}).textContent === 'approved by alice' && document.querySelector('button.approve-deployment') === null",
        )
        .await;
    let (runner, ship) = server.claim("r1").await;
    assert_eq!(ship.stage.name, "production");
    runner.pass(&ship).await;
    assert_eq!(server.wait_finished("app", 1).await["status"], "success");

    let second = git.commit(&[("README", "two")], "second");
    assert_eq!(server.push_to("main", &second, "d-2").await, 202);
    server.wait_build("app", 2).await;
    browser.open(&format!("{}/acme/app/2", server.url)).await;
    browser
        .until(
            "the second deployment, held",
            "document.querySelector('.stage[data-stage=\"1\"] button.decline-deployment') !== null",
        )
        .await;
    browser
        .click(".stage[data-stage=\"1\"] button.decline-deployment")
        .await;
    browser
        .until(
            "the build, declined by alice",
            "location.pathname === '/acme/app/2' && (document.querySelector('.stage[data-stage=\"1\"] .stage-decided') || {}).textContent === 'declined by alice'",
        )
        .await;
    assert_eq!(server.wait_finished("app", 2).await["status"], "declined");
    assert!(
        server.nothing_to_claim("r1").await,
        "the declined deployment never runs"
    );
    browser.stop().await;
    server.stop().await;
}
