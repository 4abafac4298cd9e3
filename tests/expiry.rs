//! `kubebundle::lifecycle::expiry` (`certs check-expiration`): the real kubeadm v1.24 tree, checked against
//! openssl; warning, expired, broken-chain, externally-managed and unreadable cases on copies of
//! it; every output format; kubebundle bundles, node trees and state directories.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::copy_dir;
use kubebundle::lifecycle::expiry::{self, CertStatus, ExpiryArgs, ExpiryError, ExpiryReport, Format, Status};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const THIRTY_DAYS: Duration = Duration::from_secs(30 * 86_400);

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/kubeadm-v1.24-etc-kubernetes")
}

fn at(rfc3339: &str) -> OffsetDateTime {
    OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap()
}

fn check(dir: &Path, now: &str) -> ExpiryReport {
    try_check(dir, now).unwrap_or_else(|e| panic!("check_expiration({}) failed: {e}", dir.display()))
}

fn try_check(dir: &Path, now: &str) -> Result<ExpiryReport, ExpiryError> {
    expiry::check_expiration(&ExpiryArgs { dir: dir.to_path_buf(), now: at(now), warn_within: THIRTY_DAYS, profile: None })
}

fn names(list: &[CertStatus]) -> Vec<&str> {
    list.iter().map(|c| c.name.as_str()).collect()
}

fn find<'a>(r: &'a ExpiryReport, name: &str) -> &'a CertStatus {
    r.certificates
        .iter()
        .chain(&r.certificate_authorities)
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{name} not in the report: {:?} / {:?}", names(&r.certificates), names(&r.certificate_authorities)))
}

fn temp(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("kb-expiry-{prefix}-")).tempdir().unwrap()
}

/// A writable copy of the kubeadm fixture.
fn fixture_copy(prefix: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = temp(prefix);
    let tree = dir.path().join("etc-kubernetes");
    copy_dir(&fixture(), &tree);
    (dir, tree)
}

/// `openssl x509 -enddate` of a PEM file, as RFC 3339.
fn openssl_enddate(pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
        .arg(pem)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl x509 {}: {}", pem.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().strip_prefix("notAfter=").unwrap_or_else(|| panic!("unexpected openssl output {text:?}")).replace(' ', "T")
}

/// The client certificate of a kubeconfig, written to a file for openssl.
fn kubeconfig_cert(conf: &Path, scratch: &Path) -> PathBuf {
    let text = std::fs::read_to_string(conf).unwrap();
    let line = text.lines().find_map(|l| l.trim().strip_prefix("client-certificate-data:")).expect("client-certificate-data");
    let pem = B64.decode(line.trim()).unwrap();
    let out = scratch.join(format!("{}.crt", conf.file_name().unwrap().to_string_lossy()));
    std::fs::write(&out, pem).unwrap();
    out
}

const KUBEADM_CERTS: &[&str] = &[
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
    // kubeadm's own list omits kubelet.conf; its embedded certificate expires like the others
    // when the kubelet never rotated it (issue 13), so kubebundle lists it.
    "kubelet.conf",
];
const KUBEADM_CAS: &[&str] = &["ca", "etcd-ca", "front-proxy-ca"];

// ---------------------------------------------------------------------------------------------
// The kubeadm fixture

