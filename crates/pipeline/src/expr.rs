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

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Text(String),
    Number(f64),
    Ident(String),
    Op(&'static str),
}

const OPERATORS: &[&str] = &[
    "==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "(", ")", "[", "]", "{", "}", ",", "#",
    "$env", "+", "-", "*", "/", "%", ".",
];

fn tokenize(source: &str) -> Result<Vec<(Token, usize)>, ExprError> {
    let chars: Vec<(usize, char)> = source.char_indices().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    'outer: while i < chars.len() {
        let (offset, c) = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '"' || c == '\'' {
            let mut text = String::new();
            i += 1;
            while i < chars.len() {
                let (_, d) = chars[i];
                if d == c {
                    tokens.push((Token::Text(text), offset));
                    i += 1;
                    continue 'outer;
                }
                if d == '\\' && i + 1 < chars.len() {
                    i += 1;
                    let e = chars[i].1;
                    text.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                } else {
                    text.push(d);
                }
                i += 1;
            }
            return error(offset, "unclosed string");
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].1.is_ascii_digit() || chars[i].1 == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().map(|(_, c)| c).collect();
            let Ok(n) = text.parse::<f64>() else {
                return error(offset, format!("`{text}` is not a number"));
            };
            tokens.push((Token::Number(n), offset));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].1.is_alphanumeric() || chars[i].1 == '_') {
                i += 1;
            }
            tokens.push((
                Token::Ident(chars[start..i].iter().map(|(_, c)| c).collect()),
                offset,
            ));
            continue;
        }
        let rest = &source[offset..];
        for op in OPERATORS {
            if rest.starts_with(op) {
                tokens.push((Token::Op(op), offset));
                i += op.chars().count();
                continue 'outer;
            }
        }
        return error(offset, format!("unexpected `{c}`"));
    }
    Ok(tokens)
}

/// Nesting of parentheses, lists and predicates allowed; deeper is an error, not a deep
/// recursion.
const MAX_DEPTH: usize = 32;

/// The work one expression may do, in steps: a token evaluated is one step, and a value made
/// or copied costs its size (a byte of text, an item of a list). Real conditions take a few
/// hundred; predicates over predicates (`filter(fromJSON(...), {filter(...)})`) grow as a
/// power of their nesting, and stop here with an error instead of holding the server.
pub const STEP_BUDGET: u64 = 250_000;

struct Evaluator<'a> {
    tokens: Vec<(Token, usize)>,
    at: usize,
    vars: &'a BTreeMap<String, String>,
    end: usize,
    /// `#` inside a predicate, innermost last.
    elements: Vec<Value>,
    depth: usize,
    /// When false, parse without evaluating (the untaken side of `&&`/`||`, and lint).
    live: bool,
    /// Steps left of [`STEP_BUDGET`].
    budget: u64,
}

