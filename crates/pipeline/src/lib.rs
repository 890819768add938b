//! gantry's pipeline files: read gantry (Drone 1.x), Drone 0.8 and Woodpecker YAML into one
//! typed model, validate it with `file:line:column` diagnostics, and compile it for a build
//! into a [`Plan`]. Pure: no I/O, no async; every input is a string and every output a value.
//!
//! ```
//! use gantry_pipeline::{Context, compile, parse};
//!
//! let parsed = parse(".gantry.yml", "kind: pipeline\nname: ci\nsteps:\n  - name: test\n    image: alpine\n    commands: [make test]\n");
//! let config = parsed.config.expect("valid");
//! let plan = compile(&config, &Context::push("acme/app", "main")).expect("plans");
//! assert_eq!(plan.running_steps(), vec![("ci", vec!["clone", "test"])]);
//! ```
//!
//! # Code map
//!
//! Text in, values out: `parse(name, text) -> Parsed { config, diagnostics }`, `lint`,
//! `parse_files` (several files of one build), `compile(&Config, &Context) -> Result<Plan,
//! CompileError>`.
//!
//! - `yaml` — `read` builds a tree of `Node`s with positions from granit-parser's events;
//!   expands aliases, applies merge keys and `- <<: *list` splices; a duplicate key is an error
//!   (YAML forbids them, and a reader keeping either value would let an appended key change a
//!   reviewed or signed file).
//!   **Invariant:** reading is bounded by `Limits` (bytes, depth including what aliases bring,
//!   nodes after expansion); no recursion over untrusted depth before the depth check.
//! - `decode` — `Decoder` (one folder: the core, then conditions, env, container options,
//!   steps, what pipelines share, Drone's and Woodpecker's documents) turns nodes into the
//!   `model` for each `Dialect`, collecting every
//!   problem as a `Diagnostic` instead of stopping. `${VAR}` substitution happens here, on scalar
//!   values (never on raw text: a branch name cannot inject YAML). Field paths (`At`) are
//!   rendered only when a problem is reported.
//! - `model` — `Pipeline`, `Step`, `Conditions`, `Constraint`, `NotifySpec` (a pipeline's
//!   `notify:` targets, carried into `Stage::notify`) ...: what the file says, with positions,
//!   the same for every dialect.
//! - `validate` — checks across a whole build: unique names, `depends_on` targets, cycles
//!   (named), images, volumes.
//! - `conditions` — Drone's `when`/`trigger` semantics against a `Context`; `status` becomes a
//!   `StatusFilter` for run time. `delete` and closed pull requests run only pipelines whose
//!   trigger names them.
//! - `compile` — matrix expansion, re-decoding with the build's variables where the file has a
//!   `$`, trigger and `when` evaluation, step order (`graph::topological_order`), environment
//!   (`env`), scripts, trust checks, cache scopes (`CacheSpec`: repository, branch / pull
//!   request / tag, the default branch as fallback, limits from `Context::cache_policy`).
//!   **Invariant:** trust is decided on each stage as it will run (after the matrix and every
//!   substitution), by `trust::check_stage`, for every pipeline and step of the file, run or not
//!   (Drone's linter rules).
//! - `trust` — the rules an untrusted stage must keep (`Rule`: privileged, host and memory
//!   volumes, the Docker socket, mounts under `/run/drone`, `network_mode`, devices, DNS, extra
//!   hosts, host ports, `cap_add`, `tmpfs`, `type: exec`), written as exhaustive destructurings
//!   of `Stage`, `PlanStep` and `ContainerOptions`, so a new field does not compile until it is
//!   decided whether it needs trust. The compiler and the runner call the same function.
//! - `plan` — `Plan`, `Stage`, `PlanStep` (serde): the contract with the runner. Docker's
//!   container options travel as `ContainerOptions`, left out of the JSON when empty.
//!   `PlanStep::runs_when(StageStatus)` is the one gating rule the executor applies.
//! - `expr` — Woodpecker's `evaluate:` expressions (a subset of the expr language), checked at
//!   lint, evaluated against the stage's variables. An evaluation error is `Skip::Invalid`: the
//!   build errors; it never silently skips.
//! - `signature` — the text side of Drone's signed files, read from the parsed file: exactly one
//!   `kind: signature` document, the last, holding `kind` and `hmac`; it covers every byte before
//!   its `---` line, whose documents must be exactly the file's others (the key and the MAC are
//!   the server's).
//! - `envsubst`, `glob`, `graph`, `diag` — Drone's substitution, glob matching in linear time,
//!   topological order with cycle detection, diagnostics with "did you mean".
//!
//! **Boundary:** no I/O, no async, no clock: files come in as strings, and `Context` carries
//! everything about the build. Folder reading lives in the binary.

