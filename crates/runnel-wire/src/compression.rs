//! The four Kafka compression codecs, with a hard cap on decompressed size.
//!
//! A batch's records section is compressed as a whole. The decompressed
//! output never grows past the caller's limit, not even in spare capacity,
//! so a small "decompression bomb" batch gets an error instead of our
//! memory. Apart from the output, each codec works in memory of a fixed
//! bound that no input can raise: a 32 KiB read buffer, gzip's 32 KiB
//! window, zstd's decoding context (its window is the output itself), and
//! for lz4 the buffers for the block size the frame declares: at most
//! 256 KiB for the 64 KiB blocks Kafka's clients write, and 16 MiB for the
//! largest blocks any frame can declare (a legacy frame's 8 MiB).

use std::fmt;
use std::io::{self, Read, Write};

use crate::WireError;

/// Codec of a batch, from the low three bits of its attributes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    pub fn from_id(id: u8) -> Result<Compression, WireError> {
        match id {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(WireError::UnknownCompression(other)),
        }
    }

    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|codec| codec.name() == s)
            .ok_or_else(|| {
                format!("unknown compression {s:?}; use none, gzip, snappy, lz4 or zstd")
            })
    }
}

impl TryFrom<String> for Compression {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl From<Compression> for String {
    fn from(codec: Compression) -> String {
        codec.name().to_string()
    }
}

/// The magic header of the xerial snappy stream framing that Kafka's Java
/// client writes: magic, then version 1 and minimum compatible version 1.
const XERIAL_HEADER: [u8; 16] = [
    0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
];
const XERIAL_BLOCK_SIZE: usize = 32 * 1024;

/// Compresses `input` with `codec` into the form Kafka clients write.
pub fn compress(codec: Compression, input: &[u8]) -> Vec<u8> {
    match codec {
        Compression::None => input.to_vec(),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder
                .write_all(input)
                .expect("writing to a Vec cannot fail");
            encoder.finish().expect("writing to a Vec cannot fail")
        }
        Compression::Snappy => {
            let mut out = XERIAL_HEADER.to_vec();
            let mut encoder = snap::raw::Encoder::new();
            for chunk in input.chunks(XERIAL_BLOCK_SIZE) {
                let block = encoder
                    .compress_vec(chunk)
                    .expect("a 32 KiB chunk is within snappy's limits");
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        Compression::Lz4 => {
            // Independent 64 KiB blocks, as Java's KafkaLZ4BlockOutputStream
            // writes them: its reader cannot follow linked blocks, and
            // readers size their buffers by the declared block size, which
            // lz4_flex would otherwise raise to 4 MiB for large inputs.
            let frame = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(frame, Vec::new());
            encoder
                .write_all(input)
                .expect("writing to a Vec cannot fail");
            encoder.finish().expect("writing to a Vec cannot fail")
        }
        Compression::Zstd => zstd::bulk::compress(input, 3).expect("zstd compresses any input"),
    }
}

/// Decompresses a records section, failing once the output would exceed
/// `limit` bytes.
pub fn decompress(codec: Compression, input: &[u8], limit: usize) -> Result<Vec<u8>, WireError> {
    match codec {
        Compression::None => {
            if input.len() > limit {
                return Err(WireError::DecompressedTooLarge { codec, limit });
            }
            Ok(input.to_vec())
        }
        // Java's GZIPInputStream reads every member of a multi-member
        // stream, so a reader that stopped after the first would drop
        // records another Kafka reader sees.
        Compression::Gzip => read_capped(codec, flate2::read::MultiGzDecoder::new(input), limit),
        Compression::Snappy => decompress_snappy(input, limit),
        Compression::Lz4 => read_capped(codec, lz4_flex::frame::FrameDecoder::new(input), limit),
        Compression::Zstd => decompress_zstd(input, limit),
    }
}

/// Size of the buffer a streaming decoder fills before we copy its output.
const READ_CHUNK_LEN: usize = 32 * 1024;

/// Reads a streaming decoder to its end. The output vector's capacity never
/// passes `limit`: `read_to_end` would double it past the limit on the way.
fn read_capped(
    codec: Compression,
    mut decoder: impl Read,
    limit: usize,
) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    let mut chunk = vec![0; READ_CHUNK_LEN];
    loop {
        let read = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(WireError::Decompress {
                    codec,
                    reason: error.to_string(),
                });
            }
        };
        if read > limit - out.len() {
            return Err(WireError::DecompressedTooLarge { codec, limit });
        }
        reserve_within(&mut out, read, limit);
        out.extend_from_slice(&chunk[..read]);
    }
}

