//! Checks of a generated bundle against the model, each collecting every failure it finds.
//! Certificates are parsed with x509-parser and cross-checked with `openssl x509 -text`,
//! chains with `openssl verify -x509_strict`, keys with `openssl pkey`, kubeconfigs and
//! manifests with `kubectl`, tarballs with `tar`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::model::{CertSpec, KubeconfigSpec, Model, Node, SanSet, Signer, PKI_CA};
use super::*;

pub struct Ctx<'a> {
    pub model: &'a Model,
    /// `out/<clusterName>`
    pub cluster: PathBuf,
    pub scratch: PathBuf,
    /// Seconds of slack allowed on notBefore/notAfter (0 for kubebundle, which has a fixed clock).
    pub tolerance: i64,
    /// Use this directory as the tree of every node (for checking a bare /etc tree).
    pub root_override: Option<PathBuf>,
}

impl<'a> Ctx<'a> {
    pub fn new(g: &'a Generated, scratch: &Path) -> Ctx<'a> {
        Ctx { model: &g.model, cluster: g.cluster.clone(), scratch: scratch.to_path_buf(), tolerance: 0, root_override: None }
    }
    pub fn root(&self, n: &Node) -> PathBuf {
        match &self.root_override {
            Some(r) => r.clone(),
            None => self.cluster.join("nodes").join(&n.name),
        }
    }
    pub fn state(&self, rel: &str) -> PathBuf {
        self.cluster.join("state").join(rel)
    }
    /// The time at which chains are verified: one hour into the run clock's day.
    pub fn attime(&self) -> String {
        (self.model.now + HOUR).to_string()
    }
    pub fn scratch_file(&self, stem: &str) -> PathBuf {
        self.scratch.join(unique_name(&stem.replace(['/', ':'], "_")))
    }
}

/// Runs every check on a generated bundle.
pub fn check_all(g: &Generated) -> Failures {
    let scratch = temp_dir("scratch");
    let ctx = Ctx::new(g, scratch.path());
    let mut f = Failures::new();
    check_cluster_layout(&ctx, &mut f);
    check_state(&ctx, &mut f);
    check_node_trees(&ctx, &mut f);
    check_node_certs(&ctx, &mut f);
    check_node_kubeconfigs(&ctx, &mut f);
    check_join_and_discovery(&ctx, &mut f);
    check_tokens(&ctx, &mut f);
    check_encryption(&ctx, &mut f);
    check_uniqueness(&ctx, &mut f);
    check_tarballs(&ctx, &mut f);
    f
}

// =============================================================================================
// Certificates

#[derive(Debug, Clone)]
pub struct CertFacts {
    pub der: Vec<u8>,
    pub version: u32,
    pub cns: Vec<String>,
    pub os: Vec<String>,
    pub other_subject_attrs: Vec<String>,
    pub subject_raw: Vec<u8>,
    pub issuer_raw: Vec<u8>,
    pub serial: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    /// (critical, usages)
    pub key_usage: Option<(bool, Vec<&'static str>)>,
    /// (server_auth, client_auth, anything else)
    pub eku: Option<(bool, bool, bool)>,
    /// (critical, ca)
    pub basic_constraints: Option<(bool, bool)>,
    pub san_dns: Vec<String>,
    pub san_ips: Vec<IpAddr>,
    pub san_other: usize,
    pub has_san: bool,
    pub ski: Option<Vec<u8>>,
    pub aki: Option<Option<Vec<u8>>>,
    pub sig_oid: String,
}

pub fn count_pem_blocks(text: &str, label: &str) -> usize {
    text.matches(&format!("-----BEGIN {label}-----")).count()
}

pub fn parse_cert_pem(pem: &[u8]) -> Result<CertFacts, String> {
    let text = String::from_utf8_lossy(pem);
    let n = count_pem_blocks(&text, "CERTIFICATE");
    if n != 1 {
        return Err(format!("expected exactly one PEM CERTIFICATE block, found {n}"));
    }
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("PEM: {e}"))?;
    if p.label != "CERTIFICATE" {
        return Err(format!("PEM label {:?}", p.label));
    }
    parse_cert_der(&p.contents)
}

pub fn parse_cert_der(der: &[u8]) -> Result<CertFacts, String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("X.509: {e}"))?;
    let mut cns = vec![];
    let mut os = vec![];
    let mut other = vec![];
    for a in c.subject().iter_attributes() {
        let v = a.as_str().map(String::from).unwrap_or_else(|_| "<non-string>".into());
        match a.attr_type().to_id_string().as_str() {
            "2.5.4.3" => cns.push(v),
            "2.5.4.10" => os.push(v),
            o => other.push(format!("{o}={v}")),
        }
    }
    let key_usage = c.key_usage().map_err(|e| format!("keyUsage: {e}"))?.map(|ku| {
        let k = ku.value;
        let mut v = vec![];
        let bits: [(bool, &'static str); 9] = [
            (k.digital_signature(), "digitalSignature"),
            (k.non_repudiation(), "nonRepudiation"),
            (k.key_encipherment(), "keyEncipherment"),
            (k.data_encipherment(), "dataEncipherment"),
            (k.key_agreement(), "keyAgreement"),
            (k.key_cert_sign(), "keyCertSign"),
            (k.crl_sign(), "cRLSign"),
            (k.encipher_only(), "encipherOnly"),
            (k.decipher_only(), "decipherOnly"),
        ];
        for (on, name) in bits {
            if on {
                v.push(name);
            }
        }
        (ku.critical, v)
    });
    let eku = c.extended_key_usage().map_err(|e| format!("extendedKeyUsage: {e}"))?.map(|e| {
        let v = e.value;
        let other = v.any || v.code_signing || v.email_protection || v.time_stamping || v.ocsp_signing || !v.other.is_empty();
        (v.server_auth, v.client_auth, other)
    });
    let basic_constraints = c.basic_constraints().map_err(|e| format!("basicConstraints: {e}"))?.map(|b| (b.critical, b.value.ca));
    let mut san_dns = vec![];
    let mut san_ips = vec![];
    let mut san_other = 0;
    let san = c.subject_alternative_name().map_err(|e| format!("subjectAltName: {e}"))?;
    let has_san = san.is_some();
    if let Some(s) = san {
        for g in &s.value.general_names {
            match g {
                GeneralName::DNSName(d) => san_dns.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => san_ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())),
                    16 => san_ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())),
                    _ => san_other += 1,
                },
                _ => san_other += 1,
            }
        }
    }
    let mut ski = None;
    let mut aki = None;
    for e in c.extensions() {
        match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(a) => aki = Some(a.key_identifier.as_ref().map(|k| k.0.to_vec())),
            _ => {}
        }
    }
    Ok(CertFacts {
        der: der.to_vec(),
        version: c.version().0 + 1,
        cns,
        os,
        other_subject_attrs: other,
        subject_raw: c.subject().as_raw().to_vec(),
        issuer_raw: c.issuer().as_raw().to_vec(),
        serial: c.raw_serial().to_vec(),
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
        key_usage,
        eku,
        basic_constraints,
        san_dns,
        san_ips,
        san_other,
        has_san,
        ski,
        aki,
        sig_oid: c.signature_algorithm.algorithm.to_id_string(),
    })
}

/// The serial as an unsigned big-endian number without leading zeros.
fn serial_magnitude(raw: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = raw.to_vec();
    while v.first() == Some(&0) {
        v.remove(0);
    }
    v
}

pub struct AlgoExpect {
    pub sig_name: &'static str,
    pub sig_oid: &'static str,
    pub pk_name: &'static str,
    pub bits: u32,
    pub curve: Option<&'static str>,
}

