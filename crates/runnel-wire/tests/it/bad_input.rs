//! Hostile and broken input: every case must end in the typed error that
//! names the fault, without a panic and without memory the input asks for.

use std::io::Write;

use runnel_wire::batch::{BATCH_HEADER_LEN, peek_total_len};
use runnel_wire::compression::compress;
use runnel_wire::{BatchBuilder, Compression, DecodeLimits, RecordBatch, RecordHeader, WireError};

use crate::support::{
    ATTRIBUTES_POSITION, Bytes, RECORD_COUNT_POSITION, frame, peak_allocation, put_varint, record,
    reframe, simple_record,
};

fn decode(bytes: &[u8]) -> Result<(RecordBatch, usize), WireError> {
    decode_with_limit(bytes, DecodeLimits::default().max_decompressed_bytes)
}

/// Decodes `bytes`, and checks that validating them reaches the same
/// verdict: every hostile case here is a case for `validate` too, and the
/// memory bounds measured around a decode hold for both.
fn decode_with_limit(bytes: &[u8], limit: usize) -> Result<(RecordBatch, usize), WireError> {
    let limits = DecodeLimits {
        max_decompressed_bytes: limit,
    };
    let decoded = RecordBatch::decode(bytes, limits);
    let verdict = decoded
        .as_ref()
        .map(|(_, used)| *used)
        .map_err(Clone::clone);
    assert_eq!(
        RecordBatch::validate(bytes, limits),
        verdict,
        "validate and decode disagree"
    );
    decoded
}

fn codec_attributes(codec: Compression) -> i16 {
    i16::from(codec.id())
}

fn sample_batch(codec: Compression) -> Vec<u8> {
    let mut builder = BatchBuilder::new(codec);
    for n in 0..4u8 {
        builder.push(
            1_000 + i64::from(n),
            Some(vec![n; 3]),
            Some(vec![b'v'; 30 + usize::from(n)]),
            vec![RecordHeader {
                key: b"h".to_vec(),
                value: Some(vec![n]),
            }],
        );
    }
    builder.build().encode().unwrap()
}

const BOMB_LEN: usize = 64 << 20;
const BOMB_LIMIT: usize = 4 << 20;
/// What a decoder may hold besides its output: our 32 KiB read buffer and
/// the codec's own state (gzip's window, lz4's 64 KiB blocks).
const DECODER_SLACK: usize = 512 << 10;

/// lz4_flex's buffers for a frame of 4 MiB linked blocks: the compressed
/// block, and two blocks of output plus the 64 KiB window, with our slack.
const LZ4_LARGEST_BLOCK_BUFFERS: usize = 3 * (4 << 20) + (64 << 10) + DECODER_SLACK;

/// Asserts that decoding `section` as `codec` with a small limit fails on
/// the limit and never held much more than the limit.
fn assert_bomb_defused(name: &str, codec: Compression, section: &[u8]) {
    let batch = frame(codec_attributes(codec), 1, section);
    let (result, peak) = peak_allocation(|| decode_with_limit(&batch, BOMB_LIMIT));
    assert_eq!(
        result,
        Err(WireError::DecompressedTooLarge {
            codec,
            limit: BOMB_LIMIT
        }),
        "{name}"
    );
    assert!(
        peak <= BOMB_LIMIT + DECODER_SLACK,
        "{name}: peak allocation {peak} bytes for a limit of {BOMB_LIMIT}"
    );
}

