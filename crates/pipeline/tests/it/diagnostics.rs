//! Bad files: every problem at once, each as `FILE:LINE:COLUMN: message` with a hint.

use gantry_pipeline::lint;

fn messages(yaml: &str) -> Vec<String> {
    lint(".gantry.yml", yaml)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn reports_every_problem_at_once_in_file_order() {
    let yaml = "kind: pipeline
name: ci
steps:
  - name: build
    imgae: golang
    commands: [go build]
  - name: test
    image: golang
    commands: [go test]
    depends_on: [biuld]
  - name: test
    image: golang
";
    assert_eq!(
        messages(yaml),
        vec![
            ".gantry.yml:4:5: error: step `build` has no image (at pipeline[ci].steps[build].image); add `image:`, e.g. `image: alpine:3`, or use `type: exec` for host commands",
            ".gantry.yml:5:5: warning: unknown key `imgae` (at pipeline[ci].steps[0]); did you mean `image`?",
            ".gantry.yml:10:18: error: depends_on names an unknown step `biuld` (at pipeline[ci].steps[test].depends_on); did you mean `build`?",
            ".gantry.yml:11:11: error: two steps are named `test` (the first at line 7) (at pipeline[ci].steps[test]); names must be unique in a pipeline",
        ]
    );
}

#[test]
fn names_the_cycle() {
    let yaml = "kind: pipeline
name: ci
steps:
  - {name: a, image: alpine, depends_on: [c]}
  - {name: b, image: alpine, depends_on: [a]}
  - {name: c, image: alpine, depends_on: [b]}
";
    let all = messages(yaml);
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        all[0].contains("steps depend on each other in a cycle: "),
        "{all:?}"
    );
    for arrow in ["a → b", "b → c", "c → a"] {
        assert!(all[0].contains(arrow), "{all:?}");
    }
}

#[test]
fn pipeline_dependencies_are_checked_across_documents() {
    let yaml = "kind: pipeline
name: build
steps: [{name: b, image: alpine}]
---
kind: pipeline
name: deploy
depends_on: [biuld, deploy]
steps: [{name: d, image: alpine}]
---
kind: pipeline
name: build
steps: [{name: b, image: alpine}]
";
    let all = messages(yaml);
    assert!(
        all.iter().any(|m| m
            .starts_with(".gantry.yml:7:14: error: depends_on names an unknown pipeline `biuld`")
            && m.ends_with("did you mean `build`?")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|m| m.contains("pipelines depend on each other in a cycle: deploy → deploy")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|m| m.starts_with(".gantry.yml:11:7: error: two pipelines are named `build`")),
        "{all:?}"
    );
}

#[test]
fn invalid_yaml_has_a_position_and_a_hint() {
    let all = messages("kind: pipeline\nsteps:\n  - name: a\n   image: x\n");
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(all[0].starts_with(".gantry.yml:4:"), "{all:?}");
    assert!(all[0].contains("error: invalid YAML"), "{all:?}");
}

#[test]
fn wrong_types_and_values() {
    let yaml = "kind: pipeline
name: ci
steps:
  - name: a
    image: alpine
    commands: {x: 1}
    pull: sometimes
    failure: maybe
    privileged: perhaps
    timeout: soon
    when:
      status: [broken]
      event: [pusj]
      branch: 'a[b'
";
    let all = messages(yaml);
    let expect = [
        ".gantry.yml:6:15: error: expected a list of texts, found a mapping",
        ".gantry.yml:7:11: error: unknown pull policy `sometimes`",
        ".gantry.yml:8:14: error: unknown failure mode `maybe`",
        ".gantry.yml:9:17: error: expected true or false, found `perhaps`",
        ".gantry.yml:10:14: error: `soon` is not a duration",
        ".gantry.yml:12:15: error: unknown status `broken`",
        ".gantry.yml:13:14: warning: unknown event `pusj`: it never matches",
        ".gantry.yml:14:15: error: unclosed `[` in pattern `a[b`",
    ];
    for e in expect {
        assert!(
            all.iter().any(|m| m.starts_with(e)),
            "missing {e:?} in {all:#?}"
        );
    }
    assert!(
        all.iter().any(|m| m.contains("did you mean `push`?")),
        "{all:#?}"
    );
}

