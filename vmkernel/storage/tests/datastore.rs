//! The datastore's VFS-facing operations on volumes this crate formats,
//! FAT's limits, and damaged volumes.

mod common;

use std::sync::Arc;

use common::*;
use vmk_storage::block::{BlockDevice, MemDisk};
use vmk_storage::fat::check::FatKind;
use vmk_storage::fat::{Datastore, FileKind, FixedClock, FsError, MountError, MountOptions, OpenFlags};

fn rw() -> OpenFlags {
    OpenFlags { read: true, write: true, ..Default::default() }
}

#[test]
fn file_and_directory_operations_survive_remount() {
    for (kind, size) in [(FatKind::Fat12, 4 << 20), (FatKind::Fat16, 32 << 20), (FatKind::Fat32, 80 << 20)] {
        let disk = formatted_disk(size, Some(kind), "datastore1");
        let mut ds = mount(disk.clone());
        assert_eq!(ds.fat_kind(), kind);
        assert_eq!(ds.label(), "DATASTORE1");
        assert_eq!(ds.uuid(), "1A2B-3C4D");
        ds.mkdir("/vms").unwrap();
        ds.mkdir("vms/A Virtual Machine with a long name").unwrap();
        assert_eq!(ds.mkdir("vms"), Err(FsError::Exists));
        let long = "vms/A Virtual Machine with a long name/disk-flat image.vmdk";
        let big = pattern(1, 300_000);
        write_file(&mut ds, long, &big);
        write_file(&mut ds, "notes.txt", b"hello");
        // Append, and O_EXCL on an existing file.
        let h = ds.open("notes.txt", OpenFlags { write: true, append: true, ..Default::default() }).unwrap();
        assert_eq!(ds.write_at(h, 0, b" world").unwrap(), 6);
        ds.close(h).unwrap();
        assert_eq!(
            ds.open("notes.txt", OpenFlags { write: true, create: true, exclusive: true, ..Default::default() }),
            Err(FsError::Exists)
        );
        // Writes past the end fill the gap with zeros; truncate both ways.
        let h =
            ds.open("sparse.bin", OpenFlags { read: true, write: true, create: true, ..Default::default() }).unwrap();
        ds.write_at(h, 10_000, b"x").unwrap();
        assert_eq!(ds.size(h).unwrap(), 10_001);
        let mut b = vec![1u8; 10_001];
        assert_eq!(ds.read_at(h, 0, &mut b).unwrap(), 10_001);
        assert!(b[..10_000].iter().all(|&x| x == 0));
        ds.truncate(h, 5).unwrap();
        assert_eq!(ds.size(h).unwrap(), 5);
        ds.truncate(h, 9000).unwrap();
        assert_eq!(ds.read_at(h, 8990, &mut b).unwrap(), 10);
        assert_eq!(ds.read_at(h, 9000, &mut b).unwrap(), 0);
        ds.fsync(h).unwrap();
        ds.close(h).unwrap();
        assert_eq!(ds.close(h), Err(FsError::BadHandle));
        // Rename within and across directories; rename over a file.
        ds.rename("sparse.bin", "vms/moved.bin").unwrap();
        write_file(&mut ds, "a.cfg.tmp", b"new");
        write_file(&mut ds, "a.cfg", b"old");
        ds.rename("a.cfg.tmp", "a.cfg").unwrap();
        assert_eq!(ds.stat("a.cfg.tmp"), Err(FsError::NotFound));
        ds.set_times("notes.txt", Some(NOW - 86_400 * 3), Some(NOW - 86_400)).unwrap();
        let st = ds.stat("notes.txt").unwrap();
        assert_eq!((st.kind, st.size, st.mtime, st.atime), (FileKind::File, 11, NOW - 86_400, NOW - 86_400 * 3));
        assert_eq!(st.mode, 0o100_644);
        assert_eq!(ds.stat("/vms").unwrap().kind, FileKind::Dir);
        assert_eq!(ds.unlink("vms"), Err(FsError::IsDir));
        assert_eq!(ds.rmdir("vms"), Err(FsError::NotEmpty));
        assert_eq!(ds.rmdir("notes.txt"), Err(FsError::NotDir));
        assert_eq!(ds.stat("vms/../notes.txt"), Err(FsError::Invalid));
        assert_eq!(ds.stat("notes.txt/x"), Err(FsError::NotDir));
        let fs = ds.statfs().unwrap();
        assert!(fs.free_blocks < fs.blocks && fs.blocks > 0);
        ds.unmount().unwrap();

        let mut ds = mount(disk);
        assert!(ds.messages().is_empty(), "{:?}", ds.messages());
        let mut names: Vec<String> = ds.readdir("/").unwrap().into_iter().map(|e| e.name).collect();
        names.sort();
        assert_eq!(names, ["a.cfg", "notes.txt", "vms"]);
        assert_eq!(read_file(&mut ds, long), big);
        assert_eq!(read_file(&mut ds, "NOTES.TXT"), b"hello world");
        assert_eq!(read_file(&mut ds, "a.cfg"), b"new");
        let moved = read_file(&mut ds, "vms/moved.bin");
        assert_eq!(moved.len(), 9000);
        assert!(moved[5..].iter().all(|&x| x == 0));
        ds.unlink(long).unwrap();
        ds.rmdir("vms/A Virtual Machine with a long name").unwrap();
        ds.unmount().unwrap();
    }
}

