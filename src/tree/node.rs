//! One node's files as a typed view (`NodeTree`): for each file its path, mode, owner, bytes,
//! the artifact the layout says it is, and where it really lives on disk. Read from a tarball
//! (in memory, never unpacked to disk), from a directory tree, or from a live host root, where
//! only the paths the layout names are read (never a walk of `/`), plus the files its
//! kubeconfigs reference and the kubelet's rotated certificates. Writes go back through the same
//! view (`write`): each changed file replaced atomically beside itself, through symbolic links,
//! keeping its mode and owner; a tarball is packed again from the view.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use zeroize::Zeroizing;

use crate::tree::layout::{self, Layout, Probe, Roles, Unrecognised};
use crate::tree::profile::Profile;
use crate::tree::tarball::MAX_FILE;
use crate::tree::{FileEntry, FileTree};

/// The kubelet's own certificates (its `--cert-dir`): it rotates them itself.
pub const KUBELET_PKI: &str = "var/lib/kubelet/pki";
/// What the kubelet keeps there: its rotated client certificate (a link to a dated file), a
/// rotated serving certificate (with `serverTLSBootstrap`), and the self-signed serving pair it
/// makes when it is given none.
pub const KUBELET_ROTATED: [&str; 3] = ["kubelet-client-current.pem", "kubelet-server-current.pem", "kubelet.crt"];

/// Why a file is part of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// A path the layout names.
    Layout,
    /// A kubeconfig (the path given) names it.
    Referenced(String),
    /// The kubelet's certificate directory.
    KubeletRotated,
    /// Found by walking a directory tree.
    Walked,
}

#[derive(Clone)]
pub struct NodeFile {
    pub bytes: Zeroizing<Vec<u8>>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The file on disk that holds the bytes (a link's target, followed): what a write replaces.
    pub real: Option<PathBuf>,
    /// The symbolic link it was read through, as the link says, when the path is one.
    pub link: Option<String>,
    pub why: Why,
}

/// How the paths of a host tree map to the disk: `prefix` (relative to the node's root, `""`
/// for the root itself) is the directory `dir`.
#[derive(Debug, Clone)]
pub struct Mount {
    pub prefix: String,
    pub dir: PathBuf,
}

impl Mount {
    pub fn root(dir: &Path) -> Mount {
        Mount { prefix: String::new(), dir: dir.to_path_buf() }
    }

    /// The root itself is known (absolute paths on the node resolve under `dir`).
    pub fn is_root(&self) -> bool {
        self.prefix.is_empty()
    }

    /// Where `rel` is on disk, when it is inside the mounted part.
    pub fn real(&self, rel: &str) -> Option<PathBuf> {
        if self.prefix.is_empty() {
            return Some(if rel.is_empty() { self.dir.clone() } else { self.dir.join(rel) });
        }
        if rel == self.prefix {
            return Some(self.dir.clone());
        }
        rel.strip_prefix(&self.prefix).and_then(|r| r.strip_prefix('/')).map(|r| self.dir.join(r))
    }

    /// The path relative to the node's root of a file on disk, when it is inside the mounted part.
    pub fn rel_of(&self, real: &Path) -> Option<String> {
        let rest = real.strip_prefix(&self.dir).ok()?.to_string_lossy().into_owned();
        Some(match (self.prefix.is_empty(), rest.is_empty()) {
            (true, _) => rest,
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{rest}", self.prefix),
        })
    }
}

/// Where a node's files come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A node tarball, read in memory.
    Tarball(PathBuf),
    /// A directory tree whose every file is read (a bundle's `nodes/<node>/`, a root given to
    /// `verify`).
    Dir(PathBuf),
    /// A live host or an extracted root: only the paths the layout names (and what they reference).
    Host(Mount),
}

