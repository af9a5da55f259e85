use super::*;
use crate::vfs::flags::*;
use crate::vfs::ramfs::RamFs;
use crate::vfs::{MountFlags, OpenFile, Vfs, dirent};
use alloc::string::ToString;
use alloc::vec;

struct Fake {
    vfs_mounts: Mutex<Vec<MountInfo>>,
    current: Mutex<u32>,
}

impl ProcProvider for Fake {
    fn pids(&self) -> Vec<u32> {
        vec![7, 1, 300]
    }
    fn current_pid(&self) -> u32 {
        *self.current.lock()
    }
    fn process(&self, pid: u32) -> Option<ProcessInfo> {
        self.pids().contains(&pid).then(|| ProcessInfo {
            pid,
            comm: if pid == 1 { "init".to_string() } else { "sh".to_string() },
            state: 'R',
            ppid: if pid == 1 { 0 } else { 1 },
            uid: if pid == 300 { 1000 } else { 0 },
            cmdline: vec![b"/bin/sh".to_vec(), b"-l".to_vec()],
            exe: b"/bin/busybox".to_vec(),
            num_threads: 1,
            ..Default::default()
        })
    }
    fn meminfo(&self) -> MemInfo {
        MemInfo { total_kb: 1 << 20, free_kb: 1 << 19, available_kb: 1 << 19, ..Default::default() }
    }
    fn stat(&self) -> SystemStat {
        SystemStat {
            cpus: vec![CpuTimes { idle: 5, ..Default::default() }],
            processes: 3,
            ..Default::default()
        }
    }
    fn uptime(&self) -> Uptime {
        Uptime { uptime_cs: 150, idle_cs: 100 }
    }
    fn loadavg(&self) -> LoadAvg {
        LoadAvg { load_x100: [0, 0, 0], runnable: 1, total: 3, last_pid: 300 }
    }
    fn mounts(&self) -> Vec<MountInfo> {
        self.vfs_mounts.lock().clone()
    }
    fn kernel_cmdline(&self) -> String {
        "loglevel=info hostd.root_password=x".into()
    }
}

fn setup() -> (Vfs, Arc<Fake>) {
    let clock: Arc<dyn Clock> = Arc::new(FixedClock(Timespec::from_secs(1)));
    let vfs = Vfs::new(RamFs::new(clock), "rootfs");
    let cred = Credentials::root();
    vfs.mkdir(&cred, &vfs.root(), b"/proc", 0o555).unwrap();
    let fake = Arc::new(Fake { vfs_mounts: Mutex::new(Vec::new()), current: Mutex::new(7) });
    vfs.mount_at(b"/proc", ProcFs::new(fake.clone()), "proc", MountFlags::default()).unwrap();
    *fake.vfs_mounts.lock() = vfs.mounts();
    (vfs, fake)
}

