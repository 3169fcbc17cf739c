//! `RecordBatch::validate`: the verdict of decoding, intact or damaged
//! batches alike, without the memory of a record list.

use proptest::prelude::*;
use proptest::sample::Index;
use runnel_wire::batch::BATCH_HEADER_LEN;
use runnel_wire::compression::compress;
use runnel_wire::{BatchBuilder, Compression, DecodeLimits, RecordBatch, RecordHeader, WireError};

use crate::support::{ATTRIBUTES_POSITION, peak_allocation, reframe};

fn bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max_len)
}

fn nullable(max_len: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Vec::new())),
        4 => bytes(max_len).prop_map(Some),
    ]
}

/// A record as a producer pushes it: timestamp, key, value, headers.
type Pushed = (i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<RecordHeader>);

fn pushed() -> impl Strategy<Value = Pushed> {
    (
        any::<i64>(),
        nullable(40),
        // Past 63 bytes a length takes a two-byte varint.
        nullable(300),
        prop::collection::vec(
            (bytes(20), nullable(20)).prop_map(|(key, value)| RecordHeader { key, value }),
            0..3,
        ),
    )
}

fn build(codec: Compression, records: &[Pushed]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(codec);
    for (timestamp, key, value, headers) in records {
        builder.push(*timestamp, key.clone(), value.clone(), headers.clone());
    }
    builder.build().encode().expect("a builder's batch encodes")
}

/// Damage done to bytes before they are checked.
#[derive(Clone, Debug)]
enum Damage {
    Flip { at: Index, bit: u8 },
    Set { at: Index, byte: u8 },
    Truncate { at: Index },
    Extend(Vec<u8>),
}

impl Damage {
    /// Empty bytes (the records of an empty batch) get a zero byte first,
    /// so that every damage has somewhere to land.
    fn apply(&self, bytes: &mut Vec<u8>) {
        if bytes.is_empty() {
            bytes.push(0);
        }
        let len = bytes.len();
        match self {
            Damage::Flip { at, bit } => bytes[at.index(len)] ^= 1 << bit,
            Damage::Set { at, byte } => bytes[at.index(len)] = *byte,
            Damage::Truncate { at } => bytes.truncate(at.index(len)),
            Damage::Extend(tail) => bytes.extend_from_slice(tail),
        }
    }
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Damage::Set { at, byte }),
        any::<Index>().prop_map(|at| Damage::Truncate { at }),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(Damage::Extend),
    ]
}

/// Where the damage lands, and whether it gets past the CRC.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The batch as sent; the CRC catches damage after the length field.
    Sent,
    /// The batch as sent, then its length and CRC rewritten, so damage in
    /// the records section reaches the decompressor and the records parser.
    SentReframed,
    /// The records before compression, then compressed and framed, so
    /// damage reaches the records parser of a compressed batch.
    Records,
}

fn damaged(codec: Compression, records: &[Pushed], damage: &[Damage], target: Target) -> Vec<u8> {
    match target {
        Target::Sent | Target::SentReframed => {
            let mut batch = build(codec, records);
            for damage in damage {
                damage.apply(&mut batch);
            }
            if matches!(target, Target::SentReframed) && batch.len() >= BATCH_HEADER_LEN {
                reframe(&mut batch);
            }
            batch
        }
        Target::Records => {
            let plain = build(Compression::None, records);
            let mut section = plain[BATCH_HEADER_LEN..].to_vec();
            for damage in damage {
                damage.apply(&mut section);
            }
            let mut batch = plain[..BATCH_HEADER_LEN].to_vec();
            // The codec id is in the low bits of the attributes' low byte.
            batch[ATTRIBUTES_POSITION + 1] |= codec.id();
            batch.extend_from_slice(&compress(codec, &section));
            reframe(&mut batch);
            batch
        }
    }
}

