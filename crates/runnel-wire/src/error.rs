//! The one error type of the codecs. Every variant says what was wrong with
//! the bytes, never just "invalid".

use crate::compression::Compression;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated: needed {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("batch length field {0} is out of range")]
    BadBatchLength(i32),
    #[error("unsupported record batch magic {0}; only v2 (magic 2) is supported")]
    BadMagic(i8),
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unknown compression codec id {0}")]
    UnknownCompression(u8),
    #[error("{codec} payload decompresses past the limit of {limit} bytes")]
    DecompressedTooLarge { codec: Compression, limit: usize },
    #[error("{codec} payload is corrupt: {reason}")]
    Decompress { codec: Compression, reason: String },
    #[error("record count is {0}; it must not be negative")]
    BadRecordCount(i32),
    #[error("batch header says {header} records but {actual} were found")]
    RecordCountMismatch { header: i32, actual: i32 },
    #[error("record {index} is malformed: {reason}")]
    MalformedRecord { index: i32, reason: &'static str },
    #[error("varint is longer than {0} bytes")]
    VarintTooLong(usize),
    #[error("{0} bytes follow the last record")]
    TrailingBytes(usize),
    #[error("batch too large to encode: {0} bytes")]
    TooLarge(usize),
    #[error("base offset {base_offset} plus last offset delta {last_offset_delta} overflows")]
    OffsetOverflow {
        base_offset: i64,
        last_offset_delta: i32,
    },
    #[error("frame length {length} is outside {min}..={max} bytes")]
    FrameLength { length: u64, min: usize, max: usize },
    #[error("client id is {0} bytes long; the limit is 255")]
    ClientIdTooLong(usize),
    #[error("client id is not UTF-8")]
    ClientIdNotUtf8,
    #[error("unknown response kind {0}")]
    UnknownResponseKind(u8),
    #[error("message body is malformed: {0}")]
    MalformedBody(String),
}
