//! Identifiers, offsets, epochs, names and units shared by every Runnel crate.
//!
//! Nothing here does I/O. Widths are explicit because these values are
//! written to disk and sent on the wire: offsets are `i64` as in Kafka,
//! epochs `i32`, partition ids `u32`.

mod flush;
mod ids;
mod topic;
mod units;

pub use flush::FlushPolicy;
pub use ids::{LeaderEpoch, Offset, PartitionId, SpuId};
pub use topic::{TopicName, TopicNameError};
pub use units::{ByteSize, Duration, UnitError};
