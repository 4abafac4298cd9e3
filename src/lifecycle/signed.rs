//! `kubebundle import-signed`: external-CA mode's way back, into a bundle or into a node tree
//! (`import_into_tree`: where `certs renew` wrote CSRs beside a live host's certificates). `generate` wrote a key (into the
//! state) and a CSR (under `OUT/<clusterName>/csr/<node>/`) for every leaf of a CA whose key the
//! state does not hold; the operator's signer signed them; this command checks each signed
//! certificate against its CSR (the same public key, subject and SANs, the usages the catalogue
//! requires, signed by the imported CA) and records the accepted ones in `state/leaves.json`
//! under the bundle's lock, as one transaction. Any refusal writes nothing. The next `generate`
//! packs them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use x509_parser::prelude::*;

use super::LifecycleError;
use crate::bundle::output;
use crate::bundle::state;
/// What it did, for the command's output: the same report `ca import` gives.
pub use crate::lifecycle::ca::Imported;
use crate::pki::catalog::{self, Eku};

/// A CSR generate wrote: where, and what it asks for.
struct Request {
    rel: String,
    cn: Vec<String>,
    o: Vec<String>,
    dns: Vec<String>,
    ips: Vec<std::net::IpAddr>,
}

fn names(g: &[GeneralName<'_>]) -> (Vec<String>, Vec<std::net::IpAddr>) {
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    for n in g {
        match n {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(b) => {
                if let Ok(a) = <[u8; 4]>::try_from(*b) {
                    ips.push(std::net::IpAddr::from(a));
                } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                    ips.push(std::net::IpAddr::from(a));
                }
            }
            _ => {}
        }
    }
    dns.sort();
    ips.sort();
    (dns, ips)
}

fn subject_parts(n: &X509Name<'_>) -> (Vec<String>, Vec<String>) {
    let cn = n.iter_common_name().filter_map(|a| a.as_str().ok().map(str::to_string)).collect();
    let mut o: Vec<String> = n.iter_organization().filter_map(|a| a.as_str().ok().map(str::to_string)).collect();
    o.sort();
    (cn, o)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Every CSR under `csr/`, by the DER of its public key.
fn requests(csr_dir: &Path) -> BTreeMap<Vec<u8>, Request> {
    let mut files = Vec::new();
    let _ = walk(csr_dir, &mut files);
    let mut out = BTreeMap::new();
    for f in files {
        let Ok(text) = std::fs::read(&f) else { continue };
        let Ok(p) = ::pem::parse(&text) else { continue };
        if p.tag() != "CERTIFICATE REQUEST" {
            continue;
        }
        let Ok((_, csr)) = x509_parser::certification_request::X509CertificationRequest::from_der(p.contents()) else { continue };
        let info = &csr.certification_request_info;
        let (cn, o) = subject_parts(&info.subject);
        let mut sans = (Vec::new(), Vec::new());
        if let Some(exts) = csr.requested_extensions() {
            for e in exts {
                if let ParsedExtension::SubjectAlternativeName(s) = e {
                    sans = names(&s.general_names);
                }
            }
        }
        let rel = f.strip_prefix(csr_dir).unwrap_or(&f).display().to_string();
        out.insert(info.subject_pki.raw.to_vec(), Request { rel, cn, o, dns: sans.0, ips: sans.1 });
    }
    out
}

/// One signed certificate read from an input file (PEM or a Vault response).
struct Signed {
    file: String,
    der: Vec<u8>,
    /// A Vault issue/ response's private key (PEM): Vault made that key, not the state.
    vault_key: Option<String>,
}

fn read_input(path: &Path) -> Result<Vec<Signed>, LifecycleError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        LifecycleError::Input(format!(
            "{name}: cannot be read ({})\n  hint: give signed certificates (PEM) or Vault -format=json responses",
            crate::util::io_words(&e)
        ))
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        LifecycleError::Input(format!(
            "{name}: not text (DER?)\n  hint: convert it to PEM: `openssl x509 -inform der -in FILE -out FILE.crt`"
        ))
    })?;
    let (cert_text, vault_key) = if text.trim_start().starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
            LifecycleError::Input(format!("{name}: not valid JSON\n  hint: give Vault's -format=json response as it printed it"))
        })?;
        let data = v.get("data").unwrap_or(&v);
        let cert = data.get("certificate").and_then(|c| c.as_str()).ok_or_else(|| {
            LifecycleError::Input(format!("{name}: a JSON file without data.certificate\n  hint: give the response of `vault write -format=json <pki>/sign/<role> csr=@FILE.csr`"))
        })?;
        (cert.to_string(), data.get("private_key").and_then(|k| k.as_str()).map(str::to_string))
    } else {
        (text, None)
    };
    let blocks = ::pem::parse_many(&cert_text).unwrap_or_default();
    let Some(first) = blocks.into_iter().find(|b| b.tag() == "CERTIFICATE") else {
        return Err(LifecycleError::Input(format!(
            "{name}: holds no PEM certificate\n  hint: give the signed certificates (PEM, `-----BEGIN CERTIFICATE-----`) or Vault -format=json responses (base64 DER is not read)"
        )));
    };
    Ok(vec![Signed { file: name, der: first.into_contents(), vault_key }])
}

