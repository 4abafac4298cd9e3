//! Reading the multi-document YAML file: split on `---`, read each document's apiVersion and
//! kind, then parse it into its own type so every error has an exact position.

use serde::de::DeserializeOwned;

use serde_saphyr::Location;

use super::problem::Problems;
use super::raw;
use super::tree;

/// The documents found in one config file.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub cluster: Option<(u64, raw::ClusterConfiguration)>,
    pub init: Option<(u64, raw::InitConfiguration)>,
    pub inventory: Option<(u64, raw::Inventory)>,
    /// Documents we accept but do not use, by kind.
    pub ignored: Vec<String>,
}

pub const KUBEADM_VERSIONS: [&str; 3] = ["kubeadm.k8s.io/v1beta2", "kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4"];
pub const INVENTORY_API: &str = "kubebundle.dev/v1alpha1";

/// One `---`-separated document and the line (0-based) where it starts.
struct Chunk<'a> {
    text: &'a str,
    line_offset: u64,
}

fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut start = 0usize;
    let mut start_line = 0u64;
    let mut pos = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare == "---" || bare.starts_with("--- ") || bare == "..." {
            chunks.push(Chunk { text: &text[start..pos], line_offset: start_line });
            start = pos + line.len();
            start_line = i as u64 + 1;
        }
        pos += line.len();
    }
    chunks.push(Chunk { text: &text[start..], line_offset: start_line });
    chunks.retain(|c| c.text.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')));
    chunks
}

/// A config is a few hundred lines, or an inventory of tens of thousands of nodes (the file is at
/// most 4 MiB): the node and event limits follow from that size, and the alias, anchor and
/// merge-key limits, far below the parser's defaults, stop alias and merge-key bombs early, in
/// little time and memory.
fn parser_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = 4_000_000;
    budget.max_aliases = 2_000;
    budget.max_anchors = 2_000;
    budget.max_recorded_anchor_events = 50_000;
    budget.max_recorded_anchor_bytes = 1 << 20;
    budget.max_nodes = 1_500_000;
    budget.max_merge_keys = 200;
    budget.max_total_scalar_bytes = 8 << 20;
    budget.max_documents = 64;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Levenshtein distance, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The closest of `candidates` to `word`, when it is close enough to be a likely typo.
pub fn close_match<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let cl = c.to_ascii_lowercase();
            // A truncated name ("ClusterConfig") is as likely a typo as a misspelt one.
            let truncated = lower.len() >= 4 && cl.starts_with(&lower);
            (if truncated { 1 } else { distance(&lower, &cl) }, c)
        })
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// YAML forbids tabs in indentation; say so where the first one is.
fn tab_in_indentation(chunk: &Chunk<'_>, problems: &mut Problems) -> bool {
    for (i, line) in chunk.text.lines().enumerate() {
        let indent: String = line.chars().take_while(|c| *c == ' ' || *c == '\t').collect();
        let rest = line[indent.len()..].trim();
        if let Some(col) = indent.find('\t') {
            if !rest.is_empty() && !rest.starts_with('#') {
                problems.list.push(super::problem::Problem {
                    file: problems.file.clone(),
                    position: Some((chunk.line_offset + i as u64 + 1, col as u64 + 1)),
                    field: String::new(),
                    message: "tab character in indentation".into(),
                    hint: Some("YAML indents with spaces only: replace the tab with spaces".into()),
                    warning: false,
                });
                return true;
            }
        }
    }
    false
}

fn parse<T: DeserializeOwned>(chunk: &Chunk<'_>, problems: &mut Problems, what: &str) -> Option<T> {
    problems.line_offset = chunk.line_offset;
    parse_yaml(chunk.text, problems, what)
}

/// Parses one YAML document into `T`; a failure becomes a problem at its position (shifted by
/// `problems.line_offset`) that names the field and says what is wrong in the config's own terms
/// (see `explain`), with a "did you mean" hint for misspelled fields.
pub fn parse_yaml<T: DeserializeOwned>(text: &str, problems: &mut Problems, what: &str) -> Option<T> {
    match serde_saphyr::from_str_with_options::<T>(text, parser_options()) {
        Ok(v) => Some(v),
        Err(e) => {
            let x = explain(&e, text, what, problems.line_offset);
            problems.error(x.location.as_ref(), &x.field, x.message, x.hint.as_deref());
            None
        }
    }
}

/// A parse error in words: where, which field, what is wrong, how to fix it.
struct Explained {
    location: Option<Location>,
    field: String,
    message: String,
    hint: Option<String>,
}

