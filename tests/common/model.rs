//! What a config means, written down independently of the implementation: the facts of
//! /work/shared/reference/kubernetes-pki.md turned into expected certificates, kubeconfigs and
//! files per node.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{parse_go_duration, DAY, NOW_UNIX};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    ControlPlane,
    Etcd,
    Worker,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Etcd => "etcd",
            Role::Worker => "worker",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "control-plane" => Some(Role::ControlPlane),
            "etcd" => Some(Role::Etcd),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub address: String,
    pub roles: Vec<Role>,
    pub extra_sans: Vec<String>,
}

pub const CP_ETCD: &[Role] = &[Role::ControlPlane, Role::Etcd];
pub const WORKER: &[Role] = &[Role::Worker];
pub const ETCD_ONLY: &[Role] = &[Role::Etcd];

impl Node {
    pub fn new(name: &str, address: &str, roles: &[Role]) -> Node {
        Node { name: name.into(), address: address.into(), roles: roles.to_vec(), extra_sans: vec![] }
    }
    pub fn sans(mut self, sans: &[&str]) -> Node {
        self.extra_sans = sans.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn is_cp(&self) -> bool {
        self.roles.contains(&Role::ControlPlane)
    }
    pub fn is_etcd(&self) -> bool {
        self.roles.contains(&Role::Etcd)
    }
    pub fn ip(&self) -> IpAddr {
        self.address.parse().unwrap_or_else(|_| panic!("node {} address {} is not an IP", self.name, self.address))
    }
    pub fn api_endpoint(&self, port: u16) -> String {
        host_port(&self.address, port)
    }
}

pub fn host_port(host: &str, port: u16) -> String {
    if host.parse::<Ipv6Addr>().is_ok() {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[derive(Clone, Debug)]
pub struct Model {
    pub api_version: String,
    pub cluster_name: String,
    pub kubernetes_version: String,
    pub control_plane_endpoint: Option<String>,
    pub encryption_algorithm: Option<String>,
    pub cert_sans: Vec<String>,
    pub etcd_server_sans: Vec<String>,
    pub etcd_peer_sans: Vec<String>,
    pub service_subnet: Option<String>,
    pub pod_subnet: Option<String>,
    pub dns_domain: Option<String>,
    pub cert_validity: Option<String>,
    pub ca_validity: Option<String>,
    pub bootstrap_tokens: Vec<String>,
    pub worker_join: Option<String>,
    /// Inventory.discovery (token when absent).
    pub discovery: Option<String>,
    pub bind_port: u16,
    pub nodes: Vec<Node>,
    /// The run clock.
    pub now: i64,
}

impl Model {
    /// A v1beta4, ECDSA-P256, v1.34.1 cluster with the given nodes and nothing else set.
    pub fn ecdsa(cluster_name: &str, nodes: Vec<Node>) -> Model {
        Model {
            api_version: "kubeadm.k8s.io/v1beta4".into(),
            cluster_name: cluster_name.into(),
            kubernetes_version: "v1.34.1".into(),
            control_plane_endpoint: None,
            encryption_algorithm: Some("ECDSA-P256".into()),
            cert_sans: vec![],
            etcd_server_sans: vec![],
            etcd_peer_sans: vec![],
            service_subnet: Some("10.96.0.0/12".into()),
            pod_subnet: Some("10.244.0.0/16".into()),
            dns_domain: None,
            cert_validity: None,
            ca_validity: None,
            bootstrap_tokens: vec![],
            worker_join: None,
            discovery: None,
            bind_port: 6443,
            nodes,
            now: NOW_UNIX,
        }
    }

    // ------------------------------------------------------------------ rendering

    pub fn cluster_configuration_yaml(&self) -> String {
        let mut y = String::new();
        y.push_str(&format!("apiVersion: {}\nkind: ClusterConfiguration\n", self.api_version));
        y.push_str(&format!("clusterName: \"{}\"\n", self.cluster_name));
        y.push_str(&format!("kubernetesVersion: {}\n", self.kubernetes_version));
        if let Some(e) = &self.control_plane_endpoint {
            y.push_str(&format!("controlPlaneEndpoint: \"{e}\"\n"));
        }
        if let Some(a) = &self.encryption_algorithm {
            y.push_str(&format!("encryptionAlgorithm: {a}\n"));
        }
        if let Some(v) = &self.cert_validity {
            y.push_str(&format!("certificateValidityPeriod: {v}\n"));
        }
        if let Some(v) = &self.ca_validity {
            y.push_str(&format!("caCertificateValidityPeriod: {v}\n"));
        }
        if !self.cert_sans.is_empty() {
            y.push_str("apiServer:\n  certSANs:\n");
            for s in &self.cert_sans {
                y.push_str(&format!("  - \"{s}\"\n"));
            }
        }
        y.push_str("networking:\n");
        if let Some(s) = &self.service_subnet {
            y.push_str(&format!("  serviceSubnet: \"{s}\"\n"));
        }
        if let Some(s) = &self.pod_subnet {
            y.push_str(&format!("  podSubnet: \"{s}\"\n"));
        }
        if let Some(s) = &self.dns_domain {
            y.push_str(&format!("  dnsDomain: {s}\n"));
        }
        if !self.etcd_server_sans.is_empty() || !self.etcd_peer_sans.is_empty() {
            y.push_str("etcd:\n  local:\n");
            if !self.etcd_server_sans.is_empty() {
                y.push_str("    serverCertSANs:\n");
                for s in &self.etcd_server_sans {
                    y.push_str(&format!("    - \"{s}\"\n"));
                }
            }
            if !self.etcd_peer_sans.is_empty() {
                y.push_str("    peerCertSANs:\n");
                for s in &self.etcd_peer_sans {
                    y.push_str(&format!("    - \"{s}\"\n"));
                }
            }
        }
        y
    }

    pub fn init_configuration_yaml(&self) -> Option<String> {
        if self.bootstrap_tokens.is_empty() {
            return None;
        }
        let mut y = format!("apiVersion: {}\nkind: InitConfiguration\nbootstrapTokens:\n", self.api_version);
        for t in &self.bootstrap_tokens {
            y.push_str(&format!("- token: {t}\n"));
        }
        Some(y)
    }

    pub fn inventory_yaml(&self) -> String {
        let mut y = String::from("apiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\n");
        if let Some(w) = &self.worker_join {
            y.push_str(&format!("workerJoin: {w}\n"));
        }
        if let Some(d) = &self.discovery {
            y.push_str(&format!("discovery: {d}\n"));
        }
        y.push_str("nodes:\n");
        for n in &self.nodes {
            y.push_str(&format!("- name: \"{}\"\n  address: \"{}\"\n", n.name, n.address));
            let roles: Vec<&str> = n.roles.iter().map(|r| r.as_str()).collect();
            y.push_str(&format!("  roles: [{}]\n", roles.join(", ")));
            if !n.extra_sans.is_empty() {
                let s: Vec<String> = n.extra_sans.iter().map(|s| format!("\"{s}\"")).collect();
                y.push_str(&format!("  extraSANs: [{}]\n", s.join(", ")));
            }
        }
        y
    }

    pub fn to_yaml(&self) -> String {
        let mut docs = vec![self.cluster_configuration_yaml()];
        if let Some(i) = self.init_configuration_yaml() {
            docs.push(i);
        }
        docs.push(self.inventory_yaml());
        docs.join("---\n")
    }

    /// Builds the model of a config from its documents as parsed to JSON (by kubectl).
    pub fn from_documents(docs: &[serde_json::Value], now: i64) -> Result<Model, String> {
        let mut m = Model::ecdsa("kubernetes", vec![]);
        m.encryption_algorithm = None;
        m.service_subnet = None;
        m.pod_subnet = None;
        m.now = now;
        let strs = |v: &serde_json::Value| -> Vec<String> {
            v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default()
        };
        let mut seen_inventory = false;
        for d in docs {
            match d["kind"].as_str() {
                Some("ClusterConfiguration") => {
                    m.api_version = d["apiVersion"].as_str().unwrap_or_default().to_string();
                    if let Some(s) = d["clusterName"].as_str() {
                        m.cluster_name = s.into();
                    }
                    m.kubernetes_version = d["kubernetesVersion"].as_str().ok_or("config has no kubernetesVersion")?.to_string();
                    m.control_plane_endpoint = d["controlPlaneEndpoint"].as_str().map(String::from);
                    m.encryption_algorithm = d["encryptionAlgorithm"].as_str().map(String::from);
                    m.cert_validity = d["certificateValidityPeriod"].as_str().map(String::from);
                    m.ca_validity = d["caCertificateValidityPeriod"].as_str().map(String::from);
                    m.cert_sans = strs(&d["apiServer"]["certSANs"]);
                    m.etcd_server_sans = strs(&d["etcd"]["local"]["serverCertSANs"]);
                    m.etcd_peer_sans = strs(&d["etcd"]["local"]["peerCertSANs"]);
                    m.service_subnet = d["networking"]["serviceSubnet"].as_str().map(String::from);
                    m.pod_subnet = d["networking"]["podSubnet"].as_str().map(String::from);
                    m.dns_domain = d["networking"]["dnsDomain"].as_str().map(String::from);
                }
                Some("InitConfiguration") => {
                    if let Some(a) = d["bootstrapTokens"].as_array() {
                        m.bootstrap_tokens = a.iter().filter_map(|t| t["token"].as_str().map(String::from)).collect();
                    }
                    if let Some(p) = d["localAPIEndpoint"]["bindPort"].as_u64() {
                        m.bind_port = p as u16;
                    }
                }
                Some("Inventory") => {
                    seen_inventory = true;
                    m.worker_join = d["workerJoin"].as_str().map(String::from);
                    m.discovery = d["discovery"].as_str().map(String::from);
                    for n in d["nodes"].as_array().ok_or("Inventory has no nodes")? {
                        let roles = strs(&n["roles"])
                            .iter()
                            .map(|r| Role::parse(r).ok_or(format!("unknown role {r}")))
                            .collect::<Result<Vec<_>, _>>()?;
                        m.nodes.push(Node {
                            name: n["name"].as_str().ok_or("node without name")?.into(),
                            address: n["address"].as_str().ok_or("node without address")?.into(),
                            roles,
                            extra_sans: strs(&n["extraSANs"]),
                        });
                    }
                }
                _ => {}
            }
        }
        if !seen_inventory {
            return Err("config has no Inventory document".into());
        }
        Ok(m)
    }

    // ------------------------------------------------------------------ derived facts

    /// Minor version of kubernetesVersion (`v1.34.1` → 34).
    pub fn minor(&self) -> u32 {
        let v = self.kubernetes_version.trim_start_matches('v');
        let mut it = v.split('.');
        let major: u32 = it.next().and_then(|s| s.parse().ok()).expect("version major");
        assert_eq!(major, 1, "kubernetesVersion {}", self.kubernetes_version);
        let minor = it.next().expect("version minor");
        let digits: String = minor.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().expect("version minor")
    }

    pub fn algorithm(&self) -> &str {
        self.encryption_algorithm.as_deref().unwrap_or("RSA-2048")
    }
    pub fn is_rsa(&self) -> bool {
        self.algorithm().starts_with("RSA")
    }
    pub fn key_pem_label(&self) -> &'static str {
        if self.is_rsa() {
            "RSA PRIVATE KEY"
        } else {
            "EC PRIVATE KEY"
        }
    }
    pub fn dns_domain(&self) -> &str {
        self.dns_domain.as_deref().unwrap_or("cluster.local")
    }
    pub fn worker_join(&self) -> &str {
        self.worker_join.as_deref().unwrap_or("token")
    }
    pub fn discovery(&self) -> &str {
        self.discovery.as_deref().unwrap_or("token")
    }

    pub fn control_planes(&self) -> Vec<&Node> {
        self.nodes.iter().filter(|n| n.is_cp()).collect()
    }
    pub fn first_cp(&self) -> &Node {
        self.nodes.iter().find(|n| n.is_cp()).expect("a control plane")
    }
    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// controlPlaneEndpoint as host:port, defaulting to the first control plane's address and bindPort.
    pub fn endpoint(&self) -> String {
        let (h, p) = self.endpoint_host_port();
        host_port(&h, p)
    }
    pub fn endpoint_host_port(&self) -> (String, u16) {
        match &self.control_plane_endpoint {
            None => (self.first_cp().address.clone(), self.bind_port),
            Some(e) => {
                if let Some(rest) = e.strip_prefix('[') {
                    let (h, after) = rest.split_once(']').expect("bracketed endpoint");
                    let port = after.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(self.bind_port);
                    (h.to_string(), port)
                } else if e.matches(':').count() == 1 {
                    let (h, p) = e.split_once(':').unwrap();
                    (h.to_string(), p.parse().expect("endpoint port"))
                } else {
                    (e.clone(), self.bind_port)
                }
            }
        }
    }
    pub fn server_url(&self) -> String {
        format!("https://{}", self.endpoint())
    }
    pub fn node_server_url(&self, n: &Node) -> String {
        format!("https://{}", n.api_endpoint(self.bind_port))
    }

    pub fn service_ip(&self) -> IpAddr {
        let subnets = self.service_subnet.as_deref().unwrap_or("10.96.0.0/12");
        let first = subnets.split(',').next().unwrap().trim();
        let (addr, prefix) = first.split_once('/').expect("CIDR");
        let prefix: u32 = prefix.parse().expect("prefix");
        match addr.parse::<IpAddr>().expect("subnet address") {
            IpAddr::V4(a) => {
                let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
                IpAddr::V4(Ipv4Addr::from((u32::from(a) & mask) + 1))
            }
            IpAddr::V6(a) => {
                let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
                IpAddr::V6(Ipv6Addr::from((u128::from(a) & mask) + 1))
            }
        }
    }

    pub fn leaf_validity_secs(&self) -> i64 {
        self.cert_validity.as_deref().map(|d| parse_go_duration(d).expect("duration")).unwrap_or(365 * DAY)
    }
    pub fn ca_validity_secs(&self) -> i64 {
        self.ca_validity.as_deref().map(|d| parse_go_duration(d).expect("duration")).unwrap_or(3650 * DAY)
    }

    /// notBefore of every certificate of a fresh run (§4: backdated 5 min from 1.28 on for CAs,
    /// leaves copy the CA's before 1.31 and are backdated themselves from 1.31 on).
    pub fn expected_not_before(&self) -> i64 {
        if self.minor() >= 28 {
            self.now - super::BACKDATE_SECS
        } else {
            self.now
        }
    }

    // ------------------------------------------------------------------ catalogue

    fn o_admin(&self) -> Vec<Vec<String>> {
        if self.minor() >= 29 {
            vec![vec!["kubeadm:cluster-admins".into()]]
        } else {
            vec![vec!["system:masters".into()]]
        }
    }
    fn o_apiserver_kubelet_client(&self) -> Vec<Vec<String>> {
        match self.minor() {
            0..=28 => vec![vec!["system:masters".into()]],
            29..=34 => vec![vec!["kubeadm:cluster-admins".into()]],
            35 | 36 => vec![vec!["kubeadm:cluster-admins".into()], vec![]],
            _ => vec![vec![]],
        }
    }
    fn o_etcd_clients(&self) -> Vec<Vec<String>> {
        if self.minor() >= 29 {
            vec![vec![]]
        } else {
            vec![vec!["system:masters".into()]]
        }
    }

    pub fn has_super_admin(&self, n: &Node) -> bool {
        self.minor() >= 29 && n.is_cp() && n.name == self.first_cp().name
    }

    pub fn apiserver_sans(&self, n: &Node, with_node_extra: bool) -> SanSet {
        let mut s = SanSet::default();
        s.add_dns(&n.name);
        for d in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
            s.add_dns(d);
        }
        s.add_dns(&format!("kubernetes.default.svc.{}", self.dns_domain()));
        s.add_ip(self.service_ip());
        s.add_ip(n.ip());
        let (host, _) = self.endpoint_host_port();
        s.add_any(&host);
        for x in &self.cert_sans {
            s.add_any(x);
        }
        if with_node_extra {
            for x in &n.extra_sans {
                s.add_any(x);
            }
        }
        s.sort_dns();
        s
    }

    pub fn etcd_sans(&self, n: &Node, extra: &[String]) -> SanSet {
        let mut s = SanSet::default();
        s.add_dns(&n.name);
        s.add_dns("localhost");
        s.add_ip(n.ip());
        s.add_ip("127.0.0.1".parse().unwrap());
        s.add_ip("::1".parse().unwrap());
        for x in extra {
            s.add_any(x);
        }
        s.sort_dns();
        s
    }

    /// The reference's set; a node's extraSANs may be added too (the contract does not say).
    pub fn etcd_san_alternatives(&self, n: &Node, extra: &[String]) -> Vec<SanSet> {
        let mut v = vec![self.etcd_sans(n, extra)];
        if !n.extra_sans.is_empty() {
            let mut all = extra.to_vec();
            all.extend(n.extra_sans.iter().cloned());
            v.push(self.etcd_sans(n, &all));
        }
        v
    }

    pub fn kubelet_serving_sans(&self, n: &Node) -> SanSet {
        let mut s = SanSet::default();
        s.add_dns(&n.name);
        s.add_ip(n.ip());
        for x in &n.extra_sans {
            s.add_any(x);
        }
        s.sort_dns();
        s
    }

    fn ca_spec(&self, which: Signer, with_key: bool) -> CertSpec {
        let (cn, crt) = match which {
            Signer::Ca => ("kubernetes", PKI_CA),
            Signer::FrontProxyCa => ("front-proxy-ca", PKI_FRONT_PROXY_CA),
            Signer::EtcdCa => ("etcd-ca", PKI_ETCD_CA),
        };
        let mut sans = SanSet::default();
        sans.add_dns(cn);
        CertSpec {
            id: which.id().into(),
            crt: crt.into(),
            key: with_key.then(|| crt.replace(".crt", ".key")),
            signer: which,
            is_ca: true,
            cn: cn.into(),
            o: vec![vec![]],
            server_auth: false,
            client_auth: false,
            sans: vec![sans],
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn leaf(
        &self,
        id: &str,
        crt: &str,
        signer: Signer,
        cn: &str,
        o: Vec<Vec<String>>,
        server_auth: bool,
        client_auth: bool,
        sans: Vec<SanSet>,
    ) -> CertSpec {
        CertSpec {
            id: id.into(),
            crt: crt.into(),
            key: Some(crt.replace(".crt", ".key")),
            signer,
            is_ca: false,
            cn: cn.into(),
            o,
            server_auth,
            client_auth,
            sans,
        }
    }

    /// Every certificate file the node's tree must hold, with its expected properties.
    pub fn cert_files(&self, n: &Node) -> Vec<CertSpec> {
        let mut v = Vec::new();
        let p = |s: &str| format!("etc/kubernetes/pki/{s}");
        if n.is_cp() {
            v.push(self.ca_spec(Signer::Ca, true));
            v.push(self.ca_spec(Signer::FrontProxyCa, true));
            v.push(self.ca_spec(Signer::EtcdCa, true));
            let mut alts = vec![self.apiserver_sans(n, false)];
            if !n.extra_sans.is_empty() {
                alts.push(self.apiserver_sans(n, true));
            }
            v.push(self.leaf("apiserver", &p("apiserver.crt"), Signer::Ca, "kube-apiserver", vec![vec![]], true, false, alts));
            v.push(self.leaf(
                "apiserver-kubelet-client",
                &p("apiserver-kubelet-client.crt"),
                Signer::Ca,
                "kube-apiserver-kubelet-client",
                self.o_apiserver_kubelet_client(),
                false,
                true,
                vec![],
            ));
            v.push(self.leaf(
                "front-proxy-client",
                &p("front-proxy-client.crt"),
                Signer::FrontProxyCa,
                "front-proxy-client",
                vec![vec![]],
                false,
                true,
                vec![],
            ));
            v.push(self.leaf(
                "apiserver-etcd-client",
                &p("apiserver-etcd-client.crt"),
                Signer::EtcdCa,
                "kube-apiserver-etcd-client",
                self.o_etcd_clients(),
                false,
                true,
                vec![],
            ));
        } else {
            v.push(self.ca_spec(Signer::Ca, false));
        }
        if n.is_etcd() {
            if !n.is_cp() {
                v.push(self.ca_spec(Signer::EtcdCa, false));
            }
            v.push(self.leaf(
                "etcd-server",
                &p("etcd/server.crt"),
                Signer::EtcdCa,
                &n.name,
                vec![vec![]],
                true,
                true,
                self.etcd_san_alternatives(n, &self.etcd_server_sans),
            ));
            v.push(self.leaf(
                "etcd-peer",
                &p("etcd/peer.crt"),
                Signer::EtcdCa,
                &n.name,
                vec![vec![]],
                true,
                true,
                self.etcd_san_alternatives(n, &self.etcd_peer_sans),
            ));
            v.push(self.leaf(
                "etcd-healthcheck-client",
                &p("etcd/healthcheck-client.crt"),
                Signer::EtcdCa,
                "kube-etcd-healthcheck-client",
                self.o_etcd_clients(),
                false,
                true,
                vec![],
            ));
        }
        v.push(self.leaf(
            "kubelet-serving",
            KUBELET_CRT,
            Signer::Ca,
            &format!("system:node:{}", n.name),
            vec![vec!["system:nodes".into()]],
            true,
            false,
            vec![self.kubelet_serving_sans(n)],
        ));
        v
    }

    /// Every kubeconfig the node's tree must hold.
    pub fn kubeconfigs(&self, n: &Node) -> Vec<KubeconfigSpec> {
        let mut v = Vec::new();
        let ep = self.server_url();
        let own = self.node_server_url(n);
        let kc = |path: &str, user: &str, o: Vec<Vec<String>>, servers: Vec<String>| KubeconfigSpec {
            path: format!("etc/kubernetes/{path}"),
            user: user.into(),
            o,
            servers,
            token: false,
        };
        if n.is_cp() {
            v.push(kc("admin.conf", "kubernetes-admin", self.o_admin(), vec![ep.clone()]));
            if self.has_super_admin(n) {
                v.push(kc("super-admin.conf", "kubernetes-super-admin", vec![vec!["system:masters".into()]], vec![ep.clone()]));
            }
            v.push(kc("controller-manager.conf", "system:kube-controller-manager", vec![vec![]], vec![own.clone()]));
            v.push(kc("scheduler.conf", "system:kube-scheduler", vec![vec![]], vec![own.clone()]));
            v.push(kc(
                "kubelet.conf",
                &format!("system:node:{}", n.name),
                vec![vec!["system:nodes".into()]],
                self.cp_kubelet_conf_servers(n),
            ));
        } else if self.worker_join() == "certificate" {
            v.push(kc("kubelet.conf", &format!("system:node:{}", n.name), vec![vec!["system:nodes".into()]], vec![ep]));
        } else {
            let mut k = kc("bootstrap-kubelet.conf", "tls-bootstrap-token-user", vec![], vec![ep]);
            k.token = true;
            v.push(k);
        }
        v
    }

    /// The server of a control plane's kubelet.conf as §4 has it: controlPlaneEndpoint up to
    /// 1.32, the node's own API endpoint from 1.33 on. The brief says controlPlaneEndpoint; the
    /// broad checks accept both and a dedicated test holds the reference's value.
    pub fn cp_kubelet_conf_servers(&self, n: &Node) -> Vec<String> {
        let mut v = vec![self.cp_kubelet_conf_server_reference(n)];
        let ep = self.server_url();
        if !v.contains(&ep) {
            v.push(ep);
        }
        v
    }
    pub fn cp_kubelet_conf_server_reference(&self, n: &Node) -> String {
        if self.minor() >= 33 {
            self.node_server_url(n)
        } else {
            self.server_url()
        }
    }

    /// Other files with fixed modes: (path, mode).
    pub fn other_files(&self, n: &Node) -> Vec<(String, u32)> {
        let mut v = Vec::new();
        if n.is_cp() {
            v.push(("etc/kubernetes/pki/sa.key".to_string(), 0o600));
            v.push(("etc/kubernetes/pki/sa.pub".to_string(), 0o600));
            v.push(("etc/kubernetes/encryption/encryption-config.yaml".to_string(), 0o600));
            v.push(("etc/kubernetes/patches/kube-apiserver+json.yaml".to_string(), 0o644));
        }
        // The kubelet's configuration, and kubeadm's: init on the first control plane, join
        // (holding the token) everywhere else.
        v.push(("var/lib/kubelet/config.yaml".to_string(), 0o644));
        if n.name == self.first_cp().name {
            v.push(("etc/kubernetes/kubeadm-init.yaml".to_string(), 0o644));
        } else {
            v.push(("etc/kubernetes/kubeadm-join.yaml".to_string(), 0o600));
            if self.discovery() == "file" {
                v.push(("etc/kubernetes/discovery.conf".to_string(), 0o644));
            }
        }
        v
    }

    /// The exact set of files under etc/kubernetes/ and var/lib/kubelet/ of the node's tree.
    pub fn expected_files(&self, n: &Node) -> BTreeSet<String> {
        let mut s = BTreeSet::new();
        for c in self.cert_files(n) {
            s.insert(c.crt.clone());
            if let Some(k) = &c.key {
                s.insert(k.clone());
            }
        }
        for k in self.kubeconfigs(n) {
            s.insert(k.path);
        }
        for (p, _) in self.other_files(n) {
            s.insert(p);
        }
        s
    }

    /// The private keys the node may hold (files only; kubeconfigs hold their own client key).
    pub fn allowed_keys(&self, n: &Node) -> BTreeSet<String> {
        let mut s: BTreeSet<String> = self.cert_files(n).into_iter().filter_map(|c| c.key).collect();
        if n.is_cp() {
            s.insert("etc/kubernetes/pki/sa.key".into());
        }
        s
    }
}

pub const PKI_CA: &str = "etc/kubernetes/pki/ca.crt";
pub const PKI_FRONT_PROXY_CA: &str = "etc/kubernetes/pki/front-proxy-ca.crt";
pub const PKI_ETCD_CA: &str = "etc/kubernetes/pki/etcd/ca.crt";
pub const KUBELET_CRT: &str = "var/lib/kubelet/pki/kubelet.crt";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signer {
    Ca,
    FrontProxyCa,
    EtcdCa,
}

impl Signer {
    pub fn id(&self) -> &'static str {
        match self {
            Signer::Ca => "ca",
            Signer::FrontProxyCa => "front-proxy-ca",
            Signer::EtcdCa => "etcd-ca",
        }
    }
    /// Path of the CA certificate in a node tree.
    pub fn node_path(&self) -> &'static str {
        match self {
            Signer::Ca => PKI_CA,
            Signer::FrontProxyCa => PKI_FRONT_PROXY_CA,
            Signer::EtcdCa => PKI_ETCD_CA,
        }
    }
    /// Path of the CA certificate and key under `state/`.
    pub fn state_paths(&self) -> (&'static str, &'static str) {
        match self {
            Signer::Ca => ("pki/ca.crt", "pki/ca.key"),
            Signer::FrontProxyCa => ("pki/front-proxy-ca.crt", "pki/front-proxy-ca.key"),
            Signer::EtcdCa => ("pki/etcd/ca.crt", "pki/etcd/ca.key"),
        }
    }
    pub fn all() -> [Signer; 3] {
        [Signer::Ca, Signer::FrontProxyCa, Signer::EtcdCa]
    }
}

/// SANs in kubeadm's order: DNS names sorted, IPs in insertion order, both de-duplicated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SanSet {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl SanSet {
    pub fn add_dns(&mut self, d: &str) {
        if !self.dns.iter().any(|x| x == d) {
            self.dns.push(d.to_string());
        }
    }
    pub fn add_ip(&mut self, ip: IpAddr) {
        if !self.ips.contains(&ip) {
            self.ips.push(ip);
        }
    }
    pub fn add_any(&mut self, s: &str) {
        match s.parse::<IpAddr>() {
            Ok(ip) => self.add_ip(ip),
            Err(_) => self.add_dns(s),
        }
    }
    pub fn sort_dns(&mut self) {
        self.dns.sort();
    }
    pub fn dns_set(&self) -> BTreeSet<String> {
        self.dns.iter().cloned().collect()
    }
    pub fn ip_set(&self) -> BTreeSet<IpAddr> {
        self.ips.iter().cloned().collect()
    }
    pub fn same_set(&self, other: &SanSet) -> bool {
        self.dns_set() == other.dns_set() && self.ip_set() == other.ip_set()
    }
    pub fn render(&self) -> String {
        let mut v: Vec<String> = self.dns.iter().map(|d| format!("DNS:{d}")).collect();
        v.extend(self.ips.iter().map(|i| format!("IP:{i}")));
        v.join(", ")
    }
}

#[derive(Clone, Debug)]
pub struct CertSpec {
    /// Catalogue id (kubeadm's name) or kubeconfig name.
    pub id: String,
    /// Path relative to the node tree's root.
    pub crt: String,
    pub key: Option<String>,
    pub signer: Signer,
    pub is_ca: bool,
    pub cn: String,
    /// Acceptable O lists (sorted); usually one.
    pub o: Vec<Vec<String>>,
    pub server_auth: bool,
    pub client_auth: bool,
    /// Acceptable SAN sets; empty means no SAN extension at all.
    pub sans: Vec<SanSet>,
}

#[derive(Clone, Debug)]
pub struct KubeconfigSpec {
    pub path: String,
    pub user: String,
    pub o: Vec<Vec<String>>,
    /// Acceptable server URLs; the first is the reference's.
    pub servers: Vec<String>,
    /// bootstrap-kubelet.conf: a token instead of a client certificate.
    pub token: bool,
}
