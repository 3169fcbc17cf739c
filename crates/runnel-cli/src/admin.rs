//! `runnel topic|partition|spu …`: administration through the SC.

use std::process::ExitCode;

use clap::Args;
use comfy_table::{Table, presets};
use runnel_client::{Admin, Profiles, RunnelClient, runnel_home};
use runnel_metadata::{Partition, Topic, TopicConfig, TopicSpec};
use runnel_types::{ByteSize, Duration, FlushPolicy, Offset, PartitionId, SpuId, TopicName};
use runnel_wire::Compression;
use serde_json::{Value, json};

use crate::{CommandResult, Output, TopicCommand};

#[derive(Debug, Args)]
pub struct CreateTopicArgs {
    name: TopicName,
    /// Number of partitions.
    #[arg(short = 'p', long, default_value_t = 1)]
    partitions: u32,
    /// Replicas of each partition.
    #[arg(short = 'r', long, default_value_t = 1)]
    replicas: u16,
    /// Delete records older than this (e.g. 7d, 12h); `forever` keeps them.
    #[arg(long, default_value = "7d")]
    retention_time: Retention,
    /// Delete the oldest records of a partition larger than this (e.g. 10GiB).
    #[arg(long)]
    max_partition_size: Option<ByteSize>,
    /// Size at which a partition's segment file is sealed (e.g. 1GiB).
    #[arg(long, default_value = "1GiB")]
    segment_size: ByteSize,
    /// Codec producers use by default: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// When appends reach the disk: always (fsync before acknowledging),
    /// interval=MS, or os.
    #[arg(long, default_value = "always")]
    flush: FlushPolicy,
    /// In-sync replicas an `acks=all` produce needs (default: 2, or 1
    /// for a topic of one replica).
    #[arg(long)]
    min_in_sync_replicas: Option<u16>,
    /// Let a replica outside the ISR lead when no in-sync replica is
    /// online, losing the acknowledged records it lacks.
    #[arg(long)]
    unclean_election: bool,
}

/// A retention time, or none.
#[derive(Debug, Clone, Copy)]
pub struct Retention(Option<Duration>);

impl std::str::FromStr for Retention {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "forever" {
            return Ok(Retention(None));
        }
        text.parse()
            .map(|duration| Retention(Some(duration)))
            .map_err(|error| format!("{error}; or use `forever`"))
    }
}

/// Connects to the cluster of `profile`, or of the current profile.
pub async fn connect(profile: Option<String>) -> Result<RunnelClient, Box<dyn std::error::Error>> {
    let profiles = Profiles::load(&runnel_home()?)?;
    let profile = match profile {
        Some(name) => profiles.get(&name)?,
        None => profiles.current()?,
    };
    Ok(RunnelClient::connect_profile(&profile).await?)
}

/// The cluster administration calls, on the cluster of `profile`.
pub async fn admin(profile: Option<String>) -> Result<Admin, Box<dyn std::error::Error>> {
    Ok(connect(profile).await?.admin())
}

/// A table for people: no borders, a header row.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(header);
    table
}