/// The input files: each file given, and each `.crt`, `.pem` and `.json` file under each directory given.
fn inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LifecycleError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files = Vec::new();
            walk(p, &mut files)
                .map_err(|e| LifecycleError::Input(format!("{}: cannot be read ({})", p.display(), crate::util::io_words(&e))))?;
            out.extend(
                files.into_iter().filter(|f| matches!(f.extension().and_then(|e| e.to_str()), Some("crt") | Some("pem") | Some("json"))),
            );
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        return Err(LifecycleError::Input(
            "no signed certificate given (no .crt, .pem or .json file in the paths)\n  hint: give the signed certificates' files or directories".into(),
        ));
    }
    Ok(out)
}

fn describe(dns: &[String], ips: &[std::net::IpAddr]) -> String {
    let all: Vec<String> = dns.iter().cloned().chain(ips.iter().map(|i| i.to_string())).collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

/// What a signed certificate must match: the CSR it answers (a bundle), or the certificate it
/// replaces (a node tree), and the CA that must have signed it.
struct Expect<'a> {
    req: &'a Request,
    /// How messages name what it must match: `CSR <node>/pki/apiserver.csr`, or the tree's file.
    what: String,
    /// `asks for` (a CSR) or `holds` (a certificate).
    verb: &'static str,
    /// The certificate's name, for the usages it needs.
    id: &'a str,
    need_server: bool,
    need_client: bool,
    ca_id: &'a str,
    /// The CA certificate (DER) that must have signed it, and its file, shown.
    ca_der: &'a [u8],
    ca_shown: String,
    /// How to sign it right.
    sign_hint: String,
}

