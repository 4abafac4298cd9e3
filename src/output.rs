//! Files in memory (`FileTree`) and atomic writes with exact modes.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}\n  hint: check that the output directory is writable and the disk has space")]
pub struct WriteError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

fn werr(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError { path: path.display().to_string(), source }
}

/// Creates `dir` and its missing parents with `mode` (whatever the umask), and sets `mode` on
/// `dir` itself.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), WriteError> {
    fs::DirBuilder::new().recursive(true).mode(mode).create(dir).map_err(werr(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(werr(dir))
}

/// Writes a file atomically: a temporary file in the same directory, mode set, data synced,
/// then renamed over the destination.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".kubebundle-").tempfile_in(dir).map_err(werr(path))?;
    tmp.as_file().set_permissions(fs::Permissions::from_mode(mode)).map_err(werr(path))?;
    tmp.write_all(bytes).map_err(werr(path))?;
    tmp.as_file().sync_all().map_err(werr(path))?;
    tmp.persist(path).map_err(|e| WriteError { path: path.display().to_string(), source: e.error })?;
    Ok(())
}

/// Writes every file of `tree` under `root`; directories get `dir_mode`.
pub fn write_tree(root: &Path, tree: &FileTree, dir_mode: u32) -> Result<(), WriteError> {
    ensure_dir(root, dir_mode)?;
    for d in tree.dirs() {
        ensure_dir(&root.join(d), dir_mode)?;
    }
    for (rel, f) in tree.iter() {
        write_atomic(&root.join(rel), &f.bytes, f.mode)?;
    }
    Ok(())
}

/// Replaces the generated entries of `target` with those built in `staging` (a directory
/// inside `target`): each entry is renamed into place, the previous one moved aside first and
/// deleted only after. Entries of `target` not in `names` (such as the state) are untouched.
pub fn swap_in(staging: &Path, target: &Path, names: &[&str]) -> Result<(), WriteError> {
    let old = staging.join(".previous");
    ensure_dir(&old, 0o700)?;
    for name in names {
        let from = staging.join(name);
        let to: PathBuf = target.join(name);
        if to.symlink_metadata().is_ok() {
            fs::rename(&to, old.join(name)).map_err(werr(&to))?;
        }
        if from.symlink_metadata().is_ok() {
            fs::rename(&from, &to).map_err(werr(&to))?;
        }
    }
    if let Ok(d) = fs::File::open(target) {
        let _ = d.sync_all();
    }
    Ok(())
}
