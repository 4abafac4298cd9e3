//! Reading the multi-document YAML file: split on `---`, read each document's apiVersion and
//! kind, then parse it into its own type so every error has an exact position.

use serde::de::DeserializeOwned;

use super::problem::Problems;
use super::raw;

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

/// "unknown field `servceSubnet`, expected one of serviceSubnet, podSubnet" → a hint.
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let list = rest.split_once("expected ").map(|(_, l)| l.trim_start_matches("one of ")).unwrap_or("");
    let candidates = list.split(',').map(|c| c.trim().trim_matches('`'));
    Some(match close_match(field, candidates) {
        Some(m) => format!("did you mean `{m}`?"),
        None => "remove the field or fix its spelling; fields are case-sensitive (kubeadm uses camelCase)".to_string(),
    })
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
/// `problems.line_offset`), with a "did you mean" hint for misspelled fields.
pub fn parse_yaml<T: DeserializeOwned>(text: &str, problems: &mut Problems, what: &str) -> Option<T> {
    match serde_saphyr::from_str_with_options::<T>(text, parser_options()) {
        Ok(v) => Some(v),
        Err(e) => {
            let text = e.without_snippet().to_string();
            // The position is reported apart, so drop a trailing " at line L, column C".
            let is_position = |tail: &str| {
                tail.strip_prefix(" at line ")
                    .and_then(|t| t.split_once(", column "))
                    .is_some_and(|(l, c)| !l.is_empty() && !c.is_empty() && l.bytes().chain(c.bytes()).all(|b| b.is_ascii_digit()))
            };
            let message = match text.rfind(" at line ") {
                Some(i) if is_position(&text[i..]) => text[..i].to_string(),
                _ => text,
            };
            let (message, hint) = if message.starts_with("budget breached") || message.contains("alias") && message.contains("limit") {
                (
                    format!("the document grows too large when its anchors and aliases are expanded ({message})"),
                    Some("kubebundle refuses alias bombs; write the values out instead of nesting aliases".to_string()),
                )
            } else {
                let hint = unknown_hint(&message);
                (message, hint)
            };
            problems.error(e.location().as_ref(), what, message, hint.as_deref());
            None
        }
    }
}

fn unknown_hint(message: &str) -> Option<String> {
    if message.starts_with("unknown field") {
        unknown_field_hint(message)
    } else if message.contains("duplicate mapping key") {
        Some("each key may appear once in a mapping".to_string())
    } else {
        None
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