#[test]
fn kubeadm_fixture_matches_kubeadm_and_openssl() {
    let r = check(&fixture(), "2026-12-01T00:00:00Z");
    assert_eq!(r.exit_code(), 0, "{}", r.render(Format::Table));
    assert_eq!(names(&r.certificates), KUBEADM_CERTS);
    assert_eq!(names(&r.certificate_authorities), KUBEADM_CAS);
    assert_eq!(r.now, "2026-12-01T00:00:00Z");

    let scratch = temp("openssl");
    let pki = fixture().join("pki");
    let files: &[(&str, PathBuf)] = &[
        ("admin.conf", kubeconfig_cert(&fixture().join("admin.conf"), scratch.path())),
        ("apiserver", pki.join("apiserver.crt")),
        ("apiserver-etcd-client", pki.join("apiserver-etcd-client.crt")),
        ("apiserver-kubelet-client", pki.join("apiserver-kubelet-client.crt")),
        ("controller-manager.conf", kubeconfig_cert(&fixture().join("controller-manager.conf"), scratch.path())),
        ("etcd-healthcheck-client", pki.join("etcd/healthcheck-client.crt")),
        ("etcd-peer", pki.join("etcd/peer.crt")),
        ("etcd-server", pki.join("etcd/server.crt")),
        ("front-proxy-client", pki.join("front-proxy-client.crt")),
        ("scheduler.conf", kubeconfig_cert(&fixture().join("scheduler.conf"), scratch.path())),
        ("kubelet.conf", kubeconfig_cert(&fixture().join("kubelet.conf"), scratch.path())),
        ("ca", pki.join("ca.crt")),
        ("etcd-ca", pki.join("etcd/ca.crt")),
        ("front-proxy-ca", pki.join("front-proxy-ca.crt")),
    ];
    for (name, file) in files {
        let c = find(&r, name);
        assert_eq!(c.expires, openssl_enddate(file), "{name}");
        assert_eq!(OffsetDateTime::from_unix_timestamp(c.expires_unix).unwrap(), at(&c.expires), "{name}");
        assert_eq!(c.residual_seconds, c.expires_unix - at("2026-12-01T00:00:00Z").unix_timestamp(), "{name}");
        assert_eq!(c.status, Status::Ok, "{name}: {}", c.detail);
        assert_eq!(c.detail, "", "{name}");
        assert!(!c.externally_managed, "{name}");
        assert_eq!(c.ca_key, "node", "{name}");
        assert!(!c.kubelet_rotated, "{name}: the fixture's kubelet.conf embeds its certificate");
    }
    let ca_of = |n: &str| find(&r, n).certificate_authority.clone();
    for n in ["admin.conf", "apiserver", "apiserver-kubelet-client", "controller-manager.conf", "scheduler.conf", "kubelet.conf"] {
        assert_eq!(ca_of(n), "ca", "{n}");
    }
    for n in ["apiserver-etcd-client", "etcd-healthcheck-client", "etcd-peer", "etcd-server"] {
        assert_eq!(ca_of(n), "etcd-ca", "{n}");
    }
    assert_eq!(ca_of("front-proxy-client"), "front-proxy-ca");
    for n in KUBEADM_CAS {
        assert_eq!(ca_of(n), "", "{n}");
    }
    // Paths name the file read (the kubeconfig for embedded certificates).
    assert!(find(&r, "etcd-peer").path.ends_with("pki/etcd/peer.crt"));
    assert!(find(&r, "admin.conf").path.ends_with("/admin.conf"));
    // Residual time as kubeadm prints it.
    assert_eq!(find(&r, "apiserver").residual, "356d");
    assert_eq!(find(&r, "ca").residual, "9y");
}

#[test]
fn table_has_kubeadm_layout() {
    let r = check(&fixture(), "2026-12-01T00:00:00Z");
    let t = r.render(Format::Table);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "CERTIFICATE                EXPIRES                  RESIDUAL TIME   CERTIFICATE AUTHORITY   EXTERNALLY MANAGED");
    assert_eq!(lines[1], "admin.conf                 Nov 22, 2027 09:40 UTC   356d            ca                      no");
    assert_eq!(lines[11], "kubelet.conf               Nov 22, 2027 09:40 UTC   356d            ca                      no");
    assert_eq!(lines[12], "");
    assert_eq!(lines[13], "CERTIFICATE AUTHORITY   EXPIRES                  RESIDUAL TIME   EXTERNALLY MANAGED");
    assert_eq!(lines[14], "ca                      Nov 19, 2036 09:40 UTC   9y              no");
    assert_eq!(lines.len(), 17, "{t}");
    assert!(!t.contains("STATUS"), "no status column when all is well:\n{t}");
}

