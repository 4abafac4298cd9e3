//! The lifecycle on every layout (issue 13): for kubeadm, hardway and binary bundles (ECDSA), a
//! control plane's and a worker's tarball extracted into a root as a live host would hold them,
//! and the bundle itself:
//! - `certs check-expiration` lists every certificate the tree holds, counted here independently
//!   (every CERTIFICATE PEM block of every file, every client-certificate-data and
//!   certificate-authority-data of a kubeconfig, by DER);
//! - `certs renew all` re-issues each certificate whose CA key the node holds with the same key,
//!   subject, SANs and usages (openssl), notAfter moved, and names the others with where their
//!   CA key is; on a worker (no CA key) it refuses, naming each;
//! - `certs renew ca` keeps the discovery hash and puts the new CA into every file that held the
//!   old one (found by content before and after), cluster-info with its JWS (openssl's HMAC) and
//!   the state on a bundle;
//! - the renewed tree and bundle pass `kubebundle verify` with 0 errors.
//!
//! And the real kubeadm trees (v1.24, v1.32) with kubelet.conf naming the kubelet's rotated
//! `kubelet-client-current.pem` (a link to a dated file) and a relative link in pki/; and a
//! directory that matches no layout.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine;
use common::checks::{self, cert_blocks, certs_in, data_values, distinct_certs, files, holders};
use common::{extract, kubebundle, openssl, openssl_hs256, temp_dir, yaml_file_to_json, Run};

const MADE: &str = "2026-01-01T00:00:00Z";
/// Two months before the leaves end: renewing gives them until 2027-11-01.
const RENEW_AT: &str = "2026-11-01T00:00:00Z";
const RENEWED_UNTIL: &str = "2027-11-01T00:00:00Z";
const CA_AT: &str = "2026-11-01T00:05:00Z";

fn config(profile: &str, name: &str) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: {name}\nkubernetesVersion: v1.34.1\nencryptionAlgorithm: ECDSA-P256\n\
         ---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- ttl: 17520h\n\
         ---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nprofile: {profile}\nnodes:\n\
         - {{name: cp1, address: 10.8.0.11, roles: [control-plane, etcd]}}\n\
         - {{name: cp2, address: 10.8.0.12, roles: [control-plane, etcd]}}\n\
         - {{name: w1, address: 10.8.0.21, roles: [worker]}}\n"
    )
}

fn generate(dir: &Path, profile: &str) -> PathBuf {
    let name = format!("lc-{profile}");
    std::fs::write(dir.join("c.yaml"), config(profile, &name)).unwrap();
    let run = kubebundle(dir, &["generate", "--config", "c.yaml", "--out", "out", "--now", MADE], &[]);
    assert!(run.ok(), "{}", run.describe());
    dir.join("out").join(name)
}

fn ok(run: Run) -> Run {
    assert!(run.ok(), "{}", run.describe());
    run
}

fn verify_clean(dir: &Path, path: &Path, now: &str) {
    let run = kubebundle(dir, &["verify", path.to_str().unwrap(), "--now", now], &[]);
    let errors: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("ERROR")).collect();
    assert!(run.ok() && errors.is_empty(), "verify {}: {}\n{}", path.display(), errors.join("\n"), run.stderr);
    assert!(run.stdout.contains("0 errors"), "{}", run.stdout);
}

// ---------------------------------------------------------------------------------------------
// check-expiration's report

struct Row {
    name: String,
    path: String,
    ca: String,
    ca_key: String,
    rotated: bool,
    status: String,
}

fn report(dir: &Path, target: &Path, now: &str) -> (Vec<Row>, Vec<Row>) {
    let run = kubebundle(dir, &["certs", "check-expiration", "--dir", target.to_str().unwrap(), "--now", now, "-o", "json"], &[]);
    assert!(run.code == Some(0) || run.code == Some(3), "{}", run.describe());
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let rows = |k: &str| -> Vec<Row> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|c| Row {
                name: c["name"].as_str().unwrap().to_string(),
                path: c["path"].as_str().unwrap().to_string(),
                ca: c["certificateAuthority"].as_str().unwrap().to_string(),
                ca_key: c["caKey"].as_str().unwrap().to_string(),
                rotated: c["kubeletRotated"].as_bool().unwrap(),
                status: c["status"].as_str().unwrap().to_string(),
            })
            .collect()
    };
    (rows("certificates"), rows("certificateAuthorities"))
}