pub mod compile;
pub mod conditions;
pub mod context;
mod decode;
pub mod deploy;
pub mod diag;
pub mod env;
pub mod envsubst;
pub mod expr;
pub mod glob;
mod graph;
pub mod model;
pub mod plan;
mod rule;
pub mod signature;
pub mod trust;
mod validate;
pub mod yaml;

pub use compile::{CompileError, compile};
pub use context::{Context, Event, MAX_CHANGED_FILES, RepoInfo};
pub use decode::{parse_bytes, parse_duration};
pub use diag::{Diagnostic, Diagnostics, Pos, Severity};
pub use model::{Dialect, Pipeline, SecretDocument};
pub use plan::{Plan, PlanStep, Stage, StageStatus, StepKind};
pub use validate::CLONE_STEP;
pub use yaml::Limits;

use decode::{At, Decoded, Decoder};
use yaml::{Node, Value};

/// A pipeline file's name (as shown in diagnostics) and text.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

/// One parsed file.
#[derive(Debug, Clone)]
pub struct PipelineFile {
    pub name: String,
    pub dialect: Dialect,
    pub pipelines: Vec<Pipeline>,
    pub secrets: Vec<SecretDocument>,
    /// The file's documents, kept to decode a pipeline again with a build's variables.
    documents: Vec<Node>,
    /// For each pipeline, its document, if that holds a `$` (else substitution cannot change
    /// it and the pipeline is used as it is).
    substitutable: Vec<Option<usize>>,
}

impl PipelineFile {
    fn substitutable_node(&self, index: usize) -> Option<&Node> {
        self.substitutable
            .get(index)
            .copied()
            .flatten()
            .and_then(|d| self.documents.get(d))
    }
}

/// The pipeline configuration of a build: one file, or several (a `.woodpecker/` folder).
#[derive(Debug, Clone)]
pub struct Config {
    pub files: Vec<PipelineFile>,
}

impl Config {
    pub fn pipelines(&self) -> impl Iterator<Item = &Pipeline> {
        self.files.iter().flat_map(|f| f.pipelines.iter())
    }
}

/// The result of parsing: the configuration when there is no error, and every diagnostic.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub config: Option<Config>,
    pub diagnostics: Diagnostics,
    /// The dialect of each file, in order, where it could be told.
    pub dialects: Vec<(String, Option<Dialect>)>,
}

/// A file's bytes as text, or a diagnostic at the first byte that is not UTF-8.
pub fn utf8<'b>(name: &str, bytes: &'b [u8]) -> Result<&'b str, Diagnostic> {
    std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        error_at(
            name,
            Pos::new(
                u32::try_from(line).unwrap_or(u32::MAX),
                u32::try_from(column).unwrap_or(u32::MAX),
            ),
            "the file is not UTF-8 text",
            Some("save it as UTF-8".to_owned()),
        )
    })
}

/// Parses one pipeline file.
pub fn parse(name: &str, text: &str) -> Parsed {
    parse_files(&[Source { name, text }], &Limits::default())
}

/// Checks one file: every error and warning, sorted by position.
pub fn lint(name: &str, text: &str) -> Diagnostics {
    parse(name, text).diagnostics
}

/// Parses one workflow of a `.woodpecker/` folder on its own: `depends_on` naming workflows
/// of other files is a warning (they are checked when the folder is linted or built).
pub fn parse_workflow_alone(name: &str, text: &str) -> Parsed {
    parse_sources(&[Source { name, text }], &Limits::default(), Scope::Alone)
}

/// Parses the files of one build together (names of pipelines are shared across them).
pub fn parse_files(sources: &[Source<'_>], limits: &Limits) -> Parsed {
    parse_sources(sources, limits, Scope::Whole)
}

/// Whether the files parsed are a whole configuration or one file of a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Whole,
    Alone,
}

