//! Checking one fetched item before any of its records is delivered.
//!
//! The CRC of a batch covers its records but not its base offset, and the
//! SPU sends batches straight from its files without reading them: a
//! damaged or misplaced batch arrives with a valid CRC and wrong offsets.
//! So besides decoding each batch (length, CRC, framing), this checks
//! that the batches hold exactly the offsets the consumer expects, with
//! no gap and no overlap, and that the item's own positions agree with
//! them. Pure: bytes in, batches or a fault out.

use bytes::Bytes;
use runnel_api::FetchItem;
use runnel_types::Offset;
use runnel_wire::{DecodeLimits, SharedBatch};

/// The outcome of checking one item.
#[derive(Debug)]
pub(crate) struct CheckedItem {
    /// The batches that passed every check, in order, up to the first
    /// that did not. Empty when the item's own positions are wrong.
    pub batches: Vec<SharedBatch>,
    /// The first thing found wrong, if any.
    pub fault: Option<Fault>,
}

/// What is wrong with a fetched item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    /// The offset the consumer expected there.
    pub offset: Offset,
    pub reason: String,
}

/// Decodes and checks the batches of `item` (its frame tail is `tail`),
/// fetched for offset `wanted`.
///
/// - The first batch holds `wanted` (base <= wanted <= last) or starts
///   exactly at it, and starts at `item.first_offset`.
/// - Each next batch starts right after the one before.
/// - Within a batch, record `i` has offset delta `i` and the last offset
///   delta is the record count minus one.
/// - `item.next_offset` is right after the last batch.
pub(crate) fn check_item(item: &FetchItem, tail: &Bytes, wanted: Offset) -> CheckedItem {
    let mut batches = Vec::new();
    let mut position = 0;
    // Where the next batch must start; the first may start before.
    let mut expected = wanted;
    while position < tail.len() {
        let first = batches.is_empty();
        let batch = match SharedBatch::decode(&tail.slice(position..), DecodeLimits::default()) {
            Ok((batch, used)) => {
                position += used;
                batch
            }
            Err(error) => {
                return CheckedItem {
                    batches,
                    fault: Some(Fault {
                        offset: expected,
                        reason: format!("the batch fails its checks: {error}"),
                    }),
                };
            }
        };
        let next = match check_batch(&batch, first, expected, item.first_offset) {
            Ok(next) => next,
            Err(reason) => {
                return CheckedItem {
                    batches,
                    fault: Some(Fault {
                        offset: expected,
                        reason,
                    }),
                };
            }
        };
        batches.push(batch);
        expected = next;
    }
    let fault = if batches.is_empty() {
        Some(Fault {
            offset: wanted,
            reason: "the item holds no batch".into(),
        })
    } else if item.next_offset != expected {
        Some(Fault {
            offset: wanted,
            reason: format!(
                "the item says its batches end before offset {}, but they end before offset {expected}",
                item.next_offset
            ),
        })
    } else {
        None
    };
    if fault.is_some() {
        // The item's own positions disagree with its batches: none of
        // it is trusted.
        batches.clear();
    }
    CheckedItem { batches, fault }
}

/// Checks the offsets of one decoded batch; returns the offset after it,
/// or what is wrong.
fn check_batch(
    batch: &SharedBatch,
    first: bool,
    expected: Offset,
    item_first_offset: Offset,
) -> Result<Offset, String> {
    let header = &batch.header;
    let base = header.base_offset;
    let count = header.record_count;
    if i64::from(header.last_offset_delta) != i64::from(count) - 1 {
        return Err(format!(
            "the batch at base offset {base} holds {count} records but its last offset delta is {}",
            header.last_offset_delta
        ));
    }
    for (index, record) in batch.records.iter().enumerate() {
        if i64::from(record.offset_delta) != index as i64 {
            return Err(format!(
                "record {index} of the batch at base offset {base} has offset delta {}",
                record.offset_delta
            ));
        }
    }
    let next = base
        .checked_add(i64::from(header.last_offset_delta))
        .and_then(|last| last.checked_add(1))
        .ok_or_else(|| {
            format!(
                "the batch's base offset {base} and last offset delta {} overflow",
                header.last_offset_delta
            )
        })?;
    if first {
        if base != item_first_offset.0 {
            return Err(format!(
                "the first batch starts at offset {base}, but the item says it starts at {item_first_offset}"
            ));
        }
        let holds = base <= expected.0 && expected.0 < next;
        if !holds && base != expected.0 {
            return Err(format!(
                "the first batch covers offsets {base} to {}, which does not hold the requested offset {expected}",
                next - 1
            ));
        }
    } else if base != expected.0 {
        let what = if base > expected.0 {
            "a gap"
        } else {
            "an overlap"
        };
        return Err(format!(
            "the batch starts at offset {base}, but the one before it ended before offset {expected} ({what})"
        ));
    }
    Ok(Offset(next))
}

#[cfg(test)]
mod tests {
    use runnel_wire::batch::set_base_offset;
    use runnel_wire::{BatchBuilder, Compression, RecordBatch};

    use super::*;

