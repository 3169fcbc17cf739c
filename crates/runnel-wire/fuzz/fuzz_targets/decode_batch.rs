//! Feeds arbitrary bytes to `RecordBatch::decode`. Whatever decodes must
//! survive re-encoding: decoding our own bytes gives the same batch back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_wire::batch::{BATCH_HEADER_LEN, compute_crc, peek_total_len, verify_crc};
use runnel_wire::{BatchHeader, DecodeLimits, RecordBatch};

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
    let Ok((batch, consumed)) = RecordBatch::decode(data, LIMITS) else {
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
