//! The Runnel client library: cluster profiles, administration, producers
//! and consumers.
//!
//! A [`RunnelClient`] connects to the SC, keeps a live copy of the cluster
//! metadata (pushed by the SC, never polled), and talks to the leader SPU
//! of each partition directly for data:
//!
//! - [`Admin`]: topics, partitions, SPUs, producer ids and preferred
//!   leader elections, through the SC.
//! - [`Producer`]: records placed on partitions (Kafka's murmur2 for
//!   keys), batched per partition, one batch in flight per partition so
//!   order holds, acknowledged under [`Acks`] (default: every in-sync
//!   replica). Idempotent by default: a producer id from the SC and
//!   sequence numbers per partition let it retry a batch whose outcome is
//!   unknown (a lost answer, a failover) without the leader storing it
//!   twice; without idempotence it retries only while a failure proves
//!   nothing was stored.
//! - [`Consumer`]: records pushed by each partition's leader as they are
//!   committed, checked (CRC, and offsets against those expected) and
//!   delivered in order per partition.
//! - [`Profiles`]: which cluster to talk to, kept in
//!   `$RUNNEL_HOME/config.toml`.
//!
//! Depends on no server crate: only the wire, api, metadata and transport
//! crates.

mod accumulator;
mod client;
mod consumer;
mod error;
mod fetched;
mod partitioner;
mod pool;
mod producer;
mod profile;

pub use client::{Admin, RunnelClient};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, StartFrom};
pub use error::{ClientError, ProduceError};
pub use partitioner::{Partitioner, key_partition, murmur2};
pub use producer::{
    DeliveryFuture, MAX_BATCH_BYTES, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use profile::{CONFIG_FILE, Profile, Profiles, runnel_home};

pub use runnel_api::{Acks, ListOffsetsResponse, OffsetQuery};
pub use runnel_metadata::MetadataView;
pub use runnel_wire::{Compression, RecordHeader};