    /// An encoded batch of `count` one-byte records at `base`.
    fn batch(base: i64, count: usize) -> Vec<RecordBatch> {
        let mut builder = BatchBuilder::new(Compression::None);
        for index in 0..count {
            builder.push(1_000, None, Some(vec![index as u8]), Vec::new());
        }
        let mut bytes = builder.build().encode().expect("encode");
        set_base_offset(&mut bytes, Offset(base));
        let (decoded, _) = RecordBatch::decode(&bytes, DecodeLimits::default()).expect("decode");
        vec![decoded]
    }

    fn encode(batches: &[RecordBatch]) -> Vec<u8> {
        batches
            .iter()
            .flat_map(|batch| batch.encode().expect("encode"))
            .collect()
    }

    fn item(first: i64, next: i64) -> FetchItem {
        FetchItem {
            first_offset: Offset(first),
            next_offset: Offset(next),
            log_start_offset: Offset::ZERO,
            high_watermark: Offset(next),
        }
    }

    /// Checks `batches` as an item claiming `first..next`, fetched for
    /// `wanted`: how many batches pass, and the fault's offset and reason.
    fn check(
        batches: &[RecordBatch],
        (first, next): (i64, i64),
        wanted: i64,
    ) -> (usize, Option<(i64, String)>) {
        let checked = check_item(
            &item(first, next),
            &Bytes::from(encode(batches)),
            Offset(wanted),
        );
        (
            checked.batches.len(),
            checked.fault.map(|fault| (fault.offset.0, fault.reason)),
        )
    }

    fn contiguous() -> Vec<RecordBatch> {
        [batch(0, 2), batch(2, 3), batch(5, 1)].concat()
    }

    #[test]
    fn contiguous_batches_pass_from_their_start_or_inside_the_first() {
        assert_eq!(check(&contiguous(), (0, 6), 0), (3, None));
        assert_eq!(check(&contiguous(), (0, 6), 1), (3, None));
    }

    #[test]
    fn a_first_batch_that_skips_ahead_fails() {
        let (passed, fault) = check(&batch(3, 2), (3, 5), 1);
        let (offset, reason) = fault.expect("a fault");
        assert_eq!((passed, offset), (0, 1));
        assert!(
            reason.contains("does not hold the requested offset 1"),
            "{reason}"
        );
    }

    #[test]
    fn a_first_batch_that_ends_before_the_wanted_offset_fails() {
        let (passed, fault) = check(&batch(0, 2), (0, 2), 2);
        assert_eq!(passed, 0);
        assert!(fault.is_some());
    }

    #[test]
    fn a_gap_or_an_overlap_between_batches_fails_after_the_good_ones() {
        let gap = [batch(0, 2), batch(3, 1)].concat();
        let (passed, fault) = check(&gap, (0, 4), 0);
        let (offset, reason) = fault.expect("a fault");
        assert_eq!((passed, offset), (1, 2));
        assert!(reason.contains("(a gap)"), "{reason}");

        let overlap = [batch(0, 2), batch(1, 1)].concat();
        let (passed, fault) = check(&overlap, (0, 2), 0);
        assert_eq!(passed, 1);
        assert!(fault.expect("a fault").1.contains("(an overlap)"));
    }

    #[test]
    fn item_positions_must_agree_with_the_batches() {
        let (passed, fault) = check(&contiguous(), (1, 6), 1);
        assert_eq!(passed, 0);
        assert!(
            fault
                .expect("a fault")
                .1
                .contains("the item says it starts at 1")
        );

        let (passed, fault) = check(&contiguous(), (0, 9), 0);
        assert_eq!(
            passed, 0,
            "nothing of an item whose end is wrong is trusted"
        );
        assert!(fault.expect("a fault").1.contains("end before offset 9"));

        let (passed, fault) = check(&[], (0, 0), 0);
        assert_eq!(passed, 0);
        assert!(fault.expect("a fault").1.contains("no batch"));
    }

    #[test]
    fn record_offset_deltas_must_count_from_zero() {
        let mut bad = batch(0, 3);
        bad[0].records[2].offset_delta = 5;
        let (passed, fault) = check(&bad, (0, 3), 0);
        assert_eq!(passed, 0);
        assert!(fault.expect("a fault").1.contains("record 2"));
    }

    #[test]
    fn the_last_offset_delta_must_match_the_record_count() {
        let mut bad = batch(0, 3);
        bad[0].header.last_offset_delta = 5;
        let (passed, fault) = check(&bad, (0, 6), 0);
        assert_eq!(passed, 0);
        assert!(fault.expect("a fault").1.contains("last offset delta is 5"));
    }

    #[test]
    fn a_batch_failing_its_crc_is_a_fault_at_the_expected_offset() {
        let mut bytes = encode(&contiguous());
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let checked = check_item(&item(0, 6), &Bytes::from(bytes), Offset(0));
        assert_eq!(checked.batches.len(), 2);
        let fault = checked.fault.expect("a fault");
        assert_eq!(fault.offset, Offset(5));
        assert!(
            fault.reason.contains("fails its checks"),
            "{}",
            fault.reason
        );
    }
}
