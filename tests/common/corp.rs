//! A corporate PKI made with the real `openssl ca` (ECDSA P-256) for the external-CA tests
//! (ca_import, ca_csr, external_ca), and a work directory running kubebundle against it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{file_bytes, kubebundle, run_cmd, temp_dir, Run};

/// The `openssl ca` config of the corporate root: `copy_extensions` (none, copy), `preserve = yes`
/// (keep the request's DN order) when asked, the root and pathlen:0 intermediate extension
/// sections, and `extra` (more sections) after them.
pub fn corp_cnf(copy_extensions: &str, preserve: bool, extra: &str) -> String {
    let preserve = if preserve { "preserve = yes\n" } else { "" };
    format!(
        "\
[ca]
default_ca = corp
[corp]
dir = .
database = ./index.txt
new_certs_dir = ./newcerts
serial = ./serial
default_md = sha256
policy = anything
email_in_dn = no
unique_subject = no
{preserve}copy_extensions = {copy_extensions}
[anything]
organizationName = optional
commonName = supplied
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[v3_int]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,digitalSignature,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
{extra}"
    )
}

/// openssl in `dir` (openssl ca keeps its database there); it must succeed.
pub fn ossl(dir: &Path, args: &[&str]) -> Run {
    let mut c = Command::new("openssl");
    c.current_dir(dir).args(args).env("LC_ALL", "C").env("TZ", "UTC");
    let r = run_cmd(c);
    assert!(r.ok(), "{}", r.describe());
    r
}

/// A corporate CA directory (`<dir>/corp`): `ca.cnf`, the openssl ca database, and a root
/// `root.{key,crt}` (O=Example Corp, CN=Example Corp Root CA).
pub struct Corp {
    pub dir: PathBuf,
    /// The validity (openssl times) of what `sign` signs.
    pub validity: (String, String),
}

impl Corp {
    /// The directory with `cnf` as its ca.cnf, and the root valid `root_start` → `root_end` (the
    /// validity of what `sign` signs until it is set).
    pub fn new(dir: &Path, cnf: &str, root_start: &str, root_end: &str) -> Corp {
        let dir = dir.join("corp");
        std::fs::create_dir_all(dir.join("newcerts")).unwrap();
        std::fs::write(dir.join("ca.cnf"), cnf).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        let corp = Corp { dir, validity: (root_start.to_string(), root_end.to_string()) };
        corp.self_signed("root", "/O=Example Corp/CN=Example Corp Root CA", root_start, root_end);
        corp
    }
    /// A self-signed root `name.{key,csr,crt}` (v3_root).
    pub fn self_signed(&self, name: &str, subject: &str, start: &str, end: &str) {
        self.key(name);
        self.csr(name, subject);
        let (key, csr, crt) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
        self.ca(
            "ca.cnf",
            &["-selfsign", "-keyfile", &key, "-in", &csr, "-out", &crt, "-startdate", start, "-enddate", end, "-extensions", "v3_root"],
        );
    }
    /// An ECDSA P-256 key `name.key`.
    pub fn key(&self, name: &str) {
        ossl(&self.dir, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &format!("{name}.key")]);
    }
    /// A request `name.csr` for `name.key`.
    pub fn csr(&self, name: &str, subject: &str) {
        ossl(
            &self.dir,
            &["req", "-new", "-config", "ca.cnf", "-key", &format!("{name}.key"), "-subj", subject, "-out", &format!("{name}.csr")],
        );
    }
    /// `openssl ca -batch -config CNF ARGS -notext` in the directory.
    pub fn ca(&self, cnf: &str, args: &[&str]) {
        let mut all = vec!["ca", "-batch", "-config", cnf];
        all.extend(args);
        all.push("-notext");
        ossl(&self.dir, &all);
    }
    /// The CA `by` signs `csr` into `out` with `cnf`, valid `start` → `end`, with `args` added.
    pub fn sign_by(&self, cnf: &str, by: &str, csr: &str, out: &str, (start, end): (&str, &str), args: &[&str]) {
        let (cert, key) = (format!("{by}.crt"), format!("{by}.key"));
        let mut all = vec!["-cert", &cert, "-keyfile", &key, "-in", csr, "-out", out, "-startdate", start, "-enddate", end];
        all.extend(args);
        self.ca(cnf, &all);
    }
    /// The CA `by` signs `csr` into `out` with `cnf` for the corp's validity, with `args` added.
    pub fn sign(&self, cnf: &str, by: &str, csr: &str, out: &str, args: &[&str]) {
        self.sign_by(cnf, by, csr, out, (&self.validity.0, &self.validity.1), args);
    }
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
    pub fn text(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap()
    }
    pub fn der(&self, name: &str) -> Vec<u8> {
        pem::parse(self.text(name)).unwrap().into_contents()
    }
    /// `openssl verify -CAfile root.crt [-untrusted UNTRUSTED] leaf` of a DER certificate (written
    /// to a file of `scratch`), at the real time.
    pub fn verify(&self, scratch: &Path, der: &[u8], untrusted: Option<&str>) -> Run {
        let leaf = scratch.join(super::unique_name("leaf"));
        std::fs::write(&leaf, pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))).unwrap();
        let root = self.path("root.crt");
        let mut args = vec!["verify", "-CAfile", &root];
        if let Some(u) = untrusted {
            args.extend(["-untrusted", u]);
        }
        args.push(leaf.to_str().unwrap());
        super::openssl(&args)
    }
}