#[test]
fn decompression_bombs_stop_at_the_limit_without_allocating_past_it() {
    let zeros = vec![0u8; BOMB_LEN];
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let section = compress(codec, &zeros);
        assert!(section.len() < BOMB_LEN / 16, "{codec} bomb is not small");
        assert_bomb_defused(codec.name(), codec, &section);
    }

    // Java clients stream zstd and never state the content size, which
    // takes the decoder down its other path: growing the output in steps.
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    encoder.write_all(&zeros).unwrap();
    let unsized_frame = encoder.finish().unwrap();
    assert!(
        matches!(
            zstd::zstd_safe::get_frame_content_size(&unsized_frame),
            Ok(None)
        ),
        "the streaming encoder was expected to leave the size out"
    );
    assert_bomb_defused(
        "zstd without content size",
        Compression::Zstd,
        &unsized_frame,
    );

    // lz4 frames may declare blocks of up to 4 MiB (Go's sarama writes
    // them); the decoder then holds buffers of that size, a fixed cost
    // that does not grow with the input.
    let frame_info = lz4_flex::frame::FrameInfo::new()
        .block_size(lz4_flex::frame::BlockSize::Max4MB)
        .block_mode(lz4_flex::frame::BlockMode::Linked);
    let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(frame_info, Vec::new());
    encoder.write_all(&zeros).unwrap();
    let batch = frame(
        codec_attributes(Compression::Lz4),
        1,
        &encoder.finish().unwrap(),
    );
    let (result, peak) = peak_allocation(|| decode_with_limit(&batch, BOMB_LIMIT));
    assert!(matches!(
        result,
        Err(WireError::DecompressedTooLarge { .. })
    ));
    assert!(
        peak <= BOMB_LIMIT + LZ4_LARGEST_BLOCK_BUFFERS,
        "lz4 with 4 MiB linked blocks: peak allocation {peak} bytes"
    );

    // A raw (unframed) snappy block states its length up front; a lying
    // length must be refused before anything is allocated for it.
    let raw = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
    let batch = frame(codec_attributes(Compression::Snappy), 1, &raw);
    let (result, peak) = peak_allocation(|| decode_with_limit(&batch, BOMB_LIMIT));
    assert!(matches!(
        result,
        Err(WireError::DecompressedTooLarge { .. })
    ));
    assert!(peak < 64 << 10, "raw snappy allocated {peak} bytes");
}

#[test]
fn the_decompression_limit_is_inclusive() {
    let records = simple_record(&[b'x'; 1000]);
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let batch = frame(codec_attributes(codec), 1, &compress(codec, &records));
        let exact = records.len();
        assert!(decode_with_limit(&batch, exact).is_ok(), "{codec}");
        assert_eq!(
            decode_with_limit(&batch, exact - 1),
            Err(WireError::DecompressedTooLarge {
                codec,
                limit: exact - 1
            }),
            "{codec}"
        );
    }
}

#[test]
fn every_prefix_of_a_batch_is_truncated() {
    for codec in Compression::ALL {
        let batch = sample_batch(codec);
        for len in 0..batch.len() {
            assert!(
                matches!(decode(&batch[..len]), Err(WireError::Truncated { .. })),
                "{codec}: {len} of {} bytes",
                batch.len()
            );
        }
        assert!(decode(&batch).is_ok(), "{codec}");
    }
}

/// A writer that frames and checksums a cut-short records section: the
/// damage gets past the CRC and must be caught by the records parser or
/// the decompressor.
#[test]
fn a_records_section_cut_short_under_a_valid_crc_fails_at_every_length() {
    for codec in Compression::ALL {
        let batch = sample_batch(codec);
        let (want, _) = decode(&batch).unwrap();
        for len in BATCH_HEADER_LEN..batch.len() {
            let mut cut = batch[..len].to_vec();
            reframe(&mut cut);
            let context = format!("{codec}: cut to {len} of {} bytes", batch.len());
            match decode(&cut) {
                Err(_) => {}
                // lz4_flex reads a frame that stops at a block boundary as
                // complete, so losing only the end mark goes unnoticed; a
                // cut that loses data must still fail.
                Ok((got, _)) => {
                    assert_eq!(codec, Compression::Lz4, "{context}");
                    assert_eq!(got.records, want.records, "{context}");
                }
            }
        }
    }
}

