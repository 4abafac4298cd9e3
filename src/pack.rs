//! Reproducible node tarballs: sorted entries, uid/gid 0, one fixed mtime, exact modes,
//! relative paths only, and a gzip header without a timestamp of its own.

use std::io::Write;

use flate2::{Compression, GzBuilder};
use tar::{EntryType, Header};

use crate::output::FileTree;

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

/// Packs `tree` (paths relative to the node's /) into a .tar.gz held in memory.
pub fn tar_gz(tree: &FileTree, mtime: u64) -> std::io::Result<Vec<u8>> {
    let gz = GzBuilder::new().mtime(0).write(Vec::new(), Compression::default());
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

#[cfg(test)]
mod tests {
    use super::*;

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