type Node = serde_saphyr::Spanned<tree::Value>;

/// Fields whose value is not a string, by the end of their path, and what they take.
const SCALAR_FIELDS: [(&str, &str); 4] = [
    ("localAPIEndpoint.bindPort", "an integer 1–65535"),
    ("dns.disabled", "true or false"),
    ("dryRun", "true or false"),
    ("nodeRegistration.imagePullSerial", "true or false"),
];

/// What a field takes, from the parser's words (`sequence start`, `i64`, `a string (…)`).
fn expected_words(expected: &str) -> &'static str {
    let e = expected.trim_start_matches("a ").trim_start_matches("an ");
    if e.starts_with("seq") {
        "a list"
    } else if e.starts_with("map") || e.starts_with("struct") {
        "a mapping"
    } else if e.starts_with("string") {
        "a string"
    } else if e.starts_with("bool") {
        "true or false"
    } else if e.starts_with('i') || e.starts_with('u') {
        "an integer"
    } else if e.starts_with('f') {
        "a number"
    } else {
        "a single value"
    }
}

/// How to write what a field takes.
fn type_hint(expected: &str, got: &tree::Value, source: &str) -> Option<String> {
    match expected {
        "a string" if got.is_scalar() && !matches!(got, tree::Value::Str(_) | tree::Value::Null) => {
            Some(format!("quote it (\"{source}\"): unquoted, YAML reads it as a boolean or a number"))
        }
        "a list" => Some("write a list: [a, b] on one line, or one `- item` per line".into()),
        "a mapping" => Some("write its fields on the lines below it, indented".into()),
        _ => None,
    }
}

/// Parses `text` again as a plain tree (duplicate keys kept), to name what a position holds.
fn tree_of(text: &str) -> Option<Node> {
    let mut options = parser_options();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    serde_saphyr::from_str_with_options(text, options).ok()
}

/// A scalar as it was written (a string as read), escaped and clipped, for "got `…`".
fn source_of(node: &Node, text: &str) -> String {
    let span = node.referenced.span();
    let raw = match (&node.value, span.byte_offset(), span.byte_len()) {
        (tree::Value::Str(s), _, _) => s.clone(),
        (_, Some(at), Some(len)) if len > 0 => text.get(at as usize..(at + len) as usize).unwrap_or_default().to_string(),
        (v, _, _) => v.shown().trim_matches('`').to_string(),
    };
    let mut shown: String = raw.chars().flat_map(char::escape_debug).take(61).collect();
    if shown.chars().count() > 60 {
        shown = shown.chars().take(60).collect::<String>() + "…";
    }
    shown
}

fn got_words(node: &Node, text: &str) -> String {
    match &node.value {
        tree::Value::Null => "nothing".into(),
        v if v.is_scalar() => format!("`{}`", source_of(node, text)),
        v => v.shown(),
    }
}

