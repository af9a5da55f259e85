//! The root file-system archive: cpio "newc" (SVR4, no CRC), as the Linux
//! initramfs uses. image-builder writes it (with [`Writer`]); the kernel
//! reads it from the boot module (with [`entries`]).

use alloc::vec::Vec;

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub data: &'a [u8],
}

impl Entry<'_> {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpioError {
    /// Bad magic or a header/name/data running past the end, at this offset.
    Corrupt(usize),
    /// The archive ended without a trailer.
    NoTrailer,
}

fn hex(field: &[u8]) -> Option<u32> {
    let s = core::str::from_utf8(field).ok()?;
    u32::from_str_radix(s, 16).ok()
}

const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Iterates over the entries of a newc archive, stopping at the trailer.
pub fn entries(archive: &[u8]) -> Entries<'_> {
    Entries { data: archive, off: 0, done: false }
}

pub struct Entries<'a> {
    data: &'a [u8],
    off: usize,
    done: bool,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, CpioError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.parse_one();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r.transpose()
    }
}

impl<'a> Entries<'a> {
    fn parse_one(&mut self) -> Result<Option<Entry<'a>>, CpioError> {
        let at = self.off;
        let corrupt = CpioError::Corrupt(at);
        if at >= self.data.len() {
            return Err(CpioError::NoTrailer);
        }
        let h = self.data.get(at..at + HEADER_LEN).ok_or(corrupt)?;
        if &h[..6] != MAGIC {
            return Err(corrupt);
        }
        let field = |i: usize| hex(&h[6 + i * 8..14 + i * 8]).ok_or(corrupt);
        let mode = field(1)?;
        let uid = field(2)?;
        let gid = field(3)?;
        let mtime = field(5)?;
        let size = field(6)? as usize;
        let namesize = field(11)? as usize;
        if namesize == 0 {
            return Err(corrupt);
        }
        let name_start = at + HEADER_LEN;
        let name_bytes = self.data.get(name_start..name_start + namesize - 1).ok_or(corrupt)?;
        let name = core::str::from_utf8(name_bytes).map_err(|_| corrupt)?;
        let data_start = pad4(name_start + namesize);
        let data = self.data.get(data_start..data_start + size).ok_or(corrupt)?;
        self.off = pad4(data_start + size);
        if name == TRAILER {
            return Ok(None);
        }
        Ok(Some(Entry { name: name.trim_start_matches("./"), mode, uid, gid, mtime, data }))
    }
}

/// Builds a newc archive.
#[derive(Default)]
pub struct Writer {
    out: Vec<u8>,
    ino: u32,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry. `name` is relative (no leading `/`).
    pub fn add(&mut self, name: &str, mode: u32, uid: u32, gid: u32, mtime: u32, data: &[u8]) {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let fields = [
            self.ino,
            mode,
            uid,
            gid,
            if mode & S_IFMT == S_IFDIR { 2 } else { 1 },
            mtime,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(MAGIC);
        for f in fields {
            let mut buf = [0u8; 8];
            for (i, b) in buf.iter_mut().enumerate() {
                let nib = (f >> (28 - 4 * i)) & 0xf;
                *b = b"0123456789abcdef"[nib as usize];
            }
            self.out.extend_from_slice(&buf);
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.out.resize(pad4(self.out.len()), 0);
        self.out.extend_from_slice(data);
        self.out.resize(pad4(self.out.len()), 0);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.add(TRAILER, 0, 0, 0, 0, &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = Writer::new();
        w.add("etc", S_IFDIR | 0o755, 0, 0, 1, &[]);
        w.add("etc/motd", S_IFREG | 0o644, 0, 0, 2, b"hello");
        w.add("/bin/tool", S_IFREG | 0o4755, 1000, 100, 3, &[0xaa; 13]);
        w.add("bin/sh", S_IFLNK | 0o777, 0, 0, 4, b"busybox");
        let a = w.finish();
        assert_eq!(a.len() % 4, 0);
        let e: Vec<Entry> = entries(&a).collect::<Result<_, _>>().unwrap();
        assert_eq!(e.len(), 4);
        assert!(e[0].is_dir());
        assert_eq!(e[1].name, "etc/motd");
        assert_eq!(e[1].data, b"hello");
        assert!(e[1].is_file());
        assert_eq!(e[2].name, "bin/tool");
        assert_eq!(e[2].mode & 0o7777, 0o4755);
        assert_eq!((e[2].uid, e[2].gid, e[2].mtime), (1000, 100, 3));
        assert_eq!(e[2].data.len(), 13);
        assert!(e[3].is_symlink());
    }

    #[test]
    fn truncated_and_garbage_archives_are_errors() {
        let mut w = Writer::new();
        w.add("f", S_IFREG | 0o644, 0, 0, 0, b"0123456789");
        let a = w.finish();
        let cut = &a[..HEADER_LEN + 4];
        let r: Vec<_> = entries(cut).collect();
        assert_eq!(r, vec![Err(CpioError::Corrupt(0))]);
        let no_trailer = &a[..pad4(HEADER_LEN + 2) + 12];
        let r: Vec<_> = entries(no_trailer).collect();
        assert!(r[0].is_ok());
        assert_eq!(r[1], Err(CpioError::NoTrailer));
        let r: Vec<_> = entries(b"not an archive at all").collect();
        assert_eq!(r, vec![Err(CpioError::Corrupt(0))]);
    }
}
