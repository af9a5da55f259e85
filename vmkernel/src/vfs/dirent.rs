//! `struct linux_dirent64` records for getdents64.

/// Offset of d_name: d_ino u64, d_off i64, d_reclen u16, d_type u8.
const NAME_OFF: usize = 19;

/// Record length for a name: header, name, NUL, padded to 8.
pub fn reclen(name_len: usize) -> usize {
    (NAME_OFF + name_len + 1 + 7) & !7
}

/// Writes one record at the start of `buf`; None if it does not fit.
pub fn encode(buf: &mut [u8], ino: u64, next_off: i64, d_type: u8, name: &[u8]) -> Option<usize> {
    let len = reclen(name.len());
    let rec = buf.get_mut(..len)?;
    rec.fill(0);
    rec[0..8].copy_from_slice(&ino.to_le_bytes());
    rec[8..16].copy_from_slice(&next_off.to_le_bytes());
    rec[16..18].copy_from_slice(&(len as u16).to_le_bytes());
    rec[18] = d_type;
    rec[NAME_OFF..NAME_OFF + name.len()].copy_from_slice(name);
    Some(len)
}

/// One decoded record (for tests and in-kernel users).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub ino: u64,
    pub off: i64,
    pub d_type: u8,
    pub name: &'a [u8],
}

/// Decodes a buffer filled by getdents64.
pub fn decode(mut buf: &[u8]) -> alloc::vec::Vec<Record<'_>> {
    let mut out = alloc::vec::Vec::new();
    while buf.len() >= NAME_OFF {
        let len = u16::from_le_bytes([buf[16], buf[17]]) as usize;
        let name = &buf[NAME_OFF..len];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        out.push(Record {
            ino: u64::from_le_bytes(buf[0..8].try_into().unwrap()),
            off: i64::from_le_bytes(buf[8..16].try_into().unwrap()),
            d_type: buf[18],
            name: &name[..end],
        });
        buf = &buf[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_layout() {
        assert_eq!(reclen(1), 24);
        assert_eq!(reclen(4), 24);
        assert_eq!(reclen(5), 32);
        let mut buf = [0xffu8; 40];
        assert_eq!(encode(&mut buf, 7, 3, 8, b"motd"), Some(24));
        assert_eq!(&buf[0..8], &7u64.to_le_bytes());
        assert_eq!(&buf[8..16], &3i64.to_le_bytes());
        assert_eq!(&buf[16..19], &[24, 0, 8]);
        assert_eq!(&buf[19..24], b"motd\0");
        assert_eq!(buf[24], 0xff);
        assert_eq!(encode(&mut buf[..23], 7, 3, 8, b"motd"), None);
        let r = decode(&buf[..24]);
        assert_eq!(r, [Record { ino: 7, off: 3, d_type: 8, name: b"motd" }]);
    }
}