/// POSIX semantics for open files although FAT has no inodes: unlink
/// while open keeps the data for the handles until the last close (then
/// the space comes back); rename while open keeps the handles on the
/// file; a crash with an unlinked file still open leaves nothing behind
/// after the next mount; fsck.fat agrees.
#[test]
fn open_files_can_be_unlinked_and_renamed() {
    let disk = formatted_disk(8 << 20, None, "ds");
    let mut ds = mount(disk.clone());
    let free0 = ds.statfs().unwrap().free_blocks;
    let big = pattern(7, 600_000);
    write_file(&mut ds, "big", &big);
    let h = ds.open("big", rw()).unwrap();
    ds.unlink("big").unwrap();
    assert_eq!(ds.stat("big"), Err(FsError::NotFound));
    assert!(ds.readdir("/").unwrap().is_empty(), "the orphan is hidden");
    assert_eq!(ds.open(".mantle-orphans", OpenFlags::READ), Err(FsError::Denied));
    // The handle still reads and writes the file.
    let mut buf = vec![0u8; 1000];
    assert_eq!(ds.read_at(h, 500_000, &mut buf).unwrap(), 1000);
    assert_eq!(buf, big[500_000..501_000]);
    ds.write_at(h, 0, b"still here").unwrap();
    // A new file may take the name meanwhile.
    write_file(&mut ds, "big", b"new");
    assert!(ds.statfs().unwrap().free_blocks < free0 - 100);
    ds.close(h).unwrap();
    assert_eq!(read_file(&mut ds, "big"), b"new");
    ds.unlink("big").unwrap();
    // (The orphans directory, made on first use, keeps its one cluster.)
    assert_eq!(ds.statfs().unwrap().free_blocks, free0 - 1, "the unlinked file's clusters came back at its last close");

    // Rename while open: writes through the handle land in the new name.
    write_file(&mut ds, "a.log", b"0123");
    let h = ds.open("a.log", OpenFlags { write: true, append: true, ..Default::default() }).unwrap();
    ds.mkdir("d").unwrap();
    ds.rename("a.log", "d/b.log").unwrap();
    ds.write_at(h, 0, b"4567").unwrap();
    assert_eq!(ds.handle_path(h), Some("d/b.log"));
    // ... and when its directory is renamed.
    ds.rename("d", "e").unwrap();
    ds.write_at(h, 0, b"89").unwrap();
    ds.close(h).unwrap();
    assert_eq!(read_file(&mut ds, "e/b.log"), b"0123456789");
    assert_eq!(ds.stat("a.log"), Err(FsError::NotFound));

    // Rename over an open file, large (not atomic: the old file stays with
    // its handle) and small (atomic: rewritten in place).
    let old = pattern(9, 400_000);
    write_file(&mut ds, "disk.img", &old);
    write_file(&mut ds, "disk.new", &pattern(10, 400_000));
    let h = ds.open("disk.img", OpenFlags::READ).unwrap();
    ds.rename("disk.new", "disk.img").unwrap();
    let mut buf = vec![0u8; 400_000];
    assert_eq!(ds.read_at(h, 0, &mut buf).unwrap(), 400_000);
    assert_eq!(buf, old, "the open handle keeps the replaced file");
    ds.close(h).unwrap();
    assert_eq!(read_file(&mut ds, "disk.img"), pattern(10, 400_000));
    write_file(&mut ds, "cfg", b"old");
    write_file(&mut ds, "cfg.tmp", b"new!");
    let h = ds.open("cfg", OpenFlags::READ).unwrap();
    ds.rename("cfg.tmp", "cfg").unwrap();
    let mut b4 = [0u8; 4];
    assert_eq!(ds.read_at(h, 0, &mut b4).unwrap(), 4);
    assert_eq!(&b4, b"new!");
    ds.close(h).unwrap();

    // A crash while an unlinked file is open: the next mount removes it.
    let before = ds.statfs().unwrap().free_blocks;
    write_file(&mut ds, "tmpfile", &pattern(3, 300_000));
    let h = ds.open("tmpfile", OpenFlags::READ).unwrap();
    ds.unlink("tmpfile").unwrap();
    let _ = h;
    ds.sync().unwrap();
    drop(ds); // no unmount: a crash
    let mut ds = mount(disk.clone());
    assert!(ds.messages().iter().any(|m| m.contains("unlinked while open")), "{:?}", ds.messages());
    assert_eq!(ds.statfs().unwrap().free_blocks, before);
    // Unmount closes what is still open, orphans included.
    write_file(&mut ds, "t2", &pattern(4, 100_000));
    let h = ds.open("t2", OpenFlags::READ).unwrap();
    ds.unlink("t2").unwrap();
    let _ = h;
    ds.unmount().unwrap();
    let ds = mount(disk.clone());
    assert_eq!(ds.statfs().unwrap().free_blocks, before);
    assert!(!ds.messages().iter().any(|m| m.contains("unlinked while open")), "{:?}", ds.messages());
    ds.unmount().unwrap();
    fsck_clean(&disk);
}