pub fn algo_expect(algo: &str) -> AlgoExpect {
    let rsa = |bits| AlgoExpect {
        sig_name: "sha256WithRSAEncryption",
        sig_oid: "1.2.840.113549.1.1.11",
        pk_name: "rsaEncryption",
        bits,
        curve: None,
    };
    match algo {
        "RSA-2048" => rsa(2048),
        "RSA-3072" => rsa(3072),
        "RSA-4096" => rsa(4096),
        "ECDSA-P256" => AlgoExpect {
            sig_name: "ecdsa-with-SHA256",
            sig_oid: "1.2.840.10045.4.3.2",
            pk_name: "id-ecPublicKey",
            bits: 256,
            curve: Some("P-256"),
        },
        "ECDSA-P384" => AlgoExpect {
            sig_name: "ecdsa-with-SHA384",
            sig_oid: "1.2.840.10045.4.3.3",
            pk_name: "id-ecPublicKey",
            bits: 384,
            curve: Some("P-384"),
        },
        other => panic!("unknown encryptionAlgorithm {other}"),
    }
}

/// `openssl x509 -noout -text` output with helpers to read extensions.
pub struct OsslText(pub String);

impl OsslText {
    pub fn load(path: &Path) -> Result<OsslText, String> {
        let r = openssl(&["x509", "-noout", "-text", "-in", path.to_str().unwrap()]);
        if !r.ok() {
            return Err(r.describe());
        }
        Ok(OsslText(r.stdout))
    }
    /// (critical, value line) of an extension named like `X509v3 Key Usage`.
    pub fn ext(&self, name: &str) -> Option<(bool, String)> {
        let lines: Vec<&str> = self.0.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim();
            if let Some(rest) = t.strip_prefix(&format!("{name}:")) {
                let val = lines.get(i + 1).map(|s| s.trim().to_string()).unwrap_or_default();
                return Some((rest.contains("critical"), val));
            }
        }
        None
    }
    pub fn field(&self, prefix: &str) -> Option<String> {
        self.0.lines().map(str::trim).find_map(|l| l.strip_prefix(prefix).map(|s| s.trim().to_string()))
    }
    /// Subject as (attr, value) pairs, from `Subject: O = a, CN = b`.
    pub fn subject(&self) -> Vec<(String, String)> {
        let s = self.field("Subject:").unwrap_or_default();
        if s.is_empty() {
            return vec![];
        }
        s.split(", ")
            .map(|kv| match kv.split_once(" = ") {
                Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
                None => (kv.to_string(), String::new()),
            })
            .collect()
    }
    pub fn sans(&self) -> Option<(BTreeSet<String>, BTreeSet<IpAddr>, Vec<String>)> {
        let (_, v) = self.ext("X509v3 Subject Alternative Name")?;
        let mut dns = BTreeSet::new();
        let mut ips = BTreeSet::new();
        let mut other = vec![];
        for item in v.split(", ") {
            if let Some(d) = item.strip_prefix("DNS:") {
                dns.insert(d.to_string());
            } else if let Some(ip) = item.strip_prefix("IP Address:") {
                match ip.parse::<IpAddr>() {
                    Ok(ip) => {
                        ips.insert(ip);
                    }
                    Err(_) => other.push(item.to_string()),
                }
            } else {
                other.push(item.to_string());
            }
        }
        Some((dns, ips, other))
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Checks one certificate (and its key) against its spec. `crt` and `key` are absolute paths;
/// the issuer CA certificate is taken from `root` (the node tree), or `crt` itself for a CA.
pub fn check_cert(
    ctx: &Ctx,
    label: &str,
    spec: &CertSpec,
    crt: &Path,
    key: Option<&Path>,
    root: &Path,
    f: &mut Failures,
) -> Option<CertFacts> {
    let m = ctx.model;
    let l = format!("{label} [{}]", spec.id);
    let Some(pem) = read(crt) else {
        f.fail(format!("{l}: missing certificate {}", crt.display()));
        return None;
    };
    let c = match parse_cert_pem(&pem) {
        Ok(c) => c,
        Err(e) => {
            f.fail(format!("{l}: cannot parse {}: {e}", crt.display()));
            return None;
        }
    };
    f.eq(&format!("{l}: X.509 version"), &3, &c.version);

    // Subject.
    f.eq(&format!("{l}: subject CN"), &vec![spec.cn.clone()], &c.cns);
    let os = sorted(c.os.clone());
    f.check(spec.o.iter().any(|alt| sorted(alt.clone()) == os), || format!("{l}: subject O: expected one of {:?}, got {:?}", spec.o, c.os));
    f.check(c.other_subject_attrs.is_empty(), || format!("{l}: subject has attributes other than CN/O: {:?}", c.other_subject_attrs));

    // Key usage: critical; CA digitalSignature, keyEncipherment, keyCertSign; leaf the first two.
    let want_ku: Vec<&str> =
        if spec.is_ca { vec!["digitalSignature", "keyEncipherment", "keyCertSign"] } else { vec!["digitalSignature", "keyEncipherment"] };
    match &c.key_usage {
        None => f.fail(format!("{l}: no KeyUsage extension")),
        Some((crit, ku)) => {
            f.check(*crit, || format!("{l}: KeyUsage is not critical"));
            f.eq(&format!("{l}: KeyUsage"), &want_ku, ku);
        }
    }
    // Extended key usage.
    if spec.is_ca {
        f.check(c.eku.is_none(), || format!("{l}: a CA must have no ExtendedKeyUsage, got {:?}", c.eku));
    } else {
        match c.eku {
            None => f.fail(format!("{l}: no ExtendedKeyUsage")),
            Some((s, cl, other)) => {
                f.eq(&format!("{l}: EKU serverAuth"), &spec.server_auth, &s);
                f.eq(&format!("{l}: EKU clientAuth"), &spec.client_auth, &cl);
                f.check(!other, || format!("{l}: EKU has usages other than serverAuth/clientAuth"));
            }
        }
    }
    // Basic constraints, critical.
    match c.basic_constraints {
        None => f.fail(format!("{l}: no BasicConstraints")),
        Some((crit, ca)) => {
            f.check(crit, || format!("{l}: BasicConstraints is not critical"));
            f.eq(&format!("{l}: BasicConstraints CA"), &spec.is_ca, &ca);
        }
    }
    // SANs.
    if spec.sans.is_empty() {
        f.check(!c.has_san, || format!("{l}: expected no SubjectAltName, got DNS {:?} IP {:?}", c.san_dns, c.san_ips));
    } else {
        let actual = SanSet { dns: c.san_dns.clone(), ips: c.san_ips.clone() };
        f.check(spec.sans.iter().any(|alt| alt.same_set(&actual)), || {
            let alts: Vec<String> = spec.sans.iter().map(|a| a.render()).collect();
            format!("{l}: SANs: expected [{}], got [{}]", alts.join("] or ["), actual.render())
        });
        let dd: BTreeSet<_> = c.san_dns.iter().collect();
        let di: BTreeSet<_> = c.san_ips.iter().collect();
        f.check(dd.len() == c.san_dns.len() && di.len() == c.san_ips.len(), || format!("{l}: duplicate SAN entries: {}", actual.render()));
        f.check(c.san_other == 0, || format!("{l}: {} SAN entries that are neither DNS nor IP", c.san_other));
    }
    // SKI / AKI.
    if spec.is_ca {
        f.check(c.ski.is_some(), || format!("{l}: CA has no SubjectKeyIdentifier"));
        f.check(c.aki.is_none(), || format!("{l}: CA has an AuthorityKeyIdentifier (kubeadm's have none)"));
        f.eq(&format!("{l}: self-signed issuer == subject"), &c.subject_raw, &c.issuer_raw);
    } else {
        let issuer_path = root.join(spec.signer.node_path());
        match read(&issuer_path).map(|p| parse_cert_pem(&p)) {
            Some(Ok(issuer)) => match (&c.aki, &issuer.ski) {
                (Some(Some(aki)), Some(ski)) => {
                    f.eq(&format!("{l}: AuthorityKeyIdentifier = issuer {} SKI", spec.signer.id()), ski, aki);
                }
                (a, s) => f.fail(format!("{l}: AKI {a:?} / issuer SKI {s:?} missing")),
            },
            _ => f.fail(format!("{l}: cannot read issuer {}", issuer_path.display())),
        }
    }
    // Validity.
    let nb = m.expected_not_before();
    let na = m.now + if spec.is_ca { m.ca_validity_secs() } else { m.leaf_validity_secs() };
    f.check((c.not_before - nb).abs() <= ctx.tolerance, || {
        format!("{l}: notBefore {} expected {} (clock {})", rfc3339(c.not_before), rfc3339(nb), rfc3339(m.now))
    });
    f.check((c.not_after - na).abs() <= ctx.tolerance, || {
        format!(
            "{l}: notAfter {} expected {} ({} days after the clock {}), lifetime got {} s",
            rfc3339(c.not_after),
            rfc3339(na),
            (na - m.now) / DAY,
            rfc3339(m.now),
            c.not_after - c.not_before
        )
    });
    // Serial: random, positive, below 2^63 (CAs: from 1.28 on).
    if !spec.is_ca || m.minor() >= 28 {
        let s = serial_magnitude(&c.serial);
        f.check(!s.is_empty() && s.len() <= 8 && (s.len() < 8 || s[0] < 0x80), || {
            format!("{l}: serial {:02x?} is not in 1..2^63", c.serial)
        });
    }
    // Algorithm.
    let ae = algo_expect(m.algorithm());
    f.eq(&format!("{l}: signature algorithm OID"), &ae.sig_oid.to_string(), &c.sig_oid);

    // Cross-check with openssl's own reading.
    match OsslText::load(crt) {
        Err(e) => f.fail(format!("{l}: openssl x509 -text failed: {e}")),
        Ok(t) => {
            let subj = t.subject();
            let cn: Vec<String> = subj.iter().filter(|(k, _)| k == "CN").map(|(_, v)| v.clone()).collect();
            let o: Vec<String> = sorted(subj.iter().filter(|(k, _)| k == "O").map(|(_, v)| v.clone()).collect());
            f.eq(&format!("{l}: openssl Subject CN"), &vec![spec.cn.clone()], &cn);
            f.check(spec.o.iter().any(|alt| sorted(alt.clone()) == o), || {
                format!("{l}: openssl Subject O: expected one of {:?}, got {o:?}", spec.o)
            });
            let want =
                if spec.is_ca { "Digital Signature, Key Encipherment, Certificate Sign" } else { "Digital Signature, Key Encipherment" };
            f.eq(&format!("{l}: openssl X509v3 Key Usage"), &Some((true, want.to_string())), &t.ext("X509v3 Key Usage"));
            let bc = if spec.is_ca { "CA:TRUE" } else { "CA:FALSE" };
            match t.ext("X509v3 Basic Constraints") {
                Some((true, v)) if v == bc || v.starts_with(&format!("{bc},")) => {}
                other => f.fail(format!("{l}: openssl X509v3 Basic Constraints: expected critical {bc}, got {other:?}")),
            }
            if spec.is_ca {
                f.check(t.ext("X509v3 Extended Key Usage").is_none(), || format!("{l}: openssl shows an EKU on a CA"));
            } else {
                let mut want = BTreeSet::new();
                if spec.server_auth {
                    want.insert("TLS Web Server Authentication".to_string());
                }
                if spec.client_auth {
                    want.insert("TLS Web Client Authentication".to_string());
                }
                let got: Option<BTreeSet<String>> =
                    t.ext("X509v3 Extended Key Usage").map(|(_, v)| v.split(", ").map(String::from).collect());
                f.eq(&format!("{l}: openssl X509v3 Extended Key Usage"), &Some(want), &got);
            }
            match (spec.sans.is_empty(), t.sans()) {
                (true, None) => {}
                (true, Some(s)) => f.fail(format!("{l}: openssl shows SANs {s:?} where none are expected")),
                (false, None) => f.fail(format!("{l}: openssl shows no SubjectAltName")),
                (false, Some((dns, ips, other))) => {
                    f.check(spec.sans.iter().any(|alt| alt.dns_set() == dns && alt.ip_set() == ips) && other.is_empty(), || {
                        format!("{l}: openssl SANs DNS {dns:?} IP {ips:?} other {other:?} do not match the expected set")
                    });
                }
            }
            f.eq(&format!("{l}: openssl Signature Algorithm"), &Some(ae.sig_name.to_string()), &t.field("Signature Algorithm:"));
            f.eq(&format!("{l}: openssl Public Key Algorithm"), &Some(ae.pk_name.to_string()), &t.field("Public Key Algorithm:"));
            f.check(t.0.contains(&format!("Public-Key: ({} bit)", ae.bits)), || format!("{l}: public key is not {} bit", ae.bits));
            if let Some(curve) = ae.curve {
                f.check(t.0.contains(&format!("NIST CURVE: {curve}")), || format!("{l}: public key is not on {curve}"));
            }
        }
    }

    // Chain: openssl verify against the right CA (the CA itself for a CA).
    let ca_file = if spec.is_ca { crt.to_path_buf() } else { root.join(spec.signer.node_path()) };
    let at = ctx.attime();
    let r = openssl(&["verify", "-x509_strict", "-attime", &at, "-CAfile", ca_file.to_str().unwrap(), crt.to_str().unwrap()]);
    f.check(r.ok() && r.stdout.trim_end().ends_with(": OK"), || {
        format!("{l}: openssl verify -CAfile {} failed: {}", ca_file.display(), r.describe())
    });
    // A leaf must not outlive its CA.
    if !spec.is_ca {
        if let Some(Ok(ca)) = read(&ca_file).map(|p| parse_cert_pem(&p)) {
            f.check(c.not_after <= ca.not_after, || format!("{l}: outlives its CA"));
        }
    }

    if let Some(k) = key {
        check_key_pair(ctx, &l, k, crt, f);
    }
    Some(c)
}

/// The key file reads with openssl, has the PEM label of the algorithm, and matches the cert.
pub fn check_key_pair(ctx: &Ctx, l: &str, key: &Path, crt: &Path, f: &mut Failures) {
    let Some(text) = read_string(key) else {
        f.fail(format!("{l}: missing key {}", key.display()));
        return;
    };
    check_key_text(ctx, l, key, &text, f);
    let a = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    let b = openssl(&["x509", "-pubkey", "-noout", "-in", crt.to_str().unwrap()]);
    if !a.ok() || !b.ok() {
        f.fail(format!("{l}: public key extraction failed:\n{}\n{}", a.describe(), b.describe()));
        return;
    }
    f.check(a.stdout.trim() == b.stdout.trim() && a.stdout.contains("BEGIN PUBLIC KEY"), || {
        format!("{l}: public key of {} differs from the one in {}", key.display(), crt.display())
    });
}

/// PEM label, one block, readable by `openssl pkey`, right size and curve.
pub fn check_key_text(ctx: &Ctx, l: &str, key: &Path, text: &str, f: &mut Failures) {
    let label = ctx.model.key_pem_label();
    let first = text.lines().next().unwrap_or_default();
    f.eq(&format!("{l}: key PEM header of {}", key.display()), &format!("-----BEGIN {label}-----"), &first.to_string());
    f.check(text.matches("-----BEGIN ").count() == 1 && text.contains(&format!("-----END {label}-----")), || {
        format!("{l}: {} must hold exactly one {label} block", key.display())
    });
    let r = openssl(&["pkey", "-in", key.to_str().unwrap(), "-noout", "-text"]);
    if !r.ok() {
        f.fail(format!("{l}: openssl pkey cannot read {}: {}", key.display(), r.describe()));
        return;
    }
    let ae = algo_expect(ctx.model.algorithm());
    f.check(r.stdout.contains(&format!("Private-Key: ({} bit", ae.bits)), || {
        format!("{l}: {} is not a {} bit key: {}", key.display(), ae.bits, r.stdout.lines().next().unwrap_or(""))
    });
    if let Some(curve) = ae.curve {
        f.check(r.stdout.contains(&format!("NIST CURVE: {curve}")), || format!("{l}: {} is not on {curve}", key.display()));
    }
}

/// Certificates and keys of every node's tree.
pub fn check_node_certs(ctx: &Ctx, f: &mut Failures) {
    for n in &ctx.model.nodes {
        check_certs_of_node(ctx, n, |_| true, f);
    }
}

pub fn check_certs_of_node(ctx: &Ctx, n: &Node, filter: impl Fn(&CertSpec) -> bool, f: &mut Failures) {
    let root = ctx.root(n);
    for spec in ctx.model.cert_files(n).iter().filter(|s| filter(s)) {
        let crt = root.join(&spec.crt);
        let key = spec.key.as_ref().map(|k| root.join(k));
        check_cert(ctx, &format!("{}:{}", n.name, spec.crt), spec, &crt, key.as_deref(), &root, f);
    }
    if n.is_cp() {
        check_sa_pair(ctx, &n.name, &root.join("etc/kubernetes/pki/sa.key"), &root.join("etc/kubernetes/pki/sa.pub"), f);
    }
}

pub fn check_sa_pair(ctx: &Ctx, label: &str, key: &Path, public: &Path, f: &mut Failures) {
    let l = format!("{label}: sa");
    let Some(text) = read_string(key) else {
        f.fail(format!("{l}: missing {}", key.display()));
        return;
    };
    check_key_text(ctx, &l, key, &text, f);
    let Some(pubtext) = read_string(public) else {
        f.fail(format!("{l}: missing {}", public.display()));
        return;
    };
    f.eq(
        &format!("{l}: PEM header of {}", public.display()),
        &"-----BEGIN PUBLIC KEY-----".to_string(),
        &pubtext.lines().next().unwrap_or_default().to_string(),
    );
    let r = openssl(&["pkey", "-pubin", "-in", public.to_str().unwrap(), "-pubout"]);
    let a = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    f.check(r.ok() && a.ok() && r.stdout.trim() == a.stdout.trim(), || {
        format!("{l}: sa.pub is not the public half of sa.key:\n{}\n{}", r.describe(), a.describe())
    });
}

// =============================================================================================
// Kubeconfigs

pub fn kubeconfig_json(ctx: &Ctx, path: &Path) -> Result<serde_json::Value, String> {
    let r = kubectl(&ctx.scratch, &["config", "view", "--raw", "--kubeconfig", path.to_str().unwrap(), "-o", "json"]);
    if !r.ok() {
        return Err(r.describe());
    }
    serde_json::from_str(&r.stdout).map_err(|e| format!("kubectl printed invalid JSON: {e}"))
}

fn arr(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// Checks one kubeconfig; returns its token if it authenticates with one.
pub fn check_kubeconfig(ctx: &Ctx, n: &Node, spec: &KubeconfigSpec, f: &mut Failures) -> Option<String> {
    let root = ctx.root(n);
    let path = root.join(&spec.path);
    let l = format!("{}:{}", n.name, spec.path);
    if !path.is_file() {
        f.fail(format!("{l}: missing"));
        return None;
    }
    let j = match kubeconfig_json(ctx, &path) {
        Ok(j) => j,
        Err(e) => {
            f.fail(format!("{l}: kubectl config view failed: {e}"));
            return None;
        }
    };
    let m = ctx.model;
    let clusters = arr(&j["clusters"]);
    let users = arr(&j["users"]);
    let contexts = arr(&j["contexts"]);
    f.eq(&format!("{l}: number of clusters"), &1, &clusters.len());
    f.eq(&format!("{l}: number of users"), &1, &users.len());
    f.eq(&format!("{l}: number of contexts"), &1, &contexts.len());
    let ctx_name = format!("{}@{}", spec.user, m.cluster_name);
    if let Some(c) = clusters.first() {
        f.eq(&format!("{l}: cluster name"), &Some(m.cluster_name.as_str()), &c["name"].as_str());
        let server = c["cluster"]["server"].as_str().unwrap_or_default().to_string();
        f.check(spec.servers.contains(&server), || format!("{l}: server: expected {:?}, got {server:?}", spec.servers[0]));
        let ca_data = c["cluster"]["certificate-authority-data"].as_str().unwrap_or_default();
        match B64.decode(ca_data) {
            Ok(b) => {
                let node_ca = read(&root.join(PKI_CA));
                f.check(node_ca.as_deref() == Some(&b[..]), || {
                    format!("{l}: certificate-authority-data is not byte-identical to {PKI_CA}")
                });
                if ctx.root_override.is_none() {
                    let st = read(&ctx.state("pki/ca.crt"));
                    f.check(st.as_deref() == Some(&b[..]), || {
                        format!("{l}: certificate-authority-data is not byte-identical to state/pki/ca.crt")
                    });
                }
            }
            Err(e) => f.fail(format!("{l}: certificate-authority-data is not base64: {e}")),
        }
    }
    if let Some(c) = contexts.first() {
        f.eq(&format!("{l}: context name"), &Some(ctx_name.as_str()), &c["name"].as_str());
        f.eq(&format!("{l}: context.cluster"), &Some(m.cluster_name.as_str()), &c["context"]["cluster"].as_str());
        f.eq(&format!("{l}: context.user"), &Some(spec.user.as_str()), &c["context"]["user"].as_str());
    }
    f.eq(&format!("{l}: current-context"), &Some(ctx_name.as_str()), &j["current-context"].as_str());
    let u = users.first()?;
    f.eq(&format!("{l}: user name"), &Some(spec.user.as_str()), &u["name"].as_str());
    if spec.token {
        f.check(u["user"]["client-certificate-data"].is_null() && u["user"]["client-key-data"].is_null(), || {
            format!("{l}: a bootstrap kubeconfig must not carry a client certificate or key")
        });
        let t = u["user"]["token"].as_str().unwrap_or_default().to_string();
        f.check(is_token(&t), || format!("{l}: token {t:?} does not match ^[a-z0-9]{{6}}\\.[a-z0-9]{{16}}$"));
        return Some(t);
    }
    let cert = u["user"]["client-certificate-data"].as_str().map(|s| B64.decode(s));
    let key = u["user"]["client-key-data"].as_str().map(|s| B64.decode(s));
    match (cert, key) {
        (Some(Ok(cert)), Some(Ok(key))) => {
            let stem = format!("{}-{}", n.name, spec.path);
            let cp = ctx.scratch_file(&format!("{stem}.crt"));
            let kp = ctx.scratch_file(&format!("{stem}.key"));
            std::fs::write(&cp, &cert).unwrap();
            std::fs::write(&kp, &key).unwrap();
            let cs = CertSpec {
                id: format!("{} client cert", spec.path.rsplit('/').next().unwrap()),
                crt: String::new(),
                key: None,
                signer: Signer::Ca,
                is_ca: false,
                cn: spec.user.clone(),
                o: spec.o.clone(),
                server_auth: false,
                client_auth: true,
                sans: vec![],
            };
            check_cert(ctx, &l, &cs, &cp, Some(&kp), &root, f);
        }
        other => f.fail(format!("{l}: client-certificate-data / client-key-data missing or not base64: {:?}", other.0.is_some())),
    }
    f.check(u["user"]["token"].is_null(), || format!("{l}: a certificate kubeconfig should not also carry a token"));
    None
}

pub fn check_node_kubeconfigs(ctx: &Ctx, f: &mut Failures) {
    for n in &ctx.model.nodes {
        for k in ctx.model.kubeconfigs(n) {
            check_kubeconfig(ctx, n, &k, f);
        }
    }
}

// =============================================================================================
// Trees, modes, least privilege

pub fn expected_mode(rel: &str) -> Option<u32> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    if name.ends_with(".crt") {
        Some(0o644)
    } else if name.ends_with(".key") || name.ends_with(".conf") || name == "sa.pub" || name == "encryption-config.yaml" {
        Some(0o600)
    } else {
        None
    }
}

pub fn check_node_trees(ctx: &Ctx, f: &mut Failures) {
    for n in &ctx.model.nodes {
        check_node_tree(ctx, n, f);
    }
}

pub fn check_node_tree(ctx: &Ctx, n: &Node, f: &mut Failures) {
    let m = ctx.model;
    let root = ctx.root(n);
    let l = format!("nodes/{}", n.name);
    if !root.is_dir() {
        f.fail(format!("{l}: missing"));
        return;
    }
    f.eq(&format!("{l}/: mode"), &Some(0o755), &mode_of(&root));
    let tree = walk(&root);
    let expected = m.expected_files(n);
    let allowed_keys = m.allowed_keys(n);
    for want in &expected {
        f.check(matches!(tree.get(want), Some(Entry::File { .. })), || format!("{l}: missing {want}"));
    }
    for (rel, e) in &tree {
        match e {
            Entry::Dir { mode } => {
                f.check(*mode == 0o755, || format!("{l}/{rel}/: directory mode {mode:o}, expected 755"));
            }
            Entry::Symlink { target } => f.fail(format!("{l}/{rel}: is a symlink to {target}")),
            Entry::Other => f.fail(format!("{l}/{rel}: not a regular file or directory")),
            Entry::File { mode, bytes } => {
                let managed = rel.starts_with("etc/kubernetes/") || rel.starts_with("var/lib/kubelet/");
                if managed && !expected.contains(rel) {
                    f.fail(format!("{l}: unexpected file {rel} (roles {:?})", n.roles));
                } else if !managed {
                    f.note(format!("{l}: extra file {rel} (mode {mode:o})"));
                }
                match expected_mode(rel) {
                    Some(want) => {
                        f.check(*mode == want, || format!("{l}/{rel}: mode {mode:o}, expected {want:o}"));
                    }
                    None => {
                        f.check(*mode == 0o600 || *mode == 0o644, || format!("{l}/{rel}: mode {mode:o}"));
                    }
                }
                let has_private = contains(bytes, b"PRIVATE KEY");
                f.check(!has_private || allowed_keys.contains(rel), || {
                    format!("{l}/{rel}: holds a private key the node must not have (least privilege)")
                });
                if rel.ends_with(".key") {
                    f.check(allowed_keys.contains(rel), || format!("{l}/{rel}: key file not allowed on roles {:?}", n.roles));
                }
                if !n.is_cp() {
                    let name = rel.rsplit('/').next().unwrap();
                    f.check(!matches!(name, "ca.key" | "sa.key" | "front-proxy-ca.key" | "sa.pub"), || {
                        format!("{l}/{rel}: cluster secret on a non-control-plane node")
                    });
                    f.check(!contains(bytes, b"EncryptionConfiguration") && !contains(bytes, b"aescbc"), || {
                        format!("{l}/{rel}: encryption config on a non-control-plane node")
                    });
                }
            }
        }
    }
    // Shared secrets on the node are the state's, byte for byte.
    if ctx.root_override.is_none() {
        for spec in m.cert_files(n).iter().filter(|s| s.is_ca) {
            let (sc, sk) = spec.signer.state_paths();
            f.check(read(&root.join(&spec.crt)).is_some() && read(&root.join(&spec.crt)) == read(&ctx.state(sc)), || {
                format!("{l}/{}: differs from state/{sc}", spec.crt)
            });
            if let Some(k) = &spec.key {
                f.check(read(&root.join(k)).is_some() && read(&root.join(k)) == read(&ctx.state(sk)), || {
                    format!("{l}/{k}: differs from state/{sk}")
                });
            }
        }
        if n.is_cp() {
            for (p, s) in [("etc/kubernetes/pki/sa.key", "pki/sa.key"), ("etc/kubernetes/pki/sa.pub", "pki/sa.pub")] {
                f.check(read(&root.join(p)).is_some() && read(&root.join(p)) == read(&ctx.state(s)), || {
                    format!("{l}/{p}: differs from state/{s}")
                });
            }
        }
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// out/<cluster>/ holds state/, nodes/ (a tarball and a tree per node and nothing else),
/// join.txt, discovery.conf and manifests/.
pub fn check_cluster_layout(ctx: &Ctx, f: &mut Failures) {
    let c = &ctx.cluster;
    for p in ["state", "nodes", "manifests"] {
        f.check(c.join(p).is_dir(), || format!("{p}/ missing in {}", c.display()));
    }
    for p in ["join.txt", "discovery.conf"] {
        f.check(c.join(p).is_file(), || format!("{p} missing in {}", c.display()));
    }
    let mut want = BTreeSet::new();
    for n in &ctx.model.nodes {
        want.insert(n.name.clone());
        want.insert(format!("{}.tar.gz", n.name));
    }
    let got: BTreeSet<String> = list_dir(&c.join("nodes")).into_iter().collect();
    f.eq("nodes/ entries", &want, &got);
}

/// state/: 0700 directories, 0600 files, every long-lived secret present and well-formed.
pub fn check_state(ctx: &Ctx, f: &mut Failures) {
    let st = ctx.cluster.join("state");
    f.eq("state/: mode", &Some(0o700), &mode_of(&st));
    for (rel, e) in walk(&st) {
        match e {
            Entry::Dir { mode } => {
                f.check(mode == 0o700, || format!("state/{rel}/: mode {mode:o}, expected 700"));
            }
            Entry::File { mode, .. } => {
                f.check(mode == 0o600, || format!("state/{rel}: mode {mode:o}, expected 600"));
            }
            _ => f.fail(format!("state/{rel}: not a file or directory")),
        }
    }
    for rel in [
        "pki/ca.crt",
        "pki/ca.key",
        "pki/front-proxy-ca.crt",
        "pki/front-proxy-ca.key",
        "pki/etcd/ca.crt",
        "pki/etcd/ca.key",
        "pki/sa.key",
        "pki/sa.pub",
        "encryption.yaml",
        "tokens.yaml",
    ] {
        f.check(st.join(rel).is_file(), || format!("state/{rel}: missing"));
    }
    // The state CAs are well-formed CAs with their keys.
    let probe = Node::new("state", "127.0.0.1", super::model::CP_ETCD);
    for spec in ctx.model.cert_files(&probe).into_iter().filter(|s| s.is_ca) {
        let (c, k) = spec.signer.state_paths();
        check_cert(ctx, "state", &spec, &st.join(c), Some(&st.join(k)), &st, f);
    }
    check_sa_pair(ctx, "state", &st.join("pki/sa.key"), &st.join("pki/sa.pub"), f);
}

// =============================================================================================
// Join command, discovery, tokens

#[derive(Debug, Clone, Default)]
pub struct JoinCommand {
    pub line: String,
    pub endpoint: Option<String>,
    pub token: Option<String>,
    pub hashes: Vec<String>,
    pub control_plane: bool,
    pub discovery_file: Option<String>,
}

pub fn parse_join_commands(text: &str) -> Vec<JoinCommand> {
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    let value_flags = [
        "--token",
        "--discovery-token-ca-cert-hash",
        "--certificate-key",
        "--discovery-token",
        "--tls-bootstrap-token",
        "--apiserver-advertise-address",
        "--apiserver-bind-port",
        "--node-name",
        "--cri-socket",
        "--config",
        "--discovery-file",
        "--ignore-preflight-errors",
        "--patches",
        "--skip-phases",
    ];
    let mut out = vec![];
    for line in joined.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let Some(i) = line.find("kubeadm join") else { continue };
        let words: Vec<&str> = line[i + "kubeadm join".len()..].split_whitespace().collect();
        let mut jc = JoinCommand { line: line.trim().to_string(), ..Default::default() };
        let mut k = 0;
        while k < words.len() {
            let w = words[k];
            if let Some(flag) = w.strip_prefix("--") {
                let (name, inline) = match flag.split_once('=') {
                    Some((a, b)) => (format!("--{a}"), Some(b.to_string())),
                    None => (format!("--{flag}"), None),
                };
                let value = if value_flags.contains(&name.as_str()) {
                    match inline {
                        Some(v) => Some(v),
                        None => {
                            k += 1;
                            words.get(k).map(|s| s.to_string())
                        }
                    }
                } else {
                    inline
                };
                match name.as_str() {
                    "--token" | "--discovery-token" | "--tls-bootstrap-token" => jc.token = value,
                    "--discovery-token-ca-cert-hash" => jc.hashes.extend(value),
                    "--control-plane" => jc.control_plane = true,
                    "--discovery-file" => jc.discovery_file = value,
                    _ => {}
                }
            } else if w.starts_with('#') {
                break;
            } else if jc.endpoint.is_none() {
                jc.endpoint = Some(w.to_string());
            }
            k += 1;
        }
        out.push(jc);
    }
    out
}

/// `openssl x509 -pubkey -noout -in ca.crt | openssl pkey -pubin -outform der | openssl dgst -sha256 -hex`
pub fn discovery_hash(ca: &Path) -> Result<String, String> {
    let mut c = std::process::Command::new("sh");
    c.args([
        "-c",
        "openssl x509 -pubkey -noout -in \"$1\" | openssl pkey -pubin -outform der | openssl dgst -sha256 -hex",
        "sh",
        ca.to_str().unwrap(),
    ]);
    let r = run_cmd(c);
    if !r.ok() {
        return Err(r.describe());
    }
    let hex = r.stdout.trim().rsplit(' ').next().unwrap_or_default().to_string();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("unexpected openssl dgst output {:?}", r.stdout));
    }
    Ok(format!("sha256:{}", hex.to_lowercase()))
}

