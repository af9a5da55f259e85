//! Submission and completion queue bookkeeping, command encoding and
//! completion decoding: the parts of the queue protocol that need no
//! device (NVMe 1.4 §4.1, §4.2, §4.6).

/// Bytes per submission queue entry (CC.IOSQES = 6).
pub const SQ_ENTRY_BYTES: usize = 64;
/// Bytes per completion queue entry (CC.IOCQES = 4).
pub const CQ_ENTRY_BYTES: usize = 16;

/// The producer side of a submission queue: the driver owns the tail,
/// the controller reports how far it has read (SQHD) in completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmissionRing {
    entries: u16,
    tail: u16,
    head: u16,
}

impl SubmissionRing {
    /// A ring of `entries` slots (at least 2: one slot always stays empty
    /// so full and empty differ).
    pub fn new(entries: u16) -> Self {
        SubmissionRing { entries: entries.max(2), tail: 0, head: 0 }
    }

    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// The value the tail doorbell gets.
    pub fn tail(&self) -> u16 {
        self.tail
    }

    pub fn is_full(&self) -> bool {
        (self.tail + 1) % self.entries == self.head
    }

    /// Claims the slot at the tail and advances it; `None` when full.
    pub fn push(&mut self) -> Option<u16> {
        if self.is_full() {
            return None;
        }
        let slot = self.tail;
        self.tail = (self.tail + 1) % self.entries;
        Some(slot)
    }

    /// Records the controller's head pointer from a completion (SQHD).
    /// A value outside the ring is a controller bug and is ignored.
    pub fn set_head(&mut self, head: u16) {
        if head < self.entries {
            self.head = head;
        }
    }
}

/// The consumer side of a completion queue: the head the driver reads
/// next and the phase tag that marks an entry as new in this pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletionRing {
    entries: u16,
    head: u16,
    phase: bool,
}

impl CompletionRing {
    /// A fresh (zeroed) queue: the controller's first pass writes phase 1.
    pub fn new(entries: u16) -> Self {
        CompletionRing { entries: entries.max(2), head: 0, phase: true }
    }

    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// The slot to look at next.
    pub fn head(&self) -> u16 {
        self.head
    }

    /// Whether an entry whose phase bit is `phase` is new.
    pub fn is_new(&self, phase: bool) -> bool {
        phase == self.phase
    }

    /// Consumes the head entry; the phase flips at every wrap. Returns
    /// the value for the head doorbell.
    pub fn advance(&mut self) -> u16 {
        self.head += 1;
        if self.head == self.entries {
            self.head = 0;
            self.phase = !self.phase;
        }
        self.head
    }
}

/// Admin command opcodes.
pub mod admin {
    pub const DELETE_IO_SQ: u8 = 0x00;
    pub const CREATE_IO_SQ: u8 = 0x01;
    pub const DELETE_IO_CQ: u8 = 0x04;
    pub const CREATE_IO_CQ: u8 = 0x05;
    pub const IDENTIFY: u8 = 0x06;
    pub const SET_FEATURES: u8 = 0x09;
}

/// NVM command set opcodes.
pub mod nvm {
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
}

/// Identify's CNS values.
pub mod cns {
    pub const NAMESPACE: u32 = 0x00;
    pub const CONTROLLER: u32 = 0x01;
    pub const ACTIVE_NAMESPACES: u32 = 0x02;
}

const FEATURE_NUMBER_OF_QUEUES: u32 = 0x07;

/// A submission queue entry as its sixteen dwords.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Command {
    pub dw: [u32; 16],
}

impl Command {
    /// `opcode` on namespace `nsid` (PRPs, not SGLs; no fused operation).
    pub fn new(opcode: u8, nsid: u32) -> Self {
        let mut dw = [0u32; 16];
        dw[0] = opcode as u32;
        dw[1] = nsid;
        Command { dw }
    }

    pub fn opcode(&self) -> u8 {
        self.dw[0] as u8
    }

    pub fn cid(&self) -> u16 {
        (self.dw[0] >> 16) as u16
    }

