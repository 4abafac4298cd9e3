//! Reproducible node tarballs: sorted entries, uid/gid 0, one fixed mtime, exact modes,
//! relative paths only, and a gzip header without a timestamp of its own.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use flate2::write::DeflateEncoder;
use flate2::Compression;
use tar::{EntryType, Header};

use crate::tree::{FileEntry, FileTree};

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

/// Why a previous tarball is not the one a run would write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Kubebundle's own tarball, intact, of other files: the run changes the node's files.
    Changed,
    /// Truncated, corrupt, edited or re-packed: what is wrong with it, in a few words.
    Damaged(String),
}

/// Whether the tarball `bytes` holds exactly what `tar_gz` packs of `tree` with the tarball's own
/// mtime (so a tarball packed at an earlier clock is still kept): its gzip header must be exactly
/// the one kubebundle writes for these files; its deflate stream must inflate, ending exactly
/// before the trailer, to exactly that tar stream (every tar header, mode, file byte and padding
/// block); and the trailer's CRC-32 and length must be that stream's, with nothing after. The
/// deflate stream is inflated rather than the tree deflated again (40% of the cost), so only its
/// encoding is not compared: any encoding of exactly this stream under this header is kept. Only
/// when the check fails is the tarball read again to say why.
pub fn compare(bytes: &[u8], tree: &FileTree) -> Result<(), Mismatch> {
    if content_matches(bytes, tree) {
        Ok(())
    } else {
        Err(diagnose(bytes, tree))
    }
}

/// Compares what is written to it with `expected`, from its start.
struct Compare<'a> {
    expected: &'a [u8],
    at: usize,
    same: bool,
}

impl Write for Compare<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.same = self.same && self.expected.get(self.at..self.at + buf.len()) == Some(buf);
        self.at += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn content_matches(bytes: &[u8], tree: &FileTree) -> bool {
    let header = gzip_header(tree);
    if bytes.len() < header.len() + 8 || !bytes.starts_with(&header) {
        return false;
    }
    let (body, trailer) = bytes[header.len()..].split_at(bytes.len() - header.len() - 8);
    let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]) as usize;
    if size as u64 > MAX_TOTAL || size < 512 {
        return false;
    }
    INFLATED.with(|inflated| {
        let mut inflated = inflated.borrow_mut();
        // One byte more than the trailer says, so a longer stream shows.
        inflated.resize(size + 1, 0);
        let whole = INFLATE.with(|d| {
            let mut d = d.borrow_mut();
            d.reset(false);
            let status = d.decompress(body, &mut inflated, zlib_rs::InflateFlush::Finish);
            matches!(status, Ok(zlib_rs::Status::StreamEnd)) && d.total_in() as usize == body.len() && d.total_out() as usize == size
        });
        let stream = &inflated[..size];
        let same = whole
            && {
                let mut crc = flate2::Crc::new();
                crc.update(stream);
                crc.sum().to_le_bytes() == trailer[..4]
            }
            && Header::from_byte_slice(&stream[..512]).mtime().is_ok_and(|mtime| {
                let mut cmp = Compare { expected: stream, at: 0, same: true };
                write_tar(&mut cmp, tree, mtime).is_ok() && cmp.same && cmp.at == size
            });
        // It held the node's keys.
        zeroize::Zeroize::zeroize(inflated.as_mut_slice());
        inflated.clear();
        same
    })
}

