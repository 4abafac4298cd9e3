//! Which artifact sits at which path on one node: a profile resolved for that node (`{pki}` is
//! certificatesDir, `{node}` its name), taken from a bundle's plan.json (exact: the files the
//! node holds), from `--profile FILE`, or recognised by matching the built-in profiles against
//! what a tree holds. Reading and writing a node both go through it.

use std::collections::BTreeSet;

use crate::tree::profile::{parse_mode, Profile};

/// The certificatesDir of kubeadm (and of every profile, unless a kubeadm config says otherwise).
pub const DEFAULT_PKI: &str = "etc/kubernetes/pki";

/// One file of a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub artifact: String,
    /// Relative to the node's root, `{pki}` and `{node}` resolved.
    pub path: String,
    pub mode: u32,
    /// The roles that receive it (empty when taken from plan.json: the node holds it).
    pub roles: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Layout {
    /// The profile's name (`kubeadm`, `hardway`, `binary`, or a profile file's own).
    pub profile: String,
    /// certificatesDir without its leading slash.
    pub pki: String,
    /// The node's name, when known (`{node}` paths need it).
    pub node: Option<String>,
    pub entries: Vec<Entry>,
    /// Taken from plan.json: exactly the files this node holds.
    pub exact: bool,
}

/// The roles of a node, as its files prove them.
pub type Roles = BTreeSet<String>;

impl Layout {
    /// Every file `profile` places, for any role; `{node}` entries only when `node` is known.
    pub fn of_profile(profile: &Profile, pki: &str, node: Option<&str>) -> Layout {
        let entries = profile
            .files
            .iter()
            .filter(|f| node.is_some() || !f.path.contains("{node}"))
            .map(|f| Entry {
                artifact: f.artifact.clone(),
                path: f.path.replace("{pki}", pki).replace("{node}", node.unwrap_or_default()),
                mode: parse_mode(&f.mode).unwrap_or(0o600),
                roles: f.roles.clone(),
            })
            .collect();
        Layout { profile: profile.name.clone(), pki: pki.to_string(), node: node.map(str::to_string), entries, exact: false }
    }

    /// A node's files as plan.json lists them: (artifact, path, mode).
    pub fn exact(profile: &str, pki: &str, node: &str, files: impl IntoIterator<Item = (String, String, u32)>) -> Layout {
        let entries = files.into_iter().map(|(artifact, path, mode)| Entry { artifact, path, mode, roles: Vec::new() }).collect();
        Layout { profile: profile.to_string(), pki: pki.to_string(), node: Some(node.to_string()), entries, exact: true }
    }

    /// Where the layout puts `artifact` (the first line that places it).
    pub fn path_of(&self, artifact: &str) -> Option<&str> {
        self.entries.iter().find(|e| e.artifact == artifact).map(|e| e.path.as_str())
    }

    /// Every path the layout gives `artifact` (one per line that places it).
    pub fn paths_of<'a>(&'a self, artifact: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries.iter().filter(move |e| e.artifact == artifact).map(|e| e.path.as_str())
    }

    pub fn entry_at(&self, path: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.path == path)
    }

    /// Where the layout keeps `artifact` on a node of `roles`: None when it keeps it off such a
    /// node (a CA key on a worker, or one no line places, such as hardway's front-proxy-ca.key).
    pub fn keeps(&self, artifact: &str, roles: &Roles) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.artifact == artifact && (self.exact || e.roles.iter().any(|r| roles.contains(r))))
            .map(|e| e.path.as_str())
    }

    /// The node's roles as the files it holds prove them: an API server certificate makes a
    /// control plane, an etcd server certificate an etcd member; a node with neither is a worker.
    pub fn roles(&self, holds: impl Fn(&str) -> bool) -> Roles {
        let mut roles = Roles::new();
        let has = |artifact: &str| self.paths_of(artifact).any(&holds);
        if has("apiserver.crt") || has("kube-apiserver.service") {
            roles.insert("control-plane".to_string());
        }
        if has("etcd-server.crt") || has("etcd.service") {
            roles.insert("etcd".to_string());
        }
        if roles.is_empty() {
            roles.insert("worker".to_string());
        }
        roles
    }

    /// Runs its units under systemd (hardway, binary), rather than kubeadm's static pods.
    pub fn systemd(&self) -> bool {
        self.entries.iter().any(|e| e.artifact.ends_with(".service"))
    }
}

