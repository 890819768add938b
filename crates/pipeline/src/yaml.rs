//! YAML as a tree of nodes that remember their position, built from the parser's events with
//! hard budgets, because pipeline files come from strangers' pull requests and are read before
//! anyone approves anything.
//!
//! What this adds over the parser: aliases are expanded (counted against a node budget, so a
//! "billion laughs" file is an error, not an out-of-memory), merge keys `<<` are applied, and a
//! `- <<: *list` item inside a sequence splices that list in place (the go-yaml extension that
//! Woodpecker files rely on).

use std::collections::HashMap;

use granit_parser::{Event, Parser, ScalarStyle, ScanError, Span};

use crate::diag::Pos;

/// Budgets for reading one file. The defaults fit any real pipeline file many times over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Size of the file in bytes.
    pub max_bytes: usize,
    /// Nesting of sequences and mappings, counting what aliases bring in.
    pub max_depth: usize,
    /// Nodes in the whole file after aliases are expanded.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 4 * 1024 * 1024,
            max_depth: 64,
            max_nodes: 500_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub text: String,
    /// Written without quotes: only plain scalars can mean null, booleans or numbers.
    pub plain: bool,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(&s.text),
            _ => None,
        }
    }

    /// `~`, `null` or nothing at all, written plain.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.plain && matches!(s.text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// What kind of node this is, for messages ("expected a list, found a mapping").
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            _ if self.is_null() => "nothing",
            Value::Scalar(_) => "text",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Why a file could not be read as YAML at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
    pub hint: Option<String>,
}

impl YamlError {
    fn new(pos: Pos, message: impl Into<String>, hint: Option<&str>) -> Self {
        Self {
            pos,
            message: message.into(),
            hint: hint.map(str::to_owned),
        }
    }
}

/// The documents of a file, in order. Empty documents are left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Documents {
    pub documents: Vec<Node>,
}

/// Reads every document of `text`, within `limits`.
pub fn read(text: &str, limits: &Limits) -> Result<Documents, YamlError> {
    if text.len() > limits.max_bytes {
        return Err(YamlError::new(
            Pos::new(1, 1),
            format!(
                "the file is {} bytes, more than the limit of {} bytes",
                text.len(),
                limits.max_bytes
            ),
            Some("split the pipeline into several files or remove generated content"),
        ));
    }
    Builder::new(limits).run(text)
}

fn pos_of(span: &Span) -> Pos {
    to_pos(span.start.line(), span.start.col())
}

fn to_pos(line: usize, col: usize) -> Pos {
    Pos::new(
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(col + 1).unwrap_or(u32::MAX),
    )
}

fn scan_error(err: &ScanError) -> YamlError {
    let mark = err.marker();
    let pos = to_pos(mark.line(), mark.col());
    let info = err.info();
    let hint = if info.contains("tab") {
        Some("indent with spaces; YAML does not allow tabs for indentation")
    } else if info.contains("mapping values are not allowed") {
        Some("quote a value that contains `: `, or check the indentation of the line above")
    } else if info.contains("did not find expected") || info.contains("while parsing") {
        Some("check the indentation and that brackets and quotes are closed")
    } else {
        None
    };
    YamlError::new(pos, format!("invalid YAML: {info}"), hint)
}

struct Anchored {
    node: Node,
    nodes: usize,
    height: usize,
}

/// A node under construction.
enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
        height: usize,
        nodes: usize,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        height: usize,
        nodes: usize,
    },
}

struct Builder<'l> {
    limits: &'l Limits,
    /// Whether some `- <<: *list` left a splice marker to flatten.
    spliced: bool,
    anchors: HashMap<usize, Anchored>,
    stack: Vec<Frame>,
    nodes: usize,
    out: Documents,
}

impl<'l> Builder<'l> {
    fn new(limits: &'l Limits) -> Self {
        Self {
            limits,
            spliced: false,
            anchors: HashMap::new(),
            stack: Vec::new(),
            nodes: 0,
            out: Documents::default(),
        }
    }

