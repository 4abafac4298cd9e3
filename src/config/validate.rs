//! RawConfig → Config: defaults, per-apiVersion field rules and every semantic check.
//! Every problem is collected (not just the first), each with its position.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde_saphyr::Location;

use super::load::RawConfig;
use super::model::*;
use super::problem::Problems;
use super::raw::{self, Text, S};
use crate::util::duration::{parse_go, DurationError};
use crate::util::version::KubeVersion;

const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/12";
const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(8760 * 3600);
const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(87600 * 3600);
/// kubeadm.k8s.io/v1beta2, the oldest config API read, came with Kubernetes 1.15.
const MIN_MINOR: u32 = 15;
const NODE_NAME_HINT: &str = "node names are lowercase RFC 1123 names: a-z, 0-9, '-' and '.', starting and ending with a letter or digit";

/// A node's files are `nodes/<name>.tar.gz` and (with --unpacked) `nodes/<name>/`: a name ending
/// in `.tar.gz` would make a tree take the path of another node's tarball (`cp1.tar.gz` against
/// `cp1`), and be read back as that node. Such names are refused whether or not the other exists.
fn name_collides(p: &mut Problems, name: &S<Text>, field: &str) -> bool {
    let Some(stem) = name.value.strip_suffix(".tar.gz") else { return false };
    p.error(
        Some(&name.referenced),
        field,
        format!(
            "{:?} ends in .tar.gz: a node's files are nodes/<name>.tar.gz and nodes/<name>/, so the tree of this node would be nodes/{}, the tarball of a node named {stem:?}",
            name.value, name.value
        ),
        Some("rename the node (e.g. without the .tar.gz)"),
    );
    true
}

/// The first service subnet, as the family check names it.
struct ServiceRange {
    first: Option<IpNet>,
    /// "serviceSubnet 10.96.0.0/12 (line 15)", or "(the default)".
    shown: String,
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// kube-apiserver refuses to start when the family of its primary (first) service CIDR is not the
/// family of its advertise address: cmd/kube-apiserver/app/options/validation.go,
/// validatePublicIPServiceClusterIPRangeIPFamilies, "service IP family %q must match public address
/// family %q" (the `kubernetes` Service is single-stack in the primary family, and its endpoints
/// are the advertise addresses). A second, dual-stack service CIDR is not compared. kubeadm passes
/// each control plane's advertise address (here the node's address) and serviceSubnet as they are,
/// so every control-plane node must match; other nodes run no kube-apiserver. An IPv4-mapped
/// IPv6 address counts as IPv4, as Go's To4 reads it (addresses are canonical by now).
fn check_service_family(p: &mut Problems, range: &ServiceRange, node: &str, address: IpAddr, field: &str, position: Option<(u64, u64)>) {
    let Some(first) = range.first else { return };
    if first.addr().is_ipv4() == address.is_ipv4() {
        return;
    }
    let hint = if address.is_ipv4() {
        "make the first serviceSubnet IPv4, e.g. 10.96.0.0/12 (dual-stack: 10.96.0.0/12,fd00:10:96::/112), or give the control planes IPv6 addresses"
    } else {
        "make the first serviceSubnet IPv6, e.g. fd00:10:96::/112 (dual-stack: fd00:10:96::/112,10.96.0.0/12), or give the control planes IPv4 addresses"
    };
    p.error_at(
        position,
        field,
        format!(
            "control plane {node} advertises {address} ({}) but the first {} is {}: kube-apiserver refuses to start (\"service IP family must match public address family\")",
            family(address),
            range.shown,
            family(first.addr())
        ),
        Some(hint),
    );
}

/// A bootstrap token's extra group: `system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]`.
pub fn is_token_group(group: &str) -> bool {
    group.strip_prefix("system:bootstrappers:").is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 256
            && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
            && !rest.ends_with([':', '-'])
    })
}

/// RFC 1123 subdomain, as Kubernetes checks node names and DNS SANs.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A SAN: an IP, a DNS name or a wildcard DNS name (`*.example.com`). DNS names are compared
/// case-insensitively by TLS, so upper case is accepted and lowered.
pub fn parse_san(text: &str) -> Result<San, String> {
    let t = text.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        // ::ffff:10.0.0.11 is 10.0.0.11 (as Go reads it, and writes it in a certificate).
        return Ok(San::Ip(ip.to_canonical()));
    }
    let lower = t.to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    if is_dns_subdomain(name) && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        Ok(San::Dns(lower))
    } else {
        Err(format!("{text:?} is neither an IP address nor a valid DNS name"))
    }
}

fn parse_host(text: &str) -> Option<Host> {
    parse_san(text).ok().filter(|h| !matches!(h, Host::Dns(n) if n.starts_with("*.")))
}

/// Ceilings kubeadm sets on a service subnet: at most 2^20 addresses.
fn check_subnets(text: &str, what: &str) -> Result<Vec<IpNet>, String> {
    let mut nets = Vec::new();
    for part in text.split(',') {
        let p = part.trim();
        let net: IpNet = p.parse().map_err(|_| format!("{p:?} is not a CIDR such as 10.96.0.0/12"))?;
        if net.trunc() != net {
            return Err(format!("{p:?} has host bits set; the network address is {}", net.trunc()));
        }
        nets.push(net);
    }
    match nets.as_slice() {
        [_] => {}
        [a, b] if a.addr().is_ipv4() != b.addr().is_ipv4() => {}
        [_, _] => return Err(format!("a dual-stack {what} needs one IPv4 and one IPv6 CIDR")),
        _ => return Err(format!("{what} takes one CIDR, or two (one IPv4, one IPv6) separated by a comma")),
    }
    Ok(nets)
}