#[test]
fn within_warn_window_exits_3() {
    let r = check(&fixture(), "2027-11-01T00:00:00Z");
    assert_eq!(r.exit_code(), 3, "{}", r.render(Format::Table));
    for c in &r.certificates {
        assert_eq!(c.status, Status::Warning, "{}", c.name);
        assert_eq!(c.residual, "21d", "{}", c.name);
        assert!(c.detail.contains("expires on 2027-11-22"), "{}: {}", c.name, c.detail);
    }
    for c in &r.certificate_authorities {
        assert_eq!(c.status, Status::Ok, "{}", c.name);
    }
    let t = r.render(Format::Table);
    assert!(t.lines().next().unwrap().ends_with("EXTERNALLY MANAGED   STATUS"), "{t}");
    // A shorter window: nothing to warn about.
    let quiet = expiry::check_expiration(&ExpiryArgs {
        dir: fixture(),
        now: at("2027-11-01T00:00:00Z"),
        warn_within: Duration::from_secs(7 * 86_400),
        profile: None,
    })
    .unwrap();
    assert_eq!(quiet.exit_code(), 0);
}

#[test]
fn after_expiry_exits_4_with_invalid_residual() {
    let r = check(&fixture(), "2027-12-01T00:00:00Z");
    assert_eq!(r.exit_code(), 4);
    for c in &r.certificates {
        assert_eq!(c.status, Status::Expired, "{}", c.name);
        assert_eq!(c.residual, "<invalid>", "{}", c.name);
        assert!(c.residual_seconds < 0, "{}", c.name);
    }
    assert_eq!(find(&r, "ca").status, Status::Ok);
    assert!(r.render(Format::Table).contains("<invalid>"));
    // The CAs' own expiry counts too.
    let late = check(&fixture(), "2036-12-01T00:00:00Z");
    assert_eq!(find(&late, "ca").status, Status::Expired);
    assert_eq!(find(&late, "etcd-ca").residual, "<invalid>");
}

#[test]
fn broken_chain_is_invalid_chain() {
    let (_dir, tree) = fixture_copy("chain");
    let b = bundle();
    std::fs::copy(b.cluster.join("nodes/cp1/etc/kubernetes/pki/apiserver.crt"), tree.join("pki/apiserver.crt")).unwrap();
    // An RSA leaf of the right CA's family but signed by another CA: front-proxy-client signed by ca.
    std::fs::copy(tree.join("pki/apiserver-kubelet-client.crt"), tree.join("pki/front-proxy-client.crt")).unwrap();
    let r = check(&tree, "2026-12-01T00:00:00Z");
    assert_eq!(r.exit_code(), 4);
    let api = find(&r, "apiserver");
    assert_eq!(api.status, Status::InvalidChain, "{api:?}");
    assert!(api.detail.contains("not signed by ca"), "{}", api.detail);
    let fp = find(&r, "front-proxy-client");
    assert_eq!(fp.status, Status::InvalidChain, "{fp:?}");
    assert!(fp.detail.contains("front-proxy-ca"), "{}", fp.detail);
    for c in r.certificates.iter().filter(|c| c.name != "apiserver" && c.name != "front-proxy-client") {
        assert_eq!(c.status, Status::Ok, "{}: {}", c.name, c.detail);
    }
    let t = r.render(Format::Table);
    assert!(t.contains("apiserver: invalid-chain: not signed by ca"), "{t}");
    // A missing CA certificate breaks the chain of what it signed.
    std::fs::remove_file(tree.join("pki/etcd/ca.crt")).unwrap();
    let r = check(&tree, "2026-12-01T00:00:00Z");
    assert!(!names(&r.certificate_authorities).contains(&"etcd-ca"));
    let peer = find(&r, "etcd-peer");
    assert_eq!(peer.status, Status::InvalidChain);
    assert!(peer.detail.contains("etcd-ca is missing"), "{}", peer.detail);
}

#[test]
fn removed_ca_key_means_externally_managed() {
    let (_dir, tree) = fixture_copy("external");
    std::fs::remove_file(tree.join("pki/ca.key")).unwrap();
    let r = check(&tree, "2026-12-01T00:00:00Z");
    assert_eq!(r.exit_code(), 0);
    assert!(find(&r, "ca").externally_managed);
    assert!(!find(&r, "etcd-ca").externally_managed);
    assert!(!find(&r, "front-proxy-ca").externally_managed);
    for c in &r.certificates {
        assert_eq!(c.externally_managed, c.certificate_authority == "ca", "{}", c.name);
    }
    let t = r.render(Format::Table);
    assert!(t.lines().any(|l| l.starts_with("apiserver ") && l.ends_with("ca                      yes")), "{t}");
    assert!(t.lines().any(|l| l.starts_with("ca ") && l.ends_with("yes")), "{t}");
}

