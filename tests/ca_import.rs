//! `kubebundle ca import`: a corporate root and intermediates made with the real `openssl ca`
//! (ECDSA P-256) go into the state, and the bundles generated from it chain through them: every
//! leaf of every tarball verifies with `openssl verify -CAfile root -untrusted intermediates`,
//! serving certificates carry their intermediate, the nodes' CA files and kubeconfigs hold the
//! signing CA alone, join.txt pins it, `verify` finds no error and check-expiration lists the
//! root. A Vault `-format=json` response made from the same files imports to the same bytes.
//! Every refusal names the file and the fix, exits non-zero and writes nothing.

mod common;
mod live;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::corp::*;
use common::*;

const NOW: &str = "2026-01-01T00:00:00Z";
const NOW_UNIX_S: &str = "1767225600";
const CLUSTER: &str = "imp";

/// The corporate root's extra `openssl ca` sections: an intermediate that may have one CA below
/// it, and a server leaf.
const EXTRA_SECTIONS: &str = "\
[v3_int1]
basicConstraints = critical,CA:TRUE,pathlen:1
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[v3_leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
";

/// The corporate PKI, made once per test in its own directory: a root (valid 2025 → 2033), the
/// three cluster intermediates under it (2025 → 2035: the root ends first, as it often does), a
/// leaf of the cluster intermediate, an intermediate that ends 2026-06-01 (before a year of
/// leaves from NOW), and an unrelated root.
fn corp(dir: &Path) -> Corp {
    let corp = Corp::new(dir, &corp_cnf("none", false, EXTRA_SECTIONS), "250101000000Z", "330101000000Z");
    for (name, end) in
        [("ca", "350101000000Z"), ("front-proxy-ca", "350101000000Z"), ("etcd-ca", "350101000000Z"), ("short", "260601000000Z")]
    {
        issue(&corp, name, &format!("/O=Example Corp/CN=kubernetes {name}"), "root", end, "v3_int");
    }
    issue(&corp, "leaf", "/CN=not-a-ca.example.com", "ca", "350101000000Z", "v3_leaf");
    // Under the cluster intermediate, whose pathlen:0 allows no CA below it.
    issue(&corp, "sub", "/O=Example Corp/CN=kubernetes sub", "ca", "350101000000Z", "v3_int");
    let sub_chain = format!("{}{}", corp.text("ca.crt"), corp.text("root.crt"));
    std::fs::write(corp.dir.join("sub-chain.pem"), sub_chain).unwrap();
    corp.self_signed("other-root", "/CN=Another Root", "250101000000Z", "350101000000Z");
    let ints: String = ["ca", "front-proxy-ca", "etcd-ca"].iter().map(|n| corp.text(&format!("{n}.crt"))).collect();
    std::fs::write(corp.dir.join("intermediates.pem"), ints).unwrap();
    corp
}

/// `name.{key,csr,crt}` signed by `by` with the extensions `ext`, valid 2025 → `end`.
fn issue(corp: &Corp, name: &str, subject: &str, by: &str, end: &str, ext: &str) {
    corp.key(name);
    corp.csr(name, subject);
    corp.sign_by("ca.cnf", by, &format!("{name}.csr"), &format!("{name}.crt"), ("250101000000Z", end), &["-extensions", ext]);
}

fn config(profile: &str) -> String {
    let text = live_config(
        CLUSTER,
        &[
            ("cp1", "10.7.0.11", "control-plane, etcd"),
            ("cp2", "10.7.0.12", "control-plane, etcd"),
            ("cp3", "10.7.0.13", "control-plane, etcd"),
            ("w1", "10.7.0.21", "worker"),
        ],
    );
    text.replace("kind: Inventory\n", &format!("kind: Inventory\nprofile: {profile}\n"))
}

fn work(prefix: &str, profile: &str) -> Work {
    Work::with(prefix, CLUSTER, &config(profile), NOW, corp)
}

/// `ca import` of this test.
trait ImportWork {
    fn import_to(&self, out: &Path, which: &str, files: &[(&str, &str)], extra: &[&str]) -> Run;
    fn import(&self, which: &str, files: &[(&str, &str)], extra: &[&str]) -> Run;
    fn import_all(&self);
}

impl ImportWork for Work {
    /// `ca import WHICH` with `files` (flag, file name in corp/) into `out`.
    fn import_to(&self, out: &Path, which: &str, files: &[(&str, &str)], extra: &[&str]) -> Run {
        let mut args: Vec<String> =
            ["ca", "import", which, "--config", "c.yaml", "--now", NOW, "--out"].iter().map(|s| s.to_string()).collect();
        args.push(out.display().to_string());
        for (flag, name) in files {
            args.push(flag.to_string());
            args.push(if name.starts_with('/') { name.to_string() } else { self.corp.path(name) });
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&refs)
    }
    fn import(&self, which: &str, files: &[(&str, &str)], extra: &[&str]) -> Run {
        self.import_to(&self.out(), which, files, extra)
    }
    fn import_all(&self) {
        for which in ["ca", "front-proxy-ca", "etcd-ca"] {
            let r = self.import(
                which,
                &[("--cert", &format!("{which}.crt")), ("--key", &format!("{which}.key")), ("--chain", "root.crt")],
                &[],
            );
            assert!(r.ok(), "{}", r.describe());
            assert!(r.stdout.contains(&format!("imported {which} (O=Example Corp, CN=kubernetes {which}")), "{}", r.stdout);
        }
    }
}

/// Every file under `dir` (relative path → sha256), `None` when `dir` does not exist.
fn digests(dir: &Path) -> Option<BTreeMap<String, String>> {
    dir.exists().then(|| file_digests(dir))
}

struct Facts {
    ca: bool,
    server: bool,
}

fn facts(der: &[u8]) -> Facts {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    let ca = matches!(c.basic_constraints(), Ok(Some(b)) if b.value.ca);
    let server = matches!(c.extended_key_usage(), Ok(Some(e)) if e.value.server_auth);
    Facts { ca, server }
}

fn openssl_verify(scratch: &Path, corp: &Corp, what: &str, pem_bytes: &[u8], untrusted: &str) -> Result<(), String> {
    let file = scratch.join(unique_name("leaf"));
    std::fs::write(&file, pem_bytes).unwrap();
    let r = openssl(&["verify", "-attime", NOW_UNIX_S, "-CAfile", &corp.path("root.crt"), "-untrusted", untrusted, file.to_str().unwrap()]);
    if r.ok() && r.stdout.trim().ends_with(": OK") {
        Ok(())
    } else {
        Err(format!("{what}: {}", r.describe()))
    }
}

/// Every leaf of every tarball verifies up to the corporate root through the intermediates;
/// serving certificates carry their intermediate (and verify with the file alone as the
/// untrusted chain); CA files and kubeconfigs hold the signing CA alone.
fn check_bundle(w: &Work) {
    let scratch = w.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let intermediates = w.corp.path("intermediates.pem");
    let signing: Vec<Vec<u8>> = ["ca.crt", "front-proxy-ca.crt", "etcd-ca.crt"].iter().map(|n| w.corp.der(n)).collect();
    let mut failures = Failures::new();
    let (mut leaves, mut serving, mut ca_files, mut kubeconfigs) = (0, 0, 0, 0);
    let nodes = w.bundle().join("nodes");
    for entry in std::fs::read_dir(&nodes).unwrap() {
        let path = entry.unwrap().path();
        let node = path.file_name().unwrap().to_string_lossy().trim_end_matches(".tar.gz").to_string();
        for (name, bytes) in tarball_files(&path) {
            let at = format!("{node}:{name}");
            let certs = pem_certs(&bytes);
            if let Some(first) = certs.first() {
                let f = facts(first);
                if f.ca {
                    ca_files += 1;
                    failures.check(certs.len() == 1 && signing.contains(first), || {
                        format!("{at}: a CA file must hold the signing intermediate alone, it holds {} certificate(s)", certs.len())
                    });
                    continue;
                }
                leaves += 1;
                if let Err(e) = openssl_verify(&scratch, &w.corp, &at, &bytes, &intermediates) {
                    failures.fail(e);
                }
                if f.server {
                    serving += 1;
                    failures.check(certs.len() == 2 && signing.contains(&certs[1]), || {
                        format!("{at}: a serving certificate must carry its intermediate after the leaf ({} certificates)", certs.len())
                    });
                    let alone = scratch.join(unique_name("chain"));
                    std::fs::write(&alone, &bytes).unwrap();
                    if let Err(e) = openssl_verify(&scratch, &w.corp, &format!("{at} (its own chain)"), &bytes, alone.to_str().unwrap()) {
                        failures.fail(e);
                    }
                } else {
                    failures.check(certs.len() == 1, || format!("{at}: a client certificate holds {} certificates", certs.len()));
                }
                continue;
            }
            let Ok(text) = std::str::from_utf8(&bytes) else { continue };
            if !text.contains("kind: Config") {
                continue;
            }
            kubeconfigs += 1;
            for ca in kubeconfig_values(text, "certificate-authority-data") {
                failures.eq(&format!("{at}: certificate-authority-data"), &vec![w.corp.der("ca.crt")], &pem_certs(&ca));
            }
            for client in kubeconfig_values(text, "client-certificate-data") {
                leaves += 1;
                if let Err(e) = openssl_verify(&scratch, &w.corp, &format!("{at}: client-certificate-data"), &client, &intermediates) {
                    failures.fail(e);
                }
            }
        }
    }
    failures.check(leaves >= 20 && serving >= 6 && ca_files >= 4 && kubeconfigs >= 5, || {
        format!("too few files checked: {leaves} leaves, {serving} serving, {ca_files} CA files, {kubeconfigs} kubeconfigs")
    });
    // join.txt pins the signing CA (cluster-info holds it alone).
    let join = std::fs::read_to_string(w.bundle().join("join.txt")).unwrap();
    let hash = checks::discovery_hash(&w.corp.dir.join("ca.crt")).unwrap();
    failures.check(join.contains(&format!("--discovery-token-ca-cert-hash {hash}")), || format!("join.txt does not pin {hash}:\n{join}"));
    let info = std::fs::read_to_string(w.bundle().join("manifests/cluster-info.yaml")).unwrap();
    failures.check(info.contains(&base64_of(&w.corp.text("ca.crt"))), || "cluster-info does not hold the signing CA".into());
    // The state: the signing CA alone in ca.crt, its issuers beside it.
    failures.eq("state/pki/ca.crt", &w.corp.text("ca.crt"), &std::fs::read_to_string(w.bundle().join("state/pki/ca.crt")).unwrap());
    failures.eq(
        "state/pki/ca-chain.crt",
        &w.corp.text("root.crt"),
        &std::fs::read_to_string(w.bundle().join("state/pki/ca-chain.crt")).unwrap(),
    );
    failures.finish(&format!("check_bundle {}", w.dir.display()));
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

fn imported_bundle(profile: &str) {
    let w = work(&format!("ca-import-{profile}"), profile);
    w.import_all();
    let g = w.generate();
    assert!(g.ok(), "{}", g.describe());
    check_bundle(&w);
    // verify: no error; the root ending before the intermediates is a warning.
    let v = w.run(&["verify", w.bundle().to_str().unwrap(), "--now", NOW]);
    assert!(v.ok(), "{}", v.describe());
    assert!(v.stdout.contains("0 errors"), "{}", v.stdout);
    assert!(
        v.stdout.contains("the root \"O=Example Corp, CN=Example Corp Root CA\" of ca expires at 2033-01-01T00:00:00Z, before ca itself (2035-01-01T00:00:00Z)"),
        "{}",
        v.stdout
    );
    // Each tarball alone (beside its bundle: checked against the state's chain) and each node
    // extracted alone (no state: its CA files known by their place, intermediates and their own
    // names included): no error.
    for entry in std::fs::read_dir(w.bundle().join("nodes")).unwrap() {
        let tarball = entry.unwrap().path();
        let Some(node) = tarball.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".tar.gz")) else { continue };
        let root = w.dir.join("roots").join(node);
        extract(&tarball, &root);
        for target in [&tarball, &root] {
            let v = w.run(&["verify", target.to_str().unwrap(), "--now", NOW]);
            assert!(v.ok() && v.stdout.contains("0 errors"), "verify {}: {}", target.display(), v.describe());
        }
    }
    // check-expiration: the intermediate (the CA row) and the root, with their expiries.
    let x = w.run(&["certs", "check-expiration", "--dir", w.bundle().to_str().unwrap(), "--now", NOW]);
    assert_eq!(x.code, Some(0), "{}", x.describe());
    let row = |name: &str| x.stdout.lines().find(|l| l.split_whitespace().next() == Some(name)).map(str::to_string);
    for id in ["ca", "front-proxy-ca", "etcd-ca"] {
        let ca = row(id).unwrap_or_else(|| panic!("no {id} row:\n{}", x.stdout));
        assert!(ca.contains("Jan 01, 2035 00:00 UTC"), "{ca}");
        let root = row(&format!("{id}:root")).unwrap_or_else(|| panic!("no {id}:root row:\n{}", x.stdout));
        assert!(root.contains("Jan 01, 2033 00:00 UTC") && root.contains("yes"), "{root}");
        assert!(
            x.stdout.contains(&format!("{id}:root expires at 2033-01-01T00:00:00Z, before {id} itself (2035-01-01T00:00:00Z)")),
            "{}",
            x.stdout
        );
    }
    // generate --check finds nothing to do; a re-run keeps every file.
    let c = w.run(&["generate", "--check", "--config", "c.yaml", "--now", NOW, "--out", w.out().to_str().unwrap()]);
    assert!(c.ok() && c.stdout.contains("up to date"), "{}", c.describe());
    let before = digests(&w.bundle()).unwrap();
    let again = w.generate();
    assert!(again.ok(), "{}", again.describe());
    assert_eq!(digests(&w.bundle()).unwrap(), before, "a re-run changed files");
    // A lost chain file is refused (the serving certificates would lose their intermediate);
    // importing the same CA again puts it back, and nothing else changes.
    let chain = w.bundle().join("state/pki/ca-chain.crt");
    std::fs::remove_file(&chain).unwrap();
    let lost = digests(&w.bundle()).unwrap();
    let r = w.generate();
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(r.stderr.contains("state/pki/ca-chain.crt: is missing, and ca is an intermediate CA"), "{}", r.stderr);
    assert_eq!(digests(&w.bundle()).unwrap(), lost, "a refused generate changed files");
    let r = w.import("ca", &[("--cert", "ca.crt"), ("--key", "ca.key"), ("--chain", "root.crt")], &[]);
    assert!(r.ok() && r.stdout.contains("re-issued for the same key and subject"), "{}", r.describe());
    assert_eq!(digests(&w.bundle()).unwrap(), before, "the import did not put back exactly the chain file");
    // certs renew: every leaf again, each serving certificate keeping its intermediate; the
    // intermediate itself is its issuer's to renew.
    let r = w.run(&["certs", "renew", "all", "--dir", w.bundle().to_str().unwrap(), "--now", NOW]);
    assert!(r.ok(), "{}", r.describe());
    check_bundle(&w);
    let renewed = digests(&w.bundle()).unwrap();
    assert_ne!(renewed, before, "renew all changed nothing");
    let r = w.run(&["certs", "renew", "ca", "--dir", w.bundle().to_str().unwrap(), "--now", NOW]);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(
        r.stderr.contains(
            "is an intermediate CA issued by O=Example Corp, CN=Example Corp Root CA: kubebundle renews only the CAs it signs itself"
        ),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("then put it into the bundle's state with `kubebundle ca import`"), "{}", r.stderr);
    assert_eq!(digests(&w.bundle()).unwrap(), renewed, "a refused renew changed files");
}

