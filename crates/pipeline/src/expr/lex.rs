//! The expression's tokens: words, numbers, text, operators, each with its offset.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    Text(String),
    Number(f64),
    Ident(String),
    Op(&'static str),
}

pub(super) const OPERATORS: &[&str] = &[
    "==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "(", ")", "[", "]", "{", "}", ",", "#",
    "$env", "+", "-", "*", "/", "%", ".",
];

pub(super) fn tokenize(source: &str) -> Result<Vec<(Token, usize)>, ExprError> {
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