    fn run(mut self, text: &str) -> Result<Documents, YamlError> {
        let mut parser = Parser::new_from_str(text);
        let mut root: Option<Node> = None;
        while let Some(event) = parser.next_event() {
            let (event, span) = event.map_err(|e| scan_error(&e))?;
            let pos = pos_of(&span);
            match event {
                Event::StreamStart | Event::StreamEnd | Event::DocumentStart(..) => {}
                Event::DocumentEnd => {
                    if let Some(node) = root.take()
                        && !node.is_null()
                    {
                        self.out.documents.push(node);
                    }
                    self.anchors.clear();
                }
                Event::Scalar(text, style, anchor, _tag) => {
                    let plain = style == ScalarStyle::Plain;
                    self.scalar(text.into_owned(), plain, anchor, pos, &mut root)?;
                }
                Event::Alias(id) => self.alias(id, pos, &mut root)?,
                Event::SequenceStart(_, anchor, _) => {
                    self.open(Frame::Seq {
                        pos,
                        anchor,
                        items: Vec::new(),
                        height: 0,
                        nodes: 1,
                    })?;
                }
                Event::MappingStart(_, anchor, _) => {
                    self.open(Frame::Map {
                        pos,
                        anchor,
                        entries: Vec::new(),
                        key: None,
                        height: 0,
                        nodes: 1,
                    })?;
                }
                Event::SequenceEnd | Event::MappingEnd => self.close(pos, &mut root)?,
                _ => {}
            }
        }
        if self.spliced {
            self.out.documents.iter_mut().for_each(splice);
        }
        Ok(self.out)
    }

