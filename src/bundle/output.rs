//! The only code that writes a bundle: a whole cluster
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

use crate::tree::FileTree;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}: {source}\n  hint: check that the output directory is writable and the disk has space")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another kubebundle command is writing {dir} (it holds {lock})\n  hint: wait for it to finish and run this command again; the lock is released when that process ends")]
    Locked { dir: String, lock: String },
    #[error("{link} is a symbolic link to {target}, which does not exist\n  hint: point the link at an existing directory (kubebundle writes the bundle into the directory a link points to), or remove the link")]
    DanglingLink { link: String, target: String },
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
    let _writing = writing();
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) if mode & umask() == 0 => return Ok(()),
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => make_dirs(dir, mode)?,
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(werr(dir))
}

/// Creates `dir` and its missing parents with `mode` (less the umask); existing ones are left
/// as they are. Never runs while a signal removes this process's private directories, so it
/// cannot make one again.
pub fn make_dirs(dir: &Path, mode: u32) -> Result<(), OutputError> {
    let _guard = live();
    fs::DirBuilder::new().recursive(true).mode(mode).create(dir).map_err(werr(dir))
}

/// Writes a file with exactly `mode` (set again after opening unless the file is new and the
/// umask left `mode` whole). An existing file is replaced by a new one, never written through:
/// it may be a hard link to a file of the live bundle. Durability comes from `commit`, which
/// syncs the staging tree.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), OutputError> {
    let _writing = writing();
    let mut f = match fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path) {
        Ok(f) if mode & umask() == 0 => f,
        Ok(f) => {
            f.set_permissions(fs::Permissions::from_mode(mode)).map_err(werr(path))?;
            f
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            fs::remove_file(path).map_err(werr(path))?;
            let f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(werr(path))?;
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

/// A file of a bundle and its mode (`0600`), as a run's report lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListedFile {
    /// Relative to the bundle (`nodes/cp1.tar.gz`, `state/tokens.yaml`).
    pub path: String,
    /// Octal, four digits.
    pub mode: String,
}

/// What a run did to a bundle's files, comparing the bundle it replaces with the new one:
/// `written` holds the files that are new or whose bytes or mode changed, `kept` the ones that
/// are the same (a hard link to the old file, or the same bytes and mode), `removed` the old
/// ones the new bundle no longer holds. Each sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub written: Vec<ListedFile>,
    pub kept: Vec<ListedFile>,
    pub removed: Vec<ListedFile>,
    /// Nodes no longer in the Inventory: (name, the archive their files were moved to).
    pub moved_out: Vec<(String, PathBuf)>,
}

