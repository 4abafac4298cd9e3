//! `kubebundle::audit::verify`: passes on every kind of bundle the generator makes (bundle dir, each
//! tarball, each node root, with and without a plan beside it) and fails, naming the problem,
//! on tampered copies.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kubebundle::audit::verify::{self, Finding, Report, Severity, VerifyArgs};
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

/// One control plane and one worker. The join token lives a year (not kubeadm's 24h), so the
/// bundle still verifies when checked long after it was made.
fn small(cluster: &str, extra: &str) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: {cluster}\nkubernetesVersion: v1.34.1\nencryptionAlgorithm: ECDSA-P256\n{extra}---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- ttl: 8760h\n---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n- {{name: cp1, address: 10.4.0.11, roles: [control-plane, etcd]}}\n- {{name: w1, address: 10.4.0.21, roles: [worker]}}\n"
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

/// Copies `src` to `dst` with the modes of files and directories (a bundle's state is 0700).
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
    std::fs::set_permissions(dst, std::fs::metadata(src).unwrap().permissions()).unwrap();
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
    assert_error(&r, "mode", "etcd/peer.key", "0644: it holds a private key, so it must be 0600");
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

// ---------------------------------------------------------------------------------------------
// verify's own rules: each rule gets a copy of a generated bundle broken in exactly one way, and
// `kubebundle verify` (the command a user runs) must exit 1 with an ERROR row naming the file
// and the rule. Nothing verify reads is changed by it.

/// One row of verify's table.
#[derive(Debug)]
struct Row {
    severity: String,
    node: String,
    file: String,
    check: String,
    message: String,
}

struct CliVerify {
    run: common::Run,
    rows: Vec<Row>,
}

impl CliVerify {
    fn errors(&self) -> Vec<&Row> {
        self.rows.iter().filter(|r| r.severity == "ERROR").collect()
    }
    fn table(&self) -> String {
        common::truncate(&self.run.stdout, 20_000)
    }
}

/// Splits verify's table by the header's columns (cells are padded by characters).
fn parse_table(stdout: &str) -> Vec<Row> {
    let mut lines = stdout.lines();
    let header: Vec<char> = lines.next().unwrap_or_default().chars().collect();
    let col = |name: &str| header.iter().collect::<String>().find(name).map(|b| header.iter().collect::<String>()[..b].chars().count());
    let (Some(n), Some(f), Some(c), Some(m)) = (col("NODE"), col("FILE"), col("CHECK"), col("MESSAGE")) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for line in lines {
        let ch: Vec<char> = line.chars().collect();
        let cell =
            |a: usize, b: usize| ch.get(a..b.min(ch.len())).map(|s| s.iter().collect::<String>().trim().to_string()).unwrap_or_default();
        let severity = cell(0, n);
        if !["ERROR", "WARNING", "OK"].contains(&severity.as_str()) {
            continue;
        }
        rows.push(Row { severity, node: cell(n, f), file: cell(f, c), check: cell(c, m), message: cell(m, ch.len()) });
    }
    rows
}