pub async fn topic(profile: Option<String>, command: TopicCommand) -> CommandResult {
    let client = connect(profile).await?;
    let admin = client.admin();
    match command {
        TopicCommand::Create(args) => {
            let spec = TopicSpec {
                name: args.name.clone(),
                partitions: args.partitions,
                replication_factor: args.replicas,
                config: TopicConfig {
                    retention_time: args.retention_time.0,
                    max_partition_size: args.max_partition_size,
                    segment_size: args.segment_size,
                    compression: args.compression,
                    flush: args.flush,
                    min_in_sync_replicas: args.min_in_sync_replicas,
                    unclean_election: args.unclean_election,
                },
            };
            admin.create_topic(spec).await?;
            println!("topic '{}' created", args.name);
        }
        TopicCommand::List { output } => {
            let topics = admin.list_topics(Vec::new()).await?;
            match output {
                Output::Json => {
                    for topic in &topics {
                        println!("{}", topic_json(topic));
                    }
                }
                Output::Text => {
                    if topics.is_empty() {
                        println!("no topics; create one with `runnel topic create NAME`");
                        return Ok(ExitCode::SUCCESS);
                    }
                    let mut table = table(["NAME", "PARTITIONS", "REPLICAS", "RETENTION", "STATE"]);
                    for topic in &topics {
                        table.add_row([
                            topic.spec.name.to_string(),
                            topic.spec.partitions.to_string(),
                            topic.spec.replication_factor.to_string(),
                            retention_text(&topic.spec.config),
                            topic.state.to_string(),
                        ]);
                    }
                    println!("{table}");
                }
            }
        }
        TopicCommand::Describe { name, output } => {
            let topic = admin
                .list_topics(vec![name.clone()])
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| format!("topic '{name}' does not exist"))?;
            let partitions = admin.list_partitions(Some(&name)).await?;
            match output {
                Output::Json => {
                    let mut value = topic_json(&topic);
                    value["partitions"] = partitions.iter().map(partition_json).collect();
                    println!("{value}");
                }
                Output::Text => {
                    let config = &topic.spec.config;
                    println!("name:               {}", topic.spec.name);
                    println!("state:              {}", topic.state);
                    println!("partitions:         {}", topic.spec.partitions);
                    println!("replication factor: {}", topic.spec.replication_factor);
                    println!("retention time:     {}", retention_text(config));
                    println!(
                        "max partition size: {}",
                        config
                            .max_partition_size
                            .map_or("unlimited".to_string(), |size| size.to_string())
                    );
                    println!("segment size:       {}", config.segment_size);
                    println!("compression:        {}", config.compression);
                    println!("flush:              {}", config.flush);
                    if !partitions.is_empty() {
                        println!();
                        println!("{}", partition_table(&partitions));
                    }
                }
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            println!("topic '{name}' deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list_partitions(
    profile: Option<String>,
    topic: Option<TopicName>,
    output: Output,
) -> CommandResult {
    let client = connect(profile).await?;
    let partitions = client.admin().list_partitions(topic.as_ref()).await?;
    match output {
        Output::Json => {
            for partition in &partitions {
                println!("{}", partition_json(partition));
            }
        }
        Output::Text => println!("{}", partition_table(&partitions)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit code of `partition elect-preferred` when some partition could not
/// be moved.
const EXIT_NOT_ELECTED: u8 = 1;

pub async fn elect_preferred(
    profile: Option<String>,
    topic: Option<TopicName>,
    partition: Option<u32>,
    output: Output,
) -> CommandResult {
    let client = connect(profile).await?;
    let results = client
        .admin()
        .elect_preferred(topic.as_ref(), partition.map(PartitionId))
        .await?;
    match output {
        Output::Json => {
            for result in &results {
                println!(
                    "{}",
                    json!({
                        "topic": result.key.topic.as_str(),
                        "partition": result.key.partition.0,
                        "leader": result.leader.map(|id| id.0),
                        "leader_epoch": result.leader_epoch.0,
                        "error": result.error.as_ref().map(|error| error.message.as_str()),
                    })
                );
            }
        }
        Output::Text => {
            if results.is_empty() {
                println!("no partitions to elect a leader for");
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = table(["TOPIC", "PARTITION", "LEADER", "EPOCH", "RESULT"]);
            for result in &results {
                table.add_row([
                    result.key.topic.to_string(),
                    result.key.partition.to_string(),
                    result
                        .leader
                        .map_or_else(|| "-".to_string(), |id| id.to_string()),
                    result.leader_epoch.to_string(),
                    result.error.as_ref().map_or_else(
                        || "the preferred replica leads".to_string(),
                        |error| format!("not moved: {}", error.message),
                    ),
                ]);
            }
            println!("{table}");
        }
    }
    if results.iter().any(|result| result.error.is_some()) {
        return Ok(ExitCode::from(EXIT_NOT_ELECTED));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list_spus(profile: Option<String>, output: Output) -> CommandResult {
    let client = connect(profile).await?;
    let spus = client.admin().list_spus().await?;
    match output {
        Output::Json => {
            for spu in &spus {
                println!(
                    "{}",
                    json!({
                        "id": spu.spec.id.0,
                        "public_address": spu.spec.public_addr,
                        "private_address": spu.spec.private_addr,
                        "rack": spu.spec.rack,
                        "online": spu.online,
                    })
                );
            }
        }
        Output::Text => {
            let mut table = table(["ID", "PUBLIC", "PRIVATE", "STATUS"]);
            for spu in &spus {
                table.add_row([
                    spu.spec.id.to_string(),
                    spu.spec.public_addr.clone(),
                    spu.spec.private_addr.clone(),
                    if spu.online { "online" } else { "offline" }.to_string(),
                ]);
            }
            println!("{table}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn retention_text(config: &TopicConfig) -> String {
    config
        .retention_time
        .map_or("forever".to_string(), |time| time.to_string())
}

fn topic_json(topic: &Topic) -> Value {
    let config = &topic.spec.config;
    json!({
        "name": topic.spec.name.as_str(),
        "partitions": topic.spec.partitions,
        "replication_factor": topic.spec.replication_factor,
        "retention_time_ms": config.retention_time.map(|time| time.as_millis()),
        "max_partition_size": config.max_partition_size.map(|size| size.as_u64()),
        "segment_size": config.segment_size.as_u64(),
        "compression": config.compression.name(),
        "flush": config.flush.to_string(),
        "state": topic.state.to_string(),
    })
}

/// Where one replica of a partition stands, from the last heartbeats.
struct ReplicaOffsets {
    spu: SpuId,
    in_sync: bool,
    /// `None` until its SPU has reported it.
    log_end_offset: Option<Offset>,
    /// Records the replica lacks of the leader's log: leader's log end
    /// minus the replica's. The two come from separate heartbeats, so a
    /// replica reported after the leader may seem ahead; that shows as 0.
    lag: Option<i64>,
}

/// Each replica of `partition`, in replica order.
fn replica_offsets(partition: &Partition) -> Vec<ReplicaOffsets> {
    let leader_end = partition
        .leader_status()
        .map(|status| status.log_end_offset);
    partition
        .spec
        .replicas
        .iter()
        .map(|&spu| {
            let log_end_offset = partition
                .status
                .replicas
                .iter()
                .find(|status| status.spu == spu)
                .map(|status| status.log_end_offset);
            let lag = leader_end
                .zip(log_end_offset)
                .map(|(leader, replica)| (leader.0 - replica.0).max(0));
            ReplicaOffsets {
                spu,
                in_sync: partition.status.in_sync_replicas.contains(&spu),
                log_end_offset,
                lag,
            }
        })
        .collect()
}

fn partition_json(partition: &Partition) -> Value {
    let leader = partition.leader_status();
    let replica_offsets: Vec<Value> = replica_offsets(partition)
        .iter()
        .map(|replica| {
            json!({
                "spu": replica.spu.0,
                "in_sync": replica.in_sync,
                "log_end_offset": replica.log_end_offset.map(|offset| offset.0),
                "lag": replica.lag,
            })
        })
        .collect();
    json!({
        "topic": partition.spec.key.topic.as_str(),
        "partition": partition.spec.key.partition.0,
        "leader": partition.status.leader.map(|id| id.0),
        "replicas": partition.spec.replicas.iter().map(|id| id.0).collect::<Vec<_>>(),
        "leader_epoch": partition.status.leader_epoch.0,
        "in_sync_replicas": partition.status.in_sync_replicas.iter().map(|id| id.0).collect::<Vec<_>>(),
        "high_watermark": leader.map(|status| status.high_watermark.0),
        "log_end_offset": leader.map(|status| status.log_end_offset.0),
        "log_start_offset": leader.map(|status| status.log_start_offset.0),
        "size_bytes": leader.map(|status| status.size_bytes),
        "replica_offsets": replica_offsets,
    })
}

/// Items joined with commas, `-` for an unknown one.
fn comma_list<T: ToString>(items: impl IntoIterator<Item = Option<T>>) -> String {
    items
        .into_iter()
        .map(|item| item.map_or_else(|| "-".to_string(), |item| item.to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

/// One row per partition. REPLICAS, LEO and LAG list the replicas in the
/// same order: each one's log end offset and how far it is behind the
/// leader's.
fn partition_table(partitions: &[Partition]) -> Table {
    let mut table = table([
        "TOPIC",
        "PARTITION",
        "LEADER",
        "EPOCH",
        "REPLICAS",
        "ISR",
        "HW",
        "LEO",
        "LAG",
        "SIZE",
    ]);
    for partition in partitions {
        let leader = partition.leader_status();
        let replicas = replica_offsets(partition);
        let unknown = || "-".to_string();
        table.add_row([
            partition.spec.key.topic.to_string(),
            partition.spec.key.partition.to_string(),
            partition
                .status
                .leader
                .map_or_else(unknown, |id| id.to_string()),
            partition.status.leader_epoch.to_string(),
            comma_list(partition.spec.replicas.iter().map(Some)),
            comma_list(partition.status.in_sync_replicas.iter().map(Some)),
            leader.map_or_else(unknown, |status| status.high_watermark.to_string()),
            comma_list(replicas.iter().map(|replica| replica.log_end_offset)),
            comma_list(replicas.iter().map(|replica| replica.lag)),
            leader.map_or_else(unknown, |status| ByteSize(status.size_bytes).to_string()),
        ]);
    }
    table
}
