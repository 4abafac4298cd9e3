//! A node's files: `FileTree` (path → bytes and mode, in memory), the profiles that say where
//! each artifact goes (`profile`), a profile resolved for one node and recognised from what a
//! tree holds (`layout`), the node-tree model every command reads and writes nodes through
//! (`node`: tarball, directory or live host; `bundle`: a bundle's nodes), the certificates a
//! node holds (`certs`), the reproducible tarball format (`tarball`) and kubeconfigs
//! (`kubeconfig`).

pub mod bundle;
pub mod certs;
pub mod kubeconfig;
pub mod layout;
pub mod node;
pub mod profile;
pub mod tarball;
pub mod target;

use std::collections::BTreeMap;

use zeroize::Zeroizing;

/// One file's content and mode. The bytes are wiped when dropped: most files hold keys.
#[derive(Clone)]
pub struct FileEntry {
    pub bytes: Zeroizing<Vec<u8>>,
    pub mode: u32,
}

/// Relative path → file, sorted, so order never depends on a hash map.
#[derive(Clone, Default)]
pub struct FileTree(pub BTreeMap<String, FileEntry>);

impl FileTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, path: &str, bytes: Vec<u8>, mode: u32) {
        self.0.insert(path.to_string(), FileEntry { bytes: Zeroizing::new(bytes), mode });
    }

    pub fn get(&self, path: &str) -> Option<&FileEntry> {
        self.0.get(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &FileEntry)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same paths, bytes and modes.
    pub fn same_as(&self, other: &FileTree) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().zip(other.0.iter()).all(|((pa, a), (pb, b))| pa == pb && a.mode == b.mode && *a.bytes == *b.bytes)
    }

    /// Every parent directory of every file, sorted.
    pub fn dirs(&self) -> Vec<String> {
        let mut dirs = std::collections::BTreeSet::new();
        for path in self.0.keys() {
            let mut p = path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                dirs.insert(parent.to_string());
                p = parent;
            }
        }
        dirs.into_iter().collect()
    }
}
