//! /dev: a ramfs holding device nodes, plus the character devices they
//! open (registered with the Vfs by rdev, as Linux's chrdev table).

use alloc::sync::Arc;

use super::facade::Vfs;
use super::inode::{Device, FileSystem, NewAttr, NodeKind};
use super::mount::MountFlags;
use super::ramfs::RamFs;
use super::tty::Tty;
use super::types::*;
use super::{Errno, Result};

pub const NULL: u64 = makedev(1, 3);
pub const ZERO: u64 = makedev(1, 5);
pub const RANDOM: u64 = makedev(1, 8);
pub const URANDOM: u64 = makedev(1, 9);
pub const TTY: u64 = makedev(5, 0);
pub const CONSOLE: u64 = makedev(5, 1);

/// Random bytes for /dev/random and /dev/urandom (RDRAND, a seeded CSPRNG,
/// ...), supplied by the kernel.
pub trait RandomSource: Send + Sync {
    fn fill(&self, buf: &mut [u8]);
}

pub struct Null;
pub struct Zero;
pub struct Random(pub Arc<dyn RandomSource>);
/// A tty as a device: /dev/console and /dev/tty.
pub struct TtyDevice(pub Arc<Tty>);

impl Device for Null {
    fn read(&self, _: u64, _: &mut [u8]) -> Result<usize> {
        Ok(0)
    }
    fn write(&self, _: u64, data: &[u8]) -> Result<usize> {
        Ok(data.len())
    }
}

impl Device for Zero {
    fn read(&self, _: u64, buf: &mut [u8]) -> Result<usize> {
        buf.fill(0);
        Ok(buf.len())
    }
    fn write(&self, _: u64, data: &[u8]) -> Result<usize> {
        Ok(data.len())
    }
}

impl Device for Random {
    fn read(&self, _: u64, buf: &mut [u8]) -> Result<usize> {
        self.0.fill(buf);
        Ok(buf.len())
    }
    /// Writing "adds entropy" on Linux; here it is accepted and dropped.
    fn write(&self, _: u64, data: &[u8]) -> Result<usize> {
        Ok(data.len())
    }
}

impl Device for TtyDevice {
    fn read(&self, _: u64, buf: &mut [u8]) -> Result<usize> {
        self.0.read(buf)
    }
    fn write(&self, _: u64, data: &[u8]) -> Result<usize> {
        Ok(self.0.write(data))
    }
    fn ioctl(&self, cmd: u32, arg: u64, mem: &mut dyn UserMemory) -> Result<i64> {
        self.0.ioctl(cmd, arg, mem)
    }
    fn poll(&self) -> PollEvents {
        self.0.poll()
    }
    fn seekable(&self) -> bool {
        false
    }
}

