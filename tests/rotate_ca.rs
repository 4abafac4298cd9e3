//! `kubebundle rotate ca <ca|front-proxy-ca|etcd-ca> start|switch|finish|abort`: each phase's
//! files, by DER — which trust anchors hold which CAs (CA files, kubeconfigs' CA data,
//! cluster-info, the controller-manager's single signing certificate), which CA signed every
//! leaf (`openssl verify` against the node's own trust files and against each CA alone),
//! join.txt's pins; `generate --check` up to date and `verify` 0 errors after each phase; the
//! refusals (out of order, a second start, abort after switch, an external CA) exit 1 and write
//! nothing; abort after start gives back the pre-start bundle byte for byte, the new CA archived.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use common::rotation::RotationWork;
use common::*;

const NOW: &str = "2026-01-01T00:00:00Z";

fn sha256(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn digests(dir: &Path) -> BTreeMap<String, String> {
    file_bytes(dir).into_iter().filter(|(p, _)| !p.contains(".lock")).map(|(p, b)| (p, sha256(&b))).collect()
}

/// The DER of every certificate in a PEM text, in order.
fn ders(pem_text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text).unwrap_or_default().into_iter().filter(|b| b.tag() == "CERTIFICATE").map(|b| b.into_contents()).collect()
}

/// `sha256:<hex>` of a certificate's public key (kubeadm's discovery hash).
fn pin(der: &[u8]) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    format!("sha256:{}", sha256(c.public_key().raw))
}

/// The certificate-authority-data of a kubeconfig, and its embedded client certificate (PEM).
fn kubeconfig_parts(text: &str) -> (String, String) {
    let v: serde_json::Value = serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let b64 = |s: &serde_json::Value| {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s.as_str().unwrap_or_default()).unwrap_or_default())
            .unwrap_or_default()
    };
    (b64(&v["clusters"][0]["cluster"]["certificate-authority-data"]), b64(&v["users"][0]["user"]["client-certificate-data"]))
}

/// `openssl verify -CAfile ca leaf` (no other trust).
fn verifies(dir: &Path, ca_pem: &str, leaf_pem: &str) -> bool {
    let ca = dir.join("ca.pem");
    let leaf = dir.join("leaf.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&leaf, leaf_pem).unwrap();
    openssl(&["verify", "-no-CApath", "-no-CAstore", "-CAfile", ca.to_str().unwrap(), leaf.to_str().unwrap()]).ok()
}

/// A phase: its name, the CA files' certificates in order, the CA that signs every leaf, and the
/// controller-manager's signing certificate (None: ca.crt itself).
type Phase<'a> = (&'a str, Vec<Vec<u8>>, &'a Vec<u8>, Option<&'a Vec<u8>>);

