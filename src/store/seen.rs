//! Which job ids the new store may already hold, without a look at it.
//!
//! New jobs reach the store in batches (opening a redb table costs about as
//! much as two inserts), yet a repeated id must be refused at the job that
//! repeats it, before the parser reads on, so that the error and the change
//! lines printed before it are the same as with one insert per job. Every
//! id written goes into this fixed-size Bloom filter: "no" is certain, and
//! only a "maybe" costs a look in the store (the run in memory, then a
//! chunk or two per run written, `index.rs`). Its 128 KiB do not grow with the
//! profile; at the 100 000-job limit about one id in 150 is a "maybe". (With
//! 64 KiB, one in twelve: their lookups cost a 100 000-job ingest a third
//! more CPU, and the index pages they read pushed pages being written out of
//! redb's cache early, 25% more bytes written. With three bits an id
//! instead of seven, one in 65: 8 760 page reads instead of 3 268 and 5% more
//! CPU for a 100 000-job ingest.) It is keyed by the index's `id_hash`,
//! computed once per job.

/// Bits in the filter: a power of two.
const BITS: usize = 1 << 20;
/// Bits set per id: near the best for 100 000 ids in `BITS` (seven: about
/// 105 "maybe"s over a whole 100 000-job ingest, against 418 with three).
const PROBES: usize = 7;

pub struct Seen {
    words: Vec<u64>,
}

impl Seen {
    pub fn new() -> Seen {
        Seen {
            words: vec![0; BITS / 64],
        }
    }

    /// The filter's `PROBES` bit positions for an id of hash `h`, made from
    /// its two halves (Kirsch and Mitzenmacher's double hashing: as good as
    /// independent hashes for a Bloom filter).
    fn bits(h: u64) -> [usize; PROBES] {
        let (a, b) = (h as u32, (h >> 32) as u32 | 1);
        let mut at = a;
        std::array::from_fn(|_| {
            let bit = at as usize & (BITS - 1);
            at = at.wrapping_add(b);
            bit
        })
    }

    /// False when an id of hash `hash` was certainly never inserted.
    pub fn may_hold(&self, hash: u64) -> bool {
        Seen::bits(hash).iter().all(|&b| {
            self.words
                .get(b / 64)
                .is_some_and(|w| w & (1 << (b % 64)) != 0)
        })
    }

    pub fn insert(&mut self, hash: u64) {
        for b in Seen::bits(hash) {
            if let Some(w) = self.words.get_mut(b / 64) {
                *w |= 1 << (b % 64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::id_hash;

    #[test]
    fn an_inserted_id_is_always_a_maybe_and_few_others_are() {
        let mut seen = Seen::new();
        for i in 0..100_000 {
            seen.insert(id_hash(format!("{}", 1000 + i).as_bytes()));
        }
        for i in 0..100_000 {
            assert!(seen.may_hold(id_hash(format!("{}", 1000 + i).as_bytes())));
        }
        let false_maybes = (0..100_000)
            .filter(|i| seen.may_hold(id_hash(format!("x{i}").as_bytes())))
            .count();
        // Expected about 0.65% at this load (7 bits of 2^20 per id).
        assert!(false_maybes < 1_000, "{false_maybes} of 100000");
        assert!(!Seen::new().may_hold(id_hash(b"1000")));
    }
}