/// A test's temp dir with its config `c.yaml`, its corporate CA and the clock of every command.
pub struct Work {
    pub _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub cluster: &'static str,
    pub corp: Corp,
    pub now: String,
}

impl Work {
    /// A temp dir holding `config` as c.yaml and the CA `corp` makes in it.
    pub fn with(prefix: &str, cluster: &'static str, config: &str, now: &str, corp: impl FnOnce(&Path) -> Corp) -> Work {
        let tmp = temp_dir(prefix);
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("c.yaml"), config).unwrap();
        let corp = corp(&dir);
        Work { _tmp: tmp, dir, cluster, corp, now: now.to_string() }
    }
    pub fn out(&self) -> PathBuf {
        self.dir.join("out")
    }
    pub fn bundle(&self) -> PathBuf {
        self.out().join(self.cluster)
    }
    pub fn run(&self, args: &[&str]) -> Run {
        kubebundle(&self.dir, args, &[])
    }
    /// `generate --config c.yaml --now NOW --out OUT EXTRA`.
    pub fn generate_with(&self, extra: &[&str]) -> Run {
        let out = self.out();
        let mut args = vec!["generate", "--config", "c.yaml", "--now", &self.now, "--out", out.to_str().unwrap()];
        args.extend(extra);
        self.run(&args)
    }
    pub fn generate(&self) -> Run {
        self.generate_with(&[])
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file under `dir` (relative path → sha256).
pub fn file_digests(dir: &Path) -> BTreeMap<String, String> {
    file_bytes(dir).into_iter().map(|(p, b)| (p, sha256(&b))).collect()
}

/// Every regular file of a tarball, read in memory.
pub fn tarball_files(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut archive = tar::Archive::new(gz);
    let mut out = BTreeMap::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let name = e.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            out.insert(name, bytes);
        }
    }
    out
}

/// The DER certificates of a PEM file.
pub fn pem_certs(bytes: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(bytes).unwrap_or_default().into_iter().filter(|b| b.tag() == "CERTIFICATE").map(|b| b.into_contents()).collect()
}

/// The base64 values of `key:` lines of a kubeconfig, decoded.
pub fn kubeconfig_values(text: &str, key: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
        .map(|v| base64::engine::general_purpose::STANDARD.decode(v).unwrap())
        .collect()
}

