//! Files in memory (`FileTree`) and the only code that writes the output: a whole cluster
//! directory is built beside its destination, synced, and swapped in with one atomic
//! rename, under a lock, so a reader (or a crash) only ever sees the complete old or the
//! complete new bundle.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}: {source}\n  hint: check that the output directory is writable and the disk has space")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another kubebundle run is writing {dir} (it holds {lock})\n  hint: wait for it to finish; the lock is released when that process ends")]
    Locked { dir: String, lock: String },
    #[error("{dir} exists and was not written by kubebundle (it has no state/cluster.yaml)\n  hint: choose another --out, or move that directory away")]
    Foreign { dir: String },
    #[error("{dir} belongs to cluster {other:?}, not {cluster:?}\n  hint: choose another --out, or fix clusterName")]
    OtherCluster { dir: String, other: String, cluster: String },
}

pub(crate) fn werr(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Write { path: path.display().to_string(), source }
}

/// The process umask, read once (at the first write, before any thread writes files).
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        // SAFETY: umask only swaps the process's file mode mask; it is restored at once.
        let old = unsafe { libc::umask(0o077) };
        unsafe { libc::umask(old) };
        #[allow(clippy::unnecessary_cast)] // mode_t is u32 on Linux, u16 elsewhere
        let mask = old as u32;
        mask
    })
}

/// Creates `dir` and its missing parents with `mode` (whatever the umask), and sets `mode` on
/// `dir` itself. A directory it creates needs no chmod when the umask leaves `mode` whole (the
/// common case, and the one that matters for thousands of node trees).
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), OutputError> {
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) if mode & umask() == 0 => return Ok(()),
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => fs::DirBuilder::new().recursive(true).mode(mode).create(dir).map_err(werr(dir))?,
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(werr(dir))
}

/// Writes a file with exactly `mode` (set again after opening unless the file is new and the
/// umask left `mode` whole). Durability comes from `commit`, which syncs the staging tree.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), OutputError> {
    let mut f = match fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path) {
        Ok(f) if mode & umask() == 0 => f,
        Ok(f) => {
            f.set_permissions(fs::Permissions::from_mode(mode)).map_err(werr(path))?;
            f
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let f = fs::OpenOptions::new().write(true).truncate(true).open(path).map_err(werr(path))?;
            f.set_permissions(fs::Permissions::from_mode(mode)).map_err(werr(path))?;
            f
        }
        Err(e) => return Err(werr(path)(e)),
    };
    f.write_all(bytes).map_err(werr(path))
}

/// Writes every file of `tree` under `root`; directories get `dir_mode`.
pub fn write_tree(root: &Path, tree: &FileTree, dir_mode: u32) -> Result<(), OutputError> {
    ensure_dir(root, dir_mode)?;
    for d in tree.dirs() {
        ensure_dir(&root.join(d), dir_mode)?;
    }
    for (rel, f) in tree.iter() {
        write_file(&root.join(rel), &f.bytes, f.mode)?;
    }
    Ok(())
}

/// Copies a directory tree of regular files, keeping modes (used to carry the state over).
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), OutputError> {
    let meta = fs::symlink_metadata(from).map_err(werr(from))?;
    ensure_dir(to, meta.permissions().mode() & 0o777)?;
    for entry in fs::read_dir(from).map_err(werr(from))? {
        let entry = entry.map_err(werr(from))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let ft = entry.file_type().map_err(werr(&src))?;
        if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ft.is_file() {
            let mode = entry.metadata().map_err(werr(&src))?.permissions().mode() & 0o777;
            write_file(&dst, &Zeroizing::new(fs::read(&src).map_err(werr(&src))?), mode)?;
        }
    }
    Ok(())
}

/// Every regular file under `root`: (path relative to it, full path). The first directory that
/// cannot be listed is an error.
pub fn list_files(root: &Path) -> Result<Vec<(String, PathBuf)>, OutputError> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).map_err(werr(&dir))? {
            let e = e.map_err(werr(&dir))?;
            let path = e.path();
            let ft = e.file_type().map_err(werr(&path))?;
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                if let Ok(rel) = path.strip_prefix(root) {
                    files.push((rel.to_string_lossy().into_owned(), path.clone()));
                }
            }
        }
    }
    Ok(files)
}

/// Every regular file under `root` with its mode (paths relative to it); the first directory or
/// file that cannot be read is an error.
pub fn read_tree(root: &Path) -> Result<FileTree, OutputError> {
    let mut tree = FileTree::new();
    for (rel, path) in list_files(root)? {
        let bytes = fs::read(&path).map_err(werr(&path))?;
        let mode = fs::metadata(&path).map_err(werr(&path))?.permissions().mode() & 0o777;
        tree.insert(&rel, bytes, mode);
    }
    Ok(tree)
}

/// The marker that says which cluster a directory holds (inside the state).
pub const MARKER: &str = "state/cluster.yaml";

/// Refuses a cluster directory that kubebundle did not write, or that holds another cluster.
pub fn check_owner(cluster_dir: &Path, cluster: &str) -> Result<(), OutputError> {
    let Ok(mut entries) = fs::read_dir(cluster_dir) else { return Ok(()) };
    if entries.next().is_none() {
        return Ok(());
    }
    let dir = cluster_dir.display().to_string();
    let text = fs::read_to_string(cluster_dir.join(MARKER)).map_err(|_| OutputError::Foreign { dir: dir.clone() })?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Marker {
        cluster_name: String,
    }
    let marker: Marker = serde_saphyr::from_str(&text).map_err(|_| OutputError::Foreign { dir: dir.clone() })?;
    if marker.cluster_name != cluster {
        return Err(OutputError::OtherCluster { dir, other: marker.cluster_name, cluster: cluster.to_string() });
    }
    Ok(())
}

