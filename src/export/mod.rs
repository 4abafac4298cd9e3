//! A node's files as first-boot provisioning data: a cloud-init `#cloud-config` (`write_files`)
//! or an Ignition config (spec 3.3.0, the newest Debian 12's `ignition-validate` 2.14 takes), made
//! from the node's tree in memory (its tarball read through the node-tree model). Every file of
//! the tree becomes one entry with its path, mode, owner root:root (the tarball's uid/gid 0) and
//! its exact bytes, base64 (gzip-compressed first where that is smaller); Ignition also gets the
//! tree's directories (0755, as the tarball's directory entries). Optionally the node's first-boot
//! step: `kubeadm init|join --config ...` (kubeadm profile) or `systemctl enable --now <units>`
//! (hardway, binary). The same tree gives the same bytes.

use std::io::Write;

use base64::Engine;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::tree::node::NodeTree;

/// The Ignition spec version written.
pub const IGNITION_VERSION: &str = "3.3.0";
/// The tightest user-data limit of a common cloud (AWS EC2: 16 KiB before base64).
pub const USER_DATA_LIMIT: usize = 16 << 10;

/// Where systemd units of a node's tree live.
const UNIT_DIR: &str = "etc/systemd/system/";
/// The order the README starts a node's units in: etcd and the control plane, then the node's own.
const UNIT_ORDER: [&str; 6] = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    CloudInit,
    Ignition,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::CloudInit => "cloud-init",
            Format::Ignition => "ignition",
        }
    }

    /// The file name of a node's export.
    pub fn file_name(self, node: &str) -> String {
        match self {
            Format::CloudInit => format!("{node}.yaml"),
            Format::Ignition => format!("{node}.ign"),
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "cloud-init" => Some(Format::CloudInit),
            "ignition" => Some(Format::Ignition),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Run the node's first-boot step (cloud-init `runcmd`; Ignition: enabled units).
    pub runcmd: bool,
}

/// A node's first-boot step, from what its tree holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `kubeadm init|join --config /<path>`.
    Kubeadm { init: bool, config: String },
    /// `systemctl enable --now` these units (names with `.service`), in order.
    Units(Vec<String>),
    /// Nothing the tree says how to start.
    None,
}

/// The first-boot step of `tree`: kubeadm's init or join config when it holds one, else its units.
pub fn step(tree: &NodeTree) -> Step {
    for (artifact, init) in [("kubeadm-init", true), ("kubeadm-join", false)] {
        if let Some((path, _)) = tree.artifact(artifact) {
            return Step::Kubeadm { init, config: format!("/{path}") };
        }
    }
    let units = units(tree);
    if units.is_empty() {
        Step::None
    } else {
        Step::Units(units)
    }
}

/// The `.service` units of the tree, etcd and the control plane first.
fn units(tree: &NodeTree) -> Vec<String> {
    let mut units: Vec<String> = tree
        .files
        .keys()
        .filter_map(|p| p.strip_prefix(UNIT_DIR))
        .filter(|n| n.ends_with(".service") && !n.contains('/'))
        .map(str::to_string)
        .collect();
    let rank = |n: &String| UNIT_ORDER.iter().position(|u| n.strip_suffix(".service") == Some(u)).unwrap_or(UNIT_ORDER.len());
    units.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    units
}

/// The step as argv lists (cloud-init `runcmd` list form).
fn commands(step: &Step) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match step {
        Step::Kubeadm { init, config } => vec![s(&["kubeadm", if *init { "init" } else { "join" }, "--config", config])],
        Step::Units(units) => {
            let mut enable = s(&["systemctl", "enable", "--now"]);
            enable.extend(units.iter().cloned());
            vec![s(&["systemctl", "daemon-reload"]), enable]
        }
        Step::None => Vec::new(),
    }
}

/// A node's export: its bytes and, when it is larger than the tightest cloud's user-data limit,
/// a warning saying so.
pub struct Exported {
    pub bytes: Zeroizing<Vec<u8>>,
    pub warning: Option<String>,
}

/// gzip with no name and no mtime, best compression: the same bytes for the same input.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
    // Writing into memory cannot fail.
    let _ = gz.write_all(bytes);
    gz.finish().unwrap_or_default()
}

/// base64 of `bytes`, gzip-compressed first when that is shorter: (text, compressed).
fn encode(bytes: &[u8]) -> (Zeroizing<String>, bool) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let plain = Zeroizing::new(b64.encode(bytes));
    let packed = Zeroizing::new(gzip(bytes));
    if packed.len() < bytes.len() {
        let gz = Zeroizing::new(b64.encode(&*packed));
        if gz.len() < plain.len() {
            return (gz, true);
        }
    }
    (plain, false)
}

