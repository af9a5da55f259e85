//! The kernel heap: `talc`, growing on demand by claiming contiguous runs of
//! frames through the direct map.

use core::alloc::Layout;
use talc::{OomHandler, Span, Talc, Talck};

use super::{FRAMES, phys_to_virt};
use vmkernel::frames::FRAME_SIZE;

const INITIAL: usize = 4 << 20;
const GROW_MIN: usize = 4 << 20;

pub struct GrowFromFrames;

impl OomHandler for GrowFromFrames {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        let need = (layout.size() + layout.align() + 4096).next_multiple_of(FRAME_SIZE as usize);
        // Prefer a big run; when memory is fragmented (user pages spread
        // everywhere) settle for the smallest run that fits the request.
        let mut want = need.max(GROW_MIN);
        loop {
            // Never called while FRAMES is held: the frame allocator itself
            // does not allocate from the heap.
            let run = FRAMES.lock().as_mut().ok_or(())?.alloc_contiguous((want as u64) / FRAME_SIZE, FRAME_SIZE);
            if let Some(phys) = run {
                // SAFETY: the frames were just allocated for the heap and are
                // mapped by the direct map; they are never returned.
                return unsafe { talc.claim(Span::from_base_size(phys_to_virt(phys) as *mut u8, want)) }.map(|_| ());
            }
            if want == need {
                return Err(());
            }
            want = (want / 2).max(need);
        }
    }
}

#[global_allocator]
static ALLOCATOR: Talck<spin::Mutex<()>, GrowFromFrames> = Talc::new(GrowFromFrames).lock();

pub fn init() {
    // The first allocation grows the heap through the OOM handler; do one
    // now so a broken heap shows up at boot, not later.
    let v: alloc::vec::Vec<u8> = alloc::vec::Vec::with_capacity(INITIAL / 2);
    drop(v);
}

/// Bytes currently claimed by the heap and bytes in use.
pub fn stats() -> (usize, usize) {
    let c = *ALLOCATOR.lock().get_counters();
    (c.claimed_bytes, c.allocated_bytes)
}