pub struct NodeTree {
    /// The node's name: plan.json's, or the layout's `{node}`, or its kubelet certificate's.
    pub name: Option<String>,
    pub origin: Origin,
    pub layout: Layout,
    pub files: BTreeMap<String, NodeFile>,
    /// What could not be read: (path, why). Links outside the tree that cannot be read land here.
    pub problems: Vec<(String, String)>,
    /// The paths among `problems` that lead outside the tree (reported and skipped, never fatal).
    pub outside: std::collections::BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: {why}")]
    Unrecognised { path: String, why: Unrecognised },
    #[error("cannot read {path}: {why}")]
    Read { path: String, why: String },
}

impl NodeTree {
    /// How to show `rel` to a person: the file on disk, or `<tarball>:<path>`.
    pub fn show(&self, rel: &str) -> String {
        match &self.origin {
            Origin::Tarball(t) => format!("{}:{rel}", t.display()),
            Origin::Dir(d) => d.join(rel).display().to_string(),
            Origin::Host(m) => match m.real(rel) {
                Some(p) => p.display().to_string(),
                None => format!("/{rel}"),
            },
        }
    }

    pub fn get(&self, rel: &str) -> Option<&NodeFile> {
        self.files.get(rel)
    }

    /// The file holding `artifact`: the first path the layout gives it that the tree holds.
    pub fn artifact(&self, artifact: &str) -> Option<(&str, &NodeFile)> {
        self.layout.paths_of(artifact).find_map(|p| self.files.get_key_value(p).map(|(k, f)| (k.as_str(), f)))
    }

    /// The node's roles, as its files prove them.
    pub fn roles(&self) -> Roles {
        self.layout.roles(|p| self.files.contains_key(p))
    }

    /// The files as a `FileTree` (what a tarball packs).
    pub fn file_tree(&self) -> FileTree {
        FileTree(self.files.iter().map(|(p, f)| (p.clone(), FileEntry { bytes: f.bytes.clone(), mode: f.mode })).collect())
    }

    /// A tree made of files already in memory (a tarball's), its layout given or recognised.
    pub fn from_files(
        origin: Origin,
        files: BTreeMap<String, FileEntry>,
        problems: Vec<(String, String)>,
        layout: Option<Layout>,
        candidates: &[Profile],
    ) -> Result<NodeTree, Unrecognised> {
        let layout = match layout {
            Some(l) => l,
            None => layout::recognise(&InMemory(&files), candidates)?,
        };
        let why = |p: &str| if layout.entry_at(p).is_some() { Why::Layout } else { Why::Walked };
        let files = files
            .into_iter()
            .map(|(p, f)| {
                let w = why(&p);
                (p, NodeFile { bytes: f.bytes, mode: f.mode, uid: 0, gid: 0, real: None, link: None, why: w })
            })
            .collect();
        let mut tree = NodeTree { name: layout.node.clone(), origin, layout, files, problems, outside: Default::default() };
        tree.name = tree.name.clone().or_else(|| tree.kubelet_name());
        Ok(tree)
    }

    /// A node tarball, read in memory (`bytes` are its contents). Entries refused while reading
    /// (links, absolute paths, a changed digest) are problems of the tree.
    pub fn from_tarball(path: &Path, bytes: &[u8], layout: Option<Layout>, candidates: &[Profile]) -> Result<NodeTree, TreeError> {
        let unpacked = crate::tree::tarball::unpack(bytes);
        NodeTree::from_files(Origin::Tarball(path.to_path_buf()), unpacked.files, unpacked.problems, layout, candidates)
            .map_err(|why| TreeError::Unrecognised { path: path.display().to_string(), why })
    }

    /// The files and problems, as a tarball's reader gives them.
    pub fn into_files(self) -> (BTreeMap<String, FileEntry>, Vec<(String, String)>) {
        let files = self.files.into_iter().map(|(p, f)| (p, FileEntry { bytes: f.bytes, mode: f.mode })).collect();
        (files, self.problems)
    }

    /// Every regular file under `root` with the problems met (links, devices, oversized files:
    /// never followed or read).
    pub fn walk_files(root: &Path) -> (BTreeMap<String, FileEntry>, Vec<(String, String)>) {
        let mut files = BTreeMap::new();
        let mut problems = Vec::new();
        walk(root, root, &mut files, &mut problems, 0);
        (files, problems)
    }

