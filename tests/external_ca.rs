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

use std::collections::{BTreeMap, BTreeSet};
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

/// The extensions a CSR (DER) requests, by name.
fn requested(der: &[u8]) -> BTreeSet<String> {
    use x509_parser::prelude::*;
    let (_, r) = x509_parser::certification_request::X509CertificationRequest::from_der(der).unwrap();
    r.requested_extensions()
        .into_iter()
        .flatten()
        .map(|e| match e {
            ParsedExtension::SubjectAlternativeName(_) => "subjectAltName".to_string(),
            ParsedExtension::KeyUsage(_) => "keyUsage".to_string(),
            ParsedExtension::ExtendedKeyUsage(_) => "extendedKeyUsage".to_string(),
            ParsedExtension::BasicConstraints(_) => "basicConstraints".to_string(),
            ParsedExtension::SubjectKeyIdentifier(_) => "subjectKeyIdentifier".to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// What the real kubeadm's `certs generate-csr` (K8S_BIN) requests in each CSR, by its path
/// relative to its kubeconfig directory (`pki/apiserver.csr`, `admin.conf.csr`).
fn kubeadm_requests(scratch: &Path) -> Option<BTreeMap<String, BTreeSet<String>>> {
    let tools = live::Tools::find_with(&["kubeadm"])?;
    let dir = scratch.join("kubeadm-generate-csr");
    let mut c = Command::new(tools.k8s.join("kubeadm"));
    c.args(["certs", "generate-csr", "--kubeconfig-dir"]).arg(&dir).arg("--cert-dir").arg(dir.join("pki")).env("LC_ALL", "C");
    let r = run_cmd(c);
    assert!(r.ok(), "kubeadm certs generate-csr: {}", r.describe());
    let found: BTreeMap<String, BTreeSet<String>> =
        walk(&dir).keys().filter(|p| p.ends_with(".csr")).map(|p| (p.clone(), requested(&der_of(&dir.join(p))))).collect();
    assert!(found.len() >= 10, "kubeadm wrote {} CSRs", found.len());
    Some(found)
}

/// Each of our CSRs (path relative to /etc/kubernetes → DER) requests what kubeadm's CSR of the
/// same name requests (subjectAltName where there are SANs, nothing else: no basicConstraints, no
/// subjectKeyIdentifier), plus keyUsage and extendedKeyUsage (README: for signers that copy them).
fn same_requests_as_kubeadm(ours: &BTreeMap<String, Vec<u8>>, kubeadm: &BTreeMap<String, BTreeSet<String>>, what: &str, f: &mut Failures) {
    let usages: BTreeSet<String> = ["keyUsage", "extendedKeyUsage"].map(String::from).into();
    let mut compared = 0;
    for (rel, der) in ours {
        let mine = requested(der);
        f.check(mine.is_superset(&usages), || format!("{what} {rel}: requests {mine:?}, without the usages"));
        let Some(theirs) = kubeadm.get(rel) else { continue };
        compared += 1;
        f.eq(&format!("{what} {rel}: the extensions besides the usages, as kubeadm's"), theirs, &(&mine - &usages));
    }
    f.check(compared >= 5, || format!("{what}: only {compared} CSRs have a kubeadm counterpart: {:?}", ours.keys().collect::<Vec<_>>()));
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
    // -o json says the same on stdout, and still exits 1.
    let json = w.generate_with(&["-o", "json"]);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap_or_default();
    f.check(json.code == Some(1) && report["awaitingSignedCertificates"] == n && report["nodes"] == serde_json::json!([]), || {
        format!("generate -o json while waiting: {}", json.describe())
    });
    // The apiserver CSR carries every SAN.
    let api_csr = der_of(&w.bundle().join("csr/cp1/pki/apiserver.csr"));
    let api_sans = sans(&api_csr, true);
    for s in ["DNS:cp1", "DNS:kubernetes", "DNS:kubernetes.default.svc.cluster.local", "IP:198.51.100.41", "IP:10.96.0.1"] {
        f.check(api_sans.iter().any(|x| x == s), || format!("apiserver CSR lacks {s}: {api_sans:?}"));
    }

    // Each CSR requests what kubeadm's `certs generate-csr` requests, and the usages.
    if let Some(kubeadm) = kubeadm_requests(&w.dir) {
        let ours: BTreeMap<String, Vec<u8>> =
            csrs.iter().filter_map(|c| Some((c.strip_prefix("cp1/")?.to_string(), der_of(&w.bundle().join("csr").join(c))))).collect();
        same_requests_as_kubeadm(&ours, &kubeadm, "generate's CSR", &mut f);
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
    // Like generate's, the run waits for the signed certificate: exit 1, saying so.
    let r = w.run(&["certs", "renew", "apiserver", "--dir", w.bundle().to_str().unwrap(), "--now", &w.now]);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    f.check(
        r.stderr.contains("waiting for 1 signed certificate(s) (external CA)") && r.stderr.contains("kubebundle import-signed --dir"),
        || r.stderr.clone(),
    );
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

/// Every file's mode under `dir` (relative path → mode).
fn modes(dir: &Path) -> BTreeMap<String, u32> {
    use std::os::unix::fs::PermissionsExt;
    file_bytes(dir).into_keys().map(|p| (p.clone(), std::fs::metadata(dir.join(&p)).unwrap().permissions().mode() & 0o7777)).collect()
}

/// The first certificate (DER) of a PEM file, or of a kubeconfig's client-certificate-data.
fn leaf_der(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "conf") {
        let data = kubeconfig_values(&String::from_utf8(bytes).unwrap(), "client-certificate-data");
        return pem_certs(&data[0])[0].clone();
    }
    pem_certs(&bytes)[0].clone()
}

/// A certificate's or CSR's subject (DER) and public key (DER).
fn subject_and_key(der: &[u8], csr: bool) -> (Vec<u8>, Vec<u8>) {
    use x509_parser::prelude::FromDer;
    if csr {
        let (_, r) = x509_parser::certification_request::X509CertificationRequest::from_der(der).unwrap();
        let i = &r.certification_request_info;
        (i.subject.as_raw().to_vec(), i.subject_pki.raw.to_vec())
    } else {
        let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
        (c.subject().as_raw().to_vec(), c.public_key().raw.to_vec())
    }
}

fn not_after(der: &[u8]) -> i64 {
    x509_parser::parse_x509_certificate(der).unwrap().1.validity().not_after.timestamp()
}

/// kubeadm's external-CA mode on a node tree: the control plane's tarball of an external-CA
/// bundle, extracted as a live root. `certs renew all` renews what the tree's own CAs sign
/// (front-proxy, etcd) and writes, for each certificate of the external cluster CA (kubeconfigs
/// included), a CSR for its current key with its subject, SANs and usages where kubeadm's
/// `certs generate-csr` puts it (`--csr-dir` elsewhere instead, the tree untouched), exits 1
/// waiting, and changes nothing else. The corporate CA signs them with `openssl ca`;
/// `import-signed --dir ROOT` refuses a certificate for another key, one that lost a SAN and one
/// of another CA (exit 1, naming the file, the tree unchanged), then puts them in place: the same
/// keys, later expiries, kubeconfigs' client-certificate-data, modes kept, nothing else changed;
/// check-expiration shows the new expiries and the real kubeadm uses every file.
#[test]
fn renew_on_a_node_tree_writes_csrs_and_import_signed_puts_the_certificates_back() {
    let mut w = work("external-ca-tree");
    let mut f = Failures::new();
    // The external-CA bundle: every CSR signed, imported and packed.
    let r = w.import_keyless("ca", "ca.crt");
    assert!(r.ok(), "{}", r.describe());
    assert_eq!(w.generate().code, Some(1));
    let signed = w.dir.join("signed");
    for rel in csr_files(&w.bundle()) {
        let crt = signed.join(rel.replace(".csr", ".crt"));
        std::fs::create_dir_all(crt.parent().unwrap()).unwrap();
        sign_leaf(&w.corp, "ca", w.bundle().join("csr").join(&rel).to_str().unwrap(), crt.to_str().unwrap());
    }
    let r = w.import_signed(&w.bundle(), &[&signed]);
    assert!(r.ok(), "{}", r.describe());
    let r = w.generate();
    assert!(r.ok(), "{}", r.describe());

    // 1. The control plane's tree as a live root.
    let root = w.dir.join("root");
    extract(&w.bundle().join("nodes/cp1.tar.gz"), &root);
    let etc = root.join("etc/kubernetes");
    assert!(!etc.join("pki/ca.key").exists() && etc.join("pki/front-proxy-ca.key").exists());
    let before = digests(&root);
    let modes_before = modes(&root);
    // What verify says of the tree as it was packed (on a bare root it trusts only the
    // self-signed CAs it holds, so the intermediate cluster CA proves no role there).
    let verify_errors = |r: &Run| r.stdout.lines().filter(|l| l.starts_with("ERROR")).map(str::to_string).collect::<Vec<_>>();
    let packed_errors = verify_errors(&w.run(&["verify", root.to_str().unwrap(), "--now", &w.now]));

    // 2. --dry-run lists the CSRs and writes nothing (exit 0).
    let rootp = root.to_str().unwrap();
    let r = w.run(&["certs", "renew", "all", "--dir", rootp, "--now", &w.now, "--dry-run"]);
    assert!(r.ok(), "{}", r.describe());
    f.check(r.stdout.contains("would write ") && r.stdout.contains("CSR(s) instead of signing"), || r.stdout.clone());
    f.check(digests(&root) == before, || "--dry-run wrote into the tree".into());

    // 3. --csr-dir: the CSRs there (a bundle's csr/<node>/ layout), the tree untouched.
    let elsewhere = w.dir.join("csr-elsewhere");
    let r =
        w.run(&["certs", "renew", "apiserver", "admin.conf", "--dir", rootp, "--now", &w.now, "--csr-dir", elsewhere.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    let there: Vec<String> = file_bytes(&elsewhere).into_keys().collect();
    f.check(there == ["admin.conf.csr", "pki/apiserver.csr"], || format!("--csr-dir holds {there:?}"));
    f.check(digests(&root) == before, || "--csr-dir wrote into the tree".into());

    // --csr-dir is for node trees; import-signed takes a bundle or a node tree (exit 2 otherwise).
    let r = w.run(&["certs", "renew", "apiserver", "--dir", w.bundle().to_str().unwrap(), "--csr-dir", elsewhere.to_str().unwrap()]);
    f.check(r.code == Some(2) && r.stderr.contains("--csr-dir is for node trees"), || r.describe());
    std::fs::create_dir_all(w.dir.join("empty")).unwrap();
    let r = w.import_signed(&w.dir.join("empty"), &[&signed]);
    f.check(r.code == Some(2) && r.stderr.contains("is neither a bundle nor a node tree kubebundle knows"), || r.describe());
    let r = w.import_signed(&w.dir.join("corp"), &[&signed]);
    f.check(r.code == Some(2) && r.stderr.contains("holds no certificate"), || r.describe());

    // 4. renew all: the tree's own CAs renew theirs; the external CA's leaves get CSRs; exit 1.
    let r = w.run(&["certs", "renew", "all", "--dir", rootp, "--now", &w.now]);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    f.check(r.stderr.contains("waiting for ") && r.stderr.contains("signed certificate(s) (external CA)"), || r.stderr.clone());
    f.check(r.stderr.contains(&format!("kubebundle import-signed --dir {rootp} SIGNED")), || r.stderr.clone());
    f.check(r.stdout.contains("CSR(s) instead of signing (external CA") && r.stdout.contains("kubebundle import-signed --dir"), || {
        r.stdout.clone()
    });
    f.note(format!("certs renew all on the tree:\n{}{}", r.stdout, r.stderr));
    let after = digests(&root);
    let csrs: Vec<String> = after.keys().filter(|p| !before.contains_key(*p)).cloned().collect();
    // What kubeadm's generate-csr writes for the cluster CA: each beside its key, kubeconfigs' beside them.
    let expected = [
        "etc/kubernetes/admin.conf.csr",
        "etc/kubernetes/controller-manager.conf.csr",
        "etc/kubernetes/kubelet.conf.csr",
        "etc/kubernetes/pki/apiserver-kubelet-client.csr",
        "etc/kubernetes/pki/apiserver.csr",
        "etc/kubernetes/scheduler.conf.csr",
        "etc/kubernetes/super-admin.conf.csr",
    ];
    for e in expected {
        f.check(csrs.iter().any(|c| c == e), || format!("no CSR {e}: {csrs:?}"));
    }
    f.check(csrs.iter().all(|c| c.ends_with(".csr")) && !csrs.iter().any(|c| c.contains("etcd") || c.contains("front-proxy")), || {
        format!("new files: {csrs:?}")
    });
    f.check(r.stdout.contains(&format!("wrote {} CSR(s)", csrs.len())), || r.stdout.clone());
    // Renewal CSRs request what kubeadm's `certs generate-csr` requests, and the usages.
    if let Some(kubeadm) = kubeadm_requests(&w.dir) {
        let ours: BTreeMap<String, Vec<u8>> =
            csrs.iter().filter_map(|c| Some((c.strip_prefix("etc/kubernetes/")?.to_string(), der_of(&root.join(c))))).collect();
        same_requests_as_kubeadm(&ours, &kubeadm, "certs renew's CSR", &mut f);
    }
    // Renewed by the tree's own CAs: front-proxy and etcd.
    let renewed = [
        "etc/kubernetes/pki/front-proxy-client.crt",
        "etc/kubernetes/pki/apiserver-etcd-client.crt",
        "etc/kubernetes/pki/etcd/server.crt",
        "etc/kubernetes/pki/etcd/peer.crt",
        "etc/kubernetes/pki/etcd/healthcheck-client.crt",
    ];
    for (p, d) in &before {
        let changed = after.get(p) != Some(d);
        f.check(changed == renewed.contains(&p.as_str()), || format!("{p}: changed {changed}"));
    }
    f.check(modes(&root).iter().filter(|(p, _)| before.contains_key(*p)).all(|(p, m)| modes_before[p] == *m), || "a mode changed".into());
    f.check(modes(&root).iter().filter(|(p, _)| p.ends_with(".csr")).all(|(_, m)| *m == 0o600), || "CSR modes".into());
    // Each CSR: the current certificate's key, subject and SANs; the same bytes --csr-dir wrote.
    for c in &csrs {
        let csr = der_of(&root.join(c));
        let crt = if c.ends_with(".conf.csr") { root.join(c.trim_end_matches(".csr")) } else { root.join(c.replace(".csr", ".crt")) };
        let cert = leaf_der(&crt);
        f.check(subject_and_key(&csr, true) == subject_and_key(&cert, false), || {
            format!("{c}: not the subject and key of {}", crt.display())
        });
        f.check(sans(&csr, true) == sans(&cert, false), || format!("{c}: SANs {:?} ≠ {:?}", sans(&csr, true), sans(&cert, false)));
    }
    f.check(std::fs::read(elsewhere.join("pki/apiserver.csr")).unwrap() == std::fs::read(etc.join("pki/apiserver.csr")).unwrap(), || {
        "--csr-dir and the tree got different CSRs for the same key".into()
    });

    // 5. The corporate CA signs them (openssl ca, extensions copied), valid longer than before.
    w.corp.validity.1 =
        ossl_time(&rfc3339(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + 330 * 86400));
    let tree_signed = w.dir.join("tree-signed");
    for c in &csrs {
        let out = tree_signed.join(c.replace(".csr", ".crt"));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        sign_leaf(&w.corp, "ca", root.join(c).to_str().unwrap(), out.to_str().unwrap());
    }

    // 6. Refusals: exit 1, the file named, the tree unchanged (even with every good one given too).
    let before_import = digests(&root);
    let bad = w.dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    w.corp.key("stranger");
    w.corp.csr("stranger", "/CN=kube-apiserver");
    sign_leaf(&w.corp, "ca", "stranger.csr", bad.join("another-key.crt").to_str().unwrap());
    std::fs::write(w.corp.dir.join("nosan.cnf"), corp_cnf("none", true, V3_LEAF)).unwrap();
    let api_csr = etc.join("pki/apiserver.csr");
    w.corp.sign("nosan.cnf", "ca", api_csr.to_str().unwrap(), bad.join("lost-san.crt").to_str().unwrap(), &["-extensions", "v3_leaf"]);
    sign_leaf(&w.corp, "other", api_csr.to_str().unwrap(), bad.join("other-ca.crt").to_str().unwrap());
    for (file, says) in [
        ("another-key.crt", "is a certificate for another key: no certificate of"),
        ("lost-san.crt", "it lost SAN(s)"),
        ("other-ca.crt", "is not signed by the ca CA in"),
    ] {
        let file = bad.join(file);
        let r = w.import_signed(&root, &[&tree_signed, &file]);
        f.check(r.code == Some(1), || format!("{}: {}", file.display(), r.describe()));
        f.check(r.stderr.contains(&format!("{}: ", file.display())) && r.stderr.contains(says), || {
            format!("{}: the refusal does not name it or say {says:?}: {}", file.display(), r.stderr)
        });
        f.check(r.stderr.contains("nothing was written"), || r.stderr.clone());
        f.check(digests(&root) == before_import, || format!("{}: the refusal wrote into the tree", file.display()));
    }
    let lost = w.import_signed(&root, &[&bad.join("lost-san.crt")]).stderr;
    f.note(format!("a refusal:\n{lost}"));
    f.check(lost.contains("kubernetes.default") && lost.contains("etc/kubernetes/pki/apiserver.crt"), || lost.clone());

    // 7. import-signed --dir ROOT: the signed certificates in place, nothing else changed.
    let r = w.import_signed(&root, &[&tree_signed]);
    assert!(r.ok(), "{}", r.describe());
    f.note(format!("import-signed --dir ROOT:\n{}", r.stdout));
    f.check(r.stdout.contains(&format!("installed {} signed certificate(s)", csrs.len())) && r.stdout.contains("backup of the"), || {
        r.stdout.clone()
    });
    f.check(r.stdout.contains("restart, in this order: kube-apiserver"), || r.stdout.clone());
    let imported = digests(&root);
    let holders: Vec<String> = csrs
        .iter()
        .map(|c| if c.ends_with(".conf.csr") { c.trim_end_matches(".csr").to_string() } else { c.replace(".csr", ".crt") })
        .collect();
    for (p, d) in &before_import {
        let changed = imported.get(p) != Some(d);
        f.check(changed == holders.contains(p), || format!("{p}: changed {changed} by import-signed"));
    }
    f.check(imported.len() == before_import.len(), || "import-signed added or removed files".into());
    f.check(modes(&root).iter().all(|(p, m)| modes_before.get(p).is_none_or(|b| b == m)), || "import-signed changed a mode".into());
    for (c, h) in csrs.iter().zip(&holders) {
        let new = leaf_der(&root.join(h));
        let signed = der_of(&tree_signed.join(c.replace(".csr", ".crt")));
        f.check(new == signed, || format!("{h} does not hold the signed certificate"));
        f.check(subject_and_key(&new, false).1 == subject_and_key(&der_of(&root.join(c)), true).1, || format!("{h}: another key"));
        let old = before_import_der(&w, h);
        f.check(not_after(&new) > not_after(&old), || format!("{h}: the expiry did not move"));
    }
    // The kubeconfigs keep their key and CA data; the key files are the same.
    for conf in ["admin.conf", "super-admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf"] {
        let text = std::fs::read_to_string(etc.join(conf)).unwrap();
        let before_text =
            String::from_utf8(tarball_files(&w.bundle().join("nodes/cp1.tar.gz"))[&format!("etc/kubernetes/{conf}")].clone()).unwrap();
        for k in ["client-key-data", "certificate-authority-data", "server"] {
            f.check(kubeconfig_lines(&text, k) == kubeconfig_lines(&before_text, k), || format!("{conf}: {k} changed"));
        }
    }
    // Again: nothing to do.
    let r = w.import_signed(&root, &[&tree_signed]);
    f.check(r.ok() && r.stdout.contains(&format!("installed 0 signed certificate(s) into {rootp} ({} already there)", csrs.len())), || {
        r.describe()
    });
    f.check(digests(&root) == imported, || "a second import changed the tree".into());

    // 8. check-expiration shows the new expiries, nothing broken; verify finds no error.
    let r = w.run(&["certs", "check-expiration", "--dir", rootp, "--now", &w.now]);
    f.check(r.code == Some(0), || r.describe());
    f.check(r.stdout.contains("apiserver ") && r.stdout.contains("yes"), || r.stdout.clone());
    f.note(format!("check-expiration after import-signed:\n{}", r.stdout));
    let r = w.run(&["verify", rootp, "--now", &w.now]);
    f.check(verify_errors(&r) == packed_errors, || {
        format!("verify finds other errors than in the packed tree ({packed_errors:?}): {}", r.describe())
    });
    for h in &holders {
        let chain = r.stdout.lines().find(|l| l.contains(&format!(" {h} ")) && l.contains(" chain "));
        f.check(chain.is_some_and(|l| l.starts_with("OK") && (l.contains("signed by ca") || l.contains("carries its chain"))), || {
            format!("verify: {h}: {chain:?}")
        });
    }
    // A serving certificate keeps the intermediate after it.
    let api = pem_certs(&std::fs::read(etc.join("pki/apiserver.crt")).unwrap());
    f.check(api.len() == 2 && api[1] == w.corp.der("ca.crt"), || {
        format!("apiserver.crt holds {} certificate(s), not leaf + intermediate", api.len())
    });

    // 9. The real kubeadm detects external CA and uses every certificate and kubeconfig.
    if let Some(tools) = live::Tools::find_with(&["kubeadm"]) {
        let scratch = w.dir.join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let ns = live::Netns::new(&scratch);
        ns.add_address("198.51.100.41");
        let r = live::kubeadm(&ns, &tools, &root, &["init", "phase", "certs", "all", "--config", "/etc/kubernetes/kubeadm-init.yaml"]);
        assert!(r.ok(), "kubeadm init phase certs all: {}", r.describe());
        let all = format!("{}\n{}", r.stdout, r.stderr);
        f.check(all.contains("Using existing ca keyless certificate authority"), || format!("kubeadm did not detect external CA:\n{all}"));
        for c in live::KUBEADM_LEAVES {
            let e = format!("Using existing {c} certificate and key on disk");
            f.check(all.contains(&e), || format!("kubeadm did not say {e:?}:\n{all}"));
        }
        let r = live::kubeadm(&ns, &tools, &root, &["init", "phase", "kubeconfig", "all", "--config", "/etc/kubernetes/kubeadm-init.yaml"]);
        f.check(r.ok(), || format!("kubeadm init phase kubeconfig all: {}", r.describe()));
        let all = format!("{}\n{}", r.stdout, r.stderr);
        for conf in ["admin.conf", "super-admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf"] {
            f.check(all.contains(&format!("External CA mode: Using user provided {conf}")), || format!("{conf}:\n{all}"));
        }
        let r = live::kubeadm(&ns, &tools, &root, &["certs", "check-expiration", "--config", "/etc/kubernetes/kubeadm-init.yaml"]);
        f.note(format!("kubeadm certs check-expiration after import-signed:\n{}{}", r.stdout, r.stderr));
        f.check(digests(&root) == imported, || "kubeadm changed the tree".into());
    }
    f.finish("renew_on_a_node_tree_writes_csrs_and_import_signed_puts_the_certificates_back");
}

/// The certificate a file of cp1's tarball held (before the tree was renewed).
fn before_import_der(w: &Work, rel: &str) -> Vec<u8> {
    let bytes = tarball_files(&w.bundle().join("nodes/cp1.tar.gz"))[rel].clone();
    if rel.ends_with(".conf") {
        return pem_certs(&kubeconfig_values(&String::from_utf8(bytes).unwrap(), "client-certificate-data")[0])[0].clone();
    }
    pem_certs(&bytes)[0].clone()
}

/// The `key:` lines of a kubeconfig.
fn kubeconfig_lines(text: &str, key: &str) -> Vec<String> {
    text.lines().filter(|l| l.trim_start().starts_with(&format!("{key}:"))).map(str::to_string).collect()
}