fn parse_sources(sources: &[Source<'_>], limits: &Limits, scope: Scope) -> Parsed {
    let mut diagnostics = Diagnostics::default();
    let mut files = Vec::with_capacity(sources.len());
    let mut dialects = Vec::with_capacity(sources.len());
    for source in sources {
        let file = parse_file(source, limits, &mut diagnostics);
        dialects.push((source.name.to_owned(), file.as_ref().map(|f| f.dialect)));
        files.extend(file);
    }
    if sources.len() > 1 && files.iter().any(|f| f.dialect != Dialect::Woodpecker) {
        let names: Vec<&str> = files
            .iter()
            .filter(|f| f.dialect != Dialect::Woodpecker)
            .map(|f| f.name.as_str())
            .collect();
        diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file: names.first().copied().unwrap_or_default().to_owned(),
            pos: Pos::new(1, 1),
            path: String::new(),
            message: "only Woodpecker workflows can be split over several files".to_owned(),
            hint: Some("put every pipeline in one file as `---`-separated documents".to_owned()),
        });
    }
    let all: Vec<&Pipeline> = files.iter().flat_map(|f| f.pipelines.iter()).collect();
    validate::validate(&all, scope, &mut diagnostics);
    diagnostics.sort();
    let config = (!diagnostics.has_errors()).then_some(Config { files });
    Parsed {
        config,
        diagnostics,
        dialects,
    }
}

fn error_at(file: &str, pos: Pos, message: impl Into<String>, hint: Option<String>) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_owned(),
        pos,
        path: String::new(),
        message: message.into(),
        hint,
    }
}

fn parse_file(
    source: &Source<'_>,
    limits: &Limits,
    diagnostics: &mut Diagnostics,
) -> Option<PipelineFile> {
    let documents = match yaml::read(source.text, limits) {
        Ok(documents) => documents,
        Err(e) => {
            diagnostics.push(error_at(source.name, e.pos, e.message, e.hint));
            return None;
        }
    };
    let docs = documents.documents;
    let dialect = match detect(&docs) {
        Ok(dialect) => dialect,
        Err(message) => {
            let pos = docs.first().map(|d| d.pos).unwrap_or(Pos::new(1, 1));
            diagnostics.push(error_at(
                source.name,
                pos,
                message,
                Some("start with `kind: pipeline` (gantry), `pipeline:` (Drone 0.8) or `steps:` (Woodpecker)".to_owned()),
            ));
            return None;
        }
    };
    let mut decoder = Decoder::new(source.name, dialect, None);
    let mut decoded = Decoded::default();
    let mut substitutable = Vec::new();
    match dialect {
        Dialect::Gantry => {
            for (i, doc) in docs.iter().enumerate() {
                match doc_kind(doc) {
                    Some("pipeline") | None if doc.get("steps").is_some() || doc_kind(doc).is_some() => {
                        if doc_kind(doc).is_none() {
                            decoder.warn(doc.pos, &At::ROOT, "document has no `kind`: read as `kind: pipeline`", Some("add `kind: pipeline`"));
                        }
                        if let Some(p) = decoder.drone_pipeline(doc, decoded.pipelines.len()) {
                            substitutable.push(has_dollar(doc).then_some(i));
                            decoded.pipelines.push(p);
                        }
                    }
                    Some("secret") => decoded.secrets.extend(decoder.secret_document(doc)),
                    Some("signature") => {}
                    Some("template") => decoder.error(
                        doc.pos,
                        &At::ROOT.key("kind"),
                        "`kind: template` documents are not supported",
                        Some("write the pipeline out in full; gantry does not expand Drone templates"),
                    ),
                    Some(other) => {
                        let other = other.to_owned();
                        decoder.error(doc.pos, &At::ROOT.key("kind"), format!("unknown kind `{other}`"), Some("use `kind: pipeline`, `secret` or `signature`"))
                    }
                    None => decoder.error(doc.pos, &At::ROOT, format!("document {} has no `kind`", i + 1), Some("add `kind: pipeline`")),
                }
            }
        }
        Dialect::DroneLegacy | Dialect::Woodpecker => {
            if docs.len() > 1 {
                decoder.error(
                    docs[1].pos,
                    &At::ROOT,
                    "a Drone 0.8 or Woodpecker file holds one document",
                    Some("split the workflows into files of a `.woodpecker/` folder"),
                );
            }
            if let Some(doc) = docs.first() {
                let name = workflow_name(source.name, dialect);
                if let Some(p) = decoder.pipeline(doc, 0, &name) {
                    substitutable.push(has_dollar(doc).then_some(0));
                    decoded.pipelines.push(p);
                }
            }
        }
    }
    if decoded.pipelines.is_empty() && !decoder.diags.has_errors() {
        decoder.error(
            Pos::new(1, 1),
            &At::ROOT,
            "the file defines no pipeline",
            Some("add a `kind: pipeline` document with `steps:`"),
        );
    }
    diagnostics.extend(decoder.diags);
    Some(PipelineFile {
        name: source.name.to_owned(),
        dialect,
        pipelines: decoded.pipelines,
        secrets: decoded.secrets,
        documents: docs,
        substitutable,
    })
}

