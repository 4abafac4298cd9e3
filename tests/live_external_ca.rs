//! External-CA mode, live: all three cluster CAs are corporate intermediates imported without
//! their keys (`ca import --cert --chain`), so kubebundle signs nothing. `generate` writes a key
//! and a CSR per leaf, kubeconfigs included, and waits; the corporate CA (the real `openssl ca`,
//! copying the requests' extensions) signs every CSR with the intermediate of its CA;
//! `import-signed` takes them back and `generate` packs a kubeadm bundle of one control plane
//! (+ etcd) and one worker for Kubernetes v1.32.13 with no CA key anywhere; each extracted tree
//! verifies alone (`kubebundle verify`, no state beside it). Then, with the real
//! binaries in a private network namespace (tests/live/mod.rs):
//! - the real kubeadm on the control plane's tree: `init phase certs all` detects the three
//!   keyless CAs and uses every certificate, `init phase kubeconfig all` uses the 5 kubeconfigs,
//!   the tree byte-identical; the static pods it writes give the controller-manager empty signing
//!   files;
//! - etcd, kube-apiserver, kube-controller-manager and kube-scheduler from those static pods:
//!   kube-apiserver and etcd serve leaf + intermediate, verifying up to the root; the checks of
//!   every layout (`live::check_control_plane`: manifests/, leases, a ServiceAccount token, every
//!   kubeconfig authenticating with kubectl as its user, admin.conf cluster-admin), kubectl
//!   trusting the root alone; the controller-manager runs no CSR signer;
//! - the real `kubeadm join phase preflight` token discovery validates cluster-info against the
//!   pinned hash and refuses another CA's;
//! - the worker's kubelet completes TLS bootstrap once a signer runs where the key lives (a
//!   second controller-manager with only the CSR signer and the corporate intermediate's key,
//!   as the README says): its client certificate verifies up to the root.
//!
//! Needs K8S_BIN with kubeadm (`../shared/k8s/install.sh target/k8s`), etcd, openssl, root. Under
//! CI=true a missing one fails the test with how to install it.

mod common;
mod live;

use std::time::{Duration, Instant};

use common::corp::*;
use common::*;
use live::*;

const TEST: &str = "external_cas_signed_by_openssl_boot_a_control_plane_without_any_ca_key";
const CLUSTER: &str = "liveext";
/// (the CA, its corporate intermediate in corp/, its key in a kubeadm tree).
const CAS: [(&str, &str, &str); 3] = [
    ("ca", "ca", "etc/kubernetes/pki/ca.key"),
    ("front-proxy-ca", "fp", "etc/kubernetes/pki/front-proxy-ca.key"),
    ("etcd-ca", "etcd", "etc/kubernetes/pki/etcd/ca.key"),
];

