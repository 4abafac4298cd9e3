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

fn parse<T: DeserializeOwned>(chunk: &Chunk<'_>, problems: &mut Problems, what: &str) -> Option<T> {
    problems.line_offset = chunk.line_offset;
    match serde_saphyr::from_str::<T>(chunk.text) {
        Ok(v) => Some(v),
        Err(e) => {
            let text = e.without_snippet().to_string();
            let message = match text.rfind(" at line ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            let hint = if message.starts_with("unknown field") {
                Some("remove the field or fix its spelling; fields are case-sensitive (kubeadm uses camelCase)")
            } else if message.contains("duplicate mapping key") {
                Some("each key may appear once in a mapping")
            } else {
                None
            };
            problems.error(e.location().as_ref(), what, message, hint);
            None
        }
    }
}

/// Reads every document. Problems are collected; the result holds what could be read.
pub fn load(text: &str, problems: &mut Problems) -> RawConfig {
    let mut out = RawConfig::default();
    for chunk in split_documents(text) {
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
            (_, "JoinConfiguration" | "UpgradeConfiguration" | "ResetConfiguration") if kubeadm => out.ignored.push(kind.value.clone()),
            ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration") | ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration") => {
                out.ignored.push(kind.value.clone())
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
                if known_kind || a.starts_with("kubeadm.k8s.io/") {
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
