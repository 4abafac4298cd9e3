//! `kubebundle rotate encryption`, live: a hardway control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler from its own units, the real v1.32 binaries, see
//! tests/live/mod.rs) whose encryption key is rotated from aescbc to a new secretbox key while it
//! runs. Each phase is rolled out as the command prints it (the control plane's changed files
//! extracted from its new tarball, kube-apiserver restarted from its unit). A Secret written before
//! `start` reads back after `finish`; read raw from etcd with etcdctl it carries
//! `k8s:enc:aescbc:v1:key1:` before the rewrite and `k8s:enc:secretbox:v1:key2:` after it, as does
//! one written between `start` and `switch` (key1 still encrypts then), and one written after
//! `switch` is key2's at once.
//!
//! Needs K8S_BIN (`../shared/k8s/install.sh target/k8s`), etcd, etcdctl, root. Under CI=true a
//! missing one fails the test with how to install it.

mod common;
mod live;

use common::*;
use live::*;

/// The raw value etcd holds for Secret default/<name> (as text: the prefix is ASCII).
fn raw_secret(b: &Bundle, cp: &ControlPlane, name: &str) -> Run {
    let api = unit_argv(&b.cp_root, "kube-apiserver");
    let endpoint = flag(&api, "etcd-servers").expect("--etcd-servers").split(',').next().unwrap().to_string();
    let mut c = cp.ns.command("etcdctl");
    c.arg(format!("--endpoints={endpoint}"))
        .args(["get", &format!("/registry/secrets/default/{name}"), "--print-value-only"])
        .arg(format!("--cacert={}", b.cp_root.join(b.cp.rel("etcd-ca.crt")).display()))
        .arg(format!("--cert={}", b.cp_root.join(b.cp.rel("apiserver-etcd-client.crt")).display()))
        .arg(format!("--key={}", b.cp_root.join(b.cp.rel("apiserver-etcd-client.key")).display()))
        .env("ETCDCTL_API", "3");
    run_cmd(c)
}

fn expect_prefix(b: &Bundle, cp: &ControlPlane, name: &str, prefix: &str, when: &str, f: &mut Failures) {
    let r = raw_secret(b, cp, name);
    f.check(r.ok() && r.stdout.starts_with(prefix) && !r.stdout.contains("kb-plaintext"), || {
        format!("{when}: Secret {name} in etcd does not start with {prefix}: {}", truncate(&r.describe(), 400))
    });
}

fn create_secret(cp: &ControlPlane, name: &str, f: &mut Failures) {
    let r = cp.kubectl(
        &cp.super_admin,
        &["-n", "default", "create", "secret", "generic", name, &format!("--from-literal=v=kb-plaintext-{name}")],
    );
    f.check(r.ok(), || format!("create secret {name}: {}", r.describe()));
}

fn reads_back(cp: &ControlPlane, name: &str, when: &str, f: &mut Failures) {
    let r = cp.kubectl(&cp.super_admin, &["-n", "default", "get", "secret", name, "-o", "jsonpath={.data.v}"]);
    let want = base64_encode(format!("kb-plaintext-{name}").as_bytes());
    f.check(r.ok() && r.stdout.trim() == want, || format!("{when}: Secret {name} does not read back: {}", r.describe()));
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn encryption_key_rotated_from_aescbc_to_secretbox_on_a_running_control_plane() {
    let started = std::time::Instant::now();
    let Some(b) = Bundle::generate("hardway", "liverotenc", ("cp1", "127.0.15.1"), ("worker1", "127.0.15.2")) else { return };
    let mut f = Failures::new();
    let mut cp = ControlPlane::boot(&b.cp_root, &b.tools, &b.cp.rel("super-admin.conf"), &b.cp.rel("ca.crt"), &b.scratch);
    f.note(format!("control plane ready in {:.1?}", cp.boot_time));
    create_secret(&cp, "before", &mut f);
    expect_prefix(&b, &cp, "before", "k8s:enc:aescbc:v1:key1:", "before start", &mut f);

    // start: key2 (secretbox) second; key1 still encrypts.
    let r = rotate_and_roll_out(&b, &mut cp, "encryption", "start", &["--provider", "secretbox"], &mut f);
    f.check(r.stdout.contains("restart kube-apiserver") && r.stdout.contains("rotate encryption switch"), || {
        format!("start's roll-out: {}", r.stdout)
    });
    create_secret(&cp, "between", &mut f);
    expect_prefix(&b, &cp, "between", "k8s:enc:aescbc:v1:key1:", "after start", &mut f);
    reads_back(&cp, "before", "after start", &mut f);

    // switch: key2 first; then the printed rewrite of every Secret.
    let r = rotate_and_roll_out(&b, &mut cp, "encryption", "switch", &[], &mut f);
    let rewrite =
        r.stdout.lines().find(|l| l.contains("get secrets --all-namespaces -o json | kubectl")).map(str::trim).map(str::to_string);
    f.check(rewrite.is_some(), || format!("switch prints no rewrite command: {}", r.stdout));
    create_secret(&cp, "after", &mut f);
    expect_prefix(&b, &cp, "after", "k8s:enc:secretbox:v1:key2:", "after switch", &mut f);
    expect_prefix(&b, &cp, "before", "k8s:enc:aescbc:v1:key1:", "after switch, before the rewrite", &mut f);
    // The printed command, with this control plane's kubeconfig (it names the host's admin.conf).
    let all = cp.kubectl(&cp.super_admin, &["get", "secrets", "--all-namespaces", "-o", "json"]);
    let json = b.scratch.join("secrets.json");
    std::fs::write(&json, &all.stdout).unwrap();
    let replaced = cp.kubectl(&cp.super_admin, &["replace", "-f", json.to_str().unwrap()]);
    f.check(all.ok() && replaced.ok(), || format!("the rewrite: {} / {}", all.describe(), replaced.describe()));
    for name in ["before", "between", "after"] {
        expect_prefix(&b, &cp, name, "k8s:enc:secretbox:v1:key2:", "after the rewrite", &mut f);
    }

    // finish: key1 gone; every Secret still reads back.
    let r = rotate_and_roll_out(&b, &mut cp, "encryption", "finish", &[], &mut f);
    f.check(r.stdout.contains("removed key1"), || format!("finish: {}", r.stdout));
    let config = std::fs::read_to_string(b.cp_root.join(b.cp.rel("encryption-config"))).unwrap();
    f.check(config.contains("- secretbox:") && !config.contains("aescbc") && !config.contains("key1"), || {
        format!(
            "the rolled-out EncryptionConfiguration after finish: {}",
            config.lines().filter(|l| !l.contains("secret:")).collect::<Vec<_>>().join("\n")
        )
    });
    for name in ["before", "between", "after"] {
        reads_back(&cp, name, "after finish", &mut f);
        expect_prefix(&b, &cp, name, "k8s:enc:secretbox:v1:key2:", "after finish", &mut f);
    }
    let v = kubebundle(b.tmp.path(), &["verify", b.cluster.to_str().unwrap()], &[]);
    f.check(v.ok(), || format!("verify after finish: {}", v.describe()));
    f.note(format!("{:.1?} in all", started.elapsed()));
    f.finish("encryption_key_rotated_from_aescbc_to_secretbox_on_a_running_control_plane");
}
