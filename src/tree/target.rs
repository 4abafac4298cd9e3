//! What a `--dir` names: a bundle, one node tree inside a bundle, or a host (`/`, an extracted
//! root, `/etc/kubernetes` or `/etc/k8s` with the root found above them, a kubeadm directory of
//! kubeconfigs with `pki/` inside, or a certificatesDir alone).

use std::path::{Path, PathBuf};

use crate::tree::bundle::{bundle_of_node, is_bundle};
use crate::tree::layout::DEFAULT_PKI;
use crate::tree::node::Mount;

#[derive(Debug, Clone)]
pub enum Target {
    /// `OUT/<cluster>`.
    Bundle(PathBuf),
    /// `OUT/<cluster>/nodes/<node>` (an unpacked node), or a directory below it.
    BundleNode { bundle: PathBuf, name: String, dir: PathBuf },
    /// Anything else: its files are read where the layout puts them.
    Host(Mount),
}

/// The directories a node's layouts start in.
const ROOT_MARKS: [&str; 3] = ["etc/kubernetes", "etc/k8s", "var/lib/kubelet"];

/// Where the node's root is for a directory that ends in etc/kubernetes, etc/k8s or
/// etc/kubernetes/pki: kept as written when the path plainly ends so, else the real one's.
fn root_above(dir: &Path) -> Option<PathBuf> {
    for (tail, up) in [("etc/kubernetes", 2), ("etc/k8s", 2), ("etc/kubernetes/pki", 3)] {
        if dir.ends_with(tail) {
            return dir.ancestors().nth(up).map(|p| if p.as_os_str().is_empty() { PathBuf::from(".") } else { p.to_path_buf() });
        }
    }
    let canon = std::fs::canonicalize(dir).ok()?;
    if canon != dir {
        return root_above(&canon);
    }
    None
}

/// Which kind of tree `dir` is (it exists and is a directory).
pub fn locate(dir: &Path) -> Target {
    if is_bundle(dir) {
        return Target::Bundle(dir.to_path_buf());
    }
    let root = if ROOT_MARKS.iter().any(|m| dir.join(m).is_dir()) { Some(dir.to_path_buf()) } else { root_above(dir) };
    if let Some(root) = root {
        if let Some((bundle, name)) = bundle_of_node(&root) {
            return Target::BundleNode { bundle, name, dir: root };
        }
        return Target::Host(Mount::root(&root));
    }
    if dir.join("pki").is_dir() {
        // A kubeadm directory of kubeconfigs (a copy of /etc/kubernetes, a bundle's state/).
        return Target::Host(Mount { prefix: "etc/kubernetes".into(), dir: dir.to_path_buf() });
    }
    let certs = ["ca.crt", "apiserver.crt", "etcd/ca.crt", "front-proxy-ca.crt"];
    if certs.iter().any(|c| std::fs::symlink_metadata(dir.join(c)).is_ok()) {
        // A certificatesDir alone.
        return Target::Host(Mount { prefix: DEFAULT_PKI.into(), dir: dir.to_path_buf() });
    }
    Target::Host(Mount::root(dir))
}
