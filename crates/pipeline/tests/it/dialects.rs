//! What each dialect's features become in the plan.

use gantry_pipeline::model::{Failure, Mount, Pull};
use gantry_pipeline::{
    CompileError, Dialect, Limits, Source, StepKind, compile, parse, parse_files,
};

use crate::support::{edges, pipeline, plan, push};

#[test]
fn drone_documents_signature_secret_and_end_markers() {
    let yaml = "---
kind: pipeline
type: docker
name: test
steps:
- name: test  
  image: golang:1.22\t
  commands:
  - go test ./...
...
---
kind: secret
name: token
get:
  path: secret/data/ci
  name: token
---
kind: signature
hmac: 61a27b3c3142a9a1d1972f0fe00a8aa19d99623e6fea6e1d5ad44b6b20cd5cd1
...
";
    let parsed = parse(".drone.yml", yaml);
    assert!(parsed.diagnostics.is_empty(), "{}", parsed.diagnostics);
    let config = parsed.config.expect("valid");
    assert_eq!(config.files[0].dialect, Dialect::Gantry);
    assert_eq!(config.files[0].secrets.len(), 1);
    let plan = compile(&config, &push()).expect("plans");
    assert_eq!(
        plan.stages[0].steps[1].image.as_deref(),
        Some("golang:1.22")
    );
}

#[test]
fn templates_are_reported_clearly() {
    let parsed = parse(".drone.yml", "kind: template\nload: go.yaml\n");
    let errors: Vec<String> = parsed
        .diagnostics
        .errors()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .starts_with(".drone.yml:1:1: error: `kind: template` documents are not supported"),
        "{errors:?}"
    );
}

