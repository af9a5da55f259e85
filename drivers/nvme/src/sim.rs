//! A simulated NVMe controller for host tests: registers behind
//! `hal::Registers`, queues and data followed through "physical"
//! addresses (the host HAL's are the virtual ones). Commands run when
//! their doorbell is written.

use std::cell::RefCell;
use std::collections::BTreeMap;

use hal::Registers;
use hal::host::HostHal;

use super::*;

const BS: usize = 512;

#[derive(Default)]
struct Queue {
    base: u64,
    entries: u16,
    /// SQ: next entry to fetch; CQ: next slot to post.
    index: u16,
    phase: bool,
    cqid: u16,
}

#[derive(Default)]
struct State {
    regs: BTreeMap<usize, u32>,
    sqs: BTreeMap<u16, Queue>,
    cqs: BTreeMap<u16, Queue>,
    disk: Vec<u8>,
    flushes: u32,
    /// Transfers seen: (opcode, PRP2 was a list).
    transfers: Vec<(u8, bool)>,
    log: Vec<u8>,
}

pub struct Sim {
    state: RefCell<State>,
    pub vwc: bool,
    pub write_protected: bool,
    pub mdts: u8,
    /// Commands with this opcode on the I/O queue are never completed.
    pub hang_opcode: Option<u8>,
    /// CAP as the controller reports it.
    pub cap: u64,
}

impl Sim {
    pub fn new(blocks: usize) -> Self {
        // MQES 2047, CQR, TO 15 (7.5 s), DSTRD 0, CSS NVM, MPSMIN 0.
        let cap = 0x7ff | 1 << 16 | 0xf << 24 | 1 << 37;
        Sim {
            state: RefCell::new(State { disk: vec![0; blocks * BS], ..Default::default() }),
            vwc: true,
            write_protected: false,
            mdts: 7,
            hang_opcode: None,
            cap,
        }
    }

    fn mem_read(addr: u64, buf: &mut [u8]) {
        // SAFETY: host "physical" addresses are the driver's own live DMA
        // allocations (HostHal), and the ranges come from commands the
        // driver built for them.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) }
    }

    fn mem_write(addr: u64, data: &[u8]) {
        // SAFETY: as in `mem_read`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) }
    }

    /// The data pages of a transfer of `len` bytes (PRP1, PRP2 or a list).
    fn segments(prp1: u64, prp2: u64, len: usize) -> (Vec<(u64, usize)>, bool) {
        let first = (4096 - prp1 % 4096) as usize;
        if len <= first {
            return (vec![(prp1, len)], false);
        }
        let mut segs = vec![(prp1, first)];
        let mut rest = len - first;
        if rest <= 4096 {
            segs.push((prp2, rest));
            return (segs, false);
        }
        let mut i = 0;
        while rest > 0 {
            let mut e = [0u8; 8];
            Self::mem_read(prp2 + 8 * i, &mut e);
            let n = rest.min(4096);
            segs.push((u64::from_le_bytes(e), n));
            rest -= n;
            i += 1;
        }
        (segs, true)
    }