/// Tokens of the bootstrap-token Secret manifests: id.secret → Secret JSON.
pub fn manifest_tokens(ctx: &Ctx, f: &mut Failures) -> BTreeMap<String, serde_json::Value> {
    let dir = ctx.cluster.join("manifests");
    let mut out = BTreeMap::new();
    for name in list_dir(&dir) {
        let Some(id) = name.strip_prefix("bootstrap-token-").and_then(|s| s.strip_suffix(".yaml")) else {
            continue;
        };
        let l = format!("manifests/{name}");
        let docs = match yaml_file_to_json(&ctx.scratch, &dir.join(&name)) {
            Ok(d) => d,
            Err(e) => {
                f.fail(format!("{l}: kubectl cannot read it: {e}"));
                continue;
            }
        };
        f.eq(&format!("{l}: number of documents"), &1, &docs.len());
        let Some(s) = docs.into_iter().next() else { continue };
        let data = secret_data(&s);
        let secret = data.get("token-secret").cloned().unwrap_or_default();
        out.insert(format!("{id}.{secret}"), s);
    }
    out
}

/// A Secret's data (base64-decoded) merged with its stringData.
pub fn secret_data(s: &serde_json::Value) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if let Some(d) = s["data"].as_object() {
        for (k, v) in d {
            let dec = v.as_str().and_then(|x| B64.decode(x).ok()).map(|b| String::from_utf8_lossy(&b).into_owned());
            m.insert(k.clone(), dec.unwrap_or_else(|| format!("<not base64: {v}>")));
        }
    }
    if let Some(d) = s["stringData"].as_object() {
        for (k, v) in d {
            m.insert(k.clone(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string()));
        }
    }
    m
}

