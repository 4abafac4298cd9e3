//! Config + Profile → Plan: every artifact each node receives, with resolved subjects and SANs.
//! The plan holds no secrets; `kubebundle plan` prints it and tests snapshot it.

use serde::Serialize;

use serde::Deserialize;

use crate::bundle::sans;
use crate::bundle::state::cluster::{self, EtcdMember};
use crate::config::{Config, Discovery, Node, WorkerJoin};
use crate::pki::catalog::{self, CertEntry, CommonName, Scope, ServerRule};
use crate::pki::issue::CertSpec;
use crate::tree::profile::{self, Artifact, Profile};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub cluster_name: String,
    pub kubernetes_version: String,
    pub control_plane_endpoint: String,
    pub encryption_algorithm: &'static str,
    pub profile: String,
    pub bind_port: u16,
    pub certificates_dir: String,
    /// `local` or `external`.
    pub etcd: &'static str,
    pub discovery: Discovery,
    /// The control plane that runs `kubeadm init` and holds super-admin.conf (kept in
    /// state/cluster.yaml: a later run keeps it whatever the Inventory's order).
    pub init_node: String,
    /// The local etcd members and how each one's unit starts etcd (kept in state/cluster.yaml).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub etcd_members: Vec<EtcdMember>,
    /// The CAs, kept in the state.
    pub certificate_authorities: Vec<CertSpec>,
    pub nodes: Vec<NodePlan>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePlan {
    pub name: String,
    pub address: String,
    pub roles: Vec<&'static str>,
    pub files: Vec<PlannedFile>,
    /// What the node's JoinConfiguration says, but the token: kept in plan.json so that
    /// `token create|delete` can re-render it when the join token changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinPlan>,
    /// Artifact id → absolute path the profile gives it for this node's roles, also for files
    /// the node does not receive (a kubelet writes its kubeconfig there after TLS bootstrap).
    #[serde(skip)]
    pub layout: std::collections::BTreeMap<String, String>,
}

/// A node's `kubeadm join --config` file, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinPlan {
    pub api_version: String,
    pub node_name: String,
    pub advertise_address: String,
    pub bind_port: u16,
    pub control_plane: bool,
    /// host:port of the controlPlaneEndpoint.
    pub api_server_endpoint: String,
    /// Absolute path of the cluster CA on the node.
    pub ca_cert_path: String,
    /// Absolute path of discovery.conf with file discovery; token discovery otherwise.
    pub discovery_file: Option<String>,
    /// kubeadm's `--patches` directory, when the node has a patch.
    pub patches_dir: Option<String>,
    /// kubeadm's FileAvailable checks on files the tarball already ships.
    pub ignore_preflight_errors: Vec<String>,
}

/// Where each node of a bundle keeps each artifact, from its plan.json: node name → artifact
/// id → absolute path under the node's root (`root_of(name)`, the node's tree). None when the
/// bundle has no readable plan (`certs` then falls back to kubeadm's layout).
pub fn bundle_layouts(
    bundle: &std::path::Path,
    root_of: impl Fn(&str) -> Option<std::path::PathBuf>,
) -> Option<std::collections::BTreeMap<String, std::collections::BTreeMap<String, std::path::PathBuf>>> {
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("plan.json")).ok()?).ok()?;
    let mut out = std::collections::BTreeMap::new();
    for node in plan["nodes"].as_array()? {
        let name = node["name"].as_str()?.to_string();
        let Some(root) = root_of(&name) else { continue };
        let files = node["files"]
            .as_array()?
            .iter()
            .filter_map(|f| Some((f["artifact"].as_str()?.to_string(), root.join(f["path"].as_str()?))))
            .collect();
        out.insert(name, files);
    }
    Some(out)
}

/// The node names a bundle's plan.json lists (None without a readable plan).
pub fn bundle_node_names(bundle: &std::path::Path) -> Option<std::collections::BTreeSet<String>> {
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("plan.json")).ok()?).ok()?;
    Some(plan["nodes"].as_array()?.iter().filter_map(|n| n["name"].as_str().map(str::to_string)).collect())
}