fn duration(p: &mut Problems, v: &S<Text>, field: &str) -> Option<Duration> {
    match parse_go(&v.value) {
        Ok(d) if d.negative => {
            p.error(Some(&v.referenced), field, format!("{:?} is negative", v.value), Some("use a positive duration such as 8760h0m0s"));
            None
        }
        Ok(d) => Some(d.value),
        Err(e @ DurationError::TooLong(_)) => {
            let hint = if field.ends_with(".ttl") {
                "a ttl of 0 never expires"
            } else {
                "certificates last 8760h (a year) by default, CAs 87600h (ten years)"
            };
            p.error(Some(&v.referenced), field, e.to_string(), Some(hint));
            None
        }
        Err(e) => {
            p.error(Some(&v.referenced), field, e.to_string(), Some("use a Go duration such as 24h0m0s or 8760h"));
            None
        }
    }
}

fn sans(p: &mut Problems, list: &Option<Vec<S<Text>>>, field: &str) -> Vec<San> {
    let mut out = Vec::new();
    for s in list.iter().flatten() {
        match parse_san(&s.value) {
            Ok(san) => out.push(san),
            Err(e) => p.error(Some(&s.referenced), field, e, Some("list IP addresses and DNS names only (no ports, schemes or paths)")),
        }
    }
    out
}

/// Fields that exist only in some kubeadm API versions.
fn version_gate(p: &mut Problems, api: &str, loc: Option<&Location>, field: &str, allowed: &[&str]) {
    let version = api.rsplit('/').next().unwrap_or(api);
    if let Some(loc) = loc {
        if !allowed.contains(&version) {
            p.error(
                Some(loc),
                field,
                format!("not a field of {api}"),
                Some(&format!("this field exists in {}; change apiVersion or remove the field", allowed.join(", "))),
            );
        }
    }
}

/// kubeadm's rules for etcd.external: endpoints are URLs, and the three files come together as
/// absolute paths.
fn validate_external_etcd(p: &mut Problems, ext: &S<raw::ExternalEtcd>) {
    let loc = Some(&ext.referenced);
    let e = &ext.value;
    let endpoints = e.endpoints.as_deref().unwrap_or_default();
    if endpoints.is_empty() {
        p.error(
            loc,
            "ClusterConfiguration.etcd.external.endpoints",
            "no endpoints",
            Some("list the etcd client URLs, e.g. https://10.0.0.5:2379"),
        );
    }
    for url in endpoints {
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        let ok = rest.is_some_and(|r| {
            let host_port = r.trim_end_matches('/');
            host_port.rsplit_once(':').is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0))
        });
        if !ok {
            p.error(
                loc,
                "ClusterConfiguration.etcd.external.endpoints",
                format!("{url:?} is not an etcd URL"),
                Some("write https://host:port, e.g. https://10.0.0.5:2379"),
            );
        }
    }
    let files = [("caFile", &e.ca_file), ("certFile", &e.cert_file), ("keyFile", &e.key_file)];
    let set = files.iter().filter(|(_, f)| f.is_some()).count();
    if set != 0 && set != 3 {
        p.error(
            loc,
            "ClusterConfiguration.etcd.external",
            "caFile, certFile and keyFile go together",
            Some("set all three (for TLS) or none"),
        );
    }
    for (name, f) in files {
        if let Some(f) = f.as_ref().filter(|f| !f.starts_with('/')) {
            p.error(loc, &format!("ClusterConfiguration.etcd.external.{name}"), format!("{f:?} must be an absolute path"), None);
        }
    }
}

/// An optional RFC 1123 name with kubeadm's default.
fn dns_name(p: &mut Problems, v: &Option<S<Text>>, field: &str, default: &str, hint: &str) -> String {
    match v {
        Some(n) if is_dns_subdomain(&n.value) => n.value.to_string(),
        Some(n) => {
            p.error(Some(&n.referenced), field, format!("{:?} is not a valid RFC 1123 name", n.value), Some(hint));
            String::new()
        }
        None => default.to_string(),
    }
}

fn loc<T>(v: &Option<S<T>>) -> Option<&Location> {
    v.as_ref().map(|s| &s.referenced)
}

fn validate_cluster_gates(p: &mut Problems, c: &raw::ClusterConfiguration) {
    let api = c.api_version.as_ref().map(|s| s.value.as_str()).unwrap_or("");
    let v4 = &["v1beta4"];
    version_gate(p, api, loc(&c.encryption_algorithm), "ClusterConfiguration.encryptionAlgorithm", v4);
    version_gate(p, api, loc(&c.certificate_validity_period), "ClusterConfiguration.certificateValidityPeriod", v4);
    version_gate(p, api, loc(&c.ca_certificate_validity_period), "ClusterConfiguration.caCertificateValidityPeriod", v4);
    version_gate(p, api, loc(&c.proxy), "ClusterConfiguration.proxy", v4);
    version_gate(p, api, loc(&c.use_hyper_kube_image), "ClusterConfiguration.useHyperKubeImage", &["v1beta2"]);
    if let Some(dns) = &c.dns {
        version_gate(p, api, loc(&dns.type_), "ClusterConfiguration.dns.type", &["v1beta2"]);
        version_gate(p, api, loc(&dns.disabled), "ClusterConfiguration.dns.disabled", v4);
    }
    if let Some(a) = &c.api_server {
        version_gate(
            p,
            api,
            loc(&a.timeout_for_control_plane),
            "ClusterConfiguration.apiServer.timeoutForControlPlane",
            &["v1beta2", "v1beta3"],
        );
        version_gate(p, api, loc(&a.extra_envs), "ClusterConfiguration.apiServer.extraEnvs", v4);
    }
    for (name, comp) in [("controllerManager", &c.controller_manager), ("scheduler", &c.scheduler)] {
        if let Some(comp) = comp {
            version_gate(p, api, loc(&comp.extra_envs), &format!("ClusterConfiguration.{name}.extraEnvs"), v4);
        }
    }
    if let Some(local) = c.etcd.as_ref().and_then(|e| e.local.as_ref()) {
        version_gate(p, api, loc(&local.extra_envs), "ClusterConfiguration.etcd.local.extraEnvs", v4);
    }
}