impl Decoder<'_> {
    /// Decodes the pipeline in `node` according to the file's dialect.
    pub(crate) fn pipeline(&mut self, node: &Node, index: usize, name: &str) -> Option<Pipeline> {
        match self.dialect {
            Dialect::Gantry => self.drone_pipeline(node, index),
            Dialect::DroneLegacy => self.legacy_pipeline(node),
            Dialect::Woodpecker => self.woodpecker_pipeline(node, name),
        }
    }
}

fn doc_kind(doc: &Node) -> Option<&str> {
    doc.get("kind").and_then(Node::as_str)
}

/// Tells the dialect from the content.
fn detect(docs: &[Node]) -> Result<Dialect, String> {
    let Some(first) = docs.first() else {
        return Err("the file is empty".to_owned());
    };
    if docs.iter().any(|d| d.get("kind").is_some()) {
        return Ok(Dialect::Gantry);
    }
    if first.as_map().is_none() {
        return Err(format!(
            "expected a mapping at the top of the file, found {}",
            first.kind_name()
        ));
    }
    if first
        .get("pipeline")
        .is_some_and(|p| matches!(p.value, Value::Map(_)))
    {
        return Ok(Dialect::DroneLegacy);
    }
    if first.get("steps").is_some() {
        // A Drone 1.x document that forgot `kind:` still shows its own keys: Woodpecker has no
        // `type`, `trigger`, `name` or `node`, and writes `platform` as text, not a mapping.
        let drone_key = ["type", "trigger", "name", "node"]
            .iter()
            .any(|k| first.get(k).is_some())
            || first
                .get("platform")
                .is_some_and(|p| matches!(p.value, Value::Map(_)));
        let steps_list = first
            .get("steps")
            .is_some_and(|s| matches!(s.value, Value::Seq(_)));
        return Ok(if drone_key && steps_list && first.get("when").is_none() {
            Dialect::Gantry
        } else {
            Dialect::Woodpecker
        });
    }
    Err("cannot tell the format of this file".to_owned())
}

/// Woodpecker names a workflow after its file: `.woodpecker/test.yml` is `test`.
fn workflow_name(file: &str, dialect: Dialect) -> String {
    if dialect == Dialect::DroneLegacy {
        return "default".to_owned();
    }
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    let base = base
        .strip_suffix(".yml")
        .or_else(|| base.strip_suffix(".yaml"))
        .unwrap_or(base);
    let base = base.trim_start_matches('.');
    if base.is_empty() {
        "default".to_owned()
    } else {
        base.to_owned()
    }
}

fn has_dollar(node: &Node) -> bool {
    match &node.value {
        Value::Scalar(s) => s.text.contains('$'),
        Value::Seq(items) => items.iter().any(has_dollar),
        Value::Map(entries) => entries.iter().any(|(_, v)| has_dollar(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_errors_point_at_the_first_bad_byte() {
        let err = utf8("x.yml", b"kind: pipeline\nname: \xc3\xa9t\xff\n").expect_err("not UTF-8");
        assert_eq!(
            err.to_string(),
            "x.yml:2:9: error: the file is not UTF-8 text; save it as UTF-8"
        );
        assert_eq!(utf8("x.yml", "é".as_bytes()), Ok("é"));
    }
}
