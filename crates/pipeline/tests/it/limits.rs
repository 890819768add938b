//! Hostile files are bounded: size, nesting and alias expansion are errors, not exhaustion.

use std::time::{Duration, Instant};

use gantry_pipeline::{Limits, Source, parse_files};

fn first_error(text: &str, limits: &Limits) -> String {
    let started = Instant::now();
    let parsed = parse_files(
        &[Source {
            name: "evil.yml",
            text,
        }],
        limits,
    );
    // A guard against regressions to exponential work, far above the real cost (microseconds).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(parsed.config.is_none());
    parsed
        .diagnostics
        .errors()
        .next()
        .map(ToString::to_string)
        .expect("an error")
}

#[test]
fn file_size() {
    let text = format!(
        "kind: pipeline\nname: ci\n# {}\n",
        "x".repeat(5 * 1024 * 1024)
    );
    let error = first_error(&text, &Limits::default());
    let expect = format!(
        "evil.yml:1:1: error: the file is {} bytes, more than the limit of 4194304 bytes",
        text.len()
    );
    assert!(error.starts_with(&expect), "{error}");
}

#[test]
fn nesting_depth() {
    let text = format!(
        "kind: pipeline\nname: ci\nsteps: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let error = first_error(&text, &Limits::default());
    assert!(
        error.contains("nests deeper than 64 levels") || error.contains("invalid YAML"),
        "{error}"
    );

    let text = format!(
        "kind: pipeline\nname: ci\nsteps: {}{}\n",
        "[".repeat(70),
        "]".repeat(70)
    );
    let error = first_error(&text, &Limits::default());
    assert!(error.contains("nests deeper than 64 levels"), "{error}");
}

#[test]
fn billion_laughs() {
    let mut text = String::from(
        "kind: pipeline\nname: ci\nx0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..=9 {
        text.push_str(&format!(
            "x{i}: &x{i} [{}]\n",
            vec![format!("*x{}", i - 1); 10].join(", ")
        ));
    }
    text.push_str("steps: [{name: a, image: alpine, commands: *x9}]\n");
    let error = first_error(&text, &Limits::default());
    assert!(
        error.contains("expands to more than 500000 values"),
        "{error}"
    );
}

#[test]
fn limits_are_configurable() {
    let limits = Limits {
        max_bytes: 1024,
        max_depth: 4,
        max_nodes: 50,
    };
    let text = "kind: pipeline\nname: ci\nsteps: [{name: a, image: alpine, commands: [[[x]]]}]\n";
    assert!(first_error(text, &limits).contains("nests deeper than 4 levels"));
    let many = format!(
        "kind: pipeline\nname: ci\nsteps: [{}]\n",
        vec!["{name: a, image: b}"; 30].join(", ")
    );
    assert!(first_error(&many, &limits).contains("expands to more than 50 values"));
}
