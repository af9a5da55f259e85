//! virtio-net over PCI, on the `virtio-drivers` crate.
//!
//! `virtio-drivers`' `VirtIONetRaw` does feature negotiation and the
//! virtqueues over its `PciTransport` (the virtio 1.0 capability layout,
//! which QEMU's `virtio-net-pci` offers both as a modern device 1af4:1041
//! and as a transitional one 1af4:1000; a legacy-only device, QEMU's
//! `disable-modern=on`, has no such capabilities and is refused with an
//! error). This crate adds what it leaves to the driver:
//! - buffers: every receive and transmit buffer is a fixed 2 KiB slot in
//!   DMA memory allocated at init; a received frame is handed up in place
//!   and its slot posted again, a frame to send is built in place — no
//!   allocation after `new`;
//! - interrupts: `virtio-drivers` does not route them; with MSI-X the
//!   queues' and configuration's vectors are set in the common
//!   configuration structure here ([`VirtioNet::route_interrupts_to_msix`]);
//!   under MSI-X the ISR is not read (a register access per interrupt for
//!   bits nothing needs); `mask_while_polling` sets the rings' "no
//!   interrupt" flag (memory, no register) so the stack polls a burst
//!   with one interrupt, and `unmask_after_polling` clears it and says
//!   whether a frame came in meanwhile (Linux's NAPI);
//! - link state from the device configuration's status field;
//! - notifications: [`NetTransport`] wraps the PCI transport so the
//!   device's "no notify" flag is honoured (without `VIRTIO_F_EVENT_IDX`,
//!   whose `virtio-drivers` test notifies on nearly every buffer) and a
//!   notification is one register write (the queues' notify offsets read
//!   once, not selected and read back on every notify);
//! - the kernel interface: `virtio_drivers::Hal` implemented in terms of
//!   `hal::Hal` ([`VirtioHal`]), PCI configuration access in terms of
//!   `pci_types::ConfigRegionAccess` ([`PciConfig`]).
#![cfg_attr(not(test), no_std)]

use core::cell::RefCell;
use core::marker::PhantomData;
use core::ptr::NonNull;

