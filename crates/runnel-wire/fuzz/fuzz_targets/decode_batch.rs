//! Feeds arbitrary bytes to `RecordBatch::decode`. Whatever decodes must
//! survive re-encoding: decoding our own bytes gives the same batch back.
//! `SharedBatch::decode` (records sharing the input's memory) must accept,
//! refuse and decode exactly alike, and `RecordBatch::validate` must reach
//! the same verdict with the same length or error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_wire::batch::{BATCH_HEADER_LEN, compute_crc, peek_total_len, verify_crc};
use runnel_wire::{BatchHeader, DecodeLimits, RecordBatch, SharedBatch};

/// Small, so that decompression bombs are cheap to find and to reject.
const LIMITS: DecodeLimits = DecodeLimits {
    max_decompressed_bytes: 1 << 20,
};
const CRC_POSITION: usize = 17;

fuzz_target!(|data: &[u8]| {
    check(data);
    // Random mutations almost never carry a valid CRC, so they would all
    // stop at the CRC check. The same bytes with the CRC made right reach
    // the decompressors and the record parser.
    if let Some(fixed) = with_valid_crc(data) {
        check(&fixed);
    }
});

fn with_valid_crc(data: &[u8]) -> Option<Vec<u8>> {
    let total = peek_total_len(data)?.ok()?;
    let mut batch = data.get(..total)?.to_vec();
    if batch.len() < BATCH_HEADER_LEN {
        return None;
    }
    let crc = compute_crc(&batch);
    batch[CRC_POSITION..CRC_POSITION + 4].copy_from_slice(&crc.to_be_bytes());
    Some(batch)
}

fn check(data: &[u8]) {
    let owned = RecordBatch::decode(data, LIMITS);
    let shared = SharedBatch::decode(&bytes::Bytes::copy_from_slice(data), LIMITS);
    match (&owned, &shared) {
        (Ok((owned, used)), Ok((shared, shared_used))) => {
            assert_eq!(used, shared_used);
            assert_eq!(owned.header, shared.header);
            assert_eq!(owned.records.len(), shared.records.len());
            for (owned, shared) in owned.records.iter().zip(&shared.records) {
                assert_eq!(owned.attributes, shared.attributes);
                assert_eq!(owned.offset_delta, shared.offset_delta);
                assert_eq!(owned.timestamp_delta, shared.timestamp_delta);
                assert_eq!(owned.key.as_deref(), shared.key.as_deref());
                assert_eq!(owned.value.as_deref(), shared.value.as_deref());
                assert_eq!(owned.headers, shared.headers);
            }
        }
        (Err(owned), Err(shared)) => assert_eq!(owned, shared),
        _ => panic!("owned and shared decoding disagree: {owned:?} vs {shared:?}"),
    }
    let verdict = owned.as_ref().map(|(_, used)| *used).map_err(Clone::clone);
    assert_eq!(
        RecordBatch::validate(data, LIMITS),
        verdict,
        "validate and decode disagree"
    );
    let Ok((batch, consumed)) = owned else {
        return;
    };
    // What decode accepted, the lighter-weight checks must accept too.
    assert_eq!(peek_total_len(data), Some(Ok(consumed)));
    assert_eq!(BatchHeader::parse(data), Ok(batch.header));
    assert_eq!(verify_crc(&data[..consumed]), Ok(()));

    let encoded = batch.encode().expect("a decoded batch has a known codec");
    // Our records encoding is never longer than the one we decoded, so the
    // same limit must hold for our own bytes.
    let (again, again_consumed) =
        RecordBatch::decode(&encoded, LIMITS).expect("our own encoding decodes");
    assert_eq!(again_consumed, encoded.len());
    assert_eq!(again.records, batch.records);
    assert_eq!(
        BatchHeader {
            batch_length: 0,
            crc: 0,
            ..again.header
        },
        BatchHeader {
            batch_length: 0,
            crc: 0,
            ..batch.header
        }
    );
    // Encoding is a function of the contents.
    assert_eq!(again.encode().as_deref(), Ok(&encoded[..]));
}
