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
    ("gantry-api", PURE),
    (
        "gantry-git",
        &[
            "tokio",
            "sqlx",
            "axum",
            "bollard",
            "gantry-store",
            "gantry-runner",
            "gantry-server",
        ],
    ),
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

/// What may differ between a migration's SQLite and PostgreSQL twins, as (SQLite, PostgreSQL)
/// text: the id type, the bytes type, and the one JSON read that has no common spelling.
const DIALECT: &[(&str, &str)] = &[
    ("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY"),
    ("BLOB", "BYTEA"),
    (
        "json_extract(plan, '$.backend')",
        "plan::json ->> 'backend'",
    ),
];

/// A migration's statements, without comments, with white space folded.
fn statements(path: &Path) -> String {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn migration_twins_differ_only_by_dialect() {
    let root = repo_root().join("migrations");
    let names = |dialect: &str| {
        let mut names: Vec<String> = std::fs::read_dir(root.join(dialect))
            .unwrap_or_else(|e| panic!("migrations/{dialect}: {e}"))
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        names.sort();
        names
    };
    let sqlite = names("sqlite");
    assert_eq!(sqlite, names("postgres"), "every migration has its twin");
    assert!(!sqlite.is_empty());
    let fold = |text: String| {
        DIALECT.iter().fold(text, |text, (lite, pg)| {
            text.replace(&statements_of(lite), &statements_of(pg))
        })
    };
    let mut drifted = Vec::new();
    for name in &sqlite {
        let lite = fold(statements(&root.join("sqlite").join(name)));
        let pg = statements(&root.join("postgres").join(name));
        if lite != pg {
            drifted.push(format!("{name}:\n  sqlite:   {lite}\n  postgres: {pg}"));
        }
    }
    assert!(
        drifted.is_empty(),
        "these twins differ by more than {DIALECT:?}:\n{}",
        drifted.join("\n")
    );
}

fn statements_of(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The top-level modules of a crate that `file` names through `crate::` paths (including
/// `use crate::{a, b::c}` groups), but for itself. Comments are left out: a doc link is no
/// import.
fn modules_used(file: &str, itself: &str, modules: &[String]) -> Vec<String> {
    let code: String = file
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut used = std::collections::BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or("")
                .split(',')
                .map(|item| item.trim().split("::").next().unwrap_or(""))
                .collect(),
            None => vec![
                rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or(""),
            ],
        };
        for name in names {
            if name != itself && modules.iter().any(|m| m == name) {
                used.insert(name.to_owned());
            }
        }
    }
    used.into_iter().collect()
}

type Edges = std::collections::BTreeMap<String, Vec<String>>;

/// Which top-level module of `src` uses which. A module is a file of `src/` or a folder of
/// it (its files count as one module).
fn module_edges(src: &Path) -> Edges {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let module_of = |path: &Path| {
        let relative = path.strip_prefix(src).expect("under src");
        let first = relative
            .components()
            .next()
            .expect("a file")
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        first.trim_end_matches(".rs").to_owned()
    };
    let mut modules: Vec<String> = files.iter().map(|f| module_of(f)).collect();
    modules.sort();
    modules.dedup();
    let mut edges = Edges::new();
    for file in &files {
        let module = module_of(file);
        let text = std::fs::read_to_string(file).expect("readable");
        let used = modules_used(&text, &module, &modules);
        let entry = edges.entry(module).or_default();
        entry.extend(used);
        entry.sort();
        entry.dedup();
    }
    edges
}

/// Each circle of `edges`, by the path that closes it (depth-first).
fn circles(edges: &Edges) -> Vec<String> {
    fn visit(
        module: &str,
        edges: &Edges,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
        circles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut circle = path[at..].to_vec();
            circle.push(module.to_owned());
            circles.push(circle.join(" → "));
            return;
        }
        if !done.insert(module.to_owned()) {
            return;
        }
        path.push(module.to_owned());
        for next in edges.get(module).into_iter().flatten() {
            visit(next, edges, path, done, circles);
        }
        path.pop();
    }
    let mut found = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    for module in edges.keys() {
        visit(module, edges, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

/// Module circles make a crate hard to change one piece at a time: in every crate, a module
/// may use another only if that one does not (through any path) use it back.
#[test]
fn no_crate_has_module_circles() {
    let server = module_edges(&repo_root().join("crates/server/src"));
    assert!(
        server
            .get("web")
            .is_some_and(|used| used.contains(&"access".to_owned())),
        "the scan sees web's use of access: {server:?}"
    );
    let mut found = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("crates"))
        .expect("crates/")
        .filter_map(Result::ok)
    {
        let src = entry.path().join("src");
        if src.is_dir() {
            for circle in circles(&module_edges(&src)) {
                found.push(format!("{}: {circle}", entry.file_name().to_string_lossy()));
            }
        }
    }
    assert!(found.is_empty(), "module circles:\n{}", found.join("\n"));
}

#[test]
fn a_circle_is_found_and_named() {
    let edges: Edges = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, used)| (m.to_owned(), used.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(circles(&edges), ["a → b → c → a"]);
    let used = modules_used(
        "use crate::{b, c::X};\n/// [`Y`](crate::d::Y)\nfn f() { crate::a::g() }",
        "a",
        &["a", "b", "c", "d"].map(str::to_owned),
    );
    assert_eq!(used, ["b", "c"], "itself and doc links are no imports");
}
