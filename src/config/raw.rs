//! A serde mirror of the documents we read: kubeadm's ClusterConfiguration and InitConfiguration
//! (v1beta2, v1beta3, v1beta4) and our own Inventory. Unknown fields are errors; fields that only
//! exist in some apiVersions are checked against the document's apiVersion in `validate`.
//! Values that later checks may refuse carry their position (`Spanned`).

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_saphyr::Spanned;

pub type S<T> = Spanned<T>;

/// Only `apiVersion` and `kind`, read first so the real type can be chosen.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Head {
    pub api_version: Option<S<String>>,
    pub kind: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfiguration {
    pub api_version: Option<S<String>>,
    pub kind: Option<S<String>>,
    pub etcd: Option<Etcd>,
    pub networking: Option<Networking>,
    pub kubernetes_version: Option<S<String>>,
    pub control_plane_endpoint: Option<S<String>>,
    pub api_server: Option<ApiServer>,
    pub controller_manager: Option<ControlPlaneComponent>,
    pub scheduler: Option<ControlPlaneComponent>,
    pub dns: Option<Dns>,
    pub proxy: Option<S<IgnoredAny>>,
    pub certificates_dir: Option<S<String>>,
    pub image_repository: Option<String>,
    pub feature_gates: Option<IgnoredAny>,
    pub cluster_name: Option<S<String>>,
    pub encryption_algorithm: Option<S<String>>,
    pub certificate_validity_period: Option<S<String>>,
    pub ca_certificate_validity_period: Option<S<String>>,
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
    pub image_repository: Option<String>,
    pub image_tag: Option<String>,
    pub data_dir: Option<String>,
    pub extra_args: Option<IgnoredAny>,
    pub extra_envs: Option<S<IgnoredAny>>,
    #[serde(rename = "serverCertSANs")]
    pub server_cert_sans: Option<Vec<S<String>>>,
    #[serde(rename = "peerCertSANs")]
    pub peer_cert_sans: Option<Vec<S<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalEtcd {
    pub endpoints: Option<Vec<String>>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    pub service_subnet: Option<S<String>>,
    pub pod_subnet: Option<S<String>>,
    pub dns_domain: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServer {
    #[serde(rename = "certSANs")]
    pub cert_sans: Option<Vec<S<String>>>,
    pub extra_args: Option<IgnoredAny>,
    pub extra_volumes: Option<IgnoredAny>,
    pub extra_envs: Option<S<IgnoredAny>>,
    pub timeout_for_control_plane: Option<S<String>>,
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
    pub type_: Option<S<String>>,
    pub image_repository: Option<String>,
    pub image_tag: Option<String>,
    pub disabled: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitConfiguration {
    pub api_version: Option<S<String>>,
    pub kind: Option<S<String>>,
    pub bootstrap_tokens: Option<Vec<S<BootstrapToken>>>,
    pub node_registration: Option<NodeRegistration>,
    #[serde(rename = "localAPIEndpoint")]
    pub local_api_endpoint: Option<LocalApiEndpoint>,
    pub certificate_key: Option<String>,
    pub skip_phases: Option<Vec<String>>,
    pub patches: Option<IgnoredAny>,
    pub dry_run: Option<S<bool>>,
    pub timeouts: Option<S<IgnoredAny>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapToken {
    pub token: Option<S<String>>,
    pub description: Option<String>,
    pub ttl: Option<S<String>>,
    pub expires: Option<S<String>>,
    pub usages: Option<Vec<S<String>>>,
    pub groups: Option<Vec<S<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRegistration {
    pub name: Option<S<String>>,
    pub cri_socket: Option<String>,
    pub taints: Option<IgnoredAny>,
    pub kubelet_extra_args: Option<IgnoredAny>,
    pub ignore_preflight_errors: Option<Vec<String>>,
    pub image_pull_policy: Option<String>,
    pub image_pull_serial: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalApiEndpoint {
    pub advertise_address: Option<S<String>>,
    pub bind_port: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inventory {
    pub api_version: Option<S<String>>,
    pub kind: Option<S<String>>,
    pub profile: Option<S<String>>,
    pub worker_join: Option<S<String>>,
    pub nodes: Option<Vec<S<InventoryNode>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryNode {
    pub name: S<String>,
    pub address: S<String>,
    pub roles: Vec<S<String>>,
    #[serde(rename = "extraSANs")]
    pub extra_sans: Option<Vec<S<String>>>,
}