use hal::{Counters, Dma, EthernetDevice, Hal, InterruptCause, MacAddress, Mmio};
use pci::{ConfigRegionAccess, PciAddress};
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{BufferDirection, PhysAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

pub use virtio_drivers::transport::pci::VirtioPciError;

pub const VENDOR_VIRTIO: u16 = 0x1af4;
/// Transitional (0x1000) and modern (0x1041) network device IDs.
pub const DEVICE_IDS: [u16; 2] = [0x1000, 0x1041];

pub fn supports(vendor: u16, device: u16) -> bool {
    vendor == VENDOR_VIRTIO && DEVICE_IDS.contains(&device)
}

/// Descriptors per virtqueue, and so buffers per direction.
pub const QUEUE_SIZE: usize = 64;
/// One buffer slot: the virtio-net header (at most 12 bytes) plus a
/// 1514-byte frame fit, and two slots share a page.
pub const BUFFER_SIZE: usize = 2048;
/// The longest frame sent or accepted, without FCS.
pub const MAX_FRAME: usize = 1514;

/// `virtio_drivers::Hal` in terms of `hal::Hal`.
pub struct VirtioHal<H: Hal>(PhantomData<H>);

// SAFETY: every function forwards to `H`, whose implementation promises
// the same properties (zeroed contiguous DMA pages, truthful mappings and
// translations). Failure is reported as virtio-drivers expects it: DMA
// physical address 0.
unsafe impl<H: Hal> virtio_drivers::Hal for VirtioHal<H> {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        H::dma_alloc(pages).unwrap_or((0, NonNull::dangling()))
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: virtio-drivers returns exactly what `dma_alloc` gave it
        // once it no longer uses it (its contract for this function).
        unsafe { H::dma_free(paddr, vaddr, pages) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        // A BAR the kernel cannot map would yield an address that faults on
        // first use; `VirtioNet::new` maps the common configuration's BAR
        // itself first and refuses the device if that fails.
        H::mmio_map(paddr, size).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        // Every buffer this crate shares lies in its `Dma` regions, which
        // the kernel maps linearly; DMA is cache-coherent on x86.
        H::virt_to_phys(buffer.cast::<u8>().as_ptr() as usize).unwrap_or(0)
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// PCI configuration access for `virtio-drivers`, over the kernel's
/// `ConfigRegionAccess` for one segment.
pub struct PciConfig<'a, A: ConfigRegionAccess> {
    access: &'a A,
    segment: u16,
}

impl<'a, A: ConfigRegionAccess> PciConfig<'a, A> {
    pub fn new(access: &'a A, segment: u16) -> Self {
        PciConfig { access, segment }
    }

    fn address(&self, df: DeviceFunction) -> PciAddress {
        PciAddress::new(self.segment, df.bus, df.device, df.function)
    }
}

impl<A: ConfigRegionAccess> ConfigurationAccess for PciConfig<'_, A> {
    fn read_word(&self, df: DeviceFunction, register_offset: u8) -> u32 {
        // SAFETY: virtio-drivers reads header, BAR and capability
        // registers of the function it drives: no read side effects.
        unsafe { self.access.read(self.address(df), register_offset as u16) }
    }

    fn write_word(&mut self, df: DeviceFunction, register_offset: u8, data: u32) {
        // SAFETY: virtio-drivers writes the command register and BARs (to
        // size them, restoring them after) of the function it drives.
        unsafe { self.access.write(self.address(df), register_offset as u16, data) }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PciConfig { access: self.access, segment: self.segment }
    }
}

/// Why a virtio-net device could not be brought up.
#[derive(Debug)]
pub enum Error {
    /// The PCI transport refused the device (no virtio 1.0 capabilities,
    /// BAR not assigned or not mappable, ...).
    Transport(VirtioPciError),
    /// Feature negotiation or queue setup failed.
    Device(virtio_drivers::Error),
    /// The common configuration is missing, too short or in a BAR the
    /// kernel cannot map (checked before `virtio-drivers` maps it).
    CommonConfig,
    /// The PCI capability list loops.
    CapabilityLoop,
    NoMemory,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Transport(e) => write!(f, "virtio PCI transport: {e}"),
            Error::Device(e) => write!(f, "virtio device: {e}"),
            Error::CommonConfig => f.write_str("no mappable virtio 1.0 common configuration (a legacy-only device?)"),
            Error::CapabilityLoop => f.write_str("the PCI capability list loops"),
            Error::NoMemory => f.write_str("no DMA memory for the buffers"),
        }
    }
}

/// Offsets in the virtio 1.0 common configuration structure.
mod common_cfg {
    pub const MSIX_CONFIG: usize = 0x10;
    pub const QUEUE_SELECT: usize = 0x16;
    pub const QUEUE_MSIX_VECTOR: usize = 0x1a;
    pub const QUEUE_NOTIFY_OFF: usize = 0x1e;
    pub const LEN: usize = 0x38;
}
const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
/// `VIRTIO_F_EVENT_IDX`.
const F_RING_EVENT_IDX: u64 = 1 << 29;
const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;
const PCI_CAP_ID_VNDR: u8 = 0x09;
const NO_VECTOR: u16 = 0xffff;
/// Device configuration: the 6-byte MAC, then the status word.
const NET_CONFIG_STATUS: usize = 6;
const NET_S_LINK_UP: u16 = 1;
const QUEUE_RECEIVE: u16 = 0;
const QUEUE_TRANSMIT: u16 = 1;

/// Slot bookkeeping for one direction: which virtqueue token each posted
/// slot has, and which slots are free.
struct Slots {
    /// `token[slot]`: the virtqueue token of a posted slot.
    token: [Option<u16>; QUEUE_SIZE],
    /// Frame length (header included) of a posted transmit slot.
    len: [usize; QUEUE_SIZE],
}

impl Slots {
    const fn new() -> Self {
        Slots { token: [None; QUEUE_SIZE], len: [0; QUEUE_SIZE] }
    }