/// The certificate behind a report row: the kubeconfig's client certificate, else the file's first.
fn row_cert(path: &str) -> Vec<u8> {
    row_cert_under(None, path)
}

/// The same, with absolute links resolved under `root` (as on the node).
fn row_cert_under(root: Option<&Path>, path: &str) -> Vec<u8> {
    let mut p = PathBuf::from(path);
    if let Some(root) = root {
        while let Ok(t) = std::fs::read_link(&p) {
            p = if t.is_absolute() { root.join(t.strip_prefix("/").unwrap()) } else { p.parent().unwrap().join(t) };
        }
    }
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{path}: {e}"));
    if let Some(d) = std::str::from_utf8(&bytes).ok().and_then(|t| data_values(t, "client-certificate-data").into_iter().next()) {
        return cert_blocks(&d).remove(0);
    }
    cert_blocks(&bytes).remove(0)
}

// ---------------------------------------------------------------------------------------------
// openssl

fn scratch_pem(dir: &Path, der: &[u8]) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let p = dir.join(format!("cert-{}.pem", N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
    std::fs::write(&p, pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))).unwrap();
    p
}

/// Subject, SANs, key usages, EKUs and public key, as openssl prints them.
fn identity(dir: &Path, der: &[u8]) -> String {
    let p = scratch_pem(dir, der);
    let r =
        openssl(&["x509", "-noout", "-subject", "-ext", "subjectAltName,keyUsage,extendedKeyUsage", "-pubkey", "-in", p.to_str().unwrap()]);
    assert!(r.ok(), "{}", r.describe());
    r.stdout
}

fn not_after(dir: &Path, der: &[u8]) -> String {
    let p = scratch_pem(dir, der);
    let r = openssl(&["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in", p.to_str().unwrap()]);
    assert!(r.ok(), "{}", r.describe());
    r.stdout.trim().trim_start_matches("notAfter=").replace(' ', "T")
}

fn unix(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap().unix_timestamp()
}

/// `openssl verify` of `der` against the CA certificate `ca` at `now`.
fn verifies(dir: &Path, ca: &[u8], der: &[u8], now: &str) -> bool {
    let (c, l) = (scratch_pem(dir, ca), scratch_pem(dir, der));
    let at = unix(now).to_string();
    openssl(&["verify", "-attime", &at, "-CAfile", c.to_str().unwrap(), l.to_str().unwrap()]).ok()
}

