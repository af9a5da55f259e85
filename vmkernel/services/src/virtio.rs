//! A VM's virtio devices: disks (`diskN.*`) and NICs (`nicN.*`) of its
//! configuration in virtio-mmio slots (disks first, then NICs; slot `i` at
//! `0xfeb0_0000 + i * 0x1000` on IOAPIC GSI `16 + i`, the layout the
//! per-VM ACPI tables declare as `LNRO0005` devices). The device models
//! are `vmk_virtio`'s; this module opens the disk images on the
//! datastores, connects NICs to the virtual switch, and wires each slot's
//! interrupt level to its IOAPIC pin. A device lives behind a sleep lock:
//! a disk request blocks the vCPU's world on datastore I/O, never a CPU.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use framework::sleep_lock::SleepLock;
use vmk_virtio::blk::Blk;
use vmk_virtio::mmio::{self, MmioDevice};
use vmk_virtio::net::Net;
use vmk_vswitch::PortId;
use vmkernel::vmk_api::VmConfig;

use crate::hv::guest_memory::GuestMemory;
use crate::net::vswitch;
use crate::image_store::VfsImageStore;

/// Guest RAM as the device models see it: RAM from 0 to its size, minus
/// the MMIO holes.
pub struct GuestRam<'a> {
    pub memory: &'a GuestMemory,
    pub holes: &'a [(u64, u64)],
}

impl vmk_virtio::GuestMemory for GuestRam<'_> {
    fn contains(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else { return false };
        end <= self.memory.size() && !self.holes.iter().any(|&(s, e)| gpa < e && s < end)
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.contains(gpa, buf.len() as u64) && self.memory.read(gpa, buf)
    }
    fn write(&self, gpa: u64, data: &[u8]) -> bool {
        self.contains(gpa, data.len() as u64) && self.memory.write(gpa, data)
    }
}

pub struct Slot {
    pub device: SleepLock<MmioDevice>,
    /// The switch port of a NIC.
    pub port: Option<PortId>,
}

/// The slots of one VM (`None`: empty).
pub struct VirtioSlots {
    pub slots: Vec<Option<Slot>>,
}

const ENOENT: i64 = 2;
const EINVAL: i64 = 22;

/// The MAC of a NIC the configuration gives none: VMware's OUI range for
/// manually assigned addresses (00:50:56:00-3f), then the VM ID and NIC index.
fn generated_mac(vm: u32, nic: usize) -> [u8; 6] {
    [0x00, 0x50, 0x56, 0x3f & (vm >> 10) as u8, (vm >> 2) as u8, ((vm & 3) << 6) as u8 | nic as u8]
}

impl VirtioSlots {
    /// Opens every disk and connects every NIC of `config` for VM `vm`.
    /// The slots `build` fills for `config` (bit `i` = slot `i`): disks
    /// from slot 0, then NICs — what the guest's DSDT declares.
    pub fn occupied(config: &VmConfig) -> u8 {
        let used = (config.disks.len() + config.nics.len()).min(mmio::SLOTS);
        ((1u16 << used) - 1) as u8
    }

    pub fn build(vm: u32, config: &VmConfig) -> Result<VirtioSlots, (i64, String)> {
        let mut slots: Vec<Option<Slot>> = (0..mmio::SLOTS).map(|_| None).collect();
        let mut built = VirtioSlots { slots: Vec::new() };
        for (i, d) in config.disks.iter().enumerate() {
            if !d.file.starts_with('/') {
                return Err((-EINVAL, format!("disk{i}: {:?}: the kernel opens absolute paths only", d.file)));
            }
            let format = vmk_vdisk::Format::parse(d.image_format()).ok_or((-EINVAL, format!("disk{i}: unknown format {:?}", d.image_format())))?;
            let backend = vmk_vdisk::open(&mut VfsImageStore, &d.file, format, d.readonly)
                .map_err(|e| (-ENOENT, format!("disk{i} {} ({}): {e}", d.file, d.image_format())))?;
            log::info!(
                "vm {vm}: disk{i} {} ({}, {} MiB{}) as virtio-blk in slot {i} (GSI {})",
                d.file,
                d.image_format(),
                backend.len() >> 20,
                if d.readonly { ", read-only" } else { "" },
                mmio::slot_gsi(i)
            );
            let blk = Blk::new(backend, &format!("{}-disk{i}", config.name));
            slots[i] = Some(Slot { device: SleepLock::new(MmioDevice::new(i, Box::new(blk))), port: None });
        }
        for (j, n) in config.nics.iter().enumerate() {
            let slot = config.disks.len() + j;
            if n.model != "virtio-net" {
                return Err((-EINVAL, format!("nic{j}: model {:?}: the VMM offers virtio-net only", n.model)));
            }
            let mac = vmkernel::vmk_api::parse_unicast_mac(&n.mac).unwrap_or_else(|| generated_mac(vm, j));
            let port = match vswitch::connect(&n.network, &format!("{}.nic{j}", config.name), vm, slot) {
                Ok(p) => p,
                Err(e) => {
                    built.slots = slots;
                    drop(built);
                    return Err((-ENOENT, format!("nic{j}: {e}")));
                }
            };
            log::info!(
                "vm {vm}: nic{j} {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} on {:?} (port {port}) as virtio-net in slot {slot} (GSI {})",
                mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], n.network, mmio::slot_gsi(slot)
            );
            slots[slot] = Some(Slot { device: SleepLock::new(MmioDevice::new(slot, Box::new(Net::new(mac)))), port: Some(port) });
        }
        built.slots = slots;
        Ok(built)
    }

    pub fn get(&self, slot: usize) -> Option<&Slot> {
        self.slots.get(slot)?.as_ref()
    }

    /// Every device back to its power-on state (VM reset or power-off).
    pub fn reset_all(&self) {
        for s in self.slots.iter().flatten() {
            s.device.lock().host_reset();
        }
    }
}

impl Drop for VirtioSlots {
    fn drop(&mut self) {
        for s in self.slots.iter().flatten() {
            if let Some(p) = s.port {
                vswitch::disconnect(p);
            }
        }
    }
}
