//! What a re-run keeps: a leaf certificate recorded in the state is kept as it is while it still
//! fits the plan (same subject, SANs, usages, algorithm, validity period), is signed by the
//! current CA and has more than `RENEW_WITHIN` left; a node tarball (or tree file) is kept byte
//! for byte only when it holds exactly what the run writes, checked whole each run (see
//! `crate::tree::tarball::compare`); anything else (truncated, corrupt, edited, re-packed, a wrong mode) is
//! rewritten and reported. So adding a
//! node, or re-running, changes nothing else and signs nothing again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use x509_parser::prelude::*;

use crate::bundle::state::files::LeafRecord;
use crate::clock::Clock;
use crate::config::{Config, KeyAlgorithm};
use crate::pki::catalog::Eku;
use crate::pki::issue::{self, Authority, CertSpec, Issued};
use crate::pki::keys::Key;
use crate::tree::FileTree;

/// A leaf this close to its end is issued anew rather than reused.
pub const RENEW_WITHIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// A leaf's serial: derived from the CA key and the leaf's identity, key and issue time, so the
/// same state re-issues the same certificate, and a serial that matches proves the certificate
/// came from this CA key for this key and time.
pub fn leaf_serial(ca: &Authority, node: &str, id: &str, spki: &[u8], issued: i64) -> Vec<u8> {
    match &ca.key {
        Some(key) => issue::derived_serial(key, &[node.as_bytes(), id.as_bytes(), spki, &issued.to_be_bytes()]),
        // An external CA's leaves are signed elsewhere: none is "ours", each must verify.
        None => Vec::new(),
    }
}

/// A leaf record that must not be used: what is wrong with it, and whether the run would
/// re-issue the leaf anyway (its certificate no longer fits the plan, or is near its end).
#[derive(Debug)]
pub struct BadRecord {
    pub message: String,
    pub reissue_anyway: bool,
}

/// Checks the record of `spec` before it is used, and returns its certificate when it may be
/// kept as it is (None: issue it again from the record). The key must parse and be the
/// certificate's public key (read from the key's own fields, so the check costs microseconds);
/// the certificate must parse and be issued by `ca`: one this state issued has the serial
/// `leaf_serial` of its key and issue time (an HMAC keyed by the CA key), any other (a `certs
/// renew` re-issue) must verify under `ca`.
pub fn judge(spec: &CertSpec, record: &LeafRecord, ca: &Authority, config: &Config, clock: &Clock) -> Result<Option<Issued>, BadRecord> {
    let half = crate::pki::keys::public_half(&record.key_pem);
    let Some(pem) = record.cert_pem.as_deref() else {
        return match half {
            Err(why) => Err(BadRecord { message: format!("its key does not parse ({why})"), reissue_anyway: false }),
            Ok(_) => Ok(None),
        };
    };
    let unreadable = || BadRecord { message: "its certificate does not parse".into(), reissue_anyway: false };
    let der = ::pem::parse(pem).ok().filter(|p| p.tag() == "CERTIFICATE").ok_or_else(unreadable)?.into_contents();
    let (_, cert) = parse_x509_certificate(&der).map_err(|_| unreadable())?;
    let fits = fits(spec, &cert, ca, config, clock);
    let bad = |message: String| BadRecord { message, reissue_anyway: !fits };
    let matches = match half {
        Err(why) => return Err(bad(format!("its key does not parse ({why})"))),
        Ok(Some(h)) => crate::pki::keys::half_matches(&h, cert.public_key()),
        // A key that does not carry its public half is loaded.
        Ok(None) => Key::from_pem(&record.key_pem).is_ok_and(|k| k.spki_der() == cert.public_key().raw),
    };
    if !matches {
        return Err(bad("the key does not match its certificate".into()));
    }
    let spki = cert.public_key().raw;
    let node = spec.node.as_deref().unwrap_or_default();
    let ours = !ca.is_external()
        && cert.issuer().as_raw() == ca.subject_der.as_slice()
        && cert.raw_serial() == leaf_serial(ca, node, &spec.id, spki, record.issued).as_slice();
    if !ours && !ca.signed(&cert) {
        return Err(bad(format!("its certificate is not signed by the current {} CA", ca.id)));
    }
    Ok(fits.then(|| Issued { pem: pem.to_string(), der }))
}

/// Where the previous bundle's nodes are, to keep a node's tarball and tree files when they are
/// exactly what the run writes (each is read when its node is rendered, so memory does not grow
/// with the fleet).
#[derive(Default)]
pub struct Previous {
    nodes: Option<PathBuf>,
}

/// How a file of the previous bundle compares with what this run writes there.
pub enum Judged {
    /// There is none.
    Absent,
    /// The very bytes this run writes; `mode` is the file's own (the caller compares it with the plan).
    Same { mode: u32, bytes: Zeroizing<Vec<u8>> },
    /// It must be rewritten: `None` when this run changes it, else why it cannot be trusted
    /// (truncated, corrupt, edited, re-packed, not a regular file; and a wrong mode).
    Differs(Option<String>),
}

