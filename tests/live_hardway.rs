//! The hardway layout, live: a bundle of one control plane (+ etcd) and one worker on 127.0.x.y,
//! the control plane's tarball extracted into a temporary root and etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler started from its own units with the real v1.32
//! binaries (what is changed for a test, and why: tests/live/mod.rs). Against it: /readyz, the
//! leader leases, a ServiceAccount token, the bundle's manifests/ applied with super-admin.conf,
//! every kubeconfig of the tree authenticating as its user; kube-proxy from the worker's unit
//! (its EndpointSlice watch programming iptables, or its identity where it cannot run); the
//! worker's kubelet from its unit completing TLS bootstrap.
//!
//! Needs K8S_BIN (`../shared/k8s/install.sh target/k8s`), etcd, iptables, root. Under CI=true a
//! missing one fails the test with how to install it.

mod common;
mod live;

use std::path::Path;
use std::time::Instant;

use common::*;

const PROFILE: &str = "hardway";
const CLUSTER: &str = "livehw";
const CP: (&str, &str) = ("cp1", "127.0.13.1");
const WORKER: (&str, &str) = ("worker1", "127.0.13.2");

/// Boots the control plane of an extracted hardway control-plane root from its own units (a
/// renewed root boots the same way).
fn boot(root: &Path, b: &live::Bundle) -> live::ControlPlane {
    live::ControlPlane::boot(root, &b.tools, &b.cp.rel("super-admin.conf"), &b.cp.rel("ca.crt"), &b.scratch)
}

#[test]
fn hardway_control_plane_kube_proxy_and_kubelet_from_their_units() {
    let started = Instant::now();
    let Some(b) = live::Bundle::generate(PROFILE, CLUSTER, CP, WORKER) else { return };
    let mut f = Failures::new();
    // b.cp_root and b.worker_root are the tarballs as extracted; a tree renewed in place
    // (`kubebundle certs renew all|ca --dir <root>`) boots the same way from here on.
    let cp = boot(&b.cp_root, &b);
    f.note(format!("{PROFILE}: control plane ready in {:.1?}", cp.boot_time));
    live::check_control_plane(&b, &cp, &mut f);
    // The worker's files name each other by absolute path too.
    live::rebase_references(&b.worker_root);
    live::check_kubeconfigs(&cp, &b.worker, &b.worker_root, &mut f);
    // The kubelet first: it registers the worker's Node, which kube-proxy reads its address from.
    f.note(format!("{PROFILE}: control-plane checks done at {:.1?}", started.elapsed()));
    live::check_kubelet_bootstrap(&b, &cp, &mut f);
    f.note(format!("{PROFILE}: kubelet TLS bootstrap done at {:.1?}", started.elapsed()));
    let proxy = live::check_kube_proxy(&b, &cp, &mut f);
    drop(proxy);
    f.note(format!("{PROFILE}: {:.1?} in all", started.elapsed()));
    f.finish("hardway_control_plane_kube_proxy_and_kubelet_from_their_units");
}