/// Makes room for `additional` more bytes without letting the capacity pass
/// `limit`. Growth still doubles, so filling the vector stays linear.
fn reserve_within(out: &mut Vec<u8>, additional: usize, limit: usize) {
    let needed = out.len() + additional;
    assert!(needed <= limit, "caller checks the limit before reserving");
    if needed > out.capacity() {
        let target = needed.max(out.capacity().saturating_mul(2)).min(limit);
        out.reserve_exact(target - out.len());
    }
}

/// First output buffer for a zstd frame that does not state its size (Java
/// clients stream and never do): a typical Kafka batch fits in one try.
const ZSTD_FIRST_GUESS_LEN: usize = 256 * 1024;

/// Decodes zstd in one pass straight into an output buffer of our choosing.
/// The streaming decoder would allocate the window the frame asks for, up to
/// 128 MiB whatever our limit; decoding in one pass uses the output as the
/// window, so memory is the output plus a fixed-size context. A frame that
/// states its content size is decoded once into exactly that much; one that
/// does not starts from a guess that doubles up to `limit`, decoding again
/// each time, which at most doubles the work.
fn decompress_zstd(input: &[u8], limit: usize) -> Result<Vec<u8>, WireError> {
    use zstd::zstd_safe;

    let codec = Compression::Zstd;
    let corrupt = |reason: &str| WireError::Decompress {
        codec,
        reason: reason.to_string(),
    };
    let declared = zstd_safe::get_frame_content_size(input)
        .map_err(|_| corrupt("the zstd frame header is missing or invalid"))?;
    let mut capacity = match declared {
        Some(size) if size > limit as u64 => {
            return Err(WireError::DecompressedTooLarge { codec, limit });
        }
        Some(size) => size as usize,
        None => ZSTD_FIRST_GUESS_LEN.min(limit),
    };
    let mut context = zstd_safe::DCtx::create();
    loop {
        let mut out = Vec::with_capacity(capacity);
        match context.decompress(&mut out, input) {
            Ok(_) => return Ok(out),
            Err(code) if is_zstd_output_too_small(code) => {
                if capacity >= limit {
                    return Err(WireError::DecompressedTooLarge { codec, limit });
                }
                // More frames may follow a first frame whose stated size
                // fitted, so a stated size is a floor, not the answer.
                capacity = capacity
                    .saturating_mul(2)
                    .max(ZSTD_FIRST_GUESS_LEN)
                    .min(limit);
            }
            Err(code) => return Err(corrupt(zstd_safe::get_error_name(code))),
        }
    }
}

/// zstd reports an error as its error enum's value negated, and promises
/// those values stay fixed across versions.
fn is_zstd_output_too_small(code: zstd::zstd_safe::ErrorCode) -> bool {
    use zstd::zstd_safe::zstd_sys::ZSTD_ErrorCode;
    code == 0usize.wrapping_sub(ZSTD_ErrorCode::ZSTD_error_dstSize_tooSmall as usize)
}

/// Snappy as Kafka clients write it: the xerial framing (Java, librdkafka,
/// kafka-python) or, from some clients, one raw snappy block.
fn decompress_snappy(input: &[u8], limit: usize) -> Result<Vec<u8>, WireError> {
    let codec = Compression::Snappy;
    let corrupt = |reason: String| WireError::Decompress { codec, reason };
    let mut out = Vec::new();
    let Some(mut blocks) = input.strip_prefix(&XERIAL_HEADER[..8]) else {
        decompress_snappy_block(input, limit, &mut out)?;
        return Ok(out);
    };
    // The version fields are not checked: writers set them to 1 and readers
    // everywhere ignore them.
    blocks = blocks
        .get(8..)
        .ok_or_else(|| corrupt("xerial header is truncated".to_string()))?;
    while !blocks.is_empty() {
        let (length, rest) = blocks
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("xerial block length is truncated".to_string()))?;
        let length = u32::from_be_bytes(*length) as usize;
        let block = rest
            .get(..length)
            .ok_or_else(|| corrupt(format!("xerial block of {length} bytes is truncated")))?;
        decompress_snappy_block(block, limit, &mut out)?;
        blocks = &rest[length..];
    }
    Ok(out)
}

/// Appends one raw snappy block's contents to `out`.
fn decompress_snappy_block(block: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
    let codec = Compression::Snappy;
    let corrupt = |error: snap::Error| WireError::Decompress {
        codec,
        reason: error.to_string(),
    };
    let length = snap::raw::decompress_len(block).map_err(corrupt)?;
    if length > limit - out.len() {
        return Err(WireError::DecompressedTooLarge { codec, limit });
    }
    let start = out.len();
    reserve_within(out, length, limit);
    out.resize(start + length, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(corrupt)?;
    out.truncate(start + written);
    Ok(())
}
