//! The hardway layout, live: a bundle of one control plane (+ etcd) and one worker on 127.0.x.y,
//! renewed (every CA from its key and every certificate, in the bundle and again on the control
//! plane's extracted root as on a live host), then etcd, kube-apiserver, kube-controller-manager
//! and kube-scheduler started from the root's own units with the real v1.32 binaries (what is
//! changed for a test, and why: tests/live/mod.rs). Against it: /readyz, the leader leases, a
//! ServiceAccount token, the bundle's manifests/ applied with super-admin.conf, every kubeconfig
//! of both trees authenticating as its user; the worker's kubelet from its unit completing TLS
//! bootstrap; kube-proxy from the worker's unit (its EndpointSlice watch programming iptables,
//! or its identity where it cannot run).
//!
//! Needs K8S_BIN (`../shared/k8s/install.sh target/k8s`), etcd, iptables, root. Under CI=true a
//! missing one fails the test with how to install it.

mod common;
mod live;

#[test]
fn hardway_renewed_control_plane_kube_proxy_and_kubelet_from_their_units() {
    live::layout(
        "hardway",
        "livehw",
        ("cp1", "127.0.13.1"),
        ("worker1", "127.0.13.2"),
        "hardway_renewed_control_plane_kube_proxy_and_kubelet_from_their_units",
    );
}