    fn slot_of(&self, token: u16) -> Option<usize> {
        self.token.iter().position(|t| *t == Some(token))
    }

    fn free_slot(&self) -> Option<usize> {
        self.token.iter().position(Option::is_none)
    }
}

/// `virtio-drivers`' PCI transport with two changes for the hot path:
/// `VIRTIO_F_EVENT_IDX` is not offered to the queues (they then follow the
/// device's `VRING_USED_F_NO_NOTIFY`, which QEMU sets while it works
/// through a queue: `virtio-drivers`' event-index test compares without
/// the previous index and notifies for nearly every buffer), and a
/// notification writes the queue's notify register directly (its offset
/// read once at bring-up), one register access instead of three.
pub struct NetTransport {
    pci: PciTransport,
    /// The notify structure and each queue's byte offset in it.
    notify: Option<(Mmio, [usize; 2])>,
}

impl Transport for NetTransport {
    fn device_type(&self) -> DeviceType {
        self.pci.device_type()
    }
    fn read_device_features(&mut self) -> u64 {
        self.pci.read_device_features() & !F_RING_EVENT_IDX
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        self.pci.write_driver_features(driver_features)
    }
    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.pci.max_queue_size(queue)
    }
    fn notify(&mut self, queue: u16) {
        match &self.notify {
            Some((region, offsets)) if usize::from(queue) < offsets.len() => region.write16(offsets[usize::from(queue)], queue),
            _ => self.pci.notify(queue),
        }
    }
    fn get_status(&self) -> DeviceStatus {
        self.pci.get_status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.pci.set_status(status)
    }
    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.pci.set_guest_page_size(guest_page_size)
    }
    fn requires_legacy_layout(&self) -> bool {
        self.pci.requires_legacy_layout()
    }
    fn queue_set(&mut self, queue: u16, size: u32, descriptors: PhysAddr, driver_area: PhysAddr, device_area: PhysAddr) {
        self.pci.queue_set(queue, size, descriptors, driver_area, device_area)
    }
    fn queue_unset(&mut self, queue: u16) {
        self.pci.queue_unset(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.pci.queue_used(queue)
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.pci.ack_interrupt()
    }
    fn read_config_generation(&self) -> u32 {
        self.pci.read_config_generation()
    }
    fn read_config_space<T: FromBytes + IntoBytes>(&self, offset: usize) -> virtio_drivers::Result<T> {
        self.pci.read_config_space(offset)
    }
    fn write_config_space<T: IntoBytes + Immutable>(&mut self, offset: usize, value: T) -> virtio_drivers::Result<()> {
        self.pci.write_config_space(offset, value)
    }
}

type Raw<H> = VirtIONetRaw<VirtioHal<H>, NetTransport, QUEUE_SIZE>;

struct RxState<H: Hal> {
    buffers: Dma<H>,
    slots: Slots,
    frames: u64,
    bytes: u64,
    dropped: u64,
}

struct TxState<H: Hal> {
    buffers: Dma<H>,
    slots: Slots,
    scratch: [u8; MAX_FRAME],
    frames: u64,
    bytes: u64,
    errors: u64,
}

/// A driven virtio-net device.
pub struct VirtioNet<H: Hal> {
    // Declared first so it drops first: dropping the transport resets the
    // device, which stops it using the buffers below before they are freed.
    net: RefCell<Raw<H>>,
    rx: RxState<H>,
    tx: TxState<H>,
    mac: MacAddress,
    header_len: usize,
    common_cfg: Option<Mmio>,
    device_cfg: Option<Mmio>,
    interrupts: u64,
    /// Interrupts come as MSI-X messages (the ISR need not be read).
    msix: bool,
}

