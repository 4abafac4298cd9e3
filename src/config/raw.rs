//! A serde mirror of the documents we read: kubeadm's ClusterConfiguration and InitConfiguration
//! (v1beta2, v1beta3, v1beta4) and our own Inventory. Unknown fields are errors; fields that only
//! exist in some apiVersions are checked against the document's apiVersion in `validate`.
//! Values that later checks may refuse carry their position (`Spanned`).

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_saphyr::Spanned;

pub type S<T> = Spanned<T>;

/// A YAML string. Unlike `String`, it refuses plain scalars that YAML reads as another type
/// (`true`, `no`, `6443`, `1.24`), as Go's kubeadm does: such a value must be quoted.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Text(pub String);

impl std::ops::Deref for Text {
    type Target = String;
    fn deref(&self) -> &String {
        &self.0
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string (quote values that YAML would read as a boolean or a number)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Only `apiVersion` and `kind`, read first so the real type can be chosen.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Head {
    pub api_version: Option<S<Text>>,
    pub kind: Option<S<Text>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfiguration {
    pub api_version: Option<S<Text>>,
    pub kind: Option<S<Text>>,
    pub etcd: Option<Etcd>,
    pub networking: Option<Networking>,
    pub kubernetes_version: Option<S<Text>>,
    pub control_plane_endpoint: Option<S<Text>>,
    pub api_server: Option<ApiServer>,
    pub controller_manager: Option<ControlPlaneComponent>,
    pub scheduler: Option<ControlPlaneComponent>,
    pub dns: Option<Dns>,
    pub proxy: Option<S<IgnoredAny>>,
    pub certificates_dir: Option<S<Text>>,
    pub image_repository: Option<Text>,
    pub feature_gates: Option<IgnoredAny>,
    pub cluster_name: Option<S<Text>>,
    pub encryption_algorithm: Option<S<Text>>,
    pub certificate_validity_period: Option<S<Text>>,
    pub ca_certificate_validity_period: Option<S<Text>>,
    pub use_hyper_kube_image: Option<S<IgnoredAny>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Etcd {
    pub local: Option<LocalEtcd>,
    pub external: Option<S<ExternalEtcd>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalEtcd {
    pub image_repository: Option<Text>,
    pub image_tag: Option<Text>,
    pub data_dir: Option<Text>,
    pub extra_args: Option<IgnoredAny>,
    pub extra_envs: Option<S<IgnoredAny>>,
    #[serde(rename = "serverCertSANs")]
    pub server_cert_sans: Option<Vec<S<Text>>>,
    #[serde(rename = "peerCertSANs")]
    pub peer_cert_sans: Option<Vec<S<Text>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalEtcd {
    pub endpoints: Option<Vec<Text>>,
    pub ca_file: Option<Text>,
    pub cert_file: Option<Text>,
    pub key_file: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    pub service_subnet: Option<S<Text>>,
    pub pod_subnet: Option<S<Text>>,
    pub dns_domain: Option<S<Text>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServer {
    #[serde(rename = "certSANs")]
    pub cert_sans: Option<Vec<S<Text>>>,
    pub extra_args: Option<IgnoredAny>,
    pub extra_volumes: Option<IgnoredAny>,
    pub extra_envs: Option<S<IgnoredAny>>,
    pub timeout_for_control_plane: Option<S<Text>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneComponent {
    pub extra_args: Option<IgnoredAny>,
    pub extra_volumes: Option<IgnoredAny>,
    pub extra_envs: Option<S<IgnoredAny>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dns {
    #[serde(rename = "type")]
    pub type_: Option<S<Text>>,
    pub image_repository: Option<Text>,
    pub image_tag: Option<Text>,
    pub disabled: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitConfiguration {
    pub api_version: Option<S<Text>>,
    pub kind: Option<S<Text>>,
    pub bootstrap_tokens: Option<Vec<S<BootstrapToken>>>,
    pub node_registration: Option<NodeRegistration>,
    #[serde(rename = "localAPIEndpoint")]
    pub local_api_endpoint: Option<LocalApiEndpoint>,
    pub certificate_key: Option<Text>,
    pub skip_phases: Option<Vec<Text>>,
    pub patches: Option<IgnoredAny>,
    pub dry_run: Option<S<bool>>,
    pub timeouts: Option<S<IgnoredAny>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapToken {
    pub token: Option<S<Text>>,
    pub description: Option<S<Text>>,
    pub ttl: Option<S<Text>>,
    pub expires: Option<S<Text>>,
    pub usages: Option<Vec<S<Text>>>,
    pub groups: Option<Vec<S<Text>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRegistration {
    pub name: Option<S<Text>>,
    pub cri_socket: Option<Text>,
    pub taints: Option<IgnoredAny>,
    pub kubelet_extra_args: Option<IgnoredAny>,
    pub ignore_preflight_errors: Option<Vec<Text>>,
    pub image_pull_policy: Option<Text>,
    pub image_pull_serial: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalApiEndpoint {
    pub advertise_address: Option<S<Text>>,
    pub bind_port: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inventory {
    pub api_version: Option<S<Text>>,
    pub kind: Option<S<Text>>,
    pub profile: Option<S<Text>>,
    pub worker_join: Option<S<Text>>,
    pub discovery: Option<S<Text>>,
    /// The encryption-at-rest provider of new keys: aescbc (default), aesgcm or secretbox.
    pub encryption_provider: Option<S<Text>>,
    /// The control plane that runs `kubeadm init` (and holds super-admin.conf).
    pub init_node: Option<S<Text>>,
    /// Exports generate writes with every bundle: cloud-init, ignition.
    pub export: Option<Vec<S<Text>>>,
    /// The exports also run each node's first-boot step (`export --runcmd`).
    pub export_runcmd: Option<S<bool>>,
    pub nodes: Option<Vec<S<InventoryNode>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryNode {
    pub name: S<Text>,
    pub address: S<Text>,
    pub roles: Vec<S<Text>>,
    #[serde(rename = "extraSANs")]
    pub extra_sans: Option<Vec<S<Text>>>,
}
