//! The evaluator: a recursive descent over the tokens that evaluates as it parses (or only
//! parses, for lint and the untaken side of `&&`/`||`), within a depth and a step budget.

use super::lex::Token;
use super::*;

/// Nesting of parentheses, lists and predicates allowed; deeper is an error, not a deep
/// recursion.
pub(super) const MAX_DEPTH: usize = 32;

/// The work one expression may do, in steps: a token evaluated is one step, and a value made
/// or copied costs its size (a byte of text, an item of a list). Real conditions take a few
/// hundred; predicates over predicates (`filter(fromJSON(...), {filter(...)})`) grow as a
/// power of their nesting, and stop here with an error instead of holding the server.
pub const STEP_BUDGET: u64 = 250_000;

pub(super) struct Evaluator<'a> {
    pub(super) tokens: Vec<(Token, usize)>,
    pub(super) at: usize,
    pub(super) vars: &'a BTreeMap<String, String>,
    pub(super) end: usize,
    /// `#` inside a predicate, innermost last.
    pub(super) elements: Vec<Value>,
    pub(super) depth: usize,
    /// When false, parse without evaluating (the untaken side of `&&`/`||`, and lint).
    pub(super) live: bool,
    /// Steps left of [`STEP_BUDGET`].
    pub(super) budget: u64,
}

impl Evaluator<'_> {
    pub(super) fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    pub(super) fn offset(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |(_, o)| *o)
    }

    pub(super) fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Token::Op(o)) if *o == op) {
            self.at += 1;
            return true;
        }
        false
    }

    pub(super) fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(w)) if w == word) {
            self.at += 1;
            return true;
        }
        false
    }

    pub(super) fn expect_op(&mut self, op: &str) -> Result<(), ExprError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            error(self.offset(), format!("expected `{op}`"))
        }
    }

    /// Spends `steps` of the budget for work at `offset`; an error once it is spent.
    pub(super) fn charge(&mut self, steps: u64, offset: usize) -> Result<(), ExprError> {
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

    pub(super) fn nested<T>(
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

    pub(super) fn or(&mut self) -> Result<Value, ExprError> {
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

    pub(super) fn and(&mut self) -> Result<Value, ExprError> {
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

    pub(super) fn comparison(&mut self) -> Result<Value, ExprError> {
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
    pub(super) fn additive(&mut self) -> Result<Value, ExprError> {
        self.arithmetic_level(&["+", "-"], Self::multiplicative)
    }

    pub(super) fn multiplicative(&mut self) -> Result<Value, ExprError> {
        self.arithmetic_level(&["*", "/", "%"], Self::unary)
    }

    /// One level of left-associative arithmetic: operands from `operand`, joined by `ops`.
    pub(super) fn arithmetic_level(
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

    pub(super) fn compare(
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

    pub(super) fn unary(&mut self) -> Result<Value, ExprError> {
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
    pub(super) fn postfix(&mut self) -> Result<Value, ExprError> {
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

    pub(super) fn member(
        &self,
        value: Value,
        key: Value,
        offset: usize,
    ) -> Result<Value, ExprError> {
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

    pub(super) fn primary(&mut self) -> Result<Value, ExprError> {
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

    pub(super) fn call(&mut self, name: &str, offset: usize) -> Result<Value, ExprError> {
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
pub(super) fn arithmetic(
    op: &str,
    left: Value,
    right: Value,
    offset: usize,
) -> Result<Value, ExprError> {
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
pub(super) fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}
