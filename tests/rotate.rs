//! `kubebundle rotate`: each phase of `rotate encryption` and `rotate sa` writes the bundle of
//! that phase (the control planes' EncryptionConfiguration with its providers and keys in order;
//! the units' and kube-apiserver patch's service-account key files), which `generate` then keeps
//! (`generate --check` up to date) and `verify` passes; the phase is in state/rotations.yaml and
//! `rotate status`, check-expiration names it; a phase out of order, a second start, an abort
//! after switch are refused (exit 1) naming the phase and the next command, writing nothing;
//! abort after start gives back the pre-start files byte for byte and archives the new key; the
//! in-between material is recorded (a changed sa-next.key is refused like any secret).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::rotation::RotationWork;
use common::*;

const NOW: &str = "2026-01-01T00:00:00Z";

fn sha256(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file under `dir` but the lock (relative path → sha256).
fn digests(dir: &Path) -> BTreeMap<String, String> {
    file_bytes(dir).into_iter().filter(|(p, _)| !p.contains(".lock")).map(|(p, b)| (p, sha256(&b))).collect()
}

/// Providers in order, each with its keys (name, decoded length).
type Providers = Vec<(String, Vec<(String, usize)>)>;

/// The providers of an EncryptionConfiguration in order, each with its keys (name, decoded length).
fn providers(text: &str) -> Providers {
    let v: serde_json::Value = serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(v["kind"], "EncryptionConfiguration");
    v["resources"][0]["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let (name, body) = p.as_object().unwrap().iter().next().unwrap();
            let keys = body["keys"]
                .as_array()
                .map(|ks| {
                    ks.iter()
                        .map(|k| {
                            let secret = base64::engine::general_purpose::STANDARD.decode(k["secret"].as_str().unwrap()).unwrap();
                            (k["name"].as_str().unwrap().to_string(), secret.len())
                        })
                        .collect()
                })
                .unwrap_or_default();
            (name.clone(), keys)
        })
        .collect()
}

fn p(name: &str, keys: &[&str]) -> (String, Vec<(String, usize)>) {
    (name.to_string(), keys.iter().map(|k| (k.to_string(), 32)).collect())
}

const HW_ENC: &str = "etc/k8s/kube-apiserver/encryption-config.yaml";

