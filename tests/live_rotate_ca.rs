//! `kubebundle rotate ca ca` and `rotate ca front-proxy-ca`, live: a hardway control plane (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler from its own units, the real v1.32
//! binaries, see tests/live/mod.rs) and its worker's kubelet, whose cluster CA and then
//! front-proxy CA are rotated while it runs, each phase rolled out as the command prints it (the
//! changed files extracted from each node's new tarball into its root, `rm -f` of the files that
//! left it, the printed `sed` on the kubeconfig the worker's kubelet wrote, the components
//! restarted in the printed order).
//!
//! The cluster CA: the admin kubeconfig of the phase before keeps working through start, switch
//! and finish (the pre-start one through start: its CA data holds only the old CA, which no longer
//! signs the API server after switch); a client certificate the old CA signed works until finish
//! and is refused after; after switch a CSR approved and signed by the controller-manager
//! (kubernetes.io/kube-apiserver-client) is signed by the new CA and not the old one. The worker's
//! kubelet bootstraps (bootstrap-token CSR, auto-approved through the bundle's RBAC) before start:
//! its kubeconfig and old-CA client certificate authenticate after start and after switch (with
//! the printed refresh of the kubeconfig's CA data; a copy left as the kubelet wrote it is refused
//! the API server's new certificate after switch, which is why the step is printed) and are
//! refused after finish. After switch a second kubelet bootstraps with the switch phase's
//! bootstrap-kubelet.conf: its client certificate verifies against the new CA and not the old
//! one, and its kubeconfig still works after finish.
//!
//! The front-proxy CA, on the same control plane: the apiserver's --requestheader-client-ca-file
//! (and the extension-apiserver-authentication ConfigMap the other components read) holds both CAs
//! after start and switch and the new one alone after finish; a request presenting the old
//! front-proxy-client certificate with `X-Remote-User` is taken for that user through start and
//! switch and not after finish; the one issued at switch (by the new CA) is taken after switch and
//! after finish.
//!
//! Needs K8S_BIN (`../shared/k8s/install.sh target/k8s`), etcd, curl, root. Under CI=true a
//! missing one fails the test with how to install it.

mod common;
mod live;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use common::corp;
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

/// The certificates (DER) of a PEM file in a root.
fn certs_in(root: &Path, rel: &str) -> Vec<Vec<u8>> {
    corp::pem_certs(&std::fs::read(root.join(rel.trim_start_matches('/'))).unwrap_or_default())
}

fn der(pem: &str) -> Vec<u8> {
    corp::pem_certs(pem.as_bytes()).into_iter().next().unwrap_or_default()
}

