//! Secrets stay where they belong: exact modes whatever the umask, and no secret in the
//! output of a run except the join command, which is printed by design.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

const CONFIG: &str = "apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
clusterName: secrets
kubernetesVersion: v1.34.1
encryptionAlgorithm: ECDSA-P256
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
- description: the join token
- token: abcdef.0123456789abcdef
  usages: [signing]
  groups: []
---
apiVersion: kubebundle.dev/v1alpha1
kind: Inventory
nodes:
- {name: cp1, address: 10.2.0.1, roles: [control-plane, etcd]}
- {name: w1, address: 10.2.0.2, roles: [worker]}
";

/// `generate` under `umask 000`, so only the code's own modes count.
fn generate_with_umask_000(dir: &Path) -> Run {
    std::fs::write(dir.join("c.yaml"), CONFIG).unwrap();
    let mut c = hermetic("sh", dir);
    c.current_dir(dir).args(["-c", "umask 000 && exec \"$0\" generate --unpacked --config c.yaml --out out", bin()]);
    run_cmd(c)
}

fn files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn is_secret(name: &str) -> bool {
    name.ends_with(".key")
        || name.ends_with(".conf") && name != "discovery.conf"
        || name == "sa.pub"
        || name.ends_with(".tar.gz")
        || name == "join.txt"
        || name == "kubeadm-join.yaml"
        || name == "encryption-config.yaml"
        || name == "encryption.yaml"
        || name == "tokens.yaml"
        || name.starts_with("bootstrap-token-")
}

#[test]
fn modes_hold_under_umask_000() {
    let tmp = temp_dir("umask");
    let run = generate_with_umask_000(tmp.path());
    assert!(run.ok(), "{}", run.describe());
    let cluster = tmp.path().join("out/secrets");
    assert_eq!(mode(&cluster), 0o700, "the cluster directory");
    for d in ["state", "state/pki", "state/pki/etcd", "nodes", "manifests"] {
        assert_eq!(mode(&cluster.join(d)), 0o700, "{d}/");
    }
    let all = files(&cluster);
    assert!(all.len() > 30, "too few files: {}", all.len());
    for f in &all {
        let rel = f.strip_prefix(&cluster).unwrap().display().to_string();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let m = mode(f);
        if rel.starts_with("state/") || is_secret(&name) {
            assert_eq!(m, 0o600, "{rel} holds a secret");
        } else {
            assert_eq!(m, 0o644, "{rel}");
        }
        // Nobody but the owner can reach a secret: some directory on its way is 0700.
        if is_secret(&name) {
            let guarded = f.ancestors().skip(1).take_while(|a| a.starts_with(&cluster)).any(|a| mode(a) == 0o700);
            assert!(guarded, "{rel} has no 0700 directory above it");
        }
    }
}

/// Every secret the run made: key PEM bodies, the encryption key, token secrets.
fn secrets(cluster: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in files(cluster) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        if name.ends_with(".key") {
            // Any 40-character run of the key's base64 body.
            let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
            for chunk in body.as_bytes().chunks(40).filter(|c| c.len() == 40) {
                out.insert(String::from_utf8(chunk.to_vec()).unwrap());
            }
        }
        if name == "encryption.yaml" || name == "encryption-config.yaml" {
            for l in text.lines().filter_map(|l| l.trim().strip_prefix("secret:")) {
                out.insert(l.trim().trim_matches('"').to_string());
            }
        }
        if name == "tokens.yaml" {
            for l in text.lines().filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("token:")) {
                let secret = l.trim().split('.').nth(1).unwrap().to_string();
                out.insert(secret);
            }
        }
    }
    out
}

#[test]
fn no_secret_reaches_the_output_but_the_join_command() {
    let tmp = temp_dir("leak");
    let run = generate_with_umask_000(tmp.path());
    assert!(run.ok(), "{}", run.describe());
    let cluster = tmp.path().join("out/secrets");
    let secrets = secrets(&cluster);
    assert!(secrets.len() > 20, "too few secrets found: {}", secrets.len());
    // Also a second run (reusing the state) and `plan`.
    let again = kubebundle(tmp.path(), &["generate", "--unpacked", "--config", "c.yaml", "--out", "out"], &[]);
    let plan = kubebundle(tmp.path(), &["plan", "--config", "c.yaml", "-o", "json"], &[]);
    let mut c = Command::new(bin());
    c.current_dir(tmp.path()).args(["generate", "--config", "missing.yaml"]);
    let failed = run_cmd(c);
    for (what, r) in [("first run", &run), ("second run", &again), ("plan", &plan), ("failed run", &failed)] {
        // The join token is printed on purpose, in the kubeadm join lines only.
        let stdout: String = r.stdout.lines().filter(|l| !l.starts_with("kubeadm join")).collect::<Vec<_>>().join("\n");
        for s in &secrets {
            assert!(!r.stderr.contains(s.as_str()), "{what}: a secret reached stderr: {s}");
            assert!(!stdout.contains(s.as_str()), "{what}: a secret reached stdout outside the join command: {s}");
        }
    }
    // The token that is not for joining (signing only) never appears at all.
    for r in [&run, &again] {
        assert!(!r.stdout.contains("0123456789abcdef") && !r.stderr.contains("0123456789abcdef"));
    }
    assert!(run.stdout.contains("kubeadm join"), "the join command is printed: {}", run.stdout);
}
