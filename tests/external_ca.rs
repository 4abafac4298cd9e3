//! External-CA mode: a corporate root and intermediate made with the real `openssl` are imported
//! as the cluster CA without their key. `generate` writes every leaf key into the state and a CSR
//! per leaf (kubeconfigs included) in kubeadm's generate-csr layout, and exits 1 waiting; the test
//! signs every CSR with `openssl ca` (copy_extensions = copy), `import-signed` takes them back (a
//! certificate for another key, one that lost a SAN and one of another CA are refused, naming
//! the file, writing nothing), and the next `generate` packs them: no tarball and no state file
//! holds ca.key, every leaf verifies up to the root, `kubebundle verify` finds no error and the
//! real kubeadm detects external CA and uses every certificate. A Vault sign response made from
//! the same certificates imports to the same state.

mod common;
mod live;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::corp::*;
use common::*;

const CLUSTER: &str = "ext";

fn digests(dir: &Path) -> BTreeMap<String, String> {
    file_digests(dir)
}

/// The DNS and IP SANs of a certificate or CSR (DER), as strings, in order.
fn sans(der: &[u8], csr: bool) -> Vec<String> {
    use x509_parser::prelude::*;
    let show = |g: &GeneralName<'_>| match g {
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::IPAddress(b) if b.len() == 4 => format!("IP:{}", std::net::IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())),
        GeneralName::IPAddress(b) => format!("IP:{}", std::net::IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())),
        other => format!("{other:?}"),
    };
    if csr {
        let (_, r) = x509_parser::certification_request::X509CertificationRequest::from_der(der).unwrap();
        let mut out = Vec::new();
        for e in r.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(s) = e {
                out.extend(s.general_names.iter().map(show));
            }
        }
        out
    } else {
        let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
        c.subject_alternative_name().ok().flatten().map(|s| s.value.general_names.iter().map(show).collect()).unwrap_or_default()
    }
}

fn der_of(path: &Path) -> Vec<u8> {
    pem::parse(std::fs::read(path).unwrap()).unwrap().into_contents()
}

fn work(prefix: &str) -> Work {
    let (cp, worker) = (("cp1", "198.51.100.41"), ("worker1", "198.51.100.42"));
    let config = live_config(CLUSTER, &[(cp.0, cp.1, "control-plane, etcd"), (worker.0, worker.1, "worker")])
        .replace("kubernetesVersion: v1.34.1\n", "kubernetesVersion: v1.32.13\n")
        .replace("kind: Inventory\n", "kind: Inventory\nprofile: kubeadm\n");
    // The real kubeadm checks validity against the real clock.
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    Work::with(prefix, CLUSTER, &config, &rfc3339(unix), |dir| external_corp(dir, unix))
}

