//! Physical frame allocator: one bit per 4 KiB frame.
//!
//! The bitmap lives in physical memory carved out at boot (the kernel has no
//! heap yet), so the allocator borrows it as a plain slice; host tests give
//! it a vector. A set bit means "in use or not RAM". Single frames come
//! from a rotating hint (O(1) amortised); contiguous runs (the heap, DMA
//! buffers, guest memory chunks) from a first-fit scan.

pub const FRAME_SIZE: u64 = 4096;

#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Address is not frame aligned or beyond the bitmap.
    OutOfRange(u64),
    /// The frame was already free.
    DoubleFree(u64),
}

pub struct FrameAllocator<'a> {
    bits: &'a mut [u64],
    frames: u64,
    free: u64,
    managed: u64,
    hint: usize,
    block_hint: usize,
}

impl<'a> FrameAllocator<'a> {
    /// Words of bitmap needed to cover physical memory up to `max_phys`.
    pub fn words_for(max_phys: u64) -> usize {
        max_phys.div_ceil(FRAME_SIZE).div_ceil(64) as usize
    }

    /// An allocator over `bits` with every frame marked in use.
    pub fn new(bits: &'a mut [u64]) -> Self {
        bits.fill(!0);
        let frames = bits.len() as u64 * 64;
        Self { bits, frames, free: 0, managed: 0, hint: 0, block_hint: 0 }
    }

    fn is_used(&self, f: u64) -> bool {
        self.bits[(f / 64) as usize] & (1 << (f % 64)) != 0
    }
    fn set(&mut self, f: u64, used: bool) {
        let w = &mut self.bits[(f / 64) as usize];
        if used {
            *w |= 1 << (f % 64);
        } else {
            *w &= !(1 << (f % 64));
        }
    }

    /// Marks the whole frames inside `[start, end)` free (RAM from the map).
    pub fn add_free(&mut self, start: u64, end: u64) {
        let first = start.div_ceil(FRAME_SIZE);
        let last = (end / FRAME_SIZE).min(self.frames);
        for f in first..last {
            if self.is_used(f) {
                self.set(f, false);
                self.free += 1;
                self.managed += 1;
            }
        }
    }

    /// Marks every frame touching `[start, end)` in use (kernel image,
    /// modules, firmware areas). Returns how many were free before.
    pub fn reserve(&mut self, start: u64, end: u64) -> u64 {
        let first = start / FRAME_SIZE;
        let last = end.div_ceil(FRAME_SIZE).min(self.frames);
        let mut n = 0;
        for f in first..last {
            if !self.is_used(f) {
                self.set(f, true);
                self.free -= 1;
                n += 1;
            }
        }
        n
    }

    /// Allocates one frame, returning its physical address.
    pub fn alloc(&mut self) -> Option<u64> {
        let words = self.bits.len();
        for i in 0..words {
            let w = (self.hint + i) % words;
            if self.bits[w] != !0 {
                let bit = (!self.bits[w]).trailing_zeros() as u64;
                let f = w as u64 * 64 + bit;
                self.set(f, true);
                self.free -= 1;
                self.hint = w;
                return Some(f * FRAME_SIZE);
            }
        }
        None
    }

    /// Allocates `count` contiguous frames whose first frame is aligned to
    /// `align` bytes (a power of two, at least one frame).
    pub fn alloc_contiguous(&mut self, count: u64, align: u64) -> Option<u64> {
        if count == 0 {
            return None;
        }
        let step = (align / FRAME_SIZE).max(1);
        let mut f = 0;
        while f + count <= self.frames {
            match (f..f + count).rev().find(|&g| self.is_used(g)) {
                None => {
                    for g in f..f + count {
                        self.set(g, true);
                    }
                    self.free -= count;
                    return Some(f * FRAME_SIZE);
                }
                // Skip past the used frame, keeping the alignment.
                Some(used) => f = (used + 1).div_ceil(step) * step,
            }
        }
        None
    }

    /// Allocates one naturally aligned block of `words * 64` frames (2 MiB
    /// for 8 words: a large page for guest RAM), scanning whole bitmap
    /// words from a rotating hint of its own so repeated calls stay cheap.
    pub fn alloc_block(&mut self, words: usize) -> Option<u64> {
        let blocks = self.bits.len() / words;
        for i in 0..blocks {
            let b = (self.block_hint + i) % blocks;
            let w = &mut self.bits[b * words..(b + 1) * words];
            if w.iter().all(|&x| x == 0) {
                w.fill(!0);
                self.free -= words as u64 * 64;
                self.block_hint = b;
                return Some((b * words) as u64 * 64 * FRAME_SIZE);
            }
        }
        None
    }