/// Where a virtio structure lives: `(BAR physical address + offset, length)`.
fn virtio_structure<A: ConfigRegionAccess>(
    root: &mut PciRoot<PciConfig<'_, A>>,
    reader: &PciConfig<'_, A>,
    df: DeviceFunction,
    cfg_type: u8,
) -> Option<(u64, usize)> {
    // (A capability list that loops ends after 48 entries.)
    let mut vendor_caps = [None; 48];
    for (slot, cap) in vendor_caps.iter_mut().zip(root.capabilities(df).take(48)) {
        *slot = (cap.id == PCI_CAP_ID_VNDR).then_some((cap.offset, cap.private_header));
    }
    for (offset, header) in vendor_caps.into_iter().flatten() {
        let (cap_len, this_type) = (header as u8, (header >> 8) as u8);
        if this_type != cfg_type || cap_len < 16 {
            continue;
        }
        let bar = reader.read_word(df, offset.wrapping_add(4)) as u8;
        let bar_offset = reader.read_word(df, offset.wrapping_add(8)) as u64;
        let length = reader.read_word(df, offset.wrapping_add(12)) as u64;
        if bar > 5 {
            return None;
        }
        let (address, size) = root.bar_info(df, bar).ok()??.memory_address_size()?;
        if address == 0 || bar_offset + length > size {
            return None;
        }
        return Some((address + bar_offset, length as usize));
    }
    None
}

/// The notify structure's `notify_off_multiplier` (the word after the
/// capability's 16-byte header).
fn notify_multiplier<A: ConfigRegionAccess>(root: &mut PciRoot<PciConfig<'_, A>>, reader: &PciConfig<'_, A>, df: DeviceFunction) -> Option<u32> {
    root.capabilities(df)
        .take(48)
        .find(|c| c.id == PCI_CAP_ID_VNDR && (c.private_header >> 8) as u8 == VIRTIO_PCI_CAP_NOTIFY_CFG && c.private_header as u8 >= 20)
        .map(|c| reader.read_word(df, c.offset.wrapping_add(16)))
}

/// Maps the virtio 1.0 common configuration structure of the function at
/// `address` (for routing queue interrupts; shared with `virtio-blk`).
/// `None` for a legacy-only device or an unmappable BAR.
pub fn map_common_config<H: Hal, A: ConfigRegionAccess>(access: &A, address: PciAddress) -> Option<Mmio> {
    let df = DeviceFunction { bus: address.bus(), device: address.device(), function: address.function() };
    let reader = PciConfig::new(access, address.segment());
    let mut root = PciRoot::new(PciConfig::new(access, address.segment()));
    if root.capabilities(df).take(49).count() > 48 {
        return None;
    }
    virtio_structure(&mut root, &reader, df, VIRTIO_PCI_CAP_COMMON_CFG)
        .and_then(|(phys, len)| Mmio::map::<H>(phys, len))
        .filter(|m| m.len() >= common_cfg::LEN)
}

/// Routes the configuration-change interrupt and `queues` to MSI-X table
/// entry `entry` through the common configuration `cfg`; `false` if the
/// device refused the vector.
pub fn route_queues_to_msix(cfg: &Mmio, queues: &[u16], entry: u16) -> bool {
    cfg.write16(common_cfg::MSIX_CONFIG, entry);
    let mut ok = cfg.read16(common_cfg::MSIX_CONFIG) == entry;
    for &queue in queues {
        cfg.write16(common_cfg::QUEUE_SELECT, queue);
        cfg.write16(common_cfg::QUEUE_MSIX_VECTOR, entry);
        ok &= cfg.read16(common_cfg::QUEUE_MSIX_VECTOR) == entry;
    }
    ok && entry != NO_VECTOR
}

