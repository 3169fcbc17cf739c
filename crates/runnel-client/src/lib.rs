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
//! - [`Profiles`]: which cluster to talk to, and with which TLS identity
//!   (CA, certificate and key files), kept in `$RUNNEL_HOME/config.toml`.
//!   A profile with TLS settings makes every connection, to the SC and to
//!   each SPU, TLS 1.3 with that identity.
//! - [`login`]: a user's password exchanged for a certificate signed by
//!   the cluster CA, for a key generated here; and the admin calls for
//!   users, certificates, roles and bindings on [`Admin`].
//!
//! Depends on no server crate: only the wire, api, metadata and transport
//! crates, and the pure pki (key and CSR generation) and auth (policy
//! types) crates.

mod accumulator;
mod client;
mod consumer;
mod error;
mod fetched;
mod partitioner;
mod pool;
mod producer;
mod profile;
mod security;

pub use client::{Admin, RunnelClient};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, StartFrom};
pub use error::{ClientError, ProduceError};
pub use partitioner::{Partitioner, key_partition, murmur2};
pub use producer::{
    DeliveryFuture, MAX_BATCH_BYTES, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use profile::{CONFIG_FILE, Profile, ProfileTls, Profiles, runnel_home, write_whole};
pub use security::{Credentials, LoginOptions, login};

pub use runnel_api::{
    Acks, ApplyPolicyResponse, IssuedCertificate, ListOffsetsResponse, LoginResponse, OffsetQuery,
    RevokeResponse, UserInfo,
};
pub use runnel_metadata::MetadataView;
pub use runnel_wire::{Compression, RecordHeader};