    pub fn with_cid(mut self, cid: u16) -> Self {
        self.dw[0] = (self.dw[0] & 0xffff) | (cid as u32) << 16;
        self
    }

    pub fn with_prps(mut self, prp1: u64, prp2: u64) -> Self {
        self.dw[6] = prp1 as u32;
        self.dw[7] = (prp1 >> 32) as u32;
        self.dw[8] = prp2 as u32;
        self.dw[9] = (prp2 >> 32) as u32;
        self
    }

    pub fn prp1(&self) -> u64 {
        self.dw[6] as u64 | (self.dw[7] as u64) << 32
    }

    pub fn prp2(&self) -> u64 {
        self.dw[8] as u64 | (self.dw[9] as u64) << 32
    }

    /// Identify with `cns` into one 4 KiB page at `page`.
    pub fn identify(cns: u32, nsid: u32, page: u64) -> Self {
        let mut c = Command::new(admin::IDENTIFY, nsid).with_prps(page, 0);
        c.dw[10] = cns;
        c
    }

    /// Asks for `n` I/O submission and completion queues.
    pub fn set_number_of_queues(n: u16) -> Self {
        let mut c = Command::new(admin::SET_FEATURES, 0);
        let m = n.max(1) as u32 - 1;
        c.dw[10] = FEATURE_NUMBER_OF_QUEUES;
        c.dw[11] = m << 16 | m;
        c
    }

    /// A physically contiguous I/O completion queue `qid` of `entries`
    /// at `base`, interrupting on MSI-X entry `vector` when `interrupts`.
    pub fn create_io_cq(qid: u16, entries: u16, base: u64, vector: u16, interrupts: bool) -> Self {
        let mut c = Command::new(admin::CREATE_IO_CQ, 0).with_prps(base, 0);
        c.dw[10] = (entries as u32 - 1) << 16 | qid as u32;
        c.dw[11] = (vector as u32) << 16 | (interrupts as u32) << 1 | 1;
        c
    }

    /// A physically contiguous I/O submission queue `qid` completing on `cqid`.
    pub fn create_io_sq(qid: u16, entries: u16, base: u64, cqid: u16) -> Self {
        let mut c = Command::new(admin::CREATE_IO_SQ, 0).with_prps(base, 0);
        c.dw[10] = (entries as u32 - 1) << 16 | qid as u32;
        c.dw[11] = (cqid as u32) << 16 | 1;
        c
    }

    /// Reads or writes `blocks` (1..=65536) logical blocks from `lba`.
    pub fn read_write(write: bool, nsid: u32, lba: u64, blocks: u32) -> Self {
        let mut c = Command::new(if write { nvm::WRITE } else { nvm::READ }, nsid);
        c.dw[10] = lba as u32;
        c.dw[11] = (lba >> 32) as u32;
        c.dw[12] = blocks.clamp(1, 1 << 16) - 1;
        c
    }

    pub fn flush(nsid: u32) -> Self {
        Command::new(nvm::FLUSH, nsid)
    }
}

/// A completion's status field (DW3 bits 31:17): status code type and code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub code_type: u8,
    pub code: u8,
    /// Do not retry.
    pub dnr: bool,
}

impl Status {
    pub fn is_success(&self) -> bool {
        self.code_type == 0 && self.code == 0
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let what = match (self.code_type, self.code) {
            (0, 0x00) => "success",
            (0, 0x01) => "invalid command opcode",
            (0, 0x02) => "invalid field in command",
            (0, 0x04) => "data transfer error",
            (0, 0x06) => "internal error",
            (0, 0x0b) => "invalid namespace or format",
            (0, 0x80) => "LBA out of range",
            (0, 0x81) => "capacity exceeded",
            (1, 0x01) => "invalid queue identifier",
            (1, 0x02) => "invalid queue size",
            (1, 0x08) => "invalid interrupt vector",
            (2, 0x80) => "write fault",
            (2, 0x81) => "unrecovered read error",
            (0, 0x20) | (2, 0x82..=0x87) => "media error",
            _ => "error",
        };
        write!(f, "{what} (type {:#x}, code {:#04x})", self.code_type, self.code)
    }
}

