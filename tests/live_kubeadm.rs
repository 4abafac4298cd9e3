//! The kubeadm layout, live: a bundle of one control plane (+ etcd) and one worker for
//! Kubernetes v1.32.13 (the real kubeadm refuses newer control planes) on TEST-NET addresses
//! (kubeadm refuses a loopback advertiseAddress), renewed (every CA from its key and every
//! certificate, in the bundle and again on the control plane's extracted root as on a live host:
//! `live::Bundle::renew`). Then, on the renewed control-plane root, the real kubeadm v1.32.13
//! (`--rootfs <root>`: it chroots, so the root's own `/etc/kubernetes/kubeadm-init.yaml` and the
//! paths in it resolve inside the root):
//! - `init phase certs all` says "Using existing" for all 10 certificates and the sa key, and
//!   `init phase kubeconfig all` for all 5 kubeconfigs: the tree is byte-identical afterwards;
//! - `init phase control-plane all` and `init phase etcd local` write the 4 static pod manifests
//!   and nothing else, the bundle's kube-apiserver patch applied (encryption at rest).
//!
//! etcd, kube-apiserver, kube-controller-manager and kube-scheduler then start from those
//! manifests' commands (what is changed for a test, and why: tests/live/mod.rs; the static pods'
//! hostPath volumes mount each host path at the same path, checked here, so rebasing their
//! absolute paths into the root is what the pods see). Against them the checks of the other
//! layouts (`live::check_control_plane`): /readyz, the leader leases, a ServiceAccount token, the
//! bundle's manifests/ applied with super-admin.conf, every kubeconfig of both trees
//! authenticating as its user, admin.conf cluster-admin; a Secret encrypted at rest in etcd (the
//! patch at work); the worker's kubelet started as kubeadm's drop-in starts it completing TLS
//! bootstrap. kube-proxy is not in this layout (kubeadm runs it as a DaemonSet).
//!
//! Needs K8S_BIN with kubeadm (`../shared/k8s/install.sh target/k8s`), etcd, root. Under CI=true
//! a missing one fails the test with how to install it.

mod common;
mod live;

use std::collections::BTreeMap;
use std::time::Instant;

use common::*;
use live::*;

const TEST: &str = "kubeadm_renewed_control_plane_accepted_by_kubeadm_and_booted_from_its_static_pods";

/// The static pod manifests `kubeadm init phase control-plane all` and `init phase etcd local`
/// write, in the order the components start.
const STATIC_PODS: [&str; 4] = live::CONTROL_PLANE;

/// Every file of the tree that is not what `before` held: (changed or removed, added).
fn changes(before: &BTreeMap<String, Vec<u8>>, after: &BTreeMap<String, Vec<u8>>) -> (Vec<String>, Vec<String>) {
    let changed = before.iter().filter(|(p, b)| after.get(*p) != Some(*b)).map(|(p, _)| p.clone()).collect();
    let added = after.keys().filter(|p| !before.contains_key(*p)).cloned().collect();
    (changed, added)
}