#[test]
fn encryption_phases_write_each_phase_in_order_and_generate_keeps_it() {
    let w = RotationWork::new("rot-enc", "profile: hardway\n");
    let mut f = Failures::new();
    let worker = sha256(&std::fs::read(w.bundle().join("nodes/w1.tar.gz")).unwrap());
    let phases: [(&[&str], Providers); 3] = [
        (
            &["encryption", "start", "--provider", "secretbox"],
            vec![p("aescbc", &["key1"]), p("secretbox", &["key2"]), ("identity".into(), vec![])],
        ),
        (&["encryption", "switch"], vec![p("secretbox", &["key2"]), p("aescbc", &["key1"]), ("identity".into(), vec![])]),
        (&["encryption", "finish"], vec![p("secretbox", &["key2"]), ("identity".into(), vec![])]),
    ];
    for (args, want) in phases {
        let step = args[1];
        let r = w.rotate(args);
        if !f.check(r.ok(), || format!("rotate {}: {}", args.join(" "), r.describe())) {
            continue;
        }
        for cp in ["cp1", "cp2"] {
            let text = w.node_file(cp, HW_ENC).unwrap_or_default();
            f.eq(&format!("{step}: {cp}'s providers and keys (32 bytes each)"), &want, &providers(&text));
        }
        f.eq(&format!("{step}: the worker's tarball"), &worker, &sha256(&std::fs::read(w.bundle().join("nodes/w1.tar.gz")).unwrap()));
        // What to roll out: the control planes' file, then kube-apiserver, in order.
        let out = &r.stdout;
        let files = out.find(&format!("cp1, cp2: /{HW_ENC}"));
        let restart = out.find("restart kube-apiserver on each control plane");
        f.check(files.is_some() && restart.is_some() && files < restart && out.contains("cp2: systemctl restart kube-apiserver"), || {
            format!("{step}: the roll-out does not name the files then the restart: {out}")
        });
        f.check(!out.contains("w1"), || format!("{step}: the worker is in the roll-out: {out}"));
        let phase = match step {
            "start" => "started",
            "switch" => "switched",
            _ => "finished",
        };
        f.check(w.state("rotations.yaml").contains(&format!("phase: {phase}")), || w.state("rotations.yaml"));
        w.up_to_date(&mut f, step);
        let status = w.rotate(&["status"]);
        f.check(
            status.ok() && status.stdout.lines().any(|l| l.starts_with("encryption") && l.contains(phase) && l.contains("key1 → key2")),
            || format!("{step}: rotate status: {}", status.describe()),
        );
        let exp = kubebundle(&w.dir, &["certs", "check-expiration", "--dir", w.bundle().to_str().unwrap(), "--now", NOW], &[]);
        let open = step != "finish";
        f.eq(
            &format!("{step}: check-expiration names the rotation in progress"),
            &open,
            &exp.stdout.contains("rotation in progress: encryption"),
        );
        if step == "switch" {
            f.check(
                out.contains("get secrets --all-namespaces -o json | kubectl --kubeconfig /etc/k8s/shared/admin.conf replace -f -"),
                || format!("switch prints no rewrite of every Secret: {out}"),
            );
        }
    }
    // finish: key1 left the state and its manifest, archived beside the bundle with the manifest that recorded it.
    f.check(!w.state("encryption.yaml").contains("key1") && !w.state("manifest.yaml").contains("encryption-key/key1"), || {
        w.state("manifest.yaml")
    });
    let backups: Vec<PathBuf> = std::fs::read_dir(w.dir.join("out"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("kubebundle-backup-"))
        .collect();
    let archived = backups.iter().any(|b| {
        std::fs::read_to_string(b.join("state/encryption.yaml")).is_ok_and(|t| t.contains("key1"))
            && std::fs::read_to_string(b.join("state/manifest.yaml")).is_ok_and(|t| t.contains("encryption-key/key1"))
    });
    f.check(archived, || format!("key1 is not archived in a backup: {backups:?}"));
    f.check(w.state("rotations.yaml").contains("phase: finished"), || w.state("rotations.yaml"));
    f.finish("encryption_phases_write_each_phase_in_order_and_generate_keeps_it");
}

#[test]
fn a_rotation_of_the_same_provider_adds_a_second_key_to_its_entry() {
    let w = RotationWork::new("rot-same", "");
    let mut f = Failures::new();
    let kubeadm_enc = "etc/kubernetes/encryption/encryption-config.yaml";
    f.check(w.rotate(&["encryption", "start"]).ok(), || "start".into());
    f.eq(
        "start",
        &vec![p("aescbc", &["key1", "key2"]), ("identity".into(), vec![])],
        &providers(&w.node_file("cp2", kubeadm_enc).unwrap()),
    );
    let r = w.rotate(&["encryption", "switch"]);
    f.eq(
        "switch",
        &vec![p("aescbc", &["key2", "key1"]), ("identity".into(), vec![])],
        &providers(&w.node_file("cp2", kubeadm_enc).unwrap()),
    );
    // kubeadm: the static pod restarted by stopping its container; the config path did not change.
    f.check(r.stdout.contains("crictl stop $(crictl ps -q --name '^kube-apiserver$')"), || r.stdout.clone());
    w.up_to_date(&mut f, "switch");
    f.finish("a_rotation_of_the_same_provider_adds_a_second_key_to_its_entry");
}

#[test]
fn phases_out_of_order_are_refused_and_write_nothing() {
    let w = RotationWork::new("rot-refuse", "");
    let mut f = Failures::new();
    let refuse = |f: &mut Failures, args: &[&str], says: &[&str]| {
        let before = digests(&w.dir.join("out"));
        let r = w.rotate(args);
        f.eq(&format!("exit code of rotate {}", args.join(" ")), &Some(1), &r.code);
        for s in says {
            f.check(r.stderr.contains(s), || format!("rotate {}: no {s:?} in {}", args.join(" "), r.stderr));
        }
        f.check(r.stderr.contains("nothing was written") && r.stderr.contains("hint: "), || r.stderr.clone());
        f.eq(&format!("every file after rotate {}", args.join(" ")), &before, &digests(&w.dir.join("out")));
    };
    refuse(&mut f, &["encryption", "switch"], &["no rotation of the encryption key is in progress", "kubebundle rotate encryption start"]);
    refuse(&mut f, &["encryption", "finish"], &["no rotation of the encryption key is in progress"]);
    refuse(&mut f, &["sa", "abort"], &["no rotation of the service-account key is in progress", "kubebundle rotate sa start"]);
    f.check(w.rotate(&["encryption", "start"]).ok(), || "start".into());
    refuse(&mut f, &["encryption", "start"], &["already in progress (started since", "kubebundle rotate encryption switch"]);
    refuse(&mut f, &["encryption", "finish"], &["is started", "not switched", "the next phase is `kubebundle rotate encryption switch"]);
    // Another material rotates on its own.
    f.check(w.rotate(&["sa", "start"]).ok(), || "sa start while encryption is open".into());
    refuse(&mut f, &["sa", "finish"], &["the rotation of the service-account key is started"]);
    f.check(w.rotate(&["encryption", "switch"]).ok(), || "switch".into());
    refuse(
        &mut f,
        &["encryption", "abort"],
        &["was switched at 2026-01-01T00:00:00Z", "finish it with `kubebundle rotate encryption finish", "rotate again afterwards"],
    );
    refuse(&mut f, &["encryption", "switch"], &["is switched", "the next phase is `kubebundle rotate encryption finish"]);
    // Another writer holds the bundle's lock: refused with generate's message, nothing written.
    let lock = w.dir.join("out/.kubebundle-rot.lock");
    let mut c = Command::new("flock");
    c.arg("-o").arg(&lock).args(["sleep", "10"]);
    let holder = Proc::spawn("flock", c, w.dir.join("flock.log"));
    let held = wait_for(std::time::Duration::from_secs(5), || {
        let mut probe = Command::new("flock");
        probe.arg("-n").arg(&lock).arg("true");
        (!run_cmd(probe).ok()).then_some(())
    });
    assert!(held.is_some(), "flock did not take {}", lock.display());
    let before = digests(&w.dir.join("out"));
    let r = w.rotate(&["encryption", "finish"]);
    f.check(r.code == Some(1) && r.stderr.contains("another kubebundle command is writing"), || {
        format!("under a held lock: {}", r.describe())
    });
    f.eq("every file after a rotate under a held lock", &before, &digests(&w.dir.join("out")));
    drop(holder);
    // Input errors: exit 2.
    let r = w.rotate(&["encryption", "switch", "--provider", "aesgcm"]);
    f.check(r.code == Some(2) && r.stderr.contains("--provider only goes with `rotate encryption start`"), || r.describe());
    let r = w.rotate(&["sa", "start", "--provider", "aesgcm"]);
    f.eq("rotate sa --provider", &Some(2), &r.code);
    let r = kubebundle(
        &w.dir,
        &[
            "rotate",
            "encryption",
            "start",
            "--config",
            w.dir.join("rot.yaml").to_str().unwrap(),
            "--out",
            w.dir.join("elsewhere").to_str().unwrap(),
        ],
        &[],
    );
    f.check(r.code == Some(2) && r.stderr.contains("holds no bundle of cluster \"rot\""), || r.describe());
    f.finish("phases_out_of_order_are_refused_and_write_nothing");
}

#[test]
fn abort_after_start_gives_back_the_pre_start_bundle_and_archives_the_new_key() {
    let w = RotationWork::new("rot-abort", "");
    let mut f = Failures::new();
    let before = digests(&w.bundle());
    for material in ["encryption", "sa"] {
        let started = w.rotate(&[material, "start"]);
        f.check(started.ok(), || started.describe());
        let new_key = match material {
            "encryption" => w.state("encryption.yaml").lines().skip_while(|l| !l.contains("key2")).nth(1).unwrap_or_default().to_string(),
            _ => w.state("pki/sa-next.key"),
        };
        f.check(!new_key.is_empty(), || format!("{material}: no new key after start"));
        let r = w.rotate(&[material, "abort"]);
        f.check(r.ok() && r.stdout.contains("archived, not deleted"), || r.describe());
        let now: BTreeMap<String, String> =
            digests(&w.bundle()).into_iter().filter(|(p, _)| !p.starts_with("state/rotations.yaml")).collect();
        f.eq(&format!("{material}: every file but rotations.yaml after start + abort"), &before, &now);
        let archived = std::fs::read_dir(w.dir.join("out")).unwrap().flatten().any(|e| {
            file_bytes(&e.path()).values().any(|b| String::from_utf8_lossy(b).contains(new_key.trim()))
                && e.file_name().to_string_lossy().starts_with("kubebundle-backup-")
        });
        f.check(archived, || format!("{material}: the new key is in no backup beside the bundle"));
        f.check(w.state("rotations.yaml").contains("phase: aborted"), || w.state("rotations.yaml"));
    }
    // A lost new key blocks every run like any recorded secret, but not the abort that drops it.
    f.check(w.rotate(&["sa", "start"]).ok(), || "sa start again".into());
    std::fs::remove_file(w.bundle().join("state/pki/sa-next.key")).unwrap();
    let g = w.run(&["generate"]);
    f.check(g.code == Some(1) && g.stderr.contains("sa-next.key is missing"), || format!("generate without sa-next.key: {}", g.describe()));
    let r = w.rotate(&["sa", "abort"]);
    f.check(r.ok() && r.stdout.contains("the state had lost it"), || format!("abort without sa-next.key: {}", r.describe()));
    let g = w.run(&["generate"]);
    f.check(g.ok() && !w.state("manifest.yaml").contains("sa-next"), || format!("generate after the abort: {}", g.describe()));
    // A name is never used twice: the next encryption key is key3.
    let r = w.rotate(&["encryption", "start"]);
    f.check(r.ok() && r.stdout.contains("added key3 (aescbc)"), || r.describe());
    f.finish("abort_after_start_gives_back_the_pre_start_bundle_and_archives_the_new_key");
}

#[test]
fn generate_makes_aesgcm_and_secretbox_keys_and_refuses_an_unknown_provider() {
    let mut f = Failures::new();
    for provider in ["aesgcm", "secretbox"] {
        let w = RotationWork::new("rot-prov", &format!("encryptionProvider: {provider}\n"));
        let text = w.node_file("cp1", "etc/kubernetes/encryption/encryption-config.yaml").unwrap_or_default();
        f.eq(provider, &vec![p(provider, &["key1"]), ("identity".into(), vec![])], &providers(&text));
        f.check(w.state("encryption.yaml").contains(&format!("provider: {provider}")), || w.state("encryption.yaml"));
        w.up_to_date(&mut f, provider);
    }
    let tmp = temp_dir("rot-bad");
    let text = live_config("bad", &[("cp1", "10.9.0.11", "control-plane, etcd")])
        .replace("kind: Inventory\n", "kind: Inventory\nencryptionProvider: kms\n");
    std::fs::write(tmp.path().join("bad.yaml"), text).unwrap();
    let r = kubebundle(tmp.path(), &["generate", "--config", "bad.yaml", "--now", NOW], &[]);
    f.check(r.code == Some(2) && r.stderr.contains("Inventory.encryptionProvider") && r.stderr.contains("unknown value \"kms\""), || {
        r.describe()
    });
    f.check(!tmp.path().join("out").exists(), || "a refused config wrote out/".into());
    f.finish("generate_makes_aesgcm_and_secretbox_keys_and_refuses_an_unknown_provider");
}

/// The public key (PEM) of a private key file, by openssl.
fn public_of(key: &Path) -> String {
    let r = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    assert!(r.ok(), "{}", r.describe());
    r.stdout
}

fn flags(unit: &str, name: &str) -> Vec<String> {
    exec_start(unit).iter().filter_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_string)).collect()
}

