//! Intermediate CAs under a corporate root, live. The corporate root (made and run with the real
//! `openssl ca`, ECDSA P-256) signs the three cluster CAs as intermediates by CSR (`ca csr`, then
//! `ca import --cert --chain root.crt`, the keys staying in the state); a kubeadm bundle of one
//! control plane (+ etcd) and one worker for Kubernetes v1.32.13 is generated under them; each
//! extracted tree verifies alone (`kubebundle verify`, no state beside it). Then,
//! with the real binaries in a private network namespace (tests/live/mod.rs):
//! - kube-apiserver and etcd, started from the static pods the real kubeadm writes for the
//!   control plane's tree, serve the leaf followed by its intermediate; the served leaf verifies
//!   with `openssl verify -CAfile root -untrusted intermediate` (and not without the
//!   intermediate);
//! - the control-plane checks of every layout (`live::check_control_plane`: the bundle's
//!   manifests/ applied with super-admin.conf, the leases, a ServiceAccount token, every
//!   kubeconfig of both trees authenticating with kubectl as its user, admin.conf cluster-admin),
//!   and kubectl trusting the corporate root alone accepts the served chain;
//! - the real `kubeadm join phase preflight` token discovery, with the worker's JoinConfiguration
//!   and with join.txt's command line, validates cluster-info against the pinned hash (the
//!   intermediate's), and refuses the front-proxy CA's hash naming the key it found;
//! - the worker's kubelet, as kubeadm's drop-in starts it, completes TLS bootstrap: its client
//!   certificate, issued by the controller-manager with the intermediate's key, verifies up to
//!   the root.
//!
//! Needs K8S_BIN with kubeadm (`../shared/k8s/install.sh target/k8s`), etcd, openssl, root. Under
//! CI=true a missing one fails the test with how to install it.

mod common;
mod live;

use std::time::Instant;

use common::corp::*;
use common::*;
use live::*;

const TEST: &str = "intermediate_cas_under_a_corporate_root_serve_their_chain_and_pass_kubeadm_token_discovery";
const CLUSTER: &str = "livecorp";
const CAS: [&str; 3] = ["ca", "front-proxy-ca", "etcd-ca"];

/// The corporate root (2025 → 2036); what it signs is valid 2025 → 2035.
fn corp(dir: &std::path::Path) -> Corp {
    let mut corp = Corp::new(dir, &corp_cnf("none", false, ""), "20250101000000Z", "20360101000000Z");
    corp.validity = ("20250101000000Z".into(), "20350101000000Z".into());
    corp
}

#[test]
fn intermediate_cas_under_a_corporate_root_serve_their_chain_and_pass_kubeadm_token_discovery() {
    let started = Instant::now();
    let Some(tools) = Tools::find_with(&["kubeadm"]) else { return };
    let (cp_node, worker_node) = (("cp1", "198.51.100.31"), ("worker1", "198.51.100.32"));
    let now = real_now();
    let w = Work::with("live-corp", CLUSTER, &for_kubeadm(bundle_config("kubeadm", CLUSTER, cp_node, worker_node)), &now, corp);
    let out = w.out().display().to_string();

    // The three intermediates: CSR from the state's key, signed by the root, imported.
    for which in CAS {
        let r = w.run(&["ca", "csr", which, "--config", "c.yaml", "--now", &now, "--out", &out]);
        assert!(r.ok(), "ca csr {which}: {}", r.describe());
        let csr = w.bundle().join(format!("csr/{which}.csr"));
        w.corp.sign("ca.cnf", "root", csr.to_str().unwrap(), &format!("{which}.crt"), &["-extensions", "v3_int"]);
        let (cert, chain) = (w.corp.path(&format!("{which}.crt")), w.corp.path("root.crt"));
        let r = w.run(&["ca", "import", which, "--cert", &cert, "--chain", &chain, "--config", "c.yaml", "--now", &now, "--out", &out]);
        assert!(r.ok(), "ca import {which}: {}", r.describe());
    }
    let r = w.generate();
    assert!(r.ok(), "generate: {}", r.describe());
    let Work { _tmp, corp, .. } = w;
    let cluster = _tmp.path().join("out").join(CLUSTER);
    let b = Bundle::open(tools, _tmp, &cluster, cp_node.0, worker_node.0, &now);
    let mut f = Failures::new();
    // Each extracted tree alone (no state beside it) verifies: its CA files are intermediates.
    b.verify_roots("(intermediate CAs)", &mut f);
    f.note(format!("corp: 3 intermediates signed and imported, bundle generated in {:.1?}", started.elapsed()));

    // The control plane from the static pods the real kubeadm writes.
    let boot_started = Instant::now();
    let ns = b.netns();
    let config = format!("/{}", b.cp.rel("kubeadm-init"));
    let (_, commands) = kubeadm_static_pods(&ns, &b.tools, &b.cp_root, &config, &mut f);
    let cp = b.boot_static_pods(ns, boot_started, commands);
    f.note(format!("corp: control plane ready in {:.1?} (kubeadm's phases included)", cp.boot_time));

    // What kube-apiserver and etcd serve: the leaf, then its intermediate.
    let servers =
        [("kube-apiserver", 6443, b.cp.rel("apiserver.crt"), "ca.crt"), ("etcd", 2379, b.cp.rel("etcd-server.crt"), "etcd-ca.crt")];
    check_served_chains(&cp, cp_node.1, &corp, &servers, &mut f);

    check_control_plane(&b, &cp, &mut f);
    // kubectl trusting the corporate root alone: the served intermediate completes the chain.
    check_trusting_root(&cp, &b.cp_root.join(b.cp.rel("admin.conf")), &corp.path("root.crt"), "kubernetes-admin", &mut f);
    f.note(format!("corp: control-plane checks done at {:.1?}", started.elapsed()));

    // kubeadm join's token discovery against the pinned hash.
    let intermediate = checks::discovery_hash(&corp.dir.join("ca.crt")).unwrap();
    let front_proxy = checks::discovery_hash(&corp.dir.join("front-proxy-ca.crt")).unwrap();
    let pins = check_join_discovery(&b, &cp, &front_proxy, &mut f);
    f.eq("the hashes join.txt pins", &vec![intermediate], &pins);
    f.note(format!("corp: kubeadm join discovery done at {:.1?}", started.elapsed()));

    // The worker: its kubeconfig, and its kubelet's TLS bootstrap signed with the intermediate.
    rebase_references(&b.worker_root);
    check_kubeconfigs(&cp, &b.worker, &b.worker_root, &mut f);
    let argv = kubeadm_kubelet_argv(&b);
    if let Some(current) = check_kubelet_bootstrap(&b, &cp, &argv, &mut f) {
        let der = pem_certs(&std::fs::read(&current).unwrap()).into_iter().next().unwrap_or_default();
        let v = corp.verify(&b.scratch, &der, Some(&corp.path("ca.crt")));
        f.check(v.ok(), || format!("the kubelet's issued client certificate does not verify up to the root: {}", v.describe()));
    }
    f.note(format!("corp: {:.1?} in all", started.elapsed()));
    drop(cp);
    f.finish(TEST);
}
