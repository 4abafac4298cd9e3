//! `kubebundle ca csr`: the CA key made in the state and a CSR for an intermediate CA, signed by
//! real external signers acting as a corporate root (`openssl ca` copying the request's
//! extensions, `openssl ca` adding its own, `cfssl sign`), imported with `ca import --cert
//! --chain` (the key already in the state), and a kubeadm bundle generated under it: every leaf
//! verifies up to the root through the intermediate, `verify` finds no error. A re-run keeps the
//! key and the CSR byte-identical; every refusal exits non-zero with its message and writes nothing.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::corp::*;
use common::*;

const NOW: &str = "2026-01-01T00:00:00Z";
const NOW_UNIX_S: &str = "1767225600";
const CLUSTER: &str = "csr";
const CAS: [&str; 3] = ["ca", "front-proxy-ca", "etcd-ca"];

/// The corporate root's `openssl ca` section v3_plain (no CA extensions); `copy_extensions` is set
/// per signing.
const V3_PLAIN: &str = "\
[v3_plain]
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
";

/// Every file under `dir` (relative path → sha256), and every directory with its mode.
fn digests(dir: &Path) -> BTreeMap<String, String> {
    let mut out = file_digests(dir);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let mode = std::fs::symlink_metadata(&p).unwrap().permissions().mode() & 0o7777;
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if p.is_dir() {
                out.insert(format!("{rel}/"), format!("{mode:o}"));
                stack.push(p);
            }
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A corporate root (ECDSA P-256, 2025 → 2033) that signs what it is given with `openssl ca`
/// (2025 → 2032).
fn corp(dir: &Path) -> Corp {
    let mut corp = Corp::new(dir, &corp_cnf("none", false, V3_PLAIN), "250101000000Z", "330101000000Z");
    corp.validity = ("250101000000Z".to_string(), "320101000000Z".to_string());
    corp
}

/// The root signs `csr` into `out` with `openssl ca`: copying the request's extensions (`copy`),
/// or adding its own section `ext` (copy_extensions = none).
fn sign(corp: &Corp, csr: &Path, out: &str, copy: bool, ext: Option<&str>) {
    let cnf = if copy {
        std::fs::write(corp.dir.join("copy.cnf"), corp_cnf("copy", false, V3_PLAIN)).unwrap();
        "copy.cnf"
    } else {
        "ca.cnf"
    };
    let csr = csr.display().to_string();
    let ext: Vec<&str> = ext.map(|e| vec!["-extensions", e]).unwrap_or_default();
    corp.sign(cnf, "root", &csr, out, &ext);
}

fn work(prefix: &str) -> Work {
    let config = live_config(
        CLUSTER,
        &[
            ("cp1", "10.8.0.11", "control-plane, etcd"),
            ("cp2", "10.8.0.12", "control-plane, etcd"),
            ("cp3", "10.8.0.13", "control-plane, etcd"),
            ("w1", "10.8.0.21", "worker"),
        ],
    );
    Work::with(prefix, CLUSTER, &config, NOW, corp)
}

/// `ca csr` and `ca import` of this test.
trait CsrWork {
    fn csr_file(&self, which: &str) -> PathBuf;
    fn ca_csr(&self, which: &str) -> Run;
    fn import(&self, which: &str, cert: &str) -> Run;
}

impl CsrWork for Work {
    fn csr_file(&self, which: &str) -> PathBuf {
        self.bundle().join(format!("csr/{which}.csr"))
    }
    fn ca_csr(&self, which: &str) -> Run {
        self.run(&["ca", "csr", which, "--config", "c.yaml", "--now", &self.now, "--out", self.out().to_str().unwrap()])
    }
    /// `ca import WHICH --cert CERT --chain root.crt` (no --key: the state holds it).
    fn import(&self, which: &str, cert: &str) -> Run {
        let cert = if cert.starts_with('/') { cert.to_string() } else { self.corp.path(cert) };
        let root = self.corp.path("root.crt");
        self.run(&[
            "ca",
            "import",
            which,
            "--cert",
            &cert,
            "--chain",
            &root,
            "--config",
            "c.yaml",
            "--now",
            &self.now,
            "--out",
            self.out().to_str().unwrap(),
        ])
    }
}

/// `openssl req -text` of a CSR, after checking its signature.
fn csr_text(path: &Path) -> String {
    let r = openssl(&["req", "-in", path.to_str().unwrap(), "-noout", "-text", "-verify"]);
    assert!(r.ok(), "{}", r.describe());
    assert!(r.stderr.contains("verify OK") || r.stdout.contains("verify OK"), "{}", r.describe());
    r.stdout
}

/// The lines after `header` in `openssl -text` output, trimmed.
fn after(text: &str, header: &str) -> Option<String> {
    let mut lines = text.lines();
    lines.find(|l| l.trim() == header)?;
    lines.next().map(|l| l.trim().to_string())
}

fn assert_ca_extensions(text: &str, what: &str) {
    assert_eq!(
        after(text, "X509v3 Basic Constraints: critical").as_deref().map(|s| s.starts_with("CA:TRUE")),
        Some(true),
        "{what}:\n{text}"
    );
    let ku = after(text, "X509v3 Key Usage: critical").unwrap_or_else(|| panic!("{what}: no critical keyUsage:\n{text}"));
    for usage in ["Digital Signature", "Certificate Sign", "CRL Sign"] {
        assert!(ku.contains(usage), "{what}: keyUsage {ku:?} lacks {usage}");
    }
}

fn is_ca(der: &[u8]) -> bool {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    matches!(c.basic_constraints(), Ok(Some(b)) if b.value.ca)
}

/// Every leaf of every tarball (kubeconfigs' client certificates included) verifies with
/// `openssl verify -CAfile root -untrusted <the signed intermediates>`; CA files hold an
/// intermediate alone. Returns how many leaves were checked.
fn verify_leaves(w: &Work, intermediates: &Path, attime: &str) -> usize {
    let scratch = w.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let signing: Vec<Vec<u8>> = pem_certs(&std::fs::read(intermediates).unwrap());
    let mut failures = Failures::new();
    let mut leaves = 0;
    let check = |at: &str, bytes: &[u8], failures: &mut Failures| {
        let file = scratch.join(unique_name("leaf"));
        std::fs::write(&file, bytes).unwrap();
        let r = openssl(&[
            "verify",
            "-attime",
            attime,
            "-CAfile",
            &w.corp.path("root.crt"),
            "-untrusted",
            intermediates.to_str().unwrap(),
            file.to_str().unwrap(),
        ]);
        failures.check(r.ok() && r.stdout.trim().ends_with(": OK"), || format!("{at}: {}", r.describe()));
    };
    for entry in std::fs::read_dir(w.bundle().join("nodes")).unwrap() {
        let path = entry.unwrap().path();
        let node = path.file_name().unwrap().to_string_lossy().to_string();
        for (name, bytes) in tarball_files(&path) {
            let at = format!("{node}:{name}");
            let certs = pem_certs(&bytes);
            if let Some(first) = certs.first() {
                if is_ca(first) {
                    failures
                        .check(certs.len() == 1 && signing.contains(first), || format!("{at}: a CA file must hold its intermediate alone"));
                } else {
                    leaves += 1;
                    check(&at, &bytes, &mut failures);
                }
                continue;
            }
            let Ok(text) = std::str::from_utf8(&bytes) else { continue };
            for client in kubeconfig_values(text, "client-certificate-data") {
                leaves += 1;
                check(&format!("{at}: client-certificate-data"), &client, &mut failures);
            }
        }
    }
    failures.check(leaves >= 20, || format!("only {leaves} leaves checked"));
    failures.finish(&format!("verify_leaves {}", w.dir.display()));
    leaves
}

/// The full flow with `openssl ca`: ca csr for the three CAs, the cluster CA signed by a root
/// that copies the request's extensions, the other two by one that adds its own section; each
/// imported with --chain and no key; a kubeadm bundle whose every leaf chains to the root.
#[test]
fn csr_signed_by_openssl_ca_imports_and_signs_a_kubeadm_bundle() {
    let w = work("ca-csr-openssl");
    for which in CAS {
        let r = w.ca_csr(which);
        assert!(r.ok(), "{}", r.describe());
        let key = w.bundle().join("state").join(if which == "etcd-ca" { "pki/etcd/ca.key".into() } else { format!("pki/{which}.key") });
        assert!(r.stdout.contains(&format!("made the {which} key (ECDSA-P256) in {}", key.display())), "{}", r.stdout);
        let csr = w.csr_file(which);
        assert!(r.stdout.contains(&format!("CSR: {}", csr.display())), "{}", r.stdout);
        assert!(
            r.stdout.contains(&format!("openssl ca -config root.cnf -extensions v3_intermediate_ca -days 3650 -in {}", csr.display())),
            "{}",
            r.stdout
        );
        assert!(r.stdout.contains(&format!("vault write -format=json pki/root/sign-intermediate csr=@{}", csr.display())), "{}", r.stdout);
        assert!(
            r.stdout.contains(&format!(
                "then: kubebundle ca import {which} --cert signed.crt --chain root.crt --config c.yaml --out {}",
                w.out().display()
            )),
            "{}",
            r.stdout
        );
        assert_eq!(mode(&key), 0o600, "{}", key.display());
        assert_eq!(mode(&csr), 0o644);
        // The CSR: kubeadm's name for the CA, CA:TRUE and the CA key usages, both critical.
        let text = csr_text(&csr);
        let cn = match which {
            "ca" => "kubernetes",
            other => other,
        };
        assert!(text.contains(&format!("Subject: CN = {cn}\n")), "{text}");
        assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
        assert_ca_extensions(&text, &format!("{which}.csr"));
        // Its public key is the key's in the state.
        let from_csr = openssl(&["req", "-in", csr.to_str().unwrap(), "-noout", "-pubkey"]).stdout;
        let from_key = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]).stdout;
        assert_eq!(from_csr, from_key);
    }
    assert_eq!(mode(&w.bundle().join("csr")), 0o755);
    assert_eq!(mode(&w.bundle().join("state")), 0o700);
    let manifest = std::fs::read_to_string(w.bundle().join("state/manifest.yaml")).unwrap();
    assert_eq!(manifest.matches("awaitingCertificate: true").count(), 3, "{manifest}");
    assert!(!w.bundle().join("state/pki/ca.crt").exists());

    // Again: the same key, the same CSR, nothing written.
    let before = digests(&w.out());
    let r = w.ca_csr("ca");
    assert!(r.ok(), "{}", r.describe());
    assert!(r.stdout.contains("is already the CSR of the ca key waiting in"), "{}", r.stdout);
    assert_eq!(digests(&w.out()), before, "a re-run changed files");
    // A lost CSR is written again, byte-identical, for the same key.
    let csr_bytes = std::fs::read(w.csr_file("ca")).unwrap();
    let key_bytes = std::fs::read(w.bundle().join("state/pki/ca.key")).unwrap();
    std::fs::remove_file(w.csr_file("ca")).unwrap();
    let r = w.ca_csr("ca");
    assert!(r.ok() && r.stdout.contains("again for the ca key already waiting in"), "{}", r.describe());
    assert_eq!(std::fs::read(w.csr_file("ca")).unwrap(), csr_bytes);
    assert_eq!(std::fs::read(w.bundle().join("state/pki/ca.key")).unwrap(), key_bytes);
    assert_eq!(digests(&w.out()), before);

    // generate with the keys pending: refused, naming the import; nothing written.
    let g = w.generate();
    assert_eq!(g.code, Some(1), "{}", g.describe());
    assert!(g.stderr.contains("the ca key waits for its signed certificate"), "{}", g.stderr);
    assert!(g.stderr.contains("run `kubebundle ca import ca --cert signed.crt --chain root.crt`"), "{}", g.stderr);
    assert!(g.stderr.contains("or remove the pending key, "), "{}", g.stderr);
    assert_eq!(digests(&w.out()), before, "a refused generate changed files");
    let c = w.run(&["generate", "--check", "--config", "c.yaml", "--now", NOW, "--out", w.out().to_str().unwrap()]);
    assert_eq!(c.code, Some(2), "{}", c.describe());

    // The cluster CA: copy_extensions = copy and no extensions section of the signer's own: the
    // certificate is a CA because the request asked for it.
    sign(&w.corp, &w.csr_file("ca"), "ca.crt", true, None);
    // The other two: copy_extensions = none, the signer's intermediate section.
    sign(&w.corp, &w.csr_file("front-proxy-ca"), "front-proxy-ca.crt", false, Some("v3_int"));
    sign(&w.corp, &w.csr_file("etcd-ca"), "etcd-ca.crt", false, Some("v3_int"));
    for which in CAS {
        let text = openssl(&["x509", "-in", &w.corp.path(&format!("{which}.crt")), "-noout", "-text"]).stdout;
        assert_ca_extensions(&text, &format!("signed {which}"));
        let r = w.import(which, &format!("{which}.crt"));
        assert!(r.ok(), "{}", r.describe());
        assert!(r.stdout.contains(&format!("{which}: the certificate is for the key that waited in")), "{}", r.stdout);
        assert!(r.stdout.contains("its chain (1 certificate(s) up to the root O=Example Corp, CN=Example Corp Root CA"), "{}", r.stdout);
    }
    let manifest = std::fs::read_to_string(w.bundle().join("state/manifest.yaml")).unwrap();
    assert!(!manifest.contains("awaitingCertificate"), "{manifest}");
    assert_eq!(std::fs::read(w.bundle().join("state/pki/ca.key")).unwrap(), key_bytes, "the import changed the key");
    assert_eq!(std::fs::read_to_string(w.bundle().join("state/pki/ca-chain.crt")).unwrap(), w.corp.text("root.crt"));

    // Once the certificate is there, ca csr is refused: replacing a CA is rotation.
    let before = digests(&w.out());
    let r = w.ca_csr("ca");
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(
        r.stderr.contains("state/pki/ca.crt: the state already holds the ca certificate (CN=kubernetes, expires 2032-01-01T00:00:00Z)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("hint: replacing a CA is CA rotation (a later command) or `kubebundle generate --force`"), "{}", r.stderr);
    assert_eq!(digests(&w.out()), before, "a refused ca csr changed files");

    let g = w.generate();
    assert!(g.ok(), "{}", g.describe());
    let intermediates = w.dir.join("intermediates.pem");
    std::fs::write(&intermediates, CAS.iter().map(|c| w.corp.text(&format!("{c}.crt"))).collect::<String>()).unwrap();
    verify_leaves(&w, &intermediates, NOW_UNIX_S);
    let v = w.run(&["verify", w.bundle().to_str().unwrap(), "--now", NOW]);
    assert!(v.ok() && v.stdout.lines().any(|l| l.starts_with("0 errors,")), "{}", v.describe());
    // A serving certificate carries the intermediate signed from the CSR.
    let cp1 = tarball_files(&w.bundle().join("nodes/cp1.tar.gz"));
    let apiserver = pem_certs(&cp1["etc/kubernetes/pki/apiserver.crt"]);
    assert_eq!(apiserver[1], pem_certs(w.corp.text("ca.crt").as_bytes())[0]);
    // ca csr again after generate: still refused, the bundle unchanged.
    let before = digests(&w.out());
    let r = w.ca_csr("etcd-ca");
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert_eq!(digests(&w.out()), before);
}

/// A certificate signed for another key than the one waiting in the state, and one the signer
/// did not make a CA (no copy_extensions, no CA section), are refused naming the files; no key
/// anywhere is still external-CA mode; removing the pending key lets generate make its own CA.
#[test]
fn csr_refusals_name_the_files_and_write_nothing() {
    let w = work("ca-csr-refusals");
    let h = w.run(&["ca", "csr", "--help"]);
    assert!(
        h.ok() && h.stdout.contains("Exit codes: 0 written (or already there: the same CSR for the same key); 1 refused"),
        "{}",
        h.describe()
    );
    let r = w.ca_csr("ca");
    assert!(r.ok(), "{}", r.describe());
    let state_key = w.bundle().join("state/pki/ca.key");

    // Signed for another key (a CSR of the same name made elsewhere).
    w.corp.key("other");
    w.corp.csr("other", "/CN=kubernetes");
    sign(&w.corp, &w.corp.dir.join("other.csr"), "other.crt", false, Some("v3_int"));
    let before = digests(&w.out());
    let r = w.import("ca", "other.crt");
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains(&format!(
            "{}: CN=kubernetes was issued for another key than the key `kubebundle ca csr` made, waiting in {}",
            w.corp.path("other.crt"),
            state_key.display()
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("import the certificate your signer issued from the CSR of that key ({})", w.csr_file("ca").display())),
        "{}",
        r.stderr
    );
    assert_eq!(digests(&w.out()), before, "a refused import changed files");

    // Signed without CA extensions: copy_extensions = none and no section of the signer's own.
    sign(&w.corp, &w.csr_file("ca"), "plain.crt", false, Some("v3_plain"));
    let text = openssl(&["x509", "-in", &w.corp.path("plain.crt"), "-noout", "-text"]).stdout;
    assert!(!text.contains("CA:TRUE"), "{text}");
    let r = w.import("ca", "plain.crt");
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains(&format!("{}: CN=kubernetes is not a CA (its basicConstraints do not say CA:TRUE)", w.corp.path("plain.crt"))),
        "{}",
        r.stderr
    );
    assert_eq!(digests(&w.out()), before, "a refused import changed files");

    // (No key given and none in the state is external-CA mode now: tests/external_ca.rs.)

    // The pending key removed: generate makes a CA of its own, and says so.
    std::fs::remove_file(&state_key).unwrap();
    let g = w.generate();
    assert!(g.ok(), "{}", g.describe());
    let said = format!("{}{}", g.stdout, g.stderr);
    assert!(said.contains("created ca: the key `kubebundle ca csr` made for it was removed from the state"), "{said}");
    let manifest = std::fs::read_to_string(w.bundle().join("state/manifest.yaml")).unwrap();
    assert!(!manifest.contains("awaitingCertificate"), "{manifest}");
    verify_bundle(&w.bundle(), Some(NOW)).unwrap_or_else(|e| panic!("{e}"));
}

