//! Lint and plan of a typical 20-step file and a generated 2,000-step file. The baseline in
//! the same run is reading the same YAML into a tree (`yaml-only`): what any parser must do.
//! Target: linear growth, and the 2,000-step file under 20 ms.
//!
//! `cargo bench -p gantry-pipeline --bench plan`

use std::fmt::Write;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gantry_pipeline::{Context, Limits, compile, lint, parse, yaml};

/// A pipeline of `steps` steps shaped like real ones: images, several commands, environment
/// with secrets, `when` conditions, a graph of dependencies, plugin settings, substitutions.
pub fn generated_pipeline(steps: usize) -> String {
    let mut out = String::from(
        "kind: pipeline\ntype: docker\nname: generated\n\nservices:\n  - name: db\n    image: postgres:16\n\nsteps:\n",
    );
    for i in 0..steps {
        let _ = write!(out, "  - name: step-{i}\n    image: golang:1.23\n");
        if i % 7 == 6 {
            let _ = write!(
                out,
                "    settings:\n      repo: acme/app-{i}\n      tags: [latest, \"${{DRONE_COMMIT_SHA:0:8}}\"]\n      password:\n        from_secret: registry_password\n"
            );
        } else {
            let _ = write!(
                out,
                "    commands:\n      - go build ./cmd/{i}\n      - go test -run Test{i} ./...\n      - echo built ${{DRONE_COMMIT_SHA:0:8}} on ${{DRONE_BRANCH}}\n"
            );
        }
        let _ = write!(
            out,
            "    environment:\n      STEP: \"{i}\"\n      TOKEN:\n        from_secret: token\n"
        );
        if i % 3 == 0 {
            let _ = write!(
                out,
                "    when:\n      branch: [main, \"release/*\"]\n      event:\n        exclude: [tag]\n"
            );
        }
        // One `when` a step: a second would be a duplicate key (an error; it used to be
        // ignored, so the plans measured are the same).
        if i % 11 == 10 && i % 3 != 0 {
            let _ = write!(out, "    when:\n      status: [failure]\n");
        }
        if i > 0 {
            let _ = writeln!(out, "    depends_on: [step-{}]", i - 1 - (i % 4).min(i - 1));
        }
    }
    out
}

fn context() -> Context {
    let mut ctx = Context::push("acme/app", "main");
    ctx.commit = "0123456789abcdef0123456789abcdef01234567".into();
    ctx
}

fn bench(c: &mut Criterion) {
    let ctx = context();
    let mut group = c.benchmark_group("pipeline");
    for steps in [20usize, 2000] {
        let text = generated_pipeline(steps);
        assert!(
            !lint(".gantry.yml", &text).has_errors(),
            "the generated file is valid"
        );
        group.throughput(Throughput::Elements(steps as u64));
        group.bench_with_input(BenchmarkId::new("yaml-only", steps), &text, |b, text| {
            b.iter(|| yaml::read(black_box(text), &Limits::default()).expect("valid YAML"));
        });
        group.bench_with_input(BenchmarkId::new("lint", steps), &text, |b, text| {
            b.iter(|| lint(".gantry.yml", black_box(text)));
        });
        group.bench_with_input(BenchmarkId::new("plan", steps), &text, |b, text| {
            b.iter(|| {
                let config = parse(".gantry.yml", black_box(text)).config.expect("valid");
                compile(&config, &ctx).expect("plans")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
