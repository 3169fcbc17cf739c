//! Round-trip properties over arbitrary batches and every codec, and the
//! integrity guarantees around the CRC.

use proptest::prelude::*;
use proptest::sample::Index;
use runnel_types::{LeaderEpoch, Offset};
use runnel_wire::batch::{
    BATCH_HEADER_LEN, BatchHeader, LOG_OVERHEAD, set_base_offset, set_leader_epoch, verify_crc,
};
use runnel_wire::{Compression, DecodeLimits, Record, RecordBatch, RecordHeader, WireError};

use crate::support::{CRC_POSITION, CRC_START, reframe};

fn bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max_len)
}

/// Null, empty and non-empty are three different things in Kafka, so each
/// gets its own share of cases rather than being left to chance.
fn nullable(max_len: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Vec::new())),
        4 => bytes(max_len).prop_map(Some),
    ]
}

fn record_header() -> impl Strategy<Value = RecordHeader> {
    (bytes(20), nullable(20)).prop_map(|(key, value)| RecordHeader { key, value })
}

fn record() -> impl Strategy<Value = Record> {
    (
        any::<i8>(),
        any::<i64>(),
        any::<i32>(),
        nullable(40),
        // Past 63 bytes a length takes a two-byte varint.
        nullable(300),
        prop::collection::vec(record_header(), 0..4),
    )
        .prop_map(
            |(attributes, timestamp_delta, offset_delta, key, value, headers)| Record {
                attributes,
                timestamp_delta,
                offset_delta,
                key,
                value,
                headers,
            },
        )
}

fn codec() -> impl Strategy<Value = Compression> {
    prop::sample::select(Compression::ALL.to_vec())
}

/// Every header field arbitrary, except the codec bits, which must name a
/// codec for the batch to be encodable. `batch_length`, `crc`, `magic` and
/// `record_count` are arbitrary too: the encoder must compute them.
fn header(codec: Compression) -> impl Strategy<Value = BatchHeader> {
    (
        (
            any::<i64>(),
            any::<i32>(),
            any::<i32>(),
            any::<i8>(),
            any::<u32>(),
        ),
        (any::<i16>(), any::<i32>(), any::<i64>(), any::<i64>()),
        (any::<i64>(), any::<i16>(), any::<i32>(), any::<i32>()),
    )
        .prop_map(
            move |(
                (base_offset, batch_length, partition_leader_epoch, magic, crc),
                (attribute_bits, last_offset_delta, base_timestamp, max_timestamp),
                (producer_id, producer_epoch, base_sequence, record_count),
            )| BatchHeader {
                base_offset,
                batch_length,
                partition_leader_epoch,
                magic,
                crc,
                attributes: (attribute_bits & !0b111) | i16::from(codec.id()),
                last_offset_delta,
                base_timestamp,
                max_timestamp,
                producer_id,
                producer_epoch,
                base_sequence,
                record_count,
            },
        )
}

fn batch() -> impl Strategy<Value = RecordBatch> {
    codec().prop_flat_map(|codec| {
        (header(codec), prop::collection::vec(record(), 0..8))
            .prop_map(|(header, records)| RecordBatch { header, records })
    })
}

/// The batch as decoding must return it: the computed fields filled in.
fn as_decoded(batch: &RecordBatch, encoded: &[u8]) -> RecordBatch {
    RecordBatch {
        header: BatchHeader {
            batch_length: (encoded.len() - LOG_OVERHEAD) as i32,
            magic: 2,
            crc: u32::from_be_bytes(encoded[CRC_POSITION..CRC_START].try_into().unwrap()),
            record_count: batch.records.len() as i32,
            ..batch.header
        },
        records: batch.records.clone(),
    }
}

fn decode(bytes: &[u8]) -> Result<(RecordBatch, usize), WireError> {
    RecordBatch::decode(bytes, DecodeLimits::default())
}