// =============================================================================================
// External-CA mode (external_ca, live_external_ca)

/// `openssl ca` copies the request's extensions, keeps its DN order, and adds `v3_leaf`.
pub const V3_LEAF: &str = "\
[v3_leaf]
basicConstraints = critical,CA:FALSE
authorityKeyIdentifier = keyid:always
";

/// openssl's time form of an RFC 3339 time.
pub fn ossl_time(rfc: &str) -> String {
    rfc.chars().filter(|c| c.is_ascii_digit()).collect::<String>() + "Z"
}

/// A root, the intermediates `ca`, `fp`, `etcd` (for the three cluster CAs) and `other` (another
/// intermediate) under it (2025 → 2035); what `sign` signs (copying the request's extensions) is
/// valid from a day before `now_unix` for 300 days.
pub fn external_corp(dir: &Path, now_unix: i64) -> Corp {
    let mut corp = Corp::new(dir, &corp_cnf("copy", true, V3_LEAF), "20250101000000Z", "20330101000000Z");
    corp.validity = (ossl_time(&super::rfc3339(now_unix - 86400)), ossl_time(&super::rfc3339(now_unix + 300 * 86400)));
    for name in ["ca", "other", "fp", "etcd"] {
        corp.key(name);
        corp.csr(name, &format!("/O=Example Corp/CN=kubernetes {name}"));
        let (csr, crt) = (format!("{name}.csr"), format!("{name}.crt"));
        corp.sign_by("ca.cnf", "root", &csr, &crt, ("20250101000000Z", "20350101000000Z"), &["-extensions", "v3_int"]);
    }
    corp
}

/// `openssl ca` with CA `by`, copying the request's extensions.
pub fn sign_leaf(corp: &Corp, by: &str, csr: &str, out: &str) {
    corp.sign("ca.cnf", by, csr, out, &["-extensions", "v3_leaf"]);
}

/// Every CSR under `csr/` (path relative to it).
pub fn csr_files(bundle: &Path) -> Vec<String> {
    file_bytes(&bundle.join("csr")).into_keys().filter(|p| p.ends_with(".csr")).collect()
}

impl Work {
    /// `ca import WHICH --cert corp/FILE --chain corp/root.crt`, without the key.
    pub fn import_keyless(&self, which: &str, file: &str) -> Run {
        let out = self.out();
        self.run(&[
            "ca",
            "import",
            which,
            "--config",
            "c.yaml",
            "--now",
            &self.now,
            "--out",
            out.to_str().unwrap(),
            "--cert",
            &self.corp.path(file),
            "--chain",
            &self.corp.path("root.crt"),
        ])
    }

    /// `import-signed --dir BUNDLE INPUTS`.
    pub fn import_signed(&self, bundle: &Path, inputs: &[&Path]) -> Run {
        let mut args = vec!["import-signed".to_string(), "--dir".to_string(), bundle.display().to_string()];
        args.extend(inputs.iter().map(|p| p.display().to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&refs)
    }
}

/// Every CSR of the bundle signed with `sign_leaf` into `signed/<its path>.crt` by the
/// `external_corp` intermediate of its CA: `etcd` for the etcd CA's leaves, `fp` for the
/// front-proxy CA's, `ca` for the others. Returns the CSRs (paths relative to `csr/`).
pub fn sign_all(w: &Work, signed: &Path) -> Vec<String> {
    let csrs = csr_files(&w.bundle());
    for rel in &csrs {
        let by = if rel.contains("etcd") {
            "etcd"
        } else if rel.contains("front-proxy") {
            "fp"
        } else {
            "ca"
        };
        let crt = signed.join(rel.replace(".csr", ".crt"));
        std::fs::create_dir_all(crt.parent().unwrap()).unwrap();
        sign_leaf(&w.corp, by, w.bundle().join("csr").join(rel).to_str().unwrap(), crt.to_str().unwrap());
    }
    csrs
}