#[test]
fn external_cluster_ca_csrs_signed_by_openssl_import_and_pack_without_ca_key() {
    let w = work("external-ca");
    let mut f = Failures::new();

    // 1. The intermediate, without its key.
    let r = w.import_keyless("ca", "ca.crt");
    assert!(r.ok(), "{}", r.describe());
    assert!(r.stdout.contains("without its key: external-CA mode"), "{}", r.stdout);
    let state = w.bundle().join("state");
    assert!(!state.join("pki/ca.key").exists());
    let manifest = std::fs::read_to_string(state.join("manifest.yaml")).unwrap();
    assert!(manifest.contains("external: true") && manifest.contains("file: pki/ca.crt"), "{manifest}");

    // 2. generate: keys into the state, one CSR per leaf of the cluster CA, exit 1, no tarball.
    let r = w.generate();
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(r.stderr.contains("waiting for ") && r.stderr.contains("signed certificates (external CA)"), "{}", r.stderr);
    assert!(r.stderr.contains("kubebundle import-signed --dir"), "{}", r.stderr);
    assert!(crate::file_bytes(&w.bundle().join("nodes")).is_empty(), "a tarball with unsigned material was written");
    let csrs = csr_files(&w.bundle());
    for expected in [
        "cp1/pki/apiserver.csr",
        "cp1/pki/apiserver-kubelet-client.csr",
        "cp1/admin.conf.csr",
        "cp1/super-admin.conf.csr",
        "cp1/kubelet.conf.csr",
        "cp1/controller-manager.conf.csr",
        "cp1/scheduler.conf.csr",
    ] {
        f.check(csrs.iter().any(|c| c == expected), || format!("no CSR {expected}: {csrs:?}"));
    }
    // front-proxy and etcd have their own (made) CAs: no CSR for them.
    f.check(!csrs.iter().any(|c| c.contains("etcd") || c.contains("front-proxy")), || format!("CSRs of other CAs: {csrs:?}"));
    let n = csrs.len();
    assert!(r.stderr.contains(&format!("waiting for {n} signed certificates")), "{}", r.stderr);
    let check = w.generate_with(&["--check"]);
    assert_eq!(check.code, Some(1), "{}", check.describe());
    assert!(check.stdout.contains(&format!("waiting for   {n} signed certificates")), "{}", check.stdout);
    // The apiserver CSR carries every SAN.
    let api_csr = der_of(&w.bundle().join("csr/cp1/pki/apiserver.csr"));
    let api_sans = sans(&api_csr, true);
    for s in ["DNS:cp1", "DNS:kubernetes", "DNS:kubernetes.default.svc.cluster.local", "IP:198.51.100.41", "IP:10.96.0.1"] {
        f.check(api_sans.iter().any(|x| x == s), || format!("apiserver CSR lacks {s}: {api_sans:?}"));
    }

    // 3. The corporate CA signs every CSR with openssl ca, copying its extensions.
    let signed = w.dir.join("signed");
    for rel in &csrs {
        let crt = signed.join(rel.replace(".csr", ".crt"));
        std::fs::create_dir_all(crt.parent().unwrap()).unwrap();
        let csr = w.bundle().join("csr").join(rel);
        sign_leaf(&w.corp, "ca", csr.to_str().unwrap(), crt.to_str().unwrap());
        let (want, got) = (sans(&der_of(&csr), true), sans(&der_of(&crt), false));
        f.check(want == got, || format!("{rel}: openssl ca lost SANs: CSR {want:?}, certificate {got:?}"));
    }

    // 4. Refusals write nothing and name the file.
    let before = digests(&w.bundle());
    let bad = w.dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    // A certificate for another key (same subject).
    w.corp.key("stranger");
    w.corp.csr("stranger", "/CN=kube-apiserver");
    sign_leaf(&w.corp, "ca", "stranger.csr", bad.join("another-key.crt").to_str().unwrap());
    // The apiserver CSR signed without its SANs.
    std::fs::write(w.corp.dir.join("nosan.cnf"), corp_cnf("none", true, V3_LEAF)).unwrap();
    let lost = bad.join("lost-san.crt");
    let csr = w.bundle().join("csr/cp1/pki/apiserver.csr");
    w.corp.sign("nosan.cnf", "ca", csr.to_str().unwrap(), lost.to_str().unwrap(), &["-extensions", "v3_leaf"]);
    // The apiserver CSR signed by another CA.
    let other = bad.join("other-ca.crt");
    sign_leaf(&w.corp, "other", w.bundle().join("csr/cp1/pki/apiserver.csr").to_str().unwrap(), other.to_str().unwrap());
    for (file, says) in [
        (bad.join("another-key.crt"), "is a certificate for another key: it matches no CSR"),
        (lost.clone(), "it lost SAN(s)"),
        (other.clone(), "is not signed by the ca CA"),
    ] {
        let r = w.import_signed(&w.bundle(), &[&signed, &file]);
        f.check(r.code == Some(1), || format!("{}: {}", file.display(), r.describe()));
        f.check(r.stderr.contains(&format!("{}: ", file.display())) && r.stderr.contains(says), || {
            format!("{}: refusal does not name it or say {says:?}: {}", file.display(), r.stderr)
        });
        f.check(r.stderr.contains("nothing was written"), || r.stderr.clone());
        f.check(digests(&w.bundle()) == before, || format!("{}: the refusal wrote into the bundle", file.display()));
    }
    let lost_text = w.import_signed(&w.bundle(), &[&lost]).stderr;
    f.check(lost_text.contains("DNS:") || lost_text.contains("kubernetes.default"), || lost_text.clone());

    // 5. A Vault sign response of the same certificates, into a copy of the bundle.
    let copy_out = w.dir.join("out-vault");
    let copy = copy_out.join(CLUSTER);
    let r = run_cmd({
        let mut c = Command::new("cp");
        c.arg("-a").arg(w.out()).arg(&copy_out);
        c
    });
    assert!(r.ok(), "{}", r.describe());
    let vault = w.dir.join("vault");
    for rel in &csrs {
        let crt = std::fs::read_to_string(signed.join(rel.replace(".csr", ".crt"))).unwrap();
        let json = serde_json::json!({
            "request_id": "x", "lease_id": "", "renewable": false, "lease_duration": 0, "warnings": null,
            "data": {
                "certificate": crt.trim_end(), "issuing_ca": w.corp.text("ca.crt").trim_end(),
                "ca_chain": [w.corp.text("ca.crt").trim_end(), w.corp.text("root.crt").trim_end()],
                "serial_number": "10:00", "expiration": 1900000000,
            }
        });
        let file = vault.join(rel.replace(".csr", ".json"));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    }
    // A Vault issue/ response (a private_key Vault made) is refused.
    let issue = w.dir.join("issue.json");
    let stranger_crt = std::fs::read_to_string(bad.join("another-key.crt")).unwrap();
    std::fs::write(
        &issue,
        serde_json::to_vec(&serde_json::json!({"data": {"certificate": stranger_crt, "private_key": w.corp.text("stranger.key"), "private_key_type": "ec"}}))
            .unwrap(),
    )
    .unwrap();
    let r = w.import_signed(&copy, &[&issue]);
    f.check(r.code == Some(1) && r.stderr.contains("issue.json: a Vault issue/ response"), || r.describe());

    // 6. import-signed takes them all; generate packs.
    let r = w.import_signed(&w.bundle(), &[&signed]);
    assert!(r.ok(), "{}", r.describe());
    assert!(r.stdout.contains(&format!("recorded {n} signed certificate(s)")) && r.stdout.contains("0 still wait"), "{}", r.stdout);
    let r = w.import_signed(&copy, &[&vault]);
    assert!(r.ok(), "{}", r.describe());
    f.check(std::fs::read(state.join("leaves.json")).unwrap() == std::fs::read(copy.join("state/leaves.json")).unwrap(), || {
        "the Vault responses did not import to the same state as the PEM files".into()
    });
    let r = w.generate();
    assert!(r.ok(), "{}", r.describe());
    f.check(r.stderr.contains("leaf certificates: ") && !r.stderr.contains("waiting"), || r.stderr.clone());
    let check = w.generate_with(&["--check"]);
    f.check(check.ok(), || check.describe());

    // 7. No ca.key anywhere.
    for (rel, _) in file_bytes(&state) {
        f.check(!rel.ends_with("pki/ca.key"), || format!("the state holds {rel}"));
    }
    let ca_key_pem = w.corp.text("ca.key");
    let tarballs: Vec<String> = file_bytes(&w.bundle().join("nodes")).into_keys().filter(|p| p.ends_with(".tar.gz")).collect();
    assert_eq!(tarballs.len(), 2, "{tarballs:?}");
    for t in &tarballs {
        for (name, bytes) in tarball_files(&w.bundle().join("nodes").join(t)) {
            f.check(!name.ends_with("pki/ca.key"), || format!("{t} holds {name}"));
            f.check(!bytes.windows(ca_key_pem.len()).any(|w| w == ca_key_pem.as_bytes()), || format!("{t}:{name} holds the CA key"));
        }
    }

    // 8. Every leaf of the cluster CA verifies up to the root.
    for rel in &csrs {
        let crt = signed.join(rel.replace(".csr", ".crt"));
        let r = openssl(&["verify", "-CAfile", &w.corp.path("root.crt"), "-untrusted", &w.corp.path("ca.crt"), crt.to_str().unwrap()]);
        f.check(r.ok(), || format!("{rel}: {}", r.describe()));
    }
    let cp1 = tarball_files(&w.bundle().join("nodes/cp1.tar.gz"));
    let api = cp1.get("etc/kubernetes/pki/apiserver.crt").expect("apiserver.crt");
    let api_file = w.dir.join("apiserver-packed.crt");
    std::fs::write(&api_file, api).unwrap();
    let r = openssl(&["verify", "-CAfile", &w.corp.path("root.crt"), "-untrusted", &w.corp.path("ca.crt"), api_file.to_str().unwrap()]);
    f.check(r.ok(), || format!("packed apiserver.crt: {}", r.describe()));
    f.check(api.starts_with(std::fs::read(signed.join("cp1/pki/apiserver.crt")).unwrap().as_slice()), || {
        "the packed apiserver.crt is not the signed certificate".into()
    });
    if let Err(e) = verify_bundle(&w.bundle(), Some(&w.now)) {
        f.check(false, || e.clone());
    }

    // 9. The real kubeadm detects external CA and uses every certificate.
    if let Some(tools) = live::Tools::find_with(&["kubeadm"]) {
        let root = w.dir.join("root-cp");
        extract(&w.bundle().join("nodes/cp1.tar.gz"), &root);
        let scratch = w.dir.join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let ns = live::Netns::new(&scratch);
        ns.add_address("198.51.100.41");
        let before = file_bytes(&root);
        let r =
            live::kubeadm(&ns, &tools, &root, &["init", "phase", "certs", "all", "--config", "/etc/kubernetes/kubeadm-init.yaml", "-v=1"]);
        assert!(r.ok(), "kubeadm init phase certs all: {}", r.describe());
        let all = format!("{}\n{}", r.stdout, r.stderr);
        // kubeadm's own words when ca.key is absent and every leaf verifies: external CA detected.
        f.check(all.contains("Using existing ca keyless certificate authority"), || format!("kubeadm did not detect external CA:\n{all}"));
        for c in live::KUBEADM_LEAVES {
            let e = format!("Using existing {c} certificate and key on disk");
            f.check(all.contains(&e), || format!("kubeadm did not say {e:?}:\n{all}"));
        }
        f.check(file_bytes(&root) == before, || "kubeadm changed the control plane's tree".into());
        // kubeadm itself gives the controller-manager empty signing files under an external CA.
        let r = live::kubeadm(
            &ns,
            &tools,
            &root,
            &["init", "phase", "control-plane", "controller-manager", "--config", "/etc/kubernetes/kubeadm-init.yaml"],
        );
        assert!(r.ok(), "kubeadm init phase control-plane controller-manager: {}", r.describe());
        let kcm = std::fs::read_to_string(root.join("etc/kubernetes/manifests/kube-controller-manager.yaml")).unwrap();
        f.check(kcm.contains("- --cluster-signing-cert-file=\n") && kcm.contains("- --cluster-signing-key-file=\n"), || kcm.clone());
        f.note(format!(
            "kubeadm v1.32.13 on an external cluster CA:\n{}",
            all.lines().filter(|l| l.contains("[certs]") || l.contains("xternal")).collect::<Vec<_>>().join("\n")
        ));
    }

    // 10. certs renew on the bundle writes a CSR instead of signing, and says so; signed and
    // imported, the next generate packs the new certificate.
    let r = w.run(&["certs", "renew", "apiserver", "--dir", w.bundle().to_str().unwrap(), "--now", &w.now]);
    assert!(r.ok(), "{}", r.describe());
    let csr = w.bundle().join("csr/cp1/pki/apiserver.csr");
    f.check(r.stdout.contains("wrote 1 CSR(s) instead of signing (external CA") && r.stdout.contains(csr.to_str().unwrap()), || {
        r.stdout.clone()
    });
    f.check(sans(&der_of(&csr), true) == api_sans, || "the renewal CSR lost SANs".into());
    let renewed = w.dir.join("renewed/cp1/pki/apiserver.crt");
    std::fs::create_dir_all(renewed.parent().unwrap()).unwrap();
    sign_leaf(&w.corp, "ca", csr.to_str().unwrap(), renewed.to_str().unwrap());
    let r = w.import_signed(&w.bundle(), &[&w.dir.join("renewed")]);
    assert!(r.ok() && r.stdout.contains("recorded 1 signed certificate(s)"), "{}", r.describe());
    let r = w.generate();
    assert!(r.ok(), "{}", r.describe());
    let cp1 = tarball_files(&w.bundle().join("nodes/cp1.tar.gz"));
    let packed = &cp1["etc/kubernetes/pki/apiserver.crt"];
    f.check(packed.starts_with(std::fs::read(&renewed).unwrap().as_slice()), || "the renewed apiserver.crt was not packed".into());
    f.finish("external_cluster_ca_csrs_signed_by_openssl_import_and_pack_without_ca_key");
}