/// The checks every signed certificate passes, for a bundle and for a node tree alike: the same
/// subject and SANs as what it answers, the usages it needs, a leaf, signed by its CA.
fn check(s: &Signed, cert: &X509Certificate<'_>, e: &Expect<'_>) -> Result<(), LifecycleError> {
    let refuse = |what: String, hint: &str| LifecycleError::Refused(format!("{}: {what}; nothing was written\n  hint: {hint}", s.file));
    let req = e.req;
    let (cn, o) = subject_parts(cert.subject());
    if cn != req.cn || o != req.o {
        return Err(refuse(
            format!("its subject ({}) is not the one {} {} (CN {}, O {})", cert.subject(), e.what, e.verb, req.cn.join(","), if req.o.is_empty() { "none".into() } else { req.o.join(",") }),
            "sign the CSR keeping its subject (openssl ca: preserve = yes and a policy that keeps CN and O; Vault: use_csr_common_name and a role with that organization, or sign-verbatim)",
        ));
    }
    let (dns, ips) = cert.subject_alternative_name().ok().flatten().map(|s| names(&s.value.general_names)).unwrap_or_default();
    if dns != req.dns || ips != req.ips {
        let lost: Vec<String> = req
            .dns
            .iter()
            .filter(|d| !dns.contains(d))
            .cloned()
            .chain(req.ips.iter().filter(|i| !ips.contains(i)).map(|i| i.to_string()))
            .collect();
        let what = if lost.is_empty() {
            format!("its SANs ({}) are not the ones {} {} ({})", describe(&dns, &ips), e.what, e.verb, describe(&req.dns, &req.ips))
        } else {
            format!("it lost SAN(s) {} of {} (it has {})", lost.join(", "), e.what, describe(&dns, &ips))
        };
        return Err(refuse(what, "sign the CSR keeping its extensions: openssl ca with copy_extensions = copy (or openssl x509 -req -copy_extensions copy); Vault keeps the CSR's SANs with use_csr_sans"));
    }
    let eku = cert.extended_key_usage().ok().flatten().map(|e| (e.value.server_auth, e.value.client_auth));
    let (server, client) = eku.unwrap_or((false, false));
    if (e.need_server && !server) || (e.need_client && !client) {
        let need: Vec<&str> =
            [(e.need_server, "serverAuth"), (e.need_client, "clientAuth")].iter().filter(|(n, _)| *n).map(|(_, w)| *w).collect();
        return Err(refuse(
            format!("its extendedKeyUsage lacks {} that {} needs", need.join(" and "), e.id),
            "sign it with the CSR's extensions copied, or a profile/role that sets those usages",
        ));
    }
    if cert.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca) {
        return Err(refuse("it is a CA certificate, not a leaf".into(), "sign the CSR as a leaf (basicConstraints CA:FALSE)"));
    }
    let signed_ok = x509_parser::parse_x509_certificate(e.ca_der).is_ok_and(|(_, ca)| crate::pki::import::signed_by(cert, &ca));
    if !signed_ok {
        return Err(refuse(
            format!("{} is not signed by the {} CA in {} (its issuer is {})", cert.subject(), e.ca_id, e.ca_shown, cert.issuer()),
            &e.sign_hint,
        ));
    }
    Ok(())
}