/// A YAML scalar: JSON's quoting, which YAML reads the same.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The node's `#cloud-config`: `write_files` with every file of its tree, and `runcmd` with its
/// first-boot step when asked.
pub fn cloud_init(tree: &NodeTree, opts: Options) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(String::from("#cloud-config\n"));
    let name = tree.name.as_deref().unwrap_or("node");
    out.push_str(&format!("# kubebundle: the files of node {} (profile {}); they hold secrets\n", q(name), tree.layout.profile));
    out.push_str("write_files:\n");
    for (path, f) in &tree.files {
        let (content, gz) = encode(&f.bytes);
        out.push_str(&format!("- path: {}\n", q(&format!("/{path}"))));
        out.push_str(&format!("  owner: {}\n", q(&owner(f.uid, f.gid))));
        out.push_str(&format!("  permissions: '{:04o}'\n", f.mode & 0o7777));
        out.push_str(&format!("  encoding: {}\n", if gz { "gz+b64" } else { "b64" }));
        out.push_str("  content: ");
        out.push_str(&content);
        out.push('\n');
    }
    if opts.runcmd {
        let cmds = commands(&step(tree));
        if !cmds.is_empty() {
            out.push_str("runcmd:\n");
            for argv in cmds {
                out.push_str(&format!("- [{}]\n", argv.iter().map(|a| q(a)).collect::<Vec<_>>().join(", ")));
            }
        }
    }
    Zeroizing::new(std::mem::take(&mut *out).into_bytes())
}

/// root:root for the tarball's uid/gid 0 (what every kubebundle tarball holds), else the ids.
fn owner(uid: u32, gid: u32) -> String {
    let name = |id: u32| if id == 0 { "root".to_string() } else { id.to_string() };
    format!("{}:{}", name(uid), name(gid))
}

#[derive(Serialize)]
struct Ignition {
    ignition: IgnitionMeta,
    storage: Storage,
    #[serde(skip_serializing_if = "Option::is_none")]
    systemd: Option<Systemd>,
}

#[derive(Serialize)]
struct IgnitionMeta {
    version: &'static str,
}

#[derive(Serialize)]
struct Storage {
    directories: Vec<Directory>,
    files: Vec<IgnFile>,
}

#[derive(Serialize)]
struct Id {
    id: u32,
}

#[derive(Serialize)]
struct Directory {
    path: String,
    mode: u32,
    user: Id,
    group: Id,
}

#[derive(Serialize)]
struct IgnFile {
    path: String,
    overwrite: bool,
    mode: u32,
    user: Id,
    group: Id,
    contents: Contents,
}

#[derive(Serialize)]
struct Contents {
    #[serde(serialize_with = "plain")]
    source: Zeroizing<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compression: Option<&'static str>,
}

#[derive(Serialize)]
struct Systemd {
    units: Vec<Unit>,
}

#[derive(Serialize)]
struct Unit {
    name: String,
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    contents: Option<String>,
}

fn plain<S: serde::Serializer>(s: &Zeroizing<String>, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s)
}

/// The unit that runs kubeadm once at first boot (Ignition has no runcmd).
pub const KUBEADM_UNIT: &str = "kubebundle-kubeadm.service";

/// The node's Ignition config: every directory and file of its tree (data URLs, gzip where
/// smaller), and with `runcmd` its units enabled (hardway, binary) or a one-shot unit running
/// kubeadm (kubeadm profile).
pub fn ignition(tree: &NodeTree, opts: Options) -> Zeroizing<Vec<u8>> {
    let file_tree = tree.file_tree();
    let directories = file_tree
        .dirs()
        .into_iter()
        .map(|d| Directory { path: format!("/{d}"), mode: 0o755, user: Id { id: 0 }, group: Id { id: 0 } })
        .collect();
    let files = tree
        .files
        .iter()
        .map(|(path, f)| {
            let (content, gz) = encode(&f.bytes);
            let mut source = Zeroizing::new(String::with_capacity(content.len() + 14));
            source.push_str("data:;base64,");
            source.push_str(&content);
            IgnFile {
                path: format!("/{path}"),
                overwrite: true,
                mode: f.mode & 0o7777,
                user: Id { id: f.uid },
                group: Id { id: f.gid },
                contents: Contents { source, compression: gz.then_some("gzip") },
            }
        })
        .collect();
    let systemd = match (opts.runcmd, step(tree)) {
        (false, _) | (true, Step::None) => None,
        (true, Step::Units(units)) => {
            Some(Systemd { units: units.into_iter().map(|name| Unit { name, enabled: true, contents: None }).collect() })
        }
        (true, Step::Kubeadm { init, config }) => Some(Systemd {
            units: vec![Unit {
                name: KUBEADM_UNIT.to_string(),
                enabled: true,
                contents: Some(format!(
                    "[Unit]\nDescription=kubeadm {verb} (kubebundle, once at first boot)\nWants=network-online.target\n\
After=network-online.target containerd.service\nConditionPathExists=!/var/lib/kubebundle/kubeadm.done\n\n\
[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/bin/env kubeadm {verb} --config {config}\n\
ExecStartPost=/usr/bin/mkdir -p /var/lib/kubebundle\nExecStartPost=/usr/bin/touch /var/lib/kubebundle/kubeadm.done\n\n\
[Install]\nWantedBy=multi-user.target\n",
                    verb = if init { "init" } else { "join" }
                )),
            }],
        }),
    };
    let doc = Ignition { ignition: IgnitionMeta { version: IGNITION_VERSION }, storage: Storage { directories, files }, systemd };
    let mut bytes = Zeroizing::new(serde_json::to_vec_pretty(&doc).unwrap_or_default());
    bytes.push(b'\n');
    bytes
}