#[test]
fn sa_phases_verify_with_both_keys_then_sign_with_the_new_one_then_drop_the_old() {
    let w = RotationWork::new("rot-sa", "profile: hardway\n");
    let mut f = Failures::new();
    let dir = "etc/k8s/kube-apiserver/certs";
    let api = "etc/systemd/system/kube-apiserver.service";
    let kcm = "etc/systemd/system/kube-controller-manager.service";
    let old_key = w.state("pki/sa.key");
    let old_pub = w.state("pki/sa.pub");

    let r = w.rotate(&["sa", "start"]);
    f.check(r.ok(), || r.describe());
    let next_pub = public_of(&w.bundle().join("state/pki/sa-next.key"));
    let unit = w.node_file("cp1", api).unwrap_or_default();
    f.eq(
        "start: the apiserver's key files",
        &vec![format!("/{dir}/sa.pub"), format!("/{dir}/sa-next.pub")],
        &flags(&unit, "service-account-key-file"),
    );
    f.eq("start: the apiserver signs with", &vec!["/etc/k8s/shared/sa.key".to_string()], &flags(&unit, "service-account-signing-key-file"));
    f.eq("start: sa-next.pub", &Some(next_pub.clone()), &w.node_file("cp2", &format!("{dir}/sa-next.pub")));
    f.eq("start: sa.key still the old one", &Some(old_key.clone()), &w.node_file("cp2", "etc/k8s/shared/sa.key"));
    f.check(r.stdout.contains("2. restart kube-apiserver") && !r.stdout.contains("kube-controller-manager"), || r.stdout.clone());
    w.up_to_date(&mut f, "sa start");
    // The in-between key is a recorded secret: changed, it is refused like any other.
    let next = w.bundle().join("state/pki/sa-next.key");
    let saved = std::fs::read(&next).unwrap();
    std::fs::write(&next, std::fs::read(w.bundle().join("state/pki/ca.key")).unwrap()).unwrap();
    let g = w.run(&["generate"]);
    f.check(g.code == Some(1) && g.stderr.contains("sa-next.key") && g.stderr.contains("changed"), || {
        format!("a changed sa-next.key: {}", g.describe())
    });
    std::fs::write(&next, &saved).unwrap();

    let r = w.rotate(&["sa", "switch"]);
    f.check(r.ok(), || r.describe());
    let unit = w.node_file("cp1", api).unwrap_or_default();
    f.eq(
        "switch: the apiserver's key files",
        &vec![format!("/{dir}/sa.pub"), format!("/{dir}/sa-previous.pub")],
        &flags(&unit, "service-account-key-file"),
    );
    f.eq("switch: sa.key is the new key", &Some(String::from_utf8(saved.clone()).unwrap()), &w.node_file("cp1", "etc/k8s/shared/sa.key"));
    f.eq("switch: sa.pub is the new public key", &Some(next_pub.clone()), &w.node_file("cp1", &format!("{dir}/sa.pub")));
    f.eq("switch: sa-previous.pub is the old public key", &Some(old_pub.clone()), &w.node_file("cp1", &format!("{dir}/sa-previous.pub")));
    f.eq("switch: no sa-next.pub", &None, &w.node_file("cp1", &format!("{dir}/sa-next.pub")));
    f.eq(
        "switch: the controller-manager signs with",
        &vec!["/etc/k8s/shared/sa.key".to_string()],
        &flags(&w.node_file("cp1", kcm).unwrap_or_default(), "service-account-private-key-file"),
    );
    let api_at = r.stdout.find("restart kube-apiserver");
    let kcm_at = r.stdout.find("restart kube-controller-manager");
    f.check(api_at.is_some() && api_at < kcm_at && r.stdout.contains("rm -f /etc/k8s/kube-apiserver/certs/sa-next.pub"), || {
        r.stdout.clone()
    });
    f.check(r.stdout.contains("daemon-reload") && r.stdout.contains("about 1 hour") && r.stdout.contains("24 hours"), || r.stdout.clone());
    f.check(!w.bundle().join("state/pki/sa-next.key").exists(), || "sa-next.key is still in the state".into());
    w.up_to_date(&mut f, "sa switch");

    let r = w.rotate(&["sa", "finish"]);
    f.check(r.ok(), || r.describe());
    let unit = w.node_file("cp1", api).unwrap_or_default();
    f.eq("finish: the apiserver's key files", &vec![format!("/{dir}/sa.pub")], &flags(&unit, "service-account-key-file"));
    f.eq("finish: no sa-previous.pub", &None, &w.node_file("cp1", &format!("{dir}/sa-previous.pub")));
    f.check(r.stdout.contains("rm -f /etc/k8s/kube-apiserver/certs/sa-previous.pub"), || r.stdout.clone());
    // Switch and finish at the same clock: finish says when rolling it out is safe.
    f.check(
        r.stdout.contains("WARNING: switch was only 0 min ago (2026-01-01T00:00:00Z)")
            && r.stdout.contains("roll this phase out after 2026-01-01T01:00:00Z"),
        || r.stdout.clone(),
    );
    f.check(!w.state("manifest.yaml").contains("sa-previous") && !w.state("manifest.yaml").contains("sa-next"), || {
        w.state("manifest.yaml")
    });
    let archived = std::fs::read_dir(w.dir.join("out"))
        .unwrap()
        .flatten()
        .any(|e| std::fs::read_to_string(e.path().join("state/pki/sa.key")).is_ok_and(|k| k == old_key));
    f.check(archived, || "the old sa.key is in no backup".into());
    w.up_to_date(&mut f, "sa finish");
    f.finish("sa_phases_verify_with_both_keys_then_sign_with_the_new_one_then_drop_the_old");
}