#[test]
fn external_cas_signed_by_openssl_boot_a_control_plane_without_any_ca_key() {
    let started = Instant::now();
    let Some(tools) = Tools::find_with(&["kubeadm"]) else { return };
    let (cp_node, worker_node) = (("cp1", "198.51.100.51"), ("worker1", "198.51.100.52"));
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let config = for_kubeadm(bundle_config("kubeadm", CLUSTER, cp_node, worker_node));
    let w = Work::with("live-external", CLUSTER, &config, &rfc3339(unix), |dir| external_corp(dir, unix));

    // The three intermediates without their keys; generate waits for every leaf; the corporate
    // CA signs them; import-signed; generate packs.
    for (which, file, _) in CAS {
        let r = w.import_keyless(which, &format!("{file}.crt"));
        assert!(r.ok() && r.stdout.contains("without its key: external-CA mode"), "ca import {which}: {}", r.describe());
    }
    let r = w.generate();
    assert!(r.code == Some(1) && r.stderr.contains("signed certificates (external CA)"), "generate: {}", r.describe());
    let signed = w.dir.join("signed");
    let csrs = sign_all(&w, &signed);
    let r = w.import_signed(&w.bundle(), &[&signed]);
    assert!(r.ok() && r.stdout.contains(&format!("recorded {} signed certificate(s)", csrs.len())), "import-signed: {}", r.describe());
    let r = w.generate();
    assert!(r.ok(), "generate: {}", r.describe());
    let Work { _tmp, corp, now, .. } = w;
    let cluster = _tmp.path().join("out").join(CLUSTER);
    let b = Bundle::open(tools, _tmp, &cluster, cp_node.0, worker_node.0, &now);
    let mut f = Failures::new();
    f.note(format!("external: {} CSRs signed by openssl ca, imported and packed in {:.1?}", csrs.len(), started.elapsed()));

    // No CA key in the state or in either tree, by name or by content.
    let keys: Vec<String> = CAS.iter().map(|(_, file, _)| corp.text(&format!("{file}.key"))).collect();
    for (what, dir) in [("the state", cluster.join("state")), ("cp1's tree", b.cp_root.clone()), ("worker1's tree", b.worker_root.clone())]
    {
        for (rel, bytes) in file_bytes(&dir) {
            f.check(!CAS.iter().any(|(_, _, key)| rel.ends_with(key.trim_start_matches("etc/kubernetes/"))), || {
                format!("{what} holds {rel}")
            });
            f.check(!keys.iter().any(|k| bytes.windows(k.len()).any(|x| x == k.as_bytes())), || format!("{what}: {rel} holds a CA key"));
        }
    }

    // Each extracted tree alone (no state beside it) verifies: CA files of corporate names,
    // without keys.
    b.verify_roots("(external CAs)", &mut f);

    // The real kubeadm on the control plane's tree.
    let boot_started = Instant::now();
    let ns = b.netns();
    let root = b.cp_root.clone();
    let config = format!("/{}", b.cp.rel("kubeadm-init"));
    let before = file_bytes(&root);
    let r = kubeadm(&ns, &b.tools, &root, &["init", "phase", "certs", "all", "--config", &config]);
    assert!(r.ok(), "kubeadm init phase certs all: {}", r.describe());
    let lines = said(&r, "certs");
    let mut expected: Vec<String> =
        ["ca", "front-proxy-ca", "etcd/ca"].iter().map(|c| format!("Using existing {c} keyless certificate authority")).collect();
    expected.extend(KUBEADM_LEAVES.iter().map(|c| format!("Using existing {c} certificate and key on disk")));
    for e in &expected {
        f.check(lines.contains(e), || format!("kubeadm init phase certs all did not say {e:?}:\n{}", r.stdout));
    }
    let r = kubeadm(&ns, &b.tools, &root, &["init", "phase", "kubeconfig", "all", "--config", &config]);
    assert!(r.ok(), "kubeadm init phase kubeconfig all: {}", r.describe());
    let lines = said(&r, "kubeconfig");
    for k in ["admin", "super-admin", "kubelet", "controller-manager", "scheduler"] {
        let e = format!("External CA mode: Using user provided {k}.conf");
        f.check(lines.contains(&e), || format!("kubeadm init phase kubeconfig all did not say {e:?}:\n{}", r.stdout));
    }
    f.note("kubeadm: the 3 CAs keyless, 7 certificates and 5 kubeconfigs used as they are (\"External CA mode: Using user provided ...\")");
    f.check(file_bytes(&root) == before, || "kubeadm init phase certs/kubeconfig all changed the control plane's tree".into());
    let (_, commands) = kubeadm_static_pods(&ns, &b.tools, &root, &config, &mut f);
    let kcm = &commands.iter().find(|(n, _)| n == "kube-controller-manager").expect("the controller-manager's static pod").1;
    for flag_name in ["cluster-signing-cert-file", "cluster-signing-key-file"] {
        f.eq(&format!("kube-controller-manager --{flag_name} (kubeadm, external CA)"), &Some(""), &flag(kcm, flag_name));
    }
    f.note(format!("external: kubeadm phases done at {:.1?}", started.elapsed()));

    let cp = b.boot_static_pods(ns, boot_started, commands);
    f.note(format!("external: control plane ready in {:.1?} (kubeadm's phases included)", cp.boot_time));
    let servers = [("kube-apiserver", 6443, b.cp.rel("apiserver.crt"), "ca.crt"), ("etcd", 2379, b.cp.rel("etcd-server.crt"), "etcd.crt")];
    check_served_chains(&cp, cp_node.1, &corp, &servers, &mut f);
    check_control_plane(&b, &cp, &mut f);
    check_trusting_root(&cp, &root.join(b.cp.rel("admin.conf")), &corp.path("root.crt"), "kubernetes-admin", &mut f);
    let skipping = "Skipping CSR signer controller because no csr cert/key was specified";
    // (It starts its controllers one after the other, a fraction of a second apart.)
    let kcm_log = || cp.procs.iter().find(|p| p.name == "kube-controller-manager").map(|p| p.log_text()).unwrap_or_default();
    let said_skipping = wait_for(Duration::from_secs(20), || kcm_log().contains(skipping).then_some(()));
    if f.check(said_skipping.is_some(), || format!("the controller-manager did not say {skipping:?}:\n{}", tail(&kcm_log(), 3000))) {
        f.note(format!("kube-controller-manager (kubeadm's empty signing files): {skipping}"));
    }
    f.note(format!("external: control-plane checks done at {:.1?}", started.elapsed()));

    // kubeadm join's token discovery against the pinned hash.
    let pins = check_join_discovery(&b, &cp, &checks::discovery_hash(&corp.dir.join("fp.crt")).unwrap(), &mut f);
    f.eq("the hashes join.txt pins", &vec![checks::discovery_hash(&corp.dir.join("ca.crt")).unwrap()], &pins);

    // The worker: its kubeconfig, then its kubelet's TLS bootstrap, signed by a controller-manager
    // that runs only the CSR signer where the key lives (here: the corporate CA's directory).
    rebase_references(&b.worker_root);
    check_kubeconfigs(&cp, &b.worker, &b.worker_root, &mut f);
    let signer_argv: Vec<String> = [
        "/usr/local/bin/kube-controller-manager".to_string(),
        format!("--kubeconfig=/{}", b.cp.rel("controller-manager.conf")),
        "--controllers=csrsigning".into(),
        "--use-service-account-credentials=true".into(),
        "--leader-elect=false".into(),
        "--secure-port=0".into(),
    ]
    .to_vec();
    let (cert, key) = (corp.path("ca.crt"), corp.path("ca.key"));
    let signer = start_argv(&cp.ns, &b.tools, &root, "csr-signer", &signer_argv, &b.scratch, |run| {
        run.push(format!("--cluster-signing-cert-file={cert}"));
        run.push(format!("--cluster-signing-key-file={key}"));
    });
    let started_signer =
        wait_for(Duration::from_secs(20), || signer.log_text().contains("certificatesigningrequest-signing-controller").then_some(()));
    f.check(started_signer.is_some(), || format!("the CSR signer did not start:\n{}", tail(&signer.log_text(), 3000)));
    let argv = kubeadm_kubelet_argv(&b);
    if let Some(current) = check_kubelet_bootstrap(&b, &cp, &argv, &mut f) {
        let der = pem_certs(&std::fs::read(&current).unwrap()).into_iter().next().unwrap_or_default();
        let v = corp.verify(&b.scratch, &der, Some(&corp.path("ca.crt")));
        f.check(v.ok(), || format!("the kubelet's client certificate does not verify up to the root: {}", v.describe()));
        f.note("the kubelet's client certificate, issued by the signer with the corporate intermediate's key, verifies up to the root");
    }
    f.note(format!("external: {:.1?} in all", started.elapsed()));
    drop(signer);
    drop(cp);
    f.finish(TEST);
}