    fn execute(&self, s: &mut State, qid: u16, dw: [u32; 16]) -> (u32, u16) {
        let opcode = dw[0] as u8;
        let prp1 = dw[6] as u64 | (dw[7] as u64) << 32;
        let prp2 = dw[8] as u64 | (dw[9] as u64) << 32;
        let ok = (0, 0);
        if qid == 0 {
            match opcode {
                queue::admin::IDENTIFY => {
                    let mut page = vec![0u8; 4096];
                    match dw[10] {
                        cns::CONTROLLER => {
                            page[4..24].copy_from_slice(b"SIMSERIAL0001       ");
                            page[24..64].copy_from_slice(b"Mantle simulated NVMe                   ");
                            page[64..72].copy_from_slice(b"1.0     ");
                            page[77] = self.mdts;
                            page[516] = 1;
                            page[525] = self.vwc as u8;
                        }
                        cns::ACTIVE_NAMESPACES => page[0] = 1,
                        cns::NAMESPACE if dw[1] == 1 => {
                            let n = (s.disk.len() / BS) as u64;
                            page[0..8].copy_from_slice(&n.to_le_bytes());
                            page[8..16].copy_from_slice(&n.to_le_bytes());
                            page[99] = self.write_protected as u8;
                            page[130] = 9;
                        }
                        _ => return (0, 0x0b),
                    }
                    Self::mem_write(prp1, &page);
                    ok
                }
                queue::admin::SET_FEATURES => ok,
                queue::admin::CREATE_IO_CQ => {
                    let q = Queue { base: prp1, entries: (dw[10] >> 16) as u16 + 1, phase: true, ..Default::default() };
                    s.cqs.insert(dw[10] as u16, q);
                    ok
                }
                queue::admin::CREATE_IO_SQ => {
                    if !s.cqs.contains_key(&((dw[11] >> 16) as u16)) {
                        return (0, 1 << 8);
                    }
                    let q = Queue { base: prp1, entries: (dw[10] >> 16) as u16 + 1, cqid: (dw[11] >> 16) as u16, ..Default::default() };
                    s.sqs.insert(dw[10] as u16, q);
                    ok
                }
                _ => (0, 0x01),
            }
        } else {
            match opcode {
                queue::nvm::FLUSH => {
                    s.flushes += 1;
                    ok
                }
                queue::nvm::READ | queue::nvm::WRITE => {
                    let lba = dw[10] as usize | (dw[11] as usize) << 32;
                    let len = ((dw[12] & 0xffff) as usize + 1) * BS;
                    if (lba + len / BS) * BS > s.disk.len() {
                        return (0, 0x80);
                    }
                    let (segs, list) = Self::segments(prp1, prp2, len);
                    s.transfers.push((opcode, list));
                    let mut at = lba * BS;
                    for (addr, n) in segs {
                        if opcode == queue::nvm::READ {
                            Self::mem_write(addr, &s.disk[at..at + n]);
                        } else {
                            let mut b = vec![0; n];
                            Self::mem_read(addr, &mut b);
                            s.disk[at..at + n].copy_from_slice(&b);
                        }
                        at += n;
                    }
                    ok
                }
                _ => (0, 0x01),
            }
        }
    }

    fn ring(&self, qid: u16, tail: u16) {
        let mut s = self.state.borrow_mut();
        loop {
            let Some(sq) = s.sqs.get(&qid) else { return };
            if sq.index == tail {
                return;
            }
            let (base, index, entries, cqid) = (sq.base, sq.index, sq.entries, sq.cqid);
            let mut raw = [0u8; 64];
            Self::mem_read(base + index as u64 * 64, &mut raw);
            let dw: [u32; 16] = std::array::from_fn(|i| u32::from_le_bytes(raw[4 * i..4 * i + 4].try_into().unwrap()));
            let next = (index + 1) % entries;
            if let Some(sq) = s.sqs.get_mut(&qid) {
                sq.index = next;
            }
            s.log.push(dw[0] as u8);
            if qid != 0 && self.hang_opcode == Some(dw[0] as u8) {
                continue;
            }
            let (result, status) = self.execute(&mut s, qid, dw);
            let cq = s.cqs.get_mut(&cqid).expect("completion queue");
            let slot = cq.base + cq.tail_offset();
            let dw3 = (status as u32) << 17 | (cq.phase as u32) << 16 | (dw[0] >> 16);
            let mut raw = [0u8; 16];
            raw[0..4].copy_from_slice(&result.to_le_bytes());
            raw[8..12].copy_from_slice(&((qid as u32) << 16 | next as u32).to_le_bytes());
            raw[12..16].copy_from_slice(&dw3.to_le_bytes());
            Self::mem_write(slot, &raw);
            cq.index += 1;
            if cq.index == cq.entries {
                cq.index = 0;
                cq.phase = !cq.phase;
            }
        }
    }

    pub fn disk(&self) -> Vec<u8> {
        self.state.borrow().disk.clone()
    }
    pub fn flushes(&self) -> u32 {
        self.state.borrow().flushes
    }
    pub fn transfers(&self) -> Vec<(u8, bool)> {
        self.state.borrow().transfers.clone()
    }
    pub fn opcodes(&self) -> Vec<u8> {
        self.state.borrow().log.clone()
    }
    pub fn enabled(&self) -> bool {
        self.read32(reg::CC) & reg::CC_EN != 0
    }
}

