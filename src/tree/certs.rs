//! Every certificate a node tree holds, named by the catalogue: each leaf where the layout (or
//! the kubeconfig that uses it) puts it — a certificate file, a kubeconfig's embedded
//! `client-certificate-data`, or the file its `client-certificate` names — and each CA. On a live
//! host the kubelet's rotated certificates are marked as such. `certs check-expiration` lists
//! these; `certs renew` re-issues them.

use crate::pki::catalog::{self, CertEntry};
use crate::tree::kubeconfig::{decode, Kubeconfig};
use crate::tree::node::{node_path, NodeTree, Why, KUBELET_PKI};

/// The CAs, in kubeadm's order.
pub const CAS: [&str; 3] = ["ca", "etcd-ca", "front-proxy-ca"];

/// kubeadm's own `certs check-expiration` names, in its (alphabetical) order; the catalogue's
/// other leaves follow in its order.
const KUBEADM_ORDER: [&str; 11] = [
    "admin.conf",
    "apiserver",
    "apiserver-etcd-client",
    "apiserver-kubelet-client",
    "controller-manager.conf",
    "etcd-healthcheck-client",
    "etcd-peer",
    "etcd-server",
    "front-proxy-client",
    "scheduler.conf",
    "super-admin.conf",
];

/// Leaf names in the order they are listed.
pub fn leaf_order() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = KUBEADM_ORDER.to_vec();
    v.extend(catalog::CERTS.iter().filter(|c| !c.is_ca() && !KUBEADM_ORDER.contains(&c.id)).map(|c| c.id));
    v
}

/// Where a certificate is in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A certificate file (its key beside it, when the tree holds it; the same file for the
    /// kubelet's combined `.pem`).
    File { crt: String, key: Option<String> },
    /// `client-certificate-data` of a kubeconfig.
    Embedded { conf: String },
    /// The files a kubeconfig's `client-certificate` / `client-key` name.
    Referenced { conf: String, crt: String, key: Option<String> },
    /// It should be here but cannot be read: the file and why.
    Broken { path: String, why: String },
}

impl Place {
    /// The file holding the certificate (the kubeconfig for embedded data).
    pub fn path(&self) -> &str {
        match self {
            Place::File { crt, .. } | Place::Referenced { crt, .. } => crt,
            Place::Embedded { conf } => conf,
            Place::Broken { path, .. } => path,
        }
    }
}

/// One certificate of the tree.
#[derive(Debug, Clone)]
pub struct Site {
    /// kubeadm's name (`apiserver`, `admin.conf`, `ca`), or `kubelet-client` / `kubelet-serving`
    /// for the kubelet's rotated certificates that no kubeconfig names.
    pub name: String,
    pub entry: Option<&'static CertEntry>,
    /// The CA that signs it: None for a CA and for the kubelet's self-signed serving certificate.
    pub ca: Option<&'static str>,
    pub is_ca: bool,
    pub place: Place,
    /// The kubelet rotates it itself (`/var/lib/kubelet/pki`).
    pub rotated: bool,
}

fn rotated_path(p: &str) -> bool {
    p.strip_prefix(KUBELET_PKI).is_some_and(|r| r.starts_with('/'))
}

impl NodeTree {
    /// Every certificate of the tree: leaves in kubeadm's order then the catalogue's, then the
    /// kubelet's own rotated ones no kubeconfig names; CAs last.
    pub fn certificates(&self) -> Vec<Site> {
        let mut sites: Vec<Site> = Vec::new();
        let problem = |p: &str| self.problems.iter().find(|(q, _)| q == p).map(|(_, why)| why.clone());
        for name in leaf_order() {
            let Some(entry) = catalog::cert(name) else { continue };
            let crt_art = format!("{name}.crt");
            let key_art = format!("{name}.key");
            let conf = catalog::kubeconfig(name)
                .and_then(|_| self.layout.paths_of(name).find(|p| self.files.contains_key(*p) || problem(p).is_some()));
            let place = if let Some(conf) = conf {
                self.kubeconfig_place(conf, problem(conf))
            } else if let Some((crt, _)) = self.artifact(&crt_art) {
                Place::File { crt: crt.to_string(), key: self.artifact(&key_art).map(|(k, _)| k.to_string()) }
            } else if let Some((p, why)) = self.layout.paths_of(&crt_art).find_map(|p| problem(p).map(|w| (p, w))) {
                Place::Broken { path: p.to_string(), why }
            } else {
                continue;
            };
            // kubelet.conf naming the kubelet's rotated pair (kubelet-client-current.pem).
            let rotated = matches!(&place, Place::Referenced { crt, .. } if rotated_path(crt));
            let mut site = Site { name: name.to_string(), entry: Some(entry), ca: entry.signer.ca_id(), is_ca: false, place, rotated };
            // The kubelet's self-signed serving certificate (a kubeadm node's /var/lib/kubelet/pki/kubelet.crt).
            if name == "kubelet-serving" && self.self_signed(site.place.path()) {
                site.ca = None;
                site.rotated = true;
            }
            sites.push(site);
        }
        // The kubelet's own rotated certificates no kubeconfig (and no layout line) names.
        let named: Vec<String> = sites.iter().map(|s| s.place.path().to_string()).collect();
        for (rel, _) in self.files.iter().filter(|(_, f)| f.why == Why::KubeletRotated) {
            if named.contains(rel) {
                continue;
            }
            let serving = !rel.ends_with("kubelet-client-current.pem");
            let name = if serving { "kubelet-serving" } else { "kubelet-client" };
            let self_signed = self.self_signed(rel);
            let key = if rel.ends_with(".pem") {
                Some(rel.clone())
            } else {
                Some(rel.replace(".crt", ".key")).filter(|k| self.files.contains_key(k))
            };
            sites.push(Site {
                name: name.to_string(),
                entry: catalog::cert(if serving { "kubelet-serving" } else { "kubelet.conf" }),
                ca: (!self_signed).then_some("ca"),
                is_ca: false,
                place: Place::File { crt: rel.clone(), key },
                rotated: true,
            });
        }
        for ca in CAS {
            let crt_art = format!("{ca}.crt");
            let place = if let Some((crt, _)) = self.artifact(&crt_art) {
                Place::File { crt: crt.to_string(), key: self.artifact(&format!("{ca}.key")).map(|(k, _)| k.to_string()) }
            } else if let Some((p, why)) = self.layout.paths_of(&crt_art).find_map(|p| problem(p).map(|w| (p, w))) {
                Place::Broken { path: p.to_string(), why }
            } else {
                continue;
            };
            sites.push(Site { name: ca.to_string(), entry: catalog::cert(ca), ca: None, is_ca: true, place, rotated: false });
        }
        sites
    }

