//! The Runnel client library: cluster profiles, administration, producers
//! and consumers.
//!
//! A [`RunnelClient`] connects to the SC, keeps a live copy of the cluster
//! metadata (pushed by the SC, never polled), and talks to the leader SPU
//! of each partition directly for data:
//!
//! - [`Admin`]: topics and SPUs, through the SC.
//! - [`Producer`]: records placed on partitions (Kafka's murmur2 for
//!   keys), batched per partition, sent to each leader with retries while
//!   a failure proves nothing was stored, one batch in flight per
//!   partition so order holds.
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