/// Builds /dev, registers its devices and mounts it (making the /dev
/// directory if the root archive has none).
pub fn install(
    vfs: &Vfs,
    clock: Arc<dyn Clock>,
    random: Arc<dyn RandomSource>,
    console: Arc<Tty>,
) -> Result<Arc<RamFs>> {
    let fs = RamFs::new(clock);
    let root = fs.root();
    let attr = |perm| NewAttr { perm, uid: 0, gid: 0 };
    let nodes: [(&[u8], u64, u32); 6] = [
        (b"null", NULL, 0o666),
        (b"zero", ZERO, 0o666),
        (b"random", RANDOM, 0o666),
        (b"urandom", URANDOM, 0o666),
        (b"tty", TTY, 0o666),
        (b"console", CONSOLE, 0o600),
    ];
    for (name, rdev, perm) in nodes {
        root.create(name, NodeKind::CharDevice(rdev), attr(perm))?;
    }
    root.create(b"shm", NodeKind::Dir, attr(0o1777))?;
    for (name, target) in [
        (&b"fd"[..], &b"/proc/self/fd"[..]),
        (b"stdin", b"/proc/self/fd/0"),
        (b"stdout", b"/proc/self/fd/1"),
        (b"stderr", b"/proc/self/fd/2"),
    ] {
        root.create(name, NodeKind::Symlink(target), attr(0o777))?;
    }
    vfs.register_device(NULL, Arc::new(Null));
    vfs.register_device(ZERO, Arc::new(Zero));
    vfs.register_device(RANDOM, Arc::new(Random(random.clone())));
    vfs.register_device(URANDOM, Arc::new(Random(random)));
    vfs.register_device(TTY, Arc::new(TtyDevice(console.clone())));
    vfs.register_device(CONSOLE, Arc::new(TtyDevice(console)));
    let cred = Credentials::root();
    match vfs.mkdir(&cred, &vfs.root(), b"/dev", 0o755) {
        Ok(_) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    vfs.mount_at(b"/dev", fs.clone(), "devtmpfs", MountFlags::default())?;
    Ok(fs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::flags::*;
    use crate::vfs::testutil::{CaptureSink, FakeMem};
    use crate::vfs::tty::termios::TIOCGWINSZ;

    struct Counter(spin::Mutex<u8>);
    impl RandomSource for Counter {
        fn fill(&self, buf: &mut [u8]) {
            let mut c = self.0.lock();
            for b in buf {
                *c = c.wrapping_add(1);
                *b = *c;
            }
        }
    }

    fn setup() -> (Vfs, Arc<Tty>, Arc<CaptureSink>) {
        let clock: Arc<dyn Clock> = Arc::new(FixedClock(Timespec::from_secs(7)));
        let vfs = Vfs::new(RamFs::new(clock.clone()), "rootfs");
        let sink = CaptureSink::new();
        let tty = Tty::new(sink.clone());
        install(&vfs, clock, Arc::new(Counter(spin::Mutex::new(0))), tty.clone()).unwrap();
        (vfs, tty, sink)
    }

    #[test]
    fn null_zero_random() {
        let (v, _, _) = setup();
        let u = Credentials::user(1000, 1000);
        let r = v.root();
        let null = v.open(&u, &r, b"/dev/null", O_RDWR, 0).unwrap();
        assert_eq!(null.read(&mut [1; 8]), Ok(0));
        assert_eq!(null.write(b"gone"), Ok(4));
        let st = null.stat();
        assert_eq!((st.mode, st.rdev), (S_IFCHR | 0o666, libc::makedev(1, 3)));
        let zero = v.open(&u, &r, b"/dev/zero", O_RDONLY, 0).unwrap();
        let mut b = [9u8; 5];
        assert_eq!(zero.read(&mut b), Ok(5));
        assert_eq!(b, [0; 5]);
        let rnd = v.open(&u, &r, b"/dev/urandom", O_RDONLY, 0).unwrap();
        assert_eq!(rnd.read(&mut b), Ok(5));
        assert_eq!(b, [1, 2, 3, 4, 5]);
        assert_eq!(v.open(&u, &r, b"/dev/console", O_RDWR, 0).err(), Some(Errno::EACCES));
        let names = v.list(&v.resolve(&u, &r, b"/dev", true).unwrap()).unwrap();
        assert!(names.iter().any(|n| n == b"tty") && names.iter().any(|n| n == b"stdin"));
        assert_eq!(v.readlink(&u, &r, b"/dev/fd").unwrap(), b"/proc/self/fd");
    }

    #[test]
    fn console_is_the_tty() {
        let (v, tty, sink) = setup();
        let f = v.open(&Credentials::root(), &v.root(), b"/dev/console", O_RDWR, 0).unwrap();
        assert_eq!(f.write(b"# \n"), Ok(3));
        assert_eq!(sink.take(), b"# \r\n");
        assert_eq!(f.read(&mut [0; 8]), Err(Errno::EAGAIN));
        assert_eq!(f.poll(), PollEvents::OUT);
        for &b in b"id\r" {
            tty.input(b);
        }
        assert!(f.poll().contains(PollEvents::IN));
        let mut b = [0u8; 8];
        assert_eq!(f.read(&mut b), Ok(3));
        assert_eq!(&b[..3], b"id\n");
        assert_eq!(f.lseek(0, SEEK_SET), Err(Errno::ESPIPE));
        let mut m = FakeMem::new(0, 8);
        assert_eq!(f.ioctl(TIOCGWINSZ, 0, &mut m), Ok(0));
        assert_eq!(m.bytes[2], 80);
        let null = v.open(&Credentials::root(), &v.root(), b"/dev/null", O_RDONLY, 0).unwrap();
        assert_eq!(null.ioctl(TIOCGWINSZ, 0, &mut m), Err(Errno::ENOTTY));
    }
}