    /// Every regular file under `root` (a bundle's unpacked node, or a root `verify` audits):
    /// symbolic links, devices and oversized files are problems, never followed or read.
    pub fn walk_dir(root: &Path, layout: Option<Layout>, candidates: &[Profile]) -> Result<NodeTree, TreeError> {
        let (files, problems) = NodeTree::walk_files(root);
        let mut tree = NodeTree::from_files(Origin::Dir(root.to_path_buf()), files, problems, layout, candidates)
            .map_err(|why| TreeError::Unrecognised { path: root.display().to_string(), why })?;
        for (rel, f) in tree.files.iter_mut() {
            let real = root.join(rel);
            if let Ok(m) = std::fs::metadata(&real) {
                (f.uid, f.gid) = (m.uid(), m.gid());
            }
            f.real = Some(real);
        }
        Ok(tree)
    }

    /// Only the files the layout names, where `files` says (a bundle node's tree, read as its
    /// plan lists it).
    pub fn read_listed(dir: &Path, layout: Layout) -> NodeTree {
        NodeTree::read_layout(Origin::Dir(dir.to_path_buf()), layout, &Mount::root(dir))
    }

    /// Every path `layout` names, read under `mount`.
    fn read_layout(origin: Origin, layout: Layout, mount: &Mount) -> NodeTree {
        let mut tree = NodeTree {
            name: layout.node.clone(),
            origin,
            layout,
            files: BTreeMap::new(),
            problems: Vec::new(),
            outside: Default::default(),
        };
        let paths: Vec<String> = tree.layout.entries.iter().map(|e| e.path.clone()).collect();
        for rel in &paths {
            tree.read_one(mount, rel, Why::Layout);
        }
        tree
    }

    /// A live host (or an extracted root): the layout given (`--profile`, a bundle's plan) or
    /// recognised among `candidates`; then every path it names, every file a kubeconfig of it
    /// references, and the kubelet's rotated certificates. Nothing else is read.
    pub fn read_host(mount: Mount, layout: Option<Layout>, candidates: &[Profile]) -> Result<NodeTree, TreeError> {
        let shown = mount.dir.display().to_string();
        let layout = match layout {
            Some(l) => l,
            None => layout::recognise(&OnDisk(&mount), candidates).map_err(|why| TreeError::Unrecognised { path: shown, why })?,
        };
        let mut tree = NodeTree::read_layout(Origin::Host(mount.clone()), layout, &mount);
        // The files kubeconfigs name (a client certificate as a file, the kubelet's rotated pair).
        let kubeconfigs: Vec<String> = tree
            .files
            .iter()
            .filter(|(p, _)| is_kubeconfig_artifact(tree.layout.entry_at(p).map(|e| e.artifact.as_str())))
            .map(|(p, _)| p.clone())
            .collect();
        for conf in kubeconfigs {
            let Some(f) = tree.files.get(&conf) else { continue };
            let Ok(kc) = crate::tree::kubeconfig::Kubeconfig::parse(&f.bytes) else { continue };
            let mut named: Vec<String> =
                kc.users.iter().flat_map(|u| [u.user.client_certificate.clone(), u.user.client_key.clone()]).flatten().collect();
            named.extend(kc.clusters.iter().filter_map(|c| c.cluster.certificate_authority.clone()));
            for file in named.into_iter().filter(|f| !f.is_empty()) {
                match node_path(&conf, &file) {
                    Some(rel) if !tree.files.contains_key(&rel) => {
                        if mount.real(&rel).is_some() {
                            tree.read_one(&mount, &rel, Why::Referenced(conf.clone()));
                        } else {
                            // Outside what is mounted (a kubeadm directory given alone): read where it is.
                            tree.read_outside(&rel, &PathBuf::from(format!("/{rel}")), Why::Referenced(conf.clone()));
                        }
                    }
                    Some(_) => {}
                    None => tree.problems.push((conf.clone(), format!("it names {file:?}, which is not a path kubebundle can follow"))),
                }
            }
        }
        // The kubelet's own certificates.
        if mount.is_root() {
            for name in KUBELET_ROTATED {
                let rel = format!("{KUBELET_PKI}/{name}");
                if !tree.files.contains_key(&rel) {
                    tree.read_one(&mount, &rel, Why::KubeletRotated);
                }
            }
        }
        tree.name = tree.name.clone().or_else(|| tree.kubelet_name());
        Ok(tree)
    }