impl<H: Hal> VirtioNet<H> {
    /// Brings up the virtio-net function at `address`: feature
    /// negotiation, both virtqueues, every receive buffer posted.
    /// Interrupts are off until `set_interrupts_enabled(true)`. The PCI
    /// function must decode its BARs and master the bus.
    pub fn new<A: ConfigRegionAccess>(access: &A, address: PciAddress) -> Result<Self, Error> {
        let df = DeviceFunction { bus: address.bus(), device: address.device(), function: address.function() };
        let reader = PciConfig::new(access, address.segment());
        let mut root = PciRoot::new(PciConfig::new(access, address.segment()));
        // `virtio-drivers` walks the capability list without a bound: refuse
        // a list that loops (48 is the most 192 bytes can hold).
        if root.capabilities(df).take(49).count() > 48 {
            return Err(Error::CapabilityLoop);
        }
        let map = |root: &mut PciRoot<_>, cfg_type| {
            virtio_structure(root, &reader, df, cfg_type).and_then(|(phys, len)| Mmio::map::<H>(phys, len))
        };
        let common_cfg = map(&mut root, VIRTIO_PCI_CAP_COMMON_CFG).filter(|m| m.len() >= common_cfg::LEN);
        if common_cfg.is_none() {
            return Err(Error::CommonConfig);
        }
        let device_cfg = map(&mut root, VIRTIO_PCI_CAP_DEVICE_CFG);
        // Each queue's notify register: offset × multiplier in the notify
        // structure (else notifications go through virtio-drivers).
        let notify = match (map(&mut root, VIRTIO_PCI_CAP_NOTIFY_CFG), notify_multiplier(&mut root, &reader, df), &common_cfg) {
            (Some(region), Some(mult), Some(cfg)) => {
                let offset = |queue: u16| {
                    cfg.write16(common_cfg::QUEUE_SELECT, queue);
                    usize::from(cfg.read16(common_cfg::QUEUE_NOTIFY_OFF)) * mult as usize
                };
                let offsets = [offset(QUEUE_RECEIVE), offset(QUEUE_TRANSMIT)];
                offsets.iter().all(|&o| o + 2 <= region.len()).then_some((region, offsets))
            }
            _ => None,
        };
        let pci = PciTransport::new::<VirtioHal<H>, _>(&mut root, df).map_err(Error::Transport)?;
        let transport = NetTransport { pci, notify };
        let rx_buffers = Dma::for_bytes(QUEUE_SIZE * BUFFER_SIZE).ok_or(Error::NoMemory)?;
        let tx_buffers = Dma::for_bytes(QUEUE_SIZE * BUFFER_SIZE).ok_or(Error::NoMemory)?;
        let mut net = Raw::<H>::new(transport).map_err(Error::Device)?;
        net.disable_interrupts();
        let mut header = [0u8; 16];
        let header_len = net.fill_buffer_header(&mut header).map_err(Error::Device)?;
        let mac = MacAddress(net.mac_address());
        let mut dev = VirtioNet {
            net: RefCell::new(net),
            rx: RxState { buffers: rx_buffers, slots: Slots::new(), frames: 0, bytes: 0, dropped: 0 },
            tx: TxState { buffers: tx_buffers, slots: Slots::new(), scratch: [0; MAX_FRAME], frames: 0, bytes: 0, errors: 0 },
            mac,
            header_len,
            common_cfg,
            device_cfg,
            interrupts: 0,
            msix: false,
        };
        for slot in 0..QUEUE_SIZE {
            post_rx(dev.net.get_mut(), &mut dev.rx, slot).map_err(Error::Device)?;
        }
        Ok(dev)
    }

    /// Routes both queues' and the configuration-change interrupts to
    /// MSI-X table entry `entry` (the PCI function's MSI-X must be on).
    /// `false` if the device refused the vector (it reads back
    /// NO_VECTOR when it could not allocate it) or has no common
    /// configuration window.
    pub fn route_interrupts_to_msix(&mut self, entry: u16) -> bool {
        let Some(cfg) = &self.common_cfg else { return false };
        self.msix = route_queues_to_msix(cfg, &[QUEUE_RECEIVE, QUEUE_TRANSMIT], entry);
        self.msix
    }

    /// Takes back transmit slots the device has finished with.
    fn reclaim_tx(&mut self) {
        let net = self.net.get_mut();
        while let Some(token) = net.poll_transmit() {
            let Some(slot) = self.tx.slots.slot_of(token) else {
                // Not ours: nothing sensible to complete it with. Stop
                // rather than spin; the queue stays as the device left it.
                break;
            };
            let len = self.tx.slots.len[slot];
            let Some(buf) = self.tx.buffers.bytes(slot * BUFFER_SIZE, len) else { break };
            // SAFETY: `buf` is exactly the slice `transmit_begin` got for
            // this token (same slot and length), and it stays valid.
            let _ = unsafe { net.transmit_complete(token, buf) };
            self.tx.slots.token[slot] = None;
        }
    }

