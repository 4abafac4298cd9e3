//! `kubebundle::lifecycle::renew` (`certs renew`): on copies of the real kubeadm v1.24 tree, leaves and
//! kubeconfig client certificates renewed before and after they expired, with and without a new
//! key, CAs re-issued from their key, dry runs, refusals; and a generated kubebundle bundle.
//! openssl is the independent judge of chains, subjects, SANs, EKUs and keys.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kubebundle::lifecycle::renew::{RenewArgs, RenewError, RenewReport};

/// `renew` called in this test process. Other tests of this file spawn processes meanwhile, and a
/// child holds a copy of every open file description between its fork and its exec: the lock of
/// a tree renewed a moment ago can still be held by such a child for that instant. (A real
/// command spawns nothing, so it never meets this.)
fn renew(args: &RenewArgs) -> Result<RenewReport, RenewError> {
    for _ in 0..100 {
        match kubebundle::lifecycle::renew::renew(args) {
            Err(RenewError::Output(kubebundle::bundle::output::OutputError::Locked { .. })) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => return other,
        }
    }
    kubebundle::lifecycle::renew::renew(args)
}
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const YEAR: Duration = Duration::from_secs(8760 * 3600);
const TEN_YEARS: Duration = Duration::from_secs(87600 * 3600);

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/kubeadm-v1.24-etc-kubernetes")
}

fn at(rfc3339: &str) -> OffsetDateTime {
    OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap()
}

fn temp(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("kb-renew-{prefix}-")).tempdir().unwrap()
}

/// Copies the fixture with kubeadm's modes (git keeps none): keys and kubeconfigs 0600.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::write(&target, std::fs::read(e.path()).unwrap()).unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let mode = if name.ends_with(".crt") { 0o644 } else { 0o600 };
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

/// A fresh copy of the fixture at `<tmp>/etc/kubernetes`.
fn kubeadm_copy(prefix: &str) -> (tempfile::TempDir, PathBuf) {
    let t = temp(prefix);
    let etc = t.path().join("etc/kubernetes");
    copy_tree(&fixture(), &etc);
    (t, etc)
}