impl Queue {
    fn tail_offset(&self) -> u64 {
        self.index as u64 * 16
    }
}

impl Registers for Sim {
    fn read32(&self, offset: usize) -> u32 {
        match offset {
            reg::CAP => self.cap as u32,
            0x04 => (self.cap >> 32) as u32,
            reg::VS => 0x0001_0400,
            reg::CSTS => {
                let s = self.state.borrow();
                let cc = s.regs.get(&reg::CC).copied().unwrap_or(0);
                let shst = if cc & reg::CC_SHN_NORMAL != 0 { reg::CSTS_SHST_DONE } else { 0 };
                (cc & reg::CC_EN) | shst
            }
            _ => self.state.borrow().regs.get(&offset).copied().unwrap_or(0),
        }
    }

    fn write32(&self, offset: usize, value: u32) {
        if offset >= reg::DOORBELLS {
            let n = (offset - reg::DOORBELLS) / 4;
            if n.is_multiple_of(2) {
                self.ring((n / 2) as u16, value as u16);
            }
            return;
        }
        let mut s = self.state.borrow_mut();
        let was = s.regs.get(&reg::CC).copied().unwrap_or(0);
        s.regs.insert(offset, value);
        if offset == reg::CC && value & reg::CC_EN != 0 && was & reg::CC_EN == 0 {
            let r = |s: &State, o: usize| s.regs.get(&o).copied().unwrap_or(0) as u64;
            let aqa = r(&s, reg::AQA);
            let (asq, acq) = (r(&s, reg::ASQ) | r(&s, reg::ASQ + 4) << 32, r(&s, reg::ACQ) | r(&s, reg::ACQ + 4) << 32);
            s.sqs.clear();
            s.cqs.clear();
            s.sqs.insert(0, Queue { base: asq, entries: (aqa & 0xfff) as u16 + 1, ..Default::default() });
            s.cqs.insert(0, Queue { base: acq, entries: ((aqa >> 16) & 0xfff) as u16 + 1, phase: true, ..Default::default() });
        }
    }
}

fn polled(done: &mut dyn FnMut() -> bool) -> bool {
    done()
}

fn bring_up(sim: &Sim) -> Result<Nvme<HostHal, &Sim>, Error> {
    Nvme::new(sim, &mut polled)
}

#[test]
fn brings_up_identifies_and_creates_the_io_queues() {
    let sim = Sim::new(4096);
    let nvme = bring_up(&sim).unwrap();
    let id = nvme.identity();
    assert_eq!(id.model(), "Mantle simulated NVMe");
    assert_eq!(id.serial(), "SIMSERIAL0001");
    assert_eq!(id.firmware(), "1.0");
    assert_eq!(id.version, (1, 4));
    assert_eq!((id.nsid, id.block_size, id.blocks), (1, 512, 4096));
    assert!(!id.read_only && id.volatile_cache);
    assert_eq!(id.max_transfer, BOUNCE_BYTES);
    use queue::admin::*;
    assert_eq!(sim.opcodes(), [IDENTIFY, IDENTIFY, IDENTIFY, SET_FEATURES, CREATE_IO_CQ, CREATE_IO_SQ]);
}

#[test]
fn reads_and_writes_through_prp_lists_and_flushes() {
    let sim = Sim::new(8192);
    let mut nvme = bring_up(&sim).unwrap();
    // 300 KiB: more than the bounce buffer (two commands), lists in both.
    let data: Vec<u8> = (0..300 * 1024).map(|i| (i * 7 + i / 4096) as u8).collect();
    nvme.write(10, &data, &mut polled).unwrap();
    assert_eq!(&sim.disk()[10 * 512..10 * 512 + data.len()], &data[..]);
    let mut back = vec![0; data.len()];
    nvme.read(10, &mut back, &mut polled).unwrap();
    assert_eq!(back, data);
    // One block, two pages (PRP2 a page), many pages (a list).
    let mut small = vec![0; 512];
    nvme.read(10, &mut small, &mut polled).unwrap();
    assert_eq!(small, data[..512]);
    let mut two = vec![0; 8192];
    nvme.read(11, &mut two, &mut polled).unwrap();
    assert_eq!(two, data[512..512 + 8192]);
    let t = sim.transfers();
    assert_eq!(t.iter().filter(|(_, list)| *list).count(), 4);
    assert_eq!(t.len(), 6);
    nvme.flush(&mut polled).unwrap();
    assert_eq!(sim.flushes(), 1);
    assert_eq!(nvme.requests(), 7);
    // The I/O queue wraps several times (64 entries, phase flips).
    for i in 0..200u64 {
        nvme.write(i, &[i as u8; 512], &mut polled).unwrap();
    }
    let mut b = [0; 512];
    nvme.read(199, &mut b, &mut polled).unwrap();
    assert_eq!(b, [199; 512]);
}

