//! A bundle's nodes as directory trees, whether it was written with `--unpacked` or holds only
//! the tarballs: a node with no tree beside its tarball is unpacked into a private directory
//! beside the bundle (0700, locked while in use, removed when dropped or on a signal, swept by
//! the next command when a killed run left it), so the commands that work on node trees
//! (`certs renew`, `certs check-expiration`) see every node, and paths inside such a tree are
//! shown as `nodes/<node>.tar.gz:<path>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::bundle::output::{self, OutputError};
use crate::tree::FileTree;

/// The name of the private directories tarball-only nodes are unpacked into.
pub const SCRATCH_PREFIX: &str = ".kubebundle-nodes-";

pub struct NodeTrees {
    /// Node name → its root directory (the bundle's own tree, or an unpacked copy).
    pub roots: BTreeMap<String, PathBuf>,
    bundle: PathBuf,
    scratch: Option<output::PrivateDir>,
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

/// A node's files as its tarball holds them; an error names the tarball and what is wrong.
pub fn read_tarball(path: &Path) -> Result<FileTree, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let unpacked = crate::tree::tarball::unpack(&bytes);
    if let Some((entry, why)) = unpacked.problems.first() {
        return Err(format!("{}: {entry}: {why}", path.display()));
    }
    Ok(FileTree(unpacked.files))
}

impl NodeTrees {
    /// Every node of `bundle` that `wanted` accepts, as a tree.
    pub fn open(bundle: &Path, wanted: impl Fn(&str) -> bool) -> Result<NodeTrees, String> {
        let nodes_dir = bundle.join("nodes");
        let mut trees = NodeTrees { roots: BTreeMap::new(), bundle: bundle.to_path_buf(), scratch: None };
        for name in node_names(&nodes_dir).into_iter().filter(|n| wanted(n)) {
            let dir = nodes_dir.join(&name);
            if dir.is_dir() {
                trees.roots.insert(name, dir);
                continue;
            }
            let files = read_tarball(&nodes_dir.join(format!("{name}.tar.gz")))?;
            let root = trees.scratch_dir()?.join(&name);
            output::write_tree(&root, &files, 0o700).map_err(|e| e.to_string())?;
            trees.roots.insert(name, root);
        }
        Ok(trees)
    }

    fn scratch_dir(&mut self) -> Result<PathBuf, String> {
        if self.scratch.is_none() {
            // Beside the bundle (the same file system, as private as its state), else in the
            // system's temporary directory when that one is read-only (check-expiration by a
            // monitoring user).
            let parent = self.bundle.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
            let make = |dir: &Path| output::PrivateDir::new(dir, SCRATCH_PREFIX);
            let dir = make(&parent)
                .or_else(|_| make(&std::env::temp_dir()))
                .map_err(|e| format!("cannot make a private directory in {}: {e}", parent.display()))?;
            self.scratch = Some(dir);
        }
        Ok(self.scratch.as_ref().map(|d| d.path().to_path_buf()).unwrap_or_default())
    }

    /// Whether `name`'s tree is an unpacked copy of its tarball (the tarball is the node's only copy).
    pub fn is_copy(&self, name: &str) -> bool {
        let scratch = self.scratch.as_ref().map(|d| d.path());
        self.roots.get(name).is_some_and(|r| scratch.is_some_and(|s| r.starts_with(s)))
    }

    /// Whether `path` lies in an unpacked copy.
    pub fn in_copy(&self, path: &Path) -> bool {
        self.scratch.as_ref().is_some_and(|s| path.starts_with(s.path()))
    }

    /// How to show `path`: inside an unpacked copy, as `<bundle>/nodes/<node>.tar.gz:<path in it>`.
    pub fn display(&self, path: &Path) -> String {
        for (name, root) in &self.roots {
            if self.is_copy(name) {
                if let Ok(rel) = path.strip_prefix(root) {
                    return format!("{}:{}", self.bundle.join("nodes").join(format!("{name}.tar.gz")).display(), rel.display());
                }
            }
        }
        path.display().to_string()
    }
}

/// Replaces files of one node of a bundle (`nodes_dir/<name>.tar.gz`, and its tree when there is
/// one), each with `mode`: the tarball is re-packed with `mtime`. Used inside a staged copy of the
/// bundle, which is swapped in afterwards.
pub fn rewrite_node(nodes_dir: &Path, name: &str, files: &[(String, Vec<u8>, u32)], mtime: u64) -> Result<(), OutputError> {
    let tarball = nodes_dir.join(format!("{name}.tar.gz"));
    let bad = |m: String| output::werr(&tarball)(std::io::Error::new(std::io::ErrorKind::InvalidData, m));
    let mut tree = read_tarball(&tarball).map_err(bad)?;
    let dir = nodes_dir.join(name);
    for (path, bytes, mode) in files {
        tree.insert(path, bytes.clone(), *mode);
        if dir.is_dir() {
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                output::make_dirs(parent, 0o755)?;
            }
            // A new file (write_file never writes through a hard link to the previous bundle).
            output::write_file(&target, bytes, *mode)?;
        }
    }
    let packed = crate::tree::tarball::tar_gz(&tree, mtime).map_err(output::werr(&tarball))?;
    output::write_file(&tarball, &packed, 0o600)
}
