//! Woodpecker's `evaluate:` conditions: the subset of the expr language that real pipeline
//! files use, evaluated against the build's variables.
//!
//! Literals (`"text"`, `'text'`, numbers, `true`, `false`, `nil`, `[a, b]`), variables by name
//! (undefined ones are `nil`), `$env` (the map of all variables), `not`/`!`, `&&`/`and`,
//! `||`/`or`, `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `not in`, `contains`, `startsWith`,
//! `endsWith`, `matches` (a regular expression, matched in linear time), and the functions
//! `len`, `fromJSON`, `lower`, `upper`, `trim`, `int`, `float`, `string`, and
//! `any`/`all`/`none`/`filter` with a predicate `{ # startsWith "cmd/" }` where `#` is the
//! element; arithmetic (`+ - * / %`, `+` also joins text) and member access (`$env.NAME`,
//! `$env["NAME"]`, `fromJSON(X).key`, `list[0]`, `list[-1]`). Anything else is an error that
//! names what and where, never a guess.

use std::collections::BTreeMap;

mod eval;
mod lex;

use eval::Evaluator;
pub use eval::STEP_BUDGET;
use lex::tokenize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {offset} of the expression)")]
pub struct ExprError {
    pub message: String,
    pub offset: usize,
}

fn error<T>(offset: usize, message: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError {
        message: message.into(),
        offset,
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Nil,
    Bool(bool),
    Number(f64),
    Text(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Env,
}

impl Value {
    fn truthy(&self, offset: usize) -> Result<bool, ExprError> {
        match self {
            Value::Bool(b) => Ok(*b),
            Value::Nil => Ok(false),
            other => error(
                offset,
                format!("expected true or false, found {}", other.describe()),
            ),
        }
    }

    /// What making or walking the value costs, in budget steps.
    fn size(&self) -> u64 {
        match self {
            Value::Nil | Value::Bool(_) | Value::Number(_) | Value::Env => 1,
            Value::Text(text) => 1 + text.len() as u64,
            Value::List(items) => items
                .iter()
                .fold(1, |total, item| total.saturating_add(item.size())),
            Value::Map(entries) => entries.iter().fold(1, |total, (key, value)| {
                total.saturating_add(key.len() as u64 + value.size())
            }),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::Text(_) => "text",
            Value::List(_) => "a list",
            Value::Map(_) => "a map",
            Value::Env => "$env",
        }
    }

    fn from_json(json: serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::Text(s),
            serde_json::Value::Array(items) => {
                Value::List(items.into_iter().map(Value::from_json).collect())
            }
            serde_json::Value::Object(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, Value::from_json(v)))
                    .collect(),
            ),
        }
    }
}

fn run(source: &str, vars: &BTreeMap<String, String>, live: bool) -> Result<bool, ExprError> {
    let tokens = tokenize(source)?;
    if tokens.is_empty() {
        return error(0, "the expression is empty");
    }
    let mut evaluator = Evaluator {
        tokens,
        at: 0,
        vars,
        end: source.len(),
        elements: Vec::new(),
        depth: 0,
        live,
        budget: STEP_BUDGET,
    };
    let value = evaluator.or()?;
    if evaluator.at < evaluator.tokens.len() {
        return error(evaluator.offset(), "unexpected text after the expression");
    }
    if live { value.truthy(0) } else { Ok(true) }
}

/// Evaluates `source` as a condition against `vars`.
pub fn evaluate(source: &str, vars: &BTreeMap<String, String>) -> Result<bool, ExprError> {
    run(source, vars, true)
}

