//! A bundle's nodes as node trees: which nodes it has (plan.json, else `nodes/`), each node's
//! exact layout from its plan, and every node read in memory from its tarball (or its unpacked
//! tree), in parallel. Nothing is unpacked to disk.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Deserialize;

use crate::tree::layout::{self, Layout};
use crate::tree::node::NodeTree;

/// `OUT/<cluster>`: nodes/ beside state/ or plan.json.
pub fn is_bundle(dir: &Path) -> bool {
    dir.join("nodes").is_dir() && (dir.join("state").is_dir() || dir.join("plan.json").is_file())
}

/// A node tree inside a bundle: `<bundle>/nodes/<node>` → (bundle, node).
pub fn bundle_of_node(dir: &Path) -> Option<(PathBuf, String)> {
    let canon = std::fs::canonicalize(dir).ok()?;
    let name = canon.file_name()?.to_string_lossy().into_owned();
    let nodes = canon.parent()?;
    if nodes.file_name()? != "nodes" {
        return None;
    }
    let bundle = nodes.parent()?;
    (is_bundle(bundle) || nodes.join(format!("{name}.tar.gz")).is_file()).then(|| (bundle.to_path_buf(), name))
}

/// What the commands read of plan.json (it holds no secrets).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanDoc {
    #[serde(default)]
    pub cluster_name: String,
    #[serde(default)]
    pub kubernetes_version: String,
    #[serde(default)]
    pub control_plane_endpoint: String,
    #[serde(default)]
    pub profile: String,
    #[serde(default)]
    pub certificates_dir: String,
    #[serde(default)]
    pub nodes: Vec<PlanNode>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PlanNode {
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub files: Vec<PlanFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PlanFile {
    pub path: String,
    #[serde(default)]
    pub mode: String,
    pub artifact: String,
}

/// The bundle's plan.json, when it has a readable one.
pub fn read_plan(bundle: &Path) -> Option<PlanDoc> {
    let bytes = std::fs::read(bundle.join("plan.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl PlanDoc {
    pub fn node(&self, name: &str) -> Option<&PlanNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The exact layout of node `name`: the files its plan lists.
    pub fn layout(&self, name: &str) -> Option<Layout> {
        let node = self.node(name)?;
        let pki = self.certificates_dir.trim_start_matches('/');
        let pki = if pki.is_empty() { layout::DEFAULT_PKI } else { pki };
        let files =
            node.files.iter().map(|f| (f.artifact.clone(), f.path.clone(), crate::tree::profile::parse_mode(&f.mode).unwrap_or(0o600)));
        Some(Layout::exact(&self.profile, pki, name, files))
    }
}

/// The node names of `nodes_dir`: its directories and `<name>.tar.gz` files.
pub fn node_names(nodes_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(nodes_dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    match e.file_type() {
                        Ok(t) if t.is_dir() && !name.starts_with('.') => Some(name),
                        Ok(t) if t.is_file() => name.strip_suffix(".tar.gz").map(str::to_string),
                        _ => None,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    names
}

/// One node of a bundle.
pub struct BundleNode {
    pub name: String,
    /// `nodes/<node>.tar.gz` (it may be missing).
    pub tarball: PathBuf,
    /// `nodes/<node>/`, when the bundle was written with `--unpacked`.
    pub dir: Option<PathBuf>,
    /// The node's files: from its tarball, or from its unpacked tree (`prefer_tree`).
    pub tree: NodeTree,
}

/// The nodes of a bundle: those its plan names (every one found in `nodes/` without a plan),
/// each read in memory in parallel, with its plan's exact layout (recognised without a plan).
/// With `prefer_tree` an unpacked node is read from its tree (only the files its plan lists),
/// else always from its tarball. The first node that cannot be read is an error naming it.
pub fn read_nodes(bundle: &Path, plan: Option<&PlanDoc>, prefer_tree: bool) -> Result<Vec<BundleNode>, String> {
    let nodes_dir = bundle.join("nodes");
    let on_disk = node_names(&nodes_dir);
    let names: Vec<String> = match plan {
        Some(p) => {
            let planned: BTreeSet<&str> = p.nodes.iter().map(|n| n.name.as_str()).collect();
            on_disk.into_iter().filter(|n| planned.contains(n.as_str())).collect()
        }
        None => on_disk,
    };
    let candidates = layout::builtin_profiles();
    names
        .par_iter()
        .map(|name| {
            let tarball = nodes_dir.join(format!("{name}.tar.gz"));
            let dir = Some(nodes_dir.join(name)).filter(|d| std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()));
            let layout = plan.and_then(|p| p.layout(name));
            let tree = match (&dir, prefer_tree || !tarball.is_file()) {
                (Some(d), true) => match layout {
                    Some(l) => NodeTree::read_listed(d, l),
                    None => NodeTree::walk_dir(d, None, &candidates).map_err(|e| e.to_string())?,
                },
                _ => {
                    let bytes =
                        std::fs::read(&tarball).map_err(|e| format!("cannot read {}: {}", tarball.display(), crate::util::io_words(&e)))?;
                    let tree = NodeTree::from_tarball(&tarball, &bytes, layout, &candidates).map_err(|e| e.to_string())?;
                    if let Some((entry, why)) = tree.problems.first() {
                        return Err(format!("{}: {entry}: {why}", tarball.display()));
                    }
                    tree
                }
            };
            let mut tree = tree;
            tree.name = Some(name.clone());
            Ok(BundleNode { name: name.clone(), tarball, dir, tree })
        })
        .collect()
}