fn pem_of(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// The cluster CA through start, switch and finish on a hardway bundle: every anchor, every leaf.
#[test]
fn cluster_ca_phases_trust_both_then_sign_with_the_new_then_drop_the_old() {
    let w = RotationWork::new("rotca-hw", "profile: hardway\n");
    let scratch = w.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut f = Failures::new();
    let old = ders(&w.state("pki/ca.crt")).remove(0);
    let old_key = w.state("pki/ca.key");

    let r = w.rotate(&["ca", "ca", "start"]);
    f.check(r.ok() && r.stdout.contains("rotate ca ca start: made the new ca"), || r.describe());
    let new = ders(&w.state("pki/ca-next.crt")).first().cloned().unwrap_or_default();
    f.check(!new.is_empty() && new != old, || "start: no pki/ca-next.crt".into());
    f.check(w.state("manifest.yaml").contains("id: ca-next"), || w.state("manifest.yaml"));
    // The restarts, in order, with the next command.
    let at = |s: &str| r.stdout.find(s).unwrap_or(usize::MAX);
    f.check(
        at("restart kube-controller-manager") < at("restart kube-apiserver") && at("restart kube-apiserver") < at("restart kubelet"),
        || r.stdout.clone(),
    );
    f.check(r.stdout.contains("kubebundle rotate ca ca switch"), || r.stdout.clone());

    // (phase, the CA files' certificates in order, the CA that signs every leaf, the signing file)
    let phases: [Phase; 3] = [
        ("start", vec![old.clone(), new.clone()], &old, Some(&old)),
        ("switch", vec![new.clone(), old.clone()], &new, Some(&new)),
        ("finish", vec![new.clone()], &new, None),
    ];
    for (phase, trust, signer, signing) in phases {
        if phase != "start" {
            let r = w.rotate(&["ca", "ca", phase]);
            f.check(r.ok(), || format!("{phase}: {}", r.describe()));
        }
        let other = if signer == &old { &new } else { &old };
        for node in ["cp1", "cp2", "w1"] {
            let ca = w.node_file(node, "etc/k8s/shared/ca.crt").unwrap_or_default();
            f.eq(&format!("{phase}: {node}'s ca.crt by DER"), &trust, &ders(&ca));
            let files = w.node_files(node);
            for kc in files.iter().filter(|p| p.ends_with("kubeconfig") || p.ends_with(".conf")) {
                let (ca_data, client) = kubeconfig_parts(&w.node_file(node, kc).unwrap_or_default());
                f.eq(&format!("{phase}: {node}:{kc} certificate-authority-data"), &trust, &ders(&ca_data));
                if !client.is_empty() {
                    f.check(verifies(&scratch, &pem_of(signer), &client), || format!("{phase}: {node}:{kc}'s client certificate"));
                    f.check(!verifies(&scratch, &pem_of(other), &client), || format!("{phase}: {node}:{kc} verifies with the other CA"));
                }
            }
            // Every leaf verifies against the node's own trust files.
            let cas: String = files
                .iter()
                .filter(|p| p.ends_with("ca.crt") || p.ends_with("etcd-ca.crt") || p.ends_with("front-proxy-ca.crt"))
                .map(|p| w.node_file(node, p).unwrap_or_default())
                .collect();
            for leaf in files.iter().filter(|p| p.ends_with(".crt") && !p.contains("ca.crt") && !p.ends_with("/certs/ca.crt")) {
                let pem = w.node_file(node, leaf).unwrap_or_default();
                f.check(verifies(&scratch, &cas, &pem), || format!("{phase}: {node}:{leaf} against the node's trust files"));
            }
            for leaf in ["etc/k8s/kube-apiserver/certs/apiserver.crt", "etc/k8s/kubelet/certs/kubelet.crt"] {
                let Some(pem) = w.node_file(node, leaf) else { continue };
                f.check(verifies(&scratch, &pem_of(signer), &pem), || format!("{phase}: {node}:{leaf} not signed by the phase's CA"));
            }
        }
        // The controller-manager's signing certificate: one certificate, the CA that signs.
        let unit = w.node_file("cp1", "etc/systemd/system/kube-controller-manager.service").unwrap_or_default();
        let signing_file = w.node_file("cp1", "etc/k8s/kube-controller-manager/certs/ca.crt");
        match signing {
            Some(s) => {
                f.eq(&format!("{phase}: cluster-signing-ca.crt"), &vec![s.clone()], &ders(&signing_file.unwrap_or_default()));
                f.check(unit.contains("--cluster-signing-cert-file=/etc/k8s/kube-controller-manager/certs/ca.crt"), || unit.clone());
            }
            None => {
                f.check(signing_file.is_none(), || format!("{phase}: the signing file is still shipped"));
                f.check(unit.contains("--cluster-signing-cert-file=/etc/k8s/shared/ca.crt"), || unit.clone());
            }
        }
        // join.txt pins every trusted CA; cluster-info and discovery.conf hold the trust bundle.
        let join = std::fs::read_to_string(w.bundle().join("join.txt")).unwrap();
        let line = join.lines().find(|l| l.starts_with("kubeadm join") && l.contains("--token")).unwrap_or_default().to_string();
        let pins: Vec<String> =
            line.split(" --discovery-token-ca-cert-hash ").skip(1).map(|s| s.split(' ').next().unwrap().to_string()).collect();
        f.eq(&format!("{phase}: join.txt's pins"), &trust.iter().map(|d| pin(d)).collect::<Vec<_>>(), &pins);
        let info: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(w.bundle().join("manifests/cluster-info.yaml")).unwrap()).unwrap();
        let (info_ca, _) = kubeconfig_parts(info["data"]["kubeconfig"].as_str().unwrap_or_default());
        f.eq(&format!("{phase}: cluster-info's CA data"), &trust, &ders(&info_ca));
        let (disc_ca, _) = kubeconfig_parts(&std::fs::read_to_string(w.bundle().join("discovery.conf")).unwrap());
        f.eq(&format!("{phase}: discovery.conf's CA data"), &trust, &ders(&disc_ca));
        w.up_to_date(&mut f, phase);
    }
    // The old key and certificate are archived beside the bundle, never deleted.
    let archived = std::fs::read_dir(w.dir.join("out")).unwrap().flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with("kubebundle-backup-")
            && file_bytes(&e.path()).values().any(|b| String::from_utf8_lossy(b) == old_key)
    });
    f.check(archived, || "the old ca.key is in no backup".into());
    f.check(!w.bundle().join("state/pki/ca-previous.crt").exists(), || "finish left ca-previous.crt".into());
    f.check(w.state("rotations.yaml").contains("phase: finished"), || w.state("rotations.yaml"));
    f.finish("cluster_ca_phases_trust_both_then_sign_with_the_new_then_drop_the_old");
}