#[test]
fn drone_legacy_keeps_file_order_groups_and_inline_plugin_settings() {
    let yaml = "
pipeline:
  zeta:
    image: golang
    group: test
    commands: [go test]
  alpha:
    image: node
    group: test
    commands: [yarn test]
  publish:
    image: plugins/docker
    repo: acme/app
    tags: [latest, '1.0']
    secrets: [docker_username, {source: gh_token, target: github_key}]
    when:
      branch: main
branches: [main, release/*]
services:
  db:
    image: postgres:15
    environment:
      - POSTGRES_PASSWORD=secret
";
    let parsed = parse(".drone.yml", yaml);
    assert!(!parsed.diagnostics.has_errors(), "{}", parsed.diagnostics);
    let config = parsed.config.expect("valid");
    assert_eq!(config.files[0].dialect, Dialect::DroneLegacy);
    let plan = compile(&config, &push()).expect("plans");
    let stage = &plan.stages[0];
    let order = edges(stage);
    assert_eq!(
        order,
        vec![
            ("clone", vec![]),
            ("zeta", vec!["clone"]),
            ("alpha", vec!["clone"]),
            ("publish", vec!["zeta", "alpha"])
        ]
    );
    let publish = stage.step("publish").expect("publish");
    assert_eq!(publish.kind, StepKind::Plugin);
    assert_eq!(publish.environment["PLUGIN_REPO"], "acme/app");
    assert_eq!(publish.environment["PLUGIN_TAGS"], "latest,1.0");
    let secrets: Vec<(&str, &str)> = publish
        .secrets
        .iter()
        .map(|s| (s.env.as_str(), s.secret.as_str()))
        .collect();
    assert_eq!(
        secrets,
        vec![
            ("DOCKER_USERNAME", "docker_username"),
            ("GITHUB_KEY", "gh_token")
        ]
    );
    assert_eq!(stage.services[0].environment["POSTGRES_PASSWORD"], "secret");

    let mut other = push();
    other.branch = "feature".into();
    other.reference = "refs/heads/feature".into();
    let skipped = compile(&config, &other).expect("plans");
    assert!(!skipped.stages[0].run);
}

#[test]
fn woodpecker_maps_lists_and_services() {
    let yaml = "
skip_clone: true
services:
  redis:
    image: redis:7
steps:
  - name: build
    image: golang
    commands: go build
    directory: cmd/app
    pull: true
  - name: test
    image: golang
    commands: [go test]
    failure: ignore
";
    let parsed = parse(".woodpecker.yml", yaml);
    assert!(parsed.diagnostics.is_empty(), "{}", parsed.diagnostics);
    let plan = compile(&parsed.config.expect("valid"), &push()).expect("plans");
    let stage = &plan.stages[0];
    assert_eq!(stage.name, "woodpecker");
    assert!(stage.clone.is_none());
    assert_eq!(stage.steps[0].name, "build");
    assert_eq!(stage.steps[0].working_dir, "/drone/src/cmd/app");
    assert_eq!(stage.steps[0].pull, Pull::Always);
    assert_eq!(stage.steps[1].failure, Failure::Ignore);
    assert_eq!(stage.services[0].kind, StepKind::Service);
    assert!(stage.services[0].detach);
}

#[test]
fn woodpecker_folder_is_one_build_of_several_workflows() {
    let build = "steps:\n  build:\n    image: golang\n    commands: [go build]\n";
    let deploy = "depends_on: [build]\nrunes_on: x\nwhen:\n  branch: main\nsteps:\n  deploy:\n    image: alpine\n    commands: [./deploy]\n";
    let sources = [
        Source {
            name: ".woodpecker/build.yml",
            text: build,
        },
        Source {
            name: ".woodpecker/deploy.yaml",
            text: deploy,
        },
    ];
    let parsed = parse_files(&sources, &Limits::default());
    let warnings: Vec<String> = parsed
        .diagnostics
        .warnings()
        .map(ToString::to_string)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("unknown key `runes_on`")
            && warnings[0].contains("did you mean `runs_on`?"),
        "{warnings:?}"
    );
    let plan = compile(&parsed.config.expect("valid"), &push()).expect("plans");
    let stages: Vec<(&str, Vec<String>)> = plan
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.depends_on.clone()))
        .collect();
    assert_eq!(
        stages,
        vec![("build", vec![]), ("deploy", vec!["build".to_owned()])]
    );
}

#[test]
fn environment_maps_lists_and_secrets() {
    let yaml = pipeline(
        "
  - name: map
    image: alpine
    commands: [env]
    environment:
      PLAIN: value
      NUMBER: 1.10
      EMPTY:
      TOKEN:
        from_secret: api_token
  - name: list
    image: alpine
    commands: [env]
    environment:
      - A=1
      - B=x=y
",
    );
    let plan = plan(&yaml, &push());
    let map = plan.stages[0].step("map").expect("map");
    assert_eq!(map.environment["PLAIN"], "value");
    assert_eq!(map.environment["NUMBER"], "1.10");
    assert_eq!(map.environment["EMPTY"], "");
    assert!(!map.environment.contains_key("TOKEN"));
    assert_eq!(map.secrets[0].env, "TOKEN");
    assert_eq!(map.secrets[0].secret, "api_token");
    let list = plan.stages[0].step("list").expect("list");
    assert_eq!(list.environment["A"], "1");
    assert_eq!(list.environment["B"], "x=y");
}

#[test]
fn plugin_settings_become_plugin_variables() {
    let yaml = pipeline(
        "
  - name: publish
    image: plugins/docker
    settings:
      repo: acme/app
      auto_tag: true
      tags: [latest, '1.0', 2]
      build_args:
        VERSION: 1.2
      mounts:
        - {name: x, path: /x}
      password:
        from_secret: docker_password
",
    );
    let plan = plan(&yaml, &push());
    let step = plan.stages[0].step("publish").expect("publish");
    assert_eq!(step.kind, StepKind::Plugin);
    assert!(step.script.is_none());
    assert_eq!(step.environment["PLUGIN_REPO"], "acme/app");
    assert_eq!(step.environment["PLUGIN_AUTO_TAG"], "true");
    assert_eq!(step.environment["PLUGIN_TAGS"], "latest,1.0,2");
    assert_eq!(step.environment["PLUGIN_BUILD_ARGS"], r#"{"VERSION":1.2}"#);
    assert_eq!(
        step.environment["PLUGIN_MOUNTS"],
        r#"[{"name":"x","path":"/x"}]"#
    );
    assert_eq!(step.secrets[0].env, "PLUGIN_PASSWORD");
}

#[test]
fn substitution_as_drone_does_it() {
    let yaml = pipeline(
        "
  - name: build
    image: golang:${GO_VERSION=1.22}
    commands:
      - echo ${DRONE_BRANCH} ${DRONE_COMMIT_SHA:0:8}
      - echo ${DRONE_TAG##v} $${HOME} $HOME
      - echo ${CI_COMMIT_TAG=nightly}
    environment:
      IMAGE_TAG: ${DRONE_BRANCH/\\//-}
",
    );
    let mut ctx = push();
    ctx.branch = "feature/x".into();
    let plan = plan(&yaml, &ctx);
    let step = plan.stages[0].step("build").expect("build");
    assert_eq!(step.image.as_deref(), Some("golang:1.22"));
    assert_eq!(
        step.commands,
        [
            "echo feature/x 01234567",
            "echo  ${HOME} $HOME",
            "echo nightly"
        ]
    );
    assert_eq!(step.environment["IMAGE_TAG"], "feature-x");
}

#[test]
fn substitution_cannot_inject_yaml() {
    let yaml = pipeline(
        "\n  - name: build\n    image: alpine\n    commands: [\"echo ${DRONE_BRANCH}\"]\n",
    );
    let mut ctx = push();
    ctx.branch = "x\n    privileged: true".into();
    let plan = plan(&yaml, &ctx);
    let step = plan.stages[0].step("build").expect("build");
    assert!(!step.privileged);
    assert_eq!(step.commands, ["echo x\n    privileged: true"]);
}

#[test]
fn scripts_echo_each_command_like_drone() {
    let plan = plan(
        &pipeline("\n  - name: t\n    image: alpine\n    commands: [make, make test]\n"),
        &push(),
    );
    let step = plan.stages[0].step("t").expect("t");
    assert_eq!(step.kind, StepKind::Commands);
    assert_eq!(
        step.script.as_deref(),
        Some(
            "set -e\n\nprintf '+ %s\\n' 'make'\nmake\n\nprintf '+ %s\\n' 'make test'\nmake test\n"
        )
    );
    assert_eq!(step.shell, "sh");
}

#[test]
fn builtin_variables_for_steps() {
    let plan = plan(
        &pipeline("\n  - name: t\n    image: alpine\n    commands: [env]\n"),
        &push(),
    );
    let stage = &plan.stages[0];
    for (k, v) in [
        ("DRONE_BRANCH", "main"),
        ("DRONE_REPO", "acme/app"),
        ("DRONE_BUILD_EVENT", "push"),
        ("DRONE_BUILD_NUMBER", "1"),
        (
            "DRONE_COMMIT_SHA",
            "0123456789abcdef0123456789abcdef01234567",
        ),
        ("CI_PIPELINE_EVENT", "push"),
        ("DRONE_STAGE_NAME", "ci"),
        ("DRONE_WORKSPACE", "/drone/src"),
        ("CI", "true"),
    ] {
        assert_eq!(stage.environment.get(k).map(String::as_str), Some(v), "{k}");
    }
    let step = stage.step("t").expect("t");
    assert_eq!(step.environment["DRONE_STEP_NAME"], "t");
    assert_eq!(step.environment["DRONE_STEP_NUMBER"], "2");
}

#[test]
fn workspace_clone_timeouts_and_resources() {
    let yaml = "
kind: pipeline
name: ci
timeout: 1h
workspace:
  base: /go
  path: src/example.com/app
clone:
  depth: 50
steps:
  - name: t
    image: golang
    commands: [go test]
    timeout: 10m
    resources:
      limits:
        cpu: 1500m
        memory: 512MiB
";
    let plan = plan(yaml, &push());
    let stage = &plan.stages[0];
    assert_eq!(stage.workspace, "/go/src/example.com/app");
    assert_eq!(stage.timeout_secs, Some(3600));
    assert_eq!(stage.clone.as_ref().and_then(|c| c.depth), Some(50));
    let step = stage.step("t").expect("t");
    assert_eq!(step.timeout_secs, Some(600));
    assert_eq!(step.resources.limits.cpu_millis, Some(1500));
    assert_eq!(step.resources.limits.memory_bytes, Some(512 << 20));
    assert_eq!(step.working_dir, "/go/src/example.com/app");
}

const PRIVILEGED: &str = "
kind: pipeline
name: ci
volumes:
  - name: docker
    host:
      path: /var/run/docker.sock
  - name: cache
    temp: {}
steps:
  - name: dind
    image: docker:dind
    privileged: true
    volumes:
      - name: docker
        path: /var/run/docker.sock
  - name: cached
    image: alpine
    commands: [ls /cache]
    volumes:
      - name: cache
        path: /cache
";

#[test]
fn untrusted_repositories_cannot_use_privileged_steps_or_host_volumes() {
    let config = parse(".gantry.yml", PRIVILEGED).config.expect("valid");
    let err = compile(&config, &push()).expect_err("refused");
    let CompileError::Untrusted(diags) = &err else {
        panic!("{err}")
    };
    let messages: Vec<String> = diags.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with(
            ".gantry.yml:5:5: error: pipeline `ci` declares volume `docker` on the host directory `/var/run/docker.sock`"
        ),
        "{messages:?}"
    );
    assert!(
        messages[1].starts_with(".gantry.yml:13:17: error: step `dind` is privileged"),
        "{messages:?}"
    );

    let mut trusted = push();
    trusted.trusted = true;
    let plan = compile(&config, &trusted).expect("trusted plans");
    let dind = plan.stages[0].step("dind").expect("dind");
    assert!(dind.privileged);
    assert_eq!(
        dind.mounts,
        vec![Mount::Named {
            name: "docker".into(),
            path: "/var/run/docker.sock".into()
        }]
    );
}

/// Drone's linter checks every step of every pipeline before it looks at `when` or
/// `trigger`; so does gantry (it used to look only at the steps that would run).
#[test]
fn untrusted_refusal_covers_steps_and_pipelines_that_do_not_run() {
    let step_skipped = PRIVILEGED.replace(
        "    privileged: true\n",
        "    privileged: true\n    when:\n      event: tag\n",
    );
    let pipeline_skipped = format!("{PRIVILEGED}trigger:\n  event: [promote]\n");
    for yaml in [step_skipped, pipeline_skipped] {
        let config = parse(".gantry.yml", &yaml).config.expect("valid");
        let err = compile(&config, &push()).expect_err("refused although it would not run");
        assert!(matches!(err, CompileError::Untrusted(_)), "{err}");
        assert!(
            err.to_string().contains("step `dind` is privileged"),
            "{err}"
        );
    }
}

#[test]
fn exec_pipelines_run_on_the_host_and_need_trust() {
    let yaml =
        "kind: pipeline\ntype: exec\nname: host\nsteps:\n  - name: t\n    commands: [uname -a]\n";
    let config = parse(".gantry.yml", yaml).config.expect("valid");
    assert!(matches!(
        compile(&config, &push()),
        Err(CompileError::Untrusted(_))
    ));
    let mut trusted = push();
    trusted.trusted = true;
    let plan = compile(&config, &trusted).expect("plans");
    assert_eq!(plan.stages[0].steps[1].image, None);
}

#[test]
fn merge_keys_and_list_splices_of_real_files() {
    let yaml = "
variables:
  - &golang 'golang:1.22'
  - &paths ['**/*.go', 'go.mod']
  - &defaults
    image: *golang
    pull: true
steps:
  test:
    <<: *defaults
    commands: [go test]
    when:
      path:
        - <<: *paths
        - '.woodpecker/**'
";
    let mut ctx = push();
    ctx.changed_files = vec![".woodpecker/test.yml".into()];
    let plan = plan(yaml, &ctx);
    let step = plan.stages[0].step("test").expect("test");
    assert!(step.run, "{:?}", step.reason);
    assert_eq!(step.image.as_deref(), Some("golang:1.22"));
    ctx.changed_files = vec!["README.md".into()];
    let plan = crate::support::plan(yaml, &ctx);
    assert!(!plan.stages[0].step("test").expect("test").run);
}

#[test]
fn matrix_include_expands_one_stage_per_combination() {
    let yaml = "
matrix:
  include:
    - {ELIXIR: '1.14', OTP: '25'}
    - {ELIXIR: '1.18', OTP: '27'}
services:
  db:
    image: postgres
    environment:
      POSTGRES_DB: test_${ELIXIR}
steps:
  test:
    image: elixir:${ELIXIR}-otp${OTP}
    commands: [mix test]
";
    let plan = plan(yaml, &push());
    let images: Vec<(&str, Option<&str>, &str)> = plan
        .stages
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.steps[1].image.as_deref(),
                s.services[0].environment["POSTGRES_DB"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        images,
        vec![
            (
                "gantry (ELIXIR=1.14, OTP=25)",
                Some("elixir:1.14-otp25"),
                "test_1.14"
            ),
            (
                "gantry (ELIXIR=1.18, OTP=27)",
                Some("elixir:1.18-otp27"),
                "test_1.18"
            ),
        ]
    );
}