pub fn check_tokens(ctx: &Ctx, f: &mut Failures) {
    let m = ctx.model;
    let tokens = manifest_tokens(ctx, f);
    let want_count = m.bootstrap_tokens.len().max(1);
    f.eq("number of bootstrap-token manifests", &want_count, &tokens.len());
    let state_tokens = read_string(&ctx.state("tokens.yaml")).unwrap_or_default();
    for (tok, s) in &tokens {
        let (id, secret) = tok.split_once('.').unwrap();
        let l = format!("manifests/bootstrap-token-{id}.yaml");
        f.check(is_token(tok), || format!("{l}: token {tok:?} does not match ^[a-z0-9]{{6}}\\.[a-z0-9]{{16}}$"));
        f.eq(&format!("{l}: apiVersion"), &Some("v1"), &s["apiVersion"].as_str());
        f.eq(&format!("{l}: kind"), &Some("Secret"), &s["kind"].as_str());
        f.eq(&format!("{l}: metadata.name"), &Some(format!("bootstrap-token-{id}")), &s["metadata"]["name"].as_str().map(String::from));
        f.eq(&format!("{l}: metadata.namespace"), &Some("kube-system"), &s["metadata"]["namespace"].as_str());
        f.eq(&format!("{l}: type"), &Some("bootstrap.kubernetes.io/token"), &s["type"].as_str());
        let d = secret_data(s);
        let get = |k: &str| d.get(k).cloned();
        f.eq(&format!("{l}: token-id"), &Some(id.to_string()), &get("token-id"));
        f.eq(&format!("{l}: usage-bootstrap-authentication"), &Some("true".to_string()), &get("usage-bootstrap-authentication"));
        f.eq(&format!("{l}: usage-bootstrap-signing"), &Some("true".to_string()), &get("usage-bootstrap-signing"));
        f.eq(
            &format!("{l}: auth-extra-groups"),
            &Some("system:bootstrappers:kubeadm:default-node-token".to_string()),
            &get("auth-extra-groups"),
        );
        f.eq(&format!("{l}: expiration (clock + 24h)"), &Some(rfc3339(m.now + DAY)), &get("expiration"));
        let known = [
            "token-id",
            "token-secret",
            "expiration",
            "description",
            "usage-bootstrap-authentication",
            "usage-bootstrap-signing",
            "auth-extra-groups",
        ];
        for k in d.keys() {
            f.check(known.contains(&k.as_str()), || format!("{l}: unexpected data key {k}"));
        }
        f.check(state_tokens.contains(id) && state_tokens.contains(secret), || format!("state/tokens.yaml does not hold token {id}"));
    }
    for t in &m.bootstrap_tokens {
        f.check(tokens.contains_key(t), || format!("configured bootstrap token {t} has no manifest (got {:?})", tokens.keys()));
    }
    // Bootstrap kubeconfigs use a known token.
    for n in &m.nodes {
        for k in m.kubeconfigs(n).iter().filter(|k| k.token) {
            let text = read_string(&ctx.root(n).join(&k.path)).unwrap_or_default();
            let found = find_tokens(&text);
            f.eq(&format!("{}:{}: number of tokens", n.name, k.path), &1, &found.len());
            for t in found {
                f.check(tokens.contains_key(&t), || format!("{}:{}: token {t} has no bootstrap-token Secret", n.name, k.path));
            }
        }
    }
}