    /// A scalar: counted, kept under its anchor if it has one, and placed.
    fn scalar(
        &mut self,
        text: String,
        plain: bool,
        anchor: usize,
        pos: Pos,
        root: &mut Option<Node>,
    ) -> Result<(), YamlError> {
        let node = Node {
            pos,
            value: Value::Scalar(Scalar { text, plain }),
        };
        self.count(1, pos)?;
        if anchor != 0 {
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    nodes: 1,
                    height: 0,
                },
            );
        }
        self.complete(node, 1, 0, root)?;
        Ok(())
    }

    /// An alias: the anchored node again, counted (with all it holds) against the limits.
    fn alias(&mut self, id: usize, pos: Pos, root: &mut Option<Node>) -> Result<(), YamlError> {
        let Some((nodes, height)) = self.anchors.get(&id).map(|a| (a.nodes, a.height)) else {
            return Err(YamlError::new(
                pos,
                "alias to an unknown anchor",
                Some("define the anchor with `&name` before using `*name`"),
            ));
        };
        if self.stack.len() + height > self.limits.max_depth {
            return Err(self.too_deep(pos));
        }
        self.count(nodes, pos)?;
        let Some(mut node) = self.anchors.get(&id).map(|a| a.node.clone()) else {
            return Err(YamlError::new(pos, "alias to an unknown anchor", None));
        };
        node.pos = pos;
        self.complete(node, nodes, height, root)?;
        Ok(())
    }

    /// The end of a sequence or a mapping: its node, kept under its anchor, and placed.
    fn close(&mut self, pos: Pos, root: &mut Option<Node>) -> Result<(), YamlError> {
        let Some(frame) = self.stack.pop() else {
            return Err(YamlError::new(pos, "unbalanced YAML structure", None));
        };
        let (node, anchor, nodes, height) = match frame {
            Frame::Seq {
                pos,
                anchor,
                items,
                height,
                nodes,
            } => (
                Node {
                    pos,
                    value: Value::Seq(items),
                },
                anchor,
                nodes,
                height + 1,
            ),
            Frame::Map {
                pos,
                anchor,
                entries,
                height,
                nodes,
                ..
            } => {
                let in_seq = matches!(self.stack.last(), Some(Frame::Seq { .. }));
                (
                    self.finish_map(pos, entries, in_seq)?,
                    anchor,
                    nodes,
                    height + 1,
                )
            }
        };
        if anchor != 0 {
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    nodes,
                    height,
                },
            );
        }
        self.complete(node, nodes, height, root)?;
        Ok(())
    }

    fn too_deep(&self, pos: Pos) -> YamlError {
        YamlError::new(
            pos,
            format!(
                "the file nests deeper than {} levels",
                self.limits.max_depth
            ),
            Some("flatten the structure; no pipeline needs this much nesting"),
        )
    }

    fn count(&mut self, nodes: usize, pos: Pos) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(nodes);
        if self.nodes > self.limits.max_nodes {
            return Err(YamlError::new(
                pos,
                format!(
                    "the file expands to more than {} values (aliases included)",
                    self.limits.max_nodes
                ),
                Some(
                    "aliases that refer to aliases multiply the document; use fewer levels of them",
                ),
            ));
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame) -> Result<(), YamlError> {
        let pos = match &frame {
            Frame::Seq { pos, .. } | Frame::Map { pos, .. } => *pos,
        };
        if self.stack.len() >= self.limits.max_depth {
            return Err(self.too_deep(pos));
        }
        self.count(1, pos)?;
        self.stack.push(frame);
        Ok(())
    }

    /// Hands a finished node to its parent, or makes it the document's root.
    fn complete(
        &mut self,
        node: Node,
        nodes: usize,
        height: usize,
        root: &mut Option<Node>,
    ) -> Result<(), YamlError> {
        match self.stack.last_mut() {
            None => *root = Some(node),
            Some(Frame::Seq {
                items,
                height: h,
                nodes: n,
                ..
            }) => {
                *h = (*h).max(height);
                *n += nodes;
                items.push(node);
            }
            Some(Frame::Map {
                entries,
                key,
                height: h,
                nodes: n,
                ..
            }) => {
                *h = (*h).max(height);
                *n += nodes;
                match key.take() {
                    None => {
                        if !matches!(node.value, Value::Scalar(_)) {
                            return Err(YamlError::new(
                                node.pos,
                                format!("a mapping key must be text, found {}", node.kind_name()),
                                Some("write keys as plain words, e.g. `image:`"),
                            ));
                        }
                        *key = Some(node);
                    }
                    Some(k) => entries.push((k, node)),
                }
            }
        }
        Ok(())
    }

    /// Applies merge keys and reports keys given twice. A mapping that is only `<<: [list]`
    /// inside a sequence becomes a splice of that list (see the module comment).
    fn finish_map(
        &mut self,
        pos: Pos,
        entries: Vec<(Node, Node)>,
        in_seq: bool,
    ) -> Result<Node, YamlError> {
        let is_merge = |k: &Node| matches!(&k.value, Value::Scalar(s) if s.plain && s.text == "<<");
        if !entries.iter().any(|(k, _)| is_merge(k)) {
            return Ok(Node {
                pos,
                value: Value::Map(Self::no_duplicates(entries)?),
            });
        }
        if in_seq
            && let [(k, v)] = entries.as_slice()
            && is_merge(k)
            && let Value::Seq(items) = &v.value
            && items.iter().any(|i| !matches!(i.value, Value::Map(_)))
        {
            self.spliced = true;
            return Ok(Node {
                pos,
                value: Value::Seq(vec![Node {
                    pos: SPLICE,
                    value: Value::Seq(items.clone()),
                }]),
            });
        }
        let explicit: Vec<String> = entries
            .iter()
            .filter(|(k, _)| !is_merge(k))
            .filter_map(|(k, _)| k.as_str().map(str::to_owned))
            .collect();
        let mut merged: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            if !is_merge(&key) {
                merged.push((key, value));
                continue;
            }
            let sources: Vec<Node> = match value.value {
                Value::Map(_) => vec![value],
                Value::Seq(items) if items.iter().all(|i| matches!(i.value, Value::Map(_))) => {
                    items
                }
                _ => {
                    return Err(YamlError::new(
                        value.pos,
                        format!(
                            "a merge key `<<` needs a mapping or a list of mappings, found {}",
                            value.kind_name()
                        ),
                        Some("point `<<:` at an anchor of a mapping, e.g. `<<: *defaults`"),
                    ));
                }
            };
            for source in sources {
                let Value::Map(source_entries) = source.value else {
                    continue;
                };
                for (k, v) in source_entries {
                    let name = k.as_str().unwrap_or_default();
                    let already = explicit.iter().any(|e| e == name)
                        || merged.iter().any(|(m, _)| m.as_str() == Some(name));
                    if !already {
                        merged.push((k, v));
                    }
                }
            }
        }
        Ok(Node {
            pos,
            value: Value::Map(merged),
        })
    }

    /// A key given twice is an error, as YAML says and Drone's reader does: keeping either
    /// value would let an appended key change what a reviewed (or signed) file means.
    fn no_duplicates(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, YamlError> {
        // Pipeline mappings are small: comparing pairs beats hashing until they are not.
        let duplicate = if entries.len() <= 32 {
            (1..entries.len()).find_map(|i| {
                let name = entries[i].0.as_str();
                entries[..i]
                    .iter()
                    .position(|(k, _)| k.as_str() == name)
                    .map(|first| (i, first))
            })
        } else {
            let mut seen: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
            entries.iter().enumerate().find_map(|(i, (k, _))| {
                let name = k.as_str().unwrap_or_default();
                match seen.get(name) {
                    Some(&first) => Some((i, first)),
                    None => {
                        seen.insert(name, i);
                        None
                    }
                }
            })
        };
        match duplicate {
            None => Ok(entries),
            Some((i, first)) => Err(YamlError::new(
                entries[i].0.pos,
                format!(
                    "key `{}` is given twice in this mapping (first at line {}); YAML does not allow duplicate keys",
                    entries[i].0.as_str().unwrap_or_default(),
                    entries[first].0.pos.line
                ),
                Some("remove one of the two, or merge their values"),
            )),
        }
    }
}

