//! `environment:`, `settings:` and the older `secrets:` of a step, and free-form JSON values.

use super::*;

impl Decoder<'_> {
    /// `environment` as a mapping (values or `from_secret`) or a `KEY=VALUE` list.
    pub fn environment(&mut self, node: &Node, path: &At<'_>) -> Vec<EnvVar> {
        let mut out = Vec::new();
        match &node.value {
            _ if node.is_null() => {}
            Value::Map(entries) => {
                for (k, v) in entries {
                    let name = k.as_str().unwrap_or_default().to_owned();
                    let var_path = path.key(&name);
                    let value = match &v.value {
                        _ if v.is_null() => EnvValue::Text(String::new()),
                        Value::Scalar(_) => {
                            EnvValue::Text(self.text(v, &var_path).unwrap_or_default())
                        }
                        Value::Map(_) => match v.get("from_secret").and_then(|s| s.as_str()) {
                            Some(secret) => EnvValue::Secret(self.subst(secret, v.pos, &var_path)),
                            None => {
                                self.error(
                                    v.pos,
                                    &var_path,
                                    "an environment value must be text or `from_secret: NAME`",
                                    None,
                                );
                                continue;
                            }
                        },
                        Value::Seq(_) => {
                            self.error(v.pos, &var_path, "an environment value must be text or `from_secret: NAME`, not a list", Some("join the values into one string"));
                            continue;
                        }
                    };
                    self.check_env_name(&name, k.pos, &var_path);
                    out.push(EnvVar {
                        name,
                        value,
                        pos: k.pos,
                    });
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = path.index(i);
                    let Some(text) = self.text(item, &item_path) else {
                        continue;
                    };
                    match text.split_once('=') {
                        Some((name, value)) => {
                            self.check_env_name(name, item.pos, &item_path);
                            out.push(EnvVar {
                                name: name.to_owned(),
                                value: EnvValue::Text(value.to_owned()),
                                pos: item.pos,
                            });
                        }
                        None => self.error(
                            item.pos,
                            &item_path,
                            format!("`{text}` is not KEY=VALUE"),
                            Some("write `NAME=value`, or use a mapping"),
                        ),
                    }
                }
            }
            Value::Scalar(_) => self.expected(node, path, "a mapping of variables"),
        }
        out
    }

    pub(super) fn check_env_name(&mut self, name: &str, pos: Pos, path: &At<'_>) {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
        if !valid {
            self.error(
                pos,
                path,
                format!("`{name}` is not a valid environment variable name"),
                Some("use letters, digits and `_`"),
            );
        }
    }

    /// Drone 0.8 / old Woodpecker `secrets: [name, {source, target}]`, as environment.
    pub(super) fn legacy_secrets(&mut self, node: &Node, path: &At<'_>) -> Vec<EnvVar> {
        let Value::Seq(items) = &node.value else {
            self.expected(node, path, "a list of secret names");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            let (source, target) = match &item.value {
                Value::Scalar(_) => {
                    let Some(name) = self.text(item, &item_path) else {
                        continue;
                    };
                    (name.clone(), name)
                }
                Value::Map(_) => {
                    let Some(mut f) = self.fields(item, &item_path) else {
                        continue;
                    };
                    let source = f.get("source").and_then(|n| self.text(n, &item_path));
                    let target = f.get("target").and_then(|n| self.text(n, &item_path));
                    self.finish(&f, &item_path, &["source", "target"], &[]);
                    let Some(source) = source else {
                        self.error(item.pos, &item_path, "a secret needs a `source`", None);
                        continue;
                    };
                    let target = target.unwrap_or_else(|| source.clone());
                    (source, target)
                }
                Value::Seq(_) => {
                    self.expected(item, &item_path, "a secret name");
                    continue;
                }
            };
            out.push(EnvVar {
                name: target.to_uppercase(),
                value: EnvValue::Secret(source),
                pos: item.pos,
            });
        }
        out
    }

    pub fn json(&mut self, node: &Node, path: &At<'_>) -> serde_json::Value {
        match &node.value {
            _ if node.is_null() => serde_json::Value::Null,
            Value::Scalar(s) => {
                let text = self.subst(&s.text, node.pos, path);
                if s.plain {
                    plain_scalar_json(&text)
                } else {
                    serde_json::Value::String(text)
                }
            }
            Value::Seq(items) => serde_json::Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| self.json(n, &path.index(i)))
                    .collect(),
            ),
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = k.as_str().unwrap_or_default().to_owned();
                        let value = self.json(v, &path.key(&key));
                        (key, value)
                    })
                    .collect(),
            ),
        }
    }

    pub(super) fn setting(&mut self, name: &str, node: &Node, path: &At<'_>) -> Setting {
        let secret = node
            .as_map()
            .filter(|e| e.len() == 1)
            .and_then(|_| node.get("from_secret"))
            .and_then(Node::as_str);
        let value = match secret {
            Some(secret) => SettingValue::Secret(self.subst(secret, node.pos, path)),
            None => SettingValue::Value(self.json(node, path)),
        };
        Setting {
            name: name.to_owned(),
            value,
        }
    }

    pub(super) fn settings(&mut self, node: &Node, path: &At<'_>) -> Vec<Setting> {
        let Some(entries) = node.as_map() else {
            self.expected(node, path, "a mapping of settings");
            return Vec::new();
        };
        entries
            .iter()
            .map(|(k, v)| {
                let name = k.as_str().unwrap_or_default();
                self.setting(name, v, &path.key(name))
            })
            .collect()
    }
}

/// A plain YAML scalar as JSON: null, booleans and numbers that read back the same; anything
/// else stays text (so `1.10` stays `"1.10"`, not `1.1`).
pub(super) fn plain_scalar_json(text: &str) -> serde_json::Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return serde_json::Value::Null,
        "true" | "True" | "TRUE" => return serde_json::Value::Bool(true),
        "false" | "False" | "FALSE" => return serde_json::Value::Bool(false),
        _ => {}
    }
    if let Ok(n) = text.parse::<i64>()
        && n.to_string() == text
    {
        return serde_json::Value::from(n);
    }
    if let Ok(x) = text.parse::<f64>()
        && x.is_finite()
        && x.to_string() == text
        && let Some(n) = serde_json::Number::from_f64(x)
    {
        return serde_json::Value::Number(n);
    }
    serde_json::Value::String(text.to_owned())
}