/// The kubeadm config API a Kubernetes minor reads.
pub fn kubeadm_api_version(minor: u32) -> &'static str {
    if minor >= 31 {
        "kubeadm.k8s.io/v1beta4"
    } else if minor >= 22 {
        "kubeadm.k8s.io/v1beta3"
    } else {
        "kubeadm.k8s.io/v1beta2"
    }
}

/// Files `kubeadm join` refuses to find (preflight FileAvailable) unless told to ignore them.
const KUBEADM_JOIN_CHECKED: [&str; 2] = ["etc/kubernetes/kubelet.conf", "etc/kubernetes/bootstrap-kubelet.conf"];

impl NodePlan {
    /// The absolute path of an artifact on this node.
    pub fn path_of(&self, artifact: &str) -> Option<String> {
        self.files.iter().find(|f| f.artifact == artifact).map(|f| format!("/{}", f.path))
    }
}

fn join_plan(config: &Config, node: &Node, files: &[PlannedFile]) -> Option<JoinPlan> {
    let abs = |id: &str| files.iter().find(|f| f.artifact == id).map(|f| format!("/{}", f.path));
    abs("kubeadm-join")?;
    let ca_cert_path = abs("ca.crt").unwrap_or_else(|| format!("{}/ca.crt", config.certificates_dir));
    let cp = node.roles.control_plane;
    let mut checked: Vec<String> = KUBEADM_JOIN_CHECKED.iter().map(|p| format!("/{p}")).collect();
    if !cp {
        checked.push(ca_cert_path.clone());
    }
    let ignore_preflight_errors = checked
        .iter()
        .filter(|p| files.iter().any(|f| format!("/{}", f.path) == **p))
        .map(|p| format!("FileAvailable-{}", p.replace('/', "-")))
        .collect();
    let minor = config.kubernetes_version.minor;
    Some(JoinPlan {
        api_version: kubeadm_api_version(minor).to_string(),
        node_name: node.name.clone(),
        advertise_address: node.address.to_string(),
        bind_port: config.bind_port,
        control_plane: cp,
        api_server_endpoint: config.control_plane_endpoint.host_port(),
        ca_cert_path,
        discovery_file: abs("discovery.conf").filter(|_| config.discovery == Discovery::File),
        // kubeadm reads patches from config files since v1beta3.
        patches_dir: abs("kube-apiserver-patch")
            .filter(|_| cp && minor >= 22)
            .and_then(|p| p.rsplit_once('/').map(|(dir, _)| dir.to_string())),
        ignore_preflight_errors,
    })
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedFile {
    pub path: String,
    pub mode: String,
    pub artifact: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertSpec>,
    #[serde(skip)]
    pub mode_bits: u32,
    /// The profile line it comes from (`file:line:col: files[i]`), for messages.
    #[serde(skip)]
    pub origin: String,
}

impl Plan {
    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Every leaf certificate to issue, once per (node, id), in a stable order.
    pub fn leaf_certificates(&self) -> Vec<&CertSpec> {
        let mut seen = std::collections::BTreeMap::new();
        for n in &self.nodes {
            for f in &n.files {
                if let Some(c) = f.certificate.as_ref().filter(|c| !c.is_ca) {
                    seen.entry((c.node.clone(), c.id.clone())).or_insert(c);
                }
            }
        }
        seen.into_values().collect()
    }
}

/// Does the catalogue make an entry of this scope for `node`?
pub fn in_scope(scope: Scope, node: &Node, config: &Config) -> bool {
    let cp = node.roles.control_plane;
    match scope {
        Scope::Cluster | Scope::EachNode => true,
        Scope::EachControlPlane => cp,
        Scope::FirstControlPlane => cp && node.name == config.first_control_plane().name,
        Scope::EachEtcdMember => node.roles.etcd && config.local_etcd(),
        Scope::PreIssuedKubelet => cp || config.worker_join == WorkerJoin::Certificate,
        Scope::TokenJoined => !cp && config.worker_join == WorkerJoin::Token,
        Scope::Joining => node.name != config.first_control_plane().name,
        Scope::FileDiscovery => node.name != config.first_control_plane().name && config.discovery == Discovery::File,
    }
}

fn exists(entry: &CertEntry, config: &Config) -> bool {
    config.kubernetes_version.at_least(entry.since_minor) && (!entry.local_etcd_only || config.local_etcd())
}

pub fn cert_spec(entry: &CertEntry, config: &Config, node: Option<&Node>) -> CertSpec {
    let common_name = match (entry.common_name, node) {
        (CommonName::Fixed(cn), _) => cn.to_string(),
        (CommonName::NodeName, Some(n)) => n.name.clone(),
        (CommonName::SystemNode, Some(n)) => format!("system:node:{}", n.name),
        (_, None) => String::new(),
    };
    let alt = sans::resolve(entry.sans, &common_name, config, node);
    CertSpec {
        id: entry.id.to_string(),
        node: if entry.scope == Scope::Cluster { None } else { node.map(|n| n.name.clone()) },
        organizations: entry.organizations_for(config.kubernetes_version.minor).iter().map(|s| s.to_string()).collect(),
        san_strings: alt.to_strings(),
        sans: alt,
        common_name,
        usages: entry.usages.to_vec(),
        is_ca: entry.is_ca(),
        signer: entry.signer,
        validity: if entry.is_ca() { config.ca_validity } else { config.cert_validity },
    }
}

pub fn server_url(rule: ServerRule, config: &Config, node: &Node) -> String {
    let local = || crate::config::Endpoint { host: crate::config::Host::Ip(node.address), port: config.bind_port }.url();
    match rule {
        ServerRule::Endpoint => config.control_plane_endpoint.url(),
        ServerRule::NodeLocal => local(),
        ServerRule::Kubelet if node.roles.control_plane && config.kubernetes_version.at_least(33) => local(),
        ServerRule::Kubelet => config.control_plane_endpoint.url(),
    }
}

/// A profile path on a node: `{pki}` is certificatesDir without its leading slash.
fn expand(path: &str, pki: &str, node: &Node) -> String {
    path.replace("{pki}", pki).replace("{node}", &node.name)
}

/// The etcd members of a cluster formed by this run: every etcd node of the Inventory, in order.
pub fn founding_members(config: &Config) -> Vec<EtcdMember> {
    let members: Vec<(String, String)> = config
        .nodes
        .iter()
        .filter(|n| n.roles.etcd && config.local_etcd())
        .map(|n| (n.name.clone(), cluster::peer_url(n.address)))
        .collect();
    cluster::founding(&members)
}

/// The plan of a first run: the init node is the config's, the etcd members form a new cluster.
pub fn plan(config: &Config, profile: &Profile) -> Plan {
    plan_with(config, profile, founding_members(config))
}

/// The plan with the etcd members a bundle's state decided (see `bundle::membership`).
pub fn plan_with(config: &Config, profile: &Profile, etcd_members: Vec<EtcdMember>) -> Plan {
    let pki = config.certificates_dir.trim_start_matches('/');
    let cas: Vec<CertSpec> = catalog::CERTS.iter().filter(|e| e.is_ca() && exists(e, config)).map(|e| cert_spec(e, config, None)).collect();
    let nodes = config
        .nodes
        .iter()
        .map(|node| {
            let mut files: Vec<PlannedFile> = profile
                .files
                .iter()
                .enumerate()
                .filter(|(_, f)| f.roles.iter().any(|r| node.roles.has(r)))
                .filter_map(|(i, f)| {
                    let art = profile::artifact(&f.artifact)?;
                    let (entry_ok, certificate, server) = match art {
                        Artifact::CertPem(e) | Artifact::KeyPem(e) => {
                            let ok = exists(e, config) && in_scope(e.scope, node, config);
                            let cert = matches!(art, Artifact::CertPem(_)).then(|| cert_spec(e, config, Some(node)));
                            (ok, cert, None)
                        }
                        Artifact::Kubeconfig(k) => {
                            let ok = config.kubernetes_version.at_least(k.since_minor) && in_scope(k.scope, node, config);
                            let cert = catalog::cert(k.id)
                                .filter(|_| k.credential == catalog::Credential::Certificate)
                                .map(|e| cert_spec(e, config, Some(node)));
                            (ok, cert, Some(server_url(k.server, config, node)))
                        }
                        Artifact::SaKey | Artifact::SaPub | Artifact::EncryptionConfig => (true, None, None),
                        // A rotation's files: `pipeline` keeps them only while the state holds them.
                        Artifact::SaNextPub | Artifact::SaPreviousPub | Artifact::ClusterSigningCa => (true, None, None),
                        Artifact::Rendered(r) => (in_scope(r.scope, node, config), None, None),
                    };
                    entry_ok.then(|| PlannedFile {
                        path: expand(&f.path, pki, node),
                        mode: f.mode.clone(),
                        mode_bits: profile::parse_mode(&f.mode).unwrap_or(0o600),
                        origin: match f.position {
                            Some((line, col)) => format!("{}:{line}:{col}: files[{i}]", profile.source),
                            None => format!("{}: files[{i}]", profile.source),
                        },
                        artifact: f.artifact.clone(),
                        server,
                        certificate,
                    })
                })
                .collect();
            files.sort_by(|a, b| a.path.cmp(&b.path));
            let join = join_plan(config, node, &files);
            let layout = profile
                .files
                .iter()
                .filter(|f| f.roles.iter().any(|r| node.roles.has(r)))
                .map(|f| (f.artifact.clone(), format!("/{}", expand(&f.path, pki, node))))
                .collect();
            NodePlan { name: node.name.clone(), address: node.address.to_string(), roles: node.roles.names(), files, join, layout }
        })
        .collect();
    Plan {
        cluster_name: config.cluster_name.clone(),
        kubernetes_version: config.kubernetes_version.to_string(),
        control_plane_endpoint: config.control_plane_endpoint.host_port(),
        encryption_algorithm: config.algorithm.name(),
        profile: profile.name.clone(),
        bind_port: config.bind_port,
        certificates_dir: config.certificates_dir.clone(),
        etcd: if config.local_etcd() { "local" } else { "external" },
        discovery: config.discovery,
        init_node: config.first_control_plane().name.clone(),
        etcd_members,
        certificate_authorities: cas,
        nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_default;

    fn paths(p: &Plan, node: &str) -> Vec<String> {
        p.node(node).unwrap().files.iter().map(|f| f.path.clone()).collect()
    }

    #[test]
    fn default_plan_follows_roles() {
        let c = load_default();
        let p = plan(&c, &Profile::builtin("kubeadm").unwrap());
        let cp1 = paths(&p, "cp1");
        assert!(cp1.contains(&"etc/kubernetes/super-admin.conf".to_string()));
        assert!(cp1.contains(&"etc/kubernetes/pki/etcd/peer.key".to_string()));
        assert!(!paths(&p, "cp2").contains(&"etc/kubernetes/super-admin.conf".to_string()));
        let w = paths(&p, "worker1");
        assert_eq!(
            w,
            [
                "etc/kubernetes/bootstrap-kubelet.conf",
                "etc/kubernetes/kubeadm-join.yaml",
                "etc/kubernetes/pki/ca.crt",
                "var/lib/kubelet/config.yaml",
                "var/lib/kubelet/pki/kubelet.crt",
                "var/lib/kubelet/pki/kubelet.key"
            ]
        );
        // Per control plane: apiserver, apiserver-kubelet-client, front-proxy-client, apiserver-etcd-client,
        // 3 etcd, 4 kubeconfig clients (+super-admin on cp1), kubelet serving.
        assert_eq!(p.leaf_certificates().len(), 3 * 12 + 1 + 2);
        let cm = p.node("cp2").unwrap().files.iter().find(|f| f.artifact == "controller-manager.conf").unwrap();
        assert_eq!(cm.server.as_deref(), Some("https://10.0.0.12:6443"));
    }
}