#[test]
fn bad_magic_is_rejected() {
    for magic in [0i8, 1, 3, -1, i8::MAX] {
        let mut batch = sample_batch(Compression::None);
        // The magic byte lies outside the CRC, so the CRC stays valid and
        // only the magic check can refuse the batch.
        batch[16] = magic as u8;
        assert_eq!(decode(&batch), Err(WireError::BadMagic(magic)));
    }
}

#[test]
fn bad_batch_lengths_are_rejected() {
    let batch = sample_batch(Compression::None);
    for length in [i32::MIN, -1, 0, (BATCH_HEADER_LEN - 12) as i32 - 1] {
        let mut edited = batch.clone();
        edited[8..12].copy_from_slice(&length.to_be_bytes());
        assert_eq!(decode(&edited), Err(WireError::BadBatchLength(length)));
        assert_eq!(
            peek_total_len(&edited),
            Some(Err(WireError::BadBatchLength(length)))
        );
    }
    let mut edited = batch.clone();
    edited[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    assert!(matches!(decode(&edited), Err(WireError::Truncated { .. })));
}

fn with_record_count(batch: &[u8], count: i32) -> Vec<u8> {
    let mut edited = batch.to_vec();
    edited[RECORD_COUNT_POSITION..RECORD_COUNT_POSITION + 4].copy_from_slice(&count.to_be_bytes());
    reframe(&mut edited);
    edited
}

#[test]
fn the_record_count_must_match_the_records() {
    for codec in Compression::ALL {
        let batch = sample_batch(codec);
        assert_eq!(
            decode(&with_record_count(&batch, 5)),
            Err(WireError::RecordCountMismatch {
                header: 5,
                actual: 4
            }),
            "{codec}: header claims one more"
        );
        assert!(
            matches!(
                decode(&with_record_count(&batch, 3)),
                Err(WireError::TrailingBytes(_))
            ),
            "{codec}: header claims one fewer"
        );
        assert!(
            matches!(
                decode(&with_record_count(&batch, 0)),
                Err(WireError::TrailingBytes(_))
            ),
            "{codec}: header claims none"
        );
        assert_eq!(
            decode(&with_record_count(&batch, -1)),
            Err(WireError::BadRecordCount(-1)),
            "{codec}"
        );
        // A huge count must be refused from the input's size, before any
        // memory is reserved for that many records.
        let huge = with_record_count(&batch, i32::MAX);
        let (result, peak) = peak_allocation(|| decode(&huge));
        assert!(
            matches!(
                result,
                Err(WireError::RecordCountMismatch {
                    header: i32::MAX,
                    ..
                })
            ),
            "{codec}: {result:?}"
        );
        assert!(
            peak < 1 << 20,
            "{codec}: {peak} bytes for a huge record count"
        );
    }
}

#[test]
fn an_empty_batch_is_valid() {
    // Compaction can leave a batch with no records; it still carries the
    // producer state, so it must decode.
    let (batch, _) = decode(&frame(0, 0, &[])).unwrap();
    assert!(batch.records.is_empty());
}

/// One malformed records section and the error it must produce.
fn check(name: &str, section: &[u8], record_count: i32, want: WireError) {
    let batch = frame(0, record_count, section);
    let (result, peak) = peak_allocation(|| decode(&batch));
    assert_eq!(result.map(|(batch, _)| batch.records), Err(want), "{name}");
    assert!(peak < 64 << 10, "{name}: {peak} bytes allocated");
}

fn malformed(index: i32, reason: &'static str) -> WireError {
    WireError::MalformedRecord { index, reason }
}

#[test]
fn malformed_records_are_named() {
    let key = Bytes::Some(b"k");
    let value = Bytes::Some(b"v");
    let no_headers: &[(Bytes<'_>, Bytes<'_>)] = &[];
    let cases: Vec<(&str, Vec<u8>, i32, WireError)> = vec![
        (
            "negative record length",
            record(
                Bytes::Some(b"k"),
                Bytes::Some(b"v"),
                0,
                no_headers,
                Some(-2),
            ),
            1,
            malformed(0, "negative record length"),
        ),
        (
            "record length past the batch",
            record(
                Bytes::Some(b"k"),
                Bytes::Some(b"v"),
                0,
                no_headers,
                Some(1000),
            ),
            1,
            malformed(0, "record length runs past the batch"),
        ),
        (
            "empty record",
            [vec![0], simple_record(&[b'x'; 20])].concat(),
            2,
            malformed(0, "empty record"),
        ),
        (
            "key length below -1",
            record(Bytes::Length(-2), Bytes::Null, 0, no_headers, None),
            1,
            malformed(0, "key length is negative but not -1 (null)"),
        ),
        (
            "value length below -1",
            record(
                Bytes::Null,
                Bytes::Length(i64::from(i32::MIN)),
                0,
                no_headers,
                None,
            ),
            1,
            malformed(0, "value length is negative but not -1 (null)"),
        ),
        (
            "key past the record",
            record(Bytes::Length(50), Bytes::Null, 0, no_headers, None),
            1,
            malformed(0, "key length runs past the record"),
        ),
        (
            "value past the record",
            record(
                Bytes::Null,
                Bytes::Length(i64::from(i32::MAX)),
                0,
                no_headers,
                None,
            ),
            1,
            malformed(0, "value length runs past the record"),
        ),
        (
            "negative header count",
            record(Bytes::Null, Bytes::Null, -1, no_headers, None),
            1,
            malformed(0, "negative header count"),
        ),
        (
            "huge header count",
            record(
                Bytes::Null,
                Bytes::Null,
                i64::from(i32::MAX),
                no_headers,
                None,
            ),
            1,
            malformed(0, "header count exceeds the record size"),
        ),
        (
            "null header key",
            record(
                Bytes::Null,
                Bytes::Null,
                1,
                &[(Bytes::Null, Bytes::Null)],
                None,
            ),
            1,
            malformed(0, "header key is null"),
        ),
        (
            "header key length below -1",
            record(
                Bytes::Null,
                Bytes::Null,
                1,
                &[(Bytes::Length(-3), Bytes::Null)],
                None,
            ),
            1,
            malformed(0, "header key length is negative but not -1 (null)"),
        ),
        (
            "header value length below -1",
            record(
                Bytes::Null,
                Bytes::Null,
                1,
                &[(Bytes::Some(b"h"), Bytes::Length(-2))],
                None,
            ),
            1,
            malformed(0, "header value length is negative but not -1 (null)"),
        ),
        (
            "header value past the record",
            record(
                Bytes::Null,
                Bytes::Null,
                1,
                &[(Bytes::Some(b"h"), Bytes::Length(9))],
                None,
            ),
            1,
            malformed(0, "header value length runs past the record"),
        ),
        (
            "fewer headers than counted",
            record(
                Bytes::Null,
                Bytes::Null,
                2,
                &[(Bytes::Some(b"h"), Bytes::Some(b"abcd"))],
                None,
            ),
            1,
            malformed(0, "header key length runs past the record"),
        ),
        (
            "overlong value length varint",
            [
                simple_record(b"fine"),
                vec![22, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0],
            ]
            .concat(),
            2,
            malformed(1, "value length varint is too long"),
        ),
        (
            "bytes after the headers",
            record(
                Bytes::Null,
                Bytes::Null,
                0,
                &[(Bytes::Some(b"x"), Bytes::Null)],
                None,
            ),
            1,
            malformed(0, "bytes left over after the headers"),
        ),
        (
            "second record is the bad one",
            [
                simple_record(b"fine"),
                record(key, value, 0, no_headers, Some(-5)),
            ]
            .concat(),
            2,
            malformed(1, "negative record length"),
        ),
        (
            "record length varint too long",
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0, 0, 0],
            1,
            WireError::VarintTooLong(5),
        ),
        (
            "bytes after the last record",
            [simple_record(b"fine"), vec![0xaa, 0xbb]].concat(),
            1,
            WireError::TrailingBytes(2),
        ),
    ];
    for (name, section, record_count, want) in cases {
        check(name, &section, record_count, want);
    }
}

