//! Test doubles for the kernel hooks.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use spin::Mutex;

use super::tty::TtySink;
use super::types::UserMemory;
use super::{Errno, Result};

/// Collects terminal output.
#[derive(Default)]
pub struct CaptureSink(pub Mutex<Vec<u8>>);

impl CaptureSink {
    pub fn new() -> Arc<CaptureSink> {
        Arc::new(CaptureSink::default())
    }
    pub fn take(&self) -> Vec<u8> {
        core::mem::take(&mut *self.0.lock())
    }
}

impl TtySink for CaptureSink {
    fn write(&self, bytes: &[u8]) {
        self.0.lock().extend_from_slice(bytes);
    }
}

/// A flat user address space starting at `base`.
pub struct FakeMem {
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl FakeMem {
    pub fn new(base: u64, len: usize) -> FakeMem {
        FakeMem { base, bytes: vec![0; len] }
    }
    fn range(&self, addr: u64, len: usize) -> Result<core::ops::Range<usize>> {
        let start = addr.checked_sub(self.base).ok_or(Errno::EFAULT)? as usize;
        let end = start.checked_add(len).filter(|&e| e <= self.bytes.len()).ok_or(Errno::EFAULT)?;
        Ok(start..end)
    }
}

impl UserMemory for FakeMem {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<()> {
        let r = self.range(addr, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<()> {
        let r = self.range(addr, data.len())?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }
}