    /// The next used receive slot with its frame length, dropping bad ones.
    fn next_rx(&mut self) -> Option<(usize, usize)> {
        let net = self.net.get_mut();
        for _ in 0..QUEUE_SIZE {
            let token = net.poll_receive()?;
            let slot = self.rx.slots.slot_of(token)?;
            let buf = self.rx.buffers.bytes_mut(slot * BUFFER_SIZE, BUFFER_SIZE)?;
            // SAFETY: `buf` is exactly the slice `receive_begin` got for
            // this token (the whole slot), and it stays valid.
            let result = unsafe { net.receive_complete(token, buf) };
            self.rx.slots.token[slot] = None;
            match result {
                Ok((header, len)) if header == self.header_len && (14..=MAX_FRAME).contains(&len) => {
                    return Some((slot, len));
                }
                _ => {
                    self.rx.dropped += 1;
                    let _ = post_rx(net, &mut self.rx, slot);
                }
            }
        }
        None
    }
}

/// Posts receive slot `slot` to the device.
fn post_rx<H: Hal>(net: &mut Raw<H>, rx: &mut RxState<H>, slot: usize) -> virtio_drivers::Result<()> {
    let buf = rx.buffers.bytes_mut(slot * BUFFER_SIZE, BUFFER_SIZE).ok_or(virtio_drivers::Error::InvalidParam)?;
    // SAFETY: the slot lives in `rx.buffers`, which outlives the device's
    // use of it (the device is reset before the buffers drop), and the
    // driver does not touch it until the token comes back used.
    let token = unsafe { net.receive_begin(buf)? };
    if let Some(t) = rx.slots.token.get_mut(slot) {
        *t = Some(token);
    }
    Ok(())
}

/// A received frame, in its receive slot.
pub struct RxToken<'a, H: Hal> {
    net: &'a RefCell<Raw<H>>,
    rx: &'a mut RxState<H>,
    header_len: usize,
    slot: usize,
    len: usize,
}

impl<H: Hal> hal::RxToken for RxToken<'_, H> {
    fn consume<R>(self, f: impl FnOnce(&[u8]) -> R) -> R {
        let offset = self.slot * BUFFER_SIZE + self.header_len;
        // No borrow of the device is held while `f` runs: the stack may
        // send a reply from inside it.
        let result = f(self.rx.buffers.bytes(offset, self.len).unwrap_or(&[]));
        self.rx.frames += 1;
        self.rx.bytes += self.len as u64;
        match self.net.try_borrow_mut() {
            Ok(mut net) => {
                if post_rx(&mut net, self.rx, self.slot).is_err() {
                    self.rx.dropped += 1;
                }
            }
            Err(_) => self.rx.dropped += 1,
        }
        result
    }
}

/// A free transmit slot (or the scratch buffer when none was free).
pub struct TxToken<'a, H: Hal> {
    net: &'a RefCell<Raw<H>>,
    tx: &'a mut TxState<H>,
    slot: Option<usize>,
}

impl<H: Hal> hal::TxToken for TxToken<'_, H> {
    fn consume<R>(self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let tx = self.tx;
        let slot = match self.slot {
            Some(slot) if len <= MAX_FRAME => slot,
            _ => {
                tx.errors += 1;
                return f(&mut tx.scratch[..len.min(MAX_FRAME)]);
            }
        };
        let Ok(mut net) = self.net.try_borrow_mut() else {
            tx.errors += 1;
            return f(&mut tx.scratch[..len]);
        };
        let Some(buf) = tx.buffers.bytes_mut(slot * BUFFER_SIZE, BUFFER_SIZE) else {
            tx.errors += 1;
            return f(&mut tx.scratch[..len]);
        };
        let header_len = net.fill_buffer_header(buf).unwrap_or(0);
        let result = f(&mut buf[header_len..header_len + len]);
        let total = header_len + len;
        // SAFETY: the slot lives in `tx.buffers`, which outlives the
        // device's use of it, and is not touched until reclaimed.
        match unsafe { net.transmit_begin(&buf[..total]) } {
            Ok(token) => {
                tx.slots.token[slot] = Some(token);
                tx.slots.len[slot] = total;
                tx.frames += 1;
                tx.bytes += len as u64;
            }
            Err(_) => tx.errors += 1,
        }
        result
    }
}