fn validate_init_gates(p: &mut Problems, i: &raw::InitConfiguration) {
    let api = i.api_version.as_ref().map(|s| s.value.as_str()).unwrap_or("");
    let v4 = &["v1beta4"];
    version_gate(p, api, loc(&i.dry_run), "InitConfiguration.dryRun", v4);
    version_gate(p, api, loc(&i.timeouts), "InitConfiguration.timeouts", v4);
    if let Some(nr) = &i.node_registration {
        version_gate(p, api, loc(&nr.image_pull_serial), "InitConfiguration.nodeRegistration.imagePullSerial", v4);
    }
}

fn validate_token(p: &mut Problems, t: &S<raw::BootstrapToken>, i: usize) -> Option<TokenSpec> {
    let field = |f: &str| format!("InitConfiguration.bootstrapTokens[{i}].{f}");
    let mut spec = TokenSpec::kubeadm_default();
    let errors = |p: &Problems| p.list.iter().filter(|x| !x.warning).count();
    let errors_before = errors(p);
    if let Some(tok) = &t.value.token {
        if crate::pki::token::is_valid(&tok.value) {
            spec.token = Some(tok.value.to_string());
        } else {
            p.error(
                Some(&tok.referenced),
                &field("token"),
                "the token must match [a-z0-9]{6}.[a-z0-9]{16}",
                Some("remove the token to have one generated, or write one such as abcdef.0123456789abcdef"),
            );
        }
    }
    if let Some(d) = &t.value.description {
        match crate::util::text::description(&d.value) {
            Ok(crate::util::text::Description::Ok(text)) => spec.description = Some(text),
            Ok(crate::util::text::Description::Clipped(text, count)) => {
                p.warn(
                    Some(&d.referenced),
                    &field("description"),
                    format!("{count} characters long: clipped to its first {}", crate::util::text::MAX_DESCRIPTION),
                    Some("shorten the description"),
                );
                spec.description = Some(text);
            }
            Err((ch, at)) => p.error(
                Some(&d.referenced),
                &field("description"),
                format!("holds {} at character {at}", crate::util::text::name_of(ch)),
                Some("a description is one line of printable text (no newlines, tabs or escape sequences)"),
            ),
        }
    }
    if let Some(ttl) = &t.value.ttl {
        if let Some(d) = duration(p, ttl, &field("ttl")) {
            spec.ttl = d;
        }
    }
    if let (Some(ttl), Some(_)) = (&t.value.ttl, &t.value.expires) {
        p.error(Some(&ttl.referenced), &field("ttl"), "ttl and expires are mutually exclusive", Some("keep one of them"));
    }
    if let Some(exp) = &t.value.expires {
        match time::OffsetDateTime::parse(&exp.value, &time::format_description::well_known::Rfc3339) {
            Ok(t) => spec.expires = Some(t),
            Err(_) => p.error(
                Some(&exp.referenced),
                &field("expires"),
                format!("{:?} is not an RFC 3339 time", exp.value),
                Some("write e.g. 2026-12-31T00:00:00Z"),
            ),
        }
    }
    if let Some(usages) = &t.value.usages {
        if usages.is_empty() {
            p.error(Some(&t.referenced), &field("usages"), "no usages", Some("use signing and/or authentication"));
        }
        let mut seen = BTreeSet::new();
        for u in usages {
            if !["signing", "authentication"].contains(&u.value.as_str()) {
                p.error(
                    Some(&u.referenced),
                    &field("usages"),
                    format!("unknown usage {:?}", u.value),
                    Some("usages are signing and authentication"),
                );
            } else if !seen.insert(u.value.clone()) {
                p.error(Some(&u.referenced), &field("usages"), format!("{:?} is listed twice", u.value), None);
            }
        }
        spec.usages = usages.iter().map(|u| u.value.to_string()).collect();
    }
    if let Some(groups) = &t.value.groups {
        for g in groups {
            if !is_token_group(&g.value) {
                p.error(
                    Some(&g.referenced),
                    &field("groups"),
                    format!("invalid group {:?}", g.value),
                    Some("groups must match system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9], e.g. system:bootstrappers:kubeadm:default-node-token"),
                );
            }
        }
        spec.groups = groups.iter().map(|g| g.value.to_string()).collect();
        if !spec.groups.is_empty() && !spec.usages.iter().any(|u| u == "authentication") {
            p.error(Some(&t.referenced), &field("groups"), "groups only make sense for a token with the authentication usage", None);
        }
    }
    (errors(p) == errors_before).then_some(spec)
}

/// A line and column in the file, when known.
type Position = Option<(u64, u64)>;

