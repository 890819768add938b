//! What every benchmark's `main` starts with: `cargo test` runs benches once without
//! `--bench` (they say how to run them and stop), their size from the environment, and the
//! test image those that run containers need.

use std::time::Duration;

/// Whether this is a real benchmark run; otherwise prints how to start `name` and says no.
pub fn requested(name: &str, command: &str) -> bool {
    let requested = std::env::args().any(|a| a == "--bench");
    if !requested {
        println!("{name} bench: run with `{command}`");
    }
    requested
}

/// The number in the environment variable `var`, or `default`.
pub fn env_number(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Builds (or finds) the offline test image, as the tests do.
pub fn test_image() {
    let script = crate::repo_root().join("scripts/test-image");
    assert!(
        std::process::Command::new(&script)
            .status()
            .is_ok_and(|s| s.success()),
        "needs Docker and {}",
        script.display()
    );
}

pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}