/// Compares the bundle `old` (which may not exist yet) with `new`, file by file (regular files
/// only; a hard link to the old file is not read again).
pub fn changes(old: &Path, new: &Path) -> Result<Changes, OutputError> {
    use std::os::unix::fs::MetadataExt;
    let before: BTreeMap<String, PathBuf> = if old.is_dir() { list_files(old)?.into_iter().collect() } else { BTreeMap::new() };
    let after: BTreeMap<String, PathBuf> = list_files(new)?.into_iter().collect();
    let listed = |rel: &str, meta: &fs::Metadata| ListedFile { path: rel.to_string(), mode: format!("{:04o}", meta.mode() & 0o7777) };
    let mut changes = Changes::default();
    for (rel, path) in &after {
        let meta = fs::metadata(path).map_err(werr(path))?;
        let same = match before.get(rel).map(|p| (p, fs::metadata(p))) {
            Some((p, Ok(m))) => {
                (m.dev(), m.ino()) == (meta.dev(), meta.ino())
                    || (m.len() == meta.len()
                        && m.mode() & 0o7777 == meta.mode() & 0o7777
                        && fs::read(p).ok().map(Zeroizing::new) == fs::read(path).ok().map(Zeroizing::new))
            }
            _ => false,
        };
        if same {
            changes.kept.push(listed(rel, &meta));
        } else {
            changes.written.push(listed(rel, &meta));
        }
    }
    for (rel, path) in before.iter().filter(|(rel, _)| !after.contains_key(*rel)) {
        if let Ok(meta) = fs::symlink_metadata(path) {
            changes.removed.push(listed(rel, &meta));
        }
    }
    Ok(changes)
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

// =============================================================================================
// The lock every writer takes

/// An exclusive lock on what one command writes: a bundle (`OUT/.kubebundle-<name>.lock` beside
/// it) or another tree (a lock on the directory itself). Held until dropped; the kernel releases
/// it on every exit path, a signal or SIGKILL included. A run that fails leaves nothing behind:
/// what `lock` created (the lock file, the output dir) is removed unless `keep` was called.
pub struct OutputLock {
    _file: fs::File,
    created: Vec<PathBuf>,
    dir: PathBuf,
    bundle: bool,
}

impl OutputLock {
    /// The run succeeded: the lock file stays for the next run.
    pub fn keep(mut self) {
        self.created.clear();
    }

    /// The directory this lock is for, every symbolic link resolved: stage beside it and
    /// commit to it (a link to a bundle stays a link).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `dir` is a bundle (its lock file beside it), not another tree.
    pub fn is_bundle(&self) -> bool {
        self.bundle
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

/// `path` with every symbolic link resolved; None when nothing is there. A link whose target
/// does not exist is an error naming both.
pub fn resolve(path: &Path) -> Result<Option<PathBuf>, OutputError> {
    match fs::canonicalize(path) {
        Ok(real) => Ok(Some(real)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A link anywhere on the way that points nowhere.
            for p in path.ancestors().filter(|p| !p.as_os_str().is_empty()) {
                if fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) && fs::metadata(p).is_err() {
                    let target = fs::read_link(p).map(|t| t.display().to_string()).unwrap_or_default();
                    return Err(OutputError::DanglingLink { link: p.display().to_string(), target });
                }
            }
            Ok(None)
        }
        Err(e) => Err(werr(path)(e)),
    }
}

/// The lock of the bundle `OUT/<cluster>` (which need not exist yet; OUT is made when missing).
/// When `OUT/<cluster>` or OUT is a symbolic link, the lock is the one of the directory it links
/// to, so every path to one bundle takes the same lock.
pub fn lock(out: &Path, cluster: &str) -> Result<OutputLock, OutputError> {
    let mut created = Vec::new();
    if fs::symlink_metadata(out).is_err() {
        fs::DirBuilder::new().recursive(true).mode(0o755).create(out).map_err(werr(out))?;
        created.push(out.to_path_buf());
    }
    let real_out = resolve(out)?.ok_or_else(|| werr(out)(std::io::ErrorKind::NotFound.into()))?;
    let bundle = match resolve(&out.join(cluster))? {
        Some(real) if !real.is_dir() => return Err(OutputError::Foreign { dir: out.join(cluster).display().to_string() }),
        Some(real) => real,
        None => real_out.join(cluster),
    };
    lock_bundle_at(bundle, created)
}

/// The lock of an existing directory: its bundle's when it is a bundle or lies inside one (a
/// node tree `OUT/<cluster>/nodes/<node>`), else a lock on the directory itself (an
/// `/etc/kubernetes`, an extracted node root: no file is created there).
pub fn lock_dir(dir: &Path) -> Result<OutputLock, OutputError> {
    let real = resolve(dir)?.ok_or_else(|| werr(dir)(std::io::ErrorKind::NotFound.into()))?;
    if let Some(bundle) = enclosing_bundle(&real) {
        return lock_bundle_at(bundle.to_path_buf(), Vec::new());
    }
    let file = fs::File::open(&real).map_err(werr(&real))?;
    match file.try_lock() {
        Ok(()) => Ok(OutputLock { _file: file, created: Vec::new(), dir: real, bundle: false }),
        Err(fs::TryLockError::WouldBlock) => {
            Err(OutputError::Locked { dir: real.display().to_string(), lock: format!("a lock on {} itself", real.display()) })
        }
        Err(fs::TryLockError::Error(e)) => Err(werr(&real)(e)),
    }
}

/// The bundle `real` is or lies in: the nearest directory holding `nodes/` and `state/` (or
/// `plan.json`).
pub fn enclosing_bundle(real: &Path) -> Option<&Path> {
    real.ancestors().find(|a| a.join("nodes").is_dir() && (a.join("state").is_dir() || a.join("plan.json").is_file()))
}

fn lock_bundle_at(bundle: PathBuf, mut created: Vec<PathBuf>) -> Result<OutputLock, OutputError> {
    let (parent, name) = split(&bundle)?;
    let path = parent.join(format!(".kubebundle-{}.lock", name.to_string_lossy()));
    if fs::symlink_metadata(&path).is_err() {
        created.push(path.clone());
    }
    let file = fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(&path).map_err(werr(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(OutputLock { _file: file, created, dir: bundle, bundle: true }),
        Err(fs::TryLockError::WouldBlock) => {
            Err(OutputError::Locked { dir: bundle.display().to_string(), lock: path.display().to_string() })
        }
        Err(fs::TryLockError::Error(e)) => Err(werr(&path)(e)),
    }
}

/// A resolved directory's parent and name.
fn split(dir: &Path) -> Result<(&Path, &std::ffi::OsStr), OutputError> {
    match (dir.parent(), dir.file_name()) {
        (Some(p), Some(n)) => Ok((p, n)),
        _ => Err(werr(dir)(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory kubebundle can write beside"))),
    }
}

// =============================================================================================
// Private directories, the signal handler, and what killed runs left

/// Every private directory (and temporary file) of this process, to remove when a signal ends
/// it. Held while one is renamed into place, so the handler never removes one mid-rename.
static LIVE: std::sync::Mutex<BTreeMap<u64, PathBuf>> = std::sync::Mutex::new(BTreeMap::new());

/// Held shared by every write of a file, directory or link (`write_file`, `ensure_dir`,
/// `hard_link`, ...) and exclusively by the signal handler: once the handler starts removing the
/// private directories, no thread creates anything in them again (a writer making a directory
/// with its parents would otherwise bring a removed staging directory back).
static WRITING: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn writing() -> std::sync::RwLockReadGuard<'static, ()> {
    WRITING.read().unwrap_or_else(|e| e.into_inner())
}

fn live() -> std::sync::MutexGuard<'static, BTreeMap<u64, PathBuf>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates `path` with `create` and registers it, in one step for the signal handler: it is
/// either removed by the handler or never made.
fn create_registered<T>(path: &Path, create: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<(T, u64)> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut live = live();
    let made = create()?;
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    live.insert(id, path.to_path_buf());
    Ok((made, id))
}

fn remove_any(path: &Path) {
    // Something else may still be changing the tree while it is removed: retry until it is
    // gone, for at most ten seconds (an entry that cannot be removed must not hang a signal).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < until {
        match fs::symlink_metadata(path) {
            Err(_) => return,
            Ok(m) if m.is_dir() => {
                let _ = fs::remove_dir_all(path);
            }
            Ok(_) => {
                let _ = fs::remove_file(path);
            }
        }
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP remove this process's private directories and temporary
/// files, then exit with 128 + the signal. Call it first in `main`, before any thread starts:
/// the signals are blocked in every thread and one thread waits for them, so the cleanup runs
/// as ordinary code (no async-signal-safety limits) and waits for a rename in progress.
pub fn handle_signals() {
    // SAFETY: sigset_t is plain data filled by sigemptyset/sigaddset; pthread_sigmask and
    // sigwait take pointers to it that outlive the calls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        let waiter = std::thread::Builder::new().name("signals".into()).spawn(move || loop {
            let mut sig: libc::c_int = 0;
            if libc::sigwait(&set, &mut sig) == 0 {
                // No write starts after this (and the one in flight ends first); then no rename.
                let _writes = WRITING.write().unwrap_or_else(|e| e.into_inner());
                let paths = live();
                for p in paths.values() {
                    remove_any(p);
                }
                // `paths` stays locked: nothing is renamed into place after this.
                libc::_exit(128 + sig);
            }
        });
        if waiter.is_err() {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
}

/// A private directory (0700) of one command: it holds a lock on itself for its lifetime, so a
/// later command can tell a leftover of a killed run (nobody holds its lock) from one in use,
/// and it is removed when dropped or when a signal ends the process.
pub struct PrivateDir {
    path: PathBuf,
    _lock: fs::File,
    id: u64,
    published: bool,
}

/// Every private directory's name starts with this (and the sweep removes only those).
pub const PRIVATE_PREFIX: &str = ".kubebundle";

impl PrivateDir {
    /// A new private directory in `parent`, named `<prefix><random>` (`prefix` starts with
    /// `.kubebundle`).
    pub fn new(parent: &Path, prefix: &str) -> Result<PrivateDir, OutputError> {
        debug_assert!(prefix.starts_with(PRIVATE_PREFIX));
        let mut last = std::io::Error::from(std::io::ErrorKind::AlreadyExists);
        for _ in 0..16 {
            let path = parent.join(format!("{prefix}{}", random_suffix()));
            let id = match create_registered(&path, || fs::DirBuilder::new().mode(0o700).create(&path)) {
                Ok(((), id)) => id,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    last = e;
                    continue;
                }
                Err(e) => return Err(werr(&path)(e)),
            };
            // A sweep may take it between mkdir and the lock: then it is gone, and we try again.
            let file = match open_dir_nofollow(&path) {
                Ok(f) if f.try_lock().is_ok() && same_inode(&f, &path) => f,
                _ => {
                    live().remove(&id);
                    continue;
                }
            };
            let dir = PrivateDir { path, _lock: file, id, published: false };
            fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o700)).map_err(werr(&dir.path))?;
            return Ok(dir);
        }
        Err(werr(parent)(last))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the directory to `dest`, which must not exist (a half-written `dest` is never
    /// seen: it appears whole or not at all). It is no longer removed afterwards.
    pub fn publish(mut self, dest: &Path) -> Result<(), OutputError> {
        fsync_tree(&self.path)?;
        let guard = live();
        rename_noreplace(&self.path, dest)?;
        self.published = true;
        drop(guard);
        sync_dir(dest.parent().unwrap_or(Path::new(".")))
    }

    /// Publishes the directory in `parent` as the backup `kubebundle-backup-<now>` (`-2`, `-3`,
    /// ... when that exists: a backup is never overwritten) and returns where it went.
    pub fn publish_backup(mut self, parent: &Path, now: time::OffsetDateTime) -> Result<PathBuf, OutputError> {
        fsync_tree(&self.path)?;
        let stamp = backup_name(now);
        for n in 1.. {
            let dest = parent.join(if n == 1 { stamp.clone() } else { format!("{stamp}-{n}") });
            let guard = live();
            match rename_noreplace(&self.path, &dest) {
                Ok(()) => {
                    self.published = true;
                    drop(guard);
                    sync_dir(parent)?;
                    return Ok(dest);
                }
                Err(OutputError::Write { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists || source.raw_os_error() == Some(libc::ENOTEMPTY) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("an unbounded range ends only by returning")
    }
}

/// The first backup name in `parent` for `now` that is free (`-2`, `-3`, ... as `publish_backup`
/// takes them), for a command that records where its backup goes before it publishes it (under
/// its bundle's lock, with `PrivateDir::publish`, which refuses a name taken in between).
pub fn free_backup_name(parent: &Path, now: time::OffsetDateTime) -> String {
    let stamp = backup_name(now);
    (1..)
        .map(|n| if n == 1 { stamp.clone() } else { format!("{stamp}-{n}") })
        .find(|n| std::fs::symlink_metadata(parent.join(n)).is_err())
        .unwrap_or(stamp)
}

/// The name of a backup made at `now`: `kubebundle-backup-<YYYYmmddTHHMMSSZ>`.
pub fn backup_name(now: time::OffsetDateTime) -> String {
    let t = now.to_offset(time::UtcOffset::UTC);
    format!("kubebundle-backup-{:04}{:02}{:02}T{:02}{:02}{:02}Z", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second())
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if !self.published {
            // As a writer: a signal handler waits until this removal ends, then finds the
            // directory gone, instead of racing it through the same tree and giving up half way
            // (the old bundle a commit swapped here can hold thousands of files).
            let _writing = writing();
            remove_any(&self.path);
        }
        live().remove(&self.id);
    }
}

fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let mut n = h.finish();
    (0..10)
        .map(|_| {
            let c = b"abcdefghijklmnopqrstuvwxyz0123456789"[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

fn open_dir_nofollow(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW).open(path)
}

fn same_inode(f: &fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Removes what killed commands left in `dir`: every `.kubebundle*` directory whose own lock
/// nobody holds (a staging or scratch directory of a process that is gone), and every
/// `.kubebundle-tmp-*` file in the same state. Those in use are kept. Errors are ignored (a
/// read-only directory is simply not swept).
pub fn sweep(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.as_bytes();
        let Ok(ft) = e.file_type() else { continue };
        let path = e.path();
        let file = if ft.is_dir() && name.starts_with(PRIVATE_PREFIX.as_bytes()) {
            open_dir_nofollow(&path)
        } else if ft.is_file() && name.starts_with(TMP_PREFIX.as_bytes()) {
            fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path)
        } else {
            continue;
        };
        let Ok(file) = file else { continue };
        if file.try_lock().is_ok() && same_inode(&file, &path) {
            remove_any(&path);
        }
    }
}

/// Sweeps the places a command given `path` looks: beside it (beside the directory it links
/// to, too), beside the bundle it lies in, and the system's temporary directory (where
/// tarball-only nodes are unpacked when the bundle's parent is read-only).
pub fn sweep_around(path: &Path) {
    let mut places = Vec::new();
    places.extend(path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p }).map(Path::to_path_buf));
    if let Ok(Some(real)) = resolve(path) {
        places.extend(real.parent().map(Path::to_path_buf));
        if let Some(b) = enclosing_bundle(&real) {
            places.extend(b.parent().map(Path::to_path_buf));
        }
    }
    places.push(std::env::temp_dir());
    places.sort();
    places.dedup();
    for p in places {
        sweep(&p);
    }
}

/// Temporary files written beside the file they replace (a live tree such as /etc/kubernetes).
pub const TMP_PREFIX: &str = ".kubebundle-tmp-";

/// A temporary file beside `path` that replaces it: private (0600 until `mode` is set), locked
/// while it lives, removed on a signal or when dropped unless persisted.
pub struct TempFile {
    pub file: fs::File,
    path: PathBuf,
    id: u64,
    persisted: bool,
}

impl TempFile {
    pub fn beside(path: &Path) -> std::io::Result<TempFile> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut last = std::io::Error::from(std::io::ErrorKind::AlreadyExists);
        for _ in 0..16 {
            let tmp = dir.join(format!("{TMP_PREFIX}{name}-{}", random_suffix()));
            match create_registered(&tmp, || fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)) {
                Ok((file, id)) if file.try_lock().is_ok() && same_inode(&file, &tmp) => {
                    return Ok(TempFile { file, path: tmp, id, persisted: false })
                }
                Ok((_, id)) => {
                    live().remove(&id);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Renames it over `path`.
    pub fn persist(mut self, path: &Path) -> std::io::Result<()> {
        let guard = live();
        fs::rename(&self.path, path)?;
        self.persisted = true;
        drop(guard);
        Ok(())
    }
}

/// The node-tree model replaces a host's files through these (removed on a signal like every
/// private file of the process).
impl crate::tree::node::TempFile for TempFile {
    fn file(&mut self) -> &mut fs::File {
        &mut self.file
    }

    fn persist(self: Box<Self>, to: &Path) -> std::io::Result<()> {
        TempFile::persist(*self, to)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
        live().remove(&self.id);
    }
}

/// `_` never appears in a cluster name (an RFC 1123 name), so one cluster's prefix never
/// matches another's staging directories.
fn staging_prefix(cluster: &str) -> String {
    format!(".kubebundle_{cluster}_")
}

/// A new private directory in `out`, beside the destination `out/<cluster>`, where the whole
/// new cluster directory is built. Leftovers of killed runs are swept first.
pub fn stage(out: &Path, cluster: &str) -> Result<PrivateDir, OutputError> {
    sweep(out);
    PrivateDir::new(out, &staging_prefix(cluster))
}

/// A copy of the tree `from` at `to` made of hard links (directories made anew with their
/// modes; symbolic links copied as links). Used to stage a new bundle that differs from the old
/// one in a few files: those are then written anew (`write_file` never writes through a link),
/// nothing is modified in place, so the old bundle stays intact until the swap.
pub fn link_copy(from: &Path, to: &Path) -> Result<(), OutputError> {
    link_copy_except(from, to, &std::collections::BTreeSet::new())
}

/// `link_copy` without the files at the paths in `skip` (relative to `from`), which the caller
/// writes anew: no link is made only to be removed again.
pub fn link_copy_except(from: &Path, to: &Path, skip: &std::collections::BTreeSet<PathBuf>) -> Result<(), OutputError> {
    link_copy_in(from, to, Path::new(""), skip)
}

fn link_copy_in(from: &Path, to: &Path, rel: &Path, skip: &std::collections::BTreeSet<PathBuf>) -> Result<(), OutputError> {
    let meta = fs::symlink_metadata(from).map_err(werr(from))?;
    ensure_dir(to, meta.permissions().mode() & 0o7777)?;
    for entry in fs::read_dir(from).map_err(werr(from))? {
        let entry = entry.map_err(werr(from))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let here = rel.join(entry.file_name());
        let ft = entry.file_type().map_err(werr(&src))?;
        if ft.is_dir() {
            link_copy_in(&src, &dst, &here, skip)?;
        } else if ft.is_file() && skip.contains(&here) {
            continue;
        } else if ft.is_file() {
            hard_link(&src, &dst).map_err(werr(&dst))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&src).map_err(werr(&src))?;
            let _writing = writing();
            std::os::unix::fs::symlink(target, &dst).map_err(werr(&dst))?;
        }
    }
    Ok(())
}

/// A hard link at `to` to the file `from`, made while no signal handler is removing private
/// directories.
pub fn hard_link(from: &Path, to: &Path) -> std::io::Result<()> {
    let _writing = writing();
    fs::hard_link(from, to)
}

fn sync_dir(path: &Path) -> Result<(), OutputError> {
    fs::File::open(path).and_then(|d| d.sync_all()).map_err(werr(path))
}

/// One syncfs flushes every file and directory of the tree (and the rest of that file system).
fn fsync_tree(path: &Path) -> Result<(), OutputError> {
    let dir = fs::File::open(path).map_err(werr(path))?;
    // SAFETY: syncfs takes a valid open file descriptor and touches no memory of ours.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
        return Err(werr(path)(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Makes the staged directory the cluster directory in one atomic step: the data is synced,
/// then the staged directory is exchanged with the old one (or renamed into place), and only
/// then is the old one removed. `target` is a real directory (`OutputLock::dir`), never a link.
pub fn commit(staging: PrivateDir, target: &Path) -> Result<(), OutputError> {
    let staged: PathBuf = staging.path().to_path_buf();
    fsync_tree(&staged)?;
    {
        // The signal handler waits for the rename; after it, `staged` names the old bundle
        // (or nothing), which the handler may remove.
        let _guard = live();
        if fs::symlink_metadata(target).is_ok() {
            exchange(&staged, target)?;
        } else {
            fs::rename(&staged, target).map_err(werr(target))?;
        }
    }
    sync_dir(target.parent().unwrap_or(Path::new(".")))?;
    // `staging` now names the previous bundle (or nothing); dropping it removes that.
    drop(staging);
    Ok(())
}

fn c_path(p: &Path) -> Result<std::ffi::CString, OutputError> {
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| werr(p)(std::io::ErrorKind::InvalidInput.into()))
}

fn exchange(a: &Path, b: &Path) -> Result<(), OutputError> {
    let (ca, cb) = (c_path(a)?, c_path(b)?);
    // SAFETY: both arguments are valid NUL-terminated paths that outlive the call.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc != 0 {
        return Err(werr(b)(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn rename_noreplace(a: &Path, b: &Path) -> Result<(), OutputError> {
    let (ca, cb) = (c_path(a)?, c_path(b)?);
    // SAFETY: both arguments are valid NUL-terminated paths that outlive the call.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_NOREPLACE) };
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
    fn every_path_to_a_bundle_takes_the_same_lock() {
        let out = tempfile::tempdir().unwrap();
        let real = out.path().join("real");
        fs::create_dir_all(real.join("c/nodes/n1/etc/kubernetes")).unwrap();
        fs::create_dir_all(real.join("c/state")).unwrap();
        let links = out.path().join("links");
        fs::create_dir(&links).unwrap();
        std::os::unix::fs::symlink(real.join("c"), links.join("c")).unwrap();
        let held = lock(&links, "c").unwrap();
        assert_eq!(held.dir(), fs::canonicalize(real.join("c")).unwrap());
        assert!(held.is_bundle());
        // The lock file is beside the directory the link points to, not beside the link.
        assert!(real.join(".kubebundle-c.lock").is_file());
        assert!(!links.join(".kubebundle-c.lock").exists());
        for other in [real.join("c"), links.join("c"), real.join("c/nodes/n1"), real.join("c/nodes/n1/etc/kubernetes")] {
            match lock_dir(&other) {
                Err(OutputError::Locked { lock, .. }) => assert!(lock.ends_with(".kubebundle-c.lock"), "{lock}"),
                Err(e) => panic!("{}: {e}", other.display()),
                Ok(_) => panic!("{}: locked twice", other.display()),
            }
        }
        drop(held);
        assert!(lock_dir(&real.join("c/nodes/n1")).unwrap().is_bundle());
        // A tree outside any bundle: a lock on the directory itself, no file made.
        let etc = out.path().join("etc");
        fs::create_dir(&etc).unwrap();
        let t = lock_dir(&etc).unwrap();
        assert!(!t.is_bundle());
        assert!(matches!(lock_dir(&etc), Err(OutputError::Locked { .. })));
        drop(t);
        assert_eq!(fs::read_dir(&etc).unwrap().count(), 0);
    }

    #[test]
    fn a_dangling_link_is_named() {
        let out = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(out.path().join("gone"), out.path().join("c")).unwrap();
        match lock(out.path(), "c") {
            Err(OutputError::DanglingLink { link, target }) => {
                assert!(link.ends_with("/c") && target.ends_with("/gone"), "{link} {target}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("locked a dangling link"),
        }
        assert!(matches!(lock_dir(&out.path().join("c")), Err(OutputError::DanglingLink { .. })));
        assert!(matches!(lock(&out.path().join("c"), "x"), Err(OutputError::DanglingLink { .. })));
        assert!(!out.path().join("gone").exists());
    }

    #[test]
    fn sweep_removes_what_nobody_holds_and_keeps_what_is_in_use() {
        let out = tempfile::tempdir().unwrap();
        // A killed run's staging directory: nobody holds its lock.
        let stale = out.path().join(".kubebundle_c_stale");
        fs::create_dir_all(stale.join("state")).unwrap();
        fs::write(stale.join("state/ca.key"), "secret").unwrap();
        let stale_tmp = out.path().join(format!("{TMP_PREFIX}ca.key-x"));
        fs::write(&stale_tmp, "secret").unwrap();
        // One in use (its lock held), and things that are not ours.
        let live = PrivateDir::new(out.path(), ".kubebundle-nodes-").unwrap();
        fs::write(live.path().join("k"), "x").unwrap();
        let held = out.path().join(".kubebundle_c_held");
        fs::create_dir(&held).unwrap();
        let holder = fs::File::open(&held).unwrap();
        holder.lock().unwrap();
        let lockfile = out.path().join(".kubebundle-c.lock");
        fs::write(&lockfile, "").unwrap();
        fs::create_dir(out.path().join("c")).unwrap();
        sweep(out.path());
        assert!(!stale.exists() && !stale_tmp.exists());
        assert!(live.path().join("k").is_file() && held.is_dir() && lockfile.is_file() && out.path().join("c").is_dir());
        assert_eq!(fs::metadata(live.path()).unwrap().permissions().mode() & 0o777, 0o700);
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
        drop(holder);
        sweep(out.path());
        assert!(!held.exists());
    }

    #[test]
    fn published_dirs_appear_whole_and_never_replace() {
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("backup");
        let d = PrivateDir::new(out.path(), ".kubebundle-backup-").unwrap();
        fs::write(d.path().join("f"), "1").unwrap();
        d.publish(&dest).unwrap();
        assert_eq!(fs::read(dest.join("f")).unwrap(), b"1");
        let d = PrivateDir::new(out.path(), ".kubebundle-backup-").unwrap();
        let again = d.path().to_path_buf();
        assert!(d.publish(&dest).is_err());
        assert!(!again.exists(), "a refused private dir is still removed");
        assert_eq!(fs::read(dest.join("f")).unwrap(), b"1");
    }

    #[test]
    fn write_file_never_writes_through_a_hard_link() {
        let out = tempfile::tempdir().unwrap();
        let (live, staged) = (out.path().join("live"), out.path().join("staged"));
        fs::write(&live, "old").unwrap();
        fs::hard_link(&live, &staged).unwrap();
        write_file(&staged, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&live).unwrap(), b"old");
        assert_eq!(fs::read(&staged).unwrap(), b"new");
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