#[test]
fn handles_share_one_file() {
    let disk = formatted_disk(8 << 20, None, "ds");
    let mut ds = mount(disk);
    let a = ds.open("log", OpenFlags { read: true, write: true, create: true, ..Default::default() }).unwrap();
    let b = ds.open("log", OpenFlags { write: true, append: true, ..Default::default() }).unwrap();
    ds.write_at(a, 0, b"0123456789").unwrap();
    ds.write_at(b, 0, b"abc").unwrap();
    assert_eq!(ds.size(a).unwrap(), 13);
    assert_eq!(ds.stat("log").unwrap().size, 13);
    let mut buf = [0u8; 3];
    assert_eq!(ds.read_at(b, 0, &mut buf), Err(FsError::BadHandle), "write-only handle read");
    ds.close(a).unwrap();
    ds.close(b).unwrap();
    assert_eq!(read_file(&mut ds, "log"), b"0123456789abc");
    // Directories open for listing, not for writing.
    ds.mkdir("d").unwrap();
    let d = ds.open("d", OpenFlags::READ).unwrap();
    assert_eq!(ds.read_at(d, 0, &mut buf), Err(FsError::IsDir));
    ds.close(d).unwrap();
    assert_eq!(ds.open("d", rw()), Err(FsError::IsDir));
    // The journal is not the user's.
    assert_eq!(ds.open(".mantle-journal", OpenFlags::READ), Err(FsError::Denied));
    assert!(ds.readdir("").unwrap().iter().all(|e| e.name != ".mantle-journal"));
}

#[test]
fn efbig_at_four_gib() {
    let disk = formatted_disk(8 << 20, None, "ds");
    let mut ds = mount(disk);
    let h = ds.open("f", OpenFlags { read: true, write: true, create: true, ..Default::default() }).unwrap();
    assert_eq!(ds.write_at(h, 0xFFFF_FFFF, b"x"), Err(FsError::FileTooBig));
    assert_eq!(ds.write_at(h, 1 << 32, b"x"), Err(FsError::FileTooBig));
    assert_eq!(ds.truncate(h, (1 << 32) + 1), Err(FsError::FileTooBig));
    assert_eq!(FsError::FileTooBig.errno(), 27);
    assert_eq!(ds.size(h).unwrap(), 0);
}