struct Defaults {
    bind_port: u16,
    /// The node InitConfiguration names, with the position of its advertise address.
    init_node: Option<(String, IpAddr, Position)>,
    tokens: Vec<TokenSpec>,
}

fn validate_init(p: &mut Problems, init: Option<&(u64, raw::InitConfiguration)>) -> Defaults {
    let mut d = Defaults { bind_port: 6443, init_node: None, tokens: Vec::new() };
    let Some((offset, i)) = init else { return d };
    p.line_offset = *offset;
    validate_init_gates(p, i);
    let mut address = None;
    if let Some(ep) = &i.local_api_endpoint {
        if let Some(port) = &ep.bind_port {
            match u16::try_from(port.value) {
                Ok(v) if v > 0 => d.bind_port = v,
                _ => p.error(
                    Some(&port.referenced),
                    "InitConfiguration.localAPIEndpoint.bindPort",
                    format!("expected an integer 1–65535, got `{}`", port.value),
                    Some("kube-apiserver usually listens on 6443"),
                ),
            }
        }
        if let Some(a) = &ep.advertise_address {
            match a.value.parse::<IpAddr>() {
                Ok(ip) => address = Some((ip.to_canonical(), p.position(&a.referenced))),
                Err(_) => p.error(
                    Some(&a.referenced),
                    "InitConfiguration.localAPIEndpoint.advertiseAddress",
                    format!("{:?} is not an IP address", a.value),
                    None,
                ),
            }
        }
    }
    let name_field = i.node_registration.as_ref().and_then(|n| n.name.as_ref());
    if let Some(n) = name_field.filter(|n| !is_dns_subdomain(&n.value)) {
        p.error(
            Some(&n.referenced),
            "InitConfiguration.nodeRegistration.name",
            format!("{:?} is not a valid node name", n.value),
            Some(NODE_NAME_HINT),
        );
    } else if let Some(n) = name_field {
        name_collides(p, n, "InitConfiguration.nodeRegistration.name");
    }
    let name = name_field.map(|n| n.value.to_string());
    if let (Some(name), Some(address)) = (name, address) {
        d.init_node = Some((name, address.0, address.1));
    }
    for (n, t) in i.bootstrap_tokens.iter().flatten().enumerate() {
        if let Some(spec) = validate_token(p, t, n) {
            d.tokens.push(spec);
        }
    }
    let mut ids = BTreeMap::new();
    for (n, t) in i.bootstrap_tokens.iter().flatten().enumerate() {
        if let Some(tok) = &t.value.token {
            if let Some(first) = ids.insert(tok.value.split('.').next().unwrap_or("").to_string(), n) {
                p.error(
                    Some(&tok.referenced),
                    &format!("InitConfiguration.bootstrapTokens[{n}].token"),
                    format!("token id repeats bootstrapTokens[{first}]"),
                    Some("token ids must be unique"),
                );
            }
        }
    }
    d
}

fn parse_endpoint(p: &mut Problems, v: &S<Text>, field: &str) -> Option<Endpoint> {
    let text = v.value.trim();
    let hint = Some("write host:port, e.g. lb.example.com:6443, 192.168.1.200:8443 or [fd00::10]:6443");
    if text.contains("://") {
        p.error(Some(&v.referenced), field, format!("{text:?} is a URL; controlPlaneEndpoint is host:port"), hint);
        return None;
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((h, port)) => (h, Some(port)),
            None => (rest.trim_end_matches(']'), None),
        }
    } else if text.matches(':').count() > 1 {
        p.error(Some(&v.referenced), field, format!("{text:?}: an IPv6 address needs brackets"), hint);
        return None;
    } else {
        match text.split_once(':') {
            Some((h, port)) => (h, Some(port)),
            None => (text, None),
        }
    };
    let Some(port) = port else {
        p.error(Some(&v.referenced), field, format!("{text:?} has no port"), hint);
        return None;
    };
    let port = match port.parse::<u16>() {
        Ok(n) if n > 0 => n,
        _ => {
            p.error(Some(&v.referenced), field, format!("{port:?} is not a TCP port (1-65535)"), hint);
            return None;
        }
    };
    let bracketed = text.starts_with('[');
    match parse_host(host) {
        Some(Host::Ip(ip)) if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) => {
            p.error(Some(&v.referenced), field, format!("{ip} cannot be dialled: it is not the address of a host"), hint);
            None
        }
        Some(_) if bracketed && host.parse::<std::net::Ipv6Addr>().is_err() => {
            p.error(Some(&v.referenced), field, format!("{text:?}: only an IPv6 address goes in brackets"), hint);
            None
        }
        Some(host) => Some(Endpoint { host, port }),
        None => {
            p.error(Some(&v.referenced), field, format!("{host:?} is neither an IP address nor a DNS name"), hint);
            None
        }
    }
}

