//! Reading a build in the browser (Chromium, as in `browser`): find in a whole log, the
//! build's steps beside it, and the pipeline as a picture.

use gantry_proto::StepState;
use gantry_test_support::TempDir;
use gantry_test_support::browser::Browser;
use serde_json::json;

use crate::support::{TestServer, line_in_view, shots};

const ENTER: &str = "\u{E007}";
const SHIFT: &str = "\u{E008}";
const ESCAPE: &str = "\u{E00C}";
/// Releases held modifier keys.
const RELEASE: &str = "\u{E000}";

/// What the find bar says, and the number of the current match's line.
const FOUND: &str = "[document.getElementById('find-count').textContent, (document.querySelector('#log .line.current') || {id: ''}).id]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_searches_the_whole_log_and_lines_that_arrive() {
    let dir = TempDir::new("browser-find");
    let server = TestServer::start(&dir.path().join("gantry.db").to_string_lossy()).await;
    let (runner, assignment) = server.running_step().await;
    runner
        .log_lines(&assignment, "test", (20_000, 5_000), |n| match n {
            16_000 => "error: the widget broke".to_owned(),
            18_000 => "test parse_config ... FAILED".to_owned(),
            19_500 => "\u{1b}[31mError: again\u{1b}[0m".to_owned(),
            n => format!("compiling unit {n}"),
        })
        .await;

    let browser = Browser::start().await;
    // Opened on its first line: the line to find is 16,000 lines below the view.
    browser
        .open(&format!("{}/acme/app/1/1/2#L1", server.url))
        .await;
    browser
        .until(
            "the log's top",
            "document.getElementById('L1') !== null && document.getElementById('L16000') === null",
        )
        .await;
    // `/` in the log opens the find bar; the browser's own find sees only the lines in view.
    browser.fill("#log", "/").await;
    browser
        .until(
            "the find bar, focused",
            "!document.getElementById('find').hidden && document.activeElement.id === 'find-q'",
        )
        .await;
    browser.fill("#find-q", "error:").await;
    browser
        .until(
            "the first match, 16,000 lines below the view",
            "document.getElementById('find-count').textContent === '1 of 2' && document.querySelector('#L16000.current mark') !== null",
        )
        .await;
    assert_eq!(browser.value(&line_in_view(16_000)).await, json!(true));
    assert_eq!(
        browser
            .value("document.querySelector('#L16000 mark').textContent")
            .await,
        json!("error:"),
        "the match is marked"
    );
    browser.screenshot(&shots(), "step-search").await;
    browser.fill("#find-q", ENTER).await;
    browser
        .until(
            "the second match",
            "document.querySelector('#L19500.current mark') !== null",
        )
        .await;
    assert_eq!(browser.value(FOUND).await, json!(["2 of 2", "L19500"]));
    // The ANSI colour around a match stays, and the match inside it is marked.
    assert_eq!(
        browser
            .value("document.querySelector('#L19500 .text mark').textContent")
            .await,
        json!("Error:")
    );
    browser
        .fill("#find-q", &format!("{SHIFT}{ENTER}{RELEASE}"))
        .await;
    browser
        .until(
            "back to the first",
            "document.querySelector('#L16000.current mark') !== null",
        )
        .await;

    // Case, then a regular expression.
    browser.click("#find-case").await;
    browser
        .until(
            "only the lowercase match",
            "document.getElementById('find-count').textContent === '1 of 1'",
        )
        .await;
    browser.click("#find-case").await;
    browser.click("#find-regex").await;
    browser.fill("#find-q", &"\u{E003}".repeat(10)).await;
    browser.fill("#find-q", r"^test \w+ \.\.\. FAILED$").await;
    browser
        .until(
            "the failed test's line",
            "document.getElementById('find-count').textContent === '1 of 1' && document.querySelector('#L18000.current') !== null",
        )
        .await;
    assert_eq!(browser.value(&line_in_view(18_000)).await, json!(true));
    browser.fill("#find-q", "(unclosed").await;
    browser
        .until(
            "a bad expression said so",
            "document.getElementById('find-count').textContent === 'not a regular expression'",
        )
        .await;
    // A pattern the browser takes but the server does not (a look-ahead): the server's reason.
    browser.fill("#find-q", &"\u{E003}".repeat(10)).await;
    browser.fill("#find-q", "a(?=b)").await;
    browser
        .until(
            "the server's refusal",
            "document.getElementById('find-count').textContent.includes('is not a regular expression: ')",
        )
        .await;

    // While the step runs, new lines are searched as they arrive.
    browser.click("#find-regex").await;
    browser.fill("#find-q", &"\u{E003}".repeat(40)).await;
    browser.fill("#find-q", "widget").await;
    browser
        .until(
            "one widget",
            "document.getElementById('find-count').textContent === '1 of 1'",
        )
        .await;
    runner
        .logs(&assignment, "test", 20_001, &["another widget, live"])
        .await;
    browser
        .until(
            "the live line counted",
            "document.getElementById('find-count').textContent === '1 of 2'",
        )
        .await;
    browser.fill("#find-q", ENTER).await;
    browser
        .until(
            "the live match",
            "document.querySelector('#L20001.current') !== null",
        )
        .await;

    // Esc closes the bar and clears the marks.
    browser.fill("#find-q", ESCAPE).await;
    browser
        .until(
            "no mark left",
            "document.getElementById('find').hidden && document.querySelectorAll('#log mark').length === 0",
        )
        .await;
    runner
        .step(&assignment, "test", StepState::Success, Some(0))
        .await;
    runner.done(&assignment, StepState::Success).await;
    browser.stop().await;
    server.stop().await;
}