pub fn check_join_and_discovery(ctx: &Ctx, f: &mut Failures) {
    let m = ctx.model;
    let text = read_string(&ctx.cluster.join("join.txt")).unwrap_or_default();
    f.check(!text.contains("PRIVATE KEY"), || "join.txt holds a private key".into());
    let cmds = parse_join_commands(&text);
    let want_hash = match discovery_hash(&ctx.state("pki/ca.crt")) {
        Ok(h) => h,
        Err(e) => {
            f.fail(format!("cannot compute the discovery hash with openssl: {e}"));
            return;
        }
    };
    let workers: Vec<&JoinCommand> = cmds.iter().filter(|c| !c.control_plane && c.discovery_file.is_none()).collect();
    let cps: Vec<&JoinCommand> = cmds.iter().filter(|c| c.control_plane && c.discovery_file.is_none()).collect();
    f.check(!workers.is_empty(), || format!("join.txt has no worker `kubeadm join` with a token:\n{text}"));
    f.check(!cps.is_empty(), || format!("join.txt has no `kubeadm join ... --control-plane`:\n{text}"));
    let tokens = {
        let mut tmp = Failures::new();
        manifest_tokens(ctx, &mut tmp)
    };
    for c in workers.iter().chain(cps.iter()) {
        let l = format!("join.txt `{}`", c.line);
        f.eq(&format!("{l}: endpoint"), &Some(m.endpoint()), &c.endpoint);
        match &c.token {
            None => f.fail(format!("{l}: no --token")),
            Some(t) => {
                f.check(is_token(t), || format!("{l}: token {t:?} does not match ^[a-z0-9]{{6}}\\.[a-z0-9]{{16}}$"));
                f.check(tokens.contains_key(t), || format!("{l}: token {t} has no bootstrap-token Secret in manifests/"));
            }
        }
        f.eq(&format!("{l}: --discovery-token-ca-cert-hash"), &vec![want_hash.clone()], &c.hashes);
    }
    for c in cmds.iter().filter(|c| c.discovery_file.is_some()) {
        let l = format!("join.txt `{}`", c.line);
        if let Some(t) = &c.token {
            f.check(is_token(t) && tokens.contains_key(t), || format!("{l}: token {t:?} is malformed or has no Secret"));
        }
    }
    // discovery.conf: a kubeconfig with the server and the CA only.
    let dpath = ctx.cluster.join("discovery.conf");
    match kubeconfig_json(ctx, &dpath) {
        Err(e) => f.fail(format!("discovery.conf: kubectl config view failed: {e}")),
        Ok(j) => {
            let clusters = arr(&j["clusters"]);
            f.eq("discovery.conf: number of clusters", &1, &clusters.len());
            if let Some(c) = clusters.first() {
                f.eq("discovery.conf: server", &Some(m.server_url()), &c["cluster"]["server"].as_str().map(String::from));
                let ca = c["cluster"]["certificate-authority-data"].as_str().and_then(|s| B64.decode(s).ok());
                f.check(ca.is_some() && ca == read(&ctx.state("pki/ca.crt")), || {
                    "discovery.conf: certificate-authority-data is not state/pki/ca.crt".into()
                });
            }
            f.check(arr(&j["users"]).is_empty(), || format!("discovery.conf: has users: {}", j["users"]));
        }
    }
    let dtext = read_string(&dpath).unwrap_or_default();
    f.check(!dtext.contains("client-key-data") && !dtext.contains("token:"), || "discovery.conf carries credentials".into());
}