#[test]
fn unreadable_files_are_a_status_not_a_crash() {
    let (_dir, tree) = fixture_copy("garbage");
    std::fs::write(tree.join("pki/apiserver.crt"), "not a certificate\n").unwrap();
    std::fs::write(tree.join("scheduler.conf"), "users: [{name: x, user: {client-certificate-data: '!!'}}]\n").unwrap();
    std::fs::write(tree.join("admin.conf"), [0xff, 0xfe, 0x00]).unwrap();
    std::fs::write(tree.join("pki/front-proxy-ca.crt"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    let r = check(&tree, "2026-12-01T00:00:00Z");
    assert_eq!(r.exit_code(), 4);
    for n in ["apiserver", "scheduler.conf", "admin.conf", "front-proxy-ca"] {
        let c = find(&r, n);
        assert_eq!(c.status, Status::Unreadable, "{n}: {c:?}");
        assert!(!c.detail.is_empty(), "{n}");
        assert_eq!(c.residual, "<invalid>", "{n}");
    }
    // What front-proxy-ca signed cannot be checked.
    assert_eq!(find(&r, "front-proxy-client").status, Status::InvalidChain);
    assert_eq!(find(&r, "etcd-peer").status, Status::Ok);
    // Every format still renders.
    for f in [Format::Table, Format::Json, Format::Yaml, Format::Prometheus] {
        assert!(!r.render(f).is_empty());
    }
    let prom = r.render(Format::Prometheus);
    assert!(!prom.contains("kubebundle_certificate_expiry_timestamp_seconds{name=\"apiserver\""), "{prom}");
    assert!(prom.contains("kubebundle_certificate_chain_valid{name=\"apiserver\","), "{prom}");
}

// ---------------------------------------------------------------------------------------------
// Output formats

#[test]
fn json_and_yaml_follow_the_documented_schema() {
    let r = check(&fixture(), "2026-12-01T00:00:00Z");
    let v: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
    let keys = |o: &serde_json::Value| {
        let mut k: Vec<String> = o.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&v), ["apiVersion", "certificateAuthorities", "certificates", "kind", "now", "warnWithinSeconds"]);
    assert_eq!(v["apiVersion"], "kubebundle.dev/v1alpha1");
    assert_eq!(v["kind"], "CertificateExpirationReport");
    assert_eq!(v["now"], "2026-12-01T00:00:00Z");
    assert_eq!(v["warnWithinSeconds"], 30 * 86_400);
    // Fields are only added: caKey and kubeletRotated came with issue 13.
    let cert_keys = [
        "caKey",
        "certificateAuthority",
        "detail",
        "expires",
        "expiresUnix",
        "externallyManaged",
        "kubeletRotated",
        "name",
        "path",
        "residual",
        "residualSeconds",
        "status",
    ];
    for list in ["certificates", "certificateAuthorities"] {
        for c in v[list].as_array().unwrap() {
            assert_eq!(keys(c), cert_keys);
            assert_eq!(c["status"], "ok");
        }
    }
    let api = v["certificates"].as_array().unwrap().iter().find(|c| c["name"] == "apiserver").unwrap();
    assert_eq!(api["expires"], "2027-11-22T09:40:52Z");
    assert_eq!(api["expiresUnix"], at("2027-11-22T09:40:52Z").unix_timestamp());
    assert_eq!(api["certificateAuthority"], "ca");
    assert_eq!(api["externallyManaged"], false);

    let broken = {
        let (dir, tree) = fixture_copy("json");
        std::fs::copy(tree.join("pki/apiserver-kubelet-client.crt"), tree.join("pki/etcd/peer.crt")).unwrap();
        let r = check(&tree, "2026-12-01T00:00:00Z");
        drop(dir);
        r
    };
    let v: serde_json::Value = serde_json::from_str(&broken.render(Format::Json)).unwrap();
    let peer = v["certificates"].as_array().unwrap().iter().find(|c| c["name"] == "etcd-peer").unwrap();
    assert_eq!(peer["status"], "invalid-chain");

    // YAML holds the same document.
    let yaml = r.render(Format::Yaml);
    let from_yaml: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    let from_json: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
    assert_eq!(from_yaml, from_json, "{yaml}");
}

/// One exposition-format sample: metric name, labels in order, value.
type Sample = (String, Vec<(String, String)>, String);

/// `name{labels} value` → (name, labels, value); None for a line that does not parse.
fn parse_sample(line: &str) -> Option<Sample> {
    let open = line.find('{')?;
    let name = line[..open].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[open + 1..];
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            rest = r;
            break;
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].to_string();
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let end;
        loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => {
                    end = eq + 1 + i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key, value));
        rest = &rest[end..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    let value = rest.strip_prefix(' ')?.to_string();
    if value.is_empty() || value.contains(' ') {
        return None;
    }
    Some((name, labels, value))
}