/// Three stages: `build`, then `test` and `lint` beside each other, then `publish`.
pub const STAGES: &str = "\
kind: pipeline
name: build
clone: {disable: true}
steps:
  - name: compile
    image: busybox
    commands: [echo compile]
  - name: package
    image: busybox
    commands: [echo package]
---
kind: pipeline
name: test
clone: {disable: true}
depends_on: [build]
steps:
  - name: unit
    image: busybox
    commands: [echo unit]
---
kind: pipeline
name: lint
clone: {disable: true}
depends_on: [build]
steps:
  - name: fmt
    image: busybox
    commands: [echo fmt]
---
kind: pipeline
name: publish
clone: {disable: true}
depends_on: [test, lint]
steps:
  - name: upload
    image: busybox
    commands: [echo upload]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_side_panel_switches_steps_in_place_and_follows_the_build() {
    let dir = TempDir::new("browser-panel");
    let server = TestServer::start(&dir.path().join("gantry.db").to_string_lossy()).await;
    let (_git, _) = server.push_app_with(STAGES).await;
    let (runner, build) = server.claim("r1").await;
    runner
        .step(&build, "compile", StepState::Running, None)
        .await;
    runner
        .logs(&build, "compile", 1, &["compiling", "compiled"])
        .await;
    runner
        .step(&build, "compile", StepState::Success, Some(0))
        .await;
    runner
        .step(&build, "package", StepState::Running, None)
        .await;
    runner.logs(&build, "package", 1, &["packing"]).await;

    let browser = Browser::start().await;
    browser
        .open(&format!("{}/acme/app/1/1/1", server.url))
        .await;
    browser
        .until("compile's log", "document.getElementById('L2') && document.getElementById('L2').textContent.includes('compiled')")
        .await;
    let panel = browser
        .value("Array.from(document.querySelectorAll('.panel-stage')).map(s => [s.querySelector('.panel-stage-name').textContent.trim(), Array.from(s.querySelectorAll('.panel-name')).map(n => n.textContent)])")
        .await;
    assert_eq!(panel[0], json!(["running build", ["compile", "package"]]));
    let names: Vec<_> = (1..4).map(|i| panel[i][1].clone()).collect();
    assert_eq!(names, [json!(["unit"]), json!(["fmt"]), json!(["upload"])]);
    assert_eq!(
        browser
            .value("document.querySelector('a.panel-step.current .panel-name').textContent")
            .await,
        json!("compile")
    );

    // A click shows the other step's log without loading a page, and the address follows.
    browser
        .client
        .execute("window.__samePage = true;", vec![])
        .await
        .expect("marks the page");
    browser.click("a.panel-step[href='/acme/app/1/1/2']").await;
    browser
        .until(
            "package's log",
            "location.pathname === '/acme/app/1/1/2' && document.getElementById('L1') && document.getElementById('L1').textContent.includes('packing')",
        )
        .await;
    assert_eq!(
        browser.value("window.__samePage === true").await,
        json!(true)
    );
    assert_eq!(
        browser
            .value("document.querySelector('.step-title').textContent")
            .await,
        json!("build / package")
    );
    // Its log is live: a line the runner sends now shows.
    runner.logs(&build, "package", 2, &["packed"]).await;
    browser
        .until("package's live line", "document.getElementById('L2') && document.getElementById('L2').textContent.includes('packed')")
        .await;
    browser.screenshot(&shots(), "step-panel").await;

    // `k` goes back a step, `j` on; the browser's back button too.
    browser.fill("#log", "k").await;
    browser
        .until("compile again, by k", "location.pathname === '/acme/app/1/1/1' && document.getElementById('L2') && document.getElementById('L2').textContent.includes('compiled')")
        .await;
    browser.fill("#log", "j").await;
    browser
        .until(
            "package again, by j",
            "location.pathname === '/acme/app/1/1/2'",
        )
        .await;
    browser.client.back().await.expect("goes back");
    browser
        .until("compile, by the back button", "location.pathname === '/acme/app/1/1/1' && document.querySelector('a.panel-step.current .panel-name').textContent === 'compile'")
        .await;
    assert_eq!(
        browser.value("window.__samePage === true").await,
        json!(true)
    );

    // The build goes on: the panel follows.
    runner
        .step(&build, "package", StepState::Success, Some(0))
        .await;
    runner.done(&build, StepState::Success).await;
    let (_, next) = server.claim("r1").await;
    let step = next.stage.steps[0].name.clone();
    runner.step(&next, &step, StepState::Running, None).await;
    browser
        .until(
            "the first stage passed",
            "document.querySelector('.panel-stage-name').textContent.trim() === 'success build'",
        )
        .await;
    let link = format!("/acme/app/1/{}/1", if step == "unit" { 2 } else { 3 });
    browser
        .until(
            &format!("{step} running"),
            &format!("document.querySelector(\"a.panel-step[href='{link}'] .s-running\") !== null"),
        )
        .await;

    // The build page's timeline follows too: the running step gets its bar, the others
    // keep theirs.
    let (stage, other) = if step == "unit" {
        ("test", "lint / fmt")
    } else {
        ("lint", "test / unit")
    };
    browser.open(&format!("{}/acme/app/1", server.url)).await;
    let rows =
        "Array.from(document.querySelectorAll('#timeline .tl-name')).map(n => n.textContent)";
    assert_eq!(
        browser.value(rows).await,
        json!([
            "build / compile",
            "build / package",
            format!("{stage} / {step}")
        ])
    );
    let (_, last) = server.claim("r1").await;
    let last_step = last.stage.steps[0].name.clone();
    runner
        .step(&last, &last_step, StepState::Running, None)
        .await;
    browser
        .until(
            "the other stage's step on the timeline, without a reload",
            &format!("Array.from(document.querySelectorAll('#timeline .tl-name')).some(n => n.textContent === '{other}')"),
        )
        .await;
    browser.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_page_draws_the_pipeline_and_its_timeline() {
    let dir = TempDir::new("browser-picture");
    let server = TestServer::start(&dir.path().join("gantry.db").to_string_lossy()).await;
    let (_git, _) = server.push_app_with(STAGES).await;
    let mut ran = Vec::new();
    // Each stage as the queue gives it, the test stage failing (so `publish` never runs).
    let runner = server.runner("r1");
    while let Some(stage) = runner.request(std::time::Duration::from_secs(2)).await {
        let failing = stage.stage.name == "test";
        for step in &stage.stage.steps {
            runner
                .step(&stage, &step.name, StepState::Running, None)
                .await;
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            let end = if failing {
                StepState::Failure
            } else {
                StepState::Success
            };
            runner
                .step(&stage, &step.name, end, Some(i32::from(failing)))
                .await;
        }
        runner
            .done(
                &stage,
                if failing {
                    StepState::Failure
                } else {
                    StepState::Success
                },
            )
            .await;
        ran.push(stage.stage.name.clone());
    }
    server.wait_finished("app", 1).await;

    let browser = Browser::start().await;
    browser.open(&format!("{}/acme/app/1", server.url)).await;
    browser
        .until(
            "the picture",
            "document.querySelectorAll('#pipeline-svg .pic-stage').length === 4",
        )
        .await;
    // Each arrow joins a stage to one it waits for, and every `depends_on` has its arrow.
    let arrows = browser
        .value("Array.from(document.querySelectorAll('#pipeline-svg .pic-edge')).map(e => e.dataset.from + '>' + e.dataset.to).sort()")
        .await;
    let wanted = browser
        .value("Array.from(document.querySelectorAll('#pipeline-svg .pic-stage')).flatMap(g => g.dataset.dependsOn ? g.dataset.dependsOn.split(',').map(d => d + '>' + g.dataset.stage) : []).sort()")
        .await;
    assert_eq!(arrows, wanted);
    assert_eq!(
        arrows,
        json!(["build>lint", "build>test", "lint>publish", "test>publish"])
    );
    // A stage stands right of those it waits for: each arrow goes left to right, from the
    // right side of one box to the left side of the next.
    let rightward = browser
        .value("Array.from(document.querySelectorAll('#pipeline-svg .pic-edge')).every(e => { const from = document.querySelector(`.pic-stage[data-stage='${e.dataset.from}'] rect`).getBBox(); const to = document.querySelector(`.pic-stage[data-stage='${e.dataset.to}'] rect`).getBBox(); const p = e.getTotalLength(); const a = e.getPointAtLength(0), b = e.getPointAtLength(p); return from.x + from.width <= to.x && Math.abs(a.x - (from.x + from.width)) < 1 && b.x <= to.x && b.x > to.x - 10; })")
        .await;
    assert_eq!(rightward, json!(true));
    let coloured = browser
        .value("Array.from(document.querySelectorAll('#pipeline-svg .pic-stage')).map(g => g.dataset.stage + ':' + g.getAttribute('class').replace('pic-stage s-', ''))")
        .await;
    let coloured: Vec<String> = serde_json::from_value(coloured).expect("names");
    assert!(
        coloured.contains(&"build:success".to_owned()),
        "{coloured:?}"
    );
    assert!(
        coloured.contains(&"test:failure".to_owned()),
        "{coloured:?}"
    );
    // Each step inside is a link to its log.
    assert_eq!(
        browser
            .value("Array.from(document.querySelectorAll(\".pic-stage[data-stage='build'] a.pic-step\")).map(a => a.getAttribute('href'))")
            .await,
        json!(["/acme/app/1/1/1", "/acme/app/1/1/2"])
    );
    // The timeline: a bar per step that ran, the later ones further right.
    let bars = browser
        .value("Array.from(document.querySelectorAll('#timeline .tl-row')).map(r => [r.querySelector('.tl-name').textContent, parseFloat(r.querySelector('.tl-bar').style.left)])")
        .await;
    let bars: Vec<(String, f64)> = serde_json::from_value(bars).expect("bars");
    assert_eq!(bars[0].0, "build / compile");
    assert_eq!(bars[0].1, 0.0);
    assert!(bars.windows(2).all(|w| w[0].1 <= w[1].1), "{bars:?}");
    assert_eq!(
        bars.len(),
        ran.iter()
            .map(|s| if s == "build" { 2 } else { 1 })
            .sum::<usize>()
    );
    browser.screenshot(&shots(), "build-picture").await;

    // A server without a GitHub token queues no commit status (the build has no message at
    // all), so no reporting problem shows; the settings page says statuses are off and how to
    // turn them on.
    let build = server.get_json("/repos/acme/app/builds/1").await;
    assert_eq!(build["notifications"], json!([]), "{build:#}");
    assert_eq!(
        browser
            .value("document.querySelector('.reports') === null")
            .await,
        json!(true)
    );
    crate::support::sign_in(&browser, &server).await;
    browser
        .open(&format!("{}/acme/app/settings", server.url))
        .await;
    let said = browser
        .value("document.getElementById('statuses').textContent")
        .await;
    assert!(
        said.as_str()
            .unwrap_or("")
            .contains("Commit statuses are off")
            && said.as_str().unwrap_or("").contains("GANTRY_GITHUB_TOKEN"),
        "{said}"
    );
    browser.stop().await;
    server.stop().await;
}