/// cfssl (Debian's golang-cfssl) signs the CSR as a corporate root with a CA profile; the
/// certificate imports for the key waiting in the state and signs a bundle whose leaves chain to
/// the root. cfssl signs at the real time, so this test's clock is the real one.
#[test]
fn csr_signed_by_cfssl_imports_and_signs_a_kubeadm_bundle() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let found = Command::new("cfssl").arg("version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(!ci, "cfssl is missing (Debian package golang-cfssl; .ci/run installs it)");
        eprintln!("skipped: cfssl is not installed (apt-get install golang-cfssl)");
        return;
    }
    let mut w = work("ca-csr-cfssl");
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    w.now = rfc3339(unix);
    let r = w.ca_csr("ca");
    assert!(r.ok(), "{}", r.describe());
    // cfssl reads the root's key as SEC1.
    ossl(&w.corp.dir, &["ec", "-in", "root.key", "-out", "root-sec1.key"]);
    std::fs::write(
        w.corp.dir.join("cfssl.json"),
        r#"{"signing":{"default":{"expiry":"43800h"},"profiles":{"intermediate":{"expiry":"43800h","usages":["cert sign","crl sign","digital signature"],"ca_constraint":{"is_ca":true}}}}}"#,
    )
    .unwrap();
    let mut c = Command::new("cfssl");
    c.current_dir(&w.corp.dir).args([
        "sign",
        "-ca",
        "root.crt",
        "-ca-key",
        "root-sec1.key",
        "-config",
        "cfssl.json",
        "-profile",
        "intermediate",
    ]);
    c.arg(w.csr_file("ca"));
    let r = run_cmd(c);
    assert!(r.ok(), "{}", r.describe());
    let signed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("cfssl sign: {e}: {}", r.stdout));
    std::fs::write(w.corp.dir.join("cfssl-ca.crt"), signed["cert"].as_str().unwrap()).unwrap();
    let text = openssl(&["x509", "-in", &w.corp.path("cfssl-ca.crt"), "-noout", "-text"]).stdout;
    assert_ca_extensions(&text, "cfssl-signed ca");
    let r = w.import("ca", "cfssl-ca.crt");
    assert!(r.ok(), "{}", r.describe());
    assert!(r.stdout.contains("ca: the certificate is for the key that waited in"), "{}", r.stdout);
    let g = w.generate();
    assert!(g.ok(), "{}", g.describe());
    // Only the cluster CA is cfssl's: the leaves of the others verify under their own CAs.
    let scratch = w.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let cp1 = tarball_files(&w.bundle().join("nodes/cp1.tar.gz"));
    let mut checked = 0;
    for name in ["apiserver.crt", "apiserver-kubelet-client.crt"] {
        let file = scratch.join(name);
        std::fs::write(&file, &cp1[&format!("etc/kubernetes/pki/{name}")]).unwrap();
        let r = openssl(&[
            "verify",
            "-attime",
            &unix.to_string(),
            "-CAfile",
            &w.corp.path("root.crt"),
            "-untrusted",
            &w.corp.path("cfssl-ca.crt"),
            file.to_str().unwrap(),
        ]);
        assert!(r.ok() && r.stdout.trim().ends_with(": OK"), "{name}: {}", r.describe());
        checked += 1;
    }
    assert_eq!(checked, 2);
    verify_bundle(&w.bundle(), Some(&w.now)).unwrap_or_else(|e| panic!("{e}"));
}