fn cat(v: &Vfs, path: &[u8]) -> Result<Vec<u8>> {
    let f = v.open(&Credentials::user(1000, 1000), &v.root(), path, O_RDONLY, 0)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn names(f: &OpenFile) -> Vec<Vec<u8>> {
    let mut buf = [0u8; 4096];
    let n = f.getdents64(&mut buf).unwrap();
    dirent::decode(&buf[..n]).iter().map(|r| r.name.to_vec()).collect()
}

#[test]
fn global_files() {
    let (v, _) = setup();
    let m = cat(&v, b"/proc/meminfo").unwrap();
    assert!(m.starts_with(b"MemTotal:        1048576 kB\n"));
    assert_eq!(cat(&v, b"/proc/uptime").unwrap(), b"1.50 1.00\n");
    assert!(cat(&v, b"/proc/stat").unwrap().starts_with(b"cpu  0 0 0 5 "));
    assert_eq!(cat(&v, b"/proc/loadavg").unwrap(), b"0.00 0.00 0.00 1/3 300\n");
    assert_eq!(
        cat(&v, b"/proc/mounts").unwrap(),
        b"rootfs / ramfs rw 0 0\nproc /proc proc rw 0 0\n"
    );
    let st = v.stat(&Credentials::root(), &v.root(), b"/proc/meminfo").unwrap();
    assert_eq!((st.mode, st.size), (S_IFREG | 0o444, 0));
    let w = v.open(&Credentials::root(), &v.root(), b"/proc/meminfo", O_WRONLY, 0).unwrap();
    assert_eq!(w.write(b"x"), Err(Errno::EACCES));
    let u = Credentials::user(1000, 1000);
    assert_eq!(v.open(&u, &v.root(), b"/proc/meminfo", O_WRONLY, 0).err(), Some(Errno::EACCES));
    assert_eq!(cat(&v, b"/proc/nothing").err(), Some(Errno::ENOENT));
}

#[test]
fn listing_and_pids() {
    let (v, _) = setup();
    let d = v.open(&Credentials::root(), &v.root(), b"/proc", O_RDONLY | O_DIRECTORY, 0).unwrap();
    let n = names(&d);
    let want: Vec<&[u8]> = vec![
        b".", b"..", b"meminfo", b"uptime", b"stat", b"loadavg", b"mounts", b"diskstats", b"cmdline", b"self", b"net", b"1",
        b"7", b"300",
    ];
    assert_eq!(n, want);
    assert_eq!(cat(&v, b"/proc/cmdline").unwrap(), b"loglevel=info hostd.root_password=x\n");
    // /proc/net lists its files; without a network stack they are absent.
    let d = v.open(&Credentials::root(), &v.root(), b"/proc/net", O_RDONLY | O_DIRECTORY, 0).unwrap();
    assert_eq!(names(&d)[2..], [b"dev".to_vec(), b"route".to_vec(), b"tcp".to_vec(), b"udp".to_vec(), b"unix".to_vec(), b"vswitch".to_vec()]);
    assert_eq!(cat(&v, b"/proc/net/dev").err(), Some(Errno::ENOENT));
    assert_eq!(cat(&v, b"/proc/net/nothing").err(), Some(Errno::ENOENT));
    let d =
        v.open(&Credentials::root(), &v.root(), b"/proc/300", O_RDONLY | O_DIRECTORY, 0).unwrap();
    assert_eq!(
        names(&d)[2..],
        [b"stat".to_vec(), b"cmdline".to_vec(), b"status".to_vec(), b"exe".to_vec()]
    );
    assert_eq!(d.stat().uid, 1000);
    assert_eq!(cat(&v, b"/proc/300/cmdline").unwrap(), b"/bin/sh\0-l\0");
    assert!(cat(&v, b"/proc/1/stat").unwrap().starts_with(b"1 (init) R 0 "));
    assert!(cat(&v, b"/proc/7/status").unwrap().starts_with(b"Name:\tsh\n"));
    assert_eq!(cat(&v, b"/proc/2/stat").err(), Some(Errno::ENOENT));
    assert_eq!(cat(&v, b"/proc/007/stat").err(), Some(Errno::ENOENT));
    let up = v.chdir(&Credentials::root(), &v.root(), b"/proc/7/..").unwrap();
    assert_eq!(v.path_of(&up).unwrap(), b"/proc");
}

#[test]
fn self_and_exe_links() {
    let (v, fake) = setup();
    let r = v.root();
    let root = Credentials::root();
    assert_eq!(v.readlink(&root, &r, b"/proc/self").unwrap(), b"7");
    assert!(cat(&v, b"/proc/self/stat").unwrap().starts_with(b"7 (sh) "));
    *fake.current.lock() = 300;
    assert!(cat(&v, b"/proc/self/stat").unwrap().starts_with(b"300 (sh) "));
    assert_eq!(v.readlink(&root, &r, b"/proc/self/exe").unwrap(), b"/bin/busybox");
    assert_eq!(v.lstat(&root, &r, b"/proc/self/exe").unwrap().mode & S_IFMT, S_IFLNK);
}
