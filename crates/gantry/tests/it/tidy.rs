//! Repository-wide checks that keep the architecture honest (as rust-analyzer's tidy tests):
//! the dependency direction between crates, `//!` docs on every file, README ↔ CI.

use std::path::{Path, PathBuf};
use std::process::Command;

use gantry_test_support::repo_root;

/// What each crate must never depend on (ARCHITECTURE.md's table), checked on its normal
/// dependency tree. Crates not created yet are skipped.
/// The pure crates: no runtime, no database, no network, no other layer of gantry.
const PURE: &[&str] = &[
    "tokio",
    "sqlx",
    "bollard",
    "git2",
    "axum",
    "hyper",
    "reqwest",
    "mio",
    "gantry-store",
    "gantry-runner",
    "gantry-server",
];

const NEVER: &[(&str, &[&str])] = &[
    ("gantry-pipeline", PURE),
    ("gantry-proto", PURE),
    (
        "gantry-store",
        &["axum", "bollard", "gantry-runner", "gantry-server"],
    ),
    (
        "gantry-runner",
        &["sqlx", "axum", "gantry-store", "gantry-server"],
    ),
    ("gantry-server", &["bollard", "gantry-runner"]),
];

fn workspace_packages() -> Vec<String> {
    let root = repo_root();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root.join("crates"))
        .expect("crates/")
        .filter_map(Result::ok)
    {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        if let Some(name) = text
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
        {
            names.push(name.to_owned());
        }
    }
    names
}

fn normal_dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(repo_root())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn dependencies_point_one_way() {
    let packages = workspace_packages();
    assert!(
        packages.iter().any(|p| p == "gantry-pipeline"),
        "{packages:?}"
    );
    let mut violations = Vec::new();
    for (package, forbidden) in NEVER {
        if !packages.iter().any(|p| p == package) {
            continue;
        }
        let deps = normal_dependencies(package);
        assert!(
            deps.iter().any(|d| d == package),
            "cargo tree output did not list {package} itself: {deps:?}"
        );
        for f in *forbidden {
            if deps.iter().any(|d| d == f) {
                violations.push(format!("{package} depends on {f}"));
            }
        }
    }
    for package in packages.iter().filter(|p| *p != "gantry-test-support") {
        if normal_dependencies(package)
            .iter()
            .any(|d| d == "gantry-test-support")
        {
            violations.push(format!(
                "{package} has gantry-test-support as a normal dependency"
            ));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("readable folder")
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_says_what_it_is_for() {
    let mut files = Vec::new();
    rust_files(&repo_root().join("crates"), &mut files);
    let undocumented: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).is_ok_and(|t| t.starts_with("//!")))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        undocumented.is_empty(),
        "these files do not open with a `//!` paragraph:\n{}",
        undocumented.join("\n")
    );
}

#[test]
fn ci_runs_the_test_command_of_the_readme() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    let command = "./scripts/test";
    assert!(
        readme.contains(command),
        "README.md must give `{command}` as the test command"
    );
    assert!(
        ci.lines().any(|l| l.trim().starts_with(command)),
        ".ci/run must run `{command}`"
    );
    assert!(root.join("scripts/test").is_file());
}

#[test]
fn architecture_names_every_crate() {
    let architecture =
        std::fs::read_to_string(repo_root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    for package in workspace_packages() {
        assert!(
            architecture.contains(&format!("`{package}`")),
            "ARCHITECTURE.md does not describe `{package}`"
        );
    }
}

/// docker-compose.yml is valid and runs a server, a runner and PostgreSQL from the
/// repository's Dockerfile.
#[test]
fn docker_compose_file_is_valid() {
    let root = repo_root();
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "--services"])
        .env("GANTRY_RUNNER_SECRET", "a-secret-for-the-check")
        .current_dir(&root)
        .output()
        .expect("docker-compose is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut services: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    services.sort();
    assert_eq!(services, ["postgres", "runner", "server"]);
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("a Dockerfile");
    assert!(dockerfile.contains("cargo build --release --locked -p gantry"));
    let missing = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .env_remove("GANTRY_RUNNER_SECRET")
        .current_dir(&root)
        .output()
        .expect("runs docker-compose");
    assert!(
        !missing.status.success()
            && String::from_utf8_lossy(&missing.stderr).contains("GANTRY_RUNNER_SECRET"),
        "the runner secret must be set, not defaulted"
    );
}