/// What is wrong with a tarball that is not what kubebundle would pack, in plain words.
fn diagnose(bytes: &[u8], tree: &FileTree) -> Mismatch {
    let damaged = |why: &str| Mismatch::Damaged(why.to_string());
    if bytes.len() < 2 || bytes[..2] != [0x1f, 0x8b] {
        return damaged(if bytes.is_empty() { "truncated: the file is empty" } else { "corrupt: not a gzip file" });
    }
    // The whole gzip member: a truncation or a changed byte shows here (deflate error or CRC).
    let mut decoder = flate2::bufread::GzDecoder::new(bytes);
    let mut sink = [0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        match decoder.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                if total > MAX_TOTAL + (1 << 20) {
                    return damaged("corrupt: it unpacks to more than any node's files");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return damaged("truncated: the gzip stream ends early"),
            Err(e) if e.to_string().contains("checksum") => {
                return damaged("corrupt: its gzip checksum does not match its data (bytes were changed)")
            }
            Err(_) => return damaged("corrupt: its compressed data is invalid (bytes were changed)"),
        }
    }
    if !decoder.into_inner().is_empty() {
        return damaged("corrupt: bytes follow the end of its gzip stream");
    }
    let read = unpack(bytes);
    let ours = header_digest(bytes).is_some();
    if let Some((entry, why)) = read.problems.first() {
        return if why.contains("digest in its gzip header") {
            damaged("edited: its files are not the ones kubebundle packed (they do not match the digest in its gzip header)")
        } else if entry.is_empty() {
            damaged("corrupt: its tar stream cannot be read")
        } else {
            Mismatch::Damaged(format!("corrupt: it holds {entry:?}, which kubebundle never packs"))
        };
    }
    match (ours, read.same_as(tree)) {
        (false, true) => damaged("re-packed: the same files, packed by another tool (it has no kubebundle gzip header)"),
        (false, false) => damaged("re-packed: packed by another tool (it has no kubebundle gzip header)"),
        (true, true) => damaged("re-packed: the same files, but not packed as kubebundle packs them (its gzip or tar headers differ)"),
        (true, false) => Mismatch::Changed,
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

/// Packs `tree` (paths relative to the node's /) into a .tar.gz held in memory: what a
/// `GzBuilder` (no mtime, this comment, fast compression) over a `tar::Builder` gives, written
/// through one deflate state per thread, reset for each tarball (setting one up costs more than
/// compressing a node's few kilobytes).
pub fn tar_gz(tree: &FileTree, mtime: u64) -> std::io::Result<Vec<u8>> {
    // Taken out while in use: after an error it is dropped, and the next call makes a new one.
    let mut encoder = DEFLATE.with(|d| d.borrow_mut().take()).unwrap_or_else(|| DeflateEncoder::new(Vec::new(), Compression::fast()));
    let mut crc = flate2::CrcWriter::new(&mut encoder);
    write_tar(&mut crc, tree, mtime)?;
    // A sync flush before the end, as the gzip writer this replaces did (the same bytes).
    crc.flush()?;
    let (sum, amount) = (crc.crc().sum(), crc.crc().amount());
    let body = encoder.reset(Vec::new())?;
    DEFLATE.with(|d| *d.borrow_mut() = Some(encoder));
    let mut out = gzip_header(tree);
    out.extend_from_slice(&body);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(&amount.to_le_bytes());
    Ok(out)
}

/// The gzip header of `tree`'s tarball, as `GzBuilder` writes it: no mtime, the fast-compression
/// flag, OS 255 (unknown) and the comment with the files' digest.
fn gzip_header(tree: &FileTree) -> Vec<u8> {
    let mut header = vec![0x1f, 0x8b, 8, 0x10, 0, 0, 0, 0, 4, 255];
    header.extend_from_slice(comment(tree.iter()).as_bytes());
    header.push(0);
    header
}

/// The tar stream of `tree`, written to `to` entry by entry: directories and files in one sorted
/// list, each directory before what it holds, then the two zero blocks that end an archive.
fn write_tar(to: impl Write, tree: &FileTree, mtime: u64) -> std::io::Result<()> {
    let mut builder = tar::Builder::new(to);
    let mut entries: Vec<(String, Option<&crate::tree::FileEntry>)> = tree.dirs().into_iter().map(|d| (format!("{d}/"), None)).collect();
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
    builder.finish()
}

thread_local! {
    /// What `content_matches` inflates (wiped after each use).
    static INFLATED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    static DEFLATE: std::cell::RefCell<Option<DeflateEncoder<Vec<u8>>>> = const { std::cell::RefCell::new(None) };
    static INFLATE: std::cell::RefCell<zlib_rs::Inflate> = std::cell::RefCell::new(zlib_rs::Inflate::new(false, 15));
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

    fn sample() -> FileTree {
        let mut t = FileTree::new();
        t.insert("etc/kubernetes/pki/ca.crt", b"cert".repeat(300), 0o644);
        t.insert("etc/kubernetes/admin.conf", b"kubeconfig".repeat(300), 0o600);
        t
    }

    fn damaged(bytes: &[u8], tree: &FileTree) -> String {
        match compare(bytes, tree) {
            Err(Mismatch::Damaged(why)) => why,
            other => panic!("not reported as damaged: {other:?}"),
        }
    }

    #[test]
    fn only_the_exact_bytes_pass_and_each_defect_is_named() {
        let t = sample();
        let packed = tar_gz(&t, 1_700_000_000).unwrap();
        assert_eq!(compare(&packed, &t), Ok(()));
        // Packed at another clock: still the very bytes kubebundle packs of these files.
        assert_eq!(compare(&tar_gz(&t, 1_600_000_000).unwrap(), &t), Ok(()));
        // Other files, packed by kubebundle: the run's own change.
        let mut changed = t.clone();
        changed.insert("etc/kubernetes/admin.conf", b"other".to_vec(), 0o600);
        assert_eq!(compare(&packed, &changed), Err(Mismatch::Changed));
        // A wrong mode inside is another tree.
        let mut chmodded = t.clone();
        chmodded.insert("etc/kubernetes/admin.conf", b"kubeconfig".repeat(300), 0o644);
        assert_eq!(compare(&packed, &chmodded), Err(Mismatch::Changed));

        for cut in [0, 1, 10, packed.len() / 2, packed.len() - 8, packed.len() - 1] {
            let why = damaged(&packed[..cut], &t);
            assert!(why.starts_with("truncated") || (cut == 1 && why.starts_with("corrupt")), "cut at {cut}: {why}");
        }
        // A flipped byte in the deflate stream, and in the CRC.
        let mut flipped = packed.clone();
        let mid = packed.len() / 2;
        flipped[mid] ^= 0x55;
        assert!(damaged(&flipped, &t).starts_with("corrupt"), "{}", damaged(&flipped, &t));
        let mut crc = packed.clone();
        let at = packed.len() - 6;
        crc[at] ^= 1;
        assert!(damaged(&crc, &t).contains("checksum"), "{}", damaged(&crc, &t));
        let mut trailing = packed.clone();
        trailing.extend_from_slice(b"\0\0");
        assert!(damaged(&trailing, &t).contains("follow the end"), "{}", damaged(&trailing, &t));

        // The same tar stream without kubebundle's gzip header (gzip -dc | gzip): re-packed.
        let end = 10 + packed[10..].iter().position(|b| *b == 0).unwrap() + 1;
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(packed.as_slice()).read_to_end(&mut tar).unwrap();
        let gzip = |tar: &[u8]| {
            let mut other = flate2::write::GzEncoder::new(Vec::new(), Compression::best());
            other.write_all(tar).unwrap();
            other.finish().unwrap()
        };
        assert!(damaged(&gzip(&tar), &t).starts_with("re-packed: the same files, packed by another tool"), "{}", damaged(&gzip(&tar), &t));
        // The same files under kubebundle's header, with other tar headers (uid 1000): re-packed.
        let mut other_tar = Vec::new();
        let mut b = tar::Builder::new(&mut other_tar);
        for (path, f) in t.iter() {
            let mut h = header(path, f.bytes.len() as u64, f.mode, 1_700_000_000, EntryType::Regular).unwrap();
            h.set_uid(1000);
            h.set_cksum();
            b.append(&h, f.bytes.as_slice()).unwrap();
        }
        b.finish().unwrap();
        drop(b);
        let mut foreign = packed[..end].to_vec();
        foreign.extend_from_slice(&gzip(&other_tar)[10..]);
        assert!(
            damaged(&foreign, &t).starts_with("re-packed: the same files, but not packed as kubebundle packs them"),
            "{}",
            damaged(&foreign, &t)
        );
        // Only the deflate encoding differs (the header, the tar stream, CRC and length are
        // exactly kubebundle's): what it unpacks to is byte for byte what the run packs, so it is kept.
        let mut recompressed = packed[..end].to_vec();
        recompressed.extend_from_slice(&gzip(&tar)[10..]);
        assert_eq!(compare(&recompressed, &t), Ok(()));

        // Another tree's files under the first tarball's header (10 fixed bytes, then the
        // NUL-terminated comment, the same length in both): edited.
        let mut forged = packed[..end].to_vec();
        forged.extend_from_slice(&tar_gz(&changed, 1_700_000_000).unwrap()[end..]);
        assert!(damaged(&forged, &t).starts_with("edited"), "{}", damaged(&forged, &t));
        assert!(damaged(&forged, &changed).starts_with("edited"), "{}", damaged(&forged, &changed));
        let read = unpack(&forged);
        assert!(read.files.len() == 2 && !read.problems.is_empty(), "an edited tarball under the old header is not reported");
    }

    /// How tarballs were packed before (GzBuilder over a streaming tar::Builder): the same bytes.
    fn tar_gz_streaming(tree: &FileTree, mtime: u64) -> Vec<u8> {
        let gz = flate2::GzBuilder::new().mtime(0).comment(comment(tree.iter())).write(Vec::new(), Compression::fast());
        let mut builder = tar::Builder::new(gz);
        let mut entries: Vec<(String, Option<&FileEntry>)> = tree.dirs().into_iter().map(|d| (format!("{d}/"), None)).collect();
        entries.extend(tree.iter().map(|(p, f)| (p.clone(), Some(f))));
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, file) in entries {
            match file {
                None => builder.append(&header(&path, 0, 0o755, mtime, EntryType::Directory).unwrap(), std::io::empty()).unwrap(),
                Some(f) => builder
                    .append(&header(&path, f.bytes.len() as u64, f.mode, mtime, EntryType::Regular).unwrap(), f.bytes.as_slice())
                    .unwrap(),
            }
        }
        let mut gz = builder.into_inner().unwrap();
        gz.flush().unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn packing_gives_the_bytes_the_streaming_packer_gave() {
        // Sizes around the deflate window and the output buffer, text and incompressible bytes.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut noise = |n: usize| {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect::<Vec<u8>>()
        };
        for (i, size) in [0usize, 1, 511, 512, 4000, 32 << 10, 70_000, 300_000].into_iter().enumerate() {
            let mut t = FileTree::new();
            t.insert("etc/kubernetes/pki/ca.crt", b"-----BEGIN CERTIFICATE-----\n".repeat(size / 28 + 1), 0o644);
            t.insert(&format!("var/lib/kubelet/f{i}"), noise(size), 0o600);
            t.insert("etc/kubernetes/admin.conf", b"apiVersion: v1\nkind: Config\n".repeat(size / 10 + 3), 0o600);
            for mtime in [0, 1_767_225_600] {
                assert!(tar_gz(&t, mtime).unwrap() == tar_gz_streaming(&t, mtime), "size {size}: other bytes than GzBuilder's");
            }
        }
        assert!(tar_gz(&FileTree::new(), 5).unwrap() == tar_gz_streaming(&FileTree::new(), 5));
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
