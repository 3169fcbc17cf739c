//! Which partition a produced record goes to. Keyed records land where
//! Kafka's Java client puts them (murmur2 of the key bytes), so a topic
//! fed by both keeps each key on one partition.

use runnel_types::PartitionId;

/// How a producer spreads records over partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Partitioner {
    /// A keyed record goes to `(murmur2(key) & 0x7fffffff) % partitions`,
    /// as in Kafka; a record without a key goes round robin.
    #[default]
    KeyHash,
    /// Every record goes round robin, key or not.
    RoundRobin,
}

impl Partitioner {
    /// The partition of a record with `key`, out of `partitions`.
    /// `sequence` counts the records the producer placed round robin so
    /// far; the caller advances it when it is used.
    ///
    /// # Panics
    /// If `partitions` is 0: a topic always has at least one.
    pub fn partition(self, key: Option<&[u8]>, partitions: u32, sequence: u64) -> PartitionId {
        assert!(partitions > 0, "a topic has at least one partition");
        match (self, key) {
            (Partitioner::KeyHash, Some(key)) => key_partition(key, partitions),
            _ => PartitionId((sequence % u64::from(partitions)) as u32),
        }
    }

    /// Whether a record with this key uses the round-robin sequence.
    pub fn is_round_robin(self, key: Option<&[u8]>) -> bool {
        !matches!((self, key), (Partitioner::KeyHash, Some(_)))
    }
}

/// Kafka's partition for a key: `toPositive(murmur2(key)) % partitions`.
///
/// # Panics
/// If `partitions` is 0.
pub fn key_partition(key: &[u8], partitions: u32) -> PartitionId {
    assert!(partitions > 0, "a topic has at least one partition");
    let positive = (murmur2(key) & 0x7fff_ffff) as u32;
    PartitionId(positive % partitions)
}

/// Kafka's `Utils.murmur2`: 32-bit MurmurHash2 with seed `0x9747b28c`,
/// reading the input as little-endian 4-byte words.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Kafka takes the length as a Java int; a key that does not fit one
    // cannot be sent, so the truncation never matters.
    let mut hash = SEED ^ (data.len() as u32);
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        hash = hash.wrapping_mul(M);
        hash ^= k;
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        if rest.len() == 3 {
            hash ^= u32::from(rest[2]) << 16;
        }
        if rest.len() >= 2 {
            hash ^= u32::from(rest[1]) << 8;
        }
        hash ^= u32::from(rest[0]);
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(M);
    hash ^= hash >> 15;
    hash as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2` cases, plus short keys other Kafka
    /// clients check against the Java implementation (one per remainder
    /// length).
    #[test]
    fn murmur2_matches_kafka() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
            (b"1", -1_993_445_489),
            (b"12", 126_087_238),
            (b"123", -267_702_483),
            (b"1234", -1_614_185_708),
            (b"12345", -1_188_365_604),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                *expected,
                "{:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn keys_land_on_kafkas_partitions() {
        // toPositive(-973932308) = 1173551340; % 3 = 0, % 7 = 3.
        assert_eq!(key_partition(b"21", 3), PartitionId(0));
        assert_eq!(key_partition(b"21", 7), PartitionId(3));
        // toPositive(479470107) = 479470107; % 4 = 3.
        assert_eq!(key_partition(b"abc", 4), PartitionId(3));
        // The same key always lands on the same partition.
        for partitions in 1..20 {
            let first = key_partition(b"user-42", partitions);
            assert!(first.0 < partitions);
            assert_eq!(key_partition(b"user-42", partitions), first);
        }
    }

    #[test]
    fn keyless_records_go_round_robin() {
        let placed: Vec<u32> = (0..7)
            .map(|sequence| Partitioner::KeyHash.partition(None, 3, sequence).0)
            .collect();
        assert_eq!(placed, [0, 1, 2, 0, 1, 2, 0]);
        assert!(Partitioner::KeyHash.is_round_robin(None));
        assert!(!Partitioner::KeyHash.is_round_robin(Some(b"k")));
    }

    #[test]
    fn round_robin_ignores_keys() {
        let placed: Vec<u32> = (0..4)
            .map(|sequence| {
                Partitioner::RoundRobin
                    .partition(Some(b"21"), 2, sequence)
                    .0
            })
            .collect();
        assert_eq!(placed, [0, 1, 0, 1]);
        assert!(Partitioner::RoundRobin.is_round_robin(Some(b"k")));
        assert_eq!(
            Partitioner::KeyHash.partition(Some(b"21"), 3, 99),
            key_partition(b"21", 3)
        );
    }
}