#[test]
fn prometheus_lines_parse_and_carry_the_expiry() {
    let r = check(&fixture(), "2026-12-01T00:00:00Z");
    let text = r.render(Format::Prometheus);
    let mut expiry = 0;
    let mut chain = 0;
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (name, labels, value) = parse_sample(line).unwrap_or_else(|| panic!("unparsable line {line:?}"));
        let label = |k: &str| labels.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["name", "path", "ca", "kind"], "{line}");
        let c = find(&r, &label("name"));
        assert_eq!(label("path"), c.path);
        assert_eq!(label("ca"), c.certificate_authority);
        let kind = if KUBEADM_CAS.contains(&c.name.as_str()) { "certificate-authority" } else { "certificate" };
        assert_eq!(label("kind"), kind);
        match name.as_str() {
            "kubebundle_certificate_expiry_timestamp_seconds" => {
                expiry += 1;
                assert_eq!(value.parse::<i64>().unwrap(), c.expires_unix, "{line}");
            }
            "kubebundle_certificate_chain_valid" => {
                chain += 1;
                assert_eq!(value, "1", "{line}");
            }
            other => panic!("unexpected metric {other}"),
        }
    }
    assert_eq!(expiry, KUBEADM_CERTS.len() + KUBEADM_CAS.len());
    assert_eq!(chain, expiry);
    assert!(text.contains("# TYPE kubebundle_certificate_expiry_timestamp_seconds gauge\n"));
    assert!(text.contains("# TYPE kubebundle_certificate_chain_valid gauge\n"));

    // Label values are escaped: a directory name with a quote and a backslash.
    let dir = temp("prom");
    let odd = dir.path().join("we\"ird\\dir");
    copy_dir(&fixture(), &odd);
    let r = check(&odd, "2026-12-01T00:00:00Z");
    let text = r.render(Format::Prometheus);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, labels, _) = parse_sample(line).unwrap_or_else(|| panic!("unparsable line {line:?}"));
        assert!(labels[1].1.contains("we\"ird\\dir"), "{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// kubebundle output

struct Bundle {
    _dir: tempfile::TempDir,
    cluster: PathBuf,
}

const GENERATED_AT: &str = "2026-01-01T00:00:00Z";
const CHECKED_AT: &str = "2026-02-01T00:00:00Z";

/// The bundle's config: three nodes, ECDSA-P256 (shared with the other suites' configs).
fn bundle_config() -> String {
    common::live_config(
        "exp",
        &[("cp1", "10.7.0.11", "control-plane, etcd"), ("cp2", "10.7.0.12", "control-plane, etcd"), ("w1", "10.7.0.21", "worker")],
    )
}

fn bundle() -> &'static Bundle {
    static B: OnceLock<Bundle> = OnceLock::new();
    B.get_or_init(|| {
        let dir = temp("bundle");
        let cfg = dir.path().join("cluster.yaml");
        std::fs::write(&cfg, bundle_config()).unwrap();
        let out = dir.path().join("out");
        let args = ["generate", "--unpacked", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--now", GENERATED_AT];
        let run = common::kubebundle(dir.path(), &args, &[]);
        assert!(run.ok(), "{}", run.describe());
        Bundle { cluster: out.join("exp"), _dir: dir }
    })
}

fn node_leaves(node: &str, first: bool, control_plane: bool) -> Vec<String> {
    let mut v: Vec<&str> = Vec::new();
    if control_plane {
        v.extend(["admin.conf", "apiserver", "apiserver-etcd-client", "apiserver-kubelet-client", "controller-manager.conf"]);
        v.extend(["etcd-healthcheck-client", "etcd-peer", "etcd-server", "front-proxy-client", "scheduler.conf"]);
        if first {
            v.push("super-admin.conf");
        }
        v.push("kubelet.conf");
    }
    v.push("kubelet-serving");
    v.iter().map(|n| if node.is_empty() { n.to_string() } else { format!("{node}/{n}") }).collect()
}

#[test]
fn bundle_dir_lists_state_cas_and_every_node() {
    let b = bundle();
    let r = check(&b.cluster, CHECKED_AT);
    assert_eq!(r.exit_code(), 0, "{}", r.render(Format::Table));
    let mut expected = node_leaves("cp1", true, true);
    expected.extend(node_leaves("cp2", false, true));
    expected.extend(node_leaves("w1", false, false));
    assert_eq!(names(&r.certificates), expected);
    assert_eq!(names(&r.certificate_authorities), KUBEADM_CAS);
    for c in r.certificate_authorities.iter() {
        assert!(c.path.contains("/state/pki/"), "{}", c.path);
        assert!(!c.externally_managed, "{}", c.name);
        assert_eq!(c.residual, "9y", "{}", c.name);
    }
    for c in &r.certificates {
        // Signed by the state's CAs, whose keys kubebundle holds.
        assert!(!c.externally_managed, "{}", c.name);
        assert_eq!(c.status, Status::Ok, "{}: {}", c.name, c.detail);
        assert_eq!(c.expires, openssl_expiry_of(c, b), "{}", c.name);
    }
    assert_eq!(find(&r, "w1/kubelet-serving").certificate_authority, "ca");
    assert!(find(&r, "w1/kubelet-serving").path.ends_with("nodes/w1/var/lib/kubelet/pki/kubelet.crt"));

    // Leaves of 1 year: warning a month before, expired after.
    let late = check(&b.cluster, "2026-12-15T00:00:00Z");
    assert_eq!(late.exit_code(), 3);
    let after = check(&b.cluster, "2027-02-01T00:00:00Z");
    assert_eq!(after.exit_code(), 4);
    assert_eq!(find(&after, "cp2/etcd-peer").residual, "<invalid>");

    // A leaf of one node replaced by another cluster's: that node's row breaks, no other.
    let dir = temp("bundle-chain");
    let copy = dir.path().join("exp");
    copy_dir(&b.cluster, &copy);
    std::fs::copy(fixture().join("pki/apiserver.crt"), copy.join("nodes/cp2/etc/kubernetes/pki/apiserver.crt")).unwrap();
    let r = check(&copy, CHECKED_AT);
    assert_eq!(r.exit_code(), 4);
    assert_eq!(find(&r, "cp2/apiserver").status, Status::InvalidChain);
    assert_eq!(find(&r, "cp1/apiserver").status, Status::Ok);
}

/// What openssl says about the file behind a report row.
fn openssl_expiry_of(c: &CertStatus, _b: &Bundle) -> String {
    let path = Path::new(&c.path);
    if path.extension().is_some_and(|e| e == "conf") {
        let scratch = temp("conf");
        openssl_enddate(&kubeconfig_cert(path, scratch.path()))
    } else {
        openssl_enddate(path)
    }
}

#[test]
fn node_trees_and_state_dir() {
    let b = bundle();
    let cp1 = b.cluster.join("nodes/cp1");
    let from_root = check(&cp1, CHECKED_AT);
    let from_etc = check(&cp1.join("etc/kubernetes"), CHECKED_AT);
    assert_eq!(from_root.exit_code(), 0, "{}", from_root.render(Format::Table));
    assert_eq!(names(&from_root.certificates), node_leaves("", true, true));
    assert_eq!(names(&from_root.certificate_authorities), KUBEADM_CAS);
    assert_eq!(names(&from_etc.certificates), names(&from_root.certificates));
    for (a, e) in from_root.certificates.iter().zip(&from_etc.certificates) {
        assert_eq!((a.expires_unix, a.status, a.externally_managed), (e.expires_unix, e.status, e.externally_managed), "{}", a.name);
        assert!(!a.externally_managed, "{}", a.name);
    }

    // A worker: the CA certificate without its key, the kubelet serving certificate. The layout
    // keeps the CA key off workers, and the bundle's state holds it: not externally managed
    // (before issue 13 a missing key anywhere counted as "externally managed").
    let w1 = check(&b.cluster.join("nodes/w1"), CHECKED_AT);
    assert_eq!(w1.exit_code(), 0);
    assert_eq!(names(&w1.certificates), ["kubelet-serving"]);
    assert_eq!(names(&w1.certificate_authorities), ["ca"]);
    assert!(!find(&w1, "kubelet-serving").externally_managed);
    assert!(!find(&w1, "ca").externally_managed);
    assert_eq!(find(&w1, "ca").ca_key, "state");

    // The state directory: the CAs only.
    let state = check(&b.cluster.join("state"), CHECKED_AT);
    assert!(state.certificates.is_empty());
    assert_eq!(names(&state.certificate_authorities), KUBEADM_CAS);
    // ... and its pki/ directly.
    let pki = check(&b.cluster.join("state/pki"), CHECKED_AT);
    assert_eq!(names(&pki.certificate_authorities), KUBEADM_CAS);
}

#[test]
fn a_kubeadm_tree_outside_a_bundle_lists_the_kubelet_too() {
    // The same cp1 tree copied out of the bundle is read with the kubeadm layout it matches:
    // kubelet.conf and the kubelet's serving certificate are listed (they were left out before
    // issue 13, although kubelet.conf's certificate expires like the others), its CA keys are
    // on the node.
    let b = bundle();
    let dir = temp("plain");
    let root = dir.path().join("host");
    copy_dir(&b.cluster.join("nodes/cp1"), &root);
    let r = check(&root, CHECKED_AT);
    assert_eq!(names(&r.certificates), node_leaves("", true, true));
    assert!(r.certificates.iter().chain(&r.certificate_authorities).all(|c| c.ca_key == "node" && !c.externally_managed));
}

#[test]
fn wrong_directories_are_errors_that_say_what_to_pass() {
    let dir = temp("errors");
    let missing = try_check(&dir.path().join("nope"), CHECKED_AT).unwrap_err();
    assert!(matches!(missing, ExpiryError::Read { .. }));
    // A directory that matches no layout says what it holds and what each layout expects.
    std::fs::create_dir_all(dir.path().join("etc/ssl")).unwrap();
    let empty = try_check(dir.path(), CHECKED_AT).unwrap_err();
    assert!(matches!(empty, ExpiryError::Unrecognised { .. }), "{empty}");
    let msg = empty.to_string();
    assert!(msg.contains("matches no layout: found etc") && msg.contains("etc/ssl"), "{msg}");
    assert!(msg.contains("kubeadm expects etc/kubernetes/pki/ca.crt") && msg.contains("hardway expects etc/k8s/shared/ca.crt"), "{msg}");
    assert!(msg.contains("/etc/kubernetes") && msg.contains("OUT/<cluster>"), "{msg}");
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    assert!(matches!(try_check(&file, CHECKED_AT).unwrap_err(), ExpiryError::NotADirectory { .. }));
    // OUT instead of OUT/<cluster>: the hint names the bundle.
    let out = bundle().cluster.parent().unwrap().to_path_buf();
    let msg = try_check(&out, CHECKED_AT).unwrap_err().to_string();
    assert!(msg.contains("did you mean") && msg.contains("/exp"), "{msg}");
}

#[test]
fn warn_within_parses_days_and_go_durations() {
    assert_eq!(expiry::parse_warn_within("30d").unwrap(), THIRTY_DAYS);
    assert_eq!(expiry::parse_warn_within("720h").unwrap(), THIRTY_DAYS);
    assert!(expiry::parse_warn_within("-5m").is_err());
    assert_eq!("prometheus".parse::<Format>().unwrap(), Format::Prometheus);
}

// ---------------------------------------------------------------------------------------------
// The binary

#[test]
fn cli_check_expiration() {
    let bin = env!("CARGO_BIN_EXE_kubebundle");
    let help = Command::new(bin).args(["certs", "check-expiration", "--help"]).output().unwrap();
    assert!(help.status.success(), "`kubebundle certs check-expiration --help` failed");
    let dir = fixture();
    let run = |now: &str, extra: &[&str]| {
        let out =
            Command::new(bin).args(["certs", "check-expiration", "--dir"]).arg(&dir).args(["--now", now]).args(extra).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stdout, stderr) = run("2026-12-01T00:00:00Z", &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("CERTIFICATE "), "{stdout}");
    assert!(stdout.contains("apiserver-kubelet-client   Nov 22, 2027 09:40 UTC   356d"), "{stdout}");
    let (code, stdout, _) = run("2027-11-01T00:00:00Z", &["-o", "json"]);
    assert_eq!(code, Some(3));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["certificates"][0]["status"], "warning");
    let (code, stdout, _) = run("2027-12-01T00:00:00Z", &["-o", "prometheus", "--warn-within", "30d"]);
    assert_eq!(code, Some(4));
    assert!(stdout.contains("kubebundle_certificate_expiry_timestamp_seconds{name=\"apiserver\""), "{stdout}");
    let (code, _, stderr) = Command::new(bin)
        .args(["certs", "check-expiration", "--dir", "/nonexistent/kubebundle-expiry"])
        .output()
        .map(|o| (o.status.code(), (), String::from_utf8_lossy(&o.stderr).into_owned()))
        .unwrap();
    assert_ne!(code, Some(0));
    assert!(stderr.contains("/etc/kubernetes"), "{stderr}");
}