/// The roll-out steps a running cluster needs beyond the files: the kubeconfig a worker's kubelet
/// wrote at TLS bootstrap gets the node's ca.crt at start, finish and abort of the cluster CA
/// (before the kubelets restart), and the ConfigMap the API servers publish their client and
/// request-header CAs in is made again once a CA left the trust (finish, abort) of the cluster CA
/// and the front-proxy CA; the etcd CA needs neither. Both layouts' paths.
#[test]
fn the_roll_out_refreshes_bootstrapped_kubeconfigs_and_the_published_cas() {
    let mut f = Failures::new();
    let delete = "-n kube-system delete configmap extension-apiserver-authentication`";
    for (profile, kubeconfig, ca, admin) in [
        ("hardway", "/etc/k8s/kubelet/kubeconfig", "/etc/k8s/shared/ca.crt", "/etc/k8s/shared/admin.conf"),
        ("kubeadm", "/etc/kubernetes/kubelet.conf", "/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/admin.conf"),
    ] {
        let w = RotationWork::new(&format!("rotca-steps-{profile}"), &format!("profile: {profile}\n"));
        let sed = format!("     w1: sed -i \"s|^\\( *certificate-authority-data:\\).*|\\1 $(base64 -w0 {ca})|\" {kubeconfig}\n");
        let delete = format!("`kubectl --kubeconfig {admin} {delete}");
        // (material, step, the kubelets' kubeconfigs refreshed, the ConfigMap made again)
        let steps = [
            ("ca", "start", true, false),
            ("ca", "switch", false, false),
            ("ca", "finish", true, true),
            ("front-proxy-ca", "start", false, false),
            ("front-proxy-ca", "abort", false, true),
            ("etcd-ca", "start", false, false),
            ("etcd-ca", "switch", false, false),
            ("etcd-ca", "finish", false, false),
        ];
        for (ca, step, refresh, republish) in steps {
            let r = w.rotate(&["ca", ca, step]);
            let l = format!("{profile}: rotate ca {ca} {step}");
            f.check(r.ok(), || format!("{l}: {}", r.describe()));
            f.eq(&format!("{l}: prints the refresh of w1's kubelet kubeconfig"), &refresh, &r.stdout.contains(&sed));
            f.check(!r.stdout.contains(": sed -i") || r.stdout.matches(": sed -i").count() == 1, || {
                format!("{l}: a refresh for a node that does not bootstrap (the control planes ship kubelet.conf):\n{}", r.stdout)
            });
            f.eq(&format!("{l}: prints the deletion of extension-apiserver-authentication"), &republish, &r.stdout.contains(&delete));
            let at = |s: &str| r.stdout.find(s).unwrap_or(usize::MAX);
            if refresh {
                f.check(at(&sed) < at("then on every other node: `systemctl restart kubelet`"), || {
                    format!("{l}: the refresh comes after the kubelets restart:\n{}", r.stdout)
                });
            }
            if republish {
                let last_restart = r.stdout.rfind("restart kube-apiserver on each control plane").unwrap_or(usize::MAX);
                f.check(last_restart < at(&delete), || {
                    format!("{l}: the ConfigMap is deleted before the API servers restart:\n{}", r.stdout)
                });
            }
            if step == "start" {
                f.eq(&format!("{l}: says join.txt pins both"), &(ca == "ca"), &r.stdout.contains("join.txt pins both"));
            }
        }
    }
    f.finish("the_roll_out_refreshes_bootstrapped_kubeconfigs_and_the_published_cas");
}

