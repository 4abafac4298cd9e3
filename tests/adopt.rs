//! `kubebundle adopt`: the real kubeadm v1.24 and v1.32 trees of ../shared/fixtures (copied
//! first: the fixtures are read-only) are adopted with the config each was made from; the state's
//! CAs, keys and service-account pair are the tree's (compared with openssl), a worker generated
//! afterwards verifies against the tree's own ca.crt and join.txt pins the tree's CA, `verify`
//! passes, and the tree is byte-identical (modes included) after adopt and generate. A control
//! plane of a hardway and of a binary bundle, extracted as a live root, is adopted too: its CAs,
//! its sa key and its encryption keys are the bundle's. Each refusal exits as the conventions say,
//! names the file or field, and writes nothing.

mod common;
mod live;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The run's clock: after both fixtures were made (2026-11-22, 2026-12-03), long before they end.
const NOW: &str = "2026-12-10T00:00:00Z";
const NOW_UNIX_S: &str = "1796860800";

const V124: &str = "kubeadm-v1.24-etc-kubernetes";
const V132: &str = "kubeadm-v1.32-etc-kubernetes";

/// A copy of a fixture tree as kubeadm leaves it on a host: `<root>/etc/kubernetes`, keys,
/// sa.pub and kubeconfigs 0600, certificates 0644 (git keeps no modes).
fn host_copy(tmp: &Path, fixture: &str) -> PathBuf {
    let etc = tmp.join("root/etc/kubernetes");
    copy_dir(&fixtures_dir().join(fixture), &etc);
    for (rel, _) in file_bytes(&etc) {
        let p = etc.join(&rel);
        let mode = if rel.ends_with(".crt") { 0o644 } else { 0o600 };
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    for d in ["", "pki", "pki/etcd"] {
        std::fs::set_permissions(etc.join(d), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    etc
}

/// Every entry under `root` with its mode and bytes.
fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    walk(root)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The fixture's kubeadm config plus an Inventory of its control plane and one worker.
fn with_worker(config: &str) -> String {
    format!(
        "{config}\n---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n- {{name: cp1, address: 198.51.100.10, roles: [control-plane, etcd]}}\n- {{name: worker1, address: 198.51.100.21, roles: [worker]}}\n"
    )
}

fn adopt(dir: &Path, tree: &Path, config: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["adopt", "--dir", tree.to_str().unwrap(), "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(["--now", NOW]);
    args.extend(extra);
    kubebundle(dir, &args, &[])
}

/// DER of what `openssl <kind> -in file` reads (x509 certificates, pkey private keys, public keys).
fn der(kind: &str, file: &Path) -> Vec<u8> {
    let f = file.to_str().unwrap();
    let args: Vec<&str> = match kind {
        "x509" => vec!["x509", "-in", f, "-outform", "der"],
        "pkey" => vec!["pkey", "-in", f, "-outform", "der"],
        _ => vec!["pkey", "-pubin", "-in", f, "-outform", "der"],
    };
    let r = openssl(&args);
    assert!(r.ok(), "{}", r.describe());
    r.stdout_bytes
}

fn sh(script: &str) -> Run {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script).env("LC_ALL", "C");
    run_cmd(c)
}

fn sha256_hex(file: &Path) -> String {
    let r = openssl(&["dgst", "-sha256", "-r", file.to_str().unwrap()]);
    assert!(r.ok(), "{}", r.describe());
    r.stdout.split_whitespace().next().unwrap_or_default().to_string()
}

fn openssl_verify(ca: &Path, cert: &Path) -> Result<(), String> {
    let r = openssl(&["verify", "-attime", NOW_UNIX_S, "-CAfile", ca.to_str().unwrap(), cert.to_str().unwrap()]);
    if r.ok() && r.stdout.contains(": OK") {
        Ok(())
    } else {
        Err(r.describe())
    }
}

/// The secret lines of a PEM key (its base64 body), which must never be printed.
fn key_body(file: &Path) -> Vec<String> {
    read_string(file).unwrap().lines().filter(|l| !l.starts_with("-----")).map(String::from).collect()
}

fn adopt_real_tree(fixture: &str) {
    let tmp = temp_dir("adopt");
    let t = tmp.path();
    let etc = host_copy(t, fixture);
    let root = t.join("root");
    let before = snapshot(&root);
    let config = write(t, "kubeadm-config.yaml", &fixture_config(fixture));
    let out = t.join("out");
    let mut f = Failures::default();

    // The cluster has no encryption at rest: refused without --new-encryption-key.
    let run = adopt(t, &etc, &config, &out, &[]);
    f.check(run.code == Some(2), || format!("adopt without encryption at rest must exit 2: {}", run.describe()));
    f.check(run.stderr.contains("--encryption-provider-config") && run.stderr.contains("--new-encryption-key"), || {
        format!("names the flag and the fix: {}", run.stderr)
    });
    f.check(nonempty_contents(&out).is_none(), || format!("{fixture}: a refusal wrote {:?}", nonempty_contents(&out)));

    let run = adopt(t, &etc, &config, &out, &["--new-encryption-key"]);
    assert!(run.ok(), "{}", run.describe());
    let adopted_out = run.stdout.clone();
    let state = out.join("kubernetes/state");
    // What was taken from where is printed (no secret) and recorded.
    for rel in ["pki/ca.crt", "pki/ca.key", "pki/front-proxy-ca.key", "pki/etcd/ca.key", "pki/sa.key", "pki/sa.pub"] {
        let file = etc.join(rel);
        let shown = file.display().to_string();
        let digest = sha256_hex(&file);
        f.check(run.stdout.lines().any(|l| l.contains(&shown) && l.contains(&digest)), || {
            format!("{fixture}: stdout lacks a row for {shown} with {digest}:\n{}", run.stdout)
        });
        let adopted = read_string(&state.join("adopted.yaml")).unwrap_or_default();
        f.check(adopted.contains(&shown) && adopted.contains(&digest), || {
            format!("{fixture}: adopted.yaml lacks {shown} {digest}:\n{adopted}")
        });
    }
    for rel in ["pki/ca.key", "pki/sa.key", "pki/etcd/ca.key", "pki/front-proxy-ca.key"] {
        for line in key_body(&etc.join(rel)) {
            f.check(!run.stdout.contains(&line) && !run.stderr.contains(&line), || format!("{fixture}: a line of {rel} was printed"));
        }
    }
    let secret = read_string(&state.join("encryption.yaml")).unwrap_or_default();
    let secret = secret.lines().find_map(|l| l.trim().strip_prefix("secret:")).unwrap_or("?").trim().trim_matches('"').to_string();
    f.check(secret.len() == 44 && !run.stdout.contains(&secret) && !run.stderr.contains(&secret), || {
        format!("{fixture}: the new encryption key is printed or absent")
    });

    // The state's CAs, keys and sa pair are the tree's.
    for (tree_rel, state_rel) in [("pki/ca", "pki/ca"), ("pki/front-proxy-ca", "pki/front-proxy-ca"), ("pki/etcd/ca", "pki/etcd/ca")] {
        let (tc, sc) = (etc.join(format!("{tree_rel}.crt")), state.join(format!("{state_rel}.crt")));
        f.check(der("x509", &tc) == der("x509", &sc), || format!("{fixture}: {state_rel}.crt is not the tree's {tree_rel}.crt"));
        let (tk, sk) = (etc.join(format!("{tree_rel}.key")), state.join(format!("{state_rel}.key")));
        f.check(der("pkey", &tk) == der("pkey", &sk), || format!("{fixture}: {state_rel}.key is not the tree's"));
    }
    f.check(der("pkey", &etc.join("pki/sa.key")) == der("pkey", &state.join("pki/sa.key")), || format!("{fixture}: sa.key differs"));
    f.check(der("pub", &etc.join("pki/sa.pub")) == der("pub", &state.join("pki/sa.pub")), || format!("{fixture}: sa.pub differs"));
    let manifest = read_string(&state.join("manifest.yaml")).unwrap_or_default();
    for id in ["id: ca", "id: front-proxy-ca", "id: etcd-ca", "id: sa", "id: encryption-key/key1"] {
        f.check(manifest.contains(id), || format!("{fixture}: manifest.yaml lacks {id}:\n{manifest}"));
    }
    f.check(!manifest.contains("external: true"), || format!("{fixture}: every CA key is in the tree: {manifest}"));
    f.check(snapshot(&root) == before, || format!("{fixture}: adopt changed the tree"));
    // The lifecycle commands take the adopted state as it is.
    let run = kubebundle(t, &["certs", "check-expiration", "--dir", state.to_str().unwrap(), "--now", NOW], &[]);
    f.check(run.ok() && ["ca ", "etcd-ca", "front-proxy-ca"].iter().all(|c| run.stdout.contains(c)), || {
        format!("{fixture}: check-expiration on the adopted state: {}", run.describe())
    });

    // A worker generated afterwards is signed by the cluster's own CA.
    let gen_config = write(t, "cluster.yaml", &with_worker(&fixture_config(fixture)));
    let cfg = gen_config.to_str().unwrap();
    let run = kubebundle(t, &["generate", "--config", cfg, "--out", out.to_str().unwrap(), "--now", NOW], &[]);
    assert!(run.ok(), "{fixture}: generate on the adopted state: {}", run.describe());
    f.check(run.stderr.contains("reused ca from the state") && run.stderr.contains("reused sa.key"), || {
        format!("{fixture}: generate made new secrets: {}", run.stderr)
    });
    let bundle = out.join("kubernetes");
    let hash = sh(&format!(
        "openssl x509 -pubkey -noout -in {} | openssl pkey -pubin -outform der | openssl dgst -sha256 -r",
        etc.join("pki/ca.crt").display()
    ));
    let hash = format!("sha256:{}", hash.stdout.split_whitespace().next().unwrap_or("?"));
    let join = read_string(&bundle.join("join.txt")).unwrap_or_default();
    f.check(join.contains(&format!("--discovery-token-ca-cert-hash {hash}")), || {
        format!("{fixture}: join.txt does not pin the tree's CA {hash}:\n{join}")
    });
    let worker = t.join("worker1");
    extract(&bundle.join("nodes/worker1.tar.gz"), &worker);
    let tree_ca = etc.join("pki/ca.crt");
    if let Err(e) = openssl_verify(&tree_ca, &worker.join("var/lib/kubelet/pki/kubelet.crt")) {
        f.fail(format!("{fixture}: worker1's kubelet serving certificate against the tree's ca.crt: {e}"));
    }
    f.check(der("x509", &worker.join("etc/kubernetes/pki/ca.crt")) == der("x509", &tree_ca), || {
        format!("{fixture}: worker1's ca.crt is not the tree's")
    });
    let boot = read_string(&worker.join("etc/kubernetes/bootstrap-kubelet.conf")).unwrap_or_default();
    let data = boot.lines().find_map(|l| l.trim().strip_prefix("certificate-authority-data:")).unwrap_or("").trim().to_string();
    let ca_from_conf = write(t, "boot-ca.b64", &data);
    let decoded = openssl(&["base64", "-d", "-A", "-in", ca_from_conf.to_str().unwrap()]);
    f.check(decoded.stdout_bytes == read(&tree_ca).unwrap(), || format!("{fixture}: bootstrap-kubelet.conf's CA is not the tree's ca.crt"));
    let cp = t.join("cp1");
    extract(&bundle.join("nodes/cp1.tar.gz"), &cp);
    for (ca, leaf) in [
        ("pki/ca.crt", "pki/apiserver.crt"),
        ("pki/etcd/ca.crt", "pki/etcd/server.crt"),
        ("pki/front-proxy-ca.crt", "pki/front-proxy-client.crt"),
    ] {
        if let Err(e) = openssl_verify(&etc.join(ca), &cp.join("etc/kubernetes").join(leaf)) {
            f.fail(format!("{fixture}: cp1's {leaf} against the tree's {ca}: {e}"));
        }
    }
    // cp1's own leaves were taken as they are: its tarball packs the tree's certificates.
    for leaf in live::KUBEADM_LEAVES {
        let (ours, theirs) = (cp.join("etc/kubernetes/pki").join(format!("{leaf}.crt")), etc.join(format!("pki/{leaf}.crt")));
        f.check(der("x509", &ours) == der("x509", &theirs), || format!("{fixture}: cp1's {leaf}.crt is not the tree's"));
        let (ours, theirs) = (cp.join("etc/kubernetes/pki").join(format!("{leaf}.key")), etc.join(format!("pki/{leaf}.key")));
        f.check(der("pkey", &ours) == der("pkey", &theirs), || format!("{fixture}: cp1's {leaf}.key is not the tree's"));
    }
    let client_cert = |conf: &Path| {
        let text = read_string(conf).unwrap_or_default();
        text.lines().find_map(|l| l.trim().strip_prefix("client-certificate-data:").map(|v| v.trim().to_string())).unwrap_or_default()
    };
    for conf in ["admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"] {
        let (ours, theirs) = (client_cert(&cp.join("etc/kubernetes").join(conf)), client_cert(&etc.join(conf)));
        f.check(!ours.is_empty() && ours == theirs, || format!("{fixture}: cp1's {conf} does not hold the tree's client certificate"));
    }
    f.check(
        adopted_out.contains("leaf certificates of cp1 taken as they are (generate packs them unchanged): admin.conf, apiserver,"),
        || format!("{fixture}: adopt did not say which leaves it took:\n{adopted_out}"),
    );
    let run = kubebundle(t, &["verify", bundle.to_str().unwrap(), "--now", NOW], &[]);
    f.check(run.ok(), || format!("{fixture}: verify on the adopted bundle: {}", run.describe()));
    let run = kubebundle(t, &["certs", "check-expiration", "--dir", bundle.to_str().unwrap(), "--now", NOW], &[]);
    f.check(run.ok(), || format!("{fixture}: check-expiration on the bundle: {}", run.describe()));
    let run = kubebundle(t, &["token", "list", "--dir", bundle.to_str().unwrap(), "--now", NOW], &[]);
    f.check(run.ok(), || format!("{fixture}: token list on the bundle: {}", run.describe()));
    // rotate ca start on the adopted state: the cluster's CA and a new one trusted, both pinned.
    let run = kubebundle(t, &["rotate", "ca", "ca", "start", "--config", cfg, "--out", out.to_str().unwrap(), "--now", NOW], &[]);
    f.check(run.ok(), || format!("{fixture}: rotate ca ca start on the adopted state: {}", run.describe()));
    let join = read_string(&bundle.join("join.txt")).unwrap_or_default();
    let pins = join.lines().find(|l| l.starts_with("kubeadm join ")).map(|l| l.matches("--discovery-token-ca-cert-hash").count());
    f.check(join.contains(&hash) && pins == Some(2), || {
        format!("{fixture}: after rotate ca start join.txt pins {pins:?}, not the tree's CA and the new one:\n{join}")
    });
    let run = kubebundle(t, &["verify", bundle.to_str().unwrap(), "--now", NOW], &[]);
    f.check(run.ok(), || format!("{fixture}: verify after rotate ca start: {}", run.describe()));
    f.check(snapshot(&root) == before, || format!("{fixture}: the tree changed after generate and rotate"));
    f.finish(fixture);
}

/// The config with an Inventory of its control plane alone, without the etcd role.
fn with_cp_only(config: &str) -> String {
    format!("{config}\n---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n- {{name: cp1, address: 198.51.100.10, roles: [control-plane]}}\n")
}

fn fixture_config(name: &str) -> String {
    fixture(&format!("{name}.kubeadm-config.yaml"))
}

#[test]
fn the_real_kubeadm_v1_24_tree_is_adopted() {
    adopt_real_tree(V124);
}

#[test]
fn the_real_kubeadm_v1_32_tree_is_adopted() {
    adopt_real_tree(V132);
}

fn profile_config(profile: &str) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: hw\nkubernetesVersion: v1.32.13\nencryptionAlgorithm: ECDSA-P256\n---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nprofile: {profile}\nnodes:\n- {{name: cp1, address: 10.0.0.11, roles: [control-plane, etcd]}}\n- {{name: worker1, address: 10.0.0.21, roles: [worker]}}\n"
    )
}

/// A control plane of a bundle of `profile`, extracted as a live root, is adopted into a fresh
/// directory: the CAs are the bundle's (the keys the layout keeps on the node too; the others are
/// external CAs), and so are the sa key and the encryption keys the apiserver's unit names.
fn adopt_extracted(profile: &str) {
    let tmp = temp_dir(&format!("adopt-{profile}"));
    let t = tmp.path();
    let config = write(t, "cluster.yaml", &profile_config(profile));
    let made = t.join("made");
    let run = kubebundle(t, &["generate", "--config", config.to_str().unwrap(), "--out", made.to_str().unwrap(), "--now", NOW], &[]);
    assert!(run.ok(), "{}", run.describe());
    let original = made.join("hw/state");
    let root = t.join("root");
    extract(&made.join("hw/nodes/cp1.tar.gz"), &root);
    let before = snapshot(&root);
    let out = t.join("out");
    let run = adopt(t, &root, &config, &out, &[]);
    assert!(run.ok(), "{profile}: {}", run.describe());
    let state = out.join("hw/state");
    let mut f = Failures::default();
    for crt in ["pki/ca.crt", "pki/front-proxy-ca.crt", "pki/etcd/ca.crt"] {
        f.check(der("x509", &original.join(crt)) == der("x509", &state.join(crt)), || format!("{profile}: {crt} is not the bundle's"));
    }
    f.check(der("pkey", &original.join("pki/ca.key")) == der("pkey", &state.join("pki/ca.key")), || format!("{profile}: ca.key"));
    f.check(der("pkey", &original.join("pki/sa.key")) == der("pkey", &state.join("pki/sa.key")), || format!("{profile}: sa.key"));
    f.check(read(&original.join("encryption.yaml")) == read(&state.join("encryption.yaml")), || {
        format!("{profile}: encryption.yaml is not the bundle's")
    });
    // The layout keeps the front-proxy and etcd CA keys on no node: external CAs.
    let manifest = read_string(&state.join("manifest.yaml")).unwrap_or_default();
    f.check(manifest.matches("external: true").count() == 2, || format!("{profile}: two external CAs expected:\n{manifest}"));
    f.check(!state.join("pki/front-proxy-ca.key").exists() && !state.join("pki/etcd/ca.key").exists(), || {
        format!("{profile}: a keyless CA got a key")
    });
    f.check(run.stdout.contains("encryption key key1 (aescbc)") && run.stdout.contains("front-proxy-ca: its key is"), || {
        format!("{profile}: {}", run.stdout)
    });
    f.check(snapshot(&root) == before, || format!("{profile}: adopt changed the tree"));
    f.finish(profile);
}

#[test]
fn a_hardway_control_plane_is_adopted() {
    adopt_extracted("hardway");
}

#[test]
fn a_binary_control_plane_is_adopted() {
    adopt_extracted("binary");
}

#[test]
fn refusals_name_the_file_or_field_and_write_nothing() {
    let tmp = temp_dir("adopt-refuse");
    let t = tmp.path();
    let etc = host_copy(t, V132);
    let root = t.join("root");
    let before = snapshot(&root);
    let good = fixture_config(V132);
    let out = t.join("out");
    let mut f = Failures::default();
    let mut refused = |name: &str, tree: &Path, config: &str, extra: &[&str], code: i32, needles: &[&str]| {
        let cfg = write(t, &format!("{name}.yaml"), config);
        let mut args = vec!["--new-encryption-key"];
        args.extend(extra);
        let run = adopt(t, tree, &cfg, &out, &args);
        f.check(run.code == Some(code), || format!("{name}: exit {code} expected: {}", run.describe()));
        for n in needles {
            f.check(run.stderr.contains(n), || format!("{name}: stderr lacks {n:?}: {}", run.stderr));
        }
        f.check(nonempty_contents(&out).is_none(), || format!("{name}: wrote {:?}", nonempty_contents(&out)));
    };
    let admin = etc.join("admin.conf").display().to_string();
    refused(
        "name",
        &etc,
        &good.replace("clusterName: kubernetes", "clusterName: other"),
        &[],
        2,
        &["ClusterConfiguration.clusterName is \"other\"", &admin, "\"kubernetes\""],
    );
    refused(
        "endpoint",
        &etc,
        &good.replace("controlPlaneEndpoint: 127.0.0.1:6443", "controlPlaneEndpoint: 10.1.1.1:6443"),
        &[],
        2,
        &[
            "ClusterConfiguration.controlPlaneEndpoint gives https://10.1.1.1:6443",
            "https://127.0.0.1:6443",
            &admin,
            "10.1.1.1 is not among the SANs",
        ],
    );
    refused(
        "subnet",
        &etc,
        &good.replace("serviceSubnet: 10.96.0.0/12", "serviceSubnet: 10.112.0.0/12"),
        &[],
        2,
        &["networking.serviceSubnet", "10.112.0.1"],
    );
    refused(
        "external-etcd",
        &etc,
        &with_cp_only(&good).replace("networking:", "etcd:\n  external:\n    endpoints: [https://10.0.0.5:2379]\n    caFile: /etc/etcd/ca.crt\n    certFile: /etc/etcd/c.crt\n    keyFile: /etc/etcd/c.key\nnetworking:"),
        &[],
        2,
        &["etcd is external", "etcd/server.crt"],
    );
    let nothing = t.join("nothing");
    std::fs::create_dir_all(nothing.join("etc")).unwrap();
    std::fs::write(nothing.join("etc/hostname"), "h\n").unwrap();
    refused("unrecognised", &nothing, &good, &[], 2, &["matches no layout", "etc/hostname"]);

    // A key that cannot be read (a link to nothing), one that is another key, an sa.pub of
    // another key: each named.
    let broken = t.join("broken/etc/kubernetes");
    copy_dir(&etc, &broken);
    std::fs::remove_file(broken.join("pki/ca.key")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/ca.key", broken.join("pki/ca.key")).unwrap();
    refused("unreadable", &broken, &good, &[], 1, &[&broken.join("pki/ca.key").display().to_string(), "cannot be read"]);
    std::fs::remove_file(broken.join("pki/ca.key")).unwrap();
    std::fs::copy(etc.join("pki/front-proxy-ca.key"), broken.join("pki/ca.key")).unwrap();
    refused("other-key", &broken, &good, &[], 2, &[&broken.join("pki/ca.key").display().to_string()]);
    std::fs::copy(etc.join("pki/ca.key"), broken.join("pki/ca.key")).unwrap();
    let other = openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let other_key = write(t, "other.key", &other.stdout);
    let other_pub = openssl(&["pkey", "-in", other_key.to_str().unwrap(), "-pubout"]);
    std::fs::write(broken.join("pki/sa.pub"), &other_pub.stdout).unwrap();
    refused("sa-pub", &broken, &good, &[], 2, &[&broken.join("pki/sa.pub").display().to_string(), "not the public key of"]);

    // A worker's tree is no control plane's.
    let wcfg = write(t, "w.yaml", &profile_config("kubeadm"));
    let made = t.join("made");
    let run = kubebundle(t, &["generate", "--config", wcfg.to_str().unwrap(), "--out", made.to_str().unwrap(), "--now", NOW], &[]);
    assert!(run.ok(), "{}", run.describe());
    let wroot = t.join("wroot");
    extract(&made.join("hw/nodes/worker1.tar.gz"), &wroot);
    refused("worker", &wroot, &profile_config("kubeadm"), &[], 2, &["not a control plane's"]);
    f.check(snapshot(&root) == before, || "a refusal changed the tree".into());
    let run = kubebundle(t, &["adopt", "--dir", etc.to_str().unwrap(), "--out", out.to_str().unwrap()], &[]);
    f.check(run.code == Some(2) && run.stderr.contains("adopt needs --config"), || format!("adopt without --config: {}", run.describe()));

    // An existing state is refused (exit 1) and kept byte for byte; --force replaces it and
    // keeps the old one in a backup.
    let cfg = write(t, "good.yaml", &good);
    let run = adopt(t, &etc, &cfg, &out, &["--new-encryption-key"]);
    assert!(run.ok(), "{}", run.describe());
    let state = out.join("kubernetes/state");
    let kept = file_bytes(&state);
    let run = adopt(t, &etc, &cfg, &out, &["--new-encryption-key"]);
    f.check(run.code == Some(1), || format!("a second adopt must exit 1: {}", run.describe()));
    f.check(run.stderr.contains("already holds a bundle") && run.stderr.contains("--force"), || run.stderr.clone());
    f.check(file_bytes(&state) == kept, || "the refused adopt changed the state".into());
    let run = adopt(t, &etc, &cfg, &out, &["--new-encryption-key", "--force"]);
    f.check(run.ok(), || format!("adopt --force: {}", run.describe()));
    let backups: Vec<String> = list_dir(&out).into_iter().filter(|n| n.starts_with("kubebundle-backup-")).collect();
    f.check(backups.len() == 1 && file_bytes(&out.join(&backups[0]).join("state")) == kept, || {
        format!("the old state is not kept whole: {backups:?}")
    });
    f.check(run.stdout.contains("previous one is kept in"), || run.stdout.clone());
    f.check(snapshot(&root) == before, || "adopt --force changed the tree".into());
    f.finish("refusals");
}

/// A leaf of the tree that is not what the plan wants (the config asks for one more SAN) is left
/// to generate, which issues it anew; the others are taken. adopt says which.
#[test]
fn a_leaf_the_plan_wants_otherwise_is_issued_anew() {
    let tmp = temp_dir("adopt-leaf");
    let t = tmp.path();
    let etc = host_copy(t, V132);
    let config = fixture_config(V132).replace("  - extra.example.com\n", "  - extra.example.com\n  - more.example.com\n");
    let config = write(t, "c.yaml", &config);
    let out = t.join("out");
    let run = adopt(t, &etc, &config, &out, &["--new-encryption-key"]);
    assert!(run.ok(), "{}", run.describe());
    assert!(
        run.stdout.contains("leaf certificates of cp1 generate issues anew, with new keys: apiserver (its subject, SANs"),
        "{}",
        run.stdout
    );
    let taken = run.stdout.lines().find(|l| l.starts_with("leaf certificates of cp1 taken as they are")).unwrap_or_default();
    assert!(taken.contains("apiserver-etcd-client") && !taken.contains(" apiserver,"), "{taken}");
    let leaves = read_string(&out.join("kubernetes/state/leaves.json")).unwrap();
    assert!(!leaves.contains("\"id\": \"apiserver\"") && leaves.contains("\"id\": \"front-proxy-client\""), "{leaves}");
}

/// The real kubeadm v1.32.13 (K8S_BIN; `--rootfs`, in a private network namespace) takes every
/// certificate, the sa key and every kubeconfig of the control plane generated from an adopted
/// v1.32 tree as existing, and writes nothing: the bundle is the cluster kubeadm made.
#[test]
fn kubeadm_uses_every_file_of_the_adopted_control_plane() {
    let Some(tools) = live::Tools::find_with(&["kubeadm"]) else { return };
    let tmp = temp_dir("adopt-kubeadm");
    let t = tmp.path();
    let etc = host_copy(t, V132);
    // The binaries check validity against the real clock.
    let now = rfc3339(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64);
    let config = write(t, "c.yaml", &with_worker(&fixture_config(V132)));
    let out = t.join("out");
    let run = kubebundle(
        t,
        &[
            "adopt",
            "--dir",
            etc.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--now",
            &now,
            "--new-encryption-key",
        ],
        &[],
    );
    assert!(run.ok(), "{}", run.describe());
    let run = kubebundle(t, &["generate", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--now", &now], &[]);
    assert!(run.ok(), "{}", run.describe());
    let root = t.join("root-cp");
    extract(&out.join("kubernetes/nodes/cp1.tar.gz"), &root);
    let scratch = t.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let ns = live::Netns::new(&scratch);
    ns.add_address("198.51.100.10");
    let before = file_bytes(&root);
    let kubeadm = |args: &[&str]| live::kubeadm(&ns, &tools, &root, args);
    let mut f = Failures::new();
    let r = kubeadm(&["init", "phase", "certs", "all", "--config", "/etc/kubernetes/kubeadm-init.yaml"]);
    assert!(r.ok(), "kubeadm init phase certs all: {}", r.describe());
    let lines = live::said(&r, "certs");
    for e in live::certs_all_existing() {
        f.check(lines.contains(&e), || format!("kubeadm init phase certs all did not say {e:?}:\n{}\n{}", r.stdout, r.stderr));
    }
    let r = kubeadm(&["init", "phase", "kubeconfig", "all", "--config", "/etc/kubernetes/kubeadm-init.yaml"]);
    assert!(r.ok(), "kubeadm init phase kubeconfig all: {}", r.describe());
    let lines = live::said(&r, "kubeconfig");
    for k in ["admin", "super-admin", "kubelet", "controller-manager", "scheduler"] {
        let e = format!("Using existing kubeconfig file: \"/etc/kubernetes/{k}.conf\"");
        f.check(lines.contains(&e), || format!("kubeadm init phase kubeconfig all did not say {e:?}:\n{}\n{}", r.stdout, r.stderr));
    }
    f.check(file_bytes(&root) == before, || "kubeadm changed or added files in the control plane's tree".into());
    // The control plane's certificates are the tree's own: kubeadm finds the cluster it made.
    for leaf in live::KUBEADM_LEAVES {
        let (ours, theirs) = (root.join("etc/kubernetes/pki").join(format!("{leaf}.crt")), etc.join(format!("pki/{leaf}.crt")));
        f.check(der("x509", &ours) == der("x509", &theirs), || format!("cp1's {leaf}.crt is not the tree's"));
    }
    f.note("kubeadm v1.32.13: every certificate, the sa key and the 5 kubeconfigs of the adopted control plane \"Using existing\", the tree byte-identical");
    f.finish("kubeadm_uses_every_file_of_the_adopted_control_plane");
}

/// A cluster under a corporate intermediate: the tree's ca.crt is the intermediate alone (its
/// root is on no node), so adopt refuses it naming --chain; with `--chain root.crt` the state
/// holds the same CA and chain as the bundle the tree came from, and generate on it verifies.
#[test]
fn an_intermediate_ca_is_adopted_with_its_chain() {
    use common::corp::{corp_cnf, Corp};
    let tmp = temp_dir("adopt-chain");
    let t = tmp.path();
    let corp = Corp::new(t, &corp_cnf("none", false, ""), "250101000000Z", "400101000000Z");
    corp.key("int");
    corp.csr("int", "/O=Example Corp/CN=kubernetes int");
    corp.sign("ca.cnf", "root", "int.csr", "int.crt", &["-extensions", "v3_int"]);
    let config = write(t, "cluster.yaml", &profile_config("kubeadm"));
    let cfg = config.to_str().unwrap();
    let made = t.join("made");
    let m = made.to_str().unwrap();
    let (int_crt, int_key, root_crt) = (corp.path("int.crt"), corp.path("int.key"), corp.path("root.crt"));
    let run = kubebundle(
        t,
        &["ca", "import", "ca", "--cert", &int_crt, "--key", &int_key, "--chain", &root_crt, "--config", cfg, "--out", m, "--now", NOW],
        &[],
    );
    assert!(run.ok(), "{}", run.describe());
    let run = kubebundle(t, &["generate", "--config", cfg, "--out", m, "--now", NOW], &[]);
    assert!(run.ok(), "{}", run.describe());
    let root = t.join("root");
    extract(&made.join("hw/nodes/cp1.tar.gz"), &root);
    let before = snapshot(&root);
    let out = t.join("out");
    let run = adopt(t, &root, &config, &out, &[]);
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(
        run.stderr.contains("pki/ca.crt") && run.stderr.contains("--chain") && run.stderr.contains("self-signed root"),
        "{}",
        run.stderr
    );
    assert!(nonempty_contents(&out).is_none());
    let run = adopt(t, &root, &config, &out, &["--chain", &root_crt]);
    assert!(run.ok(), "{}", run.describe());
    let (ours, theirs) = (out.join("hw/state/pki"), made.join("hw/state/pki"));
    assert_eq!(read(&ours.join("ca.crt")), read(&theirs.join("ca.crt")));
    assert_eq!(read(&ours.join("ca-chain.crt")), read(&theirs.join("ca-chain.crt")));
    assert!(run.stdout.contains("ca chain (1 certificate(s) up to its root)"), "{}", run.stdout);
    let run = kubebundle(t, &["generate", "--config", cfg, "--out", out.to_str().unwrap(), "--now", NOW], &[]);
    assert!(run.ok(), "{}", run.describe());
    let run = kubebundle(t, &["verify", out.join("hw").to_str().unwrap(), "--now", NOW], &[]);
    assert!(run.ok(), "{}", run.describe());
    assert!(snapshot(&root) == before, "adopt changed the tree");
}

/// A control plane that joined with a kubeadm JoinConfiguration holds its bootstrap token: adopt
/// records it (kubeadm's usages and groups, 24h from now), and generate on the adopted state joins
/// the new worker with it.
#[test]
fn a_bootstrap_token_in_the_tree_is_kept() {
    let tmp = temp_dir("adopt-token");
    let t = tmp.path();
    let text = profile_config("kubeadm")
        .replace("- {name: worker1", "- {name: cp2, address: 10.0.0.12, roles: [control-plane, etcd]}\n- {name: worker1");
    let config = write(t, "cluster.yaml", &text);
    let cfg = config.to_str().unwrap();
    let made = t.join("made");
    let run = kubebundle(t, &["generate", "--config", cfg, "--out", made.to_str().unwrap(), "--now", NOW], &[]);
    assert!(run.ok(), "{}", run.describe());
    let join = read_string(&made.join("hw/join.txt")).unwrap();
    let token = find_tokens(&join).into_iter().next().expect("a token in join.txt");
    let root = t.join("root");
    extract(&made.join("hw/nodes/cp2.tar.gz"), &root);
    let out = t.join("out");
    let run = adopt(t, &root, &config, &out, &[]);
    assert!(run.ok(), "{}", run.describe());
    let id = token.split('.').next().unwrap();
    assert!(run.stdout.contains(&format!("bootstrap token {id}: recorded")), "{}", run.stdout);
    assert!(!run.stdout.contains(&token) && !run.stderr.contains(&token), "the token was printed");
    let tokens = read_string(&out.join("hw/state/tokens.yaml")).unwrap();
    assert!(tokens.contains(&token) && tokens.contains("2026-12-11T00:00:00Z"), "{tokens}");
    let run = kubebundle(t, &["generate", "--config", cfg, "--out", out.to_str().unwrap(), "--now", NOW], &[]);
    assert!(run.ok(), "{}", run.describe());
    assert!(run.stderr.contains(&format!("reused bootstrap token {id}")), "{}", run.stderr);
    let join = read_string(&out.join("hw/join.txt")).unwrap();
    assert!(join.contains(&format!("--token {token}")), "{join}");
    // cp2's own leaves were taken; cp1's were not in the tree: issued.
    assert!(run.stderr.contains("leaf certificates:"), "{}", run.stderr);
}

/// kubeadm's own way to encrypt at rest: the static pod of the kube-apiserver names an
/// EncryptionConfiguration; adopt takes its keys with their providers in their order (a rotation in
/// progress: aescbc then secretbox), generate packs them so, and `rotate encryption|sa start` run
/// on the adopted bundle. The file missing is refused (exit 1, named), and identity first or a kms
/// provider is refused (exit 2, named); nothing is written in either case.
#[test]
fn the_encryption_keys_are_read_where_the_static_pod_says() {
    let tmp = temp_dir("adopt-enc");
    let t = tmp.path();
    let etc = host_copy(t, V132);
    std::fs::create_dir_all(etc.join("manifests")).unwrap();
    std::fs::create_dir_all(etc.join("enc")).unwrap();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n    - kube-apiserver\n    - --advertise-address=198.51.100.10\n    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml\n    name: kube-apiserver\n";
    std::fs::write(etc.join("manifests/kube-apiserver.yaml"), pod).unwrap();
    let (k1, k2) = ("MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=", "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXphYmNkZWY=");
    let enc = format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources:\n  - secrets\n  providers:\n  - aescbc:\n      keys:\n      - name: new\n        secret: {k2}\n      - name: old\n        secret: {k1}\n  - identity: {{}}\n");
    std::fs::write(etc.join("enc/enc.yaml"), &enc).unwrap();
    let root = t.join("root");
    let config = write(t, "c.yaml", &fixture_config(V132));
    let out = t.join("out");
    let mut f = Failures::new();

    let enc_path = etc.join("enc/enc.yaml");
    std::fs::rename(&enc_path, t.join("enc.yaml")).unwrap();
    let run = adopt(t, &etc, &config, &out, &[]);
    f.check(
        run.code == Some(1) && run.stderr.contains(&enc_path.display().to_string()) && run.stderr.contains("manifests/kube-apiserver.yaml"),
        || format!("a missing encryption config: {}", run.describe()),
    );
    let identity_first = enc.replace("  - identity: {}\n", "").replace("  - aescbc:", "  - identity: {}\n  - aescbc:");
    std::fs::write(&enc_path, identity_first).unwrap();
    let run = adopt(t, &etc, &config, &out, &[]);
    f.check(run.code == Some(2) && run.stderr.contains("identity comes first"), || format!("identity first: {}", run.describe()));
    let kms = enc.replace("  - identity: {}\n", "  - kms:\n      name: vault\n  - identity: {}\n");
    std::fs::write(&enc_path, kms).unwrap();
    let run = adopt(t, &etc, &config, &out, &[]);
    f.check(run.code == Some(2) && run.stderr.contains("the providers are aescbc, kms, identity"), || format!("kms: {}", run.describe()));
    f.check(nonempty_contents(&out).is_none(), || "a refusal wrote something".into());

    // A rotation in progress on the cluster: the new aescbc key first, the old secretbox key second.
    let enc = enc.replace("      - name: old\n", "  - secretbox:\n      keys:\n      - name: old\n");
    std::fs::write(&enc_path, &enc).unwrap();
    let before_ok = snapshot(&root);
    let run = adopt(t, &etc, &config, &out, &[]);
    f.check(run.ok(), || format!("adopt: {}", run.describe()));
    let state = read_string(&out.join("kubernetes/state/encryption.yaml")).unwrap_or_default();
    let names: Vec<&str> = state.lines().filter_map(|l| l.trim().strip_prefix("- name:").map(str::trim)).collect();
    f.check(names == ["new", "old"] && state.contains(k1) && state.contains(k2), || format!("encryption.yaml: {state}"));
    let manifest = read_string(&out.join("kubernetes/state/manifest.yaml")).unwrap_or_default();
    f.check(manifest.contains("encryption-key/new") && manifest.contains("encryption-key/old"), || manifest.clone());
    f.check(!run.stdout.contains(k1) && !run.stdout.contains(k2) && !run.stderr.contains(k1), || "a key was printed".into());
    f.check(
        run.stdout.lines().any(|l| l.starts_with("encryption key new (aescbc)") && l.contains(&enc_path.display().to_string()))
            && run.stdout.lines().any(|l| l.starts_with("encryption key old (secretbox)")),
        || run.stdout.clone(),
    );
    f.check(state.contains("provider: secretbox"), || format!("encryption.yaml does not keep old's provider: {state}"));

    // The bundle generate makes from the adopted state holds the tree's providers and keys in
    // order, and rotate works on it as on a bundle kubebundle made.
    let (cfg, o) = (config.to_str().unwrap(), out.to_str().unwrap());
    let run = kubebundle(t, &["generate", "--config", cfg, "--out", o, "--now", NOW], &[]);
    f.check(run.ok(), || format!("generate: {}", run.describe()));
    let cp = common::corp::tarball_files(&out.join("kubernetes/nodes/cp1.tar.gz"));
    let packed =
        cp.iter().find(|(p, _)| p.contains("encryption")).map(|(_, b)| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    let providers: Vec<&str> = packed
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ").and_then(|p| p.strip_suffix(':')))
        .filter(|p| *p != "resources")
        .collect();
    f.check(providers == ["aescbc", "secretbox"] && packed.contains(k1) && packed.contains(k2), || {
        format!("cp1's encryption config:\n{packed}")
    });
    for material in ["encryption", "sa"] {
        let run = kubebundle(t, &["rotate", material, "start", "--config", cfg, "--out", o, "--now", NOW], &[]);
        f.check(run.ok(), || format!("rotate {material} start on the adopted state: {}", run.describe()));
    }
    f.check(snapshot(&root) == before_ok, || "adopt changed the tree".into());
    f.finish("the_encryption_keys_are_read_where_the_static_pod_says");
}