#[test]
fn imported_intermediates_sign_every_leaf_of_a_kubeadm_bundle() {
    imported_bundle("kubeadm");
}

#[test]
fn imported_intermediates_sign_every_leaf_of_a_hardway_bundle() {
    imported_bundle("hardway");
}

#[test]
fn a_vault_json_response_imports_to_the_same_state_as_the_pem_files() {
    let w = work("ca-import-vault", "kubeadm");
    let (root, ca, key) = (w.corp.text("root.crt"), w.corp.text("ca.crt"), w.corp.text("ca.key"));
    // pki/root/sign-intermediate's response, with the exported key (pki/intermediate/generate/exported).
    let envelope = serde_json::json!({
        "request_id": "6c5a0b7e-0000-0000-0000-000000000000", "lease_id": "", "renewable": false, "lease_duration": 0,
        "data": {
            "certificate": ca, "issuing_ca": root, "ca_chain": [root], "private_key": key, "private_key_type": "ec",
            "serial_number": "10:00", "expiration": 2051222400i64,
        },
        "warnings": null, "auth": null,
    });
    std::fs::write(w.dir.join("vault.json"), serde_json::to_string_pretty(&envelope).unwrap()).unwrap();
    // The bare data object, as `jq .data` leaves it.
    let bare = serde_json::json!({
        "certificate": w.corp.text("front-proxy-ca.crt"), "issuing_ca": root, "private_key": w.corp.text("front-proxy-ca.key"),
        "expiration": "2051222400",
    });
    std::fs::write(w.dir.join("bare.json"), serde_json::to_string(&bare).unwrap()).unwrap();

    let (pem_out, json_out) = (w.dir.join("pem-out"), w.dir.join("json-out"));
    let r = w.import_to(&pem_out, "ca", &[("--cert", "ca.crt"), ("--key", "ca.key"), ("--chain", "root.crt")], &[]);
    assert!(r.ok(), "{}", r.describe());
    let r = w.import_to(
        &pem_out,
        "front-proxy-ca",
        &[("--cert", "front-proxy-ca.crt"), ("--key", "front-proxy-ca.key"), ("--chain", "root.crt")],
        &[],
    );
    assert!(r.ok(), "{}", r.describe());
    let vault = w.dir.join("vault.json").display().to_string();
    let r = w.import_to(&json_out, "ca", &[("--cert", &vault)], &[]);
    assert!(r.ok(), "{}", r.describe());
    let bare_path = w.dir.join("bare.json").display().to_string();
    let r = w.import_to(&json_out, "front-proxy-ca", &[("--cert", &bare_path)], &[]);
    assert!(r.ok(), "{}", r.describe());
    let (a, b) = (file_bytes(&pem_out.join(CLUSTER).join("state")), file_bytes(&json_out.join(CLUSTER).join("state")));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(b[name] == *bytes, "state/{name} differs between the PEM and the Vault JSON import");
    }
    assert!(a.contains_key("pki/ca-chain.crt") && a.contains_key("pki/front-proxy-ca-chain.crt"), "{:?}", a.keys());
    // sign-intermediate's response holds no key: --key gives it.
    let signed = serde_json::json!({"data": {"certificate": ca, "issuing_ca": root, "ca_chain": [root], "expiration": 2051222400i64}});
    std::fs::write(w.dir.join("signed.json"), signed.to_string()).unwrap();
    let signed_path = w.dir.join("signed.json").display().to_string();
    let key_out = w.dir.join("key-out");
    let r = w.import_to(&key_out, "ca", &[("--cert", &signed_path), ("--key", "ca.key")], &[]);
    assert!(r.ok(), "{}", r.describe());
    for f in ["pki/ca.crt", "pki/ca.key", "pki/ca-chain.crt"] {
        assert!(std::fs::read(key_out.join(CLUSTER).join("state").join(f)).unwrap() == a[f], "state/{f} differs");
    }
    // The same CA again is a no-op that says so.
    let before = digests(&json_out).unwrap();
    let r = w.import_to(&json_out, "ca", &[("--cert", &vault)], &[]);
    assert!(r.ok() && r.stdout.contains("is already in") && r.stdout.contains("nothing to do"), "{}", r.describe());
    assert_eq!(digests(&json_out).unwrap(), before);

    // Ed25519 and base64 DER are refused with what to ask Vault for.
    let ed = serde_json::json!({"data": {"certificate": ca, "private_key": key, "private_key_type": "ed25519"}});
    std::fs::write(w.dir.join("ed.json"), ed.to_string()).unwrap();
    let fresh = w.dir.join("fresh");
    let ed_path = w.dir.join("ed.json").display().to_string();
    let r = w.import_to(&fresh, "ca", &[("--cert", &ed_path)], &[]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains("ed.json: private_key_type is ed25519, which kubeadm cannot load")
            && r.stderr.contains("hint: issue the CA with key_type=rsa"),
        "{}",
        r.stderr
    );
    let der_b64 = base64_of_bytes(&w.corp.der("ca.crt"));
    let der = serde_json::json!({"data": {"certificate": der_b64, "private_key": "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEH"}});
    std::fs::write(w.dir.join("der.json"), der.to_string()).unwrap();
    let der_path = w.dir.join("der.json").display().to_string();
    let r = w.import_to(&fresh, "ca", &[("--cert", &der_path)], &[]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains("der.json: certificate: base64 DER, not PEM") && r.stderr.contains("hint: ask Vault for PEM"),
        "{}",
        r.stderr
    );
    assert!(!fresh.exists(), "a refused import made {}", fresh.display());
}