/// Refusals exit 1 naming the phase and the next command, and write nothing.
#[test]
fn phases_out_of_order_a_second_start_and_abort_after_switch_are_refused() {
    let w = RotationWork::new("rotca-refuse", "profile: hardway\n");
    let mut f = Failures::new();
    let refuse = |f: &mut Failures, ca: &str, step: &str, want: &[&str]| {
        let before = digests(&w.dir.join("out"));
        let r = w.rotate(&["ca", ca, step]);
        f.check(r.code == Some(1) && want.iter().all(|s| r.stderr.contains(s)), || format!("{ca} {step}: {}", r.describe()));
        f.eq(&format!("{ca} {step}: files after the refusal"), &before, &digests(&w.dir.join("out")));
    };
    refuse(&mut f, "ca", "switch", &["no rotation of the cluster CA is in progress", "kubebundle rotate ca ca start"]);
    refuse(&mut f, "etcd-ca", "finish", &["no rotation of the etcd CA is in progress"]);
    let r = w.rotate(&["ca", "ca", "start"]);
    f.check(r.ok(), || r.describe());
    refuse(&mut f, "ca", "start", &["already in progress", "kubebundle rotate ca ca switch"]);
    refuse(&mut f, "ca", "finish", &["is started", "the next phase is `kubebundle rotate ca ca switch"]);
    // Another CA rotates independently.
    let r = w.rotate(&["ca", "front-proxy-ca", "start"]);
    f.check(r.ok(), || r.describe());
    let r = w.rotate(&["ca", "ca", "switch"]);
    f.check(r.ok(), || r.describe());
    refuse(&mut f, "ca", "abort", &["was switched", "kubebundle rotate ca ca finish"]);
    // Usage: --algorithm only with start, --new-key only with switch (exit 2).
    let r = w.run(&["rotate", "ca", "ca", "finish", "--algorithm", "ECDSA-P384"]);
    f.check(r.code == Some(2) && r.stderr.contains("--algorithm only goes with"), || r.describe());
    let r = w.run(&["rotate", "ca", "front-proxy-ca", "abort", "--new-key"]);
    f.check(r.code == Some(2) && r.stderr.contains("--new-key only goes with"), || r.describe());
    f.finish("phases_out_of_order_a_second_start_and_abort_after_switch_are_refused");
}

/// Abort after start: the pre-start bundle byte for byte (rotations.yaml aside), the new CA archived.
#[test]
fn abort_after_start_gives_back_the_pre_start_bundle() {
    let w = RotationWork::new("rotca-abort", "profile: kubeadm\n");
    let mut f = Failures::new();
    for ca in ["ca", "front-proxy-ca", "etcd-ca"] {
        let before: BTreeMap<String, String> =
            digests(&w.bundle()).into_iter().filter(|(p, _)| !p.starts_with("state/rotations.yaml")).collect();
        let r = w.rotate(&["ca", ca, "start"]);
        f.check(r.ok(), || r.describe());
        let (crt, key) = if ca == "etcd-ca" { ("pki/etcd/ca-next.crt", "pki/etcd/ca-next.key") } else { ("", "") };
        let (crt, key) =
            if crt.is_empty() { (format!("pki/{ca}-next.crt"), format!("pki/{ca}-next.key")) } else { (crt.into(), key.into()) };
        let next_key = w.state(&key);
        f.check(!next_key.is_empty() && !w.state(&crt).is_empty(), || format!("{ca}: no {crt}"));
        let r = w.rotate(&["ca", ca, "abort"]);
        f.check(r.ok() && r.stdout.contains("archived, not deleted"), || r.describe());
        let now: BTreeMap<String, String> =
            digests(&w.bundle()).into_iter().filter(|(p, _)| !p.starts_with("state/rotations.yaml")).collect();
        f.eq(&format!("{ca}: every file but rotations.yaml after start + abort"), &before, &now);
        let archived = std::fs::read_dir(w.dir.join("out")).unwrap().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with("kubebundle-backup-")
                && file_bytes(&e.path()).values().any(|b| String::from_utf8_lossy(b) == next_key)
        });
        f.check(archived, || format!("{ca}: the new CA key is in no backup"));
    }
    f.finish("abort_after_start_gives_back_the_pre_start_bundle");
}