/// Checks the syntax of `source` without values; for `lint`.
pub fn check(source: &str) -> Result<(), ExprError> {
    run(source, &BTreeMap::new(), false).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(source: &str, vars: &[(&str, &str)]) -> Result<bool, ExprError> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        evaluate(source, &vars)
    }

    #[test]
    fn what_real_files_write() {
        let semver = r#""1.2.3" matches '^([0-9]+)\.([0-9]+)\.([0-9]+)(-beta\.[0-9]+)?$'"#;
        assert_eq!(eval(semver, &[]), Ok(true));
        let pre = r#""1.2.3-alpha.1" matches '^([0-9]+)\.([0-9]+)\.([0-9]+)(-beta\.[0-9]+)?$'"#;
        assert_eq!(eval(pre, &[]), Ok(false));
        let labels = r#"CI_COMMIT_PULL_REQUEST_LABELS contains "build_pr_images""#;
        assert_eq!(
            eval(
                labels,
                &[("CI_COMMIT_PULL_REQUEST_LABELS", "bug,build_pr_images")]
            ),
            Ok(true)
        );
        assert_eq!(eval(labels, &[]), Ok(false));
        assert_eq!(eval(&format!("not ({labels})"), &[]), Ok(true));
        let files = r#"(not ("CI_PIPELINE_FILES" in $env)) ||
          CI_PIPELINE_FILES == "[]" ||
          any(fromJSON(CI_PIPELINE_FILES), { # startsWith "internal/" || # startsWith "cmd/" }) ||
          len(fromJSON(CI_PIPELINE_FILES)) == 0"#;
        assert_eq!(eval(files, &[]), Ok(true));
        assert_eq!(
            eval(files, &[("CI_PIPELINE_FILES", r#"["cmd/x.go"]"#)]),
            Ok(true)
        );
        assert_eq!(
            eval(files, &[("CI_PIPELINE_FILES", r#"["docs/a.md"]"#)]),
            Ok(false)
        );
    }

    #[test]
    fn operators_and_functions() {
        let v = [("CI_COMMIT_BRANCH", "main"), ("N", "3")];
        assert_eq!(
            eval(
                r#"CI_COMMIT_BRANCH == "main" && !(CI_COMMIT_BRANCH != "main")"#,
                &v
            ),
            Ok(true)
        );
        assert_eq!(
            eval(r#"CI_COMMIT_BRANCH in ["dev", "main"] and true"#, &v),
            Ok(true)
        );
        assert_eq!(eval(r#"CI_COMMIT_BRANCH not in ["dev"]"#, &v), Ok(true));
        assert_eq!(
            eval(
                r#"CI_COMMIT_BRANCH startsWith "ma" && CI_COMMIT_BRANCH endsWith "in""#,
                &v
            ),
            Ok(true)
        );
        assert_eq!(
            eval(r#"len(CI_COMMIT_BRANCH) >= 4 && len([1, 2]) < 3"#, &v),
            Ok(true)
        );
        assert_eq!(
            eval(r#"upper(CI_COMMIT_BRANCH) == "MAIN" or false"#, &v),
            Ok(true)
        );
        assert_eq!(
            eval(
                r#"all(["a", "ab"], { # startsWith "a" }) && none(["b"], { # == "a" })"#,
                &v
            ),
            Ok(true)
        );
        assert_eq!(
            eval(
                r#"len(filter(["a", "b", "ab"], { # contains "a" })) == 2"#,
                &v
            ),
            Ok(true)
        );
        assert_eq!(eval("UNDEFINED == nil", &v), Ok(true));
    }

    /// Woodpecker 2/3 files use expr's member access and arithmetic.
    #[test]
    fn member_access_and_arithmetic() {
        let v = [
            ("CI_COMMIT_BRANCH", "main"),
            ("CI_PIPELINE_NUMBER", "42"),
            (
                "META",
                r#"{"deploy": {"env": "prod"}, "targets": ["a", "b"]}"#,
            ),
        ];
        assert_eq!(eval(r#"$env.CI_COMMIT_BRANCH == "main""#, &v), Ok(true));
        assert_eq!(eval(r#"$env["CI_COMMIT_BRANCH"] == "main""#, &v), Ok(true));
        assert_eq!(eval("$env.UNDEFINED == nil", &v), Ok(true));
        assert_eq!(eval(r#"fromJSON(META).deploy.env == "prod""#, &v), Ok(true));
        assert_eq!(eval(r#"fromJSON(META).targets[-1] == "b""#, &v), Ok(true));
        assert_eq!(eval(r#"fromJSON(META)["targets"][0] == "a""#, &v), Ok(true));
        assert_eq!(eval("fromJSON(META).missing.deeper == nil", &v), Ok(true));
        assert_eq!(eval("len(fromJSON(META)) == 2", &v), Ok(true));
        assert_eq!(eval("int(CI_PIPELINE_NUMBER) % 2 == 0", &v), Ok(true));
        assert_eq!(eval("int(CI_PIPELINE_NUMBER) + 1 * 2 == 44", &v), Ok(true));
        assert_eq!(eval("(1 + 1) * 3 - -1 == 7 && 7 / 2 == 3.5", &v), Ok(true));
        assert_eq!(
            eval(
                r#"CI_COMMIT_BRANCH + "-" + string(int(CI_PIPELINE_NUMBER)) == "main-42""#,
                &v
            ),
            Ok(true)
        );
        assert!(
            eval("CI_PIPELINE_NUMBER % 2 == 0", &v)
                .is_err_and(|e| e.message.contains("write `int(NAME)`"))
        );
        assert!(eval("1 / 0 == 1", &v).is_err_and(|e| e.message == "`/` by zero"));
        assert!(
            eval("fromJSON(META).targets[5] == nil", &v)
                .is_err_and(|e| e.message.contains("outside a list of 2 items"))
        );
        assert!(check("$env.").is_err());
        assert!(check("a.b[c + 1] * 2 > -3").is_ok());
    }

    #[test]
    fn short_circuit_skips_errors_on_the_untaken_side() {
        assert_eq!(eval(r#"true || fromJSON("not json")"#, &[]), Ok(true));
        assert_eq!(eval(r#"false && fromJSON("not json")"#, &[]), Ok(false));
    }

    #[test]
    fn errors_say_what_and_where() {
        assert_eq!(eval(r#""a" == "#, &[]).map_err(|e| e.offset), Err(7));
        assert!(eval("unknown(1)", &[]).is_err_and(|e| e.message == "unknown function `unknown`"));
        assert!(
            eval(r#""a" matches "(""#, &[])
                .is_err_and(|e| e.message.starts_with("invalid regular expression"))
        );
        assert!(eval("1 ==", &[]).is_err());
        assert!(eval("'open", &[]).is_err_and(|e| e.message == "unclosed string"));
        assert!(eval("\"x\"", &[]).is_err_and(|e| e.message.starts_with("expected true or false")));
        assert!(check("a == b && (c || d").is_err());
        assert!(check(r#"any(fromJSON(X), { # startsWith "a" })"#).is_ok());
        let deep = "(".repeat(100) + "true" + &")".repeat(100);
        assert!(eval(&deep, &[]).is_err_and(|e| e.message.contains("nests too deeply")));
    }
}