#[test]
fn bad_requests_are_errors() {
    let sim = Sim::new(64);
    let mut nvme = bring_up(&sim).unwrap();
    let mut b = vec![0; 1024];
    assert_eq!(nvme.read(63, &mut b, &mut polled), Err(Error::OutOfRange));
    assert_eq!(nvme.read(u64::MAX, &mut b, &mut polled), Err(Error::OutOfRange));
    assert_eq!(nvme.write(0, &[0; 100], &mut polled), Err(Error::Unaligned));
    assert_eq!(nvme.read(0, &mut [], &mut polled), Err(Error::Unaligned));
    assert!(nvme.read(62, &mut b, &mut polled).is_ok());
}

#[test]
fn mdts_limits_the_transfer_size() {
    let mut sim = Sim::new(4096);
    sim.mdts = 2; // 16 KiB
    let mut nvme = bring_up(&sim).unwrap();
    assert_eq!(nvme.identity().max_transfer, 16 * 1024);
    nvme.write(0, &vec![5; 64 * 1024], &mut polled).unwrap();
    assert_eq!(sim.transfers().len(), 4);
    assert_eq!(&sim.disk()[..64 * 1024], &vec![5; 64 * 1024][..]);
}

#[test]
fn write_protected_namespace_is_read_only_and_no_cache_means_no_flush() {
    let mut sim = Sim::new(64);
    sim.write_protected = true;
    sim.vwc = false;
    let mut nvme = bring_up(&sim).unwrap();
    assert!(nvme.read_only());
    assert_eq!(nvme.write(0, &[0; 512], &mut polled), Err(Error::ReadOnly));
    nvme.flush(&mut polled).unwrap();
    assert_eq!(sim.flushes(), 0);
}

#[test]
fn unusable_controllers_are_reported() {
    let mut sim = Sim::new(64);
    sim.cap &= !(1 << 37);
    assert_eq!(bring_up(&sim).err(), Some(Error::Unsupported("no NVM command set")));
    sim.cap = u64::MAX;
    assert!(matches!(bring_up(&sim).err(), Some(Error::Unsupported(_))));
    let mut sim = Sim::new(64);
    sim.cap |= 1 << 48; // 8 KiB minimum pages
    assert!(matches!(bring_up(&sim).err(), Some(Error::Unsupported(_))));
    let empty = Sim::new(0);
    assert_eq!(bring_up(&empty).err(), Some(Error::NoNamespace));
}

#[test]
fn a_hung_command_disables_the_controller() {
    let mut sim = Sim::new(64);
    sim.hang_opcode = Some(queue::nvm::READ);
    let mut nvme = bring_up(&sim).unwrap();
    let mut b = [0; 512];
    let mut gives_up = |done: &mut dyn FnMut() -> bool| done();
    assert_eq!(nvme.read(0, &mut b, &mut gives_up), Err(Error::Timeout("read")));
    assert!(!sim.enabled());
    assert_eq!(nvme.write(0, &[0; 512], &mut polled), Err(Error::Failed));
    assert_eq!(nvme.flush(&mut polled), Err(Error::Failed));
}

#[test]
fn shutdown_waits_for_shst() {
    let sim = Sim::new(64);
    let mut nvme = bring_up(&sim).unwrap();
    nvme.shutdown(&mut polled).unwrap();
    assert_eq!(sim.read32(reg::CC) & reg::CC_SHN_NORMAL, reg::CC_SHN_NORMAL);
    drop(nvme);
    assert!(!sim.enabled());
}
