//! The certificate and kubeconfig catalogue, as data (kubeadm's certlist.go is the model).
//! Adding a certificate or kubeconfig means adding an entry here and a line in each profile.

/// Which CA signs an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signer {
    /// The entry is a CA and signs itself.
    SelfSigned,
    Ca,
    FrontProxyCa,
    EtcdCa,
}

impl Signer {
    /// The catalogue id of the signing CA.
    pub fn ca_id(self) -> Option<&'static str> {
        match self {
            Signer::SelfSigned => None,
            Signer::Ca => Some("ca"),
            Signer::FrontProxyCa => Some("front-proxy-ca"),
            Signer::EtcdCa => Some("etcd-ca"),
        }
    }
}

/// For which nodes an entry is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Once per cluster, kept in the state (CAs, sa, encryption key).
    Cluster,
    EachControlPlane,
    /// Only the control plane that runs `kubeadm init` (the first one listed).
    FirstControlPlane,
    EachEtcdMember,
    EachNode,
    /// Nodes that get a pre-issued kubelet.conf: control planes always, the others when
    /// `workerJoin: certificate`.
    PreIssuedKubelet,
    /// Nodes that join by TLS bootstrap: non-control-plane nodes when `workerJoin: token`.
    TokenJoined,
    /// Every node but the first control plane: they run `kubeadm join`.
    Joining,
    /// Joining nodes when `Inventory.discovery: file`.
    FileDiscovery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommonName {
    Fixed(&'static str),
    /// The node's name (etcd server and peer certificates).
    NodeName,
    /// `system:node:<name>` (kubelet certificates).
    SystemNode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanRule {
    None,
    /// CAs: one DNS name equal to the CN, as kubeadm writes.
    CommonName,
    ApiServer,
    EtcdServer,
    EtcdPeer,
    KubeletServing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Eku {
    ServerAuth,
    ClientAuth,
}

/// Where a kubeconfig points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRule {
    /// https://controlPlaneEndpoint
    Endpoint,
    /// https://<this node's advertiseAddress>:<bindPort>
    NodeLocal,
    /// kubelet.conf: the node's own API endpoint on control planes from 1.33, else the endpoint.
    Kubelet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A client certificate made from the cert entry of the same id.
    Certificate,
    /// The first authentication bootstrap token (bootstrap-kubelet.conf).
    BootstrapToken,
}

#[derive(Debug)]
pub struct CertEntry {
    /// kubeadm's name: `apiserver`, `etcd-server`, `admin.conf`, ...
    pub id: &'static str,
    pub signer: Signer,
    pub common_name: CommonName,
    /// O values by Kubernetes minor release: the last entry whose minor is ≤ the cluster's wins.
    pub organizations: &'static [(u32, &'static [&'static str])],
    pub usages: &'static [Eku],
    pub sans: SanRule,
    pub scope: Scope,
    /// First minor release that has this entry.
    pub since_minor: u32,
    /// Made only with a local (stacked) etcd.
    pub local_etcd_only: bool,
}

impl CertEntry {
    pub fn is_ca(&self) -> bool {
        self.signer == Signer::SelfSigned
    }

    pub fn organizations_for(&self, minor: u32) -> &'static [&'static str] {
        self.organizations.iter().rev().find(|(from, _)| *from <= minor).map(|(_, o)| *o).unwrap_or(&[])
    }
}

const MASTERS: &[&str] = &["system:masters"];
const CLUSTER_ADMINS: &[&str] = &["kubeadm:cluster-admins"];
const NODES: &[&str] = &["system:nodes"];
const NONE: &[&str] = &[];
const SERVER: &[Eku] = &[Eku::ServerAuth];
const CLIENT: &[Eku] = &[Eku::ClientAuth];
const SERVER_CLIENT: &[Eku] = &[Eku::ServerAuth, Eku::ClientAuth];

const fn entry(
    id: &'static str,
    signer: Signer,
    common_name: CommonName,
    usages: &'static [Eku],
    sans: SanRule,
    scope: Scope,
) -> CertEntry {
    CertEntry { id, signer, common_name, organizations: &[], usages, sans, scope, since_minor: 0, local_etcd_only: false }
}

pub static CERTS: &[CertEntry] = &[
    entry("ca", Signer::SelfSigned, CommonName::Fixed("kubernetes"), &[], SanRule::CommonName, Scope::Cluster),
    entry("front-proxy-ca", Signer::SelfSigned, CommonName::Fixed("front-proxy-ca"), &[], SanRule::CommonName, Scope::Cluster),
    CertEntry {
        local_etcd_only: true,
        ..entry("etcd-ca", Signer::SelfSigned, CommonName::Fixed("etcd-ca"), &[], SanRule::CommonName, Scope::Cluster)
    },
    entry("apiserver", Signer::Ca, CommonName::Fixed("kube-apiserver"), SERVER, SanRule::ApiServer, Scope::EachControlPlane),
    CertEntry {
        organizations: &[(0, MASTERS), (29, CLUSTER_ADMINS), (37, NONE)],
        ..entry(
            "apiserver-kubelet-client",
            Signer::Ca,
            CommonName::Fixed("kube-apiserver-kubelet-client"),
            CLIENT,
            SanRule::None,
            Scope::EachControlPlane,
        )
    },
    entry(
        "front-proxy-client",
        Signer::FrontProxyCa,
        CommonName::Fixed("front-proxy-client"),
        CLIENT,
        SanRule::None,
        Scope::EachControlPlane,
    ),
    CertEntry {
        local_etcd_only: true,
        ..entry("etcd-server", Signer::EtcdCa, CommonName::NodeName, SERVER_CLIENT, SanRule::EtcdServer, Scope::EachEtcdMember)
    },
    CertEntry {
        local_etcd_only: true,
        ..entry("etcd-peer", Signer::EtcdCa, CommonName::NodeName, SERVER_CLIENT, SanRule::EtcdPeer, Scope::EachEtcdMember)
    },
    CertEntry {
        organizations: &[(0, MASTERS), (29, NONE)],
        local_etcd_only: true,
        ..entry(
            "etcd-healthcheck-client",
            Signer::EtcdCa,
            CommonName::Fixed("kube-etcd-healthcheck-client"),
            CLIENT,
            SanRule::None,
            Scope::EachEtcdMember,
        )
    },
    CertEntry {
        organizations: &[(0, MASTERS), (29, NONE)],
        local_etcd_only: true,
        ..entry(
            "apiserver-etcd-client",
            Signer::EtcdCa,
            CommonName::Fixed("kube-apiserver-etcd-client"),
            CLIENT,
            SanRule::None,
            Scope::EachControlPlane,
        )
    },
    // Client certificates embedded in kubeconfigs (ids are kubeadm's kubeconfig names).
    CertEntry {
        organizations: &[(0, MASTERS), (29, CLUSTER_ADMINS)],
        ..entry("admin.conf", Signer::Ca, CommonName::Fixed("kubernetes-admin"), CLIENT, SanRule::None, Scope::EachControlPlane)
    },
    CertEntry {
        organizations: &[(0, MASTERS)],
        since_minor: 29,
        ..entry(
            "super-admin.conf",
            Signer::Ca,
            CommonName::Fixed("kubernetes-super-admin"),
            CLIENT,
            SanRule::None,
            Scope::FirstControlPlane,
        )
    },
    entry(
        "controller-manager.conf",
        Signer::Ca,
        CommonName::Fixed("system:kube-controller-manager"),
        CLIENT,
        SanRule::None,
        Scope::EachControlPlane,
    ),
    entry("scheduler.conf", Signer::Ca, CommonName::Fixed("system:kube-scheduler"), CLIENT, SanRule::None, Scope::EachControlPlane),
    CertEntry {
        organizations: &[(0, NODES)],
        ..entry("kubelet.conf", Signer::Ca, CommonName::SystemNode, CLIENT, SanRule::None, Scope::PreIssuedKubelet)
    },
    // The kubelet's serving certificate (kubeadm leaves it self-signed; we sign it with the CA).
    CertEntry {
        organizations: &[(0, NODES)],
        ..entry("kubelet-serving", Signer::Ca, CommonName::SystemNode, SERVER, SanRule::KubeletServing, Scope::EachNode)
    },
    // kube-proxy run by systemd (hardway, binary; kubeadm runs it as a DaemonSet with a service
    // account). No O: the `system:node-proxier` ClusterRoleBinding of every cluster binds the
    // user system:kube-proxy. One key per node.
    entry("kube-proxy.conf", Signer::Ca, CommonName::Fixed("system:kube-proxy"), CLIENT, SanRule::None, Scope::EachNode),
];

#[derive(Debug)]
pub struct KubeconfigEntry {
    /// File name and id, e.g. `admin.conf`.
    pub id: &'static str,
    pub credential: Credential,
    pub server: ServerRule,
    pub scope: Scope,
    pub since_minor: u32,
}

pub static KUBECONFIGS: &[KubeconfigEntry] = &[
    KubeconfigEntry {
        id: "admin.conf",
        credential: Credential::Certificate,
        server: ServerRule::Endpoint,
        scope: Scope::EachControlPlane,
        since_minor: 0,
    },
    KubeconfigEntry {
        id: "super-admin.conf",
        credential: Credential::Certificate,
        server: ServerRule::Endpoint,
        scope: Scope::FirstControlPlane,
        since_minor: 29,
    },
    KubeconfigEntry {
        id: "controller-manager.conf",
        credential: Credential::Certificate,
        server: ServerRule::NodeLocal,
        scope: Scope::EachControlPlane,
        since_minor: 0,
    },
    KubeconfigEntry {
        id: "scheduler.conf",
        credential: Credential::Certificate,
        server: ServerRule::NodeLocal,
        scope: Scope::EachControlPlane,
        since_minor: 0,
    },
    KubeconfigEntry {
        id: "kubelet.conf",
        credential: Credential::Certificate,
        server: ServerRule::Kubelet,
        scope: Scope::PreIssuedKubelet,
        since_minor: 0,
    },
    KubeconfigEntry {
        id: "kube-proxy.conf",
        credential: Credential::Certificate,
        server: ServerRule::Endpoint,
        scope: Scope::EachNode,
        since_minor: 0,
    },
    KubeconfigEntry {
        id: "bootstrap-kubelet.conf",
        credential: Credential::BootstrapToken,
        server: ServerRule::Endpoint,
        scope: Scope::TokenJoined,
        since_minor: 0,
    },
];

/// Files rendered per node from `templates/`: their content follows the node's plan (the
/// paths the profile gives its other files), so units and configs point at what is shipped.
#[derive(Debug)]
pub struct RenderedEntry {
    /// The artifact id a profile names.
    pub id: &'static str,
    pub template: &'static str,
    pub scope: Scope,
    pub kind: RenderedKind,
}

impl RenderedEntry {
    /// Holds a secret (the join token), so it is written 0600.
    pub fn secret(&self) -> bool {
        self.kind == RenderedKind::KubeadmJoin
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderedKind {
    /// A KubeletConfiguration.
    KubeletConfig,
    /// kubeadm's InitConfiguration + ClusterConfiguration (no secret: the tokens are in manifests/).
    KubeadmInit,
    /// kubeadm's JoinConfiguration; holds the join token.
    KubeadmJoin,
    /// A kubeconfig with only the cluster (server + CA), for `discovery.file`.
    DiscoveryKubeconfig,
    /// A kubeadm `--patches` file for the kube-apiserver static pod.
    ApiserverPatch,
    /// A KubeProxyConfiguration (its kubeconfig's path, clusterCIDR = podSubnet).
    KubeProxyConfig,
    /// A systemd unit.
    Unit,
}

pub static RENDERED: &[RenderedEntry] = &[
    RenderedEntry {
        id: "kubelet-config",
        template: "kubelet-configuration.yaml",
        scope: Scope::EachNode,
        kind: RenderedKind::KubeletConfig,
    },
    RenderedEntry { id: "kubeadm-init", template: "kubeadm-init.yaml", scope: Scope::FirstControlPlane, kind: RenderedKind::KubeadmInit },
    RenderedEntry { id: "kubeadm-join", template: "kubeadm-join.yaml", scope: Scope::Joining, kind: RenderedKind::KubeadmJoin },
    RenderedEntry {
        id: "discovery.conf",
        template: "cluster-info-kubeconfig.yaml",
        scope: Scope::FileDiscovery,
        kind: RenderedKind::DiscoveryKubeconfig,
    },
    RenderedEntry {
        id: "kube-apiserver-patch",
        template: "kube-apiserver-patch.yaml",
        scope: Scope::EachControlPlane,
        kind: RenderedKind::ApiserverPatch,
    },
    // Only while the cluster CA rotates (`rotate ca ca`): kubeadm's controller-manager signs
    // with `cluster-signing-ca.crt` (the CA alone) while ca.crt holds two CAs.
    RenderedEntry {
        id: "kube-controller-manager-patch",
        template: "kube-controller-manager-patch.yaml",
        scope: Scope::EachControlPlane,
        kind: RenderedKind::ApiserverPatch,
    },
    RenderedEntry { id: "etcd.service", template: "units/etcd.service", scope: Scope::EachEtcdMember, kind: RenderedKind::Unit },
    RenderedEntry {
        id: "kube-apiserver.service",
        template: "units/kube-apiserver.service",
        scope: Scope::EachControlPlane,
        kind: RenderedKind::Unit,
    },
    RenderedEntry {
        id: "kube-controller-manager.service",
        template: "units/kube-controller-manager.service",
        scope: Scope::EachControlPlane,
        kind: RenderedKind::Unit,
    },
    RenderedEntry {
        id: "kube-scheduler.service",
        template: "units/kube-scheduler.service",
        scope: Scope::EachControlPlane,
        kind: RenderedKind::Unit,
    },
    RenderedEntry { id: "kubelet.service", template: "units/kubelet.service", scope: Scope::EachNode, kind: RenderedKind::Unit },
    RenderedEntry {
        id: "kube-proxy-config",
        template: "kube-proxy-configuration.yaml",
        scope: Scope::EachNode,
        kind: RenderedKind::KubeProxyConfig,
    },
    RenderedEntry { id: "kube-proxy.service", template: "units/kube-proxy.service", scope: Scope::EachNode, kind: RenderedKind::Unit },
];

pub fn rendered(id: &str) -> Option<&'static RenderedEntry> {
    RENDERED.iter().find(|r| r.id == id)
}

/// Cluster-wide secrets that are not certificates, kept in the state.
pub const SA_KEY: &str = "sa.key";
pub const SA_PUB: &str = "sa.pub";
/// During a service-account key rotation (`kubebundle rotate sa`): the new public key the API
/// servers accept before they sign with it (after `start`), and the old one they still accept
/// after `switch`. Each is on a node only while the state holds it.
pub const SA_NEXT_PUB: &str = "sa-next.pub";
pub const SA_PREVIOUS_PUB: &str = "sa-previous.pub";
pub const ENCRYPTION_CONFIG: &str = "encryption-config";
/// During a rotation of the cluster CA (`kubebundle rotate ca ca`): the CA that signs, alone,
/// for the controller-manager's `--cluster-signing-cert-file`, which must hold exactly one
/// certificate while ca.crt holds the old and the new CA. On a node only during the rotation.
pub const CLUSTER_SIGNING_CA: &str = "cluster-signing-ca.crt";

pub fn cert(id: &str) -> Option<&'static CertEntry> {
    CERTS.iter().find(|c| c.id == id)
}

pub fn kubeconfig(id: &str) -> Option<&'static KubeconfigEntry> {
    KUBECONFIGS.iter().find(|k| k.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_signers_exist() {
        let mut ids: Vec<&str> = CERTS.iter().map(|c| c.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), CERTS.len());
        for c in CERTS {
            if let Some(ca) = c.signer.ca_id() {
                assert!(cert(ca).is_some_and(|e| e.is_ca()), "{} is signed by a missing CA", c.id);
            }
        }
        for k in KUBECONFIGS {
            if k.credential == Credential::Certificate {
                assert!(cert(k.id).is_some(), "{} has no client certificate entry", k.id);
            }
        }
    }

    #[test]
    fn organizations_follow_the_version() {
        let admin = cert("admin.conf").unwrap();
        assert_eq!(admin.organizations_for(28), &["system:masters"]);
        assert_eq!(admin.organizations_for(29), &["kubeadm:cluster-admins"]);
        let akc = cert("apiserver-kubelet-client").unwrap();
        assert_eq!(akc.organizations_for(36), &["kubeadm:cluster-admins"]);
        assert!(akc.organizations_for(37).is_empty());
        assert!(cert("apiserver-etcd-client").unwrap().organizations_for(30).is_empty());
        // kube-proxy's RBAC is the built-in system:node-proxier binding of its user name.
        let proxy = cert("kube-proxy.conf").unwrap();
        assert_eq!(proxy.common_name, CommonName::Fixed("system:kube-proxy"));
        assert!(proxy.organizations_for(37).is_empty());
    }
}