fn base64_of_bytes(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn every_refusal_names_the_file_and_the_fix_and_writes_nothing() {
    let w = work("ca-import-refusals", "kubeadm");
    // Before any state: a refusal makes no directory at all.
    let r = w.import("ca", &[("--cert", "leaf.crt"), ("--key", "leaf.key"), ("--chain", "ca.crt")], &[]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(!w.out().exists(), "a refused import made {}", w.out().display());

    w.import_all();
    let g = w.generate();
    assert!(g.ok(), "{}", g.describe());
    let before = digests(&w.out()).unwrap();
    let leaf = w.corp.path("leaf.crt");
    let ca = w.corp.path("ca.crt");
    let short = w.corp.path("short.crt");
    let root_key = w.corp.path("root.key");
    /// (what, the files given, the exit code, what the message says).
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, i32, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            "a leaf given as CA",
            vec![("--cert", "leaf.crt"), ("--key", "leaf.key"), ("--chain", "ca.crt")],
            2,
            vec![format!("{leaf}: CN=not-a-ca.example.com is not a CA (its basicConstraints do not say CA:TRUE)"), "hint: give the certificate of the CA".into()],
        ),
        (
            "another CA's key",
            vec![("--cert", "ca.crt"), ("--key", "root.key"), ("--chain", "root.crt")],
            2,
            vec![format!("{root_key}: the private key does not match the certificate of O=Example Corp, CN=kubernetes ca in {ca}"), "hint: give the key the CA was issued for".into()],
        ),
        (
            "a chain to another root",
            vec![("--cert", "ca.crt"), ("--key", "ca.key"), ("--chain", "other-root.crt")],
            2,
            vec![
                format!("{ca}: the chain of O=Example Corp, CN=kubernetes ca does not verify up to a self-signed root"),
                "no certificate in".into(),
                "hint: give the issuing CA and every CA above it, up to the root, with --chain".into(),
            ],
        ),
        (
            "a CA that ends before the leaves",
            vec![("--cert", "short.crt"), ("--key", "short.key"), ("--chain", "root.crt")],
            2,
            vec![
                format!("{short}: O=Example Corp, CN=kubernetes short expires at 2026-06-01T00:00:00Z, before the certificates generate would issue from it end (certificateValidityPeriod 8760h0m0s from now: 2027-01-01T00:00:00Z)"),
                "hint: import a CA valid until at least 2027-01-01T00:00:00Z, or shorten certificateValidityPeriod".into(),
            ],
        ),
        (
            "a chain whose pathlen forbids the CA",
            vec![("--cert", "sub.crt"), ("--key", "sub.key"), ("--chain", "sub-chain.pem")],
            2,
            vec![
                "sub-chain.pem: O=Example Corp, CN=kubernetes ca allows 0 CA(s) below it (pathlen), but 1 are: the chain does not verify".into(),
                "hint: have the CA issued under a CA whose pathlen allows it".into(),
            ],
        ),
        (
            "replacing a CA that signed the bundle",
            vec![("--cert", "other-root.crt"), ("--key", "other-root.key")],
            1,
            vec![
                "state/pki/ca.crt: the state already holds another ca (O=Example Corp, CN=kubernetes ca), which signed this bundle's certificates; nothing was written".into(),
                "hint: replacing a CA that signed a bundle is CA rotation, a later command".into(),
                "give --force".into(),
            ],
        ),
    ];
    for (what, files, code, wants) in cases {
        let r = w.import("ca", &files, &[]);
        assert_eq!(r.code, Some(code), "{what}: {}", r.describe());
        assert!(r.stderr.starts_with("kubebundle: "), "{what}: {}", r.stderr);
        for want in wants {
            assert!(r.stderr.contains(&want), "{what}: the message lacks {want:?}:\n{}", r.stderr);
        }
        assert_eq!(digests(&w.out()).unwrap(), before, "{what}: files changed");
    }
    // No key given: the state's key is the certificate's, so it is the same CA again.
    let r = w.import("ca", &[("--cert", "ca.crt"), ("--chain", "root.crt")], &[]);
    assert!(r.ok() && r.stdout.contains("is already in") && r.stdout.contains("nothing to do"), "{}", r.describe());
    assert_eq!(digests(&w.out()).unwrap(), before, "the same CA again changed files");
    // No key given and none in the state: external-CA mode, the certificate alone (tests/external_ca.rs).
    let fresh = w.dir.join("no-key-out");
    let r = w.import_to(&fresh, "ca", &[("--cert", "ca.crt"), ("--chain", "root.crt")], &[]);
    assert!(r.ok() && r.stdout.contains("without its key: external-CA mode"), "{}", r.describe());
    assert!(!fresh.join(CLUSTER).join("state/pki/ca.key").exists());
    // Another writer holds the bundle's lock: refused at once, nothing written.
    let lock = w.out().join(format!(".kubebundle-{CLUSTER}.lock"));
    let mut c = Command::new("flock");
    // -o: flock itself holds the lock (not the sleep it runs), so killing it releases the lock.
    c.arg("-o").arg(&lock).args(["sleep", "10"]);
    let holder = Proc::spawn("flock", c, w.dir.join("flock.log"));
    let held = wait_for(std::time::Duration::from_secs(5), || {
        let mut probe = Command::new("flock");
        probe.arg("-n").arg(&lock).arg("true");
        (!run_cmd(probe).ok()).then_some(())
    });
    assert!(held.is_some(), "flock did not take {}", lock.display());
    let r = w.import("ca", &[("--cert", "other-root.crt"), ("--key", "other-root.key")], &["--force"]);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(r.stderr.contains("another kubebundle command is writing") && r.stderr.contains(".kubebundle-imp.lock"), "{}", r.stderr);
    assert_eq!(digests(&w.out()).unwrap(), before, "a refused import changed files");
    drop(holder);
    // --force replaces it, keeping the old state in a backup.
    let r = w.import("ca", &[("--cert", "other-root.crt"), ("--key", "other-root.key")], &["--force"]);
    assert!(r.ok(), "{}", r.describe());
    assert!(r.stdout.contains("replaced ca (--force): the previous state was kept in"), "{}", r.stdout);
    let backup = std::fs::read_dir(w.out())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("kubebundle-backup-"))
        .expect("a backup");
    assert_eq!(std::fs::read_to_string(backup.join("state/pki/ca.crt")).unwrap(), w.corp.text("ca.crt"));
    assert_eq!(std::fs::read_to_string(w.bundle().join("state/pki/ca.crt")).unwrap(), w.corp.text("other-root.crt"));
    assert!(!w.bundle().join("state/pki/ca-chain.crt").exists(), "a root needs no chain file");
    let g = w.generate();
    assert!(g.ok(), "{}", g.describe());
    let v = w.run(&["verify", w.bundle().to_str().unwrap(), "--now", NOW]);
    assert!(v.ok(), "{}", v.describe());
}