#[test]
fn full_volume_gives_enospc_and_keeps_existing_files() {
    let disk = formatted_disk(2 << 20, Some(FatKind::Fat12), "small");
    let mut ds = mount(disk.clone());
    let keep: Vec<Vec<u8>> = (0..5).map(|i| pattern(i + 10, 20_000 + i as usize * 777)).collect();
    for (i, k) in keep.iter().enumerate() {
        write_file(&mut ds, &format!("keep{i}.dat"), k);
    }
    let h = ds.open("filler", OpenFlags::WRITE_CREATE_TRUNC).unwrap();
    let chunk = pattern(99, 64 * 1024);
    let mut off = 0u64;
    let err = loop {
        match ds.write_at(h, off, &chunk) {
            Ok(n) => off += n as u64,
            Err(e) => break e,
        }
        assert!(off < 4 << 20, "wrote more than the volume holds");
    };
    assert_eq!(err, FsError::NoSpace);
    assert_eq!(err.errno(), 28);
    assert_eq!(ds.size(h).unwrap(), off);
    ds.close(h).unwrap();
    assert_eq!(ds.statfs().unwrap().free_blocks, 0);
    // Creating more fails cleanly too.
    assert!(matches!(ds.mkdir("more"), Err(FsError::NoSpace)) || ds.stat("more").is_ok());
    ds.unmount().unwrap();
    let mut ds = mount(disk);
    for (i, k) in keep.iter().enumerate() {
        assert_eq!(&read_file(&mut ds, &format!("keep{i}.dat")), k, "keep{i}.dat damaged");
    }
    let filler = read_file(&mut ds, "filler");
    assert_eq!(filler.len() as u64, off);
    assert!(filler.chunks(chunk.len()).all(|c| c == &chunk[..c.len()]));
    ds.unlink("filler").unwrap();
    write_file(&mut ds, "after", &pattern(5, 100_000));
    assert_eq!(read_file(&mut ds, "after"), pattern(5, 100_000));
}

#[test]
fn corrupt_boot_sector_is_refused_with_the_reason() {
    let disk = formatted_disk(8 << 20, None, "ds");
    let good = disk.image();
    let cases: [(usize, u8, &str); 5] = [
        (510, 0, "no boot signature"),
        (11, 3, "bad bytes per sector"),
        (13, 3, "bad sectors per cluster"),
        (16, 0, "bad number of FATs"),
        (0, 0, "no jump instruction"),
    ];
    for (at, val, want) in cases {
        let mut img = good.clone();
        img[at] = val;
        if at == 11 {
            img[12] = 0;
        }
        let d: Arc<dyn BlockDevice> = Arc::new(MemDisk::from_image(512, img));
        match Datastore::mount(cache_on(d), Arc::new(FixedClock(NOW)), MountOptions::default()) {
            Err(MountError::BadBootSector(why)) => assert!(why.contains(want), "{why}"),
            Err(e) => panic!("byte {at}: wrong error {e}"),
            Ok(_) => panic!("byte {at}: corrupt boot sector mounted"),
        }
    }
    // A volume larger than its device.
    let mut img = good.clone();
    img.truncate(4 << 20);
    let d: Arc<dyn BlockDevice> = Arc::new(MemDisk::from_image(512, img));
    let e = Datastore::mount(cache_on(d), Arc::new(FixedClock(NOW)), MountOptions::default()).err().unwrap();
    assert!(e.to_string().contains("device holds only"), "{e}");
    // All zeros, all ones.
    for fill in [0u8, 0xff] {
        let d: Arc<dyn BlockDevice> = Arc::new(MemDisk::from_image(512, vec![fill; 1 << 20]));
        assert!(matches!(
            Datastore::mount(cache_on(d), Arc::new(FixedClock(NOW)), MountOptions::default()),
            Err(MountError::BadBootSector(_))
        ));
    }
}

/// Finds FAT32 geometry fields in a boot sector.
fn fat32_layout(img: &[u8]) -> (usize, usize, usize, usize) {
    let bps = u16::from_le_bytes([img[11], img[12]]) as usize;
    let spc = img[13] as usize;
    let reserved = u16::from_le_bytes([img[14], img[15]]) as usize;
    let fats = img[16] as usize;
    let fat_sz = u32::from_le_bytes([img[36], img[37], img[38], img[39]]) as usize;
    let fat0 = reserved * bps;
    let data = (reserved + fats * fat_sz) * bps;
    (fat0, fat_sz * bps, data, spc * bps)
}

