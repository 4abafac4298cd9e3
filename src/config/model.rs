//! The validated configuration: everything later stages need, with defaults applied.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

pub use crate::pki::keys::KeyAlgorithm;
use crate::util::version::KubeVersion;

/// Kubernetes release used when the config names none. We never look one up online.
pub const PINNED_KUBERNETES_VERSION: &str = "v1.34.1";

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from, for messages ("cluster.yaml" or "<embedded default>").
    pub source: String,
    pub cluster_name: String,
    pub kubernetes_version: KubeVersion,
    /// True when `kubernetesVersion` was absent and the pinned default is used.
    pub version_defaulted: bool,
    pub control_plane_endpoint: Endpoint,
    /// True when `controlPlaneEndpoint` is not set: the endpoint is then the init node's address
    /// (as `kubeadm init` advertises it) and follows the init node.
    pub endpoint_defaulted: bool,
    pub bind_port: u16,
    /// Absolute directory, e.g. /etc/kubernetes/pki.
    pub certificates_dir: String,
    pub api_server_cert_sans: Vec<San>,
    pub service_subnets: Vec<IpNet>,
    pub pod_subnets: Vec<IpNet>,
    pub dns_domain: String,
    pub etcd: EtcdMode,
    pub algorithm: KeyAlgorithm,
    pub cert_validity: Duration,
    pub ca_validity: Duration,
    pub tokens: Vec<TokenSpec>,
    pub nodes: Vec<Node>,
    /// The control plane that runs `kubeadm init` and holds super-admin.conf, when named
    /// (`Inventory.initNode`, `generate --init-node`, or the one the bundle's state recorded);
    /// else the first control plane of the Inventory.
    pub init_node: Option<String>,
    /// What named `init_node` (`Inventory.initNode`, `--init-node`), for messages.
    pub init_node_by: Option<String>,
    /// file:line:col of the Inventory document (its `kind`), for messages about its nodes.
    pub inventory_position: Option<(u64, u64)>,
    /// A built-in profile name, or a profile file (relative to `base_dir`).
    pub profile: String,
    /// The directory of the config file, for relative paths in it.
    pub base_dir: Option<std::path::PathBuf>,
    pub worker_join: WorkerJoin,
    /// How joining nodes find the cluster: `kubeadm-join.yaml` uses token discovery (with the CA
    /// hash) or the discovery file shipped in the tarball.
    pub discovery: Discovery,
    /// The encryption-at-rest provider of the keys the state makes (`Inventory.encryptionProvider`).
    pub encryption_provider: EncryptionProvider,
    /// The exports generate writes into `export/<format>/` of the bundle (`Inventory.export`):
    /// `cloud-init`, `ignition`, each at most once, in that order.
    pub export: Vec<String>,
    /// `Inventory.exportRuncmd`: the exports run each node's first-boot step.
    pub export_runcmd: bool,
    /// `generate --seed-file`: every new key, token and secret is derived from this seed instead
    /// of the system CSPRNG (test clusters only). Never read from the config file.
    pub seed: Option<std::sync::Arc<crate::pki::derive::Seed>>,
    /// Things the run should tell the user (defaults taken, documents ignored).
    pub notes: Vec<String>,
}

impl Config {
    pub fn control_planes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.roles.control_plane)
    }

    /// The init node: the control plane that runs `kubeadm init` and holds super-admin.conf (the
    /// catalogue's FirstControlPlane scope). The one named (`init_node`), else the first control
    /// plane of the Inventory.
    pub fn first_control_plane(&self) -> &Node {
        let named = self.init_node.as_deref().and_then(|name| self.control_planes().find(|n| n.name == name));
        // validate() guarantees at least one control plane.
        named.or_else(|| self.control_planes().next()).unwrap_or(&self.nodes[0])
    }

    /// Makes the control plane `name` the init node (`by` says who named it); without a
    /// `controlPlaneEndpoint` the endpoint follows it. False when the Inventory has no control
    /// plane of that name (nothing changes then).
    pub fn set_init_node(&mut self, name: &str, by: &str) -> bool {
        let Some(node) = self.control_planes().find(|n| n.name == name) else { return false };
        if self.endpoint_defaulted {
            self.control_plane_endpoint = Endpoint { host: Host::Ip(node.address), port: self.bind_port };
        }
        self.init_node = Some(name.to_string());
        self.init_node_by = Some(by.to_string());
        true
    }

    /// file:line:col of the Inventory (or the config file alone when it has none), for messages.
    pub fn inventory_at(&self) -> String {
        match self.inventory_position {
            Some((line, col)) => format!("{}:{line}:{col}", self.source),
            None => self.source.clone(),
        }
    }

    /// The first address of the first service subnet: the `kubernetes` Service IP.
    pub fn api_service_ip(&self) -> IpAddr {
        first_host(&self.service_subnets[0])
    }

    pub fn local_etcd(&self) -> bool {
        matches!(self.etcd, EtcdMode::Local { .. })
    }
}