/// The real kubeadm (K8S_BIN, v1.32.13, `--rootfs` in a private network namespace) takes every
/// certificate, the sa key and every kubeconfig of a control-plane tarball made under the
/// imported intermediates as existing, and writes nothing.
#[test]
fn kubeadm_uses_every_file_of_a_control_plane_made_under_imported_intermediates() {
    let Some(tools) = live::Tools::find_with(&["kubeadm"]) else { return };
    let mut w = work("ca-import-kubeadm", "kubeadm");
    let (cp, worker) = (("cp1", "198.51.100.31"), ("worker1", "198.51.100.32"));
    let config = live_config(CLUSTER, &[(cp.0, cp.1, "control-plane, etcd"), (worker.0, worker.1, "worker")])
        .replace("kubernetesVersion: v1.34.1\n", "kubernetesVersion: v1.32.13\n");
    std::fs::write(w.dir.join("c.yaml"), config).unwrap();
    // The binaries check validity against the real clock.
    let now = rfc3339(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64);
    w.now = now.clone();
    w.import_all();
    let r = w.generate();
    assert!(r.ok(), "{}", r.describe());
    verify_bundle(&w.bundle(), Some(&now)).unwrap_or_else(|e| panic!("{e}"));
    let root = w.dir.join("root-cp");
    extract(&w.bundle().join("nodes/cp1.tar.gz"), &root);
    let scratch = w.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let ns = live::Netns::new(&scratch);
    ns.add_address(cp.1);
    let before = file_bytes(&root);
    let kubeadm = |args: &[&str]| live::kubeadm(&ns, &tools, &root, args);
    let mut f = Failures::new();
    let r = kubeadm(&["init", "phase", "certs", "all", "--config", "/etc/kubernetes/kubeadm-init.yaml"]);
    assert!(r.ok(), "kubeadm init phase certs all: {}", r.describe());
    let expected = live::certs_all_existing();
    let lines = live::said(&r, "certs");
    for e in &expected {
        f.check(lines.contains(e), || format!("kubeadm init phase certs all did not say {e:?}:\n{}\n{}", r.stdout, r.stderr));
    }
    let other: Vec<&String> = lines.iter().filter(|l| !expected.contains(l) && !l.starts_with("Using certificateDir folder")).collect();
    f.check(other.is_empty(), || format!("kubeadm init phase certs all did more than use the existing files: {other:?}"));
    let r = kubeadm(&["init", "phase", "kubeconfig", "all", "--config", "/etc/kubernetes/kubeadm-init.yaml"]);
    assert!(r.ok(), "kubeadm init phase kubeconfig all: {}", r.describe());
    let lines = live::said(&r, "kubeconfig");
    for k in ["admin", "super-admin", "kubelet", "controller-manager", "scheduler"] {
        let e = format!("Using existing kubeconfig file: \"/etc/kubernetes/{k}.conf\"");
        f.check(lines.contains(&e), || format!("kubeadm init phase kubeconfig all did not say {e:?}:\n{}\n{}", r.stdout, r.stderr));
    }
    let after = file_bytes(&root);
    f.check(before == after, || "kubeadm changed or added files in the control plane's tree".into());
    f.note("kubeadm v1.32.13: every certificate, the sa key and the 5 kubeconfigs under imported intermediates \"Using existing\", the tree byte-identical");
    f.finish("kubeadm_uses_every_file_of_a_control_plane_made_under_imported_intermediates");
}

