//! Kubeconfigs in client-go's shape (issue 16): every kubeconfig of every node of each built-in
//! profile (kubeadm, hardway, binary), and discovery.conf, is byte for byte what
//! `kubectl config view --raw --kubeconfig F` prints for it (keys in kubectl's order, scalars
//! plain where YAML allows, `users: null` where there is no user), so scripts that read them as
//! kubeadm's work unchanged.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const PROFILES: [&str; 3] = ["kubeadm", "hardway", "binary"];

fn config(profile: &str, dir: &Path) -> PathBuf {
    let r = kubebundle(dir, &["config", "print-defaults"], &[]);
    assert!(r.ok(), "config print-defaults failed: {}", r.describe());
    let text = r.stdout.replacen("encryptionAlgorithm: RSA-2048", "encryptionAlgorithm: ECDSA-P256", 1).replacen(
        "profile: kubeadm",
        &format!("profile: {profile}"),
        1,
    );
    assert!(text.contains(&format!("profile: {profile}")));
    let path = dir.join(format!("{profile}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Every file under `root` that is a kubeconfig (a `kind: Config` line).
fn kubeconfigs(root: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            kubeconfigs(&path, out);
        } else if std::fs::read_to_string(&path).is_ok_and(|t| t.lines().any(|l| l == "kind: Config")) {
            out.push(path);
        }
    }
}

#[test]
fn every_kubeconfig_is_what_kubectl_config_view_prints() {
    let tmp = temp_dir("kubeconfig-shape");
    let mut failures = Failures::new();
    for profile in PROFILES {
        let dir = tmp.path().join(profile);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = config(profile, &dir);
        let r = kubebundle(
            &dir,
            &["generate", "-c", cfg.to_str().unwrap(), "--out", "out", "--unpacked", "--now", "2026-01-01T00:00:00Z"],
            &[],
        );
        assert!(r.ok(), "generate ({profile}) failed: {}", r.describe());
        let bundle = dir.join("out/kubernetes");
        let mut files = vec![bundle.join("discovery.conf")];
        kubeconfigs(&bundle.join("nodes"), &mut files);
        // discovery.conf and at least one kubeconfig per node (5 nodes): control planes have several.
        failures.check(files.len() > 5, || format!("{profile}: only {} kubeconfigs found: {files:?}", files.len()));
        for f in &files {
            let view = kubectl(&dir, &["config", "view", "--raw", "--kubeconfig", f.to_str().unwrap()]);
            if !view.ok() {
                failures.fail(format!("{profile}: kubectl config view {}: {}", f.display(), view.describe()));
                continue;
            }
            let ours = std::fs::read_to_string(f).unwrap();
            let rel = f.strip_prefix(&bundle).unwrap().display().to_string();
            failures.eq(&format!("{profile}: {rel} as kubectl config view --raw prints it"), &view.stdout, &ours);
        }
        // The readers take the new shape: verify finds no kubeconfig problem (only the clock's
        // token expiry, the bundle being generated in the past).
        let v = kubebundle(&dir, &["verify", "out/kubernetes", "--now", "2026-01-01T00:00:00Z"], &[]);
        failures.check(v.ok(), || format!("{profile}: verify of the bundle failed: {}", v.describe()));
    }
    failures.finish("every_kubeconfig_is_what_kubectl_config_view_prints");
}