fn validate_nodes(p: &mut Problems, inv: &raw::Inventory, service: &ServiceRange) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut addrs: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for (i, n) in inv.nodes.iter().flatten().enumerate() {
        let field = |f: &str| format!("Inventory.nodes[{i}].{f}");
        let n = &n.value;
        let mut ok = true;
        if !is_dns_subdomain(&n.name.value) {
            p.error(Some(&n.name.referenced), &field("name"), format!("{:?} is not a valid node name", n.name.value), Some(NODE_NAME_HINT));
            ok = false;
        } else {
            // An error, but the node stays (its roles still count).
            name_collides(p, &n.name, &field("name"));
            if let Some(first) = names.insert(n.name.value.to_string(), i) {
                p.error(
                    Some(&n.name.referenced),
                    &field("name"),
                    format!("{:?} is already the name of nodes[{first}]", n.name.value),
                    Some("node names must be unique"),
                );
                ok = false;
            }
        }
        let address = match n.address.value.trim().parse::<IpAddr>() {
            Ok(written) => {
                // ::ffff:10.0.0.11 is 10.0.0.11 (an IPv4-mapped IPv6 address): one address.
                let a = written.to_canonical();
                if let Some(first) = addrs.insert(a, i) {
                    let (what, hint) = if a == written {
                        (format!("{a} is already the address of nodes[{first}]"), "each node needs its own advertise address")
                    } else {
                        (
                            format!("{written} is {a}, already the address of nodes[{first}]"),
                            "an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address a.b.c.d; each node needs its own advertise address",
                        )
                    };
                    p.error(Some(&n.address.referenced), &field("address"), what, Some(hint));
                    ok = false;
                }
                if a.is_unspecified() || a.is_multicast() || a == IpAddr::from([255, 255, 255, 255]) {
                    p.error(Some(&n.address.referenced), &field("address"), format!("{a} cannot be an advertise address"), None);
                    ok = false;
                }
                a
            }
            Err(_) => {
                p.error(
                    Some(&n.address.referenced),
                    &field("address"),
                    format!("{:?} is not an IP address", n.address.value),
                    Some("address is the node's advertise IP (IPv4 or IPv6); put DNS names in extraSANs"),
                );
                ok = false;
                IpAddr::from([0, 0, 0, 0])
            }
        };
        let mut roles = Roles::default();
        if n.roles.is_empty() {
            p.error(None, &field("roles"), "no roles", Some("give each node one or more of control-plane, etcd, worker"));
            ok = false;
        }
        for r in &n.roles {
            let slot = match r.value.as_str() {
                "control-plane" => &mut roles.control_plane,
                "etcd" => &mut roles.etcd,
                "worker" => &mut roles.worker,
                other => {
                    let hint = if other == "master" || other == "controlplane" {
                        Some("did you mean control-plane?")
                    } else {
                        Some("roles are control-plane, etcd and worker")
                    };
                    p.error(Some(&r.referenced), &field("roles"), format!("unknown role {other:?}"), hint);
                    ok = false;
                    continue;
                }
            };
            if *slot {
                p.error(Some(&r.referenced), &field("roles"), format!("role {:?} is listed twice", r.value), None);
                ok = false;
            }
            *slot = true;
        }
        let extra_sans = sans(p, &n.extra_sans, &field("extraSANs"));
        if ok && roles.control_plane {
            let at = p.position(&n.address.referenced);
            check_service_family(p, service, &n.name.value, address, &field("address"), at);
        }
        if ok {
            nodes.push(Node { name: n.name.value.to_string(), address, roles, extra_sans });
        }
    }
    nodes
}

