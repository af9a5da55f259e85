//! Contents of a ramfs regular file: sparse 4 KiB pages (holes read as
//! zeros), charged against the file system's page budget.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::vfs::{Errno, Result};

pub const PAGE: usize = 4096;
/// Largest file size accepted (EFBIG beyond); keeps page indices small.
pub const MAX_FILE_SIZE: u64 = 1 << 40;

/// Pages in use and the limit for one file system (ENOSPC beyond).
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub fn new(limit_pages: usize) -> Self {
        Budget { used: AtomicUsize::new(0), limit: limit_pages }
    }
    fn take(&self) -> Result<()> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < self.limit).then_some(u + 1)
            })
            .map(|_| ())
            .map_err(|_| Errno::ENOSPC)
    }
    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
    pub fn used_pages(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

pub struct FileData {
    pages: Vec<Option<Box<[u8]>>>,
    size: u64,
    budget: Arc<Budget>,
}

impl FileData {
    pub fn new(budget: Arc<Budget>) -> Self {
        FileData { pages: Vec::new(), size: 0, budget }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn allocated_pages(&self) -> usize {
        self.pages.iter().filter(|p| p.is_some()).count()
    }

    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        if offset >= self.size {
            return 0;
        }
        let n = buf.len().min((self.size - offset) as usize);
        let mut done = 0;
        while done < n {
            let pos = offset as usize + done;
            let (pi, po) = (pos / PAGE, pos % PAGE);
            let chunk = (PAGE - po).min(n - done);
            let dst = &mut buf[done..done + chunk];
            match self.pages.get(pi).and_then(|p| p.as_ref()) {
                Some(page) => dst.copy_from_slice(&page[po..po + chunk]),
                None => dst.fill(0),
            }
            done += chunk;
        }
        n
    }

    /// Writes as much as fits; ENOSPC/EFBIG only when nothing was written.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<usize> {
        if offset >= MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        let data = &data[..data.len().min((MAX_FILE_SIZE - offset) as usize)];
        let mut done = 0;
        while done < data.len() {
            let pos = offset as usize + done;
            let (pi, po) = (pos / PAGE, pos % PAGE);
            let chunk = (PAGE - po).min(data.len() - done);
            if self.pages.len() <= pi {
                self.pages.resize_with(pi + 1, || None);
            }
            if self.pages[pi].is_none() {
                if let Err(e) = self.budget.take() {
                    if done == 0 {
                        return Err(e);
                    }
                    break;
                }
                self.pages[pi] = Some(vec![0u8; PAGE].into_boxed_slice());
            }
            let page = self.pages[pi].as_mut().expect("page just ensured");
            page[po..po + chunk].copy_from_slice(&data[done..done + chunk]);
            done += chunk;
        }
        self.size = self.size.max(offset + done as u64);
        Ok(done)
    }

    pub fn truncate(&mut self, len: u64) -> Result<()> {
        if len > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        if len < self.size {
            let keep = (len as usize).div_ceil(PAGE);
            let freed = self.pages.iter().skip(keep).filter(|p| p.is_some()).count();
            self.pages.truncate(keep);
            self.budget.give(freed);
            // Bytes past the new end in the last page must read as zero if
            // the file grows again.
            if let Some(Some(page)) = self.pages.get_mut(len as usize / PAGE) {
                page[len as usize % PAGE..].fill(0);
            }
        }
        self.size = len;
        Ok(())
    }
}

impl Drop for FileData {
    fn drop(&mut self) {
        self.budget.give(self.allocated_pages());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_write_read_truncate() {
        let b = Arc::new(Budget::new(usize::MAX));
        let mut f = FileData::new(b.clone());
        assert_eq!(f.write_at(10_000, b"xyz").unwrap(), 3);
        assert_eq!(f.size(), 10_003);
        assert_eq!(b.used_pages(), 1);
        let mut buf = [1u8; 8];
        assert_eq!(f.read_at(9_998, &mut buf), 5);
        assert_eq!(&buf[..5], b"\0\0xyz");
        f.truncate(10_001).unwrap();
        f.truncate(20_000).unwrap();
        assert_eq!(f.read_at(9_999, &mut buf), 8);
        assert_eq!(&buf[..4], b"\0x\0\0");
        f.truncate(0).unwrap();
        assert_eq!(b.used_pages(), 0);
        drop(f);
    }

    #[test]
    fn budget_gives_enospc_and_partial_writes() {
        let b = Arc::new(Budget::new(2));
        let mut f = FileData::new(b.clone());
        assert_eq!(f.write_at(0, &[7u8; 3 * PAGE]).unwrap(), 2 * PAGE);
        assert_eq!(f.write_at(2 * PAGE as u64, b"a"), Err(Errno::ENOSPC));
        assert_eq!(f.write_at(MAX_FILE_SIZE, b"a"), Err(Errno::EFBIG));
        drop(f);
        assert_eq!(b.used_pages(), 0);
    }
}
