//! Bad input never panics or hangs: arbitrary bytes and mutated real files go through parse,
//! lint and compile for a bounded time. A small deterministic mutation fuzzer (seeded, so a
//! failure replays); `GANTRY_FUZZ_SECONDS` runs it longer, `GANTRY_FUZZ_SEED` changes the seed.

use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use gantry_pipeline::{Context, Event, Limits, Source, compile, parse_files};
use gantry_test_support::pipeline_fixtures;

use crate::support::Rng;

const TOKENS: &[&str] = &[
    ":",
    "- ",
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "*a",
    "<<: *a",
    "- <<: *a",
    "\t",
    "\n",
    "  ",
    "---\n",
    "...\n",
    "\"",
    "'",
    "#",
    "${",
    "}",
    "$$",
    "${A:0:",
    "${A##",
    "~",
    "null",
    "kind: pipeline\n",
    "depends_on: [",
    "when:\n  status: [failure]\n",
    "!!str ",
    "|\n",
    ">-\n",
    "? ",
    "\u{0}",
    "\u{feff}",
    "é",
    "\u{10ffff}",
    "0x",
    "1e9",
    "- name: x\n  image: y\n",
    "matrix:\n  A: [1,2]\n",
    "steps:\n",
    "pipeline:\n",
    "when:\n  evaluate: '",
    "any(fromJSON(X), { # startsWith \"a\" })",
    " matches '(a+)+$'",
    " && not (",
    "$env",
];

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut data = base.to_vec();
    for _ in 0..=rng.below(8) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let end = (at + rng.below(64)).min(data.len());
                data.drain(at.min(end)..end);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                data.splice(at..at, token.iter().copied());
            }
            2 if !data.is_empty() => {
                let start = rng.below(data.len());
                let end = (start + rng.below(200)).min(data.len());
                let chunk: Vec<u8> = data[start..end].to_vec();
                data.splice(at..at, chunk);
            }
            3 => {
                let byte = (rng.next() & 0xff) as u8;
                data.insert(at, byte);
            }
            4 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = (rng.next() & 0xff) as u8;
            }
            _ => data.splice(at..at, b"\n  ".iter().copied()).for_each(drop),
        }
    }
    data
}

fn contexts() -> Vec<Context> {
    let mut push = Context::push("acme/app", "main");
    push.trusted = true;
    let mut pr = Context::push("acme/app", "feature");
    pr.event = Event::PullRequest;
    pr.target_branch = Some("main".into());
    pr.pull_request = Some(1);
    pr.changed_files = vec!["a.go".into()];
    let mut tag = Context::push("acme/app", "");
    tag.event = Event::Tag;
    tag.tag = Some("v1".into());
    vec![push, pr, tag]
}

/// Parses, and compiles what parses, for every context. Only panics propagate.
fn exercise(text: &str, contexts: &[Context]) {
    let parsed = parse_files(
        &[Source {
            name: "fuzz.yml",
            text,
        }],
        &Limits::default(),
    );
    for d in &parsed.diagnostics {
        assert!(
            d.pos.line >= 1 && d.pos.column >= 1,
            "diagnostic without a position: {d}"
        );
        assert!(!d.message.is_empty());
    }
    if let Some(config) = parsed.config {
        for ctx in contexts {
            let _ = compile(&config, ctx);
        }
    }
}

fn budget() -> Duration {
    let secs = std::env::var("GANTRY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6.0);
    Duration::from_secs_f64(secs)
}

/// Runs `body` on a thread of its own; a case that does not finish within `hang` fails the
/// test with the input it was working on.
fn run_bounded(name: &str, body: impl FnOnce(Arc<Mutex<Vec<u8>>>) -> usize + Send + 'static) {
    let current = Arc::new(Mutex::new(Vec::new()));
    let (done, finished) = mpsc::channel();
    let shared = Arc::clone(&current);
    let handle = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || {
            let cases = body(shared);
            let _ = done.send(cases);
        })
        .expect("spawn the fuzz thread");
    let hang = budget() + Duration::from_secs(30);
    match finished.recv_timeout(hang) {
        Ok(cases) => {
            eprintln!("{name}: {cases} cases");
            assert!(cases > 100, "{name}: only {cases} cases ran");
        }
        Err(_) => {
            if handle.is_finished() {
                let input = current
                    .lock()
                    .map(|c| String::from_utf8_lossy(&c).into_owned())
                    .unwrap_or_default();
                let outcome = handle.join();
                panic!("{name}: panicked on input:\n{input:?}\n{outcome:?}");
            }
            let input = current
                .lock()
                .map(|c| String::from_utf8_lossy(&c).into_owned())
                .unwrap_or_default();
            panic!("{name}: no answer within {hang:?} for input:\n{input:?}");
        }
    }
}

fn seed() -> u64 {
    std::env::var("GANTRY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15)
}

#[test]
fn mutated_real_files_never_panic() {
    let corpus: Vec<Vec<u8>> = pipeline_fixtures()
        .into_iter()
        .map(|(_, text)| text.into_bytes())
        .collect();
    run_bounded("mutated fixtures", move |current| {
        let mut rng = Rng(seed());
        let contexts = contexts();
        let deadline = Instant::now() + budget();
        let mut cases = 0;
        while Instant::now() < deadline {
            let base = &corpus[rng.below(corpus.len())];
            let input = mutate(&mut rng, base);
            if let Ok(mut c) = current.lock() {
                c.clone_from(&input);
            }
            exercise(&String::from_utf8_lossy(&input), &contexts);
            cases += 1;
        }
        cases
    });
}

#[test]
fn arbitrary_bytes_never_panic() {
    run_bounded("arbitrary bytes", move |current| {
        let mut rng = Rng(seed() ^ 0xdead_beef);
        let contexts = contexts();
        let deadline = Instant::now() + budget() / 2;
        let mut cases = 0;
        while Instant::now() < deadline {
            let len = rng.below(512);
            let mut input: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
            // Half of the inputs are made of YAML-ish tokens, which reach deeper than noise.
            if rng.below(2) == 0 {
                input = (0..rng.below(64))
                    .flat_map(|_| TOKENS[rng.below(TOKENS.len())].bytes())
                    .collect();
            }
            if let Ok(mut c) = current.lock() {
                c.clone_from(&input);
            }
            exercise(&String::from_utf8_lossy(&input), &contexts);
            cases += 1;
        }
        cases
    });
}