/// The three CAs on a kubeadm bundle: the phase's anchors, the leaves re-issued at switch with
/// their keys, the controller-manager's patch only while the cluster CA rotates.
#[test]
fn every_ca_rotates_on_a_kubeadm_bundle() {
    let w = RotationWork::new("rotca-kubeadm", "profile: kubeadm\n");
    let scratch = w.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut f = Failures::new();
    // (CA, its file on cp1, a leaf it signs, that leaf's key)
    let cases = [
        ("ca", "etc/kubernetes/pki/ca.crt", "etc/kubernetes/pki/apiserver.crt", "etc/kubernetes/pki/apiserver.key"),
        (
            "front-proxy-ca",
            "etc/kubernetes/pki/front-proxy-ca.crt",
            "etc/kubernetes/pki/front-proxy-client.crt",
            "etc/kubernetes/pki/front-proxy-client.key",
        ),
        ("etcd-ca", "etc/kubernetes/pki/etcd/ca.crt", "etc/kubernetes/pki/etcd/server.crt", "etc/kubernetes/pki/etcd/server.key"),
    ];
    for (ca, file, leaf, key) in cases {
        let old = ders(&w.node_file("cp1", file).unwrap_or_default());
        let leaf_key = w.node_file("cp1", key).unwrap_or_default();
        let r = w.rotate(&["ca", ca, "start"]);
        f.check(r.ok(), || r.describe());
        let both = ders(&w.node_file("cp1", file).unwrap_or_default());
        f.check(both.len() == 2 && both[0] == old[0], || format!("{ca} start: {file} holds {} CAs", both.len()));
        let patch = w.node_file("cp1", "etc/kubernetes/patches/kube-controller-manager+json.yaml");
        f.check(patch.is_some() == (ca == "ca"), || format!("{ca} start: the controller-manager patch: {patch:?}"));
        if let Some(p) = patch {
            f.check(p.contains("--cluster-signing-cert-file=/etc/kubernetes/pki/cluster-signing-ca.crt"), || p.clone());
            f.eq(
                "ca start: cluster-signing-ca.crt",
                &vec![old[0].clone()],
                &ders(&w.node_file("cp1", "etc/kubernetes/pki/cluster-signing-ca.crt").unwrap_or_default()),
            );
        }
        w.up_to_date(&mut f, &format!("{ca} start"));
        let r = w.rotate(&["ca", ca, "switch"]);
        f.check(r.ok(), || r.describe());
        let switched = ders(&w.node_file("cp1", file).unwrap_or_default());
        f.eq(&format!("{ca} switch: {file}"), &vec![both[1].clone(), old[0].clone()], &switched);
        let pem = w.node_file("cp1", leaf).unwrap_or_default();
        f.check(verifies(&scratch, &pem_of(&both[1]), &pem), || format!("{ca} switch: {leaf} is not signed by the new CA"));
        f.eq(&format!("{ca} switch: {key} kept"), &leaf_key, &w.node_file("cp1", key).unwrap_or_default());
        w.up_to_date(&mut f, &format!("{ca} switch"));
        let r = w.rotate(&["ca", ca, "finish"]);
        f.check(r.ok(), || r.describe());
        f.eq(&format!("{ca} finish: {file}"), &vec![both[1].clone()], &ders(&w.node_file("cp1", file).unwrap_or_default()));
        f.check(w.node_file("cp1", "etc/kubernetes/patches/kube-controller-manager+json.yaml").is_none(), || {
            format!("{ca} finish: patch left")
        });
        w.up_to_date(&mut f, &format!("{ca} finish"));
    }
    // --new-key: the re-issued leaves get new keys.
    let key = w.node_file("cp1", "etc/kubernetes/pki/apiserver.key").unwrap_or_default();
    f.check(w.rotate(&["ca", "ca", "start"]).ok(), || "second start".into());
    let r = w.run(&["rotate", "ca", "ca", "switch", "--new-key"]);
    f.check(r.ok() && r.stdout.contains("with new keys"), || r.describe());
    f.check(w.node_file("cp1", "etc/kubernetes/pki/apiserver.key").unwrap_or_default() != key, || "--new-key kept the key".into());
    w.up_to_date(&mut f, "ca switch --new-key");
    f.finish("every_ca_rotates_on_a_kubeadm_bundle");
}

/// A CA whose key the state does not hold (external-CA mode) cannot be rotated by minting one.
#[test]
fn an_external_ca_is_refused_with_a_hint() {
    let tmp = temp_dir("rotca-ext");
    let dir = tmp.path();
    let text = live_config("rot", &[("cp1", "10.9.0.11", "control-plane, etcd")]);
    std::fs::write(dir.join("rot.yaml"), text).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "corp-kubernetes");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages =
        vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign, rcgen::KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("corp.crt"), cert.pem()).unwrap();
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        a.extend(["--config", "rot.yaml", "--out", "out", "--now", NOW].map(String::from));
        a
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        kubebundle(dir, &a.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    };
    let r = run(&["ca", "import", "ca", "--cert", "corp.crt"]);
    assert!(r.ok(), "{}", r.describe());
    let before = digests(&dir.join("out"));
    let r = run(&["rotate", "ca", "ca", "start"]);
    let mut f = Failures::new();
    f.check(r.code == Some(1) && r.stderr.contains("is external") && r.stderr.contains("kubebundle ca import ca"), || r.describe());
    f.eq("files after the refusal", &before, &digests(&dir.join("out")));
    f.finish("an_external_ca_is_refused_with_a_hint");
}