#[test]
fn nulls_and_empties_are_kept_apart() {
    // The positive twin of the cases above: -1 is null, 0 is empty.
    let section = [
        record(
            Bytes::Null,
            Bytes::Some(b""),
            1,
            &[(Bytes::Some(b""), Bytes::Null)],
            None,
        ),
        record(
            Bytes::Some(b""),
            Bytes::Null,
            1,
            &[(Bytes::Some(b"h"), Bytes::Some(b""))],
            None,
        ),
    ]
    .concat();
    let (batch, _) = decode(&frame(0, 2, &section)).unwrap();
    assert_eq!(batch.records[0].key, None);
    assert_eq!(batch.records[0].value, Some(Vec::new()));
    assert_eq!(batch.records[0].headers[0].key, Vec::<u8>::new());
    assert_eq!(batch.records[0].headers[0].value, None);
    assert_eq!(batch.records[1].key, Some(Vec::new()));
    assert_eq!(batch.records[1].value, None);
    assert_eq!(batch.records[1].headers[0].value, Some(Vec::new()));
}

#[test]
fn unknown_codecs_are_rejected() {
    let section = simple_record(b"v");
    for id in 5..=7u8 {
        // Other attribute bits set too: only the low three name the codec.
        for attributes in [i16::from(id), i16::from(id) | 0x30] {
            let batch = frame(attributes, 1, &section);
            assert_eq!(decode(&batch), Err(WireError::UnknownCompression(id)));
        }
        let mut unencodable = sample_batch(Compression::None);
        unencodable[ATTRIBUTES_POSITION + 1] |= id;
        reframe(&mut unencodable);
        let header = runnel_wire::BatchHeader::parse(&unencodable).unwrap();
        let batch = RecordBatch {
            header,
            records: Vec::new(),
        };
        assert_eq!(batch.encode(), Err(WireError::UnknownCompression(id)));
    }
}