fn verdicts(
    bytes: &[u8],
    limits: DecodeLimits,
) -> (Result<usize, WireError>, Result<usize, WireError>) {
    let decoded = RecordBatch::decode(bytes, limits).map(|(_, used)| used);
    (RecordBatch::validate(bytes, limits), decoded)
}

proptest! {
    #[test]
    fn validate_accepts_every_batch_a_builder_writes(
        codec in prop::sample::select(Compression::ALL.to_vec()),
        records in prop::collection::vec(pushed(), 0..8),
        trailer in bytes(16),
    ) {
        let batch = build(codec, &records);
        // Batches usually come back to back: validation stops at its end.
        let mut stream = batch.clone();
        stream.extend_from_slice(&trailer);
        let (validated, decoded) = verdicts(&stream, DecodeLimits::default());
        prop_assert_eq!(validated, Ok(batch.len()));
        prop_assert_eq!(decoded, Ok(batch.len()));
    }

    /// Damage of every kind, to the batch or to its records before
    /// compression, under limits small enough that some batches pass the
    /// decompression cap: both accept the same length or refuse with the
    /// same error.
    #[test]
    fn validate_and_decode_reach_the_same_verdict_on_damaged_batches(
        codec in prop::sample::select(Compression::ALL.to_vec()),
        records in prop::collection::vec(pushed(), 0..8),
        damage in prop::collection::vec(damage(), 0..3),
        target in prop_oneof![
            Just(Target::Sent),
            Just(Target::SentReframed),
            Just(Target::Records),
        ],
        max_decompressed_bytes in prop_oneof![Just(64usize << 20), 0..2048usize],
    ) {
        let batch = damaged(codec, &records, &damage, target);
        let limits = DecodeLimits { max_decompressed_bytes };
        let (validated, decoded) = verdicts(&batch, limits);
        prop_assert_eq!(validated, decoded);
    }
}

/// A batch of `count` records of `value_len`-byte values.
fn sized_batch(codec: Compression, count: usize, value_len: usize) -> Vec<u8> {
    let records: Vec<Pushed> = (0..count)
        .map(|index| {
            let value = (0..value_len)
                .map(|at| (at * 31 + index) as u8)
                .collect::<Vec<u8>>();
            let headers = vec![RecordHeader {
                key: b"trace".to_vec(),
                value: Some(vec![index as u8; 8]),
            }];
            (index as i64, Some(b"key".to_vec()), Some(value), headers)
        })
        .collect();
    build(codec, &records)
}

#[test]
fn validating_an_uncompressed_batch_allocates_nothing() {
    let batch = sized_batch(Compression::None, 1_000, 1_000);
    let (result, peak) = peak_allocation(|| RecordBatch::validate(&batch, DecodeLimits::default()));
    assert_eq!(result, Ok(batch.len()));
    assert_eq!(peak, 0, "bytes allocated to validate in place");
}

/// A compressed batch costs its decompressed records section, once, and
/// the decoder's fixed-size state; decoding would add a copy of every
/// record.
#[test]
fn validating_a_compressed_batch_holds_only_the_decompressed_records() {
    const DECODER_SLACK: usize = 512 << 10;
    let section_len = sized_batch(Compression::None, 2_000, 1_000).len() - BATCH_HEADER_LEN;
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let batch = sized_batch(codec, 2_000, 1_000);
        let (result, peak) =
            peak_allocation(|| RecordBatch::validate(&batch, DecodeLimits::default()));
        assert_eq!(result, Ok(batch.len()), "{codec}");
        assert!(
            peak <= section_len + DECODER_SLACK,
            "{codec}: {peak} bytes allocated for a {section_len}-byte records section"
        );
        let (_, decode_peak) =
            peak_allocation(|| RecordBatch::decode(&batch, DecodeLimits::default()));
        assert!(
            decode_peak > section_len + DECODER_SLACK,
            "{codec}: decoding took only {decode_peak} bytes, so this test no longer tells validation apart"
        );
    }
}