/// The discovery hash of a CA certificate (sha256 of its SubjectPublicKeyInfo, by openssl).
fn discovery_hash(dir: &Path, der: &[u8]) -> String {
    checks::discovery_hash(&scratch_pem(dir, der)).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// A node extracted as a live host

/// check-expiration lists every certificate the root holds, each once.
fn lists_every_certificate(dir: &Path, root: &Path, now: &str) -> (Vec<Row>, Vec<Row>) {
    let (leaves, cas) = report(dir, root, now);
    let listed: Vec<Vec<u8>> = leaves.iter().chain(&cas).map(|r| row_cert(&r.path)).collect();
    let listed_set: BTreeSet<Vec<u8>> = listed.iter().cloned().collect();
    assert_eq!(listed.len(), listed_set.len(), "{}: a certificate is listed twice", root.display());
    let held = distinct_certs(root);
    assert_eq!(
        listed_set.len(),
        held.len(),
        "{}: listed {} of the {} certificates the tree holds",
        root.display(),
        listed_set.len(),
        held.len()
    );
    assert_eq!(listed_set, held, "{}", root.display());
    for r in leaves.iter().chain(&cas) {
        assert_eq!(r.status, "ok", "{}: {}", r.name, r.path);
        assert!(!r.rotated, "{}", r.name);
    }
    (leaves, cas)
}

/// A control plane's root: renew all, then renew ca, each checked file by file.
fn control_plane_lifecycle(dir: &Path, profile: &str, root: &Path, scratch: &Path) {
    let (leaves, cas) = lists_every_certificate(dir, root, MADE);
    // What the layout keeps on the node: the cluster CA's key always on a control plane; the
    // front-proxy and etcd CA keys on kubeadm's only (hardway and binary keep them in the state).
    let on_node: BTreeSet<&str> = cas.iter().filter(|c| c.ca_key == "node").map(|c| c.name.as_str()).collect();
    let expected: BTreeSet<&str> = if profile == "kubeadm" { ["ca", "etcd-ca", "front-proxy-ca"].into() } else { ["ca"].into() };
    assert_eq!(on_node, expected, "{profile}");
    for c in cas.iter().filter(|c| c.ca_key != "node") {
        assert_eq!(c.ca_key, "bundle-only", "{profile}: {}", c.name);
    }
    let before: BTreeMap<String, Vec<u8>> = leaves.iter().map(|r| (r.name.clone(), row_cert(&r.path))).collect();
    let ca_of: BTreeMap<String, Vec<u8>> = cas.iter().map(|r| (r.name.clone(), row_cert(&r.path))).collect();

    let run = ok(kubebundle(dir, &["certs", "renew", "all", "--dir", root.to_str().unwrap(), "--now", RENEW_AT], &[]));
    let (after_leaves, _) = report(dir, root, RENEW_AT);
    for r in &after_leaves {
        let (old, new) = (&before[&r.name], row_cert(&r.path));
        if on_node.contains(r.ca.as_str()) {
            assert_ne!(old, &new, "{profile}: {} was not renewed", r.name);
            assert_eq!(identity(scratch, old), identity(scratch, &new), "{profile}: {}: subject, SANs, usages or key changed", r.name);
            assert_eq!(not_after(scratch, &new), RENEWED_UNTIL, "{profile}: {}", r.name);
            assert!(verifies(scratch, &ca_of[&r.ca], &new, RENEW_AT), "{profile}: {} does not verify against {}", r.name, r.ca);
        } else {
            assert_eq!(old, &new, "{profile}: {} changed although its CA key is not on the node", r.name);
            assert!(
                run.stdout.contains(&format!("{}: signed by {}, whose key the {profile} layout keeps on no node", r.name, r.ca)),
                "{profile}: {} is not named as left alone:\n{}",
                r.name,
                run.stdout
            );
        }
    }
    assert!(run.stdout.contains("kube-apiserver"), "{}", run.stdout);
    if profile != "kubeadm" {
        assert!(run.stdout.contains("systemctl restart") && run.stdout.contains("kube-proxy"), "{}", run.stdout);
    }
    verify_clean(dir, root, RENEW_AT);

    // renew ca: the same key (discovery hash), every file that held the old CA holds the new one.
    let ca_row = cas.iter().find(|c| c.name == "ca").unwrap();
    let old_ca = row_cert(&ca_row.path);
    let held_old = holders(root, &old_ca);
    assert!(held_old.len() > 1, "{profile}: the CA is held by {held_old:?}");
    let run = ok(kubebundle(dir, &["certs", "renew", "ca", "--dir", root.to_str().unwrap(), "--now", CA_AT, "--validity", "87600h"], &[]));
    let new_ca = row_cert(&ca_row.path);
    assert_ne!(old_ca, new_ca);
    assert_eq!(discovery_hash(scratch, &old_ca), discovery_hash(scratch, &new_ca), "{profile}: the discovery hash changed");
    assert!(holders(root, &old_ca).is_empty(), "{profile}: still holding the old CA: {:?}", holders(root, &old_ca));
    assert_eq!(holders(root, &new_ca), held_old, "{profile}: the files holding the CA changed");
    for needle in ["kube-public/cluster-info", "kubectl config set-cluster", "bootstrapsigner"] {
        assert!(run.stdout.contains(needle), "{profile}: the follow-up lacks {needle}:\n{}", run.stdout);
    }
    verify_clean(dir, root, CA_AT);
}

/// A worker's root: listed whole; nothing there can be renewed (the CA key is on the control
/// planes): refused, each certificate named with where its CA key is.
fn worker_lifecycle(dir: &Path, profile: &str, root: &Path) {
    let (leaves, cas) = lists_every_certificate(dir, root, MADE);
    assert!(!leaves.is_empty(), "{profile}");
    for r in leaves.iter().chain(&cas) {
        assert_eq!(r.ca_key, "control-planes", "{profile}: {}", r.name);
    }
    let before = files(root);
    let run = kubebundle(dir, &["certs", "renew", "all", "--dir", root.to_str().unwrap(), "--now", RENEW_AT], &[]);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    for r in &leaves {
        assert!(
            run.stderr.contains(&format!("{}: signed by ca, whose key the {profile} layout keeps on the control planes", r.name)),
            "{profile}: {}:\n{}",
            r.name,
            run.stderr
        );
    }
    assert!(run.stderr.contains("hint: renew them where their CA keys are"), "{}", run.stderr);
    assert_eq!(files(root), before, "{profile}: a refused renew changed the worker");
    verify_clean(dir, root, MADE);
}

// ---------------------------------------------------------------------------------------------
// The bundle

/// Every file of every node tarball (extracted), plus the bundle's own files.
fn bundle_files(cluster: &Path, scratch: &Path, tag: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(cluster.join("nodes")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(node) = name.strip_suffix(".tar.gz") else { continue };
        let root = scratch.join(format!("{tag}-{node}"));
        extract(&e.path(), &root);
        for (p, b) in files(&root) {
            out.insert(format!("nodes/{node}.tar.gz:{}", p.strip_prefix(&root).unwrap().display()), b);
        }
    }
    for rel in ["discovery.conf", "manifests/cluster-info.yaml", "state/pki/ca.crt", "join.txt"] {
        out.insert(rel.to_string(), std::fs::read(cluster.join(rel)).unwrap());
    }
    out
}

/// cluster-info's JWS, one per signing token, verified with openssl's HMAC-SHA256.
fn check_cluster_info(dir: &Path, cluster: &Path, ca: &[u8]) {
    let ci = &yaml_file_to_json(dir, &cluster.join("manifests/cluster-info.yaml")).unwrap()[0];
    let kubeconfig = ci["data"]["kubeconfig"].as_str().unwrap();
    let in_it: Vec<Vec<u8>> = data_values(kubeconfig, "certificate-authority-data").iter().flat_map(|d| cert_blocks(d)).collect();
    assert_eq!(in_it, [ca.to_vec()], "cluster-info's CA");
    let mut signed = 0;
    for e in std::fs::read_dir(cluster.join("manifests")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("bootstrap-token-") {
            continue;
        }
        let secret = &yaml_file_to_json(dir, &e.path()).unwrap()[0];
        let dec = |k: &str| String::from_utf8(B64.decode(secret["data"][k].as_str().unwrap_or_default()).unwrap()).unwrap();
        if dec("usage-bootstrap-signing") != "true" {
            continue;
        }
        let (id, token_secret) = (dec("token-id"), dec("token-secret"));
        let header = B64URL.encode(format!("{{\"alg\":\"HS256\",\"kid\":\"{id}\"}}"));
        let want = format!("{header}..{}", openssl_hs256(&token_secret, &format!("{header}.{}", B64URL.encode(kubeconfig)), dir));
        assert_eq!(ci["data"][format!("jws-kubeconfig-{id}")].as_str(), Some(want.as_str()), "the JWS of token {id}");
        signed += 1;
    }
    assert!(signed > 0, "no signing token");
}

fn bundle_lifecycle(dir: &Path, profile: &str, cluster: &Path, scratch: &Path) {
    let (leaves, cas) = report(dir, cluster, MADE);
    let state_ca = |id: &str| row_cert(&cas.iter().find(|c| c.name == id).unwrap().path);
    // Every certificate of every node is listed (the CAs once, from the state).
    let held: BTreeSet<Vec<u8>> =
        bundle_files(cluster, scratch, "before").iter().filter(|(p, _)| p.starts_with("nodes/")).flat_map(|(_, b)| certs_in(b)).collect();
    let listed: BTreeSet<Vec<u8>> =
        leaves.iter().map(|r| tarball_cert(cluster, &r.path, scratch)).chain(cas.iter().map(|r| row_cert(&r.path))).collect();
    assert_eq!(listed, held, "{profile}: the bundle's listing");

    let before: BTreeMap<String, Vec<u8>> = leaves.iter().map(|r| (r.name.clone(), tarball_cert(cluster, &r.path, scratch))).collect();
    ok(kubebundle(dir, &["certs", "renew", "all", "--dir", cluster.to_str().unwrap(), "--now", RENEW_AT], &[]));
    let (after, _) = report(dir, cluster, RENEW_AT);
    assert_eq!(after.len(), before.len(), "{profile}");
    let records: serde_json::Value = serde_json::from_slice(&std::fs::read(cluster.join("state/leaves.json")).unwrap()).unwrap();
    for r in &after {
        let new = tarball_cert(cluster, &r.path, scratch);
        let old = &before[&r.name];
        assert_ne!(old, &new, "{profile}: {} not renewed", r.name);
        assert_eq!(identity(scratch, old), identity(scratch, &new), "{profile}: {}", r.name);
        assert_eq!(not_after(scratch, &new), RENEWED_UNTIL, "{profile}: {}", r.name);
        assert!(verifies(scratch, &state_ca(&r.ca), &new, RENEW_AT), "{profile}: {}", r.name);
        // The state records it, so the next generate keeps it.
        let (node, id) = r.name.split_once('/').unwrap();
        let rec = records["leaves"].as_array().unwrap().iter().find(|l| l["node"] == node && l["id"] == id);
        let rec = rec.and_then(|l| l["cert"].as_str()).unwrap_or_else(|| panic!("{profile}: no record of {}", r.name));
        assert_eq!(cert_blocks(rec.as_bytes()), std::slice::from_ref(&new), "{profile}: the record of {}", r.name);
    }
    verify_clean(dir, cluster, RENEW_AT);

    // renew ca: the state, every tarball, discovery.conf, cluster-info and its JWS.
    let old_ca = state_ca("ca");
    let files_before = bundle_files(cluster, scratch, "ca-before");
    let held_old: BTreeSet<&String> = files_before.iter().filter(|(_, b)| certs_in(b).contains(&old_ca)).map(|(p, _)| p).collect();
    assert!(held_old.iter().any(|p| p.starts_with("nodes/w1.tar.gz:")) && held_old.contains(&"manifests/cluster-info.yaml".to_string()));
    let join_before = std::fs::read(cluster.join("join.txt")).unwrap();
    ok(kubebundle(dir, &["certs", "renew", "ca", "--dir", cluster.to_str().unwrap(), "--now", CA_AT, "--validity", "87600h"], &[]));
    let new_ca = std::fs::read(cluster.join("state/pki/ca.crt")).map(|b| cert_blocks(&b).remove(0)).unwrap();
    assert_ne!(new_ca, old_ca);
    assert_eq!(discovery_hash(scratch, &old_ca), discovery_hash(scratch, &new_ca));
    assert_eq!(std::fs::read(cluster.join("join.txt")).unwrap(), join_before, "join.txt (its hash) changed");
    let files_after = bundle_files(cluster, scratch, "ca-after");
    let held_new: BTreeSet<&String> = files_after.iter().filter(|(_, b)| certs_in(b).contains(&new_ca)).map(|(p, _)| p).collect();
    let still_old: Vec<&String> = files_after.iter().filter(|(_, b)| certs_in(b).contains(&old_ca)).map(|(p, _)| p).collect();
    assert!(still_old.is_empty(), "{profile}: still the old CA: {still_old:?}");
    assert_eq!(held_new, held_old, "{profile}");
    check_cluster_info(scratch, cluster, &new_ca);
    verify_clean(dir, cluster, CA_AT);
}

/// The certificate a bundle row names (`<tarball>:<path>`), read out of the tarball with tar.
fn tarball_cert(_cluster: &Path, shown: &str, scratch: &Path) -> Vec<u8> {
    let (tgz, rel) = shown.split_once(".tar.gz:").map(|(t, r)| (format!("{t}.tar.gz"), r)).unwrap_or_else(|| panic!("{shown}"));
    let out = std::process::Command::new("tar").args(["-xzOf", &tgz, rel]).current_dir(scratch).output().unwrap();
    assert!(out.status.success(), "tar {tgz} {rel}");
    let bytes = out.stdout;
    if let Some(d) = std::str::from_utf8(&bytes).ok().and_then(|t| data_values(t, "client-certificate-data").into_iter().next()) {
        return cert_blocks(&d).remove(0);
    }
    cert_blocks(&bytes).remove(0)
}

fn layout_lifecycle(profile: &str) {
    let tmp = temp_dir(&format!("lc-{profile}"));
    let dir = tmp.path();
    let cluster = generate(dir, profile);
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let (cp, w) = (dir.join("host-cp1"), dir.join("host-w1"));
    extract(&cluster.join("nodes/cp1.tar.gz"), &cp);
    extract(&cluster.join("nodes/w1.tar.gz"), &w);
    control_plane_lifecycle(dir, profile, &cp, &scratch);
    worker_lifecycle(dir, profile, &w);
    // /etc/kubernetes or /etc/k8s given: the root is found above it.
    let etc = if profile == "hardway" { cp.join("etc/k8s") } else { cp.join("etc/kubernetes") };
    let (from_etc, _) = report(dir, &etc, CA_AT);
    let (from_root, _) = report(dir, &cp, CA_AT);
    assert_eq!(from_etc.iter().map(|r| &r.path).collect::<Vec<_>>(), from_root.iter().map(|r| &r.path).collect::<Vec<_>>(), "{profile}");
    bundle_lifecycle(dir, profile, &cluster, &scratch);
}

#[test]
fn kubeadm_nodes_and_bundle() {
    layout_lifecycle("kubeadm");
}

#[test]
fn hardway_nodes_and_bundle() {
    layout_lifecycle("hardway");
}

#[test]
fn binary_nodes_and_bundle() {
    layout_lifecycle("binary");
}

// ---------------------------------------------------------------------------------------------
// Real kubeadm trees: the kubelet's rotated client certificate and links in pki/

fn fixture(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../shared/fixtures/kubeadm-{version}-etc-kubernetes"))
}

/// Copies a fixture with kubeadm's modes (git keeps none).
fn copy_fixture(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_fixture(&e.path(), &target);
        } else {
            std::fs::write(&target, std::fs::read(e.path()).unwrap()).unwrap();
            let mode = if e.file_name().to_string_lossy().ends_with(".crt") { 0o644 } else { 0o600 };
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

fn rotated_kubeadm_tree(version: &str, now: &str, until: &str) {
    let tmp = temp_dir(&format!("rotated-{version}"));
    let dir = tmp.path();
    let root = dir.join("host");
    let etc = root.join("etc/kubernetes");
    copy_fixture(&fixture(version), &etc);
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();

    // The kubelet rotated its client certificate: a dated file, the link kubelet.conf names.
    let conf_text = std::fs::read_to_string(etc.join("kubelet.conf")).unwrap();
    let cert = data_values(&conf_text, "client-certificate-data").remove(0);
    let key = data_values(&conf_text, "client-key-data").remove(0);
    let pki = root.join("var/lib/kubelet/pki");
    std::fs::create_dir_all(&pki).unwrap();
    let dated = pki.join("kubelet-client-2026-11-22-09-40-52.pem");
    std::fs::write(&dated, [cert.clone(), key.clone()].concat()).unwrap();
    std::fs::set_permissions(&dated, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("/var/lib/kubelet/pki/kubelet-client-2026-11-22-09-40-52.pem", pki.join("kubelet-client-current.pem"))
        .unwrap();
    let rewritten: String = conf_text
        .lines()
        .map(|l| match l.trim_start() {
            t if t.starts_with("client-certificate-data:") => {
                "    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem".into()
            }
            t if t.starts_with("client-key-data:") => "    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem".into(),
            _ => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(etc.join("kubelet.conf"), &rewritten).unwrap();
    // A relative link inside pki/: the serving certificate kept in a dated file.
    std::fs::rename(etc.join("pki/apiserver.crt"), etc.join("pki/apiserver-2026.crt")).unwrap();
    std::os::unix::fs::symlink("apiserver-2026.crt", etc.join("pki/apiserver.crt")).unwrap();

    let (leaves, _) = report(dir, &root, now);
    let kubelet = leaves.iter().find(|r| r.name == "kubelet.conf").expect("kubelet.conf is listed");
    assert!(kubelet.rotated, "{version}: kubelet.conf names the kubelet's rotated certificate");
    assert!(kubelet.path.ends_with("var/lib/kubelet/pki/kubelet-client-current.pem"), "{}", kubelet.path);
    assert_eq!(row_cert_under(Some(&root), &kubelet.path), cert_blocks(&cert)[0]);
    assert!(leaves.iter().any(|r| r.name == "apiserver"), "{version}");
    for r in &leaves {
        assert_eq!(r.status, "ok", "{version}: {}", r.name);
        assert_eq!(r.rotated, r.name == "kubelet.conf", "{version}: {}", r.name);
    }
    // And from /etc/kubernetes: the same rows (the root is found above it).
    let (from_etc, _) = report(dir, &etc, now);
    assert_eq!(from_etc.len(), leaves.len(), "{version}");

    let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let (dated_inode, api_inode) = (inode(&dated), inode(&etc.join("pki/apiserver-2026.crt")));
    let conf_before = std::fs::read(etc.join("kubelet.conf")).unwrap();
    let run = ok(kubebundle(dir, &["certs", "renew", "all", "--dir", root.to_str().unwrap(), "--now", now], &[]));
    assert!(run.stdout.contains(dated.to_str().unwrap()), "{version}: the report names the dated file:\n{}", run.stdout);
    // The links stay; their targets were replaced (new inodes: written beside, renamed over).
    let link = std::fs::read_link(pki.join("kubelet-client-current.pem")).unwrap();
    assert_eq!(link, Path::new("/var/lib/kubelet/pki/kubelet-client-2026-11-22-09-40-52.pem"));
    assert_eq!(std::fs::read_link(etc.join("pki/apiserver.crt")).unwrap(), Path::new("apiserver-2026.crt"));
    assert_ne!(inode(&dated), dated_inode, "{version}: the dated file was written in place");
    assert_ne!(inode(&etc.join("pki/apiserver-2026.crt")), api_inode);
    assert_eq!(std::fs::metadata(&dated).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read(etc.join("kubelet.conf")).unwrap(), conf_before, "kubelet.conf itself changed");
    let both = std::fs::read(&dated).unwrap();
    assert!(both.ends_with(&key), "{version}: the key is kept after the certificate");
    let new_cert = cert_blocks(&both).remove(0);
    let ca = cert_blocks(&std::fs::read(etc.join("pki/ca.crt")).unwrap()).remove(0);
    assert_eq!(identity(&scratch, &cert_blocks(&cert)[0]), identity(&scratch, &new_cert));
    assert_eq!(not_after(&scratch, &new_cert), until);
    assert!(verifies(&scratch, &ca, &new_cert, now));
    let api = cert_blocks(&std::fs::read(etc.join("pki/apiserver-2026.crt")).unwrap()).remove(0);
    assert_eq!(not_after(&scratch, &api), until);
    let (after, _) = report(dir, &root, now);
    assert!(after.iter().all(|r| r.status == "ok"), "{version}");
}

#[test]
fn kubeadm_v1_24_with_the_kubelet_rotated_certificate_and_links_in_pki() {
    rotated_kubeadm_tree("v1.24", "2027-10-01T00:00:00Z", "2028-09-30T00:00:00Z");
}

#[test]
fn kubeadm_v1_32_with_the_kubelet_rotated_certificate_and_links_in_pki() {
    rotated_kubeadm_tree("v1.32", "2027-11-01T00:00:00Z", "2028-10-31T00:00:00Z");
}

// ---------------------------------------------------------------------------------------------
// A tree that matches no layout

#[test]
fn a_tree_that_matches_no_layout_is_refused_naming_what_was_found_and_expected() {
    let tmp = temp_dir("no-layout");
    let dir = tmp.path();
    let root = dir.join("host");
    std::fs::create_dir_all(root.join("etc/ssl")).unwrap();
    std::fs::write(root.join("etc/hostname"), "h\n").unwrap();
    for args in
        [vec!["certs", "check-expiration", "--dir", "host", "--now", MADE], vec!["certs", "renew", "all", "--dir", "host", "--now", MADE]]
    {
        let run = kubebundle(dir, &args, &[]);
        assert_eq!(run.code, Some(2), "{}", run.describe());
        for needle in [
            "matches no layout: found etc",
            "etc/hostname, etc/ssl",
            "kubeadm expects etc/kubernetes/pki/ca.crt",
            "hardway expects etc/k8s/shared/ca.crt",
            "binary expects etc/kubernetes/pki/ca.crt",
            "--profile FILE",
        ] {
            assert!(run.stderr.contains(needle), "{args:?}: {needle}:\n{}", run.stderr);
        }
    }
    let left: Vec<String> = common::walk(&root).into_keys().collect();
    assert_eq!(left, ["etc", "etc/hostname", "etc/ssl"], "nothing was written");
}

// ---------------------------------------------------------------------------------------------
// A link outside the tree that cannot be read

#[test]
fn a_link_outside_the_tree_that_cannot_be_read_is_reported_and_skipped() {
    let tmp = temp_dir("outside");
    let dir = tmp.path();
    let root = dir.join("host");
    let etc = root.join("etc/kubernetes");
    copy_fixture(&fixture("v1.32"), &etc);
    std::fs::remove_file(etc.join("pki/front-proxy-client.crt")).unwrap();
    // Out of the root (../../../..), to a file that is not there.
    std::os::unix::fs::symlink("../../../../elsewhere/front-proxy-client.crt", etc.join("pki/front-proxy-client.crt")).unwrap();
    let now = "2027-11-01T00:00:00Z";
    let run = kubebundle(dir, &["certs", "check-expiration", "--dir", "host", "--now", now, "-o", "json"], &[]);
    assert_eq!(run.code, Some(4), "{}", run.describe());
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let fp = v["certificates"].as_array().unwrap().iter().find(|c| c["name"] == "front-proxy-client").expect("listed");
    assert_eq!(fp["status"], "unreadable");
    assert!(fp["detail"].as_str().unwrap().contains("outside the tree"), "{fp}");
    let others: Vec<&serde_json::Value> =
        v["certificates"].as_array().unwrap().iter().filter(|c| c["name"] != "front-proxy-client").collect();
    assert!(others.iter().all(|c| c["status"] == "ok"), "{}", run.stdout);

    let run = ok(kubebundle(dir, &["certs", "renew", "all", "--dir", "host", "--now", now], &[]));
    assert!(run.stdout.contains("not renewed here (1):\n  front-proxy-client: a link to"), "{}", run.stdout);
    assert!(run.stdout.contains("outside the tree"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("renewed {} certificate(s)", others.len())), "{}", run.stdout);
    assert!(std::fs::symlink_metadata(etc.join("pki/front-proxy-client.crt")).unwrap().file_type().is_symlink());
    // Named, it is refused (exit 1), naming the link.
    let run = kubebundle(dir, &["certs", "renew", "front-proxy-client", "--dir", "host", "--now", "2027-11-01T00:10:00Z"], &[]);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(run.stderr.contains("outside the tree"), "{}", run.stderr);
}