#[test]
fn corrupt_compressed_payloads_are_reported_per_codec() {
    let mut garbage = Vec::new();
    put_varint(&mut garbage, 1234567);
    garbage.extend_from_slice(&[0x5a; 64]);
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let batch = frame(codec_attributes(codec), 1, &garbage);
        assert!(
            matches!(decode(&batch), Err(WireError::Decompress { codec: got, .. }) if got == codec),
            "{codec}: {:?}",
            decode(&batch)
        );
    }
}

#[test]
fn concatenated_gzip_members_are_all_read() {
    // Java's reader reads every member of a gzip stream; so must we, or a
    // batch would lose the records in its later members.
    let first = simple_record(b"first");
    let second = simple_record(b"second");
    let section = [
        compress(Compression::Gzip, &first),
        compress(Compression::Gzip, &second),
    ]
    .concat();
    let (batch, _) = decode(&frame(codec_attributes(Compression::Gzip), 2, &section)).unwrap();
    assert_eq!(batch.records[0].value.as_deref(), Some(&b"first"[..]));
    assert_eq!(batch.records[1].value.as_deref(), Some(&b"second"[..]));
}

#[test]
fn a_header_whose_offsets_overflow_is_refused() {
    let mut builder = runnel_wire::BatchBuilder::new(Compression::None);
    builder.push(0, None, Some(b"v".to_vec()), Vec::new());
    let mut batch = builder.build().encode().unwrap();
    runnel_wire::batch::set_base_offset(&mut batch, runnel_types::Offset(i64::MAX));
    assert_eq!(
        runnel_wire::BatchHeader::parse(&batch),
        Err(WireError::OffsetOverflow {
            base_offset: i64::MAX,
            last_offset_delta: 0
        })
    );
}