/// `kubebundle verify PATH EXTRA...`, run from a scratch dir; asserts it changed nothing it read.
fn cli_verify(path: &Path, extra: &[&str]) -> CliVerify {
    let scratch = temp_dir("verify-cli");
    let watched = if path.is_dir() { path.to_path_buf() } else { path.parent().unwrap().to_path_buf() };
    let before = common::file_bytes(&watched);
    let mut args = vec!["verify", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = kubebundle(scratch.path(), &args, &[]);
    assert!(common::file_bytes(&watched) == before, "verify changed files under {}", watched.display());
    let rows = parse_table(&run.stdout);
    CliVerify { run, rows }
}

/// Exit 1 and an ERROR row for exactly `file`, of `check`, whose message holds `fragment`.
fn assert_row(v: &CliVerify, file: &str, check: &str, fragment: &str) {
    assert_eq!(v.run.code, Some(1), "verify should exit 1:\n{}", v.run.describe());
    let hit = v.errors().iter().any(|r| r.file == file && r.check == check && r.message.contains(fragment));
    assert!(hit, "no ERROR row for {file} / {check} mentioning {fragment:?}:\n{}", v.table());
}

/// Only `files` have errors (the break is the only thing wrong).
fn assert_only(v: &CliVerify, files: &[&str]) {
    let other: Vec<&Row> = v.errors().into_iter().filter(|r| !files.contains(&r.file.as_str())).collect();
    assert!(other.is_empty(), "errors beyond {files:?}: {other:#?}");
}

fn sha_tree(p: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    common::file_bytes(p)
}

/// Edits a node's files as kubebundle packed them, and re-packs them with kubebundle's own pack
/// (so the tarball's digest header is valid) into its tarball and its unpacked tree.
fn edit_node(cluster: &Path, node: &str, edit: impl FnOnce(&mut kubebundle::tree::FileTree)) {
    use std::os::unix::fs::PermissionsExt;
    let tgz = cluster.join("nodes").join(format!("{node}.tar.gz"));
    let bytes = std::fs::read(&tgz).unwrap();
    let u = kubebundle::tree::tarball::unpack(&bytes);
    assert!(u.problems.is_empty(), "{:?}", u.problems);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let mtime = archive.entries().unwrap().next().unwrap().unwrap().header().mtime().unwrap();
    let before = kubebundle::tree::FileTree(u.files);
    let mut tree = before.clone();
    edit(&mut tree);
    std::fs::write(&tgz, kubebundle::tree::tarball::tar_gz(&tree, mtime).unwrap()).unwrap();
    let root = cluster.join("nodes").join(node);
    if root.is_dir() {
        for p in before.0.keys().filter(|p| tree.get(p).is_none()) {
            std::fs::remove_file(root.join(p)).unwrap();
        }
        for (p, f) in tree.iter() {
            if before.get(p).is_some_and(|b| *b.bytes == *f.bytes && b.mode == f.mode) {
                continue;
            }
            let dst = root.join(p);
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::write(&dst, f.bytes.as_slice()).unwrap();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(f.mode)).unwrap();
        }
    }
}