/// Vault's `pki/root/sign-intermediate -format=json` response (certificate, issuing_ca,
/// ca_chain; no key) imports for the key waiting in the state, its chain taken from the response.
#[test]
fn a_vault_sign_intermediate_response_imports_for_the_waiting_key() {
    let w = work("ca-csr-vault");
    let r = w.ca_csr("front-proxy-ca");
    assert!(r.ok(), "{}", r.describe());
    sign(&w.corp, &w.csr_file("front-proxy-ca"), "fp.crt", true, None);
    let root = w.corp.text("root.crt");
    let response = serde_json::json!({
        "request_id": "0b5c7a1e-0000-0000-0000-000000000000", "lease_id": "", "renewable": false, "lease_duration": 0,
        "data": {
            "certificate": w.corp.text("fp.crt"), "issuing_ca": root, "ca_chain": [root],
            "serial_number": "10:00", "expiration": 1956528000i64,
        },
        "warnings": null, "auth": null,
    });
    let file = w.dir.join("signed.json");
    std::fs::write(&file, serde_json::to_string_pretty(&response).unwrap()).unwrap();
    let r = w.run(&[
        "ca",
        "import",
        "front-proxy-ca",
        "--cert",
        file.to_str().unwrap(),
        "--config",
        "c.yaml",
        "--now",
        NOW,
        "--out",
        w.out().to_str().unwrap(),
    ]);
    assert!(r.ok(), "{}", r.describe());
    assert!(r.stdout.contains("front-proxy-ca: the certificate is for the key that waited in"), "{}", r.stdout);
    assert_eq!(std::fs::read_to_string(w.bundle().join("state/pki/front-proxy-ca-chain.crt")).unwrap(), root);
    assert_eq!(std::fs::read_to_string(w.bundle().join("state/pki/front-proxy-ca.crt")).unwrap(), w.corp.text("fp.crt"));
    let g = w.generate();
    assert!(g.ok(), "{}", g.describe());
    verify_bundle(&w.bundle(), Some(NOW)).unwrap_or_else(|e| panic!("{e}"));
}