#[test]
fn not_yet_valid_is_a_warning() {
    // The fixture was made on 2026-11-22: a week earlier nothing in it is valid yet.
    let r = check(&fixture(), "2026-11-15T00:00:00Z");
    assert_eq!(r.exit_code(), 3);
    for c in r.certificates.iter().chain(&r.certificate_authorities) {
        assert_eq!(c.status, Status::Warning, "{}", c.name);
        assert!(c.detail.starts_with("not valid before 2026-11-22T"), "{}: {}", c.name, c.detail);
    }
    let t = r.render(Format::Table);
    assert!(t.contains("apiserver: warning: not valid before 2026-11-22T"), "{t}");
}

#[test]
fn a_control_character_in_a_path_is_shown_escaped_in_the_table_and_the_labels() {
    let dir = temp("escape");
    let tree = dir.path().join("etc\u{1b}[31m\nkubernetes");
    copy_dir(&fixture(), &tree);
    std::fs::write(tree.join("pki/apiserver.crt"), "not a certificate\n").unwrap();
    let r = check(&tree, "2026-12-01T00:00:00Z");
    assert_eq!(find(&r, "apiserver").status, Status::Unreadable);
    let table = r.render(Format::Table);
    assert!(!table.contains('\u{1b}'), "the table printed a raw escape: {table:?}");
    let note = table.lines().find(|l| l.starts_with("apiserver: unreadable")).expect("a note for the unreadable file");
    assert!(note.contains("etc\\x1b[31m\\nkubernetes/pki/apiserver.crt"), "{note}");
    let prom = r.render(Format::Prometheus);
    assert!(!prom.contains('\u{1b}'), "the textfile holds a raw escape: {prom:?}");
    assert!(prom.lines().all(|l| l.starts_with("# ") || l.starts_with("kubebundle_certificate_")), "a label broke a line: {prom}");
    assert!(prom.contains("etc\\\\x1b[31m\\nkubernetes/pki/"), "{prom}");
}