/// All three CAs external, with the hardway profile (systemd units): every CSR signed by its CA,
/// imported, packed; no CA key anywhere, the controller-manager's signing flags empty, `verify`
/// finds no error.
#[test]
fn all_three_cas_external_with_the_hardway_profile() {
    let w = work("external-ca-hardway");
    let config = std::fs::read_to_string(w.dir.join("c.yaml")).unwrap().replace("profile: kubeadm", "profile: hardway");
    std::fs::write(w.dir.join("c.yaml"), config).unwrap();
    let mut f = Failures::new();
    for (which, file) in [("ca", "ca.crt"), ("front-proxy-ca", "fp.crt"), ("etcd-ca", "etcd.crt")] {
        let r = w.import_keyless(which, file);
        assert!(r.ok() && r.stdout.contains("without its key"), "{}", r.describe());
    }
    let r = w.generate();
    assert_eq!(r.code, Some(1), "{}", r.describe());
    let csrs = csr_files(&w.bundle());
    assert!(r.stderr.contains(&format!("waiting for {} signed certificates", csrs.len())), "{}", r.stderr);
    f.check(csrs.iter().any(|c| c.contains("front-proxy")) && csrs.iter().any(|c| c.contains("etcd/certs/server")), || format!("{csrs:?}"));
    let signed = w.dir.join("signed");
    sign_all(&w, &signed);
    let r = w.import_signed(&w.bundle(), &[&signed]);
    assert!(r.ok() && r.stdout.contains("0 still wait"), "{}", r.describe());
    let r = w.generate();
    assert!(r.ok(), "{}", r.describe());
    for (rel, _) in file_bytes(&w.bundle().join("state")) {
        f.check(!rel.ends_with("ca.key"), || format!("the state holds {rel}"));
    }
    let keys: Vec<String> = ["ca", "fp", "etcd"].iter().map(|n| w.corp.text(&format!("{n}.key"))).collect();
    for t in ["cp1.tar.gz", "worker1.tar.gz"] {
        let files = tarball_files(&w.bundle().join("nodes").join(t));
        for (name, bytes) in &files {
            f.check(!name.ends_with("ca.key") && !name.ends_with("ca-key.pem"), || format!("{t} holds {name}"));
            for k in &keys {
                f.check(!bytes.windows(k.len()).any(|x| x == k.as_bytes()), || format!("{t}:{name} holds a CA key"));
            }
        }
        if t == "cp1.tar.gz" {
            let unit = String::from_utf8(files["etc/systemd/system/kube-controller-manager.service"].clone()).unwrap();
            f.check(unit.contains("  --cluster-signing-cert-file= \\\n") && unit.contains("  --cluster-signing-key-file= \\\n"), || {
                unit.clone()
            });
        }
    }
    if let Err(e) = verify_bundle(&w.bundle(), Some(&w.now)) {
        f.check(false, || e.clone());
    }
    f.finish("all_three_cas_external_with_the_hardway_profile");
}
