//! Just enough qcow2 for linked clones: recognise a qcow2 image and write an
//! empty overlay whose backing file is another image (what `qemu-img create
//! -f qcow2 -b BASE -F qcow2` makes). The overlay holds no data clusters:
//! every read falls through to the base until the guest writes.
//!
//! Layout (version 2, 64 KiB clusters, all fields big-endian): cluster 0 the
//! header and the backing file name, cluster 1 the L1 table (all zero),
//! cluster 2 the refcount table, cluster 3 its one refcount block (16-bit
//! counts; clusters 0–3 in use).

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

const MAGIC: [u8; 4] = *b"QFI\xfb";
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
const HEADER_V2_LEN: usize = 72;

/// The virtual size of a qcow2 image, or None if the file is not qcow2.
pub fn virtual_size(path: &Path) -> io::Result<Option<u64>> {
    let mut h = [0u8; 32];
    let mut f = fs::File::open(path)?;
    if f.read(&mut h)? < 32 || h[..4] != MAGIC {
        return Ok(None);
    }
    let version = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    if !(2..=3).contains(&version) {
        return Ok(None);
    }
    Ok(Some(u64::from_be_bytes([h[24], h[25], h[26], h[27], h[28], h[29], h[30], h[31]])))
}

/// The backing file a qcow2 image names, if it is qcow2 and has one.
pub fn backing_file(path: &Path) -> Option<String> {
    let mut f = fs::File::open(path).ok()?;
    let mut h = [0u8; HEADER_V2_LEN];
    f.read_exact(&mut h).ok()?;
    if h[..4] != MAGIC {
        return None;
    }
    let off = u64::from_be_bytes(h[8..16].try_into().ok()?);
    let len = u32::from_be_bytes(h[16..20].try_into().ok()?) as usize;
    if off == 0 || len == 0 || len > 1023 {
        return None;
    }
    use std::io::Seek;
    f.seek(io::SeekFrom::Start(off)).ok()?;
    let mut name = vec![0u8; len];
    f.read_exact(&mut name).ok()?;
    String::from_utf8(name).ok()
}

/// The bytes of an empty overlay on `backing` (an absolute path to a qcow2
/// image of `size` bytes).
pub fn overlay_bytes(backing: &str, size: u64) -> io::Result<Vec<u8>> {
    if backing.len() > 1023 || HEADER_V2_LEN + backing.len() > CLUSTER as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "backing file name too long"));
    }
    // One L2 table maps CLUSTER / 8 clusters.
    let per_l1 = (CLUSTER / 8) * CLUSTER;
    let l1_entries = size.div_ceil(per_l1).max(1);
    if l1_entries * 8 > CLUSTER {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "image too large for a one-cluster L1 table"));
    }
    let mut b = vec![0u8; 4 * CLUSTER as usize];
    let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(0, &MAGIC);
    put(4, &2u32.to_be_bytes()); // version
    put(8, &(HEADER_V2_LEN as u64).to_be_bytes()); // backing_file_offset
    put(16, &(backing.len() as u32).to_be_bytes()); // backing_file_size
    put(20, &CLUSTER_BITS.to_be_bytes());
    put(24, &size.to_be_bytes());
    put(32, &0u32.to_be_bytes()); // crypt_method
    put(36, &(l1_entries as u32).to_be_bytes()); // l1_size
    put(40, &CLUSTER.to_be_bytes()); // l1_table_offset
    put(48, &(2 * CLUSTER).to_be_bytes()); // refcount_table_offset
    put(56, &1u32.to_be_bytes()); // refcount_table_clusters
    put(60, &0u32.to_be_bytes()); // nb_snapshots
    put(64, &0u64.to_be_bytes()); // snapshots_offset
    put(HEADER_V2_LEN, backing.as_bytes());
    put(2 * CLUSTER as usize, &(3 * CLUSTER).to_be_bytes()); // refcount block 0
    for c in 0..4 {
        put(3 * CLUSTER as usize + c * 2, &1u16.to_be_bytes());
    }
    Ok(b)
}

/// Writes an empty overlay at `path` (which must not exist) on `backing`.
pub fn create_overlay(path: &Path, backing: &Path) -> io::Result<()> {
    let size = virtual_size(backing)?.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a qcow2 image", backing.display())))?;
    let bytes = overlay_bytes(&backing.display().to_string(), size)?;
    let mut f = fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(&bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn raw_files_are_not_qcow2() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("raw.img"), vec![0u8; 4096]).unwrap();
        assert_eq!(virtual_size(&d.path().join("raw.img")).unwrap(), None);
        assert!(create_overlay(&d.path().join("o.qcow2"), &d.path().join("raw.img")).is_err());
    }

    /// The overlay checked and read by QEMU's own tools: `qemu-img check`
    /// finds no error, `qemu-img info` names the backing file, and
    /// `qemu-io` reads the base's data through the overlay and writes to
    /// the overlay without touching the base.
    #[test]
    fn qemu_reads_the_base_through_the_overlay() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("base.qcow2");
        let run = |args: &[&str]| {
            let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{} (qemu-utils) is needed: {e}", args[0]));
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "{args:?}: {text}");
            text
        };
        let b = base.to_str().unwrap();
        run(&["qemu-img", "create", "-q", "-f", "qcow2", b, "700M"]);
        run(&["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 600M 64k", b]);
        assert_eq!(virtual_size(&base).unwrap(), Some(700 << 20));
        let o = d.path().join("clone.qcow2");
        create_overlay(&o, &base).unwrap();
        let os = o.to_str().unwrap();
        run(&["qemu-img", "check", "-f", "qcow2", os]);
        assert_eq!(backing_file(&o).as_deref(), Some(b));
        assert_eq!(backing_file(&base), None);
        let info = run(&["qemu-img", "info", "-U", os]);
        assert!(info.contains(&format!("backing file: {b}")) && info.contains("700 MiB"), "{info}");
        run(&["qemu-io", "-f", "qcow2", "-c", "read -P 0xab 600M 64k", os]);
        run(&["qemu-io", "-f", "qcow2", "-c", "write -P 0xcd 600M 4k", os]);
        run(&["qemu-io", "-f", "qcow2", "-c", "read -P 0xcd 600M 4k", os]);
        run(&["qemu-io", "-f", "qcow2", "-c", "read -P 0xab 600M 4k", b]);
        run(&["qemu-img", "check", "-f", "qcow2", os]);
        assert!(create_overlay(&o, &base).is_err(), "an existing file is not overwritten");
    }
}