/// Marks a sequence to splice into its parent sequence; never visible outside this module.
const SPLICE: Pos = Pos::new(0, 0);

/// Flattens splice markers left by `- <<: *list` items. Run once over every document.
fn splice(node: &mut Node) {
    match &mut node.value {
        Value::Scalar(_) => {}
        Value::Map(entries) => entries.iter_mut().for_each(|(_, v)| splice(v)),
        Value::Seq(items) => {
            if items.iter().any(is_splice) {
                let old = std::mem::take(items);
                for item in old {
                    if is_splice(&item) {
                        let Value::Seq(mut inner) = item.value else {
                            continue;
                        };
                        let Some(Node {
                            value: Value::Seq(spliced),
                            ..
                        }) = inner.pop()
                        else {
                            continue;
                        };
                        items.extend(spliced);
                    } else {
                        items.push(item);
                    }
                }
            }
            items.iter_mut().for_each(splice);
        }
    }
}

fn is_splice(node: &Node) -> bool {
    matches!(&node.value, Value::Seq(inner) if inner.len() == 1 && inner[0].pos == SPLICE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let docs = read(text, &Limits::default()).expect("valid yaml");
        assert_eq!(docs.documents.len(), 1, "{docs:?}");
        docs.documents.into_iter().next().expect("one document")
    }

    fn texts(node: &Node) -> Vec<&str> {
        match &node.value {
            Value::Seq(items) => items.iter().filter_map(Node::as_str).collect(),
            _ => panic!("not a sequence: {node:?}"),
        }
    }

    #[test]
    fn positions_are_one_based() {
        let doc = one("a: 1\nbb:\n  c: x\n");
        let (k, v) = &doc.as_map().expect("map")[1];
        assert_eq!(k.pos, Pos::new(2, 1));
        assert_eq!(v.get("c").expect("c").pos, Pos::new(3, 6));
    }

    #[test]
    fn merge_key_keeps_explicit_values_and_order() {
        let doc = one("d: &d {image: a, pull: always}\ns:\n  name: x\n  <<: *d\n  image: b\n");
        let s = doc.get("s").expect("s");
        let keys: Vec<_> = s
            .as_map()
            .expect("map")
            .iter()
            .filter_map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["name", "pull", "image"]);
        assert_eq!(s.get("image").and_then(Node::as_str), Some("b"));
    }

    #[test]
    fn merge_of_a_list_of_mappings_prefers_the_first() {
        let doc = one("a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc:\n  <<: [*a, *b]\n");
        let c = doc.get("c").expect("c");
        assert_eq!(c.get("x").and_then(Node::as_str), Some("1"));
        assert_eq!(c.get("y").and_then(Node::as_str), Some("2"));
    }

    #[test]
    fn merge_inside_a_list_item() {
        let doc = one("base: &base {image: golang}\nsteps:\n  - <<: *base\n    name: test\n");
        let step = &match &doc.get("steps").expect("steps").value {
            Value::Seq(items) => items.clone(),
            _ => panic!(),
        }[0];
        assert_eq!(step.get("image").and_then(Node::as_str), Some("golang"));
        assert_eq!(step.get("name").and_then(Node::as_str), Some("test"));
    }

    #[test]
    fn sequence_splice_of_an_aliased_list() {
        let doc = one("p: &p [a, b]\npath:\n  - <<: *p\n  - c\n");
        assert_eq!(texts(doc.get("path").expect("path")), ["a", "b", "c"]);
    }

    #[test]
    fn tab_after_a_plain_value_and_document_end_marker() {
        let docs = read(
            "a: b\t\nc: [1]\t\n...\n---\nkind: signature\n...\n",
            &Limits::default(),
        )
        .expect("valid");
        assert_eq!(docs.documents.len(), 2);
        assert_eq!(docs.documents[0].get("a").and_then(Node::as_str), Some("b"));
    }

    #[test]
    fn duplicate_keys_are_an_error_at_the_second() {
        let err = read("a: 1\na: 2\n", &Limits::default()).expect_err("invalid");
        assert_eq!(err.pos, Pos::new(2, 1));
        assert!(err.message.contains("key `a` is given twice"), "{err:?}");
        // In a long mapping too (the hashed path), and in a later document.
        let mut long: String = (0..40).map(|i| format!("k{i}: v\n")).collect();
        long.push_str("k7: again\n");
        let err = read(&format!("a: 1\n---\n{long}"), &Limits::default()).expect_err("invalid");
        assert_eq!(err.pos, Pos::new(43, 1));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err =
            read("steps:\n  - name: a\n    image: [x\n", &Limits::default()).expect_err("invalid");
        assert!(err.pos.line >= 3, "{err:?}");
        assert!(err.message.starts_with("invalid YAML"), "{err:?}");
    }

    #[test]
    fn file_size_limit() {
        let limits = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        let err = read("a: 0123456789\n", &limits).expect_err("too big");
        assert!(err.message.contains("bytes"), "{err}");
    }

    #[test]
    fn depth_limit() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let err = read(&deep, &Limits::default()).expect_err("too deep");
        assert!(
            err.message.contains("nests deeper") || err.message.contains("invalid YAML"),
            "{err}"
        );
        let nested_map = (0..80)
            .map(|i| format!("{}k:\n", "  ".repeat(i)))
            .collect::<String>();
        let err = read(&nested_map, &Limits::default()).expect_err("too deep");
        assert!(
            err.message.contains("nests deeper") || err.message.contains("invalid YAML"),
            "{err}"
        );
    }

    #[test]
    fn alias_depth_counts_towards_the_limit() {
        let limits = Limits {
            max_depth: 6,
            ..Limits::default()
        };
        let text = "a: &a [[[[1]]]]\nb: [[[*a]]]\n";
        let err = read(text, &limits).expect_err("too deep through alias");
        assert!(err.message.contains("nests deeper"), "{err}");
    }

    #[test]
    fn billion_laughs_is_an_error_not_an_out_of_memory() {
        let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 9].join(", ")));
        }
        let err = read(&text, &Limits::default()).expect_err("expansion bomb");
        assert!(err.message.contains("expands to more than"), "{err}");
    }

    #[test]
    fn unknown_alias_is_an_error() {
        let err = read("a: *nope\n", &Limits::default()).expect_err("unknown alias");
        assert_eq!(err.pos.line, 1);
    }
}
