//! Pure codecs for the bytes Runnel stores and sends: bytes in, values out,
//! no I/O and no async.
//!
//! The unit of storage, replication and delivery is a Kafka RecordBatch v2
//! (magic 2), byte for byte, so the same bytes go from producer to disk to
//! consumer and any Kafka tool can read them. See `docs/log-format.md`.

pub mod batch;
pub mod compression;
mod error;
pub mod frame;
mod varint;

pub use batch::{
    BatchBuilder, BatchEncoder, BatchHeader, DecodeLimits, Record, RecordBatch, RecordHeader,
    SharedBatch, SharedRecord,
};
pub use compression::Compression;
pub use error::WireError;