/// An exclusive lock on one cluster directory of an output dir, held until dropped. A run that
/// fails leaves nothing behind: what `lock` created (the lock file, the output dir) is removed
/// unless `keep` was called.
pub struct OutputLock {
    _file: fs::File,
    created: Vec<PathBuf>,
}

impl OutputLock {
    /// The run succeeded: the lock file stays for the next run.
    pub fn keep(mut self) {
        self.created.clear();
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked, newest first (the lock file, then the dir if empty).
        for p in self.created.iter().rev() {
            let _ = fs::remove_file(p).or_else(|_| fs::remove_dir(p));
        }
    }
}

pub fn lock(out: &Path, cluster: &str) -> Result<OutputLock, OutputError> {
    let mut created = Vec::new();
    if fs::symlink_metadata(out).is_err() {
        fs::DirBuilder::new().recursive(true).mode(0o755).create(out).map_err(werr(out))?;
        created.push(out.to_path_buf());
    }
    let path = out.join(format!(".kubebundle-{cluster}.lock"));
    if fs::symlink_metadata(&path).is_err() {
        created.push(path.clone());
    }
    let file = fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(&path).map_err(werr(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(OutputLock { _file: file, created }),
        Err(fs::TryLockError::WouldBlock) => {
            Err(OutputError::Locked { dir: out.join(cluster).display().to_string(), lock: path.display().to_string() })
        }
        Err(fs::TryLockError::Error(e)) => Err(werr(&path)(e)),
    }
}

/// `_` never appears in a cluster name (an RFC 1123 name), so one cluster's prefix never
/// matches another's staging directories.
fn staging_prefix(cluster: &str) -> String {
    format!(".kubebundle_{cluster}_")
}

/// A new, private directory beside the destination, where the whole new cluster directory
/// is built. Leftovers of runs that were killed are removed first (the caller holds the lock).
pub fn stage(out: &Path, cluster: &str) -> Result<tempfile::TempDir, OutputError> {
    let prefix = staging_prefix(cluster);
    if let Ok(entries) = fs::read_dir(out) {
        for e in entries.flatten() {
            let name = e.file_name();
            if name.as_bytes().starts_with(prefix.as_bytes()) && e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = tempfile::Builder::new().prefix(&prefix).tempdir_in(out).map_err(werr(out))?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).map_err(werr(dir.path()))?;
    Ok(dir)
}

fn sync_dir(path: &Path) -> Result<(), OutputError> {
    fs::File::open(path).and_then(|d| d.sync_all()).map_err(werr(path))
}

/// Makes the staged directory the cluster directory in one atomic step: the data is synced,
/// then the staged directory is exchanged with the old one (or renamed into place), and only
/// then is the old one removed.
pub fn commit(staging: tempfile::TempDir, target: &Path) -> Result<(), OutputError> {
    let staged: PathBuf = staging.path().to_path_buf();
    // One syncfs flushes every file and directory of the staged tree (and the rest of that
    // file system) before anything becomes visible.
    let dir = fs::File::open(&staged).map_err(werr(&staged))?;
    // SAFETY: syncfs takes a valid open file descriptor and touches no memory of ours.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
        return Err(werr(&staged)(std::io::Error::last_os_error()));
    }
    if fs::symlink_metadata(target).is_ok() {
        exchange(&staged, target)?;
    } else {
        fs::rename(&staged, target).map_err(werr(target))?;
    }
    sync_dir(target.parent().unwrap_or(Path::new(".")))?;
    // `staging` now names the previous bundle (or nothing); dropping it removes that.
    drop(staging);
    Ok(())
}

fn exchange(a: &Path, b: &Path) -> Result<(), OutputError> {
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| werr(p)(std::io::ErrorKind::InvalidInput.into()));
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both arguments are valid NUL-terminated paths that outlive the call.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc != 0 {
        return Err(werr(b)(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_swaps_whole_directories() {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("c");
        for (round, name) in ["first", "second"].iter().enumerate() {
            let s = stage(out.path(), "c").unwrap();
            let mut t = FileTree::new();
            t.insert(&format!("{name}.txt"), vec![round as u8], 0o600);
            write_tree(s.path(), &t, 0o700).unwrap();
            commit(s, &target).unwrap();
        }
        let names: Vec<String> = fs::read_dir(&target).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["second.txt"]);
        // Nothing is left beside it but the target.
        let left: Vec<String> = fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(left, ["c"]);
    }

    #[test]
    fn a_second_lock_is_refused() {
        let out = tempfile::tempdir().unwrap();
        let _held = lock(out.path(), "c").unwrap();
        assert!(matches!(lock(out.path(), "c"), Err(OutputError::Locked { .. })));
    }

    #[test]
    fn foreign_and_other_cluster_dirs_are_refused() {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("k");
        fs::create_dir_all(dir.join("state")).unwrap();
        fs::write(dir.join("notes.txt"), "x").unwrap();
        assert!(matches!(check_owner(&dir, "k"), Err(OutputError::Foreign { .. })));
        fs::write(dir.join(MARKER), "clusterName: other\n").unwrap();
        assert!(matches!(check_owner(&dir, "k"), Err(OutputError::OtherCluster { .. })));
        fs::write(dir.join(MARKER), "clusterName: k\n").unwrap();
        assert!(check_owner(&dir, "k").is_ok());
    }
}