/// Every file under `dir`: relative path → (bytes, mode).
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, (Vec<u8>, u32)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), &rel, out);
            } else {
                let mode = e.metadata().unwrap().permissions().mode() & 0o7777;
                out.insert(rel, (std::fs::read(e.path()).unwrap(), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, "", &mut out);
    out
}

fn args(dir: &Path, targets: &[&str], now: &str) -> RenewArgs {
    RenewArgs {
        dir: dir.to_path_buf(),
        targets: targets.iter().map(|s| s.to_string()).collect(),
        new_key: false,
        validity: YEAR,
        dry_run: false,
        now: at(now),
        profile: None,
        csr_dir: None,
    }
}

fn run(a: &RenewArgs) -> RenewReport {
    renew(a).unwrap_or_else(|e| panic!("renew failed: {e}"))
}

fn openssl(args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("openssl is installed");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn ok(args: &[&str], stdin: Option<&[u8]>) -> String {
    let (good, out) = openssl(args, stdin);
    assert!(good, "openssl {args:?} failed: {out}");
    out
}

/// The PEM certificate of a leaf: the .crt, or a kubeconfig's client-certificate-data.
fn cert_pem(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "conf") {
        let doc = kubebundle::tree::kubeconfig::Kubeconfig::parse(&bytes).unwrap();
        let user = doc.current_user().unwrap();
        kubebundle::tree::kubeconfig::decode("x", user.client_certificate_data.as_deref()).unwrap().unwrap()
    } else {
        bytes
    }
}

fn key_pem(path: &Path) -> Vec<u8> {
    if path.extension().is_some_and(|e| e == "conf") {
        let doc = kubebundle::tree::kubeconfig::Kubeconfig::parse(&std::fs::read(path).unwrap()).unwrap();
        let user = doc.current_user().unwrap();
        kubebundle::tree::kubeconfig::decode("x", user.client_key_data.as_deref()).unwrap().unwrap()
    } else {
        std::fs::read(path.with_extension("key")).unwrap()
    }
}

fn ca_data(conf: &Path) -> Vec<u8> {
    let doc = kubebundle::tree::kubeconfig::Kubeconfig::parse(&std::fs::read(conf).unwrap()).unwrap();
    kubebundle::tree::kubeconfig::decode("x", doc.clusters[0].cluster.certificate_authority_data.as_deref()).unwrap().unwrap()
}

/// Subject and each extension that is copied, one at a time (rcgen writes them in its own order).
fn describe(pem: &[u8]) -> String {
    let mut s = ok(&["x509", "-noout", "-subject", "-nameopt", "RFC2253"], Some(pem));
    for ext in ["subjectAltName", "extendedKeyUsage", "keyUsage", "basicConstraints"] {
        s.push_str(&ok(&["x509", "-noout", "-ext", ext], Some(pem)));
    }
    s
}

fn pubkey(pem: &[u8]) -> String {
    ok(&["x509", "-noout", "-pubkey"], Some(pem))
}

fn not_after(pem: &[u8]) -> OffsetDateTime {
    let block = pem::parse(pem).unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(block.contents()).unwrap();
    x.validity().not_after.to_datetime()
}

fn not_before(pem: &[u8]) -> OffsetDateTime {
    let block = pem::parse(pem).unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(block.contents()).unwrap();
    x.validity().not_before.to_datetime()
}

/// `openssl verify -CAfile ca` at time `now`.
fn verifies(ca: &Path, pem: &[u8], now: OffsetDateTime) -> Result<(), String> {
    let t = temp("verify");
    let leaf = t.path().join("leaf.pem");
    std::fs::write(&leaf, pem).unwrap();
    let attime = now.unix_timestamp().to_string();
    let (good, out) = openssl(&["verify", "-attime", &attime, "-CAfile", ca.to_str().unwrap(), leaf.to_str().unwrap()], None);
    if good {
        Ok(())
    } else {
        Err(out)
    }
}

/// The fixture's leaves: name, file (relative to etc/kubernetes), CA file.
const LEAVES: &[(&str, &str, &str)] = &[
    ("apiserver", "pki/apiserver.crt", "pki/ca.crt"),
    ("apiserver-kubelet-client", "pki/apiserver-kubelet-client.crt", "pki/ca.crt"),
    ("front-proxy-client", "pki/front-proxy-client.crt", "pki/front-proxy-ca.crt"),
    ("apiserver-etcd-client", "pki/apiserver-etcd-client.crt", "pki/etcd/ca.crt"),
    ("etcd-server", "pki/etcd/server.crt", "pki/etcd/ca.crt"),
    ("etcd-peer", "pki/etcd/peer.crt", "pki/etcd/ca.crt"),
    ("etcd-healthcheck-client", "pki/etcd/healthcheck-client.crt", "pki/etcd/ca.crt"),
    ("admin.conf", "admin.conf", "pki/ca.crt"),
    ("controller-manager.conf", "controller-manager.conf", "pki/ca.crt"),
    ("scheduler.conf", "scheduler.conf", "pki/ca.crt"),
    ("kubelet.conf", "kubelet.conf", "pki/ca.crt"),
];

const UNTOUCHED: &[&str] = &[
    "pki/sa.key",
    "pki/sa.pub",
    "pki/ca.crt",
    "pki/ca.key",
    "pki/front-proxy-ca.crt",
    "pki/front-proxy-ca.key",
    "pki/etcd/ca.crt",
    "pki/etcd/ca.key",
];

/// Everything `renew all` must do on the kubeadm tree, at `now`.
fn renew_all_at(now_text: &str) {
    let (t, etc) = kubeadm_copy("all");
    let now = at(now_text);
    let before = snapshot(&etc);
    let report = run(&args(&etc, &["all"], now_text));

    let mut names: Vec<&str> = report.renewed.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    let mut expected: Vec<&str> = LEAVES.iter().map(|l| l.0).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(report.restart, ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"]);
    assert!(report.repacked.is_empty());
    let rendered = report.render();
    assert!(
        rendered.contains("restart, in this order: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet"),
        "{rendered}"
    );

    let after = snapshot(&etc);
    for (name, file, ca) in LEAVES {
        let old = cert_pem(&fixture().join(file));
        let new = cert_pem(&etc.join(file));
        assert_ne!(old, new, "{name} not renewed");
        verifies(&etc.join(ca), &new, now).unwrap_or_else(|e| panic!("{name} does not verify against {ca}: {e}"));
        assert_eq!(describe(&old), describe(&new), "{name}: subject/SANs/usages changed");
        assert_eq!(pubkey(&old), pubkey(&new), "{name}: the public key changed");
        assert_eq!(not_after(&new), now + YEAR, "{name}");
        assert_eq!(not_before(&new), now - Duration::from_secs(300), "{name}");
        assert_eq!(key_pem(&fixture().join(file)), key_pem(&etc.join(file)), "{name}: the key changed");
        let r = report.renewed.iter().find(|r| r.name == *name).unwrap();
        assert_eq!(r.old_not_after, not_after(&old));
        assert_eq!(r.new_not_after, now + YEAR);
        assert!(!r.new_key);
        assert_eq!(r.path, etc.join(file));
    }
    // Modes kept; untouched files byte-identical; private key files too.
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>(), "files added or removed");
    for (rel, (bytes, mode)) in &before {
        assert_eq!(after[rel].1, *mode, "{rel}: mode changed");
        if UNTOUCHED.contains(&rel.as_str()) || rel.ends_with(".key") {
            assert_eq!(&after[rel].0, bytes, "{rel} changed");
        }
    }
    // Kubeconfigs: only the client-certificate-data line differs.
    for conf in ["admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"] {
        let (old, new) = (String::from_utf8(before[conf].0.clone()).unwrap(), String::from_utf8(after[conf].0.clone()).unwrap());
        let diff: Vec<(&str, &str)> = old.lines().zip(new.lines()).filter(|(a, b)| a != b).collect();
        assert_eq!(old.lines().count(), new.lines().count(), "{conf}");
        assert_eq!(diff.len(), 1, "{conf}: {} lines differ", diff.len());
        assert!(diff[0].0.trim_start().starts_with("client-certificate-data: "), "{conf}");
        assert!(diff[0].1.starts_with(&diff[0].0[..diff[0].0.find(':').unwrap() + 2]), "{conf}: indentation changed");
        assert_eq!(old.ends_with('\n'), new.ends_with('\n'));
    }
    // The backup: beside the tree, named after now, byte-identical to the originals.
    let backup = report.backup_dir.clone().expect("a backup");
    let stamp = now.format(&time::macros::format_description!("[year][month][day]T[hour][minute][second]Z")).unwrap();
    assert_eq!(backup, std::fs::canonicalize(t.path().join("etc")).unwrap().join(format!("kubebundle-backup-{stamp}")));
    let saved = snapshot(&backup);
    assert_eq!(saved.len(), LEAVES.len());
    for (rel, (bytes, mode)) in &saved {
        assert_eq!(bytes, &before[rel].0, "backup of {rel} differs from the original");
        assert_eq!(*mode, before[rel].1, "backup of {rel}: mode");
    }
    // check-expiration agrees: nothing expired or broken at `now`.
    let exp = kubebundle::lifecycle::expiry::check_expiration(&kubebundle::lifecycle::expiry::ExpiryArgs {
        dir: etc.clone(),
        now,
        warn_within: Duration::from_secs(86400),
        profile: None,
    })
    .unwrap();
    assert_eq!(exp.exit_code(), 0, "{}", exp.render(kubebundle::lifecycle::expiry::Format::Table));
}

#[test]
fn all_before_the_leaves_expire() {
    renew_all_at("2026-12-01T00:00:00Z");
}

#[test]
fn all_after_the_leaves_expired() {
    renew_all_at("2028-01-01T00:00:00Z");
}

#[test]
fn new_key_for_apiserver() {
    let (_t, etc) = kubeadm_copy("newkey");
    let now = at("2026-12-01T00:00:00Z");
    let before = snapshot(&etc);
    let mut a = args(&etc, &["apiserver"], "2026-12-01T00:00:00Z");
    a.new_key = true;
    let report = run(&a);
    assert_eq!(report.renewed.len(), 1);
    assert!(report.renewed[0].new_key);
    assert_eq!(report.restart, ["kube-apiserver"]);
    let after = snapshot(&etc);
    let key = &after["pki/apiserver.key"].0;
    assert_ne!(key, &before["pki/apiserver.key"].0, "the key did not change");
    assert!(key.starts_with(b"-----BEGIN RSA PRIVATE KEY-----\n"), "not PKCS#1");
    assert_eq!(after["pki/apiserver.key"].1, 0o600);
    let text = ok(&["rsa", "-noout", "-text"], Some(key));
    assert!(text.contains("2048 bit"), "{text}");
    let cert = &after["pki/apiserver.crt"].0;
    let from_key = ok(&["pkey", "-pubout"], Some(key));
    assert_eq!(pubkey(cert), from_key, "the certificate does not match the new key");
    verifies(&etc.join("pki/ca.crt"), cert, now).unwrap();
    assert_eq!(describe(&before["pki/apiserver.crt"].0), describe(cert));
    for (rel, (bytes, _)) in &before {
        if !rel.starts_with("pki/apiserver.") {
            assert_eq!(&after[rel].0, bytes, "{rel} changed");
        }
    }
}

#[test]
fn new_key_for_a_kubeconfig() {
    let (_t, etc) = kubeadm_copy("newkey-conf");
    let mut a = args(&etc, &["admin.conf"], "2026-12-01T00:00:00Z");
    a.new_key = true;
    run(&a);
    let (cert, key) = (cert_pem(&etc.join("admin.conf")), key_pem(&etc.join("admin.conf")));
    assert_ne!(key, key_pem(&fixture().join("admin.conf")));
    assert!(key.starts_with(b"-----BEGIN RSA PRIVATE KEY-----\n"));
    assert_eq!(pubkey(&cert), ok(&["pkey", "-pubout"], Some(&key)));
    verifies(&etc.join("pki/ca.crt"), &cert, at("2026-12-01T00:00:00Z")).unwrap();
}

#[test]
fn new_key_keeps_a_pkcs8_key_file_pkcs8() {
    let (_t, etc) = kubeadm_copy("pkcs8");
    let key = etc.join("pki/front-proxy-client.key");
    let pkcs8 = ok(&["pkcs8", "-topk8", "-nocrypt", "-in", key.to_str().unwrap()], None);
    std::fs::write(&key, &pkcs8).unwrap();
    let mut a = args(&etc, &["front-proxy-client"], "2026-12-01T00:00:00Z");
    a.new_key = true;
    run(&a);
    let new = std::fs::read(&key).unwrap();
    assert!(new.starts_with(b"-----BEGIN PRIVATE KEY-----\n"), "{}", String::from_utf8_lossy(&new));
    assert_ne!(new, pkcs8.as_bytes());
    let cert = std::fs::read(etc.join("pki/front-proxy-client.crt")).unwrap();
    assert_eq!(pubkey(&cert), ok(&["pkey", "-pubout"], Some(&new)));
    verifies(&etc.join("pki/front-proxy-ca.crt"), &cert, at("2026-12-01T00:00:00Z")).unwrap();
}

fn discovery_hash(ca: &[u8]) -> String {
    let der = ok(&["x509", "-pubkey", "-noout"], Some(ca));
    let t = temp("hash");
    let pubpem = t.path().join("pub.pem");
    std::fs::write(&pubpem, der).unwrap();
    let out = Command::new("openssl").args(["pkey", "-pubin", "-outform", "der", "-in", pubpem.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    ok(&["dgst", "-sha256"], Some(&out.stdout)).split_whitespace().last().unwrap().to_string()
}

#[test]
fn renew_ca_keeps_the_key_the_ski_and_every_leaf_valid() {
    let (_t, etc) = kubeadm_copy("ca");
    let now = at("2026-12-01T00:00:00Z");
    let before = snapshot(&etc);
    let mut a = args(&etc, &["ca"], "2026-12-01T00:00:00Z");
    a.validity = TEN_YEARS;
    let report = run(&a);
    assert_eq!(report.renewed.len(), 1);
    assert_eq!(report.restart, ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"]);
    let after = snapshot(&etc);
    let (old_ca, new_ca) = (&before["pki/ca.crt"].0, &after["pki/ca.crt"].0);
    assert_ne!(old_ca, new_ca);
    assert_eq!(discovery_hash(old_ca), discovery_hash(new_ca));
    assert_eq!(not_after(new_ca), now + TEN_YEARS);
    assert_eq!(after["pki/ca.key"].0, before["pki/ca.key"].0);
    let ski = |pem: &[u8]| ok(&["x509", "-noout", "-ext", "subjectKeyIdentifier"], Some(pem));
    assert_eq!(ski(old_ca), ski(new_ca));
    let text = ok(&["x509", "-noout", "-text"], Some(new_ca));
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Digital Signature, Key Encipherment, Certificate Sign"), "{text}");
    assert_eq!(
        ok(&["x509", "-noout", "-subject", "-ext", "subjectAltName"], Some(old_ca)),
        ok(&["x509", "-noout", "-subject", "-ext", "subjectAltName"], Some(new_ca))
    );
    let ca_path = etc.join("pki/ca.crt");
    for (name, file, ca) in LEAVES.iter().filter(|l| l.2 == "pki/ca.crt") {
        let pem = cert_pem(&etc.join(file));
        assert_eq!(pem, cert_pem(&fixture().join(file)), "{name} changed");
        verifies(&ca_path, &pem, now).unwrap_or_else(|e| panic!("{name} no longer verifies against the new {ca}: {e}"));
    }
    for conf in ["admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"] {
        assert_eq!(&ca_data(&etc.join(conf)), new_ca, "{conf}: certificate-authority-data");
        let (old, new) = (String::from_utf8(before[conf].0.clone()).unwrap(), String::from_utf8(after[conf].0.clone()).unwrap());
        let diff: Vec<_> = old.lines().zip(new.lines()).filter(|(a, b)| a != b).collect();
        assert_eq!(diff.len(), 1, "{conf}");
        assert!(diff[0].0.trim_start().starts_with("certificate-authority-data: "));
    }
    for (rel, (bytes, mode)) in &before {
        assert_eq!(after[rel].1, *mode, "{rel}: mode");
        if rel != "pki/ca.crt" && !rel.ends_with(".conf") {
            assert_eq!(&after[rel].0, bytes, "{rel} changed");
        }
    }
    // Later, the CA renewed again lets leaves be renewed past the old CA's end.
    let mut a = args(&etc, &["ca"], "2030-01-01T00:00:00Z");
    a.validity = TEN_YEARS;
    run(&a);
    run(&args(&etc, &["apiserver"], "2036-12-01T00:00:00Z"));
    let later = at("2036-12-01T00:00:00Z");
    assert!(later > not_after(old_ca));
    verifies(&ca_path, &std::fs::read(etc.join("pki/apiserver.crt")).unwrap(), later).unwrap();
}

#[test]
fn renew_etcd_and_front_proxy_cas() {
    let (_t, etc) = kubeadm_copy("ca2");
    let now = at("2026-12-01T00:00:00Z");
    let mut a = args(&etc, &["etcd-ca", "front-proxy-ca"], "2026-12-01T00:00:00Z");
    a.validity = TEN_YEARS;
    let report = run(&a);
    assert_eq!(report.renewed.len(), 2);
    assert_eq!(report.restart, ["etcd", "kube-apiserver", "kube-controller-manager"]);
    for (_, file, ca) in LEAVES.iter().filter(|l| l.2 != "pki/ca.crt") {
        verifies(&etc.join(ca), &std::fs::read(etc.join(file)).unwrap(), now).unwrap();
    }
    assert_eq!(std::fs::read(etc.join("pki/ca.crt")).unwrap(), std::fs::read(fixture().join("pki/ca.crt")).unwrap());
}

#[test]
fn dry_run_writes_nothing() {
    let (t, etc) = kubeadm_copy("dry");
    let before = snapshot(t.path());
    let mut a = args(&etc, &["all"], "2028-01-01T00:00:00Z");
    a.dry_run = true;
    a.new_key = true;
    let report = run(&a);
    assert_eq!(report.renewed.len(), LEAVES.len());
    assert!(report.backup_dir.is_none());
    assert!(report.render().contains("dry run"), "{}", report.render());
    assert_eq!(snapshot(t.path()), before);
    let mut a = args(&etc, &["ca"], "2028-01-01T00:00:00Z");
    a.dry_run = true;
    run(&a);
    assert_eq!(snapshot(t.path()), before);
}

#[test]
fn refusals_name_the_fix_and_write_nothing() {
    let (t, etc) = kubeadm_copy("refuse");
    let before = snapshot(t.path());
    // Past the CA's end.
    let mut a = args(&etc, &["all"], "2036-06-01T00:00:00Z");
    a.validity = YEAR;
    let e = renew(&a).unwrap_err();
    assert!(matches!(e, RenewError::OutlivesCa { .. }), "{e}");
    assert!(e.to_string().contains("renew the CA first"), "{e}");
    // Unknown name.
    let e = renew(&args(&etc, &["apiserverr"], "2026-12-01T00:00:00Z")).unwrap_err();
    assert!(e.to_string().contains("unknown certificate \"apiserverr\""), "{e}");
    // Not a tree: a directory that matches no layout (issue 13: it says what it holds and what
    // each layout expects), and a path that is not a directory.
    let empty = temp("empty");
    let e = renew(&args(empty.path(), &["all"], "2026-12-01T00:00:00Z")).unwrap_err();
    assert!(matches!(e, RenewError::Unrecognised { .. }), "{e}");
    assert!(e.to_string().contains("hardway expects etc/k8s/shared/ca.crt"), "{e}");
    let e = renew(&args(&empty.path().join("nope"), &["all"], "2026-12-01T00:00:00Z")).unwrap_err();
    assert!(matches!(e, RenewError::NotATree { .. }), "{e}");
    let mut a = args(&etc, &["apiserver"], "2026-12-01T00:00:00Z");
    a.validity = Duration::from_secs(u64::MAX / 2);
    let e = renew(&a).unwrap_err();
    assert!(matches!(e, RenewError::Validity { .. }), "{e}");
    a.targets = vec!["ca".into()];
    let e = renew(&a).unwrap_err();
    assert!(matches!(e, RenewError::Validity { .. }), "{e}");
    let e = renew(&args(&etc, &[], "2026-12-01T00:00:00Z")).unwrap_err();
    assert!(matches!(e, RenewError::NoTargets), "{e}");
    assert_eq!(snapshot(t.path()), before);
    // An externally managed CA: the CA itself is refused; its leaves get CSRs (tests/external_ca.rs),
    // but never with --new-key (the tree's key must stay until the signed certificate is back).
    let etcd_ca_key = std::fs::read(etc.join("pki/etcd/ca.key")).unwrap();
    std::fs::remove_file(etc.join("pki/etcd/ca.key")).unwrap();
    let before = snapshot(t.path());
    let e = renew(&args(&etc, &["etcd-ca"], "2026-12-01T00:00:00Z")).unwrap_err();
    assert!(e.to_string().contains("externally managed: kubebundle cannot renew it"), "{e}");
    assert!(matches!(e, RenewError::ExternallyManaged { .. }), "{e}");
    let mut a = args(&etc, &["etcd-server"], "2026-12-01T00:00:00Z");
    a.new_key = true;
    let e = renew(&a).unwrap_err();
    assert!(matches!(e, RenewError::ExternalNewKey { .. }) && e.to_string().contains("renew without --new-key"), "{e}");
    let mut a = args(&etc, &["etcd-server"], "2026-12-01T00:00:00Z");
    a.dry_run = true;
    let r = run(&a);
    assert!(r.renewed.is_empty() && r.requests == [etc.join("pki/etcd/server.csr")], "{:?}", r.requests);
    assert_eq!(snapshot(t.path()), before);
    std::fs::write(etc.join("pki/etcd/ca.key"), etcd_ca_key).unwrap();
    // A key that does not match its certificate.
    std::fs::copy(etc.join("pki/apiserver-kubelet-client.key"), etc.join("pki/apiserver.key")).unwrap();
    let e = renew(&args(&etc, &["apiserver"], "2026-12-01T00:00:00Z")).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    // A second run in the same second never overwrites the first one's backup: it takes `-2`.
    let first = run(&args(&etc, &["front-proxy-client"], "2026-12-01T00:00:00Z")).backup_dir.unwrap();
    let held = std::fs::read(first.join("pki/front-proxy-client.crt")).unwrap();
    let second = run(&args(&etc, &["front-proxy-client"], "2026-12-01T00:00:00Z")).backup_dir.unwrap();
    assert_eq!(second.file_name().unwrap().to_string_lossy(), format!("{}-2", first.file_name().unwrap().to_string_lossy()));
    assert_eq!(std::fs::read(first.join("pki/front-proxy-client.crt")).unwrap(), held, "the first backup is untouched");
    assert_ne!(std::fs::read(second.join("pki/front-proxy-client.crt")).unwrap(), held, "the second holds what the first run wrote");
    // A certificate whose DER does not parse: said in plain words, with how to put it back.
    std::fs::write(etc.join("pki/front-proxy-client.crt"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    let e = renew(&args(&etc, &["front-proxy-client"], "2026-12-01T00:05:00Z")).unwrap_err().to_string();
    assert!(e.contains("not a readable X.509 certificate") && e.contains("hint: put back the file") && !e.contains("Parsing Error"), "{e}");
}

#[test]
fn a_node_root_with_etc_kubernetes_is_accepted() {
    let t = temp("root");
    copy_tree(&fixture(), &t.path().join("node/etc/kubernetes"));
    let report = run(&args(&t.path().join("node"), &["scheduler.conf"], "2026-12-01T00:00:00Z"));
    assert_eq!(report.renewed.len(), 1);
    assert_eq!(report.restart, ["kube-scheduler"]);
    assert!(report.backup_dir.unwrap().ends_with("kubebundle-backup-20261201T000000Z"));
    assert!(t.path().join("kubebundle-backup-20261201T000000Z/etc/kubernetes/scheduler.conf").is_file());
}

// ---------------------------------------------------------------------------------------------
// A kubebundle bundle

/// The bundle's config: three nodes, ECDSA-P256 (shared with the other suites' configs).
/// The bundle is renewed and verified ten months after it was made: its join token lives two
/// years (kubeadm's 24h token would have expired, which verify reports as an error).
fn bundle_config() -> String {
    let nodes = common::live_config(
        "rn",
        &[("cp1", "10.7.0.11", "control-plane, etcd"), ("cp2", "10.7.0.12", "control-plane, etcd"), ("w1", "10.7.0.21", "worker")],
    );
    format!("{nodes}---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- ttl: 17520h\n")
}

fn generate(dir: &Path) -> PathBuf {
    generate_with(dir, &[])
}

fn generate_with(dir: &Path, extra: &[&str]) -> PathBuf {
    let cfg = dir.join("cluster.yaml");
    std::fs::write(&cfg, bundle_config()).unwrap();
    let out = dir.join("out");
    let mut args = vec!["generate", "--unpacked", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(["--now", "2026-01-01T00:00:00Z"]);
    args.extend_from_slice(extra);
    let run = common::kubebundle(dir, &args, &[]);
    assert!(run.ok(), "{}", run.describe());
    out.join("rn")
}

/// A tarball's regular files: path → (bytes, mode).
fn untar(path: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()));
    let mut out = BTreeMap::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let p = e.path().unwrap().display().to_string();
            let mode = e.header().mode().unwrap();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            out.insert(p, (bytes, mode));
        }
    }
    out
}

fn verify_bundle(cluster: &Path, now: OffsetDateTime) {
    let r = kubebundle::audit::verify::verify(&kubebundle::audit::verify::VerifyArgs::new(cluster, now)).unwrap();
    assert!(!r.has_errors(), "verify found errors:\n{}", r.render_table());
}

#[test]
fn bundle_all_renews_every_node_and_repacks() {
    let t = temp("bundle");
    let cluster = generate(t.path());
    let now_text = "2026-11-01T00:00:00Z";
    let now = at(now_text);
    let before = snapshot(&cluster);
    let report = run(&args(&cluster, &["all"], now_text));
    let names: Vec<&str> = report.renewed.iter().map(|r| r.name.as_str()).collect();
    for n in ["cp1/apiserver", "cp1/super-admin.conf", "cp1/kubelet.conf", "cp2/etcd-peer", "cp2/kubelet-serving", "w1/kubelet-serving"] {
        assert!(names.contains(&n), "{n} not renewed: {names:?}");
    }
    assert!(!names.contains(&"cp2/super-admin.conf"));
    assert_eq!(report.repacked, ["cp1", "cp2", "w1"].map(|n| cluster.join(format!("nodes/{n}.tar.gz"))));
    assert_eq!(
        report.backup_dir.as_deref(),
        Some(std::fs::canonicalize(t.path().join("out")).unwrap().join("kubebundle-backup-20261101T000000Z").as_path())
    );
    let after = snapshot(&cluster);
    for (rel, (bytes, mode)) in &before {
        assert_eq!(after[rel].1, *mode, "{rel}: mode");
        // The state's leaf records follow the renewed certificates (checked below).
        if rel != "state/leaves.json"
            && (rel.starts_with("state/") || rel.ends_with(".key") || rel.ends_with("ca.crt") || rel.ends_with("sa.pub"))
        {
            assert_eq!(&after[rel].0, bytes, "{rel} changed");
        }
    }
    let leaves: serde_json::Value = serde_json::from_slice(&after["state/leaves.json"].0).unwrap();
    let recorded = |node: &str, id: &str| {
        let l = leaves["leaves"].as_array().unwrap().iter().find(|l| l["node"] == node && l["id"] == id).unwrap();
        l["cert"].as_str().unwrap().as_bytes().to_vec()
    };
    assert_eq!(recorded("cp2", "apiserver"), after["nodes/cp2/etc/kubernetes/pki/apiserver.crt"].0, "the record of cp2/apiserver");
    assert_eq!(recorded("w1", "kubelet-serving"), after["nodes/w1/var/lib/kubelet/pki/kubelet.crt"].0, "the record of w1/kubelet-serving");
    for node in ["cp1", "cp2", "w1"] {
        let root = cluster.join("nodes").join(node);
        let tree = snapshot(&root);
        let packed = untar(&cluster.join(format!("nodes/{node}.tar.gz")));
        assert_eq!(packed, tree, "{node}: the tarball does not hold the tree");
        let serving = std::fs::read(root.join("var/lib/kubelet/pki/kubelet.crt")).unwrap();
        assert_eq!(not_after(&serving), now + YEAR);
        verifies(&cluster.join("state/pki/ca.crt"), &serving, now).unwrap();
    }
    let apiserver = std::fs::read(cluster.join("nodes/cp2/etc/kubernetes/pki/apiserver.crt")).unwrap();
    assert_eq!(pubkey(&apiserver), pubkey(&before["nodes/cp2/etc/kubernetes/pki/apiserver.crt"].0));
    verifies(&cluster.join("state/pki/ca.crt"), &apiserver, now).unwrap();
    verify_bundle(&cluster, now);
}

#[test]
fn bundle_ca_renewal_reaches_state_nodes_and_kubeconfigs() {
    let t = temp("bundle-ca");
    let cluster = generate(t.path());
    let now_text = "2026-11-01T00:00:00Z";
    let now = at(now_text);
    let old_ca = std::fs::read(cluster.join("state/pki/ca.crt")).unwrap();
    let mut a = args(&cluster, &["ca"], now_text);
    a.validity = TEN_YEARS;
    let report = run(&a);
    assert_eq!(report.renewed.len(), 1);
    assert_eq!(report.renewed[0].name, "state/ca");
    let new_ca = std::fs::read(cluster.join("state/pki/ca.crt")).unwrap();
    assert_ne!(new_ca, old_ca);
    assert_eq!(discovery_hash(&old_ca), discovery_hash(&new_ca));
    for node in ["cp1", "cp2", "w1"] {
        let etc = cluster.join("nodes").join(node).join("etc/kubernetes");
        assert_eq!(std::fs::read(etc.join("pki/ca.crt")).unwrap(), new_ca, "{node}");
        for e in std::fs::read_dir(&etc).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "conf") {
                assert_eq!(ca_data(&p), new_ca, "{}", p.display());
            }
        }
        let packed = untar(&cluster.join(format!("nodes/{node}.tar.gz")));
        assert_eq!(packed, snapshot(&cluster.join("nodes").join(node)), "{node}");
    }
    assert_eq!(ca_data(&cluster.join("discovery.conf")), new_ca);
    // cluster-info too (signed again by its token), or joining nodes would get the old CA.
    let info = std::fs::read_to_string(cluster.join("manifests/cluster-info.yaml")).unwrap();
    assert!(info.contains(&B64.encode(&new_ca)) && !info.contains(&B64.encode(&old_ca)), "{info}");
    verify_bundle(&cluster, now);
}

#[test]
fn kubelet_conf_pointing_at_a_file_renews_that_file() {
    let t = temp("kubelet-file");
    let root = t.path().join("node");
    let etc = root.join("etc/kubernetes");
    copy_tree(&fixture(), &etc);
    let conf = etc.join("kubelet.conf");
    let (cert, key) = (cert_pem(&conf), key_pem(&conf));
    let pki = root.join("var/lib/kubelet/pki");
    std::fs::create_dir_all(&pki).unwrap();
    let real = pki.join("kubelet-client-2026-01-01.pem");
    std::fs::write(&real, [cert.clone(), key.clone()].concat()).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("/var/lib/kubelet/pki/kubelet-client-2026-01-01.pem", pki.join("kubelet-client-current.pem")).unwrap();
    let text = std::fs::read_to_string(&conf).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("client-certificate-data:") {
                "    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem".to_string()
            } else if l.trim_start().starts_with("client-key-data:") {
                "    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem".to_string()
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(&conf, &text).unwrap();
    let report = run(&args(&root, &["kubelet.conf"], "2028-01-01T00:00:00Z"));
    assert_eq!(report.renewed[0].path, real);
    assert_eq!(report.restart, ["kubelet"]);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), text, "kubelet.conf itself changed");
    assert!(std::fs::symlink_metadata(pki.join("kubelet-client-current.pem")).unwrap().file_type().is_symlink());
    let both = std::fs::read(&real).unwrap();
    assert_eq!(std::fs::metadata(&real).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(both.ends_with(&key), "the key is not kept after the certificate");
    assert_ne!(&both[..cert.len().min(both.len())], cert.as_slice());
    assert_eq!(pubkey(&both), pubkey(&cert));
    verifies(&etc.join("pki/ca.crt"), &both, at("2028-01-01T00:00:00Z")).unwrap();
}

/// plan.json's files of `node`: (artifact, path under the node root).
fn planned(cluster: &Path, node: &str) -> Vec<(String, PathBuf)> {
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(cluster.join("plan.json")).unwrap()).unwrap();
    let n = plan["nodes"].as_array().unwrap().iter().find(|n| n["name"] == node).unwrap();
    n["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["artifact"].as_str().unwrap().to_string(), cluster.join("nodes").join(node).join(f["path"].as_str().unwrap())))
        .collect()
}

#[test]
fn hardway_and_binary_bundles_are_checked_and_renewed_where_their_profile_puts_files() {
    for profile in ["hardway", "binary"] {
        let t = temp(profile);
        let cluster = generate_with(t.path(), &["--profile", profile]);
        let leaf_files = |node: &str| -> Vec<PathBuf> {
            planned(&cluster, node)
                .into_iter()
                .filter(|(a, _)| a.ends_with(".crt") && !["ca.crt", "front-proxy-ca.crt", "etcd-ca.crt"].contains(&a.as_str()))
                .map(|(_, p)| p)
                .collect()
        };
        // check-expiration lists every leaf at the profile's path.
        let exp = kubebundle::lifecycle::expiry::check_expiration(&kubebundle::lifecycle::expiry::ExpiryArgs {
            dir: cluster.clone(),
            now: at("2026-06-01T00:00:00Z"),
            warn_within: Duration::from_secs(30 * 86400),
            profile: None,
        })
        .unwrap();
        let listed: Vec<String> = exp.certificates.iter().map(|c| c.path.clone()).collect();
        for node in ["cp1", "w1"] {
            for f in leaf_files(node) {
                assert!(listed.contains(&f.display().to_string()), "{profile}: {} not listed: {listed:?}", f.display());
            }
        }
        assert!(exp.certificates.iter().any(|c| c.name == "cp1/apiserver"), "{profile}");
        assert_eq!(exp.exit_code(), 0, "{profile}: {}", exp.render(kubebundle::lifecycle::expiry::Format::Table));

        // renew all: every leaf file of every node, signed by the state's CA, a year from now.
        let now_text = "2026-11-01T00:00:00Z";
        let now = at(now_text);
        let before = snapshot(&cluster);
        let report = run(&args(&cluster, &["all"], now_text));
        assert!(report.render().contains("systemctl restart etcd kube-apiserver"), "{profile}: {}", report.render());
        for node in ["cp1", "cp2", "w1"] {
            for f in leaf_files(node) {
                let pem = std::fs::read(&f).unwrap();
                assert_eq!(not_after(&pem), now + YEAR, "{profile}: {}", f.display());
                let ca = if f.display().to_string().contains("etcd") { "state/pki/etcd/ca.crt" } else { "state/pki/ca.crt" };
                let ca = if f.display().to_string().contains("front-proxy") { "state/pki/front-proxy-ca.crt" } else { ca };
                verifies(&cluster.join(ca), &pem, now).unwrap_or_else(|e| panic!("{profile}: {}: {e}", f.display()));
            }
        }
        // binary: the kubeconfigs point at the renewed files, so they are unchanged.
        if profile == "binary" {
            let rel = "nodes/cp1/etc/kubernetes/kube-controller-manager.kubeconfig";
            assert_eq!(std::fs::read(cluster.join(rel)).unwrap(), before[rel].0, "{rel}");
        }
        verify_bundle(&cluster, now);

        // renew ca: every copy of ca.crt on the nodes and every kubeconfig's CA data follow.
        let mut a = args(&cluster, &["ca"], "2026-11-01T00:01:00Z");
        a.validity = TEN_YEARS;
        run(&a);
        let new_ca = std::fs::read(cluster.join("state/pki/ca.crt")).unwrap();
        for node in ["cp1", "w1"] {
            for (artifact, path) in planned(&cluster, node) {
                if artifact == "ca.crt" {
                    assert_eq!(std::fs::read(&path).unwrap(), new_ca, "{profile}: {}", path.display());
                } else if artifact.ends_with(".conf") && !artifact.ends_with(".conf.crt") {
                    assert_eq!(ca_data(&path), new_ca, "{profile}: {}", path.display());
                }
            }
        }
        verify_bundle(&cluster, now);
    }
}

#[test]
fn the_report_shows_control_characters_in_paths_escaped() {
    let t = temp("escape");
    let etc = t.path().join("etc\u{1b}[2J\u{1b}[31m").join("kubernetes");
    copy_tree(&fixture(), &etc);
    let report = run(&args(&etc, &["apiserver"], "2026-12-01T00:00:00Z"));
    let rendered = report.render();
    assert!(!rendered.contains('\u{1b}'), "the report printed a raw escape: {rendered:?}");
    assert!(rendered.contains("etc\\x1b[2J\\x1b[31m/kubernetes/pki/apiserver.crt"), "{rendered}");
    assert!(rendered.contains("backup of the"), "{rendered}");
}