#[test]
fn looping_cluster_chain_is_repaired_or_mounted_read_only() {
    let disk = formatted_disk(80 << 20, Some(FatKind::Fat32), "loop");
    let mut ds = mount(disk.clone());
    ds.mkdir("dir").unwrap();
    // Enough entries to take several clusters of directory.
    for i in 0..200 {
        write_file(&mut ds, &format!("dir/a rather long file name number {i}.txt"), b"x");
    }
    ds.unmount().unwrap();
    let mut img = disk.image();
    let (fat0, fat_bytes, _, _) = fat32_layout(&img);
    // Find the directory's chain: the longest run of links in the FAT;
    // point its last link back at its first cluster.
    let entry = |img: &[u8], c: usize| {
        u32::from_le_bytes(img[fat0 + 4 * c..fat0 + 4 * c + 4].try_into().unwrap()) & 0x0FFF_FFFF
    };
    let mut head = 0;
    let mut best = 0;
    for c in 3..fat_bytes / 4 {
        let mut n = 0;
        let mut cur = c;
        while (2..0x0FFF_FFF8).contains(&entry(&img, cur)) && n < 1000 {
            cur = entry(&img, cur) as usize;
            n += 1;
        }
        if n > best {
            best = n;
            head = c;
        }
    }
    assert!(best >= 2, "directory should span clusters");
    let mut tail = head;
    while (2..0x0FFF_FFF8).contains(&entry(&img, tail)) {
        tail = entry(&img, tail) as usize;
    }
    let fats = img[16] as usize;
    for f in 0..fats {
        let at = fat0 + f * fat_bytes + 4 * tail;
        img[at..at + 4].copy_from_slice(&(head as u32).to_le_bytes());
    }
    // Without repair: read-only, readdir terminates.
    let d: Arc<dyn BlockDevice> = Arc::new(MemDisk::from_image(512, img.clone()));
    let mut ro = mount_with(d, MountOptions { repair: false, ..Default::default() });
    assert!(ro.is_read_only());
    let msgs = ro.messages().join("\n");
    assert!(msgs.contains("closes a loop") && msgs.contains("read-only"), "{msgs}");
    assert_eq!(ro.readdir("dir").unwrap().len(), 200);
    assert_eq!(ro.mkdir("x"), Err(FsError::ReadOnly));
    assert_eq!(read_file(&mut ro, "dir/a rather long file name number 7.txt"), b"x");
    // With repair: the loop is cut on disk; a second mount finds nothing.
    let d = Arc::new(MemDisk::from_image(512, img));
    let rw_ds = mount(d.clone());
    assert!(!rw_ds.is_read_only());
    assert!(rw_ds.messages().join("\n").contains("repaired"), "{:?}", rw_ds.messages());
    assert_eq!(rw_ds.readdir("dir").unwrap().len(), 200);
    rw_ds.unmount().unwrap();
    let again = mount(d);
    assert!(again.messages().is_empty(), "{:?}", again.messages());
}

#[test]
fn read_only_device_mounts_read_only() {
    let disk = formatted_disk(8 << 20, None, "ro");
    {
        let mut ds = mount(disk.clone());
        write_file(&mut ds, "f", b"data");
        ds.unmount().unwrap();
    }
    let ro: Arc<dyn BlockDevice> = Arc::new(MemDisk::from_image(512, disk.image()).into_read_only());
    let mut ds = mount(ro);
    assert!(ds.is_read_only());
    assert_eq!(read_file(&mut ds, "f"), b"data");
    assert_eq!(ds.open("f", rw()), Err(FsError::ReadOnly));
    assert_eq!(ds.unlink("f"), Err(FsError::ReadOnly));
    assert_eq!(ds.stat("f").unwrap().mode, 0o100_444);
    ds.unmount().unwrap();
}

fn fsck_clean(disk: &MemDisk) {
    let fsck = tool("fsck.fat", "dosfstools");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ds.img");
    std::fs::write(&img, disk.image()).unwrap();
    let out = std::process::Command::new(fsck).arg("-n").arg(&img).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains("differences"), "fsck.fat -n:\n{text}");
}

/// The periodic writeback alone (no fsync, no close, no unmount) makes a
/// file that stays open durable: its data blocks and its directory entry
/// (the size) reach the disk, so a "crash" (mounting the raw medium as it
/// is) finds it whole.
#[test]
fn periodic_writeback_makes_an_open_file_durable() {
    let disk = formatted_disk(8 << 20, None, "ds");
    let mut ds = mount(disk.clone());
    ds.mkdir("logs").unwrap();
    let h = ds.open("logs/app.log", OpenFlags { write: true, create: true, ..Default::default() }).unwrap();
    let data = pattern(7, 100_000);
    assert_eq!(ds.write_at(h, 0, &data).unwrap(), data.len());
    // The test cache's clock stands at 0: everything dirty is old enough
    // at 5 s.
    assert!(ds.flush_expired(5_000).unwrap() > 0);
    let crashed = Arc::new(MemDisk::from_image(512, disk.image()));
    let mut after = mount(crashed);
    let got = read_file(&mut after, "logs/app.log");
    assert_eq!(got.len(), data.len(), "the size in the directory entry on disk");
    assert!(got == data, "the data on disk");
    drop(after);
    ds.close(h).unwrap();
    ds.unmount().unwrap();
}
