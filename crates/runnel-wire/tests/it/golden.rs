//! Golden vectors written by kafka-python (see `tests/golden/generate.py`):
//! we must read another implementation's batches exactly, and write the
//! same bytes where the format leaves no freedom.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use runnel_wire::batch::{BatchBuilder, BatchHeader, LOG_OVERHEAD};
use runnel_wire::{Compression, DecodeLimits, Record, RecordBatch, RecordHeader};
use serde::Deserialize;

use crate::support::{CRC_POSITION, CRC_START, unhex};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    name: String,
    codec: String,
    header: VectorHeader,
    records: Vec<VectorRecord>,
    batch: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorHeader {
    base_offset: i64,
    partition_leader_epoch: i32,
    magic: i8,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    record_count: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorRecord {
    offset_delta: i32,
    timestamp: i64,
    key: Option<String>,
    value: Option<String>,
    headers: Vec<VectorRecordHeader>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorRecordHeader {
    key: String,
    value: Option<String>,
}

/// The checked-in vectors, or the file `RUNNEL_GOLDEN_VECTORS` names, so CI
/// can test freshly generated vectors without touching the work tree.
fn load() -> Vec<Vector> {
    let path = std::env::var_os("RUNNEL_GOLDEN_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/vectors.json")
        });
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("parsing {}: {error}", path.display()))
}

/// What the vector says the batch holds, as our types. The length and CRC
/// come from kafka-python's bytes: they are checked by decoding, not here.
fn expected(vector: &Vector, bytes: &[u8]) -> RecordBatch {
    let header = &vector.header;
    let records = vector
        .records
        .iter()
        .map(|record| Record {
            attributes: 0,
            timestamp_delta: record.timestamp - header.base_timestamp,
            offset_delta: record.offset_delta,
            key: record.key.as_deref().map(unhex),
            value: record.value.as_deref().map(unhex),
            headers: record
                .headers
                .iter()
                .map(|header| RecordHeader {
                    key: unhex(&header.key),
                    value: header.value.as_deref().map(unhex),
                })
                .collect(),
        })
        .collect();
    RecordBatch {
        header: BatchHeader {
            base_offset: header.base_offset,
            batch_length: (bytes.len() - LOG_OVERHEAD) as i32,
            partition_leader_epoch: header.partition_leader_epoch,
            magic: header.magic,
            crc: u32::from_be_bytes(bytes[CRC_POSITION..CRC_START].try_into().unwrap()),
            attributes: header.attributes,
            last_offset_delta: header.last_offset_delta,
            base_timestamp: header.base_timestamp,
            max_timestamp: header.max_timestamp,
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
            record_count: header.record_count,
        },
        records,
    }
}

fn codec_of(vector: &Vector) -> Compression {
    vector
        .codec
        .parse()
        .unwrap_or_else(|error| panic!("{}: {error}", vector.name))
}

#[test]
fn vectors_cover_every_codec_with_the_same_cases() {
    let vectors = load();
    let mut cases: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for vector in &vectors {
        let case = vector
            .name
            .strip_prefix(&format!("{}_", vector.codec))
            .unwrap_or_else(|| panic!("{} does not start with its codec", vector.name));
        cases
            .entry(vector.codec.clone())
            .or_default()
            .insert(case.to_string());
    }
    let codecs: BTreeSet<&str> = cases.keys().map(String::as_str).collect();
    let all: BTreeSet<&str> = Compression::ALL.iter().map(|codec| codec.name()).collect();
    assert_eq!(codecs, all);
    let uncompressed = &cases["none"];
    assert!(uncompressed.len() >= 9, "cases: {uncompressed:?}");
    for (codec, names) in &cases {
        assert_eq!(names, uncompressed, "{codec} covers different cases");
    }
}

#[test]
fn every_vector_decodes_to_exactly_its_records() {
    for vector in load() {
        let bytes = unhex(&vector.batch);
        let want = expected(&vector, &bytes);
        let (got, consumed) = RecordBatch::decode(&bytes, DecodeLimits::default())
            .unwrap_or_else(|error| panic!("{}: {error}", vector.name));
        assert_eq!(consumed, bytes.len(), "{}", vector.name);
        assert_eq!(
            RecordBatch::validate(&bytes, DecodeLimits::default()),
            Ok(bytes.len()),
            "{}",
            vector.name
        );
        assert_eq!(got.header, want.header, "{}", vector.name);
        assert_eq!(got.records, want.records, "{}", vector.name);
        assert_eq!(
            got.header.compression(),
            Ok(codec_of(&vector)),
            "{}",
            vector.name
        );
        for (record, input) in got.records.iter().zip(&vector.records) {
            assert_eq!(got.timestamp_of(record), input.timestamp, "{}", vector.name);
        }
    }
}

#[test]
fn uncompressed_vectors_are_encoded_byte_for_byte() {
    let mut built_by_builder = 0;
    for vector in load().iter().filter(|vector| vector.codec == "none") {
        let bytes = unhex(&vector.batch);
        let batch = expected(vector, &bytes);
        assert_eq!(batch.encode().unwrap(), bytes, "{} via encode", vector.name);

        // The builder numbers offsets 0, 1, 2, ...; vectors with gaps (as
        // compaction leaves them) can only be written through `encode`.
        let contiguous = (0..)
            .zip(&vector.records)
            .all(|(n, record)| record.offset_delta == n);
        if !contiguous {
            continue;
        }
        let header = &vector.header;
        let mut builder = BatchBuilder::new(Compression::None)
            .producer(
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
            )
            .transactional(batch.header.is_transactional());
        for (record, input) in batch.records.iter().zip(&vector.records) {
            builder.push(
                input.timestamp,
                record.key.clone(),
                record.value.clone(),
                record.headers.clone(),
            );
        }
        let built = builder.build().encode().unwrap();
        assert_eq!(built, bytes, "{} via BatchBuilder", vector.name);
        built_by_builder += 1;
    }
    assert!(built_by_builder > 0, "no vector went through BatchBuilder");
}

#[test]
fn compressed_vectors_survive_our_own_codec() {
    // Compressor output is not canonical: another library, level or block
    // size gives other bytes for the same records, so only the records are
    // compared after we compress them ourselves.
    for vector in load().iter().filter(|vector| vector.codec != "none") {
        let bytes = unhex(&vector.batch);
        let (theirs, _) = RecordBatch::decode(&bytes, DecodeLimits::default())
            .unwrap_or_else(|error| panic!("{}: {error}", vector.name));
        let ours = theirs.encode().unwrap();
        let (again, consumed) = RecordBatch::decode(&ours, DecodeLimits::default())
            .unwrap_or_else(|error| panic!("{} re-encoded: {error}", vector.name));
        assert_eq!(consumed, ours.len(), "{}", vector.name);
        assert_eq!(again.records, theirs.records, "{}", vector.name);
        assert_eq!(
            BatchHeader {
                batch_length: 0,
                crc: 0,
                ..again.header
            },
            BatchHeader {
                batch_length: 0,
                crc: 0,
                ..theirs.header
            },
            "{}",
            vector.name
        );
        assert_eq!(
            again.header.compression(),
            Ok(codec_of(vector)),
            "{}",
            vector.name
        );
    }
}