/// The signed certificates to take back: `dir` is a bundle (into its state, for generate to
/// pack) or a node tree (into its files, where each certificate it renews is).
pub fn import_signed(
    dir: &Path,
    paths: &[PathBuf],
    profile: Option<&Path>,
    now: ::time::OffsetDateTime,
) -> Result<Imported, LifecycleError> {
    let files = inputs(paths)?;
    let mut signed = Vec::new();
    for f in &files {
        signed.extend(read_input(f)?);
    }
    let mut dir = dir.to_path_buf();
    // A bundle has a state (before its first tarball it has no nodes/ yet); else a node tree.
    if !dir.join("state").is_dir() && !crate::tree::bundle::is_bundle(&dir) {
        if !dir.is_dir() {
            return Err(LifecycleError::Input(format!(
                "{} is not a directory\n  hint: give a bundle (OUT/<clusterName>) or a node tree (/ or an extracted root, /etc/kubernetes)",
                dir.display()
            )));
        }
        match crate::tree::target::locate(&dir) {
            crate::tree::target::Target::Host(mount) => return import_into_tree(&dir, mount, &signed, profile, now),
            crate::tree::target::Target::BundleNode { bundle, .. } => dir = bundle,
            crate::tree::target::Target::Bundle(_) => {}
        }
    }
    let dir = dir.as_path();
    state::check::check_bundle(dir)?;
    let lock = output::lock_dir(dir)?;
    let real = lock.dir().to_path_buf();
    state::check::check_bundle(&real)?;
    let state_dir = real.join("state");
    let mut records = state::read_leaves(&state_dir)?;
    let csrs = requests(&real.join(state::CSR_DIR));
    // The public key of each waiting record.
    let mut by_key: BTreeMap<Vec<u8>, (String, String)> = BTreeMap::new();
    for ((node, id), r) in &records {
        if let Ok(k) = crate::pki::keys::Key::from_pem(&r.key_pem) {
            by_key.insert(k.spki_der(), (node.clone(), id.clone()));
        }
    }
    let csr_dir = dir.join(state::CSR_DIR);
    let mut accepted: Vec<((String, String), String, String)> = Vec::new();
    for s in &signed {
        let refuse = |what: String, hint: &str| LifecycleError::Refused(format!("{}: {what}; nothing was written\n  hint: {hint}", s.file));
        let (_, cert) = x509_parser::parse_x509_certificate(&s.der).map_err(|_| {
            LifecycleError::Input(format!(
                "{}: the certificate does not parse\n  hint: give the certificate as the signer wrote it",
                s.file
            ))
        })?;
        let spki = cert.public_key().raw.to_vec();
        let (Some(req), Some((node, id))) = (csrs.get(&spki), by_key.get(&spki)) else {
            if s.vault_key.is_some() {
                return Err(refuse(
                    "a Vault issue/ response: its certificate is for the private_key Vault made, not for a key in the state, so it matches no CSR".into(),
                    &format!("sign the CSRs in {} with `vault write -format=json <pki>/sign/<role> csr=@FILE.csr` (the key stays in the state)", csr_dir.display()),
                ));
            }
            return Err(refuse(
                format!("{} is a certificate for another key: it matches no CSR in {}", cert.subject(), csr_dir.display()),
                "give the certificate signed from one of those CSRs (the same public key)",
            ));
        };
        if s.vault_key.is_some() {
            return Err(refuse(
                "a Vault issue/ response holds a private_key that Vault made: the state keeps its own key for each CSR".into(),
                "use the response of <pki>/sign/<role> for the CSR instead",
            ));
        }
        let entry = catalog::cert(id);
        let ca_id = entry.and_then(|e| e.signer.ca_id()).unwrap_or("ca");
        let (crt, _) = state::ca_paths(ca_id);
        let ca_pem = std::fs::read(state_dir.join(&crt)).unwrap_or_default();
        let ca_der = ::pem::parse(&ca_pem).map(|p| p.into_contents()).unwrap_or_default();
        check(
            s,
            &cert,
            &Expect {
                req,
                what: format!("CSR {}", req.rel),
                verb: "asks for",
                id,
                need_server: entry.is_some_and(|e| e.usages.contains(&Eku::ServerAuth)),
                need_client: entry.is_some_and(|e| e.usages.contains(&Eku::ClientAuth)),
                ca_id,
                ca_der: &ca_der,
                ca_shown: dir.join("state").join(&crt).display().to_string(),
                sign_hint: format!("sign CSR {} with the CA imported as {ca_id}", req.rel),
            },
        )?;
        accepted.push(((node.clone(), id.clone()), crate::pki::keys::pem_encode("CERTIFICATE", &s.der), req.rel.clone()));
    }

    let mut lines = Vec::new();
    let mut changed = 0;
    for (key, pem, rel) in &accepted {
        if let Some(r) = records.get_mut(key) {
            if r.cert_pem.as_deref() != Some(pem.as_str()) {
                r.cert_pem = Some(pem.clone());
                changed += 1;
                lines.push(format!("accepted {rel}"));
            }
        }
    }
    let waiting = records.values().filter(|r| r.cert_pem.is_none()).count();
    if changed > 0 {
        let (parent, name) =
            (real.parent().unwrap_or(&real).to_path_buf(), real.file_name().unwrap_or_default().to_string_lossy().into_owned());
        let staging = output::stage(&parent, &name)?;
        let root = staging.path().to_path_buf();
        let leaves = PathBuf::from("state").join(state::LEAVES_FILE);
        output::link_copy_except(&real, &root, &[leaves.clone()].into_iter().collect())?;
        output::write_file(&root.join(&leaves), &state::leaves_json(&records), 0o600)?;
        output::commit(staging, &real)?;
    }
    lock.keep();
    lines.push(format!(
        "recorded {changed} signed certificate(s) in {} ({} already there); {waiting} still wait for theirs",
        dir.join("state").join(state::LEAVES_FILE).display(),
        accepted.len() - changed
    ));
    lines.push(if waiting == 0 {
        "next: `kubebundle generate` packs the nodes".to_string()
    } else {
        format!("next: import the others (their CSRs are in {}), then `kubebundle generate`", csr_dir.display())
    });
    Ok(Imported { lines })
}

