//! `kubebundle export <cloud-init|ignition>` and `Inventory.export`, for the kubeadm, hardway and
//! binary profiles, checked with the real tools: every user-data passes `cloud-init schema
//! --config-file` (Debian's cloud-init), and cloud-init's own `write_files` module (the Debian
//! python code, called as its handler does, with the paths under a temporary root) lays down a
//! tree equal to the node's tarball as `tar` extracts it (paths, modes, owners, bytes, and the
//! directories' modes); every Ignition config passes `ignition-validate` (Debian's ignition) with
//! no warning, and each entry decoded as Ignition does (a data URL, gzip, decimal mode, uid/gid)
//! into a temporary root equals the tarball too. Under CI=true a missing tool fails the test.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::*;

const NOW: &str = "2026-03-01T00:00:00Z";
const PROFILES: [&str; 3] = ["kubeadm", "hardway", "binary"];

/// A tool the test needs: its path, or None (a loud skip) outside CI; under CI=true a failure.
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/bin", "/usr/sbin"]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    let what = format!("{name} is missing: apt-get install -y {package} (.ci/run installs it)");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what}");
    }
    eprintln!("NOTE: export test skipped (CI is not true): {what}");
    None
}

/// A bundle of `profile`: cp1 (control plane + etcd, the init node) and w1, with `extra` added to
/// the Inventory.
fn bundle(prefix: &str, profile: &str, extra: &str) -> tempfile::TempDir {
    let tmp = temp_dir(prefix);
    let text = live_config("ex", &[("cp1", "10.7.0.1", "control-plane, etcd"), ("w1", "10.7.0.11", "worker")])
        .replace("kind: Inventory\n", &format!("kind: Inventory\nprofile: {profile}\n{extra}"));
    std::fs::write(tmp.path().join("ex.yaml"), text).unwrap();
    let run = kubebundle(tmp.path(), &["generate", "--config", "ex.yaml", "--out", "out", "--now", NOW], &[]);
    assert!(run.ok(), "{}", run.describe());
    tmp
}

/// What a tree holds: path → (kind, mode, uid, gid, bytes), directories included ("d").
type Tree = BTreeMap<String, (char, u32, u32, u32, Vec<u8>)>;