#[test]
fn sa_rotation_in_the_kubeadm_layout_goes_through_the_kube_apiserver_patch() {
    let w = RotationWork::new("rot-sa-kubeadm", "");
    let mut f = Failures::new();
    let patch = "etc/kubernetes/patches/kube-apiserver+json.yaml";
    let plain = w.node_file("cp1", patch).unwrap_or_default();
    let r = w.rotate(&["sa", "start"]);
    f.check(r.ok(), || r.describe());
    let text = w.node_file("cp1", patch).unwrap_or_default();
    f.check(
        text.starts_with(plain.trim_end()) && text.contains("value: \"--service-account-key-file=/etc/kubernetes/pki/sa-next.pub\""),
        || text.clone(),
    );
    f.check(
        r.stdout.contains(
            "kubeadm upgrade node phase control-plane --certificate-renewal=false --etcd-upgrade=false --patches /etc/kubernetes/patches",
        ),
        || r.stdout.clone(),
    );
    f.check(w.node_file("cp1", "etc/kubernetes/pki/sa-next.pub").is_some(), || "no sa-next.pub in cp1's tarball".into());
    w.up_to_date(&mut f, "kubeadm sa start");
    // A control plane added during the rotation gets the phase's files from generate.
    let config = w.dir.join("rot.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("- {name: w1,", "- {name: cp3, address: \"10.9.0.13\", roles: [control-plane]}\n- {name: w1,"))
        .unwrap();
    let g = w.run(&["generate"]);
    f.check(g.ok(), || g.describe());
    f.eq(
        "cp3's sa-next.pub (added during the rotation)",
        &w.node_file("cp1", "etc/kubernetes/pki/sa-next.pub"),
        &w.node_file("cp3", "etc/kubernetes/pki/sa-next.pub"),
    );
    f.eq("cp3's kube-apiserver patch", &w.node_file("cp1", patch), &w.node_file("cp3", patch));
    f.check(w.rotate(&["sa", "switch"]).ok(), || "switch".into());
    let text = w.node_file("cp1", patch).unwrap_or_default();
    f.check(text.contains("--service-account-key-file=/etc/kubernetes/pki/sa-previous.pub") && !text.contains("sa-next"), || text.clone());
    f.check(w.rotate(&["sa", "finish"]).ok(), || "finish".into());
    f.eq("the patch after finish", &plain, &w.node_file("cp1", patch).unwrap_or_default());
    f.finish("sa_rotation_in_the_kubeadm_layout_goes_through_the_kube_apiserver_patch");
}
