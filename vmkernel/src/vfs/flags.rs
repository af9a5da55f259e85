//! open(2) flags and lseek whence values (x86-64 Linux).

pub const O_ACCMODE: u32 = 0o3;
pub const O_RDONLY: u32 = 0o0;
pub const O_WRONLY: u32 = 0o1;
pub const O_RDWR: u32 = 0o2;
pub const O_CREAT: u32 = 0o100;
pub const O_EXCL: u32 = 0o200;
pub const O_NOCTTY: u32 = 0o400;
pub const O_TRUNC: u32 = 0o1000;
pub const O_APPEND: u32 = 0o2000;
pub const O_NONBLOCK: u32 = 0o4000;
pub const O_DSYNC: u32 = 0o10000;
pub const O_LARGEFILE: u32 = 0o100000;
pub const O_DIRECTORY: u32 = 0o200000;
pub const O_NOFOLLOW: u32 = 0o400000;
pub const O_CLOEXEC: u32 = 0o2000000;
pub const O_PATH: u32 = 0o10000000;

/// Flags F_SETFL may change.
pub const SETFL_MASK: u32 = O_APPEND | O_NONBLOCK;

pub const SEEK_SET: u32 = 0;
pub const SEEK_CUR: u32 = 1;
pub const SEEK_END: u32 = 2;

pub fn readable(flags: u32) -> bool {
    matches!(flags & O_ACCMODE, O_RDONLY | O_RDWR)
}

pub fn writable(flags: u32) -> bool {
    matches!(flags & O_ACCMODE, O_WRONLY | O_RDWR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_linux() {
        let pairs = [
            (O_WRONLY, libc::O_WRONLY),
            (O_RDWR, libc::O_RDWR),
            (O_CREAT, libc::O_CREAT),
            (O_EXCL, libc::O_EXCL),
            (O_NOCTTY, libc::O_NOCTTY),
            (O_TRUNC, libc::O_TRUNC),
            (O_APPEND, libc::O_APPEND),
            (O_NONBLOCK, libc::O_NONBLOCK),
            (O_DSYNC, libc::O_DSYNC),
            (O_DIRECTORY, libc::O_DIRECTORY),
            (O_NOFOLLOW, libc::O_NOFOLLOW),
            (O_CLOEXEC, libc::O_CLOEXEC),
            (O_PATH, libc::O_PATH),
            (SEEK_CUR, libc::SEEK_CUR as u32 as i32),
            (SEEK_END, libc::SEEK_END as u32 as i32),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(ours, theirs as u32);
        }
        assert!(readable(O_RDWR) && writable(O_RDWR) && !writable(O_RDONLY) && !readable(O_WRONLY));
    }
}