    /// Reads one more file a file of the tree names (`--encryption-provider-config` of the API
    /// server, say) into the view, as the layout's own files are read: on a host, links followed
    /// under its root and a path outside the mounted part read where it is; a tarball or a walked
    /// directory already holds every file. `why` is the file that names it.
    pub fn read_named(&mut self, rel: &str, why: &str) {
        if self.files.contains_key(rel) {
            return;
        }
        let Origin::Host(mount) = &self.origin else { return };
        let mount = mount.clone();
        if mount.real(rel).is_some() {
            self.read_one(&mount, rel, Why::Referenced(why.to_string()));
        } else {
            self.read_outside(rel, &PathBuf::from(format!("/{rel}")), Why::Referenced(why.to_string()));
        }
    }

    /// The node's name from its kubelet certificates (`system:node:<name>`).
    fn kubelet_name(&self) -> Option<String> {
        let serving = self.artifact("kubelet-serving.crt").map(|(_, f)| f.bytes.clone());
        let client = self.artifact("kubelet.conf.crt").map(|(_, f)| f.bytes.clone());
        [serving, client].into_iter().flatten().find_map(|b| layout::common_name(&b)?.strip_prefix("system:node:").map(str::to_string))
    }

    /// Reads `rel` (following links; an absolute target resolves under the root, as on the
    /// node) into the view; a missing file is simply absent, anything else unreadable a problem.
    fn read_one(&mut self, mount: &Mount, rel: &str, why: Why) {
        let Some(start) = mount.real(rel) else { return };
        let mut path = start;
        let mut link = None;
        for _ in 0..16 {
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && link.is_none() => return,
                Err(e) => {
                    let outside = link.is_some() && mount.rel_of(&path).is_none();
                    let what = match (&link, outside) {
                        (Some(l), true) => format!("a link to {l}, outside the tree, which "),
                        (Some(l), false) => format!("a link to {l}, which "),
                        (None, _) => String::new(),
                    };
                    self.problems.push((rel.to_string(), format!("{what}cannot be read: {}", crate::util::io_words(&e))));
                    if outside {
                        self.outside.insert(rel.to_string());
                    }
                    return;
                }
            };
            if !meta.file_type().is_symlink() {
                break;
            }
            let target = match std::fs::read_link(&path) {
                Ok(t) => t,
                Err(e) => {
                    self.problems.push((rel.to_string(), format!("an unreadable link: {}", crate::util::io_words(&e))));
                    return;
                }
            };
            if link.is_none() {
                link = Some(target.display().to_string());
            }
            path = if target.is_absolute() {
                match mount.is_root() {
                    // As on the node: under its root.
                    true => mount.dir.join(target.strip_prefix("/").unwrap_or(&target)),
                    false => target,
                }
            } else {
                normalize(&path.parent().unwrap_or(Path::new("/")).join(target))
            };
        }
        let inside = mount.rel_of(&path).is_some();
        match read_regular(&path) {
            Ok((bytes, meta)) => {
                let f = NodeFile {
                    bytes,
                    mode: meta.permissions().mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    real: Some(path),
                    link,
                    why,
                };
                self.files.insert(rel.to_string(), f);
            }
            Err(e) if !inside => self
                .problems
                .push((rel.to_string(), format!("a link to {} outside the tree, which cannot be read ({e}): skipped", path.display()))),
            Err(e) => self.problems.push((rel.to_string(), e)),
        }
    }

    fn read_outside(&mut self, rel: &str, path: &Path, why: Why) {
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        match read_regular(&real) {
            Ok((bytes, meta)) => {
                let link = (real != path).then(|| real.display().to_string());
                let f = NodeFile {
                    bytes,
                    mode: meta.permissions().mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    real: Some(real),
                    link,
                    why,
                };
                self.files.insert(rel.to_string(), f);
            }
            Err(e) => {
                self.problems.push((rel.to_string(), format!("{} is outside the tree and cannot be read ({e}): skipped", path.display())))
            }
        }
    }
}