fn file_of(b: &Bundle, node: &str, rel: &str) -> Vec<u8> {
    std::fs::read(b.node(node).join(rel)).unwrap()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

#[test]
fn verify_never_changes_a_clean_bundle_and_passes_it() {
    let v = cli_verify(&multi().cluster, &[]);
    assert!(v.run.ok() && v.errors().is_empty(), "{}", v.run.describe());
    // Every new rule ran and passed somewhere.
    for check in ["roles", "least-privilege", "mode", "kubelet-config", "cluster-info", "bootstrap-token", "join-token", "archive"] {
        assert!(v.rows.iter().any(|r| r.check == check && r.severity == "OK"), "{check} never passed:\n{}", v.table());
    }
    // Roles come from the node's own certificates and the plan agreeing.
    let role = |node: &str| {
        v.rows.iter().find(|r| r.node == node && r.check == "roles" && r.file == format!("nodes/{node}.tar.gz")).map(|r| r.message.clone())
    };
    assert!(role("cp1").unwrap().starts_with("control-plane (etc/kubernetes/pki/apiserver.crt), etcd ("), "{:?}", role("cp1"));
    assert!(role("cp2").unwrap().starts_with("control-plane (") && !role("cp2").unwrap().contains("etcd ("));
    assert!(role("etcd1").unwrap().starts_with("etcd (etc/kubernetes/pki/etcd/"), "{:?}", role("etcd1"));
    assert!(role("worker1").unwrap().starts_with("worker only"), "{:?}", role("worker1"));
}

/// A secret of the cluster dropped into another node's tarball (re-packed by kubebundle's own
/// pack, so the tarball is otherwise sound), each recognised by its content wherever it is put.
#[test]
fn each_least_privilege_rule_names_the_file_and_the_rule() {
    let b = multi();
    let state = |rel: &str| std::fs::read(b.cluster.join("state").join(rel)).unwrap();
    let other_key =
        kubebundle::pki::keys::Key::generate(kubebundle::config::KeyAlgorithm::EcdsaP256).unwrap().private_pem().as_bytes().to_vec();
    type Files = Vec<(&'static str, Vec<u8>)>;
    let cases: Vec<(&str, &str, Files)> = vec![
        ("ca-key", "worker1", vec![("etc/kubernetes/pki/ca.key", state("pki/ca.key"))]),
        // By content: the etcd CA's key under a name that says nothing.
        ("ca-key", "worker1", vec![("opt/backup/blob.pem", state("pki/etcd/ca.key"))]),
        ("ca-key", "etcd1", vec![("etc/kubernetes/pki/front-proxy-ca.key", state("pki/front-proxy-ca.key"))]),
        ("sa-key", "worker1", vec![("var/lib/kubelet/pki/kubelet-old.key", state("pki/sa.key"))]),
        (
            "encryption-config",
            "etcd1",
            vec![("etc/kubernetes/enc.yaml", file_of(b, "cp1", "etc/kubernetes/encryption/encryption-config.yaml"))],
        ),
        ("cluster-admin", "worker1", vec![("etc/kubernetes/admin.conf", file_of(b, "cp1", "etc/kubernetes/admin.conf"))]),
        ("cluster-admin", "etcd1", vec![("root/.kube/config", file_of(b, "cp1", "etc/kubernetes/super-admin.conf"))]),
        (
            "other-node",
            "worker1",
            vec![
                ("var/lib/kubelet/pki/spare.crt", file_of(b, "cp2", "var/lib/kubelet/pki/kubelet.crt")),
                ("var/lib/kubelet/pki/spare.key", file_of(b, "cp2", "var/lib/kubelet/pki/kubelet.key")),
            ],
        ),
        (
            "control-plane-key",
            "etcd1",
            vec![
                ("etc/kubernetes/pki/apiserver-etcd-client.crt", file_of(b, "cp1", "etc/kubernetes/pki/apiserver-etcd-client.crt")),
                ("etc/kubernetes/pki/apiserver-etcd-client.key", file_of(b, "cp1", "etc/kubernetes/pki/apiserver-etcd-client.key")),
            ],
        ),
        (
            "etcd-key",
            "worker1",
            vec![
                ("etc/kubernetes/pki/etcd/healthcheck-client.crt", file_of(b, "etcd1", "etc/kubernetes/pki/etcd/healthcheck-client.crt")),
                ("etc/kubernetes/pki/etcd/healthcheck-client.key", file_of(b, "etcd1", "etc/kubernetes/pki/etcd/healthcheck-client.key")),
            ],
        ),
        ("unplaced-key", "worker1", vec![("etc/ssl/private/extra.key", other_key)]),
    ];
    for (rule, node, files) in cases {
        let (_d, cluster) = copy_bundle(b);
        let others: Vec<_> = ["cp1", "cp2", "etcd1", "worker1"]
            .iter()
            .filter(|n| **n != node)
            .map(|n| (n, sha_tree(&cluster.join("nodes").join(n))))
            .collect();
        edit_node(&cluster, node, |t| {
            for (p, bytes) in &files {
                t.insert(p, bytes.clone(), 0o600);
            }
        });
        let flagged = files.iter().rev().find(|(p, _)| p.ends_with(".key") || p.ends_with(".pem") || !p.ends_with(".crt")).unwrap().0;
        for (path, prefix) in
            [(cluster.clone(), format!("nodes/{node}.tar.gz:")), (cluster.join("nodes").join(format!("{node}.tar.gz")), String::new())]
        {
            let v = cli_verify(&path, &[]);
            let file = format!("{prefix}{flagged}");
            assert_row(&v, &file, "least-privilege", &format!("[rule {rule}]"));
            // The plan's own check also names the stray files; nothing else is wrong.
            let all: Vec<String> = files.iter().map(|(p, _)| format!("{prefix}{p}")).collect();
            let tree: Vec<String> = files.iter().map(|(p, _)| format!("nodes/{node}/{p}")).collect();
            let allowed: Vec<&str> = all.iter().chain(tree.iter()).map(String::as_str).collect();
            assert_only(&v, &allowed);
        }
        // The other nodes were not touched.
        for (n, sums) in others {
            assert!(sha_tree(&cluster.join("nodes").join(n)) == sums, "{n} changed");
        }
    }
}

/// plan.json (and a profile) may add expectations, never relax the rules: an edited plan that
/// makes worker1 a control plane holding ca.key, and a profile that ships ca.key to workers.
#[test]
fn an_edited_plan_or_profile_does_not_relax_least_privilege() {
    let b = multi();
    let (_d, cluster) = copy_bundle(b);
    let ca_key = std::fs::read(cluster.join("state/pki/ca.key")).unwrap();
    edit_node(&cluster, "worker1", |t| t.insert("etc/kubernetes/pki/ca.key", ca_key, 0o600));
    let plan_path = cluster.join("plan.json");
    let mut plan: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan_path).unwrap()).unwrap();
    for n in plan["nodes"].as_array_mut().unwrap().iter_mut().filter(|n| n["name"] == "worker1") {
        n["roles"] = serde_json::json!(["control-plane", "worker"]);
        n["files"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"path": "etc/kubernetes/pki/ca.key", "mode": "0600", "artifact": "ca.key"}));
    }
    std::fs::write(&plan_path, serde_json::to_vec_pretty(&plan).unwrap()).unwrap();
    let v = cli_verify(&cluster, &[]);
    assert_row(&v, "nodes/worker1.tar.gz:etc/kubernetes/pki/ca.key", "least-privilege", "a CA's private key");
    assert_row(
        &v,
        "nodes/worker1.tar.gz",
        "roles",
        "plan.json gives worker1 the control-plane role, but its files hold no kube-apiserver serving certificate",
    );
    // The edited plan itself is content with the file: only verify's own rules object.
    assert!(
        v.rows.iter().any(|r| r.file == "nodes/worker1.tar.gz:etc/kubernetes/pki/ca.key"
            && r.severity == "OK"
            && r.message == "planned for this node"),
        "{}",
        v.table()
    );

    // A profile of the user's that gives ca.key to workers: generate ships it, verify refuses it.
    let d = temp_dir("verify-leaky");
    let profile = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/kubeadm.yaml")).unwrap();
    let leaky = profile.replace(
        "- {artifact: ca.key, path: \"{pki}/ca.key\", mode: \"0600\", roles: [control-plane]}",
        "- {artifact: ca.key, path: \"{pki}/ca.key\", mode: \"0600\", roles: [control-plane, worker]}",
    );
    assert_ne!(leaky, profile);
    std::fs::write(d.path().join("leaky.yaml"), leaky.replace("name: kubeadm", "name: leaky")).unwrap();
    std::fs::write(d.path().join("c.yaml"), small("leaky", "")).unwrap();
    let run = kubebundle(d.path(), &["generate", "--config", "c.yaml", "--profile", "./leaky.yaml", "--out", "out"], &[]);
    assert!(run.ok(), "{}", run.describe());
    let v = cli_verify(&d.path().join("out/leaky"), &[]);
    assert_row(&v, "nodes/w1.tar.gz:etc/kubernetes/pki/ca.key", "least-privilege", "[rule ca-key]");
    assert_only(&v, &["nodes/w1.tar.gz:etc/kubernetes/pki/ca.key"]);
}