proptest! {
    #[test]
    fn encode_then_decode_gives_the_batch_back(batch in batch(), trailer in bytes(16)) {
        let encoded = batch.encode().unwrap();
        verify_crc(&encoded).unwrap();
        // A batch is usually followed by the next one: decoding must stop
        // at its own end.
        let mut stream = encoded.clone();
        stream.extend_from_slice(&trailer);
        let (decoded, consumed) = decode(&stream).unwrap();
        prop_assert_eq!(consumed, encoded.len());
        prop_assert_eq!(&decoded, &as_decoded(&batch, &encoded));
        // Our encoding is a function of the contents: writing the decoded
        // batch again gives the same bytes, compressed or not.
        prop_assert_eq!(decoded.encode().unwrap(), encoded);
    }

    #[test]
    fn leader_rewrites_keep_the_crc_valid(
        batch in batch(),
        base_offset in any::<i64>(),
        leader_epoch in any::<i32>(),
    ) {
        let mut encoded = batch.encode().unwrap();
        set_base_offset(&mut encoded, Offset(base_offset));
        set_leader_epoch(&mut encoded, LeaderEpoch(leader_epoch));
        verify_crc(&encoded).unwrap();
        let (decoded, _) = decode(&encoded).unwrap();
        prop_assert_eq!(decoded.header.base_offset(), Offset(base_offset));
        prop_assert_eq!(decoded.header.leader_epoch(), LeaderEpoch(leader_epoch));
        prop_assert_eq!(decoded.records, batch.records);
    }

    #[test]
    fn a_flipped_bit_under_the_crc_is_detected(batch in batch(), at in any::<Index>(), bit in 0..8u8) {
        let mut encoded = batch.encode().unwrap();
        // The CRC field itself counts: a damaged checksum must not pass.
        let position = CRC_POSITION + at.index(encoded.len() - CRC_POSITION);
        encoded[position] ^= 1 << bit;
        prop_assert!(
            matches!(decode(&encoded), Err(WireError::CrcMismatch { .. })),
            "flip at byte {} bit {} was not detected", position, bit
        );
    }

    /// Damage that comes with a matching CRC (a buggy writer) must reach
    /// the record parser and come back as an error or as a batch that
    /// re-encodes to itself, never as a panic.
    #[test]
    fn damaged_records_with_a_valid_crc_never_panic(
        batch in batch(),
        damage in prop::collection::vec((any::<Index>(), any::<u8>()), 1..4),
    ) {
        let mut encoded = RecordBatch {
            header: BatchHeader { attributes: batch.header.attributes & !0b111, ..batch.header },
            records: batch.records,
        }
        .encode()
        .unwrap();
        if encoded.len() == BATCH_HEADER_LEN {
            return Ok(());
        }
        let section_len = encoded.len() - BATCH_HEADER_LEN;
        for (at, byte) in damage {
            encoded[BATCH_HEADER_LEN + at.index(section_len)] = byte;
        }
        reframe(&mut encoded);
        if let Ok((decoded, _)) = decode(&encoded) {
            let again = decoded.encode().unwrap();
            prop_assert_eq!(decode(&again).unwrap().0.records, decoded.records);
        }
    }
}

/// Every bit of a batch, flipped one at a time, has a known outcome: the
/// two fields the leader rewrites change and the batch stays valid; any
/// other flip is an error.
#[test]
fn every_single_bit_flip_has_a_known_outcome() {
    for codec in Compression::ALL {
        let mut builder = runnel_wire::BatchBuilder::new(codec).producer(77, 3, 1000);
        for n in 0..3u8 {
            builder.push(
                1_700_000_000_000 + i64::from(n),
                Some(vec![b'k', n]),
                Some(vec![n; 40]),
                vec![RecordHeader {
                    key: b"h".to_vec(),
                    value: None,
                }],
            );
        }
        let original = builder.build().encode().unwrap();
        let (want, _) = decode(&original).unwrap();
        for position in 0..original.len() {
            for bit in 0..8 {
                let mut flipped = original.clone();
                flipped[position] ^= 1 << bit;
                let result = decode(&flipped);
                let context = format!("{codec}: byte {position} bit {bit}: {result:?}");
                match position {
                    0..8 => {
                        let (got, _) = result.expect(&context);
                        assert_ne!(got.header.base_offset, want.header.base_offset, "{context}");
                        assert_eq!(got.records, want.records, "{context}");
                    }
                    12..16 => {
                        let (got, _) = result.expect(&context);
                        assert_ne!(
                            got.header.partition_leader_epoch, want.header.partition_leader_epoch,
                            "{context}"
                        );
                        assert_eq!(got.records, want.records, "{context}");
                    }
                    8..12 => assert!(
                        matches!(
                            result,
                            Err(WireError::Truncated { .. }
                                | WireError::BadBatchLength(_)
                                | WireError::CrcMismatch { .. })
                        ),
                        "{context}"
                    ),
                    16 => assert!(matches!(result, Err(WireError::BadMagic(_))), "{context}"),
                    _ => assert!(
                        matches!(result, Err(WireError::CrcMismatch { .. })),
                        "{context}"
                    ),
                }
            }
        }
    }
}