#[test]
fn bad_substitutions_are_found_by_lint() {
    let all = messages("kind: pipeline\nname: ci\nsteps:\n  - name: a\n    image: alpine:${TAG\n");
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        all[0].starts_with(".gantry.yml:5:12: error: unclosed `${`"),
        "{all:?}"
    );
}

#[test]
fn unknown_format_and_empty_files() {
    let all = messages("image: alpine\n");
    assert!(
        all[0].starts_with(".gantry.yml:1:1: error: cannot tell the format of this file"),
        "{all:?}"
    );
    let all = messages("# nothing\n");
    assert!(
        all[0].starts_with(".gantry.yml:1:1: error: the file is empty"),
        "{all:?}"
    );
    let all = messages("- a\n- b\n");
    assert!(
        all[0].contains("expected a mapping at the top of the file"),
        "{all:?}"
    );
}

#[test]
fn duplicate_keys_are_errors_with_their_line() {
    let all =
        messages("kind: pipeline\nname: ci\nname: again\nsteps: [{name: a, image: alpine}]\n");
    assert_eq!(
        all,
        vec![
            ".gantry.yml:3:1: error: key `name` is given twice in this mapping (first at line 2); YAML does not allow duplicate keys; remove one of the two, or merge their values"
        ]
    );
}

#[test]
fn retry_takes_a_count_or_a_count_and_a_delay() {
    let yaml = "kind: pipeline
name: ci
steps:
  - name: a
    image: alpine
    commands: [make]
    retry: 2
  - name: b
    image: alpine
    commands: [make]
    retry: {count: 1, delay: 30s}
";
    assert!(messages(yaml).is_empty(), "{:#?}", messages(yaml));
    let plan = crate::support::plan(yaml, &crate::support::push());
    let steps = &plan.stages[0].steps;
    let retry = |name: &str| {
        steps
            .iter()
            .find(|s| s.name == name)
            .map(|s| (s.retry.count, s.retry.delay_secs))
    };
    assert_eq!(retry("a"), Some((2, 0)));
    assert_eq!(retry("b"), Some((1, 30)));

    let wrong = "kind: pipeline
name: ci
steps:
  - name: a
    image: alpine
    commands: [make]
    retry: 0
  - name: b
    image: alpine
    commands: [make]
    retry: {delay: 5s}
  - name: c
    image: alpine
    commands: [make]
    retry: {count: 2, delay: forever}
services:
  - name: db
    image: postgres
    retry: 2
";
    let all = messages(wrong);
    let expect = [
        ".gantry.yml:7:12: error: `0` is not a number of retries from 1 to 10",
        ".gantry.yml:11:12: error: `retry` needs a `count`",
        ".gantry.yml:15:30: error: `forever` is not a delay of at most an hour",
        ".gantry.yml:19:12: error: a service or detached step is not retried",
    ];
    for e in expect {
        assert!(
            all.iter().any(|m| m.starts_with(e)),
            "missing {e:?} in {all:#?}"
        );
    }
}

#[test]
fn locks_and_concurrency_limits_are_read_and_checked() {
    let yaml = "kind: pipeline
name: deploy
concurrency: {limit: 2}
lock: production-db
steps:
  - name: migrate
    image: alpine
    commands: [migrate]
    lock: schema
  - name: skipped
    image: alpine
    commands: [x]
    lock: never-taken
    when: {event: [tag]}
";
    assert!(messages(yaml).is_empty(), "{:#?}", messages(yaml));
    let plan = crate::support::plan(yaml, &crate::support::push());
    let stage = &plan.stages[0];
    assert_eq!(stage.concurrency, Some(2));
    assert_eq!(
        stage.locks,
        ["production-db", "schema"],
        "a skipped step's lock is not taken"
    );

    let wrong = "kind: pipeline
name: deploy
concurrency: {limit: 0}
lock: 'two words'
steps:
  - name: a
    image: alpine
    commands: [x]
---
kind: pipeline
name: other
concurrency: 1
steps:
  - name: a
    image: alpine
    commands: [x]
";
    let all = messages(wrong);
    let expect = [
        ".gantry.yml:3:22: error: `0` is not a limit: write a number of at least 1",
        ".gantry.yml:4:7: error: `two words` is not a lock name",
        ".gantry.yml:12:14: error: expected a mapping of keys to values",
    ];
    for e in expect {
        assert!(
            all.iter().any(|m| m.starts_with(e)),
            "missing {e:?} in {all:#?}"
        );
    }
}