#[test]
fn secrets_must_be_0600_in_trees_tarballs_and_the_state() {
    let b = multi();
    // Inside a tarball packed by kubebundle: a key, a kubeconfig with a token, a file with a token.
    for (path, what) in [
        ("var/lib/kubelet/pki/kubelet.key", "a private key"),
        ("etc/kubernetes/bootstrap-kubelet.conf", "a kubeconfig with credentials"),
        ("etc/kubernetes/kubeadm-join.yaml", "a bootstrap token"),
    ] {
        let (_d, cluster) = copy_bundle(b);
        edit_node(&cluster, "worker1", |t| t.0.get_mut(path).unwrap().mode = 0o644);
        let v = cli_verify(&cluster, &[]);
        let msg = format!("0644: it holds {what}, so it must be 0600");
        assert_row(&v, &format!("nodes/worker1.tar.gz:{path}"), "mode", &msg);
        assert_row(&v, &format!("nodes/worker1/{path}"), "mode", &msg);
        assert_only(&v, &[&format!("nodes/worker1.tar.gz:{path}"), &format!("nodes/worker1/{path}")]);
        assert_row(&cli_verify(&cluster.join("nodes/worker1.tar.gz"), &[]), path, "mode", &msg);
    }
    // The bundle's own files: the state directory, a state file, a tarball, join.txt, a Secret.
    let id = std::fs::read_dir(b.cluster.join("manifests"))
        .unwrap()
        .flatten()
        .find_map(|e| e.file_name().to_string_lossy().strip_prefix("bootstrap-token-").map(|s| s.trim_end_matches(".yaml").to_string()))
        .unwrap();
    let secret = format!("manifests/bootstrap-token-{id}.yaml");
    for (rel, mode, fragment) in [
        ("state", 0o755, "0755: a directory of the state, which holds every CA key; want 0700"),
        ("state/pki", 0o750, "0750: a directory of the state"),
        ("state/pki/ca.key", 0o640, "0640: a file of the state; want 0600"),
        ("state/tokens.yaml", 0o644, "0644: a file of the state; want 0600"),
        ("nodes/worker1.tar.gz", 0o644, "0644: a node tarball holds the node's keys; want 0600"),
        ("join.txt", 0o644, "0644: it holds a bootstrap token, so it must be 0600"),
        (secret.as_str(), 0o644, "0644: it holds a Secret, so it must be 0600"),
    ] {
        let (_d, cluster) = copy_bundle(b);
        chmod(&cluster.join(rel), mode);
        let v = cli_verify(&cluster, &[]);
        assert_row(&v, rel, "mode", fragment);
        assert_only(&v, &[rel]);
    }
    // A tarball verified on its own is held to the same.
    let (_d, cluster) = copy_bundle(b);
    let tgz = cluster.join("nodes/etcd1.tar.gz");
    chmod(&tgz, 0o644);
    assert_row(&cli_verify(&tgz, &[]), "etcd1.tar.gz", "mode", "0644: a node tarball");
}