impl<H: Hal> EthernetDevice for VirtioNet<H> {
    type RxToken<'a>
        = RxToken<'a, H>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, H>
    where
        Self: 'a;

    fn receive(&mut self) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (slot, len) = self.next_rx()?;
        self.reclaim_tx();
        let tx_slot = self.tx.slots.free_slot().filter(|_| self.net.get_mut().can_send());
        Some((
            RxToken { net: &self.net, rx: &mut self.rx, header_len: self.header_len, slot, len },
            TxToken { net: &self.net, tx: &mut self.tx, slot: tx_slot },
        ))
    }

    fn transmit(&mut self) -> Option<Self::TxToken<'_>> {
        self.reclaim_tx();
        if !self.net.get_mut().can_send() {
            return None;
        }
        let slot = self.tx.slots.free_slot()?;
        Some(TxToken { net: &self.net, tx: &mut self.tx, slot: Some(slot) })
    }

    fn mac_address(&self) -> MacAddress {
        self.mac
    }

    fn link_up(&mut self) -> bool {
        // Without the status field (VIRTIO_NET_F_STATUS) the link is up.
        match &self.device_cfg {
            Some(cfg) if cfg.len() >= NET_CONFIG_STATUS + 2 => cfg.read16(NET_CONFIG_STATUS) & NET_S_LINK_UP != 0,
            _ => true,
        }
    }

    fn max_frame_len(&self) -> usize {
        MAX_FRAME
    }

    fn acknowledge_interrupt(&mut self) -> InterruptCause {
        if self.msix {
            // An MSI-X message needs no acknowledgement, and reading the
            // ISR (a register access: an exit under emulation) would only
            // clear bits nothing looks at. Queue and configuration
            // changes share the vector: the stack polls both queues, and
            // reads the link state on its own schedule.
            self.interrupts += 1;
            return InterruptCause { rx: true, tx: true, link: false, other: false };
        }
        let status = self.net.get_mut().ack_interrupt();
        let queue = status.contains(InterruptStatus::QUEUE_INTERRUPT);
        let cause = InterruptCause {
            rx: queue,
            tx: queue,
            link: status.contains(InterruptStatus::DEVICE_CONFIGURATION_INTERRUPT),
            other: false,
        };
        if cause.any() {
            self.interrupts += 1;
        }
        cause
    }

    fn set_interrupts_enabled(&mut self, enabled: bool) {
        let net = self.net.get_mut();
        if enabled { net.enable_interrupts() } else { net.disable_interrupts() }
    }

    fn mask_while_polling(&mut self) -> bool {
        // A flag in the rings' driver areas (memory, not a register): the
        // device skips interrupts while it is set.
        self.net.get_mut().disable_interrupts();
        true
    }

    fn unmask_after_polling(&mut self) -> bool {
        self.net.get_mut().enable_interrupts();
        // Completed transmissions are taken back now (no interrupt tells of
        // those that completed while masked); a frame that arrived while
        // masked raised no interrupt: the caller polls again.
        self.reclaim_tx();
        self.net.get_mut().poll_receive().is_some()
    }

    fn counters(&self) -> Counters {
        Counters {
            rx_frames: self.rx.frames,
            rx_bytes: self.rx.bytes,
            rx_dropped: self.rx.dropped,
            tx_frames: self.tx.frames,
            tx_bytes: self.tx.bytes,
            tx_errors: self.tx.errors,
            interrupts: self.interrupts,
        }
    }

    fn model(&self) -> &'static str {
        "virtio-net"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hal::host::HostHal;
    use virtio_drivers::Hal as _;

    #[test]
    fn supported_ids() {
        assert!(supports(0x1af4, 0x1000));
        assert!(supports(0x1af4, 0x1041));
        assert!(!supports(0x1af4, 0x1001), "virtio-blk");
        assert!(!supports(0x8086, 0x10d3));
    }

    #[test]
    fn virtio_hal_forwards_to_the_kernel_hal() {
        let (phys, virt) = VirtioHal::<HostHal>::dma_alloc(2, BufferDirection::Both);
        assert_ne!(phys, 0);
        assert_eq!(phys % 4096, 0);
        // SAFETY: two fresh pages from `dma_alloc`.
        let buffer = NonNull::slice_from_raw_parts(unsafe { virt.add(100) }, 50);
        // SAFETY: the buffer lies in memory the HAL maps.
        assert_eq!(unsafe { VirtioHal::<HostHal>::share(buffer, BufferDirection::DriverToDevice) }, phys + 100);
        // SAFETY: exactly what `dma_alloc` returned, no longer used.
        assert_eq!(unsafe { VirtioHal::<HostHal>::dma_dealloc(phys, virt, 2) }, 0);
    }

    /// A virtio-net function's configuration space: plain memory.
    struct FakeFunction(std::cell::RefCell<[u32; 64]>);

    impl FakeFunction {
        /// 1af4:1041 with vendor capabilities at 0x40 -> 0x50 -> `last_next`.
        fn new(last_next: u8) -> Self {
            let mut r = [0u32; 64];
            r[0] = 0x1041_1af4;
            r[1] = 0x0010_0000; // capability list
            r[2] = 0x0200_0000;
            r[4] = 0xfe00_0000; // BAR 0, 32-bit memory
            r[13] = 0x40;
            r[0x40 / 4] = 16 << 16 | 1 << 24 | 0x50 << 8 | 0x09; // common cfg, BAR 0
            r[0x50 / 4] = 16 << 16 | 4 << 24 | (last_next as u32) << 8 | 0x09; // device cfg
            r[0x4c / 4] = 0x38;
            FakeFunction(std::cell::RefCell::new(r))
        }
    }

    impl ConfigRegionAccess for FakeFunction {
        unsafe fn read(&self, _: PciAddress, offset: u16) -> u32 {
            self.0.borrow()[(offset as usize & 0xfc) / 4]
        }
        unsafe fn write(&self, _: PciAddress, offset: u16, value: u32) {
            let i = (offset as usize & 0xfc) / 4;
            // BAR 0 decodes 4 KiB; everything else is memory.
            self.0.borrow_mut()[i] = if i == 4 { value & !0xfff } else { value };
        }
    }

    #[test]
    fn an_unmappable_common_config_is_refused_before_virtio_drivers_maps_it() {
        // The host HAL maps no MMIO: the device must be refused cleanly.
        let f = FakeFunction::new(0);
        let e = VirtioNet::<HostHal>::new(&f, PciAddress::new(0, 0, 3, 0)).err().expect("refused");
        assert!(matches!(e, Error::CommonConfig), "{e}");
        assert_eq!(f.0.borrow()[4], 0xfe00_0000, "BAR restored after sizing");
    }

    #[test]
    fn a_looping_capability_list_is_refused() {
        let f = FakeFunction::new(0x40);
        let e = VirtioNet::<HostHal>::new(&f, PciAddress::new(0, 0, 3, 0)).err().expect("refused");
        assert!(matches!(e, Error::CapabilityLoop), "{e}");
    }

    #[test]
    fn slots_map_tokens() {
        let mut s = Slots::new();
        assert_eq!(s.free_slot(), Some(0));
        s.token[0] = Some(7);
        s.token[1] = Some(3);
        assert_eq!(s.slot_of(3), Some(1));
        assert_eq!(s.slot_of(9), None);
        assert_eq!(s.free_slot(), Some(2));
        s.token = [Some(1); QUEUE_SIZE];
        assert_eq!(s.free_slot(), None);
    }

    #[test]
    fn buffers_fit_header_and_frame() {
        const { assert!(12 + MAX_FRAME <= BUFFER_SIZE) };
        const { assert!(BUFFER_SIZE >= 1526) }; // virtio-drivers' minimum receive buffer
    }
}