/// Checks everything and applies kubeadm's defaults.
pub fn validate(raw: RawConfig, p: &mut Problems) -> Option<Config> {
    let mut notes = Vec::new();
    let defaults = validate_init(p, raw.init.as_ref());
    let empty = raw::ClusterConfiguration::default();
    let (offset, c) = raw.cluster.as_ref().map(|(o, c)| (*o, c)).unwrap_or((0, &empty));
    p.line_offset = offset;
    if raw.cluster.is_none() {
        notes.push("no ClusterConfiguration document: using kubeadm's defaults".to_string());
    } else {
        validate_cluster_gates(p, c);
    }
    for kind in &raw.ignored {
        notes.push(format!("the {kind} document is accepted but does not change the bundle"));
    }

    let cluster_name = dns_name(
        p,
        &c.cluster_name,
        "ClusterConfiguration.clusterName",
        "kubernetes",
        "use a lowercase RFC 1123 name such as kubernetes; it names the output folder and the kubeconfig cluster",
    );

    let (kubernetes_version, version_defaulted) = match &c.kubernetes_version {
        Some(v) => match KubeVersion::parse(&v.value) {
            Ok(k) if !k.at_least(MIN_MINOR) => {
                p.error(
                    Some(&v.referenced),
                    "ClusterConfiguration.kubernetesVersion",
                    format!("{k} is older than any kubeadm config API kubebundle reads"),
                    Some("kubebundle supports Kubernetes 1.15 and later (kubeadm.k8s.io/v1beta2 and newer)"),
                );
                (pinned_version(), false)
            }
            Ok(k) => (k, false),
            Err(e) => {
                p.error(Some(&v.referenced), "ClusterConfiguration.kubernetesVersion", e, None);
                (pinned_version(), false)
            }
        },
        None => (pinned_version(), true),
    };
    if version_defaulted {
        notes.push(format!(
            "kubernetesVersion is not set: using the built-in pinned {PINNED_KUBERNETES_VERSION} (nothing is looked up online)"
        ));
    }

    let certificates_dir = match &c.certificates_dir {
        Some(d) => {
            let trimmed = d.value.trim_end_matches('/');
            let ok = d.value.starts_with('/')
                && trimmed.len() > 1
                && !trimmed[1..].split('/').any(|s| s == ".." || s == "." || s.is_empty())
                && !d.value.chars().any(|c| c.is_control());
            if !ok {
                p.error(
                    Some(&d.referenced),
                    "ClusterConfiguration.certificatesDir",
                    format!("{:?} must be an absolute path without '.', '..', empty parts or control characters", d.value),
                    Some("the default is /etc/kubernetes/pki"),
                );
            }
            d.value.trim_end_matches('/').to_string()
        }
        None => "/etc/kubernetes/pki".to_string(),
    };

    let api_server_cert_sans = sans(p, &c.api_server.as_ref().and_then(|a| a.cert_sans.clone()), "ClusterConfiguration.apiServer.certSANs");

    let net = c.networking.as_ref();
    let service_subnets = match net.and_then(|n| n.service_subnet.as_ref()) {
        Some(s) => match check_subnets(&s.value, "serviceSubnet") {
            Ok(nets) => {
                for n in &nets {
                    // At most 2^20 addresses (kubeadm), and room for the kubernetes Service IP.
                    let (min, max) = if n.addr().is_ipv4() { (12, 30) } else { (108, 126) };
                    let size = if n.prefix_len() > max {
                        Some(("too small: it must hold the kubernetes Service IP and more", "use a range such as 10.96.0.0/12"))
                    } else if n.prefix_len() < min {
                        Some((
                            "too large: kubeadm allows at most 2^20 service addresses",
                            "use a prefix of /12 or longer for IPv4, /108 or longer for IPv6",
                        ))
                    } else {
                        None
                    };
                    if let Some((what, hint)) = size {
                        p.error(Some(&s.referenced), "ClusterConfiguration.networking.serviceSubnet", format!("{n} is {what}"), Some(hint));
                    }
                }
                nets
            }
            Err(e) => {
                p.error(Some(&s.referenced), "ClusterConfiguration.networking.serviceSubnet", e, None);
                vec![]
            }
        },
        None => vec![DEFAULT_SERVICE_SUBNET.parse().expect("constant CIDR")],
    };
    let service_range = ServiceRange {
        first: service_subnets.first().copied(),
        shown: match (net.and_then(|n| n.service_subnet.as_ref()), service_subnets.first()) {
            (Some(s), Some(first)) => match p.position(&s.referenced) {
                Some((line, _)) => format!("serviceSubnet {first} (line {line})"),
                None => format!("serviceSubnet {first}"),
            },
            (_, first) => format!("serviceSubnet {} (the default)", first.map(|f| f.to_string()).unwrap_or_default()),
        },
    };
    let pod_subnets = match net.and_then(|n| n.pod_subnet.as_ref()) {
        Some(s) => match check_subnets(&s.value, "podSubnet") {
            Ok(nets) => {
                for pn in &nets {
                    if let Some(sn) = service_subnets.iter().find(|sn| sn.contains(pn) || pn.contains(*sn)) {
                        p.error(
                            Some(&s.referenced),
                            "ClusterConfiguration.networking.podSubnet",
                            format!("{pn} overlaps serviceSubnet {sn}"),
                            Some("pods and services need disjoint ranges, e.g. podSubnet 10.244.0.0/16 with serviceSubnet 10.96.0.0/12"),
                        );
                    }
                }
                nets
            }
            Err(e) => {
                p.error(Some(&s.referenced), "ClusterConfiguration.networking.podSubnet", e, None);
                vec![]
            }
        },
        None => vec![],
    };
    if let (Some(sn), Some(pn)) = (service_subnets.first(), pod_subnets.first()) {
        let family = |n: &IpNet| if n.addr().is_ipv4() { "IPv4" } else { "IPv6" };
        if family(sn) != family(pn) {
            let s = net.and_then(|n| n.pod_subnet.as_ref()).map(|s| &s.referenced);
            p.error(
                s,
                "ClusterConfiguration.networking.podSubnet",
                format!("{pn} is {} but serviceSubnet {sn} is {}", family(pn), family(sn)),
                Some("kubeadm needs the same IP family first in both; list the IPv4 and IPv6 ranges in the same order"),
            );
        }
    }
    if service_subnets.len() == 2 && pod_subnets.len() == 1 {
        let s = net.and_then(|n| n.pod_subnet.as_ref()).map(|s| &s.referenced);
        p.error(s, "ClusterConfiguration.networking.podSubnet", "a dual-stack serviceSubnet needs a dual-stack podSubnet", None);
    }
    let dns_domain = dns_name(
        p,
        &net.and_then(|n| n.dns_domain.clone()),
        "ClusterConfiguration.networking.dnsDomain",
        "cluster.local",
        "the default is cluster.local",
    );

    let etcd = match c.etcd.as_ref() {
        Some(raw::Etcd { local: Some(_), external: Some(ext) }) => {
            p.error(Some(&ext.referenced), "ClusterConfiguration.etcd", "both local and external are set", Some("choose one"));
            EtcdMode::External(ExternalEtcd::default())
        }
        Some(raw::Etcd { external: Some(ext), .. }) => {
            validate_external_etcd(p, ext);
            notes.push("etcd is external: no etcd CA, etcd certificates or apiserver-etcd-client are made; the apiserver uses the files named in etcd.external".to_string());
            let e = &ext.value;
            let text = |t: &Option<Text>| t.as_ref().map(|t| t.to_string());
            EtcdMode::External(ExternalEtcd {
                endpoints: e.endpoints.iter().flatten().map(|t| t.to_string()).collect(),
                ca_file: text(&e.ca_file),
                cert_file: text(&e.cert_file),
                key_file: text(&e.key_file),
            })
        }
        Some(raw::Etcd { local: Some(l), .. }) => EtcdMode::Local {
            server_sans: sans(p, &l.server_cert_sans, "ClusterConfiguration.etcd.local.serverCertSANs"),
            peer_sans: sans(p, &l.peer_cert_sans, "ClusterConfiguration.etcd.local.peerCertSANs"),
        },
        _ => EtcdMode::Local { server_sans: vec![], peer_sans: vec![] },
    };

    let algorithm = match &c.encryption_algorithm {
        Some(a) => match KeyAlgorithm::ALL.iter().find(|(n, _)| *n == a.value.as_str()) {
            Some((_, alg)) => *alg,
            None => {
                let names: Vec<&str> = KeyAlgorithm::ALL.iter().map(|(n, _)| *n).collect();
                p.error(
                    Some(&a.referenced),
                    "ClusterConfiguration.encryptionAlgorithm",
                    format!("unknown algorithm {:?}", a.value),
                    Some(&format!("use one of {}", names.join(", "))),
                );
                KeyAlgorithm::Rsa2048
            }
        },
        None => KeyAlgorithm::Rsa2048,
    };
    if algorithm == KeyAlgorithm::EcdsaP384 && !kubernetes_version.at_least(34) {
        notes.push(format!("ECDSA-P384 is accepted by kubeadm only from 1.34; this cluster is {kubernetes_version}"));
    }

    let cert_validity = c
        .certificate_validity_period
        .as_ref()
        .and_then(|v| duration(p, v, "ClusterConfiguration.certificateValidityPeriod"))
        .unwrap_or(DEFAULT_CERT_VALIDITY);
    let ca_validity = c
        .ca_certificate_validity_period
        .as_ref()
        .and_then(|v| duration(p, v, "ClusterConfiguration.caCertificateValidityPeriod"))
        .unwrap_or(DEFAULT_CA_VALIDITY);
    for (value, field, v) in [
        (cert_validity, "ClusterConfiguration.certificateValidityPeriod", &c.certificate_validity_period),
        (ca_validity, "ClusterConfiguration.caCertificateValidityPeriod", &c.ca_certificate_validity_period),
    ] {
        if value < Duration::from_secs(3600) {
            p.error(loc(v), field, "must be at least 1h", Some("the defaults are 8760h (leaves) and 87600h (CAs)"));
        }
    }
    if cert_validity > ca_validity {
        p.error(
            loc(&c.certificate_validity_period),
            "ClusterConfiguration.certificateValidityPeriod",
            "is longer than caCertificateValidityPeriod: a leaf must never outlive its CA",
            Some("shorten certificateValidityPeriod or lengthen caCertificateValidityPeriod"),
        );
    }

    let explicit_endpoint = c.control_plane_endpoint.as_ref().map(|v| parse_endpoint(p, v, "ClusterConfiguration.controlPlaneEndpoint"));

    // The inventory, or the single node InitConfiguration describes.
    p.line_offset = raw.inventory.as_ref().map(|(o, _)| *o).unwrap_or(0);
    let inv_default = raw::Inventory::default();
    let inv = raw.inventory.as_ref().map(|(_, i)| i).unwrap_or(&inv_default);
    let mut nodes = validate_nodes(p, inv, &service_range);
    if raw.inventory.is_none() {
        match &defaults.init_node {
            Some((name, address, at)) if is_dns_subdomain(name) => {
                check_service_family(p, &service_range, name, *address, "InitConfiguration.localAPIEndpoint.advertiseAddress", *at);
                notes.push(format!("no Inventory document: one control-plane node {name} ({address}) from InitConfiguration"));
                nodes.push(Node { name: name.clone(), address: *address, roles: Roles { control_plane: true, etcd: true, worker: false }, extra_sans: vec![] });
            }
            _ => p.error(None, "Inventory", "no nodes: the config has no Inventory document", Some("add a document with apiVersion: kubebundle.dev/v1alpha1, kind: Inventory and a nodes list (see `kubebundle config print-defaults`)")),
        }
    }
    let inv_loc = raw.inventory.as_ref().and_then(|(_, i)| i.kind.as_ref()).map(|k| &k.referenced);
    if raw.inventory.is_some() && nodes.is_empty() && !p.has_errors() {
        p.error(inv_loc, "Inventory.nodes", "no nodes", Some("list at least one node with the control-plane role"));
    }
    if !nodes.is_empty() && !nodes.iter().any(|n| n.roles.control_plane) {
        p.error(inv_loc, "Inventory.nodes", "no node has the control-plane role", Some("give at least one node the role control-plane"));
    }
    match &etcd {
        EtcdMode::Local { .. } => {
            if !nodes.is_empty() && !nodes.iter().any(|n| n.roles.etcd) {
                for n in nodes.iter_mut().filter(|n| n.roles.control_plane) {
                    n.roles.etcd = true;
                }
                notes.push("no node has the etcd role: stacked etcd, every control-plane node is an etcd member".to_string());
            }
            let members = nodes.iter().filter(|n| n.roles.etcd).count();
            if members % 2 == 0 && members > 0 {
                p.warn(
                    inv_loc,
                    "Inventory.nodes",
                    format!("{members} etcd members: an even count tolerates no more failures than {} members", members - 1),
                    Some("use an odd number of etcd members (1, 3 or 5)"),
                );
            }
        }
        EtcdMode::External(_) => {
            if let Some(n) = nodes.iter().find(|n| n.roles.etcd) {
                p.error(
                    inv_loc,
                    "Inventory.nodes",
                    format!("node {} has the etcd role but etcd is external", n.name),
                    Some("remove the etcd role or use etcd.local"),
                );
            }
        }
    }

    // Inventory.initNode: a control plane of the Inventory.
    let init_node = inv.init_node.as_ref().and_then(|s| {
        let cps: Vec<&str> = nodes.iter().filter(|n| n.roles.control_plane).map(|n| n.name.as_str()).collect();
        let hint = format!("name a control-plane node of the Inventory ({}), or remove initNode to use the first one", cps.join(", "));
        match nodes.iter().find(|n| n.name == *s.value) {
            Some(n) if n.roles.control_plane => Some(n.name.clone()),
            Some(_) => {
                p.error(Some(&s.referenced), "Inventory.initNode", format!("{:?} is not a control-plane node", s.value), Some(&hint));
                None
            }
            None => {
                p.error(Some(&s.referenced), "Inventory.initNode", format!("{:?} is not a node of the Inventory", s.value), Some(&hint));
                None
            }
        }
    });
    let endpoint_defaulted = explicit_endpoint.is_none();
    // Without controlPlaneEndpoint, the init node's address (as `kubeadm init` advertises it).
    let control_plane_endpoint = match explicit_endpoint {
        Some(e) => e,
        None => nodes
            .iter()
            .filter(|n| n.roles.control_plane)
            .find(|n| init_node.as_ref().is_none_or(|i| *i == n.name))
            .map(|n| Endpoint { host: Host::Ip(n.address), port: defaults.bind_port }),
    };

    let profile = match &inv.profile {
        Some(s) if super::BUILTIN_PROFILES.contains(&s.value.as_str()) || is_profile_file(&s.value) => s.value.to_string(),
        Some(s) => {
            p.error(
                Some(&s.referenced),
                "Inventory.profile",
                format!("unknown profile {:?}", s.value),
                Some(&format!("built-in profiles: {}", super::BUILTIN_PROFILES.join(", "))),
            );
            String::new()
        }
        None => "kubeadm".to_string(),
    };
    let worker_join = match inv.worker_join.as_ref().map(|s| (s, s.value.as_str())) {
        None | Some((_, "token")) => WorkerJoin::Token,
        Some((_, "certificate")) => WorkerJoin::Certificate,
        Some((s, other)) => {
            p.error(
                Some(&s.referenced),
                "Inventory.workerJoin",
                format!("unknown value {other:?}"),
                Some("use token (TLS bootstrap with bootstrap-kubelet.conf) or certificate (pre-issued kubelet.conf)"),
            );
            WorkerJoin::Token
        }
    };

    let discovery = match inv.discovery.as_ref().map(|s| (s, s.value.as_str())) {
        None | Some((_, "token")) => Discovery::Token,
        Some((_, "file")) => Discovery::File,
        Some((s, other)) => {
            p.error(
                Some(&s.referenced),
                "Inventory.discovery",
                format!("unknown value {other:?}"),
                Some("use token (kubeadm-join.yaml fetches cluster-info and checks the CA hash) or file (it reads the discovery.conf shipped in the tarball)"),
            );
            Discovery::Token
        }
    };

    let encryption_provider = match inv.encryption_provider.as_ref() {
        None => EncryptionProvider::default(),
        Some(s) => {
            match EncryptionProvider::parse(s.value.as_str()) {
                Some(provider) => provider,
                None => {
                    p.error(
                    Some(&s.referenced),
                    "Inventory.encryptionProvider",
                    format!("unknown value {:?}", s.value),
                    Some("use aescbc (the default), aesgcm or secretbox: the EncryptionConfiguration provider of the keys kubebundle makes"),
                );
                    EncryptionProvider::default()
                }
            }
        }
    };

    let mut export: Vec<String> = Vec::new();
    for s in inv.export.iter().flatten() {
        match s.value.as_str() {
            v @ ("cloud-init" | "ignition") => {
                if !export.iter().any(|e| e == v) {
                    export.push(v.to_string());
                }
            }
            other => p.error(
                Some(&s.referenced),
                "Inventory.export",
                format!("unknown value {other:?}"),
                Some("use cloud-init (user-data with write_files) or ignition (an Ignition 3.3.0 config), or both: export: [cloud-init, ignition]"),
            ),
        }
    }
    export.sort();
    let export_runcmd = inv.export_runcmd.as_ref().is_some_and(|b| b.value);

    if p.has_errors() {
        return None;
    }
    Some(Config {
        source: p.file.clone(),
        cluster_name,
        kubernetes_version,
        version_defaulted,
        control_plane_endpoint: control_plane_endpoint?,
        endpoint_defaulted,
        bind_port: defaults.bind_port,
        certificates_dir,
        api_server_cert_sans,
        service_subnets,
        pod_subnets,
        dns_domain,
        etcd,
        algorithm,
        cert_validity,
        ca_validity,
        tokens: defaults.tokens,
        nodes,
        init_node_by: init_node.as_ref().map(|_| "Inventory.initNode".to_string()),
        init_node,
        inventory_position: inv_loc.and_then(|l| p.position(l)),
        profile,
        base_dir: None,
        worker_join,
        discovery,
        encryption_provider,
        export,
        export_runcmd,
        seed: None,
        notes,
    })
}

/// A profile given as a file rather than a built-in name.
pub fn is_profile_file(value: &str) -> bool {
    value.contains('/') || value.ends_with(".yaml") || value.ends_with(".yml")
}

fn pinned_version() -> KubeVersion {
    KubeVersion::parse(PINNED_KUBERNETES_VERSION).expect("the pinned version parses")
}
