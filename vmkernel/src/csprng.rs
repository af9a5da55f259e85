//! The kernel's random-number generator: ChaCha20 (RFC 8439) keyed from
//! hardware entropy (RDSEED/RDRAND when present) mixed with timing jitter,
//! rekeyed from its own output after every request (fast key erasure).
//!
//! ChaCha20's block function is a few dozen lines fixed by the RFC and
//! checked here against its test vector; a crate would add more API churn
//! than code.

const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

fn quarter(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

/// One ChaCha20 block for `key`, `counter`, `nonce`.
pub fn chacha20_block(key: &[u32; 8], counter: u32, nonce: &[u32; 3]) -> [u8; 64] {
    let mut init = [0u32; 16];
    init[..4].copy_from_slice(&SIGMA);
    init[4..12].copy_from_slice(key);
    init[12] = counter;
    init[13..].copy_from_slice(nonce);
    let mut s = init;
    for _ in 0..10 {
        quarter(&mut s, 0, 4, 8, 12);
        quarter(&mut s, 1, 5, 9, 13);
        quarter(&mut s, 2, 6, 10, 14);
        quarter(&mut s, 3, 7, 11, 15);
        quarter(&mut s, 0, 5, 10, 15);
        quarter(&mut s, 1, 6, 11, 12);
        quarter(&mut s, 2, 7, 8, 13);
        quarter(&mut s, 3, 4, 9, 14);
    }
    let mut out = [0u8; 64];
    for i in 0..16 {
        out[i * 4..i * 4 + 4].copy_from_slice(&s[i].wrapping_add(init[i]).to_le_bytes());
    }
    out
}

/// A fast-key-erasure generator over ChaCha20.
pub struct Csprng {
    key: [u32; 8],
    nonce: u64,
}

impl Csprng {
    /// Seeds from 32 bytes of entropy.
    pub fn new(seed: &[u8; 32]) -> Self {
        let mut key = [0u32; 8];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u32::from_le_bytes(seed[i * 4..i * 4 + 4].try_into().unwrap());
        }
        Self { key, nonce: 0 }
    }

    /// Mixes more entropy into the key.
    pub fn reseed(&mut self, extra: &[u8; 32]) {
        let mut mixed = [0u8; 32];
        let block = chacha20_block(&self.key, 0, &[0xffff_ffff, 0, 0]);
        for i in 0..32 {
            mixed[i] = block[i] ^ extra[i];
        }
        *self = Self { nonce: self.nonce, ..Self::new(&mixed) };
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        self.nonce += 1;
        let nonce = [self.nonce as u32, (self.nonce >> 32) as u32, 0];
        // Block 0 becomes the next key; the rest is output.
        let next = chacha20_block(&self.key, 0, &nonce);
        for (counter, chunk) in (1..).zip(out.chunks_mut(64)) {
            let b = chacha20_block(&self.key, counter, &nonce);
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        for i in 0..8 {
            self.key[i] = u32::from_le_bytes(next[i * 4..i * 4 + 4].try_into().unwrap());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8439_block_test_vector() {
        // RFC 8439 §2.3.2
        let key: [u32; 8] = core::array::from_fn(|i| u32::from_le_bytes([4 * i as u8, 4 * i as u8 + 1, 4 * i as u8 + 2, 4 * i as u8 + 3]));
        let nonce = [0x0900_0000, 0x4a00_0000, 0];
        let out = chacha20_block(&key, 1, &nonce);
        assert_eq!(&out[..16], &[0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15, 0x50, 0x0f, 0xdd, 0x1f, 0xa3, 0x20, 0x71, 0xc4]);
        assert_eq!(&out[48..], &[0xb5, 0x12, 0x9c, 0xd1, 0xde, 0x16, 0x4e, 0xb9, 0xcb, 0xd0, 0x83, 0xe8, 0xa2, 0x50, 0x3c, 0x4e]);
    }

    #[test]
    fn outputs_differ_and_key_moves_on() {
        let mut g = Csprng::new(&[7; 32]);
        let (mut a, mut b) = ([0u8; 100], [0u8; 100]);
        g.fill(&mut a);
        g.fill(&mut b);
        assert_ne!(a, b);
        let mut h = Csprng::new(&[7; 32]);
        h.reseed(&[1; 32]);
        let mut c = [0u8; 100];
        h.fill(&mut c);
        assert_ne!(a, c);
    }
}