#[test]
fn kubeadm_renewed_control_plane_accepted_by_kubeadm_and_booted_from_its_static_pods() {
    let started = Instant::now();
    let Some(tools) = Tools::find_with(&["kubeadm"]) else { return };
    let (cp_node, worker_node) = (("cp1", "198.51.100.21"), ("worker1", "198.51.100.22"));
    let Some(mut b) = Bundle::generate_with(tools, "kubeadm", "livekadm", cp_node, worker_node, for_kubeadm) else {
        return;
    };
    let mut f = Failures::new();
    b.renew(&mut f);
    f.note(format!("kubeadm: generated and renewed in {:.1?}", started.elapsed()));

    // The nodes' addresses in the namespace (`Bundle::netns`): kubeadm, etcd and the apiserver use them.
    let boot_started = Instant::now();
    let ns = b.netns();
    let root = b.cp_root.clone();
    let config = format!("/{}", b.cp.rel("kubeadm-init"));
    f.eq("the init node's kubeadm config", "/etc/kubernetes/kubeadm-init.yaml", config.as_str());
    let before = file_bytes(&root);

    // certs and kubeconfig: everything exists, nothing is written.
    let r = kubeadm(&ns, &b.tools, &root, &["init", "phase", "certs", "all", "--config", &config]);
    assert!(r.ok(), "kubeadm init phase certs all: {}", r.describe());
    let lines = said(&r, "certs");
    let expected = certs_all_existing();
    for e in &expected {
        f.check(lines.contains(e), || format!("kubeadm init phase certs all did not say {e:?}:\n{}", r.stdout));
    }
    let other: Vec<&String> = lines.iter().filter(|l| !expected.contains(l) && !l.starts_with("Using certificateDir folder")).collect();
    f.check(other.is_empty(), || format!("kubeadm init phase certs all did more than use the existing files: {other:?}"));
    let (changed, added) = changes(&before, &file_bytes(&root));
    f.check(changed.is_empty() && added.is_empty(), || format!("kubeadm init phase certs all changed {changed:?} and wrote {added:?}"));
    f.note(format!(
        "kubeadm init phase certs all: {} certificates and the sa key \"Using existing\", the tree byte-identical",
        expected.len() - 1
    ));

    let r = kubeadm(&ns, &b.tools, &root, &["init", "phase", "kubeconfig", "all", "--config", &config]);
    assert!(r.ok(), "kubeadm init phase kubeconfig all: {}", r.describe());
    let lines = said(&r, "kubeconfig");
    let expected: Vec<String> = ["admin", "super-admin", "kubelet", "controller-manager", "scheduler"]
        .iter()
        .map(|k| format!("Using existing kubeconfig file: \"/etc/kubernetes/{k}.conf\""))
        .collect();
    for e in &expected {
        f.check(lines.contains(e), || format!("kubeadm init phase kubeconfig all did not say {e:?}:\n{}", r.stdout));
    }
    let other: Vec<&String> = lines.iter().filter(|l| !expected.contains(l) && !l.starts_with("Using kubeconfig folder")).collect();
    f.check(other.is_empty(), || format!("kubeadm init phase kubeconfig all did more than use the existing files: {other:?}"));
    let (changed, added) = changes(&before, &file_bytes(&root));
    f.check(changed.is_empty() && added.is_empty(), || {
        format!("kubeadm init phase kubeconfig all changed {changed:?} and wrote {added:?}")
    });
    f.note("kubeadm init phase kubeconfig all: the 5 kubeconfigs \"Using existing\", the tree byte-identical");

    // control-plane and etcd: the static pod manifests, the kube-apiserver patch applied.
    let (r, commands) = kubeadm_static_pods(&ns, &b.tools, &root, &config, &mut f);
    f.check(
        said(&r, "patches").iter().any(|l| l == "Applied patch of type \"application/json-patch+json\" to target \"kube-apiserver\""),
        || format!("kubeadm did not apply the bundle's kube-apiserver patch:\n{}", r.stdout),
    );
    let (changed, added) = changes(&before, &file_bytes(&root));
    f.check(changed.is_empty(), || format!("kubeadm init phase control-plane/etcd changed {changed:?}"));
    let manifests: Vec<String> = STATIC_PODS.iter().map(|p| format!("etc/kubernetes/manifests/{p}.yaml")).collect();
    let mut sorted = manifests.clone();
    sorted.sort();
    f.eq("the files kubeadm init phase control-plane all + etcd local wrote", &sorted, &added);

    let api = &commands[1].1;
    let encryption = format!("--encryption-provider-config=/{}", b.cp.rel("encryption-config"));
    f.check(api.contains(&encryption), || format!("the kube-apiserver static pod has no {encryption} (the patch): {api:?}"));
    f.note(format!(
        "kubeadm init phase control-plane all + etcd local: {} static pods, kube-apiserver patched ({encryption})",
        commands.len()
    ));
    // Debian's etcd is 3.4.23, kubeadm's manifest is for etcd 3.5.24: every flag it passes
    // (--experimental-initial-corrupt-check, --experimental-watch-progress-notify-interval,
    // --listen-metrics-urls, --snapshot-count, ...) exists in 3.4 too, so none is dropped or
    // changed (etcd refuses an unknown flag, and the boot would fail naming it).
    f.note(format!("kubeadm: phases done at {:.1?}", started.elapsed()));

    let cp = b.boot_static_pods(ns, boot_started, commands);
    f.note(format!("kubeadm: control plane ready in {:.1?} (kubeadm's phases included)", cp.boot_time));
    check_control_plane(&b, &cp, &mut f);

    // The patch at work: a Secret is stored encrypted (aescbc) in etcd.
    let r =
        cp.kubectl(&cp.super_admin, &["-n", "default", "create", "secret", "generic", "kb-enc", "--from-literal=k=kb-plaintext-marker"]);
    if f.check(r.ok(), || format!("create secret: {}", r.describe())) {
        let pki = root.join("etc/kubernetes/pki/etcd");
        let mut c = cp.ns.command("etcdctl");
        c.args(["--endpoints=https://127.0.0.1:2379", "get", "/registry/secrets/default/kb-enc", "--print-value-only"])
            .arg(format!("--cacert={}", pki.join("ca.crt").display()))
            .arg(format!("--cert={}", pki.join("healthcheck-client.crt").display()))
            .arg(format!("--key={}", pki.join("healthcheck-client.key").display()))
            .env("ETCDCTL_API", "3");
        let r = run_cmd(c);
        f.check(r.ok() && r.stdout.starts_with("k8s:enc:aescbc:v1:") && !r.stdout.contains("kb-plaintext-marker"), || {
            format!("the Secret is not encrypted with aescbc in etcd: {}", truncate(&r.describe(), 600))
        });
    }

    // The worker.
    rebase_references(&b.worker_root);
    check_kubeconfigs(&cp, &b.worker, &b.worker_root, &mut f);
    f.note(format!("kubeadm: control-plane checks done at {:.1?}", started.elapsed()));
    let argv = kubeadm_kubelet_argv(&b);
    for (flag_name, artifact) in [("config", "kubelet-config"), ("bootstrap-kubeconfig", "bootstrap-kubelet.conf")] {
        f.eq(
            &format!("kubeadm's kubelet --{flag_name} is the planned {artifact}"),
            format!("/{}", b.worker.rel(artifact)).as_str(),
            flag(&argv, flag_name).unwrap_or_default(),
        );
    }
    check_kubelet_bootstrap(&b, &cp, &argv, &mut f);
    f.note(format!("kubeadm: kubelet TLS bootstrap done at {:.1?}", started.elapsed()));
    f.note(format!("kubeadm: {:.1?} in all", started.elapsed()));
    drop(cp);
    f.finish(TEST);
}