/// What a tree must offer for its layout to be recognised.
pub trait Probe {
    /// Something is at `rel` (a dangling link counts: reading it will say why it fails).
    fn exists(&self, rel: &str) -> bool;
    /// The bytes of the file at `rel` (small files only), if it can be read.
    fn read(&self, rel: &str) -> Option<Vec<u8>>;
    /// The names in the directory `rel`.
    fn list(&self, rel: &str) -> Vec<String>;
}

/// A tree that matches no layout: what it holds and what each layout expects.
#[derive(Debug, Clone)]
pub struct Unrecognised {
    pub found: Vec<String>,
    pub expected: Vec<(String, Vec<String>)>,
}

impl std::fmt::Display for Unrecognised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let found = if self.found.is_empty() { "nothing a layout names".to_string() } else { self.found.join(", ") };
        write!(f, "it matches no layout: found {found}; ")?;
        let expected: Vec<String> = self.expected.iter().map(|(name, paths)| format!("{name} expects {}", paths.join(", "))).collect();
        write!(f, "{}", expected.join("; "))
    }
}

/// certificatesDir of a kubeadm tree: what a ClusterConfiguration in the tree says
/// (kubeadm-init.yaml, which kubebundle ships, or a kubeadm config kept beside the kubeconfigs),
/// else the directory of kube-apiserver's `--client-ca-file` in its static pod, else
/// etc/kubernetes/pki.
pub fn certificates_dir(probe: &dyn Probe) -> String {
    for file in ["etc/kubernetes/kubeadm-init.yaml", "etc/kubernetes/kubeadm-config.yaml", "etc/kubernetes/kubeadm.yaml"] {
        let Some(bytes) = probe.read(file) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        let found = text.lines().find_map(|l| l.trim().strip_prefix("certificatesDir:").map(|v| unquote(v.trim()).to_string()));
        if let Some(dir) = found.map(|d| d.trim_matches('/').to_string()).filter(|d| !d.is_empty() && safe(d)) {
            return dir;
        }
    }
    if let Some(bytes) = probe.read("etc/kubernetes/manifests/kube-apiserver.yaml") {
        let text = String::from_utf8_lossy(&bytes);
        let flag =
            text.split_whitespace().find_map(|w| unquote(w.trim_start_matches("- ")).strip_prefix("--client-ca-file=").map(String::from));
        if let Some(dir) =
            flag.and_then(|f| f.rsplit_once('/').map(|(d, _)| d.trim_matches('/').to_string())).filter(|d| !d.is_empty() && safe(d))
        {
            return dir;
        }
    }
    DEFAULT_PKI.to_string()
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\''))).unwrap_or(v)
}

/// A relative path without `.`, `..` or empty parts.
pub fn safe(rel: &str) -> bool {
    !rel.starts_with('/') && rel.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The node a `{node}` profile names: a `<name>.crt` beside where `{node}` files go whose
/// certificate is `system:node:<name>` (the kubelet's serving certificate).
fn node_name(profile: &Profile, pki: &str, probe: &dyn Probe) -> Option<String> {
    let mut dirs: Vec<String> = profile
        .files
        .iter()
        .filter(|f| f.path.contains("{node}"))
        .filter_map(|f| f.path.replace("{pki}", pki).rsplit_once('/').map(|(d, _)| d.to_string()))
        .filter(|d| !d.contains("{node}"))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        let mut names = probe.list(&dir);
        names.sort();
        for name in names {
            let Some(stem) = name.strip_suffix(".crt") else { continue };
            let Some(bytes) = probe.read(&format!("{dir}/{name}")) else { continue };
            if common_name(&bytes).is_some_and(|cn| cn == format!("system:node:{stem}")) {
                return Some(stem.to_string());
            }
        }
    }
    None
}