/// `import-signed --dir TREE` (a node tree: a live host's root, an extracted tarball,
/// /etc/kubernetes): each signed certificate is matched by its public key to the leaf of the tree
/// it renews (`certs renew` wrote its CSR from the key the tree keeps), checked as a bundle's are
/// against what that certificate holds (subject, SANs, usages) and the tree's CA (the first
/// certificate of its CA file, the one kubeadm verifies with), then written where the tree keeps
/// the leaf (its certificate file, a chain after it kept, or a kubeconfig's
/// client-certificate-data) through renew's edits and writes: under the lock renew takes, backed
/// up beside the tree, each file replaced atomically with its mode, owner and links kept. One
/// refusal writes nothing.
fn import_into_tree(
    dir: &Path,
    mount: crate::tree::node::Mount,
    signed: &[Signed],
    profile: Option<&Path>,
    now: ::time::OffsetDateTime,
) -> Result<Imported, LifecycleError> {
    use crate::tree::node::{NodeTree, TreeError};
    let candidates = crate::lifecycle::expiry::candidates(profile).map_err(LifecycleError::Input)?;
    let lock = crate::lifecycle::renew::lock_host(dir)?;
    let tree = NodeTree::read_host(mount, None, &candidates).map_err(|e| match e {
        TreeError::Unrecognised { path, why } => LifecycleError::Input(format!(
            "{path} is neither a bundle nor a node tree kubebundle knows: {why}\n  hint: give a bundle (OUT/<clusterName>), a node's root (/ or an extracted tarball), /etc/kubernetes or /etc/k8s, or --profile FILE for a layout of your own"
        )),
        TreeError::Read { path, why } => LifecycleError::Refused(format!("cannot read {path}: {why}")),
    })?;
    // Each leaf of the tree that a CA signs, by its certificate's public key, with what it holds.
    struct Leaf {
        site: crate::tree::certs::Site,
        req: Request,
        der: Vec<u8>,
        server: bool,
        client: bool,
    }
    let mut leaves: BTreeMap<Vec<u8>, Leaf> = BTreeMap::new();
    for site in tree.certificates().into_iter().filter(|s| !s.is_ca && s.ca.is_some()) {
        let Ok(pem_text) = tree.cert_pem(&site) else { continue };
        let first = ::pem::parse_many(&pem_text).ok().and_then(|v| v.into_iter().find(|b| b.tag() == "CERTIFICATE"));
        let Some(der) = first.map(|b| b.into_contents()) else { continue };
        let Ok((_, x)) = x509_parser::parse_x509_certificate(&der) else { continue };
        let (cn, o) = subject_parts(x.subject());
        let (dns, ips) = x.subject_alternative_name().ok().flatten().map(|s| names(&s.value.general_names)).unwrap_or_default();
        let (server, client) =
            x.extended_key_usage().ok().flatten().map(|e| (e.value.server_auth, e.value.client_auth)).unwrap_or((false, false));
        let spki = x.public_key().raw.to_vec();
        let req = Request { rel: tree.show(site.place.path()), cn, o, dns, ips };
        leaves.entry(spki).or_insert(Leaf { site, req, der: der.clone(), server, client });
    }
    if leaves.is_empty() {
        return Err(LifecycleError::Input(format!(
            "{} holds no certificate signed by a CA that a signed one could replace\n  hint: give the node tree where `kubebundle certs renew` wrote the CSRs (its root, /etc/kubernetes or /etc/k8s), or a bundle (OUT/<clusterName>)",
            dir.display()
        )));
    }
    // The tree's CAs: the first certificate of each CA file.
    let mut cas: BTreeMap<&str, (Vec<u8>, String)> = BTreeMap::new();
    for ca in crate::tree::certs::CAS {
        let Some((rel, f)) = tree.artifact(&format!("{ca}.crt")) else { continue };
        let first = ::pem::parse_many(&f.bytes[..]).ok().and_then(|v| v.into_iter().find(|b| b.tag() == "CERTIFICATE"));
        if let Some(b) = first {
            cas.insert(ca, (b.into_contents(), tree.show(rel)));
        }
    }
    let mut accepted: Vec<(crate::tree::certs::Site, String)> = Vec::new();
    let mut already = 0;
    for s in signed {
        let refuse = |what: String, hint: &str| LifecycleError::Refused(format!("{}: {what}; nothing was written\n  hint: {hint}", s.file));
        let (_, cert) = x509_parser::parse_x509_certificate(&s.der).map_err(|_| {
            LifecycleError::Input(format!(
                "{}: the certificate does not parse\n  hint: give the certificate as the signer wrote it",
                s.file
            ))
        })?;
        let Some(leaf) = leaves.get(cert.public_key().raw) else {
            if s.vault_key.is_some() {
                return Err(refuse(
                    format!("a Vault issue/ response: its certificate is for the private_key Vault made, not for a key of {}, so it renews none of its certificates", dir.display()),
                    "sign the CSRs `kubebundle certs renew` wrote with `vault write -format=json <pki>/sign/<role> csr=@FILE.csr` (the key stays in the tree)",
                ));
            }
            return Err(refuse(
                format!("{} is a certificate for another key: no certificate of {} has its public key", cert.subject(), dir.display()),
                "give the certificate signed from the CSR `kubebundle certs renew` wrote for it (the same public key: the one the tree keeps)",
            ));
        };
        if s.vault_key.is_some() {
            return Err(refuse(
                "a Vault issue/ response holds a private_key that Vault made: the tree keeps its own key for each certificate".into(),
                "use the response of <pki>/sign/<role> for the CSR instead",
            ));
        }
        let ca_id = leaf.site.ca.unwrap_or("ca");
        let Some((ca_der, ca_shown)) = cas.get(ca_id) else {
            return Err(refuse(
                format!("{} holds no {ca_id} certificate to check {} against", dir.display(), leaf.req.rel),
                "put the CA's certificate back where the tree keeps it",
            ));
        };
        let entry = leaf.site.entry;
        check(
            s,
            &cert,
            &Expect {
                req: &leaf.req,
                what: leaf.req.rel.clone(),
                verb: "holds",
                id: &leaf.site.name,
                need_server: leaf.server || entry.is_some_and(|e| e.usages.contains(&Eku::ServerAuth)),
                need_client: leaf.client || entry.is_some_and(|e| e.usages.contains(&Eku::ClientAuth)),
                ca_id,
                ca_der,
                ca_shown: ca_shown.clone(),
                sign_hint: format!(
                    "sign the CSR `kubebundle certs renew` wrote for {} with the CA whose certificate is {ca_shown}",
                    leaf.site.name
                ),
            },
        )?;
        if cert.validity().not_after.to_datetime() <= now {
            return Err(refuse(
                format!("it expired at {}", crate::clock::rfc3339(cert.validity().not_after.to_datetime())),
                "have the CSR signed again",
            ));
        }
        if s.der == leaf.der {
            already += 1;
        } else if !accepted.iter().any(|(site, _)| site.name == leaf.site.name) {
            accepted.push((leaf.site.clone(), crate::pki::keys::pem_encode("CERTIFICATE", &s.der)));
        }
    }
    let report = if accepted.is_empty() { None } else { Some(crate::lifecycle::renew::install_signed(dir, &tree, &accepted, now)?) };
    drop(lock);
    let mut lines = Vec::new();
    let installed = report.as_ref().map(|r| r.renewed.len()).unwrap_or(0);
    lines.push(format!("installed {installed} signed certificate(s) into {} ({already} already there):", dir.display()));
    if let Some(r) = &report {
        let width = r.renewed.iter().map(|x| x.name.chars().count()).max().unwrap_or(0);
        for x in &r.renewed {
            lines.push(format!(
                "  {:width$}  {} → {}  {}",
                crate::util::text::escape(&x.name),
                crate::clock::rfc3339(x.old_not_after),
                crate::clock::rfc3339(x.new_not_after),
                crate::util::text::escape(&x.path.display().to_string())
            ));
        }
        if let Some(b) = &r.backup_dir {
            lines.push(format!(
                "backup of the {} replaced file(s): {}",
                r.changed_files.len(),
                crate::util::text::escape(&b.display().to_string())
            ));
        }
        lines.extend(r.restart_text().lines().map(str::to_string));
    }
    lines.push(format!("next: `kubebundle certs check-expiration --dir {}` shows the new expiries", dir.display()));
    Ok(Imported { lines })
}
