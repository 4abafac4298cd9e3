//! A YAML document as a plain tree with the position of every node, read only when a document
//! fails to parse into its real type: the parser says where it stopped, the tree says which field
//! is there (`InitConfiguration.localAPIEndpoint.bindPort`) and what the document holds
//! (`six`), so the message speaks of the config and never in the YAML library's words.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Value>>),
    Map(Vec<(Spanned<Value>, Spanned<Value>)>),
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(Value::Int(v.into()))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
                Ok(Value::Int(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
                Ok(i128::try_from(v).map(Value::Int).unwrap_or(Value::Float(v as f64)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Str(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
                Ok(Value::Str(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                Value::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Value::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Value::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// `localAPIEndpoint.bindPort`, `nodes[1].name` (empty for the document itself).
pub fn path_text(path: &[Step]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

impl Value {
    /// A scalar as the config wrote it (for "got `…`"); a list or a mapping by its kind.
    pub fn shown(&self) -> String {
        match self {
            Value::Null => "nothing (null)".into(),
            Value::Bool(b) => format!("`{b}`"),
            Value::Int(i) => format!("`{i}`"),
            Value::Float(f) => format!("`{f}`"),
            Value::Str(s) => format!("`{}`", s.escape_debug()),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    pub fn key_text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            other => other.shown().trim_matches('`').to_string(),
        }
    }

    pub fn is_scalar(&self) -> bool {
        !matches!(self, Value::Seq(_) | Value::Map(_))
    }
}

/// What sits at a position of the document.
#[derive(Debug)]
pub enum Found<'a> {
    /// A mapping entry whose key starts there: its path (ending with the key) and its value.
    Key { path: Vec<Step>, value: &'a Spanned<Value> },
    /// A value (list item, entry value or the document) that starts there.
    Value { path: Vec<Step>, value: &'a Spanned<Value> },
}

fn same(a: &Location, line: u64, column: u64) -> bool {
    a.line() == line && a.column() == column
}

/// Everything that starts at `line`:`column`, outermost first.
pub fn at<'a>(root: &'a Spanned<Value>, line: u64, column: u64) -> Vec<Found<'a>> {
    fn walk<'a>(node: &'a Spanned<Value>, path: &mut Vec<Step>, line: u64, column: u64, out: &mut Vec<Found<'a>>) {
        if same(&node.referenced, line, column) {
            out.push(Found::Value { path: path.clone(), value: node });
        }
        match &node.value {
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Step::Index(i));
                    walk(item, path, line, column, out);
                    path.pop();
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries {
                    path.push(Step::Key(k.value.key_text()));
                    if same(&k.referenced, line, column) {
                        out.push(Found::Key { path: path.clone(), value: v });
                    }
                    walk(v, path, line, column, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(root, &mut Vec::new(), line, column, &mut out);
    out
}

/// The mapping entries at `path` whose key is `key`, in document order (for duplicates).
pub fn keys_named<'a>(root: &'a Spanned<Value>, path: &[Step], key: &str) -> Vec<&'a Spanned<Value>> {
    let mut node = root;
    for step in path {
        let next = match (&node.value, step) {
            (Value::Map(entries), Step::Key(k)) => entries.iter().find(|(key, _)| key.value.key_text() == *k).map(|(_, v)| v),
            (Value::Seq(items), Step::Index(i)) => items.get(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return Vec::new(),
        }
    }
    match &node.value {
        Value::Map(entries) => entries.iter().filter(|(k, _)| k.value.key_text() == key).map(|(k, _)| k).collect(),
        _ => Vec::new(),
    }
}