/// The CN of the first certificate of a PEM file.
pub fn common_name(pem_bytes: &[u8]) -> Option<String> {
    let block = pem::parse_many(pem_bytes).ok()?.into_iter().find(|b| b.tag() == "CERTIFICATE")?;
    let (_, cert) = x509_parser::parse_x509_certificate(block.contents()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

/// The built-in profiles, in the order a tie is decided.
pub fn builtin_profiles() -> Vec<Profile> {
    crate::tree::profile::BUILTIN.iter().filter_map(|(name, _)| Profile::builtin(name).ok()).collect()
}

/// The layout of the tree `probe` shows: of the candidate profiles (the built-in ones, or the one
/// `--profile` names), the one most of whose paths are there. A tree holding none of any is
/// refused with what it holds and what each layout expects.
pub fn recognise(probe: &dyn Probe, candidates: &[Profile]) -> Result<Layout, Unrecognised> {
    let pki = certificates_dir(probe);
    let mut best: Option<(usize, Layout)> = None;
    for profile in candidates {
        let node = profile.files.iter().any(|f| f.path.contains("{node}")).then(|| node_name(profile, &pki, probe)).flatten();
        let layout = Layout::of_profile(profile, &pki, node.as_deref());
        let hits = layout.entries.iter().filter(|e| probe.exists(&e.path)).count();
        if hits > 0 && best.as_ref().is_none_or(|(b, _)| hits > *b) {
            best = Some((hits, layout));
        }
    }
    best.map(|(_, l)| l).ok_or_else(|| unrecognised(probe, candidates, &pki))
}

fn unrecognised(probe: &dyn Probe, candidates: &[Profile], pki: &str) -> Unrecognised {
    let mut found: Vec<String> = Vec::new();
    for dir in ["", "etc"] {
        let mut names = probe.list(dir);
        if names.is_empty() {
            continue;
        }
        names.sort();
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let shown: Vec<String> = names.iter().take(6).map(|n| format!("{prefix}{n}")).collect();
        let more = if names.len() > 6 { format!(" and {} more", names.len() - 6) } else { String::new() };
        found.push(format!("{}{more}", shown.join(", ")));
    }
    let expected = candidates
        .iter()
        .map(|p| {
            let layout = Layout::of_profile(p, pki, Some("<node>"));
            // The CA certificate and a few files that say which layout it is.
            let mut paths: Vec<String> = ["ca.crt", "kubelet.conf", "admin.conf", "kubelet-serving.crt"]
                .iter()
                .filter_map(|a| layout.path_of(a).map(str::to_string))
                .collect();
            paths.dedup();
            (p.name.clone(), paths)
        })
        .collect();
    Unrecognised { found, expected }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Files(BTreeMap<String, Vec<u8>>);

    impl Probe for Files {
        fn exists(&self, rel: &str) -> bool {
            self.0.contains_key(rel)
        }
        fn read(&self, rel: &str) -> Option<Vec<u8>> {
            self.0.get(rel).cloned()
        }
        fn list(&self, rel: &str) -> Vec<String> {
            let prefix = if rel.is_empty() { String::new() } else { format!("{rel}/") };
            let mut v: Vec<String> = self
                .0
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .map(|k| k.split('/').next().unwrap_or_default().to_string())
                .collect();
            v.dedup();
            v
        }
    }

    fn files(paths: &[&str]) -> Files {
        Files(paths.iter().map(|p| (p.to_string(), Vec::new())).collect())
    }

    #[test]
    fn each_layout_is_recognised_by_its_own_paths() {
        let all = builtin_profiles();
        let kubeadm = files(&["etc/kubernetes/pki/ca.crt", "etc/kubernetes/bootstrap-kubelet.conf", "var/lib/kubelet/pki/kubelet.crt"]);
        assert_eq!(recognise(&kubeadm, &all).unwrap().profile, "kubeadm");
        let hardway = files(&["etc/k8s/shared/ca.crt", "etc/k8s/kubelet/bootstrap-kubeconfig"]);
        assert_eq!(recognise(&hardway, &all).unwrap().profile, "hardway");
        let binary = files(&["etc/kubernetes/pki/ca.crt", "etc/kubernetes/kube-proxy.kubeconfig", "etc/kubernetes/kubelet-config.yaml"]);
        assert_eq!(recognise(&binary, &all).unwrap().profile, "binary");
        let none = files(&["etc/hostname", "usr/bin/true"]);
        let e = recognise(&none, &all).unwrap_err().to_string();
        assert!(e.contains("found etc, usr") && e.contains("etc/hostname") && e.contains("hardway expects etc/k8s/shared/ca.crt"), "{e}");
    }

    #[test]
    fn certificates_dir_comes_from_the_cluster_configuration() {
        let mut f = files(&[]);
        assert_eq!(certificates_dir(&f), DEFAULT_PKI);
        f.0.insert("etc/kubernetes/kubeadm-init.yaml".into(), b"kind: ClusterConfiguration\ncertificatesDir: \"/srv/pki\"\n".to_vec());
        assert_eq!(certificates_dir(&f), "srv/pki");
        let mut g = files(&[]);
        g.0.insert(
            "etc/kubernetes/manifests/kube-apiserver.yaml".into(),
            b"spec:\n  containers:\n  - command:\n    - --client-ca-file=/opt/k/pki/ca.crt\n".to_vec(),
        );
        assert_eq!(certificates_dir(&g), "opt/k/pki");
    }
}