/// Re-packs a node's tarball with the system tar (`tar czf`: no kubebundle digest header),
/// optionally with one more file.
fn repack_with_tar(tgz: &Path, extra: Option<(&str, &str)>) {
    let scratch = temp_dir("verify-repack");
    let root = scratch.path().join("root");
    common::extract(tgz, &root);
    if let Some((p, text)) = extra {
        std::fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
        std::fs::write(root.join(p), text).unwrap();
    }
    let mut c = std::process::Command::new("tar");
    c.arg("czf").arg(tgz).arg("-C").arg(&root).arg(".");
    let run = common::run_cmd(c);
    assert!(run.ok(), "{}", run.describe());
    chmod(tgz, 0o600);
}

#[test]
fn a_tarball_kubebundle_did_not_pack_needs_foreign_and_then_holds_only_the_plan() {
    let b = multi();
    // The same files, re-packed by hand: an error, until --foreign accepts it.
    let (_d, cluster) = copy_bundle(b);
    let tgz = cluster.join("nodes/worker1.tar.gz");
    repack_with_tar(&tgz, None);
    let v = cli_verify(&cluster, &[]);
    assert_row(&v, "nodes/worker1.tar.gz", "archive", "not packed by kubebundle: its gzip header has no digest of its files");
    assert!(v.rows.iter().any(|r| r.message.contains("pass --foreign")), "{}", v.table());
    assert_only(&v, &["nodes/worker1.tar.gz"]);
    let v = cli_verify(&cluster, &["--foreign"]);
    assert!(v.run.ok(), "--foreign accepts a re-packed tarball with the planned files:\n{}", v.run.describe());
    assert!(v
        .rows
        .iter()
        .any(|r| r.severity == "WARNING" && r.file == "nodes/worker1.tar.gz" && r.message.contains("accepted with --foreign")));
    assert_row(&cli_verify(&tgz, &[]), "worker1.tar.gz", "archive", "not packed by kubebundle");

    // With one more file (harmless as it is), --foreign refuses it: it is not in the plan.
    let (_d2, cluster) = copy_bundle(b);
    let tgz = cluster.join("nodes/worker1.tar.gz");
    repack_with_tar(&tgz, Some(("etc/motd", "hello\n")));
    let v = cli_verify(&cluster, &["--foreign"]);
    assert_row(&v, "nodes/worker1.tar.gz:etc/motd", "least-privilege", "not in the plan");
    let v = cli_verify(&cluster, &[]);
    assert_row(&v, "nodes/worker1.tar.gz", "archive", "not packed by kubebundle");
    // Alone (no plan): every file outside the kubeadm layout is refused.
    let alone = temp_dir("verify-alone");
    let t = alone.path().join("worker1.tar.gz");
    std::fs::copy(&tgz, &t).unwrap();
    let v = cli_verify(&t, &["--foreign"]);
    assert_row(&v, "etc/motd", "least-privilege", "in a tarball kubebundle did not pack: refused");
}