// =============================================================================================
// Encryption at rest

pub const ENCRYPTION_CONFIG: &str = "etc/kubernetes/encryption/encryption-config.yaml";

/// Returns the aescbc secret of the first control plane.
pub fn check_encryption(ctx: &Ctx, f: &mut Failures) -> Option<String> {
    let m = ctx.model;
    let mut first: Option<(String, Vec<u8>)> = None;
    let mut secret_out = None;
    for n in m.control_planes() {
        let p = ctx.root(n).join(ENCRYPTION_CONFIG);
        let l = format!("{}:{ENCRYPTION_CONFIG}", n.name);
        let Some(bytes) = read(&p) else {
            f.fail(format!("{l}: missing"));
            continue;
        };
        match &first {
            None => first = Some((n.name.clone(), bytes.clone())),
            Some((fname, fb)) => {
                f.check(*fb == bytes, || format!("{l}: differs from {fname}'s (every control plane needs the same file)"));
                continue;
            }
        }
        let docs = match yaml_file_to_json(&ctx.scratch, &p) {
            Ok(d) => d,
            Err(e) => {
                f.fail(format!("{l}: kubectl cannot read it: {e}"));
                continue;
            }
        };
        f.eq(&format!("{l}: number of documents"), &1, &docs.len());
        let Some(d) = docs.first() else { continue };
        f.eq(&format!("{l}: apiVersion"), &Some("apiserver.config.k8s.io/v1"), &d["apiVersion"].as_str());
        f.eq(&format!("{l}: kind"), &Some("EncryptionConfiguration"), &d["kind"].as_str());
        let res = arr(&d["resources"]);
        f.eq(&format!("{l}: number of resources entries"), &1, &res.len());
        let Some(r) = res.first() else { continue };
        f.check(arr(&r["resources"]).iter().any(|x| x == "secrets"), || format!("{l}: resources does not list secrets"));
        let prov = arr(&r["providers"]);
        f.eq(&format!("{l}: number of providers"), &2, &prov.len());
        let keys = prov.first().map(|p| arr(&p["aescbc"]["keys"])).unwrap_or_default();
        f.eq(&format!("{l}: number of aescbc keys"), &1, &keys.len());
        if let Some(k) = keys.first() {
            f.eq(&format!("{l}: key name"), &Some("key1"), &k["name"].as_str());
            let s = k["secret"].as_str().unwrap_or_default();
            match B64.decode(s) {
                Ok(b) => {
                    f.eq(&format!("{l}: aescbc key length in bytes"), &32, &b.len());
                    f.check(b.iter().any(|x| *x != 0), || format!("{l}: aescbc key is all zeros"));
                }
                Err(e) => f.fail(format!("{l}: aescbc secret is not base64: {e}")),
            }
            secret_out = Some(s.to_string());
        }
        f.check(prov.get(1).map(|p| p.get("identity").is_some()).unwrap_or(false), || {
            format!("{l}: second provider is not identity: {:?}", prov.get(1))
        });
    }
    if let (Some(s), true) = (&secret_out, ctx.root_override.is_none()) {
        let st = read_string(&ctx.state("encryption.yaml")).unwrap_or_default();
        f.check(st.contains(s.as_str()), || "state/encryption.yaml does not hold the aescbc key of the nodes".into());
    }
    secret_out
}