/// The position of the node at `path`.
fn node_at<'a>(root: &'a Node, path: &[tree::Step]) -> Option<&'a Node> {
    let mut node = root;
    for step in path {
        node = match (&node.value, step) {
            (tree::Value::Map(entries), tree::Step::Key(k)) => &entries.iter().find(|(key, _)| key.value.key_text() == *k)?.1,
            (tree::Value::Seq(items), tree::Step::Index(i)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

/// The kind a document declares, when it is one whose fields we name (`ClusterConfiguration`).
fn kind_of(tree: Option<&Node>) -> String {
    let Some(tree::Value::Map(entries)) = tree.map(|t| &t.value) else { return String::new() };
    entries
        .iter()
        .find(|(k, _)| k.value.key_text() == "kind")
        .and_then(|(_, v)| match &v.value {
            tree::Value::Str(s) if ["ClusterConfiguration", "InitConfiguration", "Inventory"].contains(&s.as_str()) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Explains a parse error. The parser says where it stopped; the document, read again as a plain
/// tree, says which field is there and what it holds, so that no message is in the YAML library's
/// words: "InitConfiguration.localAPIEndpoint.bindPort: expected an integer 1–65535, got `six`".
fn explain(error: &serde_saphyr::Error, text: &str, what: &str, line_offset: u64) -> Explained {
    use serde_saphyr::Error as E;
    let location = error.location();
    let mut e = error.without_snippet();
    while let E::AliasError { error: inner, .. } = e {
        e = inner.without_snippet();
    }
    // Only errors about a value need the tree (an alias bomb is not parsed twice).
    let about_a_value = matches!(
        e,
        E::DuplicateMappingKey { .. }
            | E::SerdeUnknownField { .. }
            | E::SerdeMissingField { .. }
            | E::SerdeInvalidType { .. }
            | E::SerdeInvalidValue { .. }
            | E::Unexpected { .. }
            | E::InvalidScalar { .. }
            | E::InvalidBooleanStrict { .. }
            | E::NullIntoString { .. }
            | E::QuotingRequired { .. }
    );
    let tree = if about_a_value { tree_of(text) } else { None };
    // Field paths start with the document's kind; a profile's fields are named from its top.
    let root = match what {
        "document" => kind_of(tree.as_ref()),
        "profile" => String::new(),
        kind => kind.to_string(),
    };
    let name = |path: &[tree::Step]| {
        let rel = tree::path_text(path);
        match (root.is_empty(), rel.is_empty()) {
            (true, true) => what.to_string(),
            (false, true) => root.clone(),
            (true, false) => rel,
            (false, false) => format!("{root}.{rel}"),
        }
    };
    let plain =
        |message: String, hint: Option<&str>| Explained { location, field: what.to_string(), message, hint: hint.map(str::to_string) };
    // What starts where the parser stopped, and is not what `wanted` names (a mapping and its
    // first key start at the same place). `key_first`: the entry whose key is there (serde's own
    // type errors point at the key), else the value there (the parser's point at the value).
    let pick = |key_first: bool, wanted: &str| -> Option<(Vec<tree::Step>, &Node)> {
        let (t, loc) = (tree.as_ref()?, location?);
        let found: Vec<(bool, Vec<tree::Step>, &Node)> = tree::at(t, loc.line(), loc.column())
            .into_iter()
            .map(|f| match f {
                tree::Found::Key { path, value } => (true, path, value),
                tree::Found::Value { path, value } => (false, path, value),
            })
            .collect();
        let fits = |v: &tree::Value| match wanted {
            "a list" => matches!(v, tree::Value::Seq(_)),
            "a mapping" => matches!(v, tree::Value::Map(_)),
            "a string" => matches!(v, tree::Value::Str(_)),
            "an integer" => matches!(v, tree::Value::Int(_)),
            "true or false" => matches!(v, tree::Value::Bool(_)),
            _ => false,
        };
        let best = |misfit: bool| {
            let of = |is_key: bool| {
                found.iter().rev().find(|(k, _, v)| *k == is_key && (!misfit || !fits(&v.value))).map(|(_, p, v)| (p.clone(), *v))
            };
            if key_first {
                of(true).or_else(|| of(false))
            } else {
                of(false).or_else(|| of(true))
            }
        };
        best(true).or_else(|| best(false))
    };
    let type_error = |expected: &str, key_first: bool| -> Explained {
        let Some((path, node)) = pick(key_first, expected_words(expected)) else {
            return plain(format!("expected {}", expected_words(expected)), None);
        };
        let rel = tree::path_text(&path);
        let wanted = SCALAR_FIELDS
            .iter()
            .find(|(suffix, _)| rel == *suffix || rel.ends_with(&format!(".{suffix}")))
            .map(|(_, w)| *w)
            .unwrap_or_else(|| if path.is_empty() { "a mapping" } else { expected_words(expected) });
        if path.is_empty() {
            let got = if matches!(node.value, tree::Value::Null) { "empty".to_string() } else { got_words(node, text) };
            return Explained {
                location: Some(node.referenced),
                field: name(&path),
                message: format!("a document is a mapping of fields (apiVersion, kind, …), but this one is {got}"),
                hint: Some("start each document with its apiVersion: and kind: lines (see `kubebundle config print-defaults`)".into()),
            };
        }
        Explained {
            location: Some(node.referenced),
            field: name(&path),
            message: format!("expected {wanted}, got {}", got_words(node, text)),
            hint: type_hint(wanted, &node.value, &source_of(node, text)),
        }
    };
    const BOMB_HINT: &str = "kubebundle refuses alias bombs; write the values out instead of nesting aliases";
    const ALIASES: &str = "the document grows too large when its anchors and aliases are expanded";
    match e {
        E::Budget { breach, .. } => {
            use serde_saphyr::budget::BudgetBreach as B;
            match breach {
                B::Depth { .. } => plain("the document nests too deeply for a config".into(), None),
                B::Events { .. } | B::Nodes { .. } | B::ScalarBytes { .. } | B::Documents { .. } | B::InputBytes { .. } => {
                    plain("the document is too large for a config".into(), Some(BOMB_HINT))
                }
                _ => plain(ALIASES.into(), Some(BOMB_HINT)),
            }
        }
        E::AliasReplayCounterOverflow { .. }
        | E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. } => plain(ALIASES.into(), Some(BOMB_HINT)),
        E::DuplicateMappingKey { key, .. } => {
            let key = key.clone().unwrap_or_default();
            let (field, first) = match pick(true, "") {
                Some((mut path, _)) => {
                    path.pop();
                    let first = tree.as_ref().and_then(|t| tree::keys_named(t, &path, &key).first().map(|k| k.referenced.line()));
                    (name(&path), first)
                }
                None => (what.to_string(), None),
            };
            let seen = first.filter(|l| Some(*l) != location.map(|l| l.line())).map(|l| format!(" (first at line {})", l + line_offset));
            Explained {
                location,
                field,
                message: format!("duplicate key `{key}`{}", seen.unwrap_or_default()),
                hint: Some("each key may appear once in a mapping: keep one of them".into()),
            }
        }
        E::SerdeUnknownField { field, expected, .. } => {
            let parent = match pick(true, "") {
                Some((mut path, _)) => {
                    path.pop();
                    name(&path)
                }
                None => what.to_string(),
            };
            let hint = match close_match(field, expected.iter().copied()) {
                Some(m) => format!("did you mean `{m}`?"),
                None => "remove the field or fix its spelling; fields are case-sensitive (kubeadm uses camelCase)".to_string(),
            };
            let known = if expected.is_empty() { String::new() } else { format!(" (the fields here: {})", expected.join(", ")) };
            Explained { location, field: parent, message: format!("unknown field `{field}`{known}"), hint: Some(hint) }
        }
        E::SerdeMissingField { field, .. } => {
            // The parser stops at the mapping, or at its last key.
            let path = pick(false, "").map(|(mut path, node)| {
                if !matches!(node.value, tree::Value::Map(_)) {
                    path.pop();
                }
                path
            });
            let mapping = path.as_ref().and_then(|p| node_at(tree.as_ref()?, p)).map(|n| n.referenced);
            Explained {
                location: mapping.or(location),
                field: path.map(|p| name(&p)).unwrap_or_else(|| what.to_string()),
                message: format!("the field `{field}` is missing"),
                hint: None,
            }
        }
        E::SerdeInvalidType { expected, .. } | E::SerdeInvalidValue { expected, .. } => type_error(expected, true),
        E::Unexpected { expected, .. } => type_error(expected, false),
        E::InvalidScalar { ty, .. } => type_error(ty, false),
        E::InvalidBooleanStrict { .. } => type_error("bool", false),
        E::NullIntoString { .. } | E::QuotingRequired { .. } => type_error("string", false),
        _ => {
            // A syntax error: the parser's description of it is all there is.
            let text = e.to_string();
            let is_position = |tail: &str| {
                tail.strip_prefix(" at line ")
                    .and_then(|t| t.split_once(", column "))
                    .is_some_and(|(l, c)| !l.is_empty() && !c.is_empty() && l.bytes().chain(c.bytes()).all(|b| b.is_ascii_digit()))
            };
            let message = match text.find(" at line ") {
                Some(i) if is_position(&text[i..]) => text[..i].to_string(),
                _ => text,
            };
            plain(format!("invalid YAML: {message}"), None)
        }
    }
}

/// Reads every document. Problems are collected; the result holds what could be read.
pub fn load(text: &str, problems: &mut Problems) -> RawConfig {
    let mut out = RawConfig::default();
    let chunks = split_documents(text);
    if chunks.is_empty() {
        problems.error(
            None,
            "",
            "the config file is empty: it holds no YAML document",
            Some("start from the example that `kubebundle config print-defaults` prints"),
        );
    }
    for chunk in chunks {
        if tab_in_indentation(&chunk, problems) {
            continue;
        }
        let Some(head) = parse::<raw::Head>(&chunk, problems, "document") else { continue };
        let (Some(api), Some(kind)) = (head.api_version, head.kind) else {
            problems.error(
                None,
                "document",
                format!("the document starting at line {} has no apiVersion or no kind", chunk.line_offset + 1),
                Some("every document needs both, e.g. apiVersion: kubeadm.k8s.io/v1beta4 and kind: ClusterConfiguration"),
            );
            continue;
        };
        let loc = kind.referenced;
        let offset = chunk.line_offset;
        let kubeadm = KUBEADM_VERSIONS.contains(&api.value.as_str());
        match (api.value.as_str(), kind.value.as_str()) {
            (_, "ClusterConfiguration") if kubeadm => {
                if let Some(doc) = parse(&chunk, problems, "ClusterConfiguration") {
                    if out.cluster.is_some() {
                        problems.error(Some(&loc), "kind", "a second ClusterConfiguration", Some("keep exactly one"));
                    }
                    out.cluster = Some((offset, doc));
                }
            }
            (_, "InitConfiguration") if kubeadm => {
                if let Some(doc) = parse(&chunk, problems, "InitConfiguration") {
                    if out.init.is_some() {
                        problems.error(Some(&loc), "kind", "a second InitConfiguration", Some("keep exactly one"));
                    }
                    out.init = Some((offset, doc));
                }
            }
            (_, "JoinConfiguration" | "UpgradeConfiguration" | "ResetConfiguration") if kubeadm => out.ignored.push(kind.value.to_string()),
            ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration") | ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration") => {
                out.ignored.push(kind.value.to_string())
            }
            (INVENTORY_API, "Inventory") => {
                if let Some(doc) = parse(&chunk, problems, "Inventory") {
                    if out.inventory.is_some() {
                        problems.error(Some(&loc), "kind", "a second Inventory", Some("list every node in one Inventory"));
                    }
                    out.inventory = Some((offset, doc));
                }
            }
            (a, k) => {
                problems.line_offset = offset;
                let known_kind = ["ClusterConfiguration", "InitConfiguration", "JoinConfiguration"].contains(&k);
                if KUBEADM_VERSIONS.contains(&a) && k != "Inventory" {
                    let kinds =
                        ["ClusterConfiguration", "InitConfiguration", "JoinConfiguration", "UpgradeConfiguration", "ResetConfiguration"];
                    let hint = close_match(k, kinds).map(|m| format!("did you mean `{m}`?"));
                    problems.error(
                        Some(&loc),
                        "kind",
                        format!("unknown kind {k:?} for {a}"),
                        Some(hint.as_deref().unwrap_or("kubebundle reads ClusterConfiguration and InitConfiguration")),
                    );
                } else if known_kind || a.starts_with("kubeadm.k8s.io/") {
                    problems.error(
                        Some(&api.referenced),
                        "apiVersion",
                        format!("unsupported apiVersion {a:?} for kind {k}"),
                        Some("use kubeadm.k8s.io/v1beta4 (or v1beta3; v1beta2 is read for old clusters)"),
                    );
                } else if k == "Inventory" {
                    problems.error(
                        Some(&api.referenced),
                        "apiVersion",
                        format!("unsupported apiVersion {a:?} for kind Inventory"),
                        Some("use kubebundle.dev/v1alpha1"),
                    );
                } else {
                    problems.error(
                        Some(&loc),
                        "kind",
                        format!("unknown kind {k:?} (apiVersion {a:?})"),
                        Some("kubebundle reads ClusterConfiguration and InitConfiguration (kubeadm.k8s.io/v1beta2..v1beta4) and Inventory (kubebundle.dev/v1alpha1)"),
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_line_offsets() {
        let text = "a: 1\n---\n# only a comment\n---\nb: 2\nc: 3\n--- \nd: 4\n";
        let chunks = split_documents(text);
        let offsets: Vec<u64> = chunks.iter().map(|c| c.line_offset).collect();
        assert_eq!(offsets, vec![0, 4, 7]);
        assert_eq!(chunks[1].text, "b: 2\nc: 3\n");
    }

    #[test]
    fn suggestions_and_tabs() {
        assert_eq!(close_match("servceSubnet", ["serviceSubnet", "podSubnet", "dnsDomain"]), Some("serviceSubnet"));
        assert_eq!(close_match("clustername", ["clusterName", "etcd"]), Some("clusterName"));
        assert_eq!(close_match("zzz", ["serviceSubnet"]), None);
        let mut p = Problems::new("t.yaml");
        load("apiVersion: v1\nkind: X\nnodes:\n\t- a\n", &mut p);
        assert_eq!(p.list[0].position, Some((4, 1)));
        let mut p = Problems::new("t.yaml");
        load("# nothing\n---\n", &mut p);
        assert!(p.list[0].message.contains("empty"));
    }

    #[test]
    fn error_positions_are_file_lines() {
        let text = "apiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes: []\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterNme: x\n";
        let mut p = Problems::new("c.yaml");
        let raw = load(text, &mut p);
        assert!(raw.inventory.is_some());
        assert_eq!(p.list.len(), 1, "{:?}", p.list);
        assert_eq!(p.list[0].position, Some((7, 1)));
        assert!(p.list[0].message.contains("clusterNme"));
    }
}
