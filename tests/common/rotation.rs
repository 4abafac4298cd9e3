//! A small bundle for the rotation tests (tests/rotate.rs, tests/rotate_ca.rs): 2 control planes
//! (+ etcd) and a worker, its commands run with the bundle's --config, --out and the fixed clock.

use std::path::PathBuf;
use std::process::Command;

use super::*;

/// The clock every rotation test runs at.
pub const ROTATION_NOW: &str = "2026-01-01T00:00:00Z";

pub struct RotationWork {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl RotationWork {
    /// A bundle of cp1, cp2 (control plane + etcd) and w1, `inventory` added to the Inventory
    /// (e.g. `profile: hardway\n`), generated.
    pub fn new(prefix: &str, inventory: &str) -> RotationWork {
        let tmp = temp_dir(prefix);
        let dir = tmp.path().to_path_buf();
        let text = live_config(
            "rot",
            &[("cp1", "10.9.0.11", "control-plane, etcd"), ("cp2", "10.9.0.12", "control-plane, etcd"), ("w1", "10.9.0.21", "worker")],
        )
        .replace("kind: Inventory\n", &format!("kind: Inventory\n{inventory}"));
        std::fs::write(dir.join("rot.yaml"), text).unwrap();
        let w = RotationWork { _tmp: tmp, dir };
        let r = w.run(&["generate"]);
        assert!(r.ok(), "{}", r.describe());
        w
    }

    pub fn bundle(&self) -> PathBuf {
        self.dir.join("out/rot")
    }

    /// A command with this bundle's --config, --out and (but for `rotate status`) --now.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        let config = self.dir.join("rot.yaml");
        let out = self.dir.join("out");
        all.extend(["--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        if args.get(..2) != Some(&["rotate", "status"][..]) {
            all.extend(["--now", ROTATION_NOW]);
        }
        kubebundle(&self.dir, &all, &[])
    }

    /// `kubebundle rotate ARGS...`.
    pub fn rotate(&self, args: &[&str]) -> Run {
        let mut all = vec!["rotate"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// A node's file, read out of its tarball with tar.
    pub fn node_file(&self, node: &str, path: &str) -> Option<String> {
        let mut c = Command::new("tar");
        c.arg("-xzOf").arg(self.bundle().join(format!("nodes/{node}.tar.gz"))).arg(path);
        let r = run_cmd(c);
        r.ok().then_some(r.stdout)
    }

    /// The files (not directories) of a node's tarball, listed by tar.
    pub fn node_files(&self, node: &str) -> Vec<String> {
        let mut c = Command::new("tar");
        c.arg("-tzf").arg(self.bundle().join(format!("nodes/{node}.tar.gz")));
        run_cmd(c).stdout.lines().filter(|l| !l.ends_with('/')).map(str::to_string).collect()
    }

    pub fn state(&self, rel: &str) -> String {
        std::fs::read_to_string(self.bundle().join("state").join(rel)).unwrap_or_default()
    }

    /// `generate --check` says up to date and verify finds no error.
    pub fn up_to_date(&self, f: &mut Failures, when: &str) {
        let r = self.run(&["generate", "--check"]);
        f.check(r.ok() && r.stdout.contains("up to date"), || format!("{when}: generate --check: {}", r.describe()));
        let v = verify_bundle(&self.bundle(), Some(ROTATION_NOW));
        f.check(v.is_ok(), || format!("{when}: {}", v.clone().unwrap_err()));
    }
}
