//! The four Kafka compression codecs, with a hard cap on decompressed size.
//!
//! A batch's records section is compressed as a whole. Decompression never
//! allocates more than the caller's limit (plus one read buffer), so a small
//! "decompression bomb" batch gets an error instead of our memory.

use std::fmt;
use std::io::{Read, Write};

use crate::WireError;

/// Codec of a batch, from the low three bits of its attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
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
        Compression::Gzip => read_capped(codec, flate2::read::GzDecoder::new(input), limit),
        Compression::Snappy => decompress_snappy(input, limit),
        Compression::Lz4 => read_capped(codec, lz4_flex::frame::FrameDecoder::new(input), limit),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(|error| {
                WireError::Decompress {
                    codec,
                    reason: error.to_string(),
                }
            })?;
            read_capped(codec, decoder, limit)
        }
    }
}

/// Reads a streaming decoder to its end, never holding more than `limit`
/// bytes of output.
fn read_capped(codec: Compression, decoder: impl Read, limit: usize) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    let read = decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|error| WireError::Decompress {
            codec,
            reason: error.to_string(),
        })?;
    if read > limit {
        return Err(WireError::DecompressedTooLarge { codec, limit });
    }
    Ok(out)
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
    if out.len() + length > limit {
        return Err(WireError::DecompressedTooLarge { codec, limit });
    }
    let start = out.len();
    out.resize(start + length, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(corrupt)?;
    out.truncate(start + written);
    Ok(())
}