/// A completion queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Command-specific result (DW0).
    pub result: u32,
    pub sq_head: u16,
    pub sq_id: u16,
    pub cid: u16,
    pub phase: bool,
    pub status: Status,
}

impl Completion {
    pub fn from_dwords(dw: [u32; 4]) -> Self {
        let status = (dw[3] >> 17) as u16;
        Completion {
            result: dw[0],
            sq_head: dw[2] as u16,
            sq_id: (dw[2] >> 16) as u16,
            cid: dw[3] as u16,
            phase: dw[3] & (1 << 16) != 0,
            status: Status { code: status as u8, code_type: ((status >> 8) & 7) as u8, dnr: status & (1 << 14) != 0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submission_ring_keeps_one_slot_free_and_wraps() {
        let mut sq = SubmissionRing::new(4);
        assert_eq!([sq.push(), sq.push(), sq.push()], [Some(0), Some(1), Some(2)]);
        assert!(sq.is_full());
        assert_eq!(sq.push(), None);
        sq.set_head(2);
        assert_eq!(sq.push(), Some(3));
        assert_eq!(sq.tail(), 0);
        assert_eq!(sq.push(), Some(0));
        assert!(sq.is_full());
        sq.set_head(9); // nonsense from a broken controller: ignored
        assert!(sq.is_full());
    }

    #[test]
    fn completion_ring_flips_phase_at_each_wrap() {
        let mut cq = CompletionRing::new(3);
        assert!(cq.is_new(true) && !cq.is_new(false));
        assert_eq!(cq.advance(), 1);
        assert_eq!(cq.advance(), 2);
        assert_eq!(cq.advance(), 0);
        assert!(cq.is_new(false) && !cq.is_new(true));
        for _ in 0..3 {
            cq.advance();
        }
        assert!(cq.is_new(true));
        assert_eq!(cq.head(), 0);
    }

    #[test]
    fn commands_encode_their_fields() {
        let c = Command::read_write(true, 1, 0x1_2345_6789, 8).with_cid(0xbeef).with_prps(0x1000, 0x2000);
        assert_eq!(c.opcode(), nvm::WRITE);
        assert_eq!(c.cid(), 0xbeef);
        assert_eq!(c.dw[1], 1);
        assert_eq!((c.dw[10], c.dw[11], c.dw[12]), (0x2345_6789, 1, 7));
        assert_eq!((c.prp1(), c.prp2()), (0x1000, 0x2000));
        let cq = Command::create_io_cq(1, 64, 0xabc000, 0, true);
        assert_eq!((cq.dw[10], cq.dw[11]), (63 << 16 | 1, 0b11));
        let sq = Command::create_io_sq(1, 64, 0xdef000, 1);
        assert_eq!((sq.dw[10], sq.dw[11]), (63 << 16 | 1, 1 << 16 | 1));
        assert_eq!(Command::set_number_of_queues(4).dw[11], 3 << 16 | 3);
        assert_eq!(Command::identify(cns::CONTROLLER, 0, 0x5000).dw[10], 1);
    }

    #[test]
    fn completions_decode_phase_cid_and_status() {
        let ok = Completion::from_dwords([7, 0, 1 << 16 | 5, 1 << 16 | 42]);
        assert_eq!((ok.result, ok.sq_head, ok.sq_id, ok.cid, ok.phase), (7, 5, 1, 42, true));
        assert!(ok.status.is_success());
        // LBA out of range (SCT 0, SC 0x80), DNR set, phase 0.
        let bad = Completion::from_dwords([0, 0, 0, (0x80 | 1 << 14) << 17 | 3]);
        assert!(!bad.phase);
        assert_eq!((bad.status.code_type, bad.status.code, bad.status.dnr), (0, 0x80, true));
        assert!(!bad.status.is_success());
        assert!(format!("{}", bad.status).starts_with("LBA out of range"));
    }
}