impl Evaluator<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |(_, o)| *o)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Token::Op(o)) if *o == op) {
            self.at += 1;
            return true;
        }
        false
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(w)) if w == word) {
            self.at += 1;
            return true;
        }
        false
    }

    fn expect_op(&mut self, op: &str) -> Result<(), ExprError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            error(self.offset(), format!("expected `{op}`"))
        }
    }

    /// Spends `steps` of the budget for work at `offset`; an error once it is spent.
    fn charge(&mut self, steps: u64, offset: usize) -> Result<(), ExprError> {
        match self.budget.checked_sub(steps) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => {
                self.budget = 0;
                error(
                    offset,
                    format!(
                        "the expression needs more than {STEP_BUDGET} steps to evaluate (gantry's limit for one expression); nested predicates multiply their work: simplify it"
                    ),
                )
            }
        }
    }

    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ExprError>,
    ) -> Result<T, ExprError> {
        if self.depth >= MAX_DEPTH {
            return error(self.offset(), "the expression nests too deeply");
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn or(&mut self) -> Result<Value, ExprError> {
        let offset = self.offset();
        let mut left = self.and()?;
        while self.eat_op("||") || self.eat_word("or") {
            let was_live = self.live;
            let decided = self.live && left.truthy(offset)?;
            self.live = was_live && !decided;
            let right = self.and()?;
            self.live = was_live;
            if was_live {
                left = Value::Bool(decided || right.truthy(offset)?);
            }
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Value, ExprError> {
        let offset = self.offset();
        let mut left = self.comparison()?;
        while self.eat_op("&&") || self.eat_word("and") {
            let was_live = self.live;
            let decided = self.live && !left.truthy(offset)?;
            self.live = was_live && !decided;
            let right = self.comparison()?;
            self.live = was_live;
            if was_live {
                left = Value::Bool(!decided && right.truthy(offset)?);
            }
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Value, ExprError> {
        let left = self.additive()?;
        let offset = self.offset();
        let op = match self.peek() {
            Some(Token::Op(op @ ("==" | "!=" | "<" | "<=" | ">" | ">="))) => op.to_string(),
            Some(Token::Ident(w))
                if matches!(
                    w.as_str(),
                    "in" | "contains" | "startsWith" | "endsWith" | "matches"
                ) =>
            {
                w.clone()
            }
            Some(Token::Ident(w))
                if w == "not"
                    && matches!(self.tokens.get(self.at + 1), Some((Token::Ident(n), _)) if n == "in") =>
            {
                self.at += 1;
                "not in".to_owned()
            }
            _ => return Ok(left),
        };
        self.at += 1;
        let right = self.additive()?;
        if !self.live {
            return Ok(Value::Nil);
        }
        // Comparing walks both sides; a regular expression is matched in time of its
        // length times the text's.
        let cost = if op == "matches" {
            left.size().saturating_mul(right.size())
        } else {
            left.size().saturating_add(right.size())
        };
        self.charge(cost, offset)?;
        self.compare(&op, left, right, offset)
    }

    /// `a + b`, `a - b`: numbers, or (`+`) text joined.
    fn additive(&mut self) -> Result<Value, ExprError> {
        self.arithmetic_level(&["+", "-"], Self::multiplicative)
    }

    fn multiplicative(&mut self) -> Result<Value, ExprError> {
        self.arithmetic_level(&["*", "/", "%"], Self::unary)
    }

    /// One level of left-associative arithmetic: operands from `operand`, joined by `ops`.
    fn arithmetic_level(
        &mut self,
        ops: &[&'static str],
        operand: fn(&mut Self) -> Result<Value, ExprError>,
    ) -> Result<Value, ExprError> {
        let mut left = operand(self)?;
        loop {
            let offset = self.offset();
            let Some(op) = ops.iter().copied().find(|op| self.eat_op(op)) else {
                return Ok(left);
            };
            let right = operand(self)?;
            if self.live {
                left = arithmetic(op, left, right, offset)?;
                self.charge(left.size(), offset)?;
            }
        }
    }

    fn compare(
        &self,
        op: &str,
        left: Value,
        right: Value,
        offset: usize,
    ) -> Result<Value, ExprError> {
        let texts = |l: &Value, r: &Value| match (l, r) {
            (Value::Text(a), Value::Text(b)) => Ok((a.clone(), b.clone())),
            (Value::Nil, Value::Text(b)) => Ok((String::new(), b.clone())),
            _ => error(
                offset,
                format!(
                    "`{op}` needs text on both sides, found {} and {}",
                    l.describe(),
                    r.describe()
                ),
            ),
        };
        Ok(Value::Bool(match op {
            "==" => left == right,
            "!=" => left != right,
            "<" | "<=" | ">" | ">=" => {
                let ordering = match (&left, &right) {
                    (Value::Number(a), Value::Number(b)) => a.partial_cmp(b),
                    (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
                    _ => None,
                };
                let Some(ordering) = ordering else {
                    return error(
                        offset,
                        format!(
                            "cannot compare {} with {}",
                            left.describe(),
                            right.describe()
                        ),
                    );
                };
                match op {
                    "<" => ordering.is_lt(),
                    "<=" => ordering.is_le(),
                    ">" => ordering.is_gt(),
                    _ => ordering.is_ge(),
                }
            }
            "in" | "not in" => {
                let found = match (&left, &right) {
                    (Value::Text(name), Value::Env) => self.vars.contains_key(name),
                    (Value::Text(key), Value::Map(entries)) => entries.contains_key(key),
                    (_, Value::List(items)) => items.contains(&left),
                    (Value::Text(a), Value::Text(b)) => b.contains(a.as_str()),
                    (_, Value::Nil) => false,
                    _ => {
                        return error(
                            offset,
                            format!(
                                "`in` needs a list or $env on the right, found {}",
                                right.describe()
                            ),
                        );
                    }
                };
                found == (op == "in")
            }
            "contains" => match (&left, &right) {
                (Value::List(items), _) => items.contains(&right),
                _ => {
                    let (a, b) = texts(&left, &right)?;
                    a.contains(&b)
                }
            },
            "startsWith" => {
                let (a, b) = texts(&left, &right)?;
                a.starts_with(&b)
            }
            "endsWith" => {
                let (a, b) = texts(&left, &right)?;
                a.ends_with(&b)
            }
            "matches" => {
                let (text, pattern) = texts(&left, &right)?;
                let regex = regex_lite::Regex::new(&pattern).or_else(|e| {
                    error(
                        offset,
                        format!("invalid regular expression `{pattern}`: {e}"),
                    )
                })?;
                regex.is_match(&text)
            }
            _ => return error(offset, format!("unknown operator `{op}`")),
        }))
    }

    fn unary(&mut self) -> Result<Value, ExprError> {
        let offset = self.offset();
        if self.eat_op("!") || self.eat_word("not") {
            let value = self.nested(Self::unary)?;
            return if self.live {
                Ok(Value::Bool(!value.truthy(offset)?))
            } else {
                Ok(Value::Nil)
            };
        }
        if self.eat_op("-") {
            let value = self.nested(Self::unary)?;
            return if self.live {
                arithmetic("-", Value::Number(0.0), value, offset)
            } else {
                Ok(Value::Nil)
            };
        }
        self.postfix()
    }

    /// A primary followed by member accesses: `.name` and `[index]`.
    fn postfix(&mut self) -> Result<Value, ExprError> {
        let mut value = self.primary()?;
        loop {
            let offset = self.offset();
            let key = if self.eat_op(".") {
                match self.tokens.get(self.at).cloned() {
                    Some((Token::Ident(name), _)) => {
                        self.at += 1;
                        Value::Text(name)
                    }
                    _ => return error(self.offset(), "expected a name after `.`"),
                }
            } else if self.eat_op("[") {
                let key = self.nested(Self::or)?;
                self.expect_op("]")?;
                key
            } else {
                return Ok(value);
            };
            if self.live {
                value = self.member(value, key, offset)?;
                self.charge(value.size(), offset)?;
            }
        }
    }

    fn member(&self, value: Value, key: Value, offset: usize) -> Result<Value, ExprError> {
        match (value, key) {
            (Value::Env, Value::Text(name)) => Ok(self
                .vars
                .get(&name)
                .map_or(Value::Nil, |v| Value::Text(v.clone()))),
            (Value::Map(mut entries), Value::Text(name)) => {
                Ok(entries.remove(&name).unwrap_or(Value::Nil))
            }
            (Value::List(mut items), Value::Number(n)) if n.fract() == 0.0 => {
                let len = items.len() as f64;
                let index = if n < 0.0 { len + n } else { n };
                if index < 0.0 || index >= len {
                    return error(
                        offset,
                        format!("index {n} is outside a list of {} items", items.len()),
                    );
                }
                Ok(items.swap_remove(index as usize))
            }
            (Value::Nil, _) => Ok(Value::Nil),
            (value, key) => error(
                offset,
                format!("cannot take {} of {}", key.describe(), value.describe()),
            ),
        }
    }

    fn primary(&mut self) -> Result<Value, ExprError> {
        let offset = self.offset();
        let Some((token, _)) = self.tokens.get(self.at).cloned() else {
            return error(offset, "the expression ends too early");
        };
        self.at += 1;
        self.charge(1, offset)?;
        match token {
            Token::Text(s) => Ok(Value::Text(s)),
            Token::Number(n) => Ok(Value::Number(n)),
            Token::Op("(") => {
                let value = self.nested(Self::or)?;
                self.expect_op(")")?;
                Ok(value)
            }
            Token::Op("[") => {
                let mut items = Vec::new();
                if !self.eat_op("]") {
                    loop {
                        items.push(self.nested(Self::or)?);
                        if self.eat_op("]") {
                            break;
                        }
                        self.expect_op(",")?;
                    }
                }
                Ok(Value::List(items))
            }
            Token::Op("$env") => Ok(Value::Env),
            Token::Op("#") => {
                let element = self.elements.last().cloned().unwrap_or(Value::Nil);
                self.charge(element.size(), offset)?;
                Ok(element)
            }
            Token::Ident(word) => match word.as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                "nil" => Ok(Value::Nil),
                _ if matches!(self.peek(), Some(Token::Op("("))) => {
                    self.at += 1;
                    self.call(&word, offset)
                }
                _ => {
                    let value = self
                        .vars
                        .get(&word)
                        .map_or(Value::Nil, |v| Value::Text(v.clone()));
                    self.charge(value.size(), offset)?;
                    Ok(value)
                }
            },
            Token::Op(op) => error(offset, format!("unexpected `{op}`")),
        }
    }

    fn call(&mut self, name: &str, offset: usize) -> Result<Value, ExprError> {
        if matches!(name, "any" | "all" | "none" | "filter") {
            let list = self.nested(Self::or)?;
            self.expect_op(",")?;
            self.expect_op("{")?;
            let body = self.at;
            let items = match (&list, self.live) {
                (Value::List(items), true) => {
                    self.charge(list.size(), offset)?;
                    items.clone()
                }
                (Value::Nil, _) | (_, false) => Vec::new(),
                (other, true) => {
                    return error(
                        offset,
                        format!("`{name}` needs a list, found {}", other.describe()),
                    );
                }
            };
            // Parse the predicate once without evaluating, to find its end and check it.
            let was_live = self.live;
            self.live = false;
            self.nested(Self::or)?;
            self.live = was_live;
            self.expect_op("}")?;
            self.expect_op(")")?;
            let after = self.at;
            let mut kept = Vec::new();
            for item in items {
                self.at = body;
                self.elements.push(item.clone());
                let verdict = self.nested(Self::or).and_then(|v| v.truthy(offset));
                self.elements.pop();
                if verdict? {
                    kept.push(item);
                }
            }
            self.at = after;
            let total = match &list {
                Value::List(items) => items.len(),
                _ => 0,
            };
            return Ok(match name {
                "any" => Value::Bool(!kept.is_empty()),
                "all" => Value::Bool(kept.len() == total),
                "none" => Value::Bool(kept.is_empty()),
                _ => Value::List(kept),
            });
        }
        let argument = self.nested(Self::or)?;
        self.expect_op(")")?;
        if !self.live {
            return Ok(Value::Nil);
        }
        // fromJSON makes a value as big as its text, and the text functions copy theirs.
        self.charge(argument.size(), offset)?;
        match (name, argument) {
            ("len", Value::Text(s)) => Ok(Value::Number(s.chars().count() as f64)),
            ("len", Value::List(items)) => Ok(Value::Number(items.len() as f64)),
            ("len", Value::Map(entries)) => Ok(Value::Number(entries.len() as f64)),
            ("len", Value::Nil) => Ok(Value::Number(0.0)),
            ("fromJSON", Value::Text(s)) => serde_json::from_str(&s)
                .map(Value::from_json)
                .or_else(|e| error(offset, format!("fromJSON: {e}"))),
            ("fromJSON", Value::Nil) => Ok(Value::Nil),
            ("lower", Value::Text(s)) => Ok(Value::Text(s.to_lowercase())),
            ("upper", Value::Text(s)) => Ok(Value::Text(s.to_uppercase())),
            ("trim", Value::Text(s)) => Ok(Value::Text(s.trim().to_owned())),
            ("float", Value::Number(n)) => Ok(Value::Number(n)),
            ("int", Value::Number(n)) => Ok(Value::Number(n.trunc())),
            ("int" | "float", Value::Text(s)) => match s.trim().parse::<f64>() {
                Ok(n) if name == "int" => Ok(Value::Number(n.trunc())),
                Ok(n) => Ok(Value::Number(n)),
                Err(_) => error(offset, format!("`{name}` cannot read `{s}` as a number")),
            },
            ("string", Value::Text(s)) => Ok(Value::Text(s)),
            ("string", Value::Number(n)) => Ok(Value::Text(number_text(n))),
            ("string", Value::Bool(b)) => Ok(Value::Text(b.to_string())),
            ("string", Value::Nil) => Ok(Value::Text("nil".to_owned())),
            (
                name @ ("len" | "fromJSON" | "lower" | "upper" | "trim" | "int" | "float"
                | "string"),
                other,
            ) => error(offset, format!("`{name}` cannot take {}", other.describe())),
            (name, _) => error(offset, format!("unknown function `{name}`")),
        }
    }
}

/// `+ - * / %` on numbers; `+` also joins two texts.
fn arithmetic(op: &str, left: Value, right: Value, offset: usize) -> Result<Value, ExprError> {
    match (op, left, right) {
        ("+", Value::Text(a), Value::Text(b)) => Ok(Value::Text(a + &b)),
        ("/" | "%", Value::Number(_), Value::Number(0.0)) => {
            error(offset, format!("`{op}` by zero"))
        }
        (op, Value::Number(a), Value::Number(b)) => Ok(Value::Number(match op {
            "+" => a + b,
            "-" => a - b,
            "*" => a * b,
            "/" => a / b,
            _ => a % b,
        })),
        (op, a, b) => error(
            offset,
            format!(
                "`{op}` needs numbers{}, found {} and {}; variables are text: write `int(NAME)`",
                if op == "+" { " or two texts" } else { "" },
                a.describe(),
                b.describe()
            ),
        ),
    }
}

/// A number as expr prints it: `3`, not `3.0`.
fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
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