/// The metadata of a regular file at `path` (never followed through a symbolic link): None when
/// there is nothing there, else the file's size and mode, or why it cannot be used.
fn regular(path: &Path) -> Option<Result<(u64, u32), String>> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(format!("unreadable ({})", plain(&e)))),
    };
    Some(match meta.file_type() {
        t if t.is_file() => Ok((meta.len(), meta.permissions().mode() & 0o7777)),
        t if t.is_symlink() => Err("a symbolic link, not a regular file".into()),
        _ => Err("not a regular file".into()),
    })
}

fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    std::fs::read(path).map(Zeroizing::new).map_err(|e| format!("unreadable ({})", plain(&e)))
}

/// An I/O error in plain words (`Permission denied`, without the errno).
fn plain(e: &std::io::Error) -> String {
    let text = e.to_string();
    text.split(" (os error").next().unwrap_or(&text).to_string()
}

fn wrong_mode(mode: u32, planned: u32, what: &str) -> String {
    format!("mode {mode:04o}, {what} {planned:04o}")
}

/// The previous node tarball at `path` against `tree`: the same only when `crate::tree::tarball::compare` finds
/// exactly the gzip header, tar stream (with the tarball's own mtime), CRC and length that
/// `crate::tree::tarball::tar_gz` makes of `tree`.
pub fn judge_tarball(path: &Path, tree: &FileTree) -> Judged {
    let (size, mode) = match regular(path) {
        None => return Judged::Absent,
        Some(Ok(found)) => found,
        Some(Err(why)) => return Judged::Differs(Some(why)),
    };
    let mismatch = if size > crate::tree::tarball::MAX_TOTAL {
        crate::tree::tarball::Mismatch::Damaged(format!("corrupt: {size} bytes, larger than any node tarball"))
    } else {
        match read(path) {
            Err(why) => return Judged::Differs(Some(why)),
            Ok(bytes) => match crate::tree::tarball::compare(&bytes, tree) {
                Ok(()) => return Judged::Same { mode, bytes },
                Err(m) => m,
            },
        }
    };
    let mut why: Vec<String> = match mismatch {
        crate::tree::tarball::Mismatch::Damaged(d) => vec![d],
        crate::tree::tarball::Mismatch::Changed => Vec::new(),
    };
    if mode != 0o600 {
        why.push(wrong_mode(mode, 0o600, "a tarball is"));
    }
    Judged::Differs((!why.is_empty()).then(|| why.join("; ")))
}

/// A previous file at `path` against the `bytes` and `mode` this run writes there (a file of
/// another size is not read).
pub fn judge_file(path: &Path, bytes: &[u8], mode: u32) -> Judged {
    let (size, old_mode) = match regular(path) {
        None => return Judged::Absent,
        Some(Ok(found)) => found,
        Some(Err(why)) => return Judged::Differs(Some(why)),
    };
    let mode_note = (old_mode != mode).then(|| wrong_mode(old_mode, mode, "planned"));
    if size != bytes.len() as u64 {
        return Judged::Differs(mode_note);
    }
    match read(path) {
        Ok(old) if *old == bytes => Judged::Same { mode: old_mode, bytes: old },
        Ok(_) => Judged::Differs(mode_note),
        Err(why) => Judged::Differs(Some(why)),
    }
}

impl Previous {
    /// The bundle in `cluster_dir` (missing or odd files are simply not reused).
    pub fn at(cluster_dir: &Path) -> Previous {
        Previous { nodes: Some(cluster_dir.join("nodes")) }
    }

    /// Where the previous tarball of `node` is (it may not exist).
    pub fn tarball(&self, node: &str) -> Option<PathBuf> {
        Some(self.nodes.as_ref()?.join(format!("{node}.tar.gz")))
    }

    /// The previous unpacked tree of `node`, as far as it is made of real directories (a file is
    /// never reused through a symbolic link to somewhere else).
    pub fn tree(&self, node: &str, tree: &FileTree) -> Option<OldTree> {
        let root = self.nodes.as_ref()?.join(node);
        let real_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_dir());
        if !real_dir(&root) {
            return None;
        }
        let real = tree.dirs().into_iter().filter(|d| real_dir(&root.join(d))).collect();
        Some(OldTree { root, real })
    }
}

/// A node's previous unpacked tree (see `Previous::tree`).
pub struct OldTree {
    root: PathBuf,
    /// The directories of the new tree that are real directories in the old one.
    real: std::collections::BTreeSet<String>,
}

impl OldTree {
    /// Where file `rel` of the old tree is, when every directory above it is a real one.
    pub fn file(&self, rel: &str) -> Option<PathBuf> {
        let mut p = rel;
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !self.real.contains(parent) {
                return None;
            }
            p = parent;
        }
        Some(self.root.join(rel))
    }
}

