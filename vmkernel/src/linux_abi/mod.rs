//! The Linux x86-64 user ABI as user worlds see it: system-call numbers,
//! errno values, signal numbers and frames, the structures that cross the
//! user/kernel boundary, and flag constants.
//!
//! Names follow the Linux headers so a reader can grep for them. Structures
//! are plain Rust values with `encode`/`decode` to and from their exact
//! little-endian byte images, so the kernel never reinterprets user memory as
//! a Rust type (no `unsafe`, no padding surprises). Host tests compare sizes,
//! offsets and numbers with the host's `libc` crate.

pub mod auxv;
pub mod epoll;
pub mod errno;
pub mod eventfd;
pub mod flags;
pub mod signal;
pub mod syscall;
pub mod types;

#[cfg(test)]
mod tests;

use alloc::vec::Vec;

/// A structure with a fixed-size byte image in user memory.
pub trait Abi: Sized {
    /// `sizeof` the C structure on x86-64.
    const SIZE: usize;
    /// Writes the image into `out[..SIZE]` (padding bytes become zero).
    fn encode(&self, out: &mut [u8]);
    /// Reads a value from `b[..SIZE]`; `None` when `b` is too short.
    fn decode(b: &[u8]) -> Option<Self>;

    fn to_bytes(&self) -> Vec<u8> {
        let mut v = alloc::vec![0u8; Self::SIZE];
        self.encode(&mut v);
        v
    }
}

// Little-endian field access. Callers check lengths once (`SIZE`), so these
// index directly and panic only on a programming error.
pub(crate) fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
pub(crate) fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}
pub(crate) fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// A field type that has a little-endian image (integers and small arrays).
pub trait Field: Copy {
    const LEN: usize;
    fn put(self, b: &mut [u8], off: usize);
    fn get(b: &[u8], off: usize) -> Self;
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            const LEN: usize = core::mem::size_of::<$t>();
            fn put(self, b: &mut [u8], off: usize) {
                b[off..off + Self::LEN].copy_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8], off: usize) -> Self {
                let mut a = [0u8; core::mem::size_of::<$t>()];
                a.copy_from_slice(&b[off..off + Self::LEN]);
                <$t>::from_le_bytes(a)
            }
        }
    )*};
}
int_field!(u8, u16, u32, u64, i16, i32, i64);

impl<const N: usize> Field for [u8; N] {
    const LEN: usize = N;
    fn put(self, b: &mut [u8], off: usize) {
        b[off..off + N].copy_from_slice(&self);
    }
    fn get(b: &[u8], off: usize) -> Self {
        let mut a = [0u8; N];
        a.copy_from_slice(&b[off..off + N]);
        a
    }
}

impl<const N: usize> Field for [u64; N] {
    const LEN: usize = 8 * N;
    fn put(self, b: &mut [u8], off: usize) {
        for (i, v) in self.iter().enumerate() {
            put_u64(b, off + 8 * i, *v);
        }
    }
    fn get(b: &[u8], off: usize) -> Self {
        core::array::from_fn(|i| get_u64(b, off + 8 * i))
    }
}

/// Declares a plain structure with explicit byte offsets (as in the C header
/// on x86-64), its `Abi` image, and `offset_of(name)` for layout tests.
macro_rules! abi_struct {
    ($(#[$m:meta])* pub struct $name:ident [$size:expr] {
        $($(#[$fm:meta])* pub $f:ident : $t:ty = $off:expr,)*
    }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name { $($(#[$fm])* pub $f: $t,)* }

        impl $name {
            /// Byte offset of a field by name (layout tests, debugging).
            #[allow(dead_code)]
            pub fn offset_of(field: &str) -> Option<usize> {
                match field { $(stringify!($f) => Some($off),)* _ => None }
            }
        }

        impl $crate::linux_abi::Abi for $name {
            const SIZE: usize = $size;
            fn encode(&self, b: &mut [u8]) {
                b[..Self::SIZE].fill(0);
                $($crate::linux_abi::Field::put(self.$f, b, $off);)*
            }
            fn decode(b: &[u8]) -> Option<Self> {
                (b.len() >= Self::SIZE).then(|| Self {
                    $($f: $crate::linux_abi::Field::get(b, $off),)*
                })
            }
        }
    };
}
pub(crate) use abi_struct;