/// Which of `cas` (name, DER) each certificate is ("other" for none), sorted.
fn named(certs: &[Vec<u8>], cas: &[(&'static str, &Vec<u8>)]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> =
        certs.iter().map(|c| cas.iter().find(|(_, der)| *der == c).map(|(n, _)| *n).unwrap_or("other")).collect();
    names.sort();
    names
}

/// The CAs (named as `named` does) the API server publishes under `key` of
/// kube-system/extension-apiserver-authentication, once they are `expected` (the API server
/// writes the ConfigMap again shortly after it restarts or it is deleted), else after 20 s.
fn published_cas(cp: &ControlPlane, key: &str, cas: &[(&'static str, &Vec<u8>)], expected: &[&str]) -> Vec<&'static str> {
    let jsonpath = format!("jsonpath={{.data.{key}}}");
    let read = || {
        let args = ["-n", "kube-system", "get", "configmap", "extension-apiserver-authentication", "-o", jsonpath.as_str()];
        named(&corp::pem_certs(cp.kubectl(&cp.super_admin, &args).stdout.as_bytes()), cas)
    };
    wait_for(Duration::from_secs(20), || Some(read()).filter(|n| n == expected)).unwrap_or_else(read)
}

/// Who a kubelet's kubeconfig authenticates as.
fn kubelet_user(cp: &ControlPlane, kubeconfig: &Path) -> Result<String, String> {
    cp.whoami(&["--kubeconfig", kubeconfig.to_str().unwrap()]).map(|(user, _)| user)
}

fn verifies(dir: &Path, ca_pem: &str, leaf_pem: &str) -> bool {
    let ca = dir.join("check-ca.pem");
    let leaf = dir.join("check-leaf.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&leaf, leaf_pem).unwrap();
    openssl(&["verify", "-no-CApath", "-no-CAstore", "-CAfile", ca.to_str().unwrap(), leaf.to_str().unwrap()]).ok()
}

#[test]
fn cluster_and_front_proxy_cas_rotated_on_a_running_control_plane() {
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

    // The worker's kubelet joins by TLS bootstrap while the old CA signs: the bundle's manifests
    // (the bootstrap token, the join RBAC that auto-approves its CSR) applied first.
    if let Err(e) = cp.apply_manifests(&b.cluster.join("manifests")) {
        f.fail(format!("kubectl apply -f manifests/: {e}"));
    }
    rebase_references(&b.worker_root);
    let argv = unit_argv(&b.worker_root, "kubelet");
    let node_user = format!("system:node:{}", b.worker.name);
    let kubelet0 = kubelet_tls_bootstrap(&b, &cp, &argv, "/var/lib/kubelet", &mut f);
    // A copy of its kubeconfig as the kubelet wrote it, which the roll-out does not touch.
    let kubelet0_unrefreshed = cp.scratch.join("kubelet-0-as-written.conf");
    if let Some(k) = &kubelet0 {
        std::fs::copy(&k.kubeconfig, &kubelet0_unrefreshed).unwrap();
        f.check(verifies(&cp.scratch, &old_ca, &k.certificate), || "the kubelet's first certificate is not the old CA's".into());
    }

    let r = rotate_and_roll_out(&b, &mut cp, "ca ca", "start", &[], &mut f);
    f.check(r.stdout.contains("2. restart kube-controller-manager"), || r.stdout.clone());
    f.check(r.stdout.contains(&format!("{}: sed -i ", b.worker.name)), || {
        format!("start prints no refresh of the worker's kubelet kubeconfig:\n{}", r.stdout)
    });
    let new_ca = std::fs::read_to_string(state.join("ca-next.crt")).unwrap();
    f.eq("after start: the pre-start admin.conf", &Ok(()), &works(&cp, &admin0));
    let admin1 = keep_admin(&b, &cp, "admin-1.conf");
    f.eq("after start: the phase's admin.conf", &Ok(()), &works(&cp, &admin1));
    if let Some(k) = &kubelet0 {
        f.eq("after start: the kubelet's kubeconfig of before start", &Ok(node_user.clone()), &kubelet_user(&cp, &k.kubeconfig));
    }

    let r = rotate_and_roll_out(&b, &mut cp, "ca ca", "switch", &[], &mut f);
    f.check(r.stdout.contains("now signs"), || r.stdout.clone());
    f.eq("after switch: the admin.conf of start (a client certificate of the old CA)", &Ok(()), &works(&cp, &admin1));
    let admin2 = keep_admin(&b, &cp, "admin-2.conf");
    f.eq("after switch: the phase's admin.conf", &Ok(()), &works(&cp, &admin2));
    if let Some(k) = &kubelet0 {
        f.eq(
            "after switch: the kubelet's kubeconfig of before start (old-CA client certificate, CA data refreshed at start)",
            &Ok(node_user.clone()),
            &kubelet_user(&cp, &k.kubeconfig),
        );
        let unrefreshed = kubelet_user(&cp, &kubelet0_unrefreshed);
        f.check(unrefreshed.as_ref().is_err_and(|e| e.contains("certificate signed by unknown authority")), || {
            format!("after switch the kubelet's kubeconfig as written (the old CA alone) was not refused the new API server certificate: {unrefreshed:?}")
        });
    }
    if let Some(cert) = signed_by_controller_manager(&cp, &mut f) {
        f.check(verifies(&cp.scratch, &new_ca, &cert), || {
            format!("after switch the controller-manager did not sign with the new CA:\n{cert}")
        });
        f.check(!verifies(&cp.scratch, &old_ca, &cert), || "after switch the controller-manager signed with the old CA".into());
    }
    // A kubelet bootstrapping now, with the switch phase's bootstrap-kubelet.conf, in a state
    // directory of its own.
    let kubeconfig1 = "/var/lib/kubelet-switch/kubeconfig";
    let argv1: Vec<String> =
        argv.iter().map(|a| if a.starts_with("--kubeconfig=") { format!("--kubeconfig={kubeconfig1}") } else { a.clone() }).collect();
    let kubelet1 = kubelet_tls_bootstrap(&b, &cp, &argv1, "/var/lib/kubelet-switch", &mut f);
    if let Some(k) = &kubelet1 {
        f.check(verifies(&cp.scratch, &new_ca, &k.certificate), || {
            format!("after switch the kubelet's bootstrap-token CSR was not signed by the new CA:\n{}", k.certificate)
        });
        f.check(!verifies(&cp.scratch, &old_ca, &k.certificate), || "after switch the kubelet's CSR was signed by the old CA".into());
    }

    let r = rotate_and_roll_out(&b, &mut cp, "ca ca", "finish", &[], &mut f);
    f.check(r.stdout.contains(&format!("{}: sed -i ", b.worker.name)), || {
        format!("finish prints no refresh of the worker's kubelet kubeconfig:\n{}", r.stdout)
    });
    f.eq("after finish: the admin.conf of switch", &Ok(()), &works(&cp, &admin2));
    f.check(works(&cp, &admin1).is_err(), || "after finish a client certificate of the old CA still works".into());
    let ca = std::fs::read_to_string(cp.root.join(b.cp.rel("ca.crt"))).unwrap();
    f.eq("after finish: ca.crt is the new CA alone", &new_ca.trim(), &ca.trim());
    let cas = [("old", &der(&old_ca)), ("new", &der(&new_ca))];
    let published = published_cas(&cp, "client-ca-file", &cas, &["new"]);
    f.eq("after finish: the client CAs extension-apiserver-authentication publishes", &["new"][..], &published[..]);
    if let Some(k) = &kubelet0 {
        let r = kubelet_user(&cp, &k.kubeconfig);
        f.check(r.as_ref().is_err_and(|e| e.contains("Unauthorized")), || {
            format!("after finish the kubelet's client certificate of the old CA was not refused: {r:?}")
        });
    }
    if let Some(k) = &kubelet1 {
        f.eq("after finish: the kubelet's kubeconfig bootstrapped after switch", &Ok(node_user.clone()), &kubelet_user(&cp, &k.kubeconfig));
    }
    f.note(format!("cluster CA rotated at {:.1?}", started.elapsed()));

    // The front-proxy CA, proven by the apiserver's request-header authentication.
    let old_fp = der(&std::fs::read_to_string(state.join("front-proxy-ca.crt")).unwrap());
    let (fp_crt, fp_key) = (b.cp.rel("front-proxy-client.crt"), b.cp.rel("front-proxy-client.key"));
    let (old_crt, old_key) = (cp.scratch.join("front-proxy-client-old.crt"), cp.scratch.join("front-proxy-client-old.key"));
    std::fs::copy(cp.root.join(&fp_crt), &old_crt).unwrap();
    std::fs::copy(cp.root.join(&fp_key), &old_key).unwrap();
    let api = unit_argv(&cp.root, "kube-apiserver");
    let ca_file = flag(&api, "requestheader-client-ca-file").expect("kube-apiserver --requestheader-client-ca-file").to_string();
    let someone = Ok("someone".to_string());
    f.eq("before start: the front-proxy client certificate", &someone, &cp.requestheader_user(&old_crt, &old_key, "someone"));
    // The request-header CAs: the apiserver's file, and what it publishes for the other components.
    let mut new_fp = Vec::new();
    for step in ["start", "switch", "finish"] {
        rotate_and_roll_out(&b, &mut cp, "ca front-proxy-ca", step, &[], &mut f);
        if step == "start" {
            new_fp = der(&std::fs::read_to_string(state.join("front-proxy-ca-next.crt")).unwrap());
        }
        let cas = [("old", &old_fp), ("new", &new_fp)];
        let expected: &[&str] = if step == "finish" { &["new"] } else { &["new", "old"] };
        let file = named(&certs_in(&cp.root, &ca_file), &cas);
        f.eq(&format!("after front-proxy-ca {step}: the front-proxy CAs of --requestheader-client-ca-file"), expected, &file[..]);
        let published = published_cas(&cp, "requestheader-client-ca-file", &cas, expected);
        f.eq(
            &format!("after front-proxy-ca {step}: the front-proxy CAs extension-apiserver-authentication publishes"),
            expected,
            &published[..],
        );
        let old = cp.requestheader_user(&old_crt, &old_key, "someone");
        if step == "finish" {
            f.check(old != someone, || {
                "after front-proxy-ca finish the old front-proxy client certificate is still taken for its X-Remote-User".into()
            });
            f.note(format!("after front-proxy-ca finish the old front-proxy client certificate's request: {old:?}"));
        } else {
            f.eq(&format!("after front-proxy-ca {step}: the old front-proxy client certificate"), &someone, &old);
        }
        if step != "start" {
            let current = cp.root.join(&fp_crt);
            let pem = std::fs::read_to_string(&current).unwrap_or_default();
            let fp_pem = std::fs::read_to_string(state.join("front-proxy-ca.crt")).unwrap();
            f.check(der(&fp_pem) == new_fp && verifies(&cp.scratch, &fp_pem, &pem), || {
                format!("after front-proxy-ca {step}: {} is not signed by the new front-proxy CA", current.display())
            });
            let new = cp.requestheader_user(Path::new(&fp_crt), Path::new(&fp_key), "someone");
            f.eq(&format!("after front-proxy-ca {step}: the new front-proxy client certificate"), &someone, &new);
        }
    }
    f.note(format!("{:.1?} in all", started.elapsed()));
    f.finish("cluster_and_front_proxy_cas_rotated_on_a_running_control_plane");
}
