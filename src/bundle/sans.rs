//! Pure SAN resolution for every catalogue rule (reference §2).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::{Config, EtcdMode, Host, Node, San};
use crate::pki::catalog::SanRule;
pub use crate::pki::issue::AltNames;

/// Adds a SAN of the config (an IP or a DNS name).
fn add(names: &mut AltNames, san: &San) {
    match san {
        Host::Ip(ip) => names.add_ip(*ip),
        Host::Dns(d) => names.add_dns(d),
    }
}

pub fn resolve(rule: SanRule, common_name: &str, config: &Config, node: Option<&Node>) -> AltNames {
    let mut names = AltNames::default();
    match (rule, node) {
        (SanRule::None, _) => {}
        (SanRule::CommonName, _) => names.add_dns(common_name),
        (SanRule::ApiServer, Some(node)) => {
            for d in [
                "kubernetes".to_string(),
                "kubernetes.default".into(),
                "kubernetes.default.svc".into(),
                format!("kubernetes.default.svc.{}", config.dns_domain),
            ] {
                names.add_dns(&d);
            }
            names.add_dns(&node.name);
            names.add_ip(config.api_service_ip());
            names.add_ip(node.address);
            let extra = std::iter::once(&config.control_plane_endpoint.host).chain(&config.api_server_cert_sans).chain(&node.extra_sans);
            extra.for_each(|s| add(&mut names, s));
        }
        (SanRule::EtcdServer | SanRule::EtcdPeer, Some(node)) => {
            names.add_dns(&node.name);
            names.add_dns("localhost");
            names.add_ip(node.address);
            names.add_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            names.add_ip(IpAddr::V6(Ipv6Addr::LOCALHOST));
            if let EtcdMode::Local { server_sans, peer_sans } = &config.etcd {
                let list = if rule == SanRule::EtcdServer { server_sans } else { peer_sans };
                list.iter().for_each(|s| add(&mut names, s));
            }
            node.extra_sans.iter().for_each(|s| add(&mut names, s));
        }
        (SanRule::KubeletServing, Some(node)) => {
            names.add_dns(&node.name);
            names.add_ip(node.address);
            node.extra_sans.iter().for_each(|s| add(&mut names, s));
        }
        (_, None) => {}
    }
    // kubeadm (RemoveDuplicateAltNames) writes DNS names sorted; IPs keep their order.
    names.dns.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    const CFG: &str = "apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
controlPlaneEndpoint: lb.example.com:6443
apiServer:
  certSANs: [zz.example.com, 10.0.0.10, 10.0.0.11, a.example.com]
networking: {serviceSubnet: 10.96.0.0/12, dnsDomain: corp.local}
etcd:
  local:
    serverCertSANs: [etcd.example.com]
---
apiVersion: kubebundle.dev/v1alpha1
kind: Inventory
nodes:
- {name: cp1, address: 10.0.0.11, roles: [control-plane, etcd], extraSANs: [cp1.example.com]}
";

    #[test]
    fn apiserver_sans_match_kubeadm() {
        let c = load_str(CFG, "t").unwrap();
        let n = &c.nodes[0];
        let s = resolve(SanRule::ApiServer, "kube-apiserver", &c, Some(n));
        assert_eq!(
            s.dns,
            [
                "a.example.com",
                "cp1",
                "cp1.example.com",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.corp.local",
                "lb.example.com",
                "zz.example.com"
            ]
        );
        let ips: Vec<String> = s.ips.iter().map(|i| i.to_string()).collect();
        assert_eq!(ips, ["10.96.0.1", "10.0.0.11", "10.0.0.10"]);
    }

    #[test]
    fn etcd_sans_include_loopback() {
        let c = load_str(CFG, "t").unwrap();
        let s = resolve(SanRule::EtcdServer, "cp1", &c, Some(&c.nodes[0]));
        assert_eq!(s.dns, ["cp1", "cp1.example.com", "etcd.example.com", "localhost"]);
        let ips: Vec<String> = s.ips.iter().map(|i| i.to_string()).collect();
        assert_eq!(ips, ["10.0.0.11", "127.0.0.1", "::1"]);
        let peer = resolve(SanRule::EtcdPeer, "cp1", &c, Some(&c.nodes[0]));
        assert!(!peer.dns.contains(&"etcd.example.com".to_string()));
    }
}