// =============================================================================================
// Uniqueness across nodes

/// Extracts `client-certificate-data` / `client-key-data` values from a kubeconfig's text.
fn kubeconfig_embedded(text: &str) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}:")).map(|v| v.trim().trim_matches('"').to_string()))
            .and_then(|v| B64.decode(v).ok())
    };
    (get("client-certificate-data"), get("client-key-data"))
}

/// No two nodes (or two artifacts) share a leaf key, and no CA issued two certificates with the
/// same serial.
pub fn check_uniqueness(ctx: &Ctx, f: &mut Failures) {
    let m = ctx.model;
    let mut keys: BTreeMap<Vec<u8>, String> = BTreeMap::new();
    let mut certs: BTreeMap<Vec<u8>, String> = BTreeMap::new();
    for n in &m.nodes {
        let root = ctx.root(n);
        for spec in m.cert_files(n) {
            if let Some(b) = read(&root.join(&spec.crt)) {
                certs.entry(b).or_insert(format!("{}:{}", n.name, spec.crt));
            }
            if spec.is_ca {
                continue;
            }
            if let Some(k) = &spec.key {
                if let Some(b) = read(&root.join(k)) {
                    let here = format!("{}:{k}", n.name);
                    if let Some(prev) = keys.insert(b, here.clone()) {
                        f.fail(format!("{here} and {prev} hold the same private key"));
                    }
                }
            }
        }
        for kc in m.kubeconfigs(n) {
            let text = read_string(&root.join(&kc.path)).unwrap_or_default();
            let (c, k) = kubeconfig_embedded(&text);
            let here = format!("{}:{}", n.name, kc.path);
            if let Some(c) = c {
                certs.entry(c).or_insert(here.clone());
            }
            if let Some(k) = k {
                if let Some(prev) = keys.insert(k, here.clone()) {
                    f.fail(format!("{here} and {prev} hold the same private key"));
                }
            }
        }
    }
    let mut serials: BTreeMap<(Vec<u8>, Vec<u8>), String> = BTreeMap::new();
    for (pem, at) in &certs {
        let Ok(c) = parse_cert_pem(pem) else { continue };
        if let Some(prev) = serials.insert((c.issuer_raw.clone(), serial_magnitude(&c.serial)), at.clone()) {
            f.fail(format!("{at} and {prev}: two certificates from one issuer with serial {:02x?}", c.serial));
        }
    }
}

// =============================================================================================
// Tarballs

#[derive(Debug, Clone)]
pub struct TarEntry {
    pub kind: char,
    pub mode: u32,
    pub owner: String,
    pub time: String,
    pub raw_name: String,
    pub name: String,
}

fn mode_from_perm(p: &str) -> u32 {
    let c: Vec<char> = p.chars().collect();
    let mut m = 0;
    for (i, bit) in [0o400, 0o200, 0o100, 0o40, 0o20, 0o10, 0o4, 0o2, 0o1].iter().enumerate() {
        if let Some(ch) = c.get(i + 1) {
            if *ch != '-' && *ch != 'S' && *ch != 'T' {
                m |= bit;
            }
        }
    }
    m
}