    pub fn free_frame(&mut self, phys: u64) -> Result<(), FrameError> {
        if !phys.is_multiple_of(FRAME_SIZE) || phys / FRAME_SIZE >= self.frames {
            return Err(FrameError::OutOfRange(phys));
        }
        let f = phys / FRAME_SIZE;
        if !self.is_used(f) {
            return Err(FrameError::DoubleFree(phys));
        }
        self.set(f, false);
        self.free += 1;
        Ok(())
    }

    pub fn free_contiguous(&mut self, phys: u64, count: u64) -> Result<(), FrameError> {
        for i in 0..count {
            self.free_frame(phys + i * FRAME_SIZE)?;
        }
        Ok(())
    }

    /// Frames currently free.
    pub fn free_frames(&self) -> u64 {
        self.free
    }

    /// Frames of RAM handed to the allocator (free or allocated since).
    pub fn managed_frames(&self) -> u64 {
        self.managed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc_over(mem: u64) -> FrameAllocator<'static> {
        let bits = vec![0u64; FrameAllocator::words_for(mem)].leak();
        FrameAllocator::new(bits)
    }

    #[test]
    fn starts_full_and_frees_only_whole_frames() {
        let mut a = alloc_over(1 << 20);
        assert_eq!(a.alloc(), None);
        a.add_free(0x1800, 0x4800); // frames 2 and 3 only
        assert_eq!(a.free_frames(), 2);
        let x = a.alloc().unwrap();
        let y = a.alloc().unwrap();
        assert_eq!([x.min(y), x.max(y)], [0x2000, 0x3000]);
        assert_eq!(a.alloc(), None);
    }

    #[test]
    fn reserve_excludes_frames() {
        let mut a = alloc_over(1 << 20);
        a.add_free(0, 1 << 20);
        assert_eq!(a.reserve(0x1000, 0x1001), 1);
        assert_eq!(a.free_frames(), 255);
        assert_eq!(a.managed_frames(), 256);
        for _ in 0..255 {
            assert_ne!(a.alloc().unwrap(), 0x1000);
        }
        assert_eq!(a.alloc(), None);
    }

    #[test]
    fn contiguous_respects_holes_and_alignment() {
        let mut a = alloc_over(4 << 20);
        a.add_free(0, 4 << 20);
        a.reserve(0x3000, 0x4000);
        let run = a.alloc_contiguous(8, 0x10000).unwrap();
        assert_eq!(run, 0x10000);
        let run2 = a.alloc_contiguous(3, 0x1000).unwrap();
        assert_eq!(run2, 0);
        assert_eq!(a.alloc_contiguous(2048, 0x1000), None);
        a.free_contiguous(run, 8).unwrap();
        assert_eq!(a.alloc_contiguous(8, 0x10000), Some(0x10000));
    }

    #[test]
    fn aligned_blocks_skip_partly_used_ones() {
        let mut a = alloc_over(8 << 20);
        a.add_free(0x1000, 8 << 20); // frame 0 stays used: block 0 is not whole
        let total = a.free_frames();
        assert_eq!(a.alloc_block(8), Some(2 << 20));
        assert_eq!(a.alloc_block(8), Some(4 << 20));
        assert_eq!(a.alloc_block(8), Some(6 << 20));
        assert_eq!(a.alloc_block(8), None, "block 0 has a used frame");
        assert_eq!(a.free_frames(), total - 3 * 512);
        a.free_contiguous(4 << 20, 512).unwrap();
        a.alloc_contiguous(1, 0x1000).unwrap(); // frame 1, in block 0
        assert_eq!(a.alloc_block(8), Some(4 << 20), "a freed block is found again");
        a.free_frame(6 << 20).unwrap();
        a.free_contiguous(2 << 20, 512).unwrap();
        let f = a.alloc_contiguous(1, 0x1000).unwrap();
        assert!(f < 2 << 20);
        assert_eq!(a.alloc_block(8), Some(2 << 20));
        assert_eq!(a.alloc_block(8), None, "block 3 is missing one frame only, still not whole");
    }

    #[test]
    fn double_free_and_range_errors() {
        let mut a = alloc_over(1 << 20);
        a.add_free(0, 1 << 20);
        let f = a.alloc().unwrap();
        a.free_frame(f).unwrap();
        assert_eq!(a.free_frame(f), Err(FrameError::DoubleFree(f)));
        assert_eq!(a.free_frame(0x123), Err(FrameError::OutOfRange(0x123)));
        assert_eq!(a.free_frame(1 << 30), Err(FrameError::OutOfRange(1 << 30)));
    }

    #[test]
    fn alloc_free_round_trip_keeps_counts() {
        let mut a = alloc_over(8 << 20);
        a.add_free(0x100000, 8 << 20);
        let before = a.free_frames();
        let v: Vec<u64> = (0..1000).map(|_| a.alloc().unwrap()).collect();
        let mut s = v.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 1000, "no frame handed out twice");
        for f in v {
            a.free_frame(f).unwrap();
        }
        assert_eq!(a.free_frames(), before);
    }
}