#[test]
fn an_insecure_kubelet_configuration_is_an_error_wherever_it_is() {
    let b = multi();
    let replace_in = |cluster: &Path, node: &str, path: &str, from: &str, to: &str| {
        edit_node(cluster, node, |t| {
            let f = t.0.get_mut(path).unwrap();
            let text = String::from_utf8(f.bytes.to_vec()).unwrap();
            assert!(text.contains(from), "{path} has no {from:?}:\n{text}");
            *f.bytes = text.replacen(from, to, 1).into_bytes();
        })
    };
    // Anonymous authentication on a worker's kubelet config.
    let (_d, cluster) = copy_bundle(b);
    replace_in(&cluster, "worker1", "var/lib/kubelet/config.yaml", "anonymous:\n    enabled: false", "anonymous:\n    enabled: true");
    let v = cli_verify(&cluster, &[]);
    assert_row(
        &v,
        "nodes/worker1.tar.gz:var/lib/kubelet/config.yaml",
        "kubelet-config",
        "authentication.anonymous.enabled is true, want false",
    );
    assert_only(&v, &["nodes/worker1.tar.gz:var/lib/kubelet/config.yaml", "nodes/worker1/var/lib/kubelet/config.yaml"]);
    // AlwaysAllow in the KubeletConfiguration document of kubeadm-init.yaml.
    let (_d, cluster) = copy_bundle(b);
    replace_in(&cluster, "cp1", "etc/kubernetes/kubeadm-init.yaml", "mode: Webhook", "mode: AlwaysAllow");
    let v = cli_verify(&cluster, &[]);
    assert_row(
        &v,
        "nodes/cp1.tar.gz:etc/kubernetes/kubeadm-init.yaml",
        "kubelet-config",
        "authorization.mode is \"AlwaysAllow\", want Webhook",
    );
    assert_only(&v, &["nodes/cp1.tar.gz:etc/kubernetes/kubeadm-init.yaml", "nodes/cp1/etc/kubernetes/kubeadm-init.yaml"]);
    // The read-only port on an etcd member.
    let (_d, cluster) = copy_bundle(b);
    replace_in(
        &cluster,
        "etcd1",
        "var/lib/kubelet/config.yaml",
        "rotateCertificates: true",
        "readOnlyPort: 10255\nrotateCertificates: true",
    );
    let v = cli_verify(&cluster, &[]);
    assert_row(&v, "nodes/etcd1.tar.gz:var/lib/kubelet/config.yaml", "kubelet-config", "readOnlyPort is 10255, want 0");
    // ... and in the kubelet-config ConfigMap joining nodes get.
    let (_d, cluster) = copy_bundle(b);
    let cm = cluster.join("manifests/kubelet-config.yaml");
    let mut doc = yaml(&cm);
    let kubelet = doc["data"]["kubelet"].as_str().unwrap().to_string();
    doc["data"]["kubelet"] = serde_json::Value::from(format!("{kubelet}readOnlyPort: 10255\n"));
    std::fs::write(&cm, serde_json::to_string(&doc).unwrap()).unwrap();
    let v = cli_verify(&cluster, &[]);
    assert_row(&v, "manifests/kubelet-config.yaml", "kubelet-config", "readOnlyPort is 10255, want 0");
    assert_only(&v, &["manifests/kubelet-config.yaml"]);
}