pub fn list_tarball(tgz: &Path) -> Result<Vec<TarEntry>, String> {
    let mut c = std::process::Command::new("tar");
    c.args(["--numeric-owner", "--full-time", "-tvzf", tgz.to_str().unwrap()]).env("TZ", "UTC").env("LC_ALL", "C");
    let r = run_cmd(c);
    if !r.ok() {
        return Err(r.describe());
    }
    let mut v = vec![];
    for line in r.stdout.lines().filter(|l| !l.trim().is_empty()) {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 6 {
            return Err(format!("cannot parse tar line {line:?}"));
        }
        let raw_name = w[5..].join(" ");
        let name = raw_name.trim_start_matches("./").trim_end_matches('/').to_string();
        v.push(TarEntry {
            kind: w[0].chars().next().unwrap_or('?'),
            mode: mode_from_perm(w[0]),
            owner: w[1].to_string(),
            time: format!("{} {}", w[3], w[4]),
            raw_name,
            name,
        });
    }
    Ok(v)
}

fn component_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

pub fn check_tarballs(ctx: &Ctx, f: &mut Failures) {
    for n in &ctx.model.nodes {
        check_tarball(ctx, n, f);
    }
}

pub fn check_tarball(ctx: &Ctx, n: &Node, f: &mut Failures) {
    let m = ctx.model;
    let tgz = ctx.cluster.join("nodes").join(format!("{}.tar.gz", n.name));
    let l = format!("nodes/{}.tar.gz", n.name);
    let Some(bytes) = read(&tgz) else {
        f.fail(format!("{l}: missing"));
        return;
    };
    if bytes.len() < 10 || bytes[0] != 0x1f || bytes[1] != 0x8b {
        f.fail(format!("{l}: not gzip"));
        return;
    }
    let gz_mtime = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as i64;
    f.check(gz_mtime == 0 || gz_mtime == m.now, || format!("{l}: gzip header mtime {gz_mtime} is neither 0 nor the run clock"));
    let entries = match list_tarball(&tgz) {
        Ok(e) => e,
        Err(e) => {
            f.fail(format!("{l}: tar -t failed: {e}"));
            return;
        }
    };
    f.check(!entries.is_empty(), || format!("{l}: empty"));
    let want_time = tar_time(m.now);
    let allowed_keys = m.allowed_keys(n);
    let mut names = vec![];
    let mut files = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for e in &entries {
        let el = format!("{l}: {}", e.raw_name);
        f.check(!e.raw_name.starts_with('/'), || format!("{el}: absolute path"));
        f.check(!e.name.split('/').any(|c| c == ".."), || format!("{el}: path with .."));
        f.eq(&format!("{el}: uid/gid"), &"0/0".to_string(), &e.owner);
        f.eq(&format!("{el}: mtime"), &want_time, &e.time);
        match e.kind {
            '-' => {
                if let Some(want) = expected_mode(&e.name) {
                    f.check(e.mode == want, || format!("{el}: mode {:o}, expected {want:o}", e.mode));
                }
                if e.name.ends_with(".key") {
                    f.check(allowed_keys.contains(&e.name), || format!("{el}: key not allowed on roles {:?} (least privilege)", n.roles));
                }
                if !n.is_cp() {
                    let base = e.name.rsplit('/').next().unwrap_or_default();
                    f.check(!matches!(base, "sa.key" | "ca.key" | "front-proxy-ca.key" | "encryption-config.yaml"), || {
                        format!("{el}: cluster secret on a non-control-plane node")
                    });
                }
                files.insert(e.name.clone());
            }
            'd' => {
                f.check(e.mode == 0o755, || format!("{el}: directory mode {:o}, expected 755", e.mode));
                dirs.insert(e.name.clone());
            }
            k => f.fail(format!("{el}: entry type {k:?} (only files and directories expected)")),
        }
        names.push(e.name.clone());
    }
    let uniq: BTreeSet<&String> = names.iter().collect();
    f.check(uniq.len() == names.len(), || format!("{l}: duplicate entries"));
    let by_string = names.windows(2).all(|w| w[0] < w[1]);
    let by_component = names.windows(2).all(|w| component_cmp(&w[0], &w[1]) == std::cmp::Ordering::Less);
    f.check(by_string || by_component, || format!("{l}: entries are not sorted: {names:?}"));
    let keys_in_tar: BTreeSet<String> = files.iter().filter(|p| p.ends_with(".key")).cloned().collect();
    f.eq(&format!("{l}: private key files"), &allowed_keys, &keys_in_tar);

    // Unpack and compare with the tree.
    let dest = ctx.scratch_file(&format!("untar-{}", n.name));
    std::fs::create_dir_all(&dest).unwrap();
    let mut c = std::process::Command::new("tar");
    c.args(["-xzpf", tgz.to_str().unwrap(), "-C", dest.to_str().unwrap(), "--numeric-owner"]);
    let r = run_cmd(c);
    if !r.ok() {
        f.fail(format!("{l}: tar -x failed: {}", r.describe()));
        return;
    }
    let unpacked = walk(&dest);
    let tree = walk(&ctx.root(n));
    let file_map = |t: &BTreeMap<String, Entry>| -> BTreeMap<String, (u32, Vec<u8>)> {
        t.iter()
            .filter_map(|(k, e)| match e {
                Entry::File { mode, bytes } => Some((k.clone(), (*mode, bytes.clone()))),
                _ => None,
            })
            .collect()
    };
    let a = file_map(&unpacked);
    let b = file_map(&tree);
    let ak: BTreeSet<&String> = a.keys().collect();
    let bk: BTreeSet<&String> = b.keys().collect();
    f.check(ak == bk, || {
        format!(
            "{l}: tarball files differ from nodes/{}/: only in tar {:?}, only in tree {:?}",
            n.name,
            ak.difference(&bk).collect::<Vec<_>>(),
            bk.difference(&ak).collect::<Vec<_>>()
        )
    });
    for (k, (mode, bytes)) in &a {
        if let Some((m2, b2)) = b.get(k) {
            f.check(bytes == b2, || format!("{l}: {k} differs from nodes/{}/{k}", n.name));
            f.check(mode == m2, || format!("{l}: {k} mode {mode:o} vs tree {m2:o}"));
        }
    }
    if !dirs.is_empty() {
        let tree_dirs: BTreeSet<String> = tree.iter().filter(|(_, e)| matches!(e, Entry::Dir { .. })).map(|(k, _)| k.clone()).collect();
        let dirs2: BTreeSet<String> = dirs.iter().filter(|d| !d.is_empty() && *d != ".").cloned().collect();
        f.eq(&format!("{l}: directories vs nodes/{}/", n.name), &tree_dirs, &dirs2);
    }
}

// ---------------------------------------------------------------------------------------------
// What a tree holds, found independently of kubebundle

/// The DER of every CERTIFICATE block of `bytes`.
pub fn cert_blocks(bytes: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(bytes)
        .map(|v| v.into_iter().filter(|b| b.tag() == "CERTIFICATE").map(|b| b.contents().to_vec()).collect())
        .unwrap_or_default()
}

/// The decoded values of `key:` lines (a kubeconfig's `*-data`, also inside cluster-info).
pub fn data_values(text: &str, key: &str) -> Vec<Vec<u8>> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix(&format!("{key}:")))
        .filter_map(|v| B64.decode(v.trim().trim_matches('"')).ok())
        .collect()
}

/// Every certificate a file holds: its PEM blocks, and those of the kubeconfig data it carries.
pub fn certs_in(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut v = cert_blocks(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        // A kubeconfig inside a manifest is a quoted string: its lines are `\n` escapes.
        for text in [text.to_string(), text.replace("\\n", "\n")] {
            for key in ["client-certificate-data", "certificate-authority-data"] {
                for decoded in data_values(&text, key) {
                    v.extend(cert_blocks(&decoded));
                }
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

/// Every regular file under `root` (links followed): path → bytes.
pub fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Every distinct certificate under `root`.
pub fn distinct_certs(root: &Path) -> BTreeSet<Vec<u8>> {
    files(root).values().flat_map(|b| certs_in(b)).collect()
}

/// The files under `root` that hold the certificate `der` (as PEM or in kubeconfig data).
pub fn holders(root: &Path, der: &[u8]) -> BTreeSet<PathBuf> {
    files(root).into_iter().filter(|(_, b)| certs_in(b).iter().any(|c| c == der)).map(|(p, _)| p).collect()
}
