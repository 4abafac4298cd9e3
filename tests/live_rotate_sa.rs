//! `kubebundle rotate sa`, live: a hardway control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler from its own units, the real v1.32 binaries, see
//! tests/live/mod.rs) whose service-account signing key is rotated while it runs, each phase
//! rolled out as the command prints it (the changed files extracted from the control plane's new
//! tarball, `rm -f` of the files that left it, the components restarted from their units in the
//! printed order). A token issued before `start` authenticates through `start` and `switch` and is
//! refused after `finish`; a token issued after `switch` is signed by the new key (its JWT header's
//! `kid` is kube-apiserver's key id of the new public key, the old one's before) and
//! authenticates after `finish`.
//!
//! Needs K8S_BIN (`../shared/k8s/install.sh target/k8s`), etcd, root. Under CI=true a missing one
//! fails the test with how to install it.

mod common;
mod live;

use base64::Engine;
use common::*;
use live::*;

/// kube-apiserver's key id of a public key: base64url (no padding) of the SHA-256 of its DER.
fn kid_of(pub_pem: &str) -> String {
    let der = pem_body(pub_pem);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).expect("PEM base64")
}

/// The `kid` of a JWT's header.
fn kid(token: &str) -> String {
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap_or_default()).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&header).unwrap_or_default();
    v["kid"].as_str().unwrap_or_default().to_string()
}

fn token(cp: &ControlPlane, f: &mut Failures) -> String {
    let r = cp.kubectl(&cp.super_admin, &["-n", "default", "create", "token", "kb-rot"]);
    f.check(r.ok() && !r.stdout.trim().is_empty(), || format!("create token: {}", r.describe()));
    r.stdout.trim().to_string()
}

fn authenticates(cp: &ControlPlane, token: &str) -> Result<String, String> {
    cp.whoami(&["--server", &cp.server, "--certificate-authority", cp.ca.to_str().unwrap(), "--token", token]).map(|(user, _)| user)
}

#[test]
fn service_account_key_rotated_on_a_running_control_plane() {
    let started = std::time::Instant::now();
    let Some(b) = Bundle::generate("hardway", "liverotsa", ("cp1", "127.0.16.1"), ("worker1", "127.0.16.2")) else { return };
    let mut f = Failures::new();
    let mut cp = ControlPlane::boot(&b.cp_root, &b.tools, &b.cp.rel("super-admin.conf"), &b.cp.rel("ca.crt"), &b.scratch);
    f.note(format!("control plane ready in {:.1?}", cp.boot_time));
    f.check(cp.lease_holder("kube-controller-manager", std::time::Duration::from_secs(60)).is_some(), || cp.logs());
    let sa = cp.kubectl(&cp.super_admin, &["-n", "default", "create", "serviceaccount", "kb-rot"]);
    f.check(sa.ok(), || sa.describe());
    let state = b.cluster.join("state/pki");
    let old_kid = kid_of(&std::fs::read_to_string(state.join("sa.pub")).unwrap());
    let user = "system:serviceaccount:default:kb-rot".to_string();
    let before = token(&cp, &mut f);
    f.eq("the token issued before start is signed by the old key", &old_kid, &kid(&before));

    let r = rotate_and_roll_out(&b, &mut cp, "sa", "start", &[], &mut f);
    let new_kid = kid_of(&std::fs::read_to_string(b.cp_root.join(b.cp.rel("sa.pub").replace("sa.pub", "sa-next.pub"))).unwrap());
    f.check(new_kid != old_kid, || "the next key is the old one".into());
    f.check(r.stdout.contains("2. restart kube-apiserver"), || r.stdout.clone());
    f.eq("after start: the token issued before", &Ok(user.clone()), &authenticates(&cp, &before));
    let mid = token(&cp, &mut f);
    f.eq("after start the old key still signs", &old_kid, &kid(&mid));

    let r = rotate_and_roll_out(&b, &mut cp, "sa", "switch", &[], &mut f);
    f.check(r.stdout.contains("restart kube-controller-manager") && r.stdout.contains("about 1 hour"), || r.stdout.clone());
    f.eq("after switch: the token issued before start", &Ok(user.clone()), &authenticates(&cp, &before));
    let after = token(&cp, &mut f);
    f.eq("the token issued after switch is signed by the new key", &new_kid, &kid(&after));
    f.eq("after switch: the new token", &Ok(user.clone()), &authenticates(&cp, &after));
    f.eq(
        "sa.pub on the control plane is the new key",
        &new_kid,
        &kid_of(&std::fs::read_to_string(b.cp_root.join(b.cp.rel("sa.pub"))).unwrap()),
    );

    rotate_and_roll_out(&b, &mut cp, "sa", "finish", &[], &mut f);
    f.check(authenticates(&cp, &before).is_err(), || "after finish the token signed by the old key still authenticates".into());
    f.check(authenticates(&cp, &mid).is_err(), || "after finish a token signed by the old key after start still authenticates".into());
    f.eq("after finish: the token issued after switch", &Ok(user.clone()), &authenticates(&cp, &after));
    let unit = std::fs::read_to_string(b.cp_root.join(b.cp.rel("kube-apiserver.service"))).unwrap();
    f.eq("after finish: one --service-account-key-file", &1, &unit.matches("--service-account-key-file=").count());
    f.note(format!("{:.1?} in all", started.elapsed()));
    f.finish("service_account_key_rotated_on_a_running_control_plane");
}