/// A YAML file's one document (written back as JSON, which is YAML too).
fn yaml(p: &Path) -> serde_json::Value {
    serde_saphyr::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The bundle's tokens (id, secret, expires) from state/tokens.yaml.
fn tokens(cluster: &Path) -> Vec<(String, String, String)> {
    let doc = yaml(&cluster.join("state/tokens.yaml"));
    doc["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let (id, secret) = t["token"].as_str().unwrap().split_once('.').unwrap();
            (id.to_string(), secret.to_string(), t["expires"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

/// Rewrites cluster-info's kubeconfig with `edit` and signs it again with every token, so only
/// the edit is wrong.
fn edit_cluster_info(cluster: &Path, edit: impl FnOnce(&str) -> String) {
    let p = cluster.join("manifests/cluster-info.yaml");
    let mut doc = yaml(&p);
    let kc = edit(doc["data"]["kubeconfig"].as_str().unwrap());
    for (id, secret, _) in tokens(cluster) {
        doc["data"][format!("jws-kubeconfig-{id}")] = serde_json::Value::from(kubebundle::pki::jws::detached(kc.as_bytes(), &id, &secret));
    }
    doc["data"]["kubeconfig"] = serde_json::Value::from(kc);
    std::fs::write(&p, serde_json::to_string(&doc).unwrap()).unwrap();
}

#[test]
fn cluster_info_holds_the_ca_the_endpoint_and_signatures_that_verify() {
    let b = multi();
    const FILE: &str = "manifests/cluster-info.yaml";
    // Another cluster's CA.
    let (_d, cluster) = copy_bundle(b);
    let ours = B64.encode(std::fs::read(cluster.join("state/pki/ca.crt")).unwrap());
    let theirs = B64.encode(std::fs::read(six().cluster.join("state/pki/ca.crt")).unwrap());
    edit_cluster_info(&cluster, |kc| {
        assert!(kc.contains(&ours));
        kc.replace(&ours, &theirs)
    });
    let v = cli_verify(&cluster, &[]);
    assert_row(&v, FILE, "cluster-info", "its certificate-authority-data is not state/pki/ca.crt");
    assert_only(&v, &[FILE]);
    // Another server.
    let (_d, cluster) = copy_bundle(b);
    edit_cluster_info(&cluster, |kc| {
        let (_, rest) = kc.split_once("server: ").unwrap();
        let old = rest.lines().next().unwrap();
        kc.replace(old, "\"https://10.66.0.1:6443\"")
    });
    let v = cli_verify(&cluster, &[]);
    assert_row(&v, FILE, "cluster-info", "server is \"https://10.66.0.1:6443\", the controlPlaneEndpoint gives");
    assert_only(&v, &[FILE]);
    // A forged signature: signed with a secret that is not the token's.
    let (_d, cluster) = copy_bundle(b);
    let p = cluster.join(FILE);
    let mut doc = yaml(&p);
    let (id, _, _) = tokens(&cluster).remove(0);
    let kc = doc["data"]["kubeconfig"].as_str().unwrap().to_string();
    doc["data"][format!("jws-kubeconfig-{id}")] =
        serde_json::Value::from(kubebundle::pki::jws::detached(kc.as_bytes(), &id, "0123456789abcdef"));
    std::fs::write(&p, serde_json::to_string(&doc).unwrap()).unwrap();
    let v = cli_verify(&cluster, &[]);
    assert_row(&v, FILE, "cluster-info", &format!("jws-kubeconfig-{id} does not verify with token {id}"));
    assert_only(&v, &[FILE]);
    // A signature for a token nobody knows.
    let (_d, cluster) = copy_bundle(b);
    let p = cluster.join(FILE);
    let mut doc = yaml(&p);
    let kc = doc["data"]["kubeconfig"].as_str().unwrap().to_string();
    doc["data"]["jws-kubeconfig-zzzzzz"] =
        serde_json::Value::from(kubebundle::pki::jws::detached(kc.as_bytes(), "zzzzzz", "zzzzzzzzzzzzzzzz"));
    std::fs::write(&p, serde_json::to_string(&doc).unwrap()).unwrap();
    assert_row(&cli_verify(&cluster, &[]), FILE, "cluster-info", "jws-kubeconfig-zzzzzz: no token zzzzzz");
}

#[test]
fn bootstrap_token_secrets_are_well_formed_the_states_and_unexpired() {
    let b = multi();
    let (id, _, expires) = tokens(&b.cluster).remove(0);
    let file = format!("manifests/bootstrap-token-{id}.yaml");
    let edit = |cluster: &Path, key: &str, value: Option<&str>| {
        let p = cluster.join(&file);
        let mut doc = yaml(&p);
        match (key.strip_prefix("data."), value) {
            (Some(k), Some(v)) => doc["data"][k] = serde_json::Value::from(B64.encode(v)),
            (Some(k), None) => {
                doc["data"].as_object_mut().unwrap().remove(k);
            }
            (None, v) => doc[key] = serde_json::Value::from(v.unwrap()),
        }
        std::fs::write(&p, serde_json::to_string(&doc).unwrap()).unwrap();
    };
    for (key, value, fragment) in [
        ("type", Some("Opaque"), "malformed bootstrap-token Secret: type is \"Opaque\", want bootstrap.kubernetes.io/token"),
        ("data.auth-extra-groups", Some("system:masters"), "auth-extra-groups \"system:masters\" is not system:bootstrappers:"),
        ("data.token-id", Some("ABCDEF"), "token-id is not 6 characters of [a-z0-9]"),
        ("data.token-secret", None, "no token-secret"),
        ("data.expiration", Some("tomorrow"), "expiration \"tomorrow\" is not an RFC 3339 time"),
        ("data.usage-bootstrap-everything", Some("true"), "unknown usage \"usage-bootstrap-everything\""),
        ("data.usage-bootstrap-authentication", Some("yes"), "only \"true\" enables it"),
    ] {
        let (_d, cluster) = copy_bundle(b);
        edit(&cluster, key, value);
        let v = cli_verify(&cluster, &[]);
        assert_row(&v, &file, "bootstrap-token", fragment);
    }
    // Well-formed but not the state's.
    let (_d, cluster) = copy_bundle(b);
    edit(&cluster, "data.token-secret", Some("0000000000000000"));
    let v = cli_verify(&cluster, &[]);
    assert_row(&v, &file, "bootstrap-token", &format!("token {id}: token-secret differ from state/tokens.yaml"));
    assert_only(&v, &[&file]);
    // Expired in the Secret (the state still says it is valid).
    let (_d, cluster) = copy_bundle(b);
    edit(&cluster, "data.expiration", Some(&rfc3339(now_unix() - common::HOUR)));
    let v = cli_verify(&cluster, &[]);
    assert_row(&v, &file, "bootstrap-token", &format!("token {id} expired at "));
    assert_only(&v, &[&file]);
    // Expired at verify's clock: the Secret, join.txt and every node file that carries it.
    let later = OffsetDateTime::parse(&expires, &time::format_description::well_known::Rfc3339).unwrap() + time::Duration::hours(1);
    let later = rfc3339(later.unix_timestamp());
    let v = cli_verify(&b.cluster, &["--now", &later]);
    assert_row(&v, &file, "bootstrap-token", &format!("token {id} expired at {expires}"));
    assert_row(&v, "join.txt", "join-token", &format!("token {id} expired at {expires}"));
    assert_row(&v, "nodes/worker1.tar.gz:etc/kubernetes/bootstrap-kubelet.conf", "join-token", "expired at");
    assert_row(&v, "nodes/etcd1.tar.gz:etc/kubernetes/kubeadm-join.yaml", "join-token", "expired at");
    // No kubeconfig calls an expired token well-formed.
    assert!(!v.rows.iter().any(|r| r.message.contains("well-formed bootstrap token")), "{}", v.table());
    // A token of the state with no Secret.
    let (_d, cluster) = copy_bundle(b);
    std::fs::remove_file(cluster.join(&file)).unwrap();
    assert_row(&cli_verify(&cluster, &[]), &file, "bootstrap-token", "missing: token");
}

#[test]
fn join_txt_names_a_known_unexpired_token() {
    let b = multi();
    let (id, secret, _) = tokens(&b.cluster).remove(0);
    let (_d, cluster) = copy_bundle(b);
    let join = cluster.join("join.txt");
    let text = std::fs::read_to_string(&join).unwrap();
    let token = format!("{id}.{secret}");
    assert!(text.contains(&token));
    std::fs::write(&join, text.replace(&token, "zzzzzz.zzzzzzzzzzzzzzzz")).unwrap();
    let v = cli_verify(&cluster, &[]);
    assert_row(&v, "join.txt", "join-token", "token zzzzzz is in neither state/tokens.yaml nor a bootstrap-token Secret");
    assert_only(&v, &["join.txt"]);
    // The secret never reaches the output.
    assert!(!v.run.stdout.contains(&secret) && !v.run.stderr.contains(&secret));
    // A known id with another secret.
    std::fs::write(&join, text.replace(&token, &format!("{id}.zzzzzzzzzzzzzzzz"))).unwrap();
    assert_row(&cli_verify(&cluster, &[]), "join.txt", "join-token", &format!("token {id}'s secret is not the one in state/tokens.yaml"));
    // No token at all.
    std::fs::write(&join, "# nothing to see\n").unwrap();
    assert_row(&cli_verify(&cluster, &[]), "join.txt", "join-token", "names no bootstrap token");
}

#[test]
fn control_characters_in_names_and_messages_are_printed_escaped() {
    let b = multi();
    let (_d, cluster) = copy_bundle(b);
    let evil = "etc/evil\n\u{1b}[31mred\u{202e}";
    let tgz = cluster.join("nodes/worker1.tar.gz");
    // A file named with a newline, an ANSI escape and a bidi override, packed by kubebundle.
    let mut tree = kubebundle::tree::FileTree(kubebundle::tree::tarball::unpack(&std::fs::read(&tgz).unwrap()).files);
    tree.insert(evil, b"x".to_vec(), 0o644);
    std::fs::write(&tgz, kubebundle::tree::tarball::tar_gz(&tree, 0).unwrap()).unwrap();
    let v = cli_verify(&tgz, &[]);
    assert!(!v.run.stdout.contains('\u{1b}') && !v.run.stdout.contains('\u{202e}'), "raw control characters printed:\n{:?}", v.run.stdout);
    assert!(v.run.stdout.contains("etc/evil\\n\\u{1b}[31mred\\u{202e}"), "{}", v.table());
    assert!(!v.run.stdout.lines().any(|l| l.starts_with("\u{1b}[31mred") || l.starts_with("red")));
    assert_row(&v, "etc/evil\\n\\u{1b}[31mred\\u{202e}", "least-privilege", "unexpected file");
    // Every line is the header, a row or the summary.
    let report = run_verify(&tgz);
    assert_eq!(v.run.stdout.lines().count(), report.findings.len() + 2);
    // In a message: a link target that clears the screen.
    let alone = temp_dir("verify-escape");
    let t = alone.path().join("worker1.tar.gz");
    rebuild_tarball(&b.tarball("worker1"), &t, &[Raw::Symlink("etc/kubernetes/x", "\u{1b}[2J\nOK")]);
    let v = cli_verify(&t, &[]);
    assert!(!v.run.stdout.contains('\u{1b}'), "{:?}", v.run.stdout);
    assert_row(&v, "etc/kubernetes/x", "archive", "a symbolic link → \\u{1b}[2J\\nOK");
}
