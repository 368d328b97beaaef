//! A seeded pseudo-random generator for tests that choose at random but must
//! replay a run from its printed seed (kill moments, crash images).
//! xorshift64* (Vigna 2016): tiny, and its stream is fixed by this code, not
//! by a crate version. Not for anything secret (`random_hex` is ring's).

/// xorshift64*.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`, which must not be 0 (xorshift stays
    /// at 0 forever).
    pub fn new(seed: u64) -> Rng {
        assert_ne!(seed, 0, "an xorshift seed of 0 gives only zeros");
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Shuffles `v` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}