fn is_kubeconfig_artifact(artifact: Option<&str>) -> bool {
    artifact.is_some_and(|a| crate::pki::catalog::kubeconfig(a).is_some() || a == "discovery.conf")
}

/// A path a file of the node names (absolute on the node, or relative to the file `from`), as
/// a path relative to the node's root.
pub fn node_path(from: &str, named: &str) -> Option<String> {
    let joined = if let Some(abs) = named.strip_prefix('/') {
        PathBuf::from(abs)
    } else {
        Path::new(from).parent().unwrap_or(Path::new("")).join(named)
    };
    let mut parts: Vec<String> = Vec::new();
    for c in joined.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir => {}
            Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// `..` and `.` removed without touching the disk.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// A regular file of bounded size, with its metadata; the error says why in words.
fn read_regular(path: &Path) -> Result<(Zeroizing<Vec<u8>>, std::fs::Metadata), String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read: {}", crate::util::io_words(&e)))?;
    let meta = f.metadata().map_err(|e| format!("cannot read: {}", crate::util::io_words(&e)))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE {
        return Err(format!("{} bytes, larger than any file of a node: not read", meta.len()));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    f.take(MAX_FILE).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {}", crate::util::io_words(&e)))?;
    Ok((bytes, meta))
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, FileEntry>, problems: &mut Vec<(String, String)>, depth: usize) {
    let rel = |p: &Path| p.strip_prefix(root).map(|r| r.to_string_lossy().into_owned()).unwrap_or_default();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            problems.push((rel(dir), format!("cannot list the directory: {}", crate::util::io_words(&e))));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            problems.push((rel(&p), "cannot stat".into()));
            continue;
        };
        let ft = md.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&p).map(|t| t.display().to_string()).unwrap_or_default();
            problems.push((rel(&p), format!("a symbolic link → {target}: not followed (a bundle holds regular files only)")));
        } else if ft.is_dir() {
            if depth < 32 {
                walk(root, &p, out, problems, depth + 1);
            }
        } else if ft.is_file() {
            if md.len() > MAX_FILE {
                problems.push((rel(&p), format!("file of {} bytes is too large for a bundle file: not read", md.len())));
                continue;
            }
            match std::fs::read(&p) {
                Ok(bytes) => {
                    out.insert(rel(&p), FileEntry { bytes: bytes.into(), mode: md.permissions().mode() & 0o7777 });
                }
                Err(e) => problems.push((rel(&p), format!("cannot read: {}", crate::util::io_words(&e)))),
            }
        } else {
            problems.push((rel(&p), "a device, FIFO or socket: not read (a bundle holds regular files only)".into()));
        }
    }
}

/// Files in memory, for recognising their layout.
struct InMemory<'a>(&'a BTreeMap<String, FileEntry>);

impl Probe for InMemory<'_> {
    fn exists(&self, rel: &str) -> bool {
        self.0.contains_key(rel)
    }
    fn read(&self, rel: &str) -> Option<Vec<u8>> {
        self.0.get(rel).map(|f| f.bytes.to_vec())
    }
    fn list(&self, rel: &str) -> Vec<String> {
        let prefix = if rel.is_empty() { String::new() } else { format!("{rel}/") };
        let mut names: Vec<String> = self
            .0
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| k[prefix.len()..].split('/').next().map(str::to_string))
            .collect();
        names.dedup();
        names
    }
}

/// A host's files, probed one path at a time (never walked).
struct OnDisk<'a>(&'a Mount);