    fn self_signed(&self, rel: &str) -> bool {
        let Some(f) = self.files.get(rel) else { return false };
        let Some(block) = pem::parse_many(&f.bytes[..]).ok().and_then(|v| v.into_iter().find(|b| b.tag() == "CERTIFICATE")) else {
            return false;
        };
        x509_parser::parse_x509_certificate(block.contents()).is_ok_and(|(_, c)| c.issuer() == c.subject() && !c.is_ca())
    }

    fn kubeconfig_place(&self, conf: &str, problem: Option<String>) -> Place {
        let broken = |why: String| Place::Broken { path: conf.to_string(), why };
        if let Some(why) = problem {
            return broken(why);
        }
        let Some(f) = self.files.get(conf) else { return broken("missing".into()) };
        let doc = match Kubeconfig::parse(&f.bytes) {
            Ok(d) => d,
            Err(e) => return broken(e),
        };
        let Some(user) = doc.current_user() else { return broken("the kubeconfig has no user".into()) };
        match decode("client-certificate-data", user.client_certificate_data.as_deref()) {
            Ok(Some(_)) => return Place::Embedded { conf: conf.to_string() },
            Ok(None) => {}
            Err(e) => return broken(e),
        }
        let Some(file) = user.client_certificate.as_deref().filter(|f| !f.is_empty()) else {
            return broken("the kubeconfig's user has no client certificate (client-certificate-data or client-certificate)".into());
        };
        let Some(crt) = node_path(conf, file) else {
            return broken(format!("client-certificate {file:?} is not a path kubebundle can follow"));
        };
        if !self.files.contains_key(&crt) {
            let why = self.problems.iter().find(|(p, _)| *p == crt).map(|(_, w)| w.clone()).unwrap_or_else(|| "missing".into());
            return Place::Broken { path: crt.clone(), why: format!("client-certificate {}: {why}", self.show(&crt)) };
        }
        let key =
            user.client_key.as_deref().filter(|k| !k.is_empty()).and_then(|k| node_path(conf, k)).filter(|k| self.files.contains_key(k));
        Place::Referenced { conf: conf.to_string(), crt, key }
    }

    /// The PEM text of a site's certificate (its first CERTIFICATE block is the certificate).
    pub fn cert_pem(&self, site: &Site) -> Result<Vec<u8>, String> {
        match &site.place {
            Place::File { crt, .. } | Place::Referenced { crt, .. } => {
                self.files.get(crt).map(|f| f.bytes.to_vec()).ok_or_else(|| format!("{} is missing", self.show(crt)))
            }
            Place::Embedded { conf } => {
                let f = self.files.get(conf).ok_or_else(|| format!("{} is missing", self.show(conf)))?;
                let doc = Kubeconfig::parse(&f.bytes)?;
                let user = doc.current_user().ok_or("the kubeconfig has no user")?;
                decode("client-certificate-data", user.client_certificate_data.as_deref())?
                    .ok_or_else(|| "no client-certificate-data".into())
            }
            Place::Broken { why, .. } => Err(why.clone()),
        }
    }

    /// Where the layout keeps the key of CA `ca` on this node, and whether it is there.
    pub fn ca_key(&self, ca: &str) -> CaKey {
        let artifact = format!("{ca}.key");
        if let Some((p, _)) = self.artifact(&artifact) {
            return CaKey::Here(p.to_string());
        }
        match self.layout.keeps(&artifact, &self.roles()) {
            Some(p) => CaKey::Absent(p.to_string()),
            None => CaKey::OffNode { on_other_nodes: self.layout.path_of(&artifact).is_some() },
        }
    }
}

/// Where a CA's key is, as seen from one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaKey {
    /// In the tree, at this path.
    Here(String),
    /// The layout keeps it at this path on such a node, and it is not there: the CA is
    /// externally managed (kubeadm's rule).
    Absent(String),
    /// The layout keeps it off this node: on nodes of other roles (a CA key on a worker), or on
    /// no node at all, only in a bundle's state (hardway's front-proxy-ca and etcd-ca).
    OffNode { on_other_nodes: bool },
}
