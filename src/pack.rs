//! Reproducible node tarballs: sorted entries, uid/gid 0, one fixed mtime, exact modes,
//! relative paths only, and a gzip header without a timestamp of its own.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use flate2::{Compression, GzBuilder};
use tar::{EntryType, Header};

use crate::output::{FileEntry, FileTree};

/// No single file of a bundle comes near this; larger entries are refused unread.
pub const MAX_FILE: u64 = 16 << 20;
/// Upper bound on what one tarball may unpack to.
pub const MAX_TOTAL: u64 = 256 << 20;

fn header(path: &str, size: u64, mode: u32, mtime: u64, kind: EntryType) -> std::io::Result<Header> {
    let mut h = Header::new_ustar();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_username("root")?;
    h.set_groupname("root")?;
    h.set_mtime(mtime);
    h.set_entry_type(kind);
    h.set_cksum();
    Ok(h)
}

/// What a tarball's gzip header comment says: the digest of the files it holds, so a run can tell
/// an unchanged node's tarball without unpacking it.
fn comment<'a>(files: impl Iterator<Item = (&'a String, &'a FileEntry)>) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for (path, f) in files {
        for part in [path.as_bytes(), &f.mode.to_be_bytes(), &f.bytes] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
    }
    let hex: String = ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("kubebundle files sha256:{hex}")
}

/// Whether the tarball `bytes` holds exactly `tree` (paths, modes, bytes): by its header's digest
/// when it has one, else by unpacking it.
pub fn holds(bytes: &[u8], tree: &FileTree) -> bool {
    match header_digest(bytes) {
        Some(c) => c == comment(tree.iter()).as_bytes(),
        None => unpack(bytes).same_as(tree),
    }
}

/// Whether the tarball carries kubebundle's digest in its gzip header, i.e. kubebundle packed it
/// (`unpack` reports files that do not match the digest).
pub fn has_digest(bytes: &[u8]) -> bool {
    header_digest(bytes).is_some()
}

/// The digest comment of a tarball kubebundle packed.
fn header_digest(bytes: &[u8]) -> Option<Vec<u8>> {
    let decoder = flate2::read::GzDecoder::new(bytes);
    decoder.header().and_then(|h| h.comment()).filter(|c| c.starts_with(b"kubebundle files sha256:")).map(<[u8]>::to_vec)
}

/// Packs `tree` (paths relative to the node's /) into a .tar.gz held in memory.
pub fn tar_gz(tree: &FileTree, mtime: u64) -> std::io::Result<Vec<u8>> {
    let gz = GzBuilder::new().mtime(0).comment(comment(tree.iter())).write(Vec::new(), Compression::fast());
    let mut builder = tar::Builder::new(gz);
    // Directories and files in one sorted list, each directory before what it holds.
    let mut entries: Vec<(String, Option<&crate::output::FileEntry>)> = tree.dirs().into_iter().map(|d| (format!("{d}/"), None)).collect();
    entries.extend(tree.iter().map(|(p, f)| (p.clone(), Some(f))));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, file) in entries {
        match file {
            None => {
                let h = header(&path, 0, 0o755, mtime, EntryType::Directory)?;
                builder.append(&h, std::io::empty())?;
            }
            Some(f) => {
                let h = header(&path, f.bytes.len() as u64, f.mode, mtime, EntryType::Regular)?;
                builder.append(&h, f.bytes.as_slice())?;
            }
        }
    }
    let mut gz = builder.into_inner()?;
    gz.flush()?;
    gz.finish()
}

/// A node tarball read back into memory: its regular files with their modes, and each entry
/// refused while reading (path, why).
#[derive(Default)]
pub struct Unpacked {
    pub files: BTreeMap<String, FileEntry>,
    pub problems: Vec<(String, String)>,
}

impl Unpacked {
    /// Exactly the files of `tree` (paths, bytes, modes), and nothing refused.
    pub fn same_as(&self, tree: &FileTree) -> bool {
        self.problems.is_empty()
            && self.files.len() == tree.0.len()
            && self.files.iter().zip(tree.iter()).all(|((pa, a), (pb, b))| pa == pb && a.mode == b.mode && *a.bytes == *b.bytes)
    }
}

