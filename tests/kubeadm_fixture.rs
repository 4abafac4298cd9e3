//! The strongest check we have offline: a real /etc/kubernetes tree written by kubeadm v1.24
//! (../shared/fixtures) and the bundle kubebundle makes from the same config must agree, field
//! by field, as openssl and kubectl read them: subjects, issuers, SANs in order, key usages,
//! basic constraints, key type and size, validity lengths and kubeconfig shapes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The parts of `openssl x509 -text` that must match: header fields and each extension,
/// keyed by name (extension order differs between Go and rcgen and does not matter).
fn fields(pem_path: &Path) -> BTreeMap<String, String> {
    let text = run(Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(pem_path));
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        for key in ["Issuer:", "Subject:", "Signature Algorithm:", "Public Key Algorithm:", "Public-Key:", "Version:"] {
            if let Some(v) = t.strip_prefix(key) {
                out.insert(key.trim_end_matches(':').to_string(), v.trim().to_string());
            }
        }
        if t.starts_with("X509v3 ") && t.ends_with(':') || t.starts_with("X509v3 ") && t.contains(": critical") {
            let name = t.trim_end_matches(':').to_string();
            current = Some(name.clone());
            out.insert(name, String::new());
            continue;
        }
        if let Some(name) = &current {
            if line.starts_with("                ") && !t.is_empty() {
                let v = out.get_mut(name).expect("inserted above");
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(t);
                continue;
            }
            current = None;
        }
    }
    // Key identifiers differ by construction (different keys); only their presence matters.
    for k in ["X509v3 Subject Key Identifier", "X509v3 Authority Key Identifier"] {
        if let Some(v) = out.get_mut(k) {
            *v = "present".into();
        }
    }
    out
}

fn validity_days(pem_path: &Path) -> i64 {
    let text = run(Command::new("openssl").args(["x509", "-noout", "-startdate", "-enddate", "-dateopt", "iso_8601", "-in"]).arg(pem_path));
    let get = |k: &str| {
        let v = text.lines().find_map(|l| l.strip_prefix(k)).expect("date line");
        time::PrimitiveDateTime::parse(
            v.trim().trim_end_matches('Z'),
            &time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        )
        .expect("iso date")
        .assume_utc()
    };
    (get("notAfter=") - get("notBefore=")).whole_days()
}

#[test]
fn bundle_matches_a_real_kubeadm_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubebundle"))
        .args(["generate", "--unpacked", "--now", "2026-11-22T09:40:51Z", "--out"])
        .arg(tmp.path())
        .arg("--config")
        .arg(fixtures().join("kubeadm-v1.24-etc-kubernetes.kubeadm-config.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours = tmp.path().join("kubernetes/nodes/cp1/etc/kubernetes");
    let theirs = fixtures().join("kubeadm-v1.24-etc-kubernetes");

    let api = fields(&ours.join("pki/apiserver.crt"));
    assert_eq!(
        api.get("X509v3 Subject Alternative Name").map(String::as_str),
        Some("DNS:cp1, DNS:extra.example.com, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP Address:10.96.0.1, IP Address:198.51.100.10, IP Address:127.0.0.1, IP Address:10.0.0.10")
    );
    assert_eq!(api.get("X509v3 Key Usage: critical").map(String::as_str), Some("Digital Signature, Key Encipherment"));

    let certs = [
        "ca",
        "apiserver",
        "apiserver-kubelet-client",
        "front-proxy-ca",
        "front-proxy-client",
        "apiserver-etcd-client",
        "etcd/ca",
        "etcd/server",
        "etcd/peer",
        "etcd/healthcheck-client",
    ];
    for c in certs {
        let (a, b) = (theirs.join(format!("pki/{c}.crt")), ours.join(format!("pki/{c}.crt")));
        let (fa, fb) = (fields(&a), fields(&b));
        assert!(
            fb.contains_key("Subject") && fb.contains_key("X509v3 Basic Constraints: critical"),
            "{c}: openssl output not parsed: {fb:?}"
        );
        assert_eq!(fa, fb, "{c}.crt differs from kubeadm's");
        assert_eq!(validity_days(&a), validity_days(&b), "{c}.crt validity");
        // Same key file format (PKCS#1 for RSA).
        let first_line = |p: PathBuf| std::fs::read_to_string(p).unwrap().lines().next().unwrap().to_string();
        assert_eq!(first_line(theirs.join(format!("pki/{c}.key"))), first_line(ours.join(format!("pki/{c}.key"))), "{c}.key format");
    }
    for k in ["sa.key", "sa.pub"] {
        let first = |p: PathBuf| std::fs::read_to_string(p).unwrap().lines().next().unwrap().to_string();
        assert_eq!(first(theirs.join("pki").join(k)), first(ours.join("pki").join(k)), "{k} format");
    }

    // Kubeconfigs: the same shape as kubectl reads it, and the same embedded client subjects.
    for conf in ["admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"] {
        let view = |p: PathBuf| -> serde_json::Value {
            let home = tempfile::tempdir().unwrap();
            let text = run(Command::new("kubectl")
                .env("HOME", home.path())
                .env("KUBECONFIG", home.path().join("none"))
                .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
                .arg(p));
            serde_json::from_str(&text).unwrap()
        };
        let (a, b) = (view(theirs.join(conf)), view(ours.join(conf)));
        for ptr in [
            "/current-context",
            "/clusters/0/name",
            "/clusters/0/cluster/server",
            "/users/0/name",
            "/contexts/0/name",
            "/contexts/0/context/user",
        ] {
            assert_eq!(a.pointer(ptr), b.pointer(ptr), "{conf} {ptr}");
        }
        // Our CA data is byte-identical to our ca.crt (kubeadm's check for "Using existing").
        use base64::Engine;
        let ca_data = b.pointer("/clusters/0/cluster/certificate-authority-data").and_then(|v| v.as_str()).unwrap();
        let ca = base64::engine::general_purpose::STANDARD.decode(ca_data).unwrap();
        assert_eq!(ca, std::fs::read(ours.join("pki/ca.crt")).unwrap(), "{conf} CA data");
        let client = |v: &serde_json::Value, dir: &Path| {
            let data = v.pointer("/users/0/user/client-certificate-data").and_then(|v| v.as_str()).unwrap();
            let p = dir.join(format!("{conf}.client.crt"));
            std::fs::write(&p, base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap();
            fields(&p)
        };
        let scratch = tempfile::tempdir().unwrap();
        let (ca_fields, cb) = (client(&a, scratch.path()), client(&b, scratch.path()));
        assert_eq!(ca_fields, cb, "{conf} client certificate");
    }
}