/// The node's export in `format`, with a warning when it is over the tightest user-data limit.
/// `shown` is how to name the file in the warning.
pub fn export(tree: &NodeTree, format: Format, opts: Options, shown: &str) -> Exported {
    let bytes = match format {
        Format::CloudInit => cloud_init(tree, opts),
        Format::Ignition => ignition(tree, opts),
    };
    let warning = (bytes.len() > USER_DATA_LIMIT).then(|| size_warning(format, shown, &bytes));
    Exported { bytes, warning }
}

/// User-data limits of common clouds (bytes before base64; OpenStack's applies to the base64 text,
/// so its raw limit is about 3/4 of 65535).
const LIMITS: [(&str, usize); 4] = [("AWS EC2", 16384), ("OpenStack Nova", 49152), ("Azure", 65535), ("GCE", 262144)];

fn size_warning(format: Format, shown: &str, bytes: &[u8]) -> String {
    let over_limits: Vec<String> =
        LIMITS.iter().filter(|(_, limit)| bytes.len() > *limit).map(|(cloud, limit)| format!("{cloud} ({limit} bytes)")).collect();
    let over = format!("{shown} is {} bytes, over the user-data limit of {}", bytes.len(), over_limits.join(", "));
    match format {
        Format::CloudInit => {
            let gz = gzip(bytes).len();
            let fits = if gz <= USER_DATA_LIMIT { "fits" } else { "is still over: fetch the files another way there" };
            format!(
                "{over}\n  hint: cloud-init takes user-data gzip-compressed whole: `export cloud-init --gzip` writes {gz} bytes, which {fits}"
            )
        }
        Format::Ignition => format!(
            "{over}\n  hint: Ignition takes no gzip-compressed config on those clouds: serve this file over https and give the instance a config whose ignition.config.replace names it (with its verification.hash)"
        ),
    }
}

/// The node's export in `format` as it goes to a file: `gzip` compresses the whole user-data
/// (cloud-init's `--gzip`; the file is then `<node>.yaml.gz`), with its own size warning.
pub fn export_file(tree: &NodeTree, format: Format, opts: Options, gzip_whole: bool, shown: &str) -> Exported {
    let exported = export(tree, format, opts, shown);
    if !gzip_whole {
        return exported;
    }
    let bytes = Zeroizing::new(gzip(&exported.bytes));
    let warning = (bytes.len() > USER_DATA_LIMIT).then(|| {
        format!(
            "{shown}.gz is {} bytes gzip-compressed, still over the 16 KiB (16384 bytes) user-data limit of AWS EC2\n  hint: fetch the node's files another way there (its tarball over https or scp), or use a cloud with a larger limit",
            bytes.len()
        )
    });
    Exported { bytes, warning }
}

/// What `kubebundle export` wrote into a bundle's own `export/<format>/`, kept there as
/// `RECORD_FILE` so that `generate` writes those files again from the new tarballs (with the
/// same options) instead of dropping them: file name → its node and options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Record {
    pub files: std::collections::BTreeMap<String, RecordedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RecordedFile {
    pub node: String,
    #[serde(default)]
    pub runcmd: bool,
    #[serde(default)]
    pub gzip: bool,
}

/// The record's name in `export/<format>/` (a node name never starts with a dot).
pub const RECORD_FILE: &str = ".kubebundle-export.json";

impl Record {
    /// The record of `dir` (`<bundle>/export/<format>`), if it has a readable one.
    pub fn read(dir: &std::path::Path) -> Option<Record> {
        serde_json::from_slice(&std::fs::read(dir.join(RECORD_FILE)).ok()?).ok()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).unwrap_or_default();
        b.push(b'\n');
        b
    }
}