/// Reads a .tar.gz held in memory. Nothing is extracted to disk: absolute paths, `..`, links,
/// devices, oversized and duplicate entries are reported in `problems` and left out.
pub fn unpack(bytes: &[u8]) -> Unpacked {
    let mut out = Unpacked::default();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            out.problems.push((String::new(), format!("not a readable tar.gz: {e}")));
            return out;
        }
    };
    let mut total = 0u64;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.problems.push((String::new(), format!("the archive is truncated or corrupt: {e}")));
                break;
            }
        };
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if raw.starts_with('/') {
            out.problems.push((raw, "absolute path in the archive: refused (never extracted)".into()));
            continue;
        }
        if raw.split('/').any(|c| c == "..") {
            out.problems.push((raw, "path with '..' in the archive: refused (never extracted)".into()));
            continue;
        }
        let path = raw.trim_start_matches("./").trim_end_matches('/').to_string();
        if kind.is_dir() {
            continue;
        }
        let what = if kind.is_symlink() {
            Some("a symbolic link")
        } else if kind.is_hard_link() {
            Some("a hard link")
        } else if kind.is_character_special() || kind.is_block_special() {
            Some("a device node")
        } else if kind.is_fifo() {
            Some("a FIFO")
        } else if !(kind.is_file() || kind.is_contiguous()) {
            Some("an unsupported entry type")
        } else {
            None
        };
        if let Some(what) = what {
            let target = entry.link_name_bytes().map(|t| format!(" → {}", String::from_utf8_lossy(&t))).unwrap_or_default();
            out.problems.push((path, format!("{what}{target} in the archive: refused (a bundle holds regular files only)")));
            continue;
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > MAX_FILE || total.saturating_add(size) > MAX_TOTAL {
            out.problems.push((path, format!("entry of {size} bytes is too large for a bundle file: not read")));
            continue;
        }
        total += size;
        let mode = entry.header().mode().unwrap_or(0) & 0o7777;
        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(size as usize));
        if let Err(e) = (&mut entry).take(MAX_FILE).read_to_end(&mut bytes) {
            out.problems.push((path, format!("cannot read the entry: {e}")));
            continue;
        }
        if out.files.insert(path.clone(), FileEntry { bytes, mode }).is_some() {
            out.problems.push((path, "the archive holds this path twice".into()));
        }
    }
    if out.problems.is_empty() && header_digest(bytes).is_some_and(|d| d != comment(out.files.iter()).as_bytes()) {
        out.problems.push((
            String::new(),
            "its files do not match the digest in its gzip header: the tarball was changed after kubebundle packed it".into(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_digest_tells_an_unchanged_tree_and_catches_an_edited_tarball() {
        let mut t = FileTree::new();
        t.insert("etc/kubernetes/pki/ca.crt", b"cert".to_vec(), 0o644);
        t.insert("etc/kubernetes/admin.conf", b"kubeconfig".to_vec(), 0o600);
        let packed = tar_gz(&t, 1_700_000_000).unwrap();
        assert!(holds(&packed, &t));
        assert!(unpack(&packed).same_as(&t));
        for (path, bytes, mode) in
            [("etc/kubernetes/admin.conf", b"other".to_vec(), 0o600), ("etc/kubernetes/admin.conf", b"kubeconfig".to_vec(), 0o644)]
        {
            let mut changed = t.clone();
            changed.insert(path, bytes, mode);
            assert!(!holds(&packed, &changed), "{path} {mode:o}");
            // The other files' deflate stream under the first tarball's header (10 fixed bytes,
            // then the NUL-terminated comment, the same length in both): unpacking reports it.
            let end = 10 + packed[10..].iter().position(|b| *b == 0).unwrap() + 1;
            let mut forged = packed[..end].to_vec();
            forged.extend_from_slice(&tar_gz(&changed, 1_700_000_000).unwrap()[end..]);
            let read = unpack(&forged);
            assert!(read.files.len() == 2 && !read.problems.is_empty(), "an edited tarball under the old header is not reported");
        }
    }

    #[test]
    fn same_input_same_bytes_and_modes_kept() {
        let mut t = FileTree::new();
        t.insert("etc/kubernetes/pki/ca.key", b"secret".to_vec(), 0o600);
        t.insert("etc/kubernetes/pki/ca.crt", b"cert".to_vec(), 0o644);
        let a = tar_gz(&t, 1_700_000_000).unwrap();
        assert_eq!(a, tar_gz(&t, 1_700_000_000).unwrap());
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(a.as_slice()));
        let got: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().mode().unwrap(), e.header().uid().unwrap())
            })
            .collect();
        assert_eq!(
            got,
            [
                ("etc/".to_string(), 0o755, 0),
                ("etc/kubernetes/".to_string(), 0o755, 0),
                ("etc/kubernetes/pki/".to_string(), 0o755, 0),
                ("etc/kubernetes/pki/ca.crt".to_string(), 0o644, 0),
                ("etc/kubernetes/pki/ca.key".to_string(), 0o600, 0)
            ]
        );
    }
}