/// Hard-links `old` at `to` and judges what was linked (so the check applies to the very inode
/// the new bundle holds), with whether `to` is now that link. A file that differs is unlinked
/// again; when there is no previous file, or it cannot be linked, `to` is left absent (and `old`
/// is judged where it is).
pub fn link_if_same(old: Option<&Path>, to: &Path, judge: impl Fn(&Path) -> Judged) -> (Judged, bool) {
    let Some(old) = old else { return (Judged::Absent, false) };
    if crate::bundle::output::hard_link(old, to).is_err() {
        return (judge(old), false);
    }
    let judged = judge(to);
    if matches!(judged, Judged::Same { .. }) {
        return (judged, true);
    }
    let _ = std::fs::remove_file(to);
    (judged, false)
}

/// What a run did with the previous bundle's node files, for its summary: tarballs kept, updated
/// (the run changes their files) and new, and every file rewritten because it could not be
/// trusted, with why.
#[derive(Default)]
pub struct NodeReport {
    kept: std::sync::atomic::AtomicUsize,
    new: std::sync::atomic::AtomicUsize,
    updated: std::sync::Mutex<Vec<String>>,
    repaired: std::sync::Mutex<Vec<(String, String)>>,
}

impl NodeReport {
    pub fn kept(&self) {
        self.kept.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn new_tarball(&self) {
        self.new.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn updated(&self, rel: String) {
        self.updated.lock().unwrap_or_else(|e| e.into_inner()).push(rel);
    }

    pub fn repaired(&self, rel: String, why: String) {
        self.repaired.lock().unwrap_or_else(|e| e.into_inner()).push((rel, why));
    }

    /// One summary line, then every repaired file, then the updated tarballs (the first `listed`).
    pub fn lines(self, listed: usize) -> Vec<String> {
        let mut updated = self.updated.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut repaired = self.repaired.into_inner().unwrap_or_else(|e| e.into_inner());
        updated.sort();
        repaired.sort();
        let tarballs = repaired.iter().filter(|(rel, _)| rel.ends_with(".tar.gz")).count();
        let mut lines = vec![format!(
            "node tarballs: {} kept as they were (hard links), {} updated, {} repaired, {} new",
            self.kept.into_inner(),
            updated.len(),
            tarballs,
            self.new.into_inner()
        )];
        for (rel, why) in &repaired {
            lines.push(format!("rewrote {rel}: {why}"));
        }
        for rel in updated.iter().take(listed) {
            lines.push(format!("updated {rel}: its files changed"));
        }
        if updated.len() > listed {
            lines.push(format!("  ... and {} more updated", updated.len() - listed));
        }
        lines
    }
}

fn algorithm_of(cert: &X509Certificate<'_>) -> Option<KeyAlgorithm> {
    crate::pki::keys::algorithm_of(&cert.public_key().parsed().ok()?)
}

fn sans_of(cert: &X509Certificate<'_>) -> Option<(Vec<String>, Vec<std::net::IpAddr>)> {
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    if let Some(ext) = cert.subject_alternative_name().ok()? {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) => ips.push(match b.len() {
                    4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?),
                    16 => std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?),
                    _ => return None,
                }),
                _ => return None,
            }
        }
    }
    Some((dns, ips))
}

/// Does this certificate still say exactly what the plan asks for, with time left under `ca`?
fn fits(spec: &CertSpec, cert: &X509Certificate<'_>, ca: &Authority, config: &Config, clock: &Clock) -> bool {
    let subject_ok = cert.subject().iter_common_name().map(|a| a.as_str().ok()).collect::<Vec<_>>()
        == vec![Some(spec.common_name.as_str())]
        && cert.subject().iter_organization().map(|a| a.as_str().ok().map(str::to_string)).collect::<Vec<_>>()
            == spec.organizations.iter().map(|o| Some(o.clone())).collect::<Vec<_>>();
    let sans_ok = sans_of(cert).is_some_and(|(dns, ips)| dns == spec.sans.dns && ips == spec.sans.ips);
    let eku_ok = cert.extended_key_usage().ok().flatten().is_some_and(|e| {
        let (server, client) = (spec.usages.contains(&Eku::ServerAuth), spec.usages.contains(&Eku::ClientAuth));
        e.value.server_auth == server && e.value.client_auth == client && e.value.other.is_empty()
    });
    let alg_ok = algorithm_of(cert) == Some(config.algorithm);
    let (nb, na) = (cert.validity().not_before.to_datetime(), cert.validity().not_after.to_datetime());
    // An external CA's signer chooses the period.
    let period_ok = ca.is_external()
        || !config.kubernetes_version.at_least(31)
        || ((na - nb) - (config.cert_validity + crate::clock::BACKDATE)).whole_seconds().abs() <= 60;
    let time_ok = nb <= clock.now && na - clock.now > RENEW_WITHIN && na <= ca.not_after;
    subject_ok && sans_ok && eku_ok && alg_ok && period_ok && time_ok
}
