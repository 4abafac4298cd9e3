//! Certificates carry the extensions kubeadm's do (issue 16): for every certificate of the real
//! kubeadm v1.24 and v1.32 trees in ../shared/fixtures (the pki/*.crt files and the client
//! certificates embedded in admin.conf, controller-manager.conf, scheduler.conf, super-admin.conf
//! and kubelet.conf), the set of extension OIDs of the same file on a kubeadm-profile control plane
//! equals the fixture's: leaves have KeyUsage, ExtendedKeyUsage, BasicConstraints (CA:FALSE,
//! critical), AuthorityKeyIdentifier and SANs where kubeadm has them, and no
//! SubjectKeyIdentifier; CAs keep theirs. `certs renew all` on that tree re-issues every leaf by
//! the same rule.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use x509_parser::prelude::*;

use common::*;

const NOW: &str = "2026-01-01T00:00:00Z";

/// (extension OID, critical) of the first certificate of a PEM text.
fn extensions(pem_text: &[u8], what: &str) -> BTreeSet<(String, bool)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text).unwrap_or_else(|e| panic!("{what}: not PEM: {e}"));
    let (_, cert) = X509Certificate::from_der(&pem.contents).unwrap_or_else(|e| panic!("{what}: not a certificate: {e}"));
    cert.extensions().iter().map(|e| (e.oid.to_id_string(), e.critical)).collect()
}

/// A certificate file's PEM, or a kubeconfig's client-certificate-data.
fn cert_pem(path: &Path) -> Option<Vec<u8>> {
    let text = std::fs::read(path).ok()?;
    if path.extension().is_some_and(|e| e == "conf") {
        let line =
            String::from_utf8(text).ok()?.lines().find_map(|l| l.trim().strip_prefix("client-certificate-data: ").map(str::to_string))?;
        return B64.decode(line.trim()).ok();
    }
    Some(text)
}

/// The fixture's certificates, relative to its /etc/kubernetes.
fn fixture_certs(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["", "pki", "pki/etcd"] {
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            let rel = if sub.is_empty() { name.clone() } else { format!("{sub}/{name}") };
            if (name.ends_with(".crt") || name.ends_with(".conf")) && cert_pem(&root.join(&rel)).is_some() {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

fn compare(failures: &mut Failures, ours: &Path, what: &str) -> usize {
    let mut compared = 0;
    for version in ["v1.24", "v1.32"] {
        let fixture = fixtures_dir().join(format!("kubeadm-{version}-etc-kubernetes"));
        for rel in fixture_certs(&fixture) {
            let want = extensions(&cert_pem(&fixture.join(&rel)).unwrap(), &format!("{version} {rel}"));
            let Some(pem) = cert_pem(&ours.join(&rel)) else {
                failures.fail(format!("{what}: {rel} (in kubeadm {version}'s tree) is missing"));
                continue;
            };
            let got = extensions(&pem, &format!("{what} {rel}"));
            failures.eq(&format!("{what}: extension OIDs (critical) of {rel}, as kubeadm {version} writes them"), &want, &got);
            compared += 1;
        }
    }
    compared
}

#[test]
fn leaves_and_cas_carry_the_extensions_kubeadm_writes_also_after_renewal() {
    let tmp = temp_dir("kubeadm-extensions");
    let r = kubebundle(tmp.path(), &["config", "print-defaults"], &[]);
    assert!(r.ok(), "{}", r.describe());
    let text = r.stdout.replacen("encryptionAlgorithm: RSA-2048", "encryptionAlgorithm: ECDSA-P256", 1);
    std::fs::write(tmp.path().join("cluster.yaml"), text).unwrap();
    let r = kubebundle(tmp.path(), &["generate", "-c", "cluster.yaml", "--out", "out", "--unpacked", "--now", NOW], &[]);
    assert!(r.ok(), "generate failed: {}", r.describe());

    let mut failures = Failures::new();
    let etc: PathBuf = tmp.path().join("out/kubernetes/nodes/cp1/etc/kubernetes");
    let compared = compare(&mut failures, &etc, "generate");
    // 10 pki certificates and 4 (v1.24) or 5 (v1.32) kubeconfigs per fixture.
    failures.check(compared >= 28, || format!("only {compared} certificates compared"));

    // Renewal re-issues each leaf "like" the current one, by the same rule.
    let root = tmp.path().join("renewed");
    copy_dir(&tmp.path().join("out/kubernetes/nodes/cp1"), &root);
    let before = std::fs::read(root.join("etc/kubernetes/pki/apiserver.crt")).unwrap();
    let r = kubebundle(tmp.path(), &["certs", "renew", "all", "--dir", root.to_str().unwrap(), "--now", "2026-06-01T00:00:00Z"], &[]);
    failures.check(r.ok(), || format!("certs renew all failed: {}", r.describe()));
    failures.check(std::fs::read(root.join("etc/kubernetes/pki/apiserver.crt")).unwrap() != before, || {
        "certs renew all left apiserver.crt as it was".into()
    });
    compare(&mut failures, &root.join("etc/kubernetes"), "certs renew all");
    failures.finish("leaves_and_cas_carry_the_extensions_kubeadm_writes_also_after_renewal");
}
