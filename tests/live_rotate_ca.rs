//! `kubebundle rotate ca ca`, live: a hardway control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler from its own units, the real v1.32 binaries, see
//! tests/live/mod.rs) whose cluster CA is rotated while it runs, each phase rolled out as the
//! command prints it (the changed files extracted from the control plane's new tarball, `rm -f`
//! of the files that left it, the components restarted in the printed order). The admin
//! kubeconfig of the phase before keeps working through start, switch and finish (the
//! pre-start one through start: its CA data holds only the old CA, which no longer signs the API
//! server after switch); a client certificate the old CA signed works until finish and is
//! refused after; after switch a CSR approved and signed by the controller-manager
//! (kubernetes.io/kube-apiserver-client) is signed by the new CA and not the old one.
//!
//! Needs K8S_BIN (`../shared/k8s/install.sh target/k8s`), etcd, root. Under CI=true a missing one
//! fails the test with how to install it.

mod common;
mod live;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use common::*;
use live::*;

/// A copy of the control plane's admin kubeconfig as it is now.
fn keep_admin(b: &Bundle, cp: &ControlPlane, name: &str) -> PathBuf {
    let to = cp.scratch.join(name);
    std::fs::copy(cp.root.join(b.cp.rel("admin.conf")), &to).unwrap();
    to
}

fn works(cp: &ControlPlane, kubeconfig: &Path) -> Result<(), String> {
    // Authentication only (the bundle's RBAC manifests are not applied here): kubectl auth whoami.
    let r = cp.kubectl(kubeconfig, &["auth", "whoami", "-o", "name"]);
    if r.ok() {
        Ok(())
    } else {
        Err(r.describe())
    }
}

/// A CSR for the kube-apiserver-client signer, approved; the certificate the controller-manager signed.
fn signed_by_controller_manager(cp: &ControlPlane, f: &mut Failures) -> Option<String> {
    let dir = &cp.scratch;
    let key = dir.join("csr.key");
    let csr = dir.join("csr.pem");
    let r = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
        "-subj",
        "/CN=kb-rotca-user",
    ]);
    f.check(r.ok(), || r.describe());
    let request = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&csr).ok()?);
    let manifest = dir.join("csr.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: kb-rotca\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client\n  usages: [client auth]\n  expirationSeconds: 3600\n"
        ),
    )
    .unwrap();
    let r = cp.kubectl(&cp.super_admin, &["create", "-f", manifest.to_str().unwrap()]);
    f.check(r.ok(), || r.describe());
    let r = cp.kubectl(&cp.super_admin, &["certificate", "approve", "kb-rotca"]);
    f.check(r.ok(), || r.describe());
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let r = cp.kubectl(&cp.super_admin, &["get", "csr", "kb-rotca", "-o", "jsonpath={.status.certificate}"]);
        if r.ok() && !r.stdout.trim().is_empty() {
            let pem = base64::engine::general_purpose::STANDARD.decode(r.stdout.trim()).ok()?;
            return String::from_utf8(pem).ok();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    f.check(false, || format!("the controller-manager never signed the CSR:\n{}", cp.logs()));
    None
}

fn verifies(dir: &Path, ca_pem: &str, leaf_pem: &str) -> bool {
    let ca = dir.join("check-ca.pem");
    let leaf = dir.join("check-leaf.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&leaf, leaf_pem).unwrap();
    openssl(&["verify", "-no-CApath", "-no-CAstore", "-CAfile", ca.to_str().unwrap(), leaf.to_str().unwrap()]).ok()
}

#[test]
fn cluster_ca_rotated_on_a_running_control_plane() {
    let started = std::time::Instant::now();
    let Some(b) = Bundle::generate("hardway", "liverotca", ("cp1", "127.0.17.1"), ("worker1", "127.0.17.2")) else { return };
    let mut f = Failures::new();
    let mut cp = ControlPlane::boot(&b.cp_root, &b.tools, &b.cp.rel("super-admin.conf"), &b.cp.rel("ca.crt"), &b.scratch);
    f.note(format!("control plane ready in {:.1?}", cp.boot_time));
    f.check(cp.lease_holder("kube-controller-manager", Duration::from_secs(60)).is_some(), || cp.logs());
    let state = b.cluster.join("state/pki");
    let old_ca = std::fs::read_to_string(state.join("ca.crt")).unwrap();
    let admin0 = keep_admin(&b, &cp, "admin-0.conf");
    f.check(works(&cp, &admin0).is_ok(), || "before start: admin.conf".into());

    let r = rotate_and_roll_out(&b, &mut cp, "ca ca", "start", &[], &mut f);
    f.check(r.stdout.contains("2. restart kube-controller-manager"), || r.stdout.clone());
    let new_ca = std::fs::read_to_string(state.join("ca-next.crt")).unwrap();
    f.eq("after start: the pre-start admin.conf", &Ok(()), &works(&cp, &admin0));
    let admin1 = keep_admin(&b, &cp, "admin-1.conf");
    f.eq("after start: the phase's admin.conf", &Ok(()), &works(&cp, &admin1));

    let r = rotate_and_roll_out(&b, &mut cp, "ca ca", "switch", &[], &mut f);
    f.check(r.stdout.contains("now signs"), || r.stdout.clone());
    f.eq("after switch: the admin.conf of start (a client certificate of the old CA)", &Ok(()), &works(&cp, &admin1));
    let admin2 = keep_admin(&b, &cp, "admin-2.conf");
    f.eq("after switch: the phase's admin.conf", &Ok(()), &works(&cp, &admin2));
    if let Some(cert) = signed_by_controller_manager(&cp, &mut f) {
        f.check(verifies(&cp.scratch, &new_ca, &cert), || {
            format!("after switch the controller-manager did not sign with the new CA:\n{cert}")
        });
        f.check(!verifies(&cp.scratch, &old_ca, &cert), || "after switch the controller-manager signed with the old CA".into());
    }

    rotate_and_roll_out(&b, &mut cp, "ca ca", "finish", &[], &mut f);
    f.eq("after finish: the admin.conf of switch", &Ok(()), &works(&cp, &admin2));
    f.check(works(&cp, &admin1).is_err(), || "after finish a client certificate of the old CA still works".into());
    let ca = std::fs::read_to_string(cp.root.join(b.cp.rel("ca.crt"))).unwrap();
    f.eq("after finish: ca.crt is the new CA alone", &new_ca.trim(), &ca.trim());
    f.note(format!("{:.1?} in all", started.elapsed()));
    f.finish("cluster_ca_rotated_on_a_running_control_plane");
}