/// Keys in every format kubeadm reads (SEC1 after an EC PARAMETERS block, PKCS#1 RSA, PKCS#8)
/// are imported as they are; an Ed25519 CA is refused with what to use instead.
#[test]
fn keys_in_sec1_pkcs1_and_pkcs8_import_and_an_ed25519_ca_is_refused() {
    let w = work("ca-import-keys", "kubeadm");
    let corp = &w.corp;
    // SEC1, after the curve's parameters, as `openssl ecparam -genkey` writes a key.
    let params = ossl(&corp.dir, &["ecparam", "-name", "prime256v1"]).stdout;
    let sec1 = ossl(&corp.dir, &["ec", "-in", "ca.key"]).stdout;
    assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"), "{sec1}");
    std::fs::write(corp.dir.join("ca-sec1.key"), format!("{params}{sec1}")).unwrap();
    let sec1_out = w.dir.join("sec1-out");
    let r = w.import_to(&sec1_out, "ca", &[("--cert", "ca.crt"), ("--key", "ca-sec1.key"), ("--chain", "root.crt")], &[]);
    assert!(r.ok(), "{}", r.describe());
    assert_eq!(std::fs::read_to_string(sec1_out.join(CLUSTER).join("state/pki/ca.key")).unwrap(), sec1);

    // An RSA intermediate with a PKCS#1 key signs an ECDSA bundle.
    ossl(&corp.dir, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa-ca.key"]);
    corp.csr("rsa-ca", "/O=Example Corp/CN=kubernetes rsa ca");
    corp.sign_by("ca.cnf", "root", "rsa-ca.csr", "rsa-ca.crt", ("250101000000Z", "350101000000Z"), &["-extensions", "v3_int"]);
    let pkcs1 = ossl(&corp.dir, &["rsa", "-in", "rsa-ca.key", "-traditional"]).stdout;
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{pkcs1}");
    std::fs::write(corp.dir.join("rsa-ca-pkcs1.key"), &pkcs1).unwrap();
    let r = w.import("ca", &[("--cert", "rsa-ca.crt"), ("--key", "rsa-ca-pkcs1.key"), ("--chain", "root.crt")], &[]);
    assert!(r.ok(), "{}", r.describe());
    assert_eq!(std::fs::read_to_string(w.bundle().join("state/pki/ca.key")).unwrap(), pkcs1);
    let g = w.generate();
    assert!(g.ok(), "{}", g.describe());
    let v = w.run(&["verify", w.bundle().to_str().unwrap(), "--now", NOW]);
    assert!(v.ok() && v.stdout.contains("0 errors"), "{}", v.describe());
    let cp1 = tarball_files(&w.bundle().join("nodes/cp1.tar.gz"));
    let apiserver = &cp1["etc/kubernetes/pki/apiserver.crt"];
    assert_eq!(pem_certs(apiserver)[1], corp.der("rsa-ca.crt"), "apiserver.crt carries the RSA intermediate");
    let scratch = w.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    openssl_verify(&scratch, corp, "apiserver.crt", apiserver, &corp.path("rsa-ca.crt")).unwrap();

    // Ed25519: kubeadm cannot load it.
    ossl(&corp.dir, &["genpkey", "-algorithm", "ed25519", "-out", "ed-ca.key"]);
    corp.csr("ed-ca", "/CN=ed25519 ca");
    corp.sign_by("ca.cnf", "root", "ed-ca.csr", "ed-ca.crt", ("250101000000Z", "350101000000Z"), &["-extensions", "v3_int"]);
    let fresh = w.dir.join("ed-out");
    let r = w.import_to(&fresh, "ca", &[("--cert", "ed-ca.crt"), ("--key", "ed-ca.key"), ("--chain", "root.crt")], &[]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    let ed = corp.path("ed-ca.crt");
    assert!(r.stderr.contains(&format!("{ed}: CN=ed25519 ca has an Ed25519 key, which kubeadm cannot load")), "{}", r.stderr);
    assert!(r.stderr.contains("hint: use a CA with an RSA (2048, 3072 or 4096 bits) or ECDSA (P-256, P-384) key"), "{}", r.stderr);
    assert!(!fresh.exists());
}

/// Two CAs above the cluster's (root → issuing CA → cluster CA): serving certificates carry the
/// cluster CA and the issuing CA (never the root), the chain file holds both in order whatever
/// order --chain gave them, and check-expiration lists `ca:intermediate-1` and `ca:root`.
#[test]
fn a_two_level_chain_is_carried_up_to_the_root() {
    let w = work("ca-import-two-levels", "kubeadm");
    let corp = &w.corp;
    issue(corp, "issuing", "/O=Example Corp/CN=Example Corp Issuing CA", "root", "340101000000Z", "v3_int1");
    issue(corp, "deep", "/O=Example Corp/CN=kubernetes deep", "issuing", "340101000000Z", "v3_int");
    // The root first: the order of --chain does not matter.
    std::fs::write(corp.dir.join("deep-chain.pem"), format!("{}{}", corp.text("root.crt"), corp.text("issuing.crt"))).unwrap();
    let r = w.import("ca", &[("--cert", "deep.crt"), ("--key", "deep.key"), ("--chain", "deep-chain.pem")], &[]);
    assert!(r.ok(), "{}", r.describe());
    assert!(r.stdout.contains("its chain (2 certificate(s) up to the root O=Example Corp, CN=Example Corp Root CA"), "{}", r.stdout);
    let chain = std::fs::read_to_string(w.bundle().join("state/pki/ca-chain.crt")).unwrap();
    assert_eq!(chain, format!("{}{}", corp.text("issuing.crt"), corp.text("root.crt")));
    let g = w.generate();
    assert!(g.ok(), "{}", g.describe());
    let cp1 = tarball_files(&w.bundle().join("nodes/cp1.tar.gz"));
    let apiserver = &cp1["etc/kubernetes/pki/apiserver.crt"];
    assert_eq!(pem_certs(apiserver)[1..].to_vec(), vec![corp.der("deep.crt"), corp.der("issuing.crt")]);
    let scratch = w.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let own = scratch.join("apiserver-chain.pem");
    std::fs::write(&own, apiserver).unwrap();
    openssl_verify(&scratch, corp, "apiserver.crt", apiserver, own.to_str().unwrap()).unwrap();
    let client = &cp1["etc/kubernetes/pki/apiserver-kubelet-client.crt"];
    let untrusted = scratch.join("deep-untrusted.pem");
    std::fs::write(&untrusted, format!("{}{}", corp.text("deep.crt"), corp.text("issuing.crt"))).unwrap();
    openssl_verify(&scratch, corp, "apiserver-kubelet-client.crt", client, untrusted.to_str().unwrap()).unwrap();
    assert_eq!(pem_certs(&cp1["etc/kubernetes/pki/ca.crt"]), vec![corp.der("deep.crt")]);
    let v = w.run(&["verify", w.bundle().to_str().unwrap(), "--now", NOW]);
    assert!(v.ok() && v.stdout.contains("0 errors"), "{}", v.describe());
    let x = w.run(&["certs", "check-expiration", "--dir", w.bundle().to_str().unwrap(), "--now", NOW]);
    assert_eq!(x.code, Some(0), "{}", x.describe());
    let names: Vec<&str> = x
        .stdout
        .lines()
        .filter(|l| l.contains(" UTC "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("ca"))
        .collect();
    assert_eq!(names, ["ca", "ca:intermediate-1", "ca:root"], "{}", x.stdout);
    // The issuing CA ends with the cluster CA, not before it: no note for it.
    assert!(!x.stdout.contains("ca:intermediate-1 expires at"), "{}", x.stdout);
    assert!(x.stdout.contains("ca:root expires at 2033-01-01T00:00:00Z, before ca itself (2034-01-01T00:00:00Z)"), "{}", x.stdout);
}

/// verify checks what a leaf's file carries after it: a wrong intermediate is an error naming
/// the file, a serving certificate without its intermediate a warning.
#[test]
fn verify_checks_the_chain_a_serving_certificate_carries() {
    let w = work("ca-import-verify", "kubeadm");
    w.import_all();
    let g = w.run(&["generate", "--unpacked", "--config", "c.yaml", "--now", NOW, "--out", w.out().to_str().unwrap()]);
    assert!(g.ok(), "{}", g.describe());
    let v = w.run(&["verify", w.bundle().to_str().unwrap(), "--now", NOW]);
    assert!(v.ok(), "{}", v.describe());
    assert!(
        v.stdout.contains("apiserver carries its chain: 1 intermediate(s), up to \"O=Example Corp, CN=kubernetes ca\""),
        "{}",
        v.stdout
    );
    let file = w.bundle().join("nodes/cp1/etc/kubernetes/pki/apiserver.crt");
    let original = std::fs::read_to_string(&file).unwrap();
    let leaf = pem::encode_config(
        &pem::Pem::new("CERTIFICATE", pem_certs(original.as_bytes())[0].clone()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    let row = |out: &str, severity: &str, needle: &str| {
        out.lines().any(|l| l.starts_with(severity) && l.contains("nodes/cp1/etc/kubernetes/pki/apiserver.crt ") && l.contains(needle))
    };
    std::fs::write(&file, format!("{leaf}{}", w.corp.text("front-proxy-ca.crt"))).unwrap();
    let v = w.run(&["verify", w.bundle().to_str().unwrap(), "--now", NOW]);
    assert_eq!(v.code, Some(1), "{}", v.describe());
    assert!(
        row(&v.stdout, "ERROR", "\"O=Example Corp, CN=kubernetes front-proxy-ca\" after \"CN=kube-apiserver\" did not sign it"),
        "{}",
        v.stdout
    );
    std::fs::write(&file, &leaf).unwrap();
    let v = w.run(&["verify", w.bundle().to_str().unwrap(), "--now", NOW]);
    assert!(row(&v.stdout, "WARNING", "apiserver does not carry its intermediate ca"), "{}", v.stdout);
    std::fs::write(&file, format!("{original}{}", w.corp.text("root.crt"))).unwrap();
    let v = w.run(&["verify", w.bundle().to_str().unwrap(), "--now", NOW]);
    assert!(row(&v.stdout, "WARNING", "apiserver carries the root \"O=Example Corp, CN=Example Corp Root CA\""), "{}", v.stdout);
}