fn tree_of(root: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mode = m.permissions().mode() & 0o7777;
            if m.is_dir() {
                out.insert(rel, ('d', mode, m.uid(), m.gid(), Vec::new()));
                walk(root, &p, out);
            } else {
                assert!(m.is_file(), "{rel} is not a regular file");
                out.insert(rel, ('f', mode, m.uid(), m.gid(), std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Tree::new();
    walk(root, root, &mut out);
    out
}

/// The node's tarball as the real `tar` extracts it (as root: modes and owners kept).
fn tarball_tree(bundle: &Path, node: &str, scratch: &Path) -> Tree {
    let dest = scratch.join(format!("tar-{node}"));
    extract(&bundle.join(format!("nodes/{node}.tar.gz")), &dest);
    tree_of(&dest)
}

fn differences(expected: &Tree, actual: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (p, e) in expected {
        match actual.get(p) {
            None => out.push(format!("{p}: missing")),
            Some(a) if a != e => out.push(format!(
                "{p}: {}{:04o} {}:{} {} bytes, expected {}{:04o} {}:{} {} bytes{}",
                a.0,
                a.1,
                a.2,
                a.3,
                a.4.len(),
                e.0,
                e.1,
                e.2,
                e.3,
                e.4.len(),
                if a.4 != e.4 { " (other bytes)" } else { "" }
            )),
            _ => {}
        }
    }
    out.extend(actual.keys().filter(|p| !expected.contains_key(*p)).map(|p| format!("{p}: extra")));
    out
}

fn export(dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    kubebundle(dir, &all, &[])
}

/// cloud-init's own python (Debian's /usr/bin/python3, where the package puts its modules).
fn cloud_init_python(script: &str, args: &[&str]) -> Run {
    let mut c = Command::new("/usr/bin/python3");
    c.arg("-c").arg(script).args(args);
    run_cmd(c)
}

/// Loads the user-data with cloud-init's YAML loader and runs its write_files module on the
/// entries, each path under ROOT (the module has no root of its own; this is what its `handle`
/// does, with the distro's default owner root:root), under umask 022 as at boot. Prints the
/// parsed config's runcmd as JSON.
const REPLAY: &str = r#"
import json, os, sys
from cloudinit import util
from cloudinit.config.cc_write_files import write_files
cfg = util.load_yaml(open(sys.argv[1]).read())
root = sys.argv[2]
files = []
for f in cfg["write_files"]:
    f = dict(f)
    assert not f.get("defer") and not f.get("append"), f
    f["path"] = root + f["path"]
    files.append(f)
os.umask(0o022)
write_files("write_files", files, "root:root")
print(json.dumps(cfg.get("runcmd")))
"#;

#[test]
fn cloud_init_user_data_passes_the_schema_and_write_files_lays_down_the_tarball() {
    let (Some(cloud_init), Some(_)) = (tool("cloud-init", "cloud-init"), tool("python3", "python3")) else { return };
    let mut f = Failures::new();
    for profile in PROFILES {
        let tmp = bundle(&format!("ci-{profile}"), profile, "");
        let dir = tmp.path();
        let cluster = dir.join("out/ex");
        let plain = export(dir, &["cloud-init", "--dir", "out/ex"]);
        let run = export(dir, &["cloud-init", "--dir", "out/ex", "--runcmd", "--out", "with-runcmd"]);
        assert!(plain.ok() && run.ok(), "{}\n{}", plain.describe(), run.describe());
        for node in ["cp1", "w1"] {
            let expected = tarball_tree(&cluster, node, dir);
            for (variant, file) in [
                ("plain", cluster.join(format!("export/cloud-init/{node}.yaml"))),
                ("runcmd", dir.join(format!("with-runcmd/cloud-init/{node}.yaml"))),
            ] {
                let what = format!("{profile} {node} ({variant})");
                let mut c = Command::new(&cloud_init);
                c.args(["schema", "--config-file"]).arg(&file);
                let schema = run_cmd(c);
                f.check(schema.ok() && schema.stdout.contains("Valid cloud-config"), || {
                    format!("{what}: cloud-init schema: {}", schema.describe())
                });
                let root = dir.join(format!("root-{node}-{variant}"));
                std::fs::create_dir(&root).unwrap();
                let replay = cloud_init_python(REPLAY, &[file.to_str().unwrap(), root.to_str().unwrap()]);
                if !f.check(replay.ok(), || format!("{what}: write_files: {}", replay.describe())) {
                    continue;
                }
                let diff = differences(&expected, &tree_of(&root));
                f.check(diff.is_empty(), || format!("{what}: the tree write_files made is not the tarball: {diff:?}"));
                let runcmd: serde_json::Value = serde_json::from_str(replay.stdout.trim()).unwrap();
                let want = match (variant, profile, node) {
                    ("plain", _, _) => serde_json::Value::Null,
                    (_, "kubeadm", "cp1") => serde_json::json!([["kubeadm", "init", "--config", "/etc/kubernetes/kubeadm-init.yaml"]]),
                    (_, "kubeadm", _) => serde_json::json!([["kubeadm", "join", "--config", "/etc/kubernetes/kubeadm-join.yaml"]]),
                    (_, _, "cp1") => serde_json::json!([
                        ["systemctl", "daemon-reload"],
                        [
                            "systemctl",
                            "enable",
                            "--now",
                            "etcd.service",
                            "kube-apiserver.service",
                            "kube-controller-manager.service",
                            "kube-scheduler.service",
                            "kubelet.service",
                            "kube-proxy.service"
                        ]
                    ]),
                    _ => serde_json::json!([
                        ["systemctl", "daemon-reload"],
                        ["systemctl", "enable", "--now", "kubelet.service", "kube-proxy.service"]
                    ]),
                };
                f.eq(&format!("{what}: runcmd"), &want, &runcmd);
            }
        }
    }
    f.finish("cloud_init_user_data_passes_the_schema_and_write_files_lays_down_the_tarball");
}

/// Decodes an Ignition config as Ignition's files stage does: each directory made with its mode
/// and owner, each file's data URL (RFC 2397: `data:[<mediatype>][;base64],<data>`) decoded,
/// gunzipped when `compression` is gzip, written with its decimal mode and uid/gid.
fn apply_ignition(config: &serde_json::Value, root: &Path) -> Result<(), String> {
    let storage = &config["storage"];
    let id = |v: &serde_json::Value| v["id"].as_u64().map(|n| n as u32).ok_or("an owner without id");
    for d in storage["directories"].as_array().ok_or("no storage.directories")? {
        let path = root.join(d["path"].as_str().ok_or("a directory without path")?.trim_start_matches('/'));
        std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(d["mode"].as_u64().ok_or("a directory without mode")? as u32))
            .map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(&path, Some(id(&d["user"])?), Some(id(&d["group"])?)).map_err(|e| e.to_string())?;
    }
    for file in storage["files"].as_array().ok_or("no storage.files")? {
        let path = file["path"].as_str().ok_or("a file without path")?;
        if file["overwrite"] != serde_json::Value::Bool(true) {
            return Err(format!("{path}: overwrite is not true (an existing file would be kept)"));
        }
        let source = file["contents"]["source"].as_str().ok_or("no contents.source")?;
        let rest = source.strip_prefix("data:").ok_or_else(|| format!("{path}: not a data URL"))?;
        let (meta, data) = rest.split_once(',').ok_or_else(|| format!("{path}: a data URL without ','"))?;
        let mut bytes = if meta.ends_with(";base64") {
            base64::engine::general_purpose::STANDARD.decode(data).map_err(|e| format!("{path}: {e}"))?
        } else {
            return Err(format!("{path}: not base64"));
        };
        match file["contents"]["compression"].as_str() {
            None | Some("") => {}
            Some("gzip") => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(bytes.as_slice()).read_to_end(&mut out).map_err(|e| format!("{path}: {e}"))?;
                bytes = out;
            }
            Some(other) => return Err(format!("{path}: compression {other}")),
        }
        let dest = root.join(path.trim_start_matches('/'));
        // Ignition makes missing leading directories 0755 root:root.
        std::fs::create_dir_all(dest.parent().unwrap()).map_err(|e| e.to_string())?;
        std::fs::write(&dest, &bytes).map_err(|e| e.to_string())?;
        let mode = file["mode"].as_u64().ok_or_else(|| format!("{path}: no mode"))? as u32;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(&dest, Some(id(&file["user"])?), Some(id(&file["group"])?)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn ignition_configs_pass_ignition_validate_and_decode_to_the_tarball() {
    let Some(validate) = tool("ignition-validate", "ignition") else { return };
    let mut f = Failures::new();
    for profile in PROFILES {
        let tmp = bundle(&format!("ign-{profile}"), profile, "");
        let dir = tmp.path();
        let cluster = dir.join("out/ex");
        let plain = export(dir, &["ignition", "--dir", "out/ex"]);
        let run = export(dir, &["ignition", "--dir", "out/ex", "--runcmd", "--out", "with-runcmd"]);
        assert!(plain.ok() && run.ok(), "{}\n{}", plain.describe(), run.describe());
        for node in ["cp1", "w1"] {
            let expected = tarball_tree(&cluster, node, dir);
            for (variant, file) in [
                ("plain", cluster.join(format!("export/ignition/{node}.ign"))),
                ("runcmd", dir.join(format!("with-runcmd/ignition/{node}.ign"))),
            ] {
                let what = format!("{profile} {node} ({variant})");
                let mut c = Command::new(&validate);
                c.arg(&file);
                let v = run_cmd(c);
                f.check(v.ok() && v.stdout.trim().is_empty() && v.stderr.trim().is_empty(), || {
                    format!("{what}: ignition-validate (no output expected, not even a warning): {}", v.describe())
                });
                let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
                f.eq(&format!("{what}: spec"), "3.3.0", config["ignition"]["version"].as_str().unwrap_or(""));
                // Something is compressed, and every compressed entry is gzip of a data URL.
                let files = config["storage"]["files"].as_array().unwrap();
                f.check(files.iter().any(|e| e["contents"]["compression"] == "gzip"), || format!("{what}: no file is gzip-compressed"));
                let root = dir.join(format!("ign-root-{node}-{variant}"));
                std::fs::create_dir(&root).unwrap();
                if let Err(e) = apply_ignition(&config, &root) {
                    f.fail(format!("{what}: {e}"));
                    continue;
                }
                let diff = differences(&expected, &tree_of(&root));
                f.check(diff.is_empty(), || format!("{what}: the decoded tree is not the tarball: {diff:?}"));
                let units = &config["systemd"]["units"];
                match (variant, profile) {
                    ("plain", _) => f.check(config.get("systemd").is_none(), || format!("{what}: systemd without --runcmd: {units}")),
                    (_, "kubeadm") => {
                        let verb = if node == "cp1" {
                            "init --config /etc/kubernetes/kubeadm-init.yaml"
                        } else {
                            "join --config /etc/kubernetes/kubeadm-join.yaml"
                        };
                        let u = &units[0];
                        f.check(
                            u["name"] == "kubebundle-kubeadm.service"
                                && u["enabled"] == true
                                && u["contents"]
                                    .as_str()
                                    .is_some_and(|c| c.contains(&format!("kubeadm {verb}\n")) && c.contains("[Install]")),
                            || format!("{what}: the kubeadm unit: {units}"),
                        )
                    }
                    _ => {
                        let names: Vec<&str> = units.as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
                        let want: &[&str] = if node == "cp1" {
                            &[
                                "etcd.service",
                                "kube-apiserver.service",
                                "kube-controller-manager.service",
                                "kube-scheduler.service",
                                "kubelet.service",
                                "kube-proxy.service",
                            ]
                        } else {
                            &["kubelet.service", "kube-proxy.service"]
                        };
                        f.eq(&format!("{what}: units"), want, names.as_slice());
                        f.check(units.as_array().unwrap().iter().all(|u| u["enabled"] == true && u.get("contents").is_none()), || {
                            format!("{what}: units are enabled, their files come from storage.files: {units}")
                        })
                    }
                };
            }
        }
    }
    f.finish("ignition_configs_pass_ignition_validate_and_decode_to_the_tarball");
}

fn sha(p: &Path) -> String {
    let r = openssl(&["dgst", "-sha256", "-r", p.to_str().unwrap()]);
    r.stdout.split_whitespace().next().unwrap_or("").to_string()
}

fn shas(root: &Path) -> BTreeMap<String, String> {
    walk(root).keys().map(|rel| (rel.clone(), sha(&root.join(rel)))).collect()
}

#[test]
fn exports_are_private_reproducible_never_printed_and_warn_over_16_kib() {
    let tmp = bundle("priv", "kubeadm", "");
    let dir = tmp.path();
    let cluster = dir.join("out/ex");
    let mut f = Failures::new();
    // Under umask 000: still 0700 directories and 0600 files.
    let mut c = hermetic("sh", dir);
    c.current_dir(dir).args(["-c", "umask 000; exec \"$0\" \"$@\"", bin(), "export", "cloud-init", "--dir", "out/ex"]);
    let run = run_cmd(c);
    assert!(run.ok(), "{}", run.describe());
    for d in ["export", "export/cloud-init"] {
        f.eq(&format!("{d} mode"), &Some(0o700), &mode_of(&cluster.join(d)));
    }
    for node in ["cp1", "w1"] {
        f.eq(&format!("{node}.yaml mode"), &Some(0o600), &mode_of(&cluster.join(format!("export/cloud-init/{node}.yaml"))));
    }
    // The size warning: cp1 (a control plane's ~30 files) is over AWS's 16 KiB, w1 is not.
    let cp1 = std::fs::read(cluster.join("export/cloud-init/cp1.yaml")).unwrap();
    let w1 = std::fs::read(cluster.join("export/cloud-init/w1.yaml")).unwrap();
    f.check(cp1.len() > 16384 && w1.len() < 16384, || format!("sizes: cp1 {} w1 {}", cp1.len(), w1.len()));
    f.check(
        run.stderr.contains(&format!(
            "warning: out/ex/export/cloud-init/cp1.yaml is {} bytes, over the user-data limit of AWS EC2 (16384 bytes)",
            cp1.len()
        )) && run.stderr.contains("export cloud-init --gzip"),
        || format!("no size warning for cp1: {}", run.stderr),
    );
    f.check(!run.stderr.contains("w1.yaml"), || format!("a warning for w1: {}", run.stderr));
    // Nothing secret printed: no key, no content of any file.
    let mut outputs = vec![run.stdout.clone() + &run.stderr];
    for args in [&["ignition", "--dir", "out/ex"][..], &["cloud-init", "--dir", "out/ex", "--runcmd", "--gzip", "--out", "gz"]] {
        let r = export(dir, args);
        f.check(r.ok(), || r.describe());
        outputs.push(r.stdout + &r.stderr);
    }
    let expected = tarball_tree(&cluster, "cp1", dir);
    let b64 = base64::engine::general_purpose::STANDARD;
    for out in &outputs {
        f.check(!out.contains("PRIVATE KEY") && !out.contains("base64,") && !out.contains("content:"), || {
            format!("secret-looking output: {out}")
        });
        for (p, (_, _, _, _, bytes)) in &expected {
            if bytes.len() > 32 {
                let enc = b64.encode(bytes);
                f.check(!out.contains(&enc[..32]), || format!("the content of {p} was printed"));
            }
        }
    }
    // --gzip: the whole user-data gzip-compressed, which cloud-init reads: exactly the plain one's bytes with --runcmd.
    let gz = std::fs::read(dir.join("gz/cloud-init/cp1.yaml.gz")).unwrap();
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice()).read_to_end(&mut inflated).unwrap();
    let runcmd = export(dir, &["cloud-init", "--dir", "out/ex", "--runcmd", "--out", "rc"]);
    f.check(runcmd.ok(), || runcmd.describe());
    f.check(inflated == std::fs::read(dir.join("rc/cloud-init/cp1.yaml")).unwrap(), || {
        "--gzip is not the user-data gzip-compressed".into()
    });
    f.check(gz.len() < cp1.len(), || format!("--gzip: {} bytes, plain {}", gz.len(), cp1.len()));
    f.eq("gz mode", &Some(0o600), &mode_of(&dir.join("gz/cloud-init/cp1.yaml.gz")));
    // Reproducible: the same bundle gives the same bytes.
    let before = shas(&cluster.join("export"));
    let again = export(dir, &["cloud-init", "--dir", "out/ex"]);
    let again2 = export(dir, &["ignition", "--dir", "out/ex"]);
    f.check(again.ok() && again2.ok(), || again.describe());
    f.eq("export again", &before, &shas(&cluster.join("export")));
    f.finish("exports_are_private_reproducible_never_printed_and_warn_over_16_kib");
}

#[test]
fn bad_inputs_exit_2_naming_them_and_write_nothing() {
    let tmp = bundle("bad", "kubeadm", "");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("plain")).unwrap();
    let before = shas(&dir.join("out"));
    let mut f = Failures::new();
    for (args, says) in [
        (&["cloud-init", "--dir", "out/ex", "--node", "nope"][..], vec!["--node \"nope\"", "out/ex has no node of that name", "cp1, w1"]),
        (&["ignition", "--dir", "plain"], vec!["plain is not a bundle", "hint:"]),
        (&["ignition", "--dir", "missing"], vec!["missing is not a bundle"]),
        (&["ignition", "--dir", "out/ex", "--gzip"], vec!["--gzip", "ignition"]),
        (&["yaml", "--dir", "out/ex"], vec!["invalid value 'yaml'"]),
    ] {
        let r = export(dir, args);
        f.check(r.code == Some(2) && says.iter().all(|s| r.stderr.contains(s)), || {
            format!("{args:?}: expected exit 2 saying {says:?}: {}", r.describe())
        });
        f.check(r.stdout.is_empty(), || format!("{args:?}: wrote {}", r.stdout));
    }
    f.eq("the bundle after refusals", &before, &shas(&dir.join("out")));
    f.check(!dir.join("out/ex/export").exists() && !dir.join("plain/export").exists(), || "an export directory was made".into());
    f.finish("bad_inputs_exit_2_naming_them_and_write_nothing");
}

#[test]
fn inventory_export_writes_them_with_every_generate_and_check_sees_them() {
    let tmp = bundle("inv", "hardway", "export: [ignition, cloud-init]\nexportRuncmd: true\n");
    let dir = tmp.path();
    let cluster = dir.join("out/ex");
    let mut f = Failures::new();
    for (fmt, ext) in [("cloud-init", "yaml"), ("ignition", "ign")] {
        f.eq(&format!("{fmt} dir mode"), &Some(0o700), &mode_of(&cluster.join(format!("export/{fmt}"))));
        let r = export(dir, &[fmt, "--dir", "out/ex", "--runcmd", "--out", "cmd"]);
        f.check(r.ok(), || r.describe());
        for node in ["cp1", "w1"] {
            let by_generate = cluster.join(format!("export/{fmt}/{node}.{ext}"));
            f.eq(&format!("{fmt} {node} mode"), &Some(0o600), &mode_of(&by_generate));
            f.check(read(&by_generate).is_some() && read(&by_generate) == read(&dir.join(format!("cmd/{fmt}/{node}.{ext}"))), || {
                format!("generate's {fmt} export of {node} is not the command's")
            });
        }
    }
    let gen = |extra: &[&str]| {
        let mut args = vec!["generate", "--config", "ex.yaml", "--out", "out", "--now", NOW];
        args.extend_from_slice(extra);
        kubebundle(dir, &args, &[])
    };
    let check = gen(&["--check"]);
    f.check(check.code == Some(0) && check.stdout.contains("up to date"), || format!("--check after generate: {}", check.describe()));
    // A changed export is drift, a re-run writes it back; the bytes are the same run after run.
    let before = shas(&cluster.join("export"));
    std::fs::write(cluster.join("export/ignition/w1.ign"), b"{}").unwrap();
    let check = gen(&["--check"]);
    f.check(check.code == Some(1) && check.stdout.contains("would change  export/ignition/w1.ign"), || {
        format!("--check after an edit: {}", check.describe())
    });
    let again = gen(&[]);
    f.check(again.ok(), || again.describe());
    f.eq("exports after a re-run", &before, &shas(&cluster.join("export")));
    // Without the option the next generate drops them; a bad value is refused with its place.
    let text = std::fs::read_to_string(dir.join("ex.yaml")).unwrap();
    std::fs::write(dir.join("ex.yaml"), text.replace("export: [ignition, cloud-init]", "export: [ignition, userdata]")).unwrap();
    let bad = gen(&[]);
    f.check(
        bad.code == Some(2)
            && bad.stderr.contains("ex.yaml:")
            && bad.stderr.contains("Inventory.export: unknown value \"userdata\"")
            && bad.stderr.contains("hint:"),
        || format!("a bad Inventory.export: {}", bad.describe()),
    );
    f.eq("exports after the refusal", &before, &shas(&cluster.join("export")));
    std::fs::write(dir.join("ex.yaml"), text.replace("export: [ignition, cloud-init]\n", "")).unwrap();
    let dropped = gen(&[]);
    f.check(dropped.ok() && !cluster.join("export").exists(), || format!("without Inventory.export: {}", dropped.describe()));
    f.finish("inventory_export_writes_them_with_every_generate_and_check_sees_them");
}

#[test]
fn generate_writes_the_exports_the_command_made_again_from_its_new_tarballs() {
    let tmp = bundle("refresh", "kubeadm", "");
    let dir = tmp.path();
    let cluster = dir.join("out/ex");
    let mut f = Failures::new();
    // The operator's exports into the bundle: cloud-init gzip-compressed for cp1 only, Ignition
    // with --runcmd for every node.
    let r = export(dir, &["cloud-init", "--dir", "out/ex", "--node", "cp1", "--gzip"]);
    let r2 = export(dir, &["ignition", "--dir", "out/ex", "--runcmd"]);
    assert!(r.ok() && r2.ok(), "{}\n{}", r.describe(), r2.describe());
    let record = cluster.join("export/ignition/.kubebundle-export.json");
    f.eq("record mode", &Some(0o600), &mode_of(&record));
    let files = ["export/cloud-init/cp1.yaml.gz", "export/ignition/cp1.ign", "export/ignition/w1.ign"];
    let before: Vec<Option<Vec<u8>>> = files.iter().map(|p| read(&cluster.join(p))).collect();
    f.check(before.iter().all(Option::is_some), || "the exports were not written".into());

    let gen = |extra: &[&str]| {
        let mut args = vec!["generate", "--config", "ex.yaml", "--out", "out", "--now", NOW];
        args.extend_from_slice(extra);
        kubebundle(dir, &args, &[])
    };
    // Every leaf is issued again (another validity): every tarball changes.
    let text = std::fs::read_to_string(dir.join("ex.yaml")).unwrap();
    let shorter = text.replace("encryptionAlgorithm: ECDSA-P256\n", "encryptionAlgorithm: ECDSA-P256\ncertificateValidityPeriod: 4000h\n");
    assert_ne!(text, shorter);
    std::fs::write(dir.join("ex.yaml"), &shorter).unwrap();
    let again = gen(&[]);
    f.check(again.ok(), || again.describe());
    // Still there, changed, and byte for byte what `export` makes now with the same options.
    let fresh = export(dir, &["cloud-init", "--dir", "out/ex", "--node", "cp1", "--gzip", "--out", "fresh"]);
    let fresh2 = export(dir, &["ignition", "--dir", "out/ex", "--runcmd", "--out", "fresh"]);
    f.check(fresh.ok() && fresh2.ok(), || fresh.describe());
    for (p, old) in files.iter().zip(&before) {
        let now = read(&cluster.join(p));
        f.check(now.is_some() && now != *old, || format!("{p}: not written again after the tarballs changed"));
        let same = read(&dir.join("fresh").join(p.trim_start_matches("export/")));
        f.check(now.is_some() && now == same, || format!("{p}: not what `export` makes from the new tarballs"));
        f.eq(&format!("{p} mode"), &Some(0o600), &mode_of(&cluster.join(p)));
    }
    f.check(!cluster.join("export/cloud-init/w1.yaml").exists(), || "an export of a node the operator did not export".into());
    let check = gen(&["--check"]);
    f.check(check.code == Some(0) && check.stdout.contains("up to date"), || format!("--check: {}", check.describe()));
    // An edited export is drift, written back by the next run.
    std::fs::write(cluster.join("export/ignition/w1.ign"), b"{}").unwrap();
    let check = gen(&["--check"]);
    f.check(check.code == Some(1) && check.stdout.contains("would change  export/ignition/w1.ign"), || check.describe());
    let back = gen(&[]);
    f.check(back.ok() && read(&cluster.join("export/ignition/w1.ign")) == read(&dir.join("fresh/ignition/w1.ign")), || back.describe());

    // w1 leaves the Inventory: its export leaves with it, and the record forgets it.
    std::fs::write(dir.join("ex.yaml"), shorter.replace("- {name: w1, address: \"10.7.0.11\", roles: [worker]}\n", "")).unwrap();
    let gone = gen(&[]);
    f.check(gone.ok(), || gone.describe());
    f.check(!cluster.join("export/ignition/w1.ign").exists(), || "w1's export outlived its node".into());
    f.check(cluster.join("export/ignition/cp1.ign").is_file() && cluster.join("export/cloud-init/cp1.yaml.gz").is_file(), || {
        "cp1's exports were dropped".into()
    });
    let rec = std::fs::read_to_string(&record).unwrap_or_default();
    f.check(rec.contains("cp1.ign") && !rec.contains("w1"), || format!("record: {rec}"));
    f.finish("generate_writes_the_exports_the_command_made_again_from_its_new_tarballs");
}