impl Probe for OnDisk<'_> {
    fn exists(&self, rel: &str) -> bool {
        self.0.real(rel).is_some_and(|p| std::fs::symlink_metadata(p).is_ok())
    }
    fn read(&self, rel: &str) -> Option<Vec<u8>> {
        let p = self.0.real(rel)?;
        let meta = std::fs::metadata(&p).ok()?;
        (meta.is_file() && meta.len() <= 1 << 20).then(|| std::fs::read(&p).ok()).flatten()
    }
    fn list(&self, rel: &str) -> Vec<String> {
        let Some(p) = self.0.real(rel) else { return Vec::new() };
        std::fs::read_dir(p).map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
    }
}

// =============================================================================================
// Writing

/// A file to replace on disk: its new bytes, with the mode and owner of the file it replaces.
pub struct FileWrite {
    /// The path in the tree.
    pub rel: String,
    /// The file replaced (a link's target: the link stays).
    pub real: PathBuf,
    pub bytes: Zeroizing<Vec<u8>>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A temporary file beside the one it replaces, made by the caller (so it can be removed when a
/// signal ends the process): written, then renamed over its target.
pub trait TempFile {
    fn file(&mut self) -> &mut std::fs::File;
    fn persist(self: Box<Self>, to: &Path) -> std::io::Result<()>;
}

impl NodeTree {
    /// The writes that put `changes` (path → new bytes) on disk: each changed file of the view,
    /// at the file it really is. A path the view does not hold is an error.
    pub fn writes(&self, changes: &BTreeMap<String, Vec<u8>>) -> Result<Vec<FileWrite>, String> {
        changes
            .iter()
            .map(|(rel, bytes)| {
                let f = self.files.get(rel).ok_or_else(|| format!("{} is not a file of the tree", self.show(rel)))?;
                let real = f.real.clone().ok_or_else(|| format!("{} is not on disk", self.show(rel)))?;
                Ok(FileWrite { rel: rel.clone(), real, bytes: Zeroizing::new(bytes.clone()), mode: f.mode, uid: f.uid, gid: f.gid })
            })
            .collect()
    }

    /// The write that puts a new file `rel` (not in the view: a CSR beside a certificate) on
    /// disk where the tree has it, with `mode` and the owner of the file `like` of the view.
    pub fn new_file(&self, rel: &str, bytes: &[u8], mode: u32, like: &str) -> Result<FileWrite, String> {
        let real = match &self.origin {
            Origin::Host(m) => m.real(rel),
            Origin::Dir(d) => Some(d.join(rel)),
            Origin::Tarball(_) => None,
        }
        .ok_or_else(|| format!("{} is not on disk", self.show(rel)))?;
        let f = self.files.get(like).ok_or_else(|| format!("{} is not a file of the tree", self.show(like)))?;
        Ok(FileWrite { rel: rel.to_string(), real, bytes: Zeroizing::new(bytes.to_vec()), mode, uid: f.uid, gid: f.gid })
    }

    /// Applies `changes` to the view in memory (what a tarball packed afterwards holds).
    pub fn apply(&mut self, changes: &BTreeMap<String, Vec<u8>>) {
        for (rel, bytes) in changes {
            if let Some(f) = self.files.get_mut(rel) {
                f.bytes = Zeroizing::new(bytes.clone());
            }
        }
    }
}

/// Replaces `w.real` atomically: a temporary file beside it gets the bytes, the mode and the
/// owner, is synced and renamed over it. A symbolic link to it is left as it is.
pub fn replace(w: &FileWrite, temp: &dyn Fn(&Path) -> std::io::Result<Box<dyn TempFile>>) -> Result<(), String> {
    use std::io::Write;
    let words = |e: std::io::Error| crate::util::io_words(&e);
    let mut tmp = temp(&w.real).map_err(words)?;
    let f = tmp.file();
    f.write_all(&w.bytes).map_err(words)?;
    let meta = f.metadata().map_err(words)?;
    if meta.uid() != w.uid || meta.gid() != w.gid {
        std::os::unix::fs::fchown(&*f, Some(w.uid), Some(w.gid))
            .map_err(|e| format!("cannot keep its owner {}:{}: {}", w.uid, w.gid, crate::util::io_words(&e)))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(w.mode)).map_err(words)?;
    f.sync_all().map_err(words)?;
    tmp.persist(&w.real).map_err(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths_resolve_like_the_node() {
        assert_eq!(node_path("etc/kubernetes/kubelet.conf", "/var/lib/kubelet/pki/x.pem").as_deref(), Some("var/lib/kubelet/pki/x.pem"));
        assert_eq!(node_path("etc/kubernetes/kubelet.conf", "pki/a.crt").as_deref(), Some("etc/kubernetes/pki/a.crt"));
        assert_eq!(node_path("etc/kubernetes/kubelet.conf", "../../x").as_deref(), Some("x"));
        assert_eq!(node_path("etc/a.conf", "../../../x"), None);
    }

    #[test]
    fn links_are_followed_and_writes_replace_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/kubernetes/pki")).unwrap();
        std::fs::create_dir_all(root.join("var/lib/kubelet/pki")).unwrap();
        std::fs::write(root.join("etc/kubernetes/pki/ca-2026.crt"), b"ca").unwrap();
        std::os::unix::fs::symlink("ca-2026.crt", root.join("etc/kubernetes/pki/ca.crt")).unwrap();
        std::fs::write(root.join("var/lib/kubelet/pki/kubelet-client-2026.pem"), b"pem").unwrap();
        std::os::unix::fs::symlink(
            "/var/lib/kubelet/pki/kubelet-client-2026.pem",
            root.join("var/lib/kubelet/pki/kubelet-client-current.pem"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/nonexistent/elsewhere.crt", root.join("etc/kubernetes/pki/apiserver.crt")).unwrap();
        // Out of the root: reported as outside (and skipped by the commands).
        std::os::unix::fs::symlink("../../../../x/fp.crt", root.join("etc/kubernetes/pki/front-proxy-client.crt")).unwrap();
        let tree = NodeTree::read_host(Mount::root(root), None, &layout::builtin_profiles()).unwrap();
        assert_eq!(tree.layout.profile, "kubeadm");
        let ca = tree.get("etc/kubernetes/pki/ca.crt").unwrap();
        assert_eq!(&*ca.bytes, b"ca");
        assert_eq!(ca.real.as_deref(), Some(root.join("etc/kubernetes/pki/ca-2026.crt").as_path()));
        let rotated = tree.get("var/lib/kubelet/pki/kubelet-client-current.pem").unwrap();
        assert_eq!(rotated.why, Why::KubeletRotated);
        assert_eq!(rotated.real.as_deref(), Some(root.join("var/lib/kubelet/pki/kubelet-client-2026.pem").as_path()));
        assert!(
            tree.problems.iter().any(|(p, why)| p == "etc/kubernetes/pki/apiserver.crt" && why.contains("cannot be read")),
            "{:?}",
            tree.problems
        );
        assert!(!tree.outside.contains("etc/kubernetes/pki/apiserver.crt"), "an absolute link resolves under the root");
        assert!(tree.outside.contains("etc/kubernetes/pki/front-proxy-client.crt"), "{:?}", tree.problems);

        struct Plain(std::fs::File, PathBuf);
        impl TempFile for Plain {
            fn file(&mut self) -> &mut std::fs::File {
                &mut self.0
            }
            fn persist(self: Box<Self>, to: &Path) -> std::io::Result<()> {
                std::fs::rename(&self.1, to)
            }
        }
        let temp = |p: &Path| -> std::io::Result<Box<dyn TempFile>> {
            let t = p.with_extension("tmp");
            Ok(Box::new(Plain(std::fs::File::create(&t)?, t)))
        };
        let changes = BTreeMap::from([("etc/kubernetes/pki/ca.crt".to_string(), b"new".to_vec())]);
        for w in tree.writes(&changes).unwrap() {
            replace(&w, &temp).unwrap();
        }
        assert!(std::fs::symlink_metadata(root.join("etc/kubernetes/pki/ca.crt")).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(root.join("etc/kubernetes/pki/ca-2026.crt")).unwrap(), b"new");
    }
}