pub fn first_host(net: &IpNet) -> IpAddr {
    match net.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(1)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(1)).into()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: Host,
    pub port: u16,
}

impl Endpoint {
    /// host:port, with brackets around an IPv6 address.
    pub fn host_port(&self) -> String {
        match &self.host {
            Host::Ip(IpAddr::V6(a)) => format!("[{a}]:{}", self.port),
            Host::Ip(a) => format!("{a}:{}", self.port),
            Host::Dns(n) => format!("{n}:{}", self.port),
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.host_port())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum Host {
    Ip(IpAddr),
    Dns(String),
}

/// A subject alternative name.
pub type San = Host;

#[derive(Debug, Clone)]
pub enum EtcdMode {
    Local { server_sans: Vec<San>, peer_sans: Vec<San> },
    External(ExternalEtcd),
}

/// `etcd.external`: the cluster's etcd is run by someone else; the API servers reach it with
/// these client files, which are not part of the bundle.
#[derive(Debug, Clone, Default)]
pub struct ExternalEtcd {
    pub endpoints: Vec<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerJoin {
    /// Workers get bootstrap-kubelet.conf and join by TLS bootstrap.
    Token,
    /// Workers get a pre-issued kubelet.conf.
    Certificate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Discovery {
    /// `discovery.bootstrapToken` with `caCertHashes`: the node fetches cluster-info.
    Token,
    /// `discovery.file`: the node reads the cluster CA and endpoint from its tarball.
    File,
}

/// An EncryptionConfiguration provider with a local key (reference lifecycle.md §6). Every key
/// kubebundle makes is 32 random bytes, which each of them takes (AES-256 for aescbc and aesgcm).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionProvider {
    #[default]
    Aescbc,
    Aesgcm,
    Secretbox,
}

impl EncryptionProvider {
    pub const ALL: [EncryptionProvider; 3] = [EncryptionProvider::Aescbc, EncryptionProvider::Aesgcm, EncryptionProvider::Secretbox];

    /// The provider's name in an EncryptionConfiguration (and in etcd's `k8s:enc:<name>:v1:` prefix).
    pub fn name(self) -> &'static str {
        match self {
            EncryptionProvider::Aescbc => "aescbc",
            EncryptionProvider::Aesgcm => "aesgcm",
            EncryptionProvider::Secretbox => "secretbox",
        }
    }

    pub fn parse(name: &str) -> Option<EncryptionProvider> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Roles {
    pub control_plane: bool,
    pub etcd: bool,
    pub worker: bool,
}

impl Roles {
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.control_plane {
            v.push("control-plane");
        }
        if self.etcd {
            v.push("etcd");
        }
        if self.worker {
            v.push("worker");
        }
        v
    }

    pub fn has(&self, role: &str) -> bool {
        match role {
            "control-plane" => self.control_plane,
            "etcd" => self.etcd,
            "worker" => self.worker,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub address: IpAddr,
    pub roles: Roles,
    pub extra_sans: Vec<San>,
}

/// A bootstrap token as the config states it. `token` is None when the config leaves it to us.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub token: Option<String>,
    pub description: Option<String>,
    /// Zero means "never expires".
    pub ttl: Duration,
    /// Absolute expiry (RFC 3339), which wins over ttl when given.
    pub expires: Option<time::OffsetDateTime>,
    pub usages: Vec<String>,
    pub groups: Vec<String>,
}

pub const DEFAULT_TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

impl TokenSpec {
    pub fn kubeadm_default() -> Self {
        TokenSpec {
            token: None,
            description: None,
            ttl: DEFAULT_TOKEN_TTL,
            expires: None,
            usages: vec!["signing".into(), "authentication".into()],
            groups: vec![DEFAULT_TOKEN_GROUP.into()],
        }
    }
}
