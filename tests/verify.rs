//! `kubebundle::verify`: passes on every kind of bundle the generator makes (bundle dir, each
//! tarball, each node root, with and without a plan beside it) and fails, naming the problem,
//! on tampered copies.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kubebundle::verify::{self, Finding, Report, Severity, VerifyArgs};
use time::OffsetDateTime;

use common::{kubebundle, rfc3339, temp_dir};

// ---------------------------------------------------------------------------------------------
// Bundles, each generated once and shared (tests only read them, tampering works on copies)

struct Bundle {
    _dir: tempfile::TempDir,
    /// `out/<clusterName>`
    cluster: PathBuf,
}

impl Bundle {
    fn node(&self, name: &str) -> PathBuf {
        self.cluster.join("nodes").join(name)
    }
    fn tarball(&self, name: &str) -> PathBuf {
        self.cluster.join("nodes").join(format!("{name}.tar.gz"))
    }
    fn node_names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.cluster.join("nodes"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// Generates `config` (None: the embedded default) into a fresh dir. `state_from` is copied to
/// `out/<cluster>/state` first, so the run reuses its CAs.
fn generate(prefix: &str, cluster: &str, config: Option<&str>, now: Option<i64>, state_from: Option<&Path>) -> Bundle {
    let dir = temp_dir(prefix);
    let out = dir.path().join("out");
    if let Some(state) = state_from {
        copy_tree(state, &out.join(cluster).join("state"));
    }
    let out_s = out.to_str().unwrap().to_string();
    let cfg = dir.path().join("cluster.yaml");
    let mut args = vec!["generate".to_string(), "--unpacked".into(), "--out".into(), out_s];
    if let Some(text) = config {
        std::fs::write(&cfg, text).unwrap();
        args.extend(["--config".into(), cfg.to_str().unwrap().to_string()]);
    }
    if let Some(ts) = now {
        args.extend(["--now".into(), rfc3339(ts)]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = kubebundle(dir.path(), &argv, &[]);
    assert!(run.ok(), "generate failed: {}", run.describe());
    Bundle { cluster: out.join(cluster), _dir: dir }
}

const MULTI: &str = "apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
clusterName: multi
kubernetesVersion: v1.34.1
encryptionAlgorithm: ECDSA-P256
---
apiVersion: kubebundle.dev/v1alpha1
kind: Inventory
workerJoin: token
nodes:
- {name: cp1, address: 10.1.0.11, roles: [control-plane, etcd]}
- {name: cp2, address: 10.1.0.12, roles: [control-plane]}
- {name: etcd1, address: 10.1.0.21, roles: [etcd]}
- {name: worker1, address: 10.1.0.31, roles: [worker]}
";

/// Workers join with a pre-issued kubelet.conf; IPv6 addresses and service subnet.
const CERT_JOIN_V6: &str = "apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
clusterName: six
kubernetesVersion: v1.34.1
encryptionAlgorithm: ECDSA-P256
controlPlaneEndpoint: api.six.example:6443
networking: {serviceSubnet: \"fd00:10:96::/112\"}
---
apiVersion: kubebundle.dev/v1alpha1
kind: Inventory
workerJoin: certificate
nodes:
- {name: cp1, address: \"fd00::11\", roles: [control-plane, etcd]}
- {name: w1, address: \"fd00::21\", roles: [worker]}
- {name: w2, address: 10.3.0.22, roles: [worker]}
";

/// kubeadm v1beta3 for Kubernetes 1.27 (RSA-2048 only, no super-admin.conf).
const OLD: &str = "apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
clusterName: old
kubernetesVersion: v1.27.3
controlPlaneEndpoint: api.old.example:6443
---
apiVersion: kubebundle.dev/v1alpha1
kind: Inventory
nodes:
- {name: cp1, address: 10.2.0.11, roles: [control-plane, etcd]}
- {name: w1, address: 10.2.0.21, roles: [worker]}
";

fn small(cluster: &str, extra: &str) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: {cluster}\nkubernetesVersion: v1.34.1\nencryptionAlgorithm: ECDSA-P256\n{extra}---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n- {{name: cp1, address: 10.4.0.11, roles: [control-plane, etcd]}}\n- {{name: w1, address: 10.4.0.21, roles: [worker]}}\n"
    )
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn multi() -> &'static Bundle {
    static B: OnceLock<Bundle> = OnceLock::new();
    B.get_or_init(|| generate("verify-multi", "multi", Some(MULTI), None, None))
}

fn six() -> &'static Bundle {
    static B: OnceLock<Bundle> = OnceLock::new();
    B.get_or_init(|| generate("verify-six", "six", Some(CERT_JOIN_V6), None, None))
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn run_verify(path: &Path) -> Report {
    verify::verify(&VerifyArgs::new(path, OffsetDateTime::now_utc())).unwrap_or_else(|e| panic!("verify {}: {e}", path.display()))
}

fn errors(r: &Report) -> Vec<&Finding> {
    r.findings.iter().filter(|f| f.severity == Severity::Error).collect()
}

fn assert_clean(path: &Path) -> Report {
    let r = run_verify(path);
    assert!(!r.has_errors(), "verify {} found errors:\n{}", path.display(), r.render_table());
    assert!(r.findings.iter().any(|f| f.severity == Severity::Ok), "no checks ran on {}", path.display());
    r
}

/// Asserts an error finding of `check` whose message holds `fragment` (and whose path holds
/// `path_fragment`).
fn assert_error(r: &Report, check: &str, path_fragment: &str, fragment: &str) {
    let hit = errors(r).into_iter().any(|f| f.check == check && f.path.contains(path_fragment) && f.message.contains(fragment));
    assert!(hit, "no {check} error on *{path_fragment}* mentioning {fragment:?}; report:\n{}", r.render_table());
}

/// Every node of `b` verifies clean as a bundle, as each tarball and as each node root; each
/// tarball copied alone (no plan: everything inferred) is clean too.
fn assert_bundle_clean(b: &Bundle) {
    let r = assert_clean(&b.cluster);
    let names = b.node_names();
    assert!(!names.is_empty());
    for n in &names {
        // Each node was checked twice in the bundle (tree and tarball) and compared.
        assert!(r.findings.iter().any(|f| &f.node == n && f.path.starts_with(&format!("nodes/{n}.tar.gz:"))), "{n}");
        assert!(r.findings.iter().any(|f| &f.node == n && f.check == "archive" && f.severity == Severity::Ok), "{n}");
        assert_clean(&b.tarball(n));
        assert_clean(&b.node(n));
        let alone = temp_dir("verify-alone");
        let t = alone.path().join(format!("{n}.tar.gz"));
        std::fs::copy(b.tarball(n), &t).unwrap();
        let r = assert_clean(&t);
        assert!(r.findings.iter().all(|f| &f.node == n), "inferred node name:\n{}", r.render_table());
        let root = alone.path().join("root");
        copy_tree(&b.node(n), &root);
        assert_clean(&root);
    }
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let p = e.path();
        let to = dst.join(e.file_name());
        if p.is_dir() {
            copy_tree(&p, &to);
        } else {
            std::fs::copy(&p, &to).unwrap(); // keeps the mode
        }
    }
}

/// A copy of the whole bundle.
fn copy_bundle(b: &Bundle) -> (tempfile::TempDir, PathBuf) {
    let dir = temp_dir("verify-copy");
    let cluster = dir.path().join(b.cluster.file_name().unwrap());
    copy_tree(&b.cluster, &cluster);
    (dir, cluster)
}

fn replace_file(dst: &Path, src: &Path) {
    let mode = std::fs::metadata(dst).map(|m| m.permissions()).unwrap();
    std::fs::copy(src, dst).unwrap();
    std::fs::set_permissions(dst, mode).unwrap();
}

/// A raw tar entry: the name is written into the header as is (so `..` and absolute paths
/// can be made, which the tar crate's `set_path` refuses).
enum Raw<'a> {
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
}

/// Rebuilds `src` (a node tar.gz) into `dst` with `extra` entries appended.
fn rebuild_tarball(src: &Path, dst: &Path, extra: &[Raw]) {
    let bytes = std::fs::read(src).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let header = e.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        builder.append(&header, data.as_slice()).unwrap();
    }
    for x in extra {
        let mut h = tar::Header::new_old();
        let (name, data, mode, kind, link): (&str, &[u8], u32, tar::EntryType, Option<&str>) = match x {
            Raw::File(n, d, m) => (n, d, *m, tar::EntryType::Regular, None),
            Raw::Symlink(n, target) => (n, &[], 0o777, tar::EntryType::Symlink, Some(*target)),
        };
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            old.linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(kind);
        h.set_mtime(0);
        h.set_cksum();
        builder.append(&h, data).unwrap();
    }
    let gz = builder.into_inner().unwrap();
    let mut f = std::fs::File::create(dst).unwrap();
    f.write_all(&gz.finish().unwrap()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Clean bundles

#[test]
fn the_embedded_default_verifies() {
    // RSA-2048, 5 nodes: the slowest bundle, generated once.
    let b = generate("verify-default", "kubernetes", None, None, None);
    let r = assert_clean(&b.cluster);
    // Every check ran and passed somewhere.
    for check in ["chain", "key", "sans", "eku", "subject", "expiry", "mode", "least-privilege", "kubeconfig", "discovery-hash", "archive"]
    {
        assert!(r.findings.iter().any(|f| f.check == check && f.severity == Severity::Ok), "{check} never passed:\n{}", r.render_table());
    }
    for n in ["cp1", "worker1"] {
        assert_clean(&b.tarball(n));
        assert_clean(&b.node(n));
    }
    let table = r.render_table();
    let first = table.lines().next().unwrap();
    assert!(
        first.starts_with("SEVERITY")
            && first.contains("NODE")
            && first.contains("FILE")
            && first.contains("CHECK")
            && first.contains("MESSAGE")
    );
    assert!(table.trim_end().lines().last().unwrap().starts_with("0 errors, "), "{table}");
    // Sorted by node, path, check.
    let keys: Vec<(&str, &str, &str)> = r.findings.iter().map(|f| (f.node.as_str(), f.path.as_str(), f.check)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

#[test]
fn a_multi_role_ecdsa_cluster_verifies() {
    assert_bundle_clean(multi());
    // Roles were inferred right from a lone etcd-only tarball: no control-plane file expected.
    let r = run_verify(&multi().tarball("etcd1"));
    assert!(r.findings.iter().any(|f| f.path.ends_with("etcd/server.crt") && f.check == "sans" && f.severity == Severity::Ok));
}

#[test]
fn certificate_join_and_ipv6_verify() {
    assert_bundle_clean(six());
}

#[test]
fn a_v1beta3_v1_27_bundle_verifies() {
    let b = generate("verify-old", "old", Some(OLD), None, None);
    assert_bundle_clean(&b);
}

#[test]
fn refuses_what_is_not_a_bundle() {
    let d = temp_dir("verify-none");
    let e = verify::verify(&VerifyArgs::new(d.path(), OffsetDateTime::now_utc())).unwrap_err();
    assert!(e.to_string().contains("node tarball"), "{e}");
    let e = verify::verify(&VerifyArgs::new(d.path().join("missing"), OffsetDateTime::now_utc())).unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
    let f = d.path().join("notes.txt");
    std::fs::write(&f, "hello").unwrap();
    assert!(verify::verify(&VerifyArgs::new(&f, OffsetDateTime::now_utc())).is_err());
    // A file that claims to be a tarball but is garbage is a finding, not a crash.
    let g = d.path().join("bad.tar.gz");
    std::fs::write(&g, b"\x1f\x8b\x08garbage").unwrap();
    let r = run_verify(&g);
    assert!(r.has_errors());
}

// ---------------------------------------------------------------------------------------------
// Tampered bundles

#[test]
fn a_ca_key_in_a_worker_tarball_is_an_error() {
    let b = multi();
    let (_d, cluster) = copy_bundle(b);
    let ca_key = std::fs::read(b.node("cp1").join("etc/kubernetes/pki/ca.key")).unwrap();
    let tgz = cluster.join("nodes/worker1.tar.gz");
    let tmp = cluster.join("nodes/tmp.tgz.part");
    rebuild_tarball(&tgz, &tmp, &[Raw::File("etc/kubernetes/pki/ca.key", &ca_key, 0o600)]);
    std::fs::rename(&tmp, &tgz).unwrap();
    // With the plan beside it: an unexpected file.
    let r = run_verify(&tgz);
    assert_error(&r, "least-privilege", "etc/kubernetes/pki/ca.key", "unexpected file");
    // Alone (roles inferred): a key only control planes need.
    let alone = temp_dir("verify-alone");
    let t = alone.path().join("worker1.tar.gz");
    std::fs::copy(&tgz, &t).unwrap();
    let r = run_verify(&t);
    assert_error(&r, "least-privilege", "etc/kubernetes/pki/ca.key", "only for control-plane nodes");
    // In the bundle: also the tarball no longer matches the tree.
    let r = run_verify(&cluster);
    assert_error(&r, "archive", "nodes/worker1.tar.gz", "only in the tarball");
}

#[test]
fn a_swapped_key_is_an_error() {
    let b = multi();
    let (_d, cluster) = copy_bundle(b);
    let key = cluster.join("nodes/cp1/etc/kubernetes/pki/apiserver.key");
    replace_file(&key, &b.node("cp2").join("etc/kubernetes/pki/apiserver.key"));
    let r = run_verify(&cluster.join("nodes/cp1"));
    assert_error(&r, "key", "apiserver.key", "does not match");
    assert!(errors(&r).iter().all(|f| f.check == "key"), "only the key check fails:\n{}", r.render_table());
}

#[test]
fn a_leaf_from_another_ca_is_an_error() {
    let (_d, cluster) = copy_bundle(multi());
    let pki = cluster.join("nodes/cp1/etc/kubernetes/pki");
    let other = six().node("cp1").join("etc/kubernetes/pki");
    replace_file(&pki.join("apiserver.crt"), &other.join("apiserver.crt"));
    replace_file(&pki.join("apiserver.key"), &other.join("apiserver.key"));
    let r = run_verify(&cluster.join("nodes/cp1"));
    assert_error(&r, "chain", "apiserver.crt", "expected CA ca (etc/kubernetes/pki/ca.crt)");
    // The key still fits its certificate: only the chain (and the foreign SANs) are wrong.
    assert!(!errors(&r).iter().any(|f| f.check == "key"), "{}", r.render_table());
}

#[test]
fn an_expired_leaf_is_an_error() {
    let two_years_ago = now_unix() - 2 * 365 * common::DAY;
    let b = generate("verify-expired", "old-leaves", Some(&small("old-leaves", "")), Some(two_years_ago), None);
    let r = run_verify(&b.node("cp1"));
    assert_error(&r, "expiry", "pki/apiserver.crt", "apiserver expired at");
    assert_error(&r, "expiry", "admin.conf", "admin.conf expired at");
    // The CAs (10 years) are still valid.
    assert!(!errors(&r).iter().any(|f| f.check == "expiry" && f.message.starts_with("CA ")), "{}", r.render_table());
    // A bundle made with --now verifies at its own clock.
    let at = OffsetDateTime::from_unix_timestamp(two_years_ago + common::HOUR).unwrap();
    let r = verify::verify(&VerifyArgs::new(&b.cluster, at)).unwrap();
    assert!(!r.has_errors(), "{}", r.render_table());
    // Close to the end: warnings, not errors.
    let late = OffsetDateTime::from_unix_timestamp(two_years_ago + 360 * common::DAY).unwrap();
    let r = verify::verify(&VerifyArgs::new(&b.cluster, late)).unwrap();
    assert!(!r.has_errors(), "{}", r.render_table());
    assert!(r.findings.iter().any(|f| f.check == "expiry" && f.severity == Severity::Warning && f.message.contains("expires in")));
}

#[test]
fn an_expired_ca_is_named() {
    let cfg = small("short", "caCertificateValidityPeriod: 2h\ncertificateValidityPeriod: 1h\n");
    let b = generate("verify-shortca", "short", Some(&cfg), Some(now_unix() - common::DAY), None);
    let r = run_verify(&b.cluster);
    assert_error(&r, "expiry", "state/pki/ca.crt", "CA ca (\"kubernetes\") expired at");
    assert_error(&r, "expiry", "nodes/w1/etc/kubernetes/pki/ca.crt", "CA ca (\"kubernetes\") expired at");
    assert_error(&r, "expiry", "etc/kubernetes/pki/etcd/ca.crt", "CA etcd-ca (\"etcd-ca\") expired at");
}

#[test]
fn a_world_readable_key_is_an_error() {
    let (_d, cluster) = copy_bundle(multi());
    let root = cluster.join("nodes/etcd1");
    let key = root.join("etc/kubernetes/pki/etcd/peer.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let r = run_verify(&root);
    assert_error(&r, "mode", "etcd/peer.key", "0644: a secret readable by others");
    // Without a plan too.
    let alone = temp_dir("verify-alone");
    copy_tree(&root, alone.path());
    assert_error(&run_verify(alone.path()), "mode", "etcd/peer.key", "0644");
}

#[test]
fn a_missing_san_is_an_error() {
    let a = multi();
    // Same CAs (a copy of the state), cp1 at another address.
    let moved = MULTI.replace("10.1.0.11", "10.1.0.99");
    let b = generate("verify-moved", "multi", Some(&moved), None, Some(&a.cluster.join("state")));
    let (_d, cluster) = copy_bundle(a);
    let pki = cluster.join("nodes/cp1/etc/kubernetes/pki");
    let other = b.node("cp1").join("etc/kubernetes/pki");
    replace_file(&pki.join("apiserver.crt"), &other.join("apiserver.crt"));
    replace_file(&pki.join("apiserver.key"), &other.join("apiserver.key"));
    for root in [cluster.join("nodes/cp1"), cluster.clone()] {
        let r = run_verify(&root);
        assert_error(&r, "sans", "apiserver.crt", "lacks the SAN IP:10.1.0.11");
        let bad: Vec<&Finding> =
            errors(&r).into_iter().filter(|f| f.path.ends_with("pki/apiserver.crt") || f.path.ends_with("pki/apiserver.key")).collect();
        assert!(bad.iter().all(|f| f.check == "sans"), "chain and key pass:\n{}", r.render_table());
    }
}

#[test]
fn a_wrong_eku_is_an_error() {
    let (_d, cluster) = copy_bundle(multi());
    let pki = cluster.join("nodes/cp2/etc/kubernetes/pki");
    replace_file(&pki.join("apiserver.crt"), &pki.join("apiserver-kubelet-client.crt"));
    replace_file(&pki.join("apiserver.key"), &pki.join("apiserver-kubelet-client.key"));
    let r = run_verify(&cluster.join("nodes/cp2"));
    assert_error(&r, "eku", "pki/apiserver.crt", "apiserver needs serverAuth, the certificate has clientAuth");
    assert!(!errors(&r).iter().any(|f| f.check == "key" || f.check == "chain"), "{}", r.render_table());
}

#[test]
fn unsafe_tarball_entries_are_refused() {
    let b = multi();
    let d = temp_dir("verify-unsafe");
    let dotdot = d.path().join("worker1.tar.gz");
    rebuild_tarball(&b.tarball("worker1"), &dotdot, &[Raw::File("etc/../../evil", b"x", 0o644)]);
    assert_error(&run_verify(&dotdot), "archive", "evil", "'..'");
    let abs = d.path().join("abs").join("worker1.tar.gz");
    std::fs::create_dir_all(abs.parent().unwrap()).unwrap();
    rebuild_tarball(&b.tarball("worker1"), &abs, &[Raw::File("/etc/cron.d/evil", b"x", 0o644)]);
    assert_error(&run_verify(&abs), "archive", "/etc/cron.d/evil", "absolute path");
    let link = d.path().join("link").join("worker1.tar.gz");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    rebuild_tarball(&b.tarball("worker1"), &link, &[Raw::Symlink("etc/kubernetes/admin.conf", "/etc/shadow")]);
    assert_error(&run_verify(&link), "archive", "etc/kubernetes/admin.conf", "symbolic link");
    // Nothing was extracted anywhere.
    assert!(!d.path().join("evil").exists() && !d.path().join("etc").exists());
}

#[test]
fn a_bad_hash_in_join_txt_is_an_error() {
    let (_d, cluster) = copy_bundle(multi());
    let join = cluster.join("join.txt");
    let text = std::fs::read_to_string(&join).unwrap();
    let at = text.find("sha256:").unwrap() + "sha256:".len();
    let old = text.as_bytes()[at];
    let new = if old == b'0' { '1' } else { '0' };
    let mut tampered = text.clone();
    tampered.replace_range(at..at + 1, &new.to_string());
    std::fs::write(&join, tampered).unwrap();
    let r = run_verify(&cluster);
    assert_error(&r, "discovery-hash", "join.txt", "is not the hash of state/pki/ca.crt");
}

#[test]
fn a_kubeconfig_trusting_another_ca_is_an_error() {
    let (_d, cluster) = copy_bundle(multi());
    let conf = cluster.join("nodes/cp1/etc/kubernetes/admin.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let ours = B64.encode(std::fs::read(cluster.join("state/pki/ca.crt")).unwrap());
    let theirs = B64.encode(std::fs::read(six().cluster.join("state/pki/ca.crt")).unwrap());
    assert!(text.contains(&ours));
    std::fs::write(&conf, text.replace(&ours, &theirs)).unwrap();
    let r = run_verify(&cluster.join("nodes/cp1"));
    assert_error(&r, "kubeconfig", "admin.conf", "not this tree's ca.crt");
}

#[test]
fn malformed_files_are_findings() {
    let (_d, cluster) = copy_bundle(multi());
    let root = cluster.join("nodes/cp2");
    std::fs::write(root.join("etc/kubernetes/pki/front-proxy-client.crt"), "not a certificate").unwrap();
    std::fs::write(root.join("etc/kubernetes/scheduler.conf"), "clusters: [").unwrap();
    std::fs::write(root.join("etc/kubernetes/pki/apiserver.key"), [0xffu8, 0, 1]).unwrap();
    let r = run_verify(&root);
    assert_error(&r, "format", "front-proxy-client.crt", "unreadable");
    assert_error(&r, "kubeconfig", "scheduler.conf", "not a kubeconfig");
    assert_error(&r, "key", "apiserver.key", "");
}

#[test]
fn another_nodes_kubelet_certificate_is_an_error() {
    let (_d, cluster) = copy_bundle(six());
    let conf = cluster.join("nodes/w1/etc/kubernetes/kubelet.conf");
    replace_file(&conf, &six().node("w2").join("etc/kubernetes/kubelet.conf"));
    // With the plan (w1) and alone (the name comes from w1's serving certificate).
    assert_error(&run_verify(&cluster.join("nodes/w1")), "least-privilege", "kubelet.conf", "names node \"w2\"");
    let alone = temp_dir("verify-alone");
    copy_tree(&cluster.join("nodes/w1"), alone.path());
    assert_error(&run_verify(alone.path()), "least-privilege", "kubelet.conf", "names node \"w2\"");
}

#[test]
fn an_unencrypting_or_diverging_encryption_config_is_an_error() {
    let (_d, cluster) = copy_bundle(multi());
    let enc = cluster.join("nodes/cp2/etc/kubernetes/encryption/encryption-config.yaml");
    let text = std::fs::read_to_string(&enc).unwrap();
    let at = text.find("  - aescbc:").expect("aescbc provider");
    std::fs::write(&enc, format!("{}  - identity: {{}}\n{}", &text[..at], &text[at..])).unwrap();
    let r = run_verify(&cluster);
    assert_error(&r, "encryption", "nodes/cp2/etc/kubernetes/encryption/encryption-config.yaml", "first provider for secrets is identity");
    assert_error(&r, "encryption", "nodes/cp2/etc/kubernetes/encryption/encryption-config.yaml", "differs from cp1's");
}