/// The streaming encoder producers use writes exactly the bytes the
/// builder does, for every codec and every kind of record.
#[test]
fn the_streaming_encoder_matches_the_builder_byte_for_byte() {
    let headers = vec![
        runnel_wire::RecordHeader {
            key: b"trace".to_vec(),
            value: Some(b"abc".to_vec()),
        },
        runnel_wire::RecordHeader {
            key: b"empty".to_vec(),
            value: None,
        },
    ];
    for codec in runnel_wire::Compression::ALL {
        let mut builder = runnel_wire::BatchBuilder::new(codec);
        let mut encoder = runnel_wire::BatchEncoder::new(codec);
        for index in 0..50i64 {
            let key = (index % 3 != 0).then(|| format!("key-{index}").into_bytes());
            let value = (index % 7 != 0).then(|| vec![index as u8; (index * 13) as usize]);
            let record_headers = if index % 2 == 0 {
                headers.clone()
            } else {
                Vec::new()
            };
            let timestamp = 1_700_000_000_000 + (index * 37) % 11 - 5;
            encoder.push(timestamp, key.as_deref(), value.as_deref(), &record_headers);
            builder.push(timestamp, key, value, record_headers);
        }
        assert_eq!(encoder.record_count(), 50);
        let expected = builder.build().encode().unwrap();
        assert_eq!(encoder.finish().unwrap(), expected, "{codec}");
    }
    let empty = runnel_wire::BatchEncoder::new(runnel_wire::Compression::None);
    assert!(empty.is_empty());
}

/// Decoding into shared records accepts and refuses exactly what decoding
/// into owned records does, and yields the same fields, for every codec
/// and for every truncation of a batch.
#[test]
fn shared_decoding_agrees_with_owned_decoding() {
    for codec in Compression::ALL {
        let mut builder = runnel_wire::BatchBuilder::new(codec);
        for index in 0..20u8 {
            let headers = if index % 4 == 0 {
                vec![RecordHeader {
                    key: b"h".to_vec(),
                    value: Some(vec![index]),
                }]
            } else {
                Vec::new()
            };
            let key = (index % 3 != 0).then(|| vec![index; 3]);
            let value = (index % 5 != 0).then(|| vec![index; usize::from(index) * 7]);
            builder.push(1_000 + i64::from(index), key, value, headers);
        }
        let encoded = builder.build().encode().unwrap();
        for end in [encoded.len(), encoded.len() - 1, 61, 30] {
            let slice = &encoded[..end];
            let owned = RecordBatch::decode(slice, DecodeLimits::default());
            let shared = runnel_wire::SharedBatch::decode(
                &bytes::Bytes::copy_from_slice(slice),
                DecodeLimits::default(),
            );
            match (owned, shared) {
                (Ok((owned, used)), Ok((shared, shared_used))) => {
                    assert_eq!(used, shared_used);
                    assert_eq!(owned.header, shared.header);
                    assert_eq!(owned.records.len(), shared.records.len());
                    for (owned, shared) in owned.records.iter().zip(&shared.records) {
                        assert_eq!(owned.offset_delta, shared.offset_delta);
                        assert_eq!(owned.timestamp_delta, shared.timestamp_delta);
                        assert_eq!(owned.key.as_deref(), shared.key.as_deref());
                        assert_eq!(owned.value.as_deref(), shared.value.as_deref());
                        assert_eq!(owned.headers, shared.headers);
                    }
                }
                (Err(owned), Err(shared)) => assert_eq!(owned, shared, "{codec} at {end}"),
                (owned, shared) => panic!("{codec} at {end}: {owned:?} vs {shared:?}"),
            }
        }
    }
}
