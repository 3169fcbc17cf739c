//! The `runnel` binary. This crate is the only one that knows clap; each
//! subcommand parses its flags here and calls into the library crates.

mod admin;
mod benchmark;
mod cluster;
mod consume;
mod debug;
mod produce;
mod profile;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use runnel_types::TopicName;

#[derive(Debug, Parser)]
#[command(
    name = "runnel",
    version,
    about = "Runnel: a distributed data-streaming platform"
)]
struct Cli {
    /// Use this profile instead of the current one (see `runnel profile`).
    #[arg(long, global = true, env = "RUNNEL_PROFILE")]
    profile: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start, inspect, stop or delete the local cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Show partitions: leaders, replicas, offsets and sizes.
    #[command(subcommand)]
    Partition(PartitionCommand),
    /// Show the SPUs known to the controller.
    #[command(subcommand)]
    Spu(SpuCommand),
    /// Send lines as records to a topic.
    Produce(produce::ProduceArgs),
    /// Stream records from a topic.
    Consume(consume::ConsumeArgs),
    /// Switch between clusters.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Run one cluster process in the foreground (what `cluster start`
    /// launches).
    #[command(subcommand)]
    Run(RunCommand),
    /// Measure throughput and latency against the current cluster.
    #[command(subcommand)]
    Benchmark(benchmark::BenchmarkCommand),
    /// Operator tools that work directly on partition directories.
    #[command(subcommand)]
    Debug(DebugCommand),
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Start an SC and SPUs as background processes (only those not
    /// running), wait until every SPU is online, and make profile `local`
    /// point at the cluster.
    Start(cluster::StartArgs),
    /// Show the cluster's processes and SPUs.
    Status {
        #[arg(short = 'O', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Stop the cluster's processes; their data stays for the next start.
    Stop,
    /// Stop the cluster and remove its data and logs.
    Delete,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create(admin::CreateTopicArgs),
    /// List topics.
    List {
        #[arg(short = 'O', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show a topic's settings, state and partitions.
    Describe {
        name: TopicName,
        #[arg(short = 'O', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Delete a topic and its data on every SPU.
    Delete { name: TopicName },
}

#[derive(Debug, Subcommand)]
enum PartitionCommand {
    /// List partitions of every topic, or of one: leader, epoch, in-sync
    /// replicas, high watermark, and each replica's log end and lag.
    List {
        /// Only this topic's partitions.
        #[arg(long)]
        topic: Option<TopicName>,
        #[arg(short = 'O', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Move leadership back to the preferred replica (the first of the
    /// replica list) where it is online and in sync. Exits 1 if some
    /// partition could not be moved, saying why.
    ElectPreferred {
        /// Only this topic's partitions (default: every partition).
        topic: Option<TopicName>,
        /// Only this partition of TOPIC.
        #[arg(long, requires = "topic")]
        partition: Option<u32>,
        #[arg(short = 'O', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
enum SpuCommand {
    /// List SPUs with their addresses and whether they are online.
    List {
        #[arg(short = 'O', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
enum ProfileCommand {
    /// List profiles; the current one is marked.
    List,
    /// Print the current profile.
    Current,
    /// Make NAME the current profile.
    Switch { name: String },
    /// Add (or change) a profile for the SC at ADDRESS (host:port).
    Add { name: String, address: String },
    /// Delete a profile.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
enum RunCommand {
    /// Run a Streaming Controller.
    Sc(server::ScArgs),
    /// Run a Streaming Processing Unit.
    Spu(server::SpuArgs),
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::enum_variant_names,
    reason = "the variants become the subcommands verify-log, dump-log and write-log"
)]
enum DebugCommand {
    /// Check every batch of a partition directory or segment file: lengths,
    /// CRC, offsets strictly increasing, index consistency. Exits 0 with a
    /// summary if sound, 1 with the first fault otherwise.
    VerifyLog {
        /// A partition directory or a single `.log` segment file.
        path: PathBuf,
        #[arg(short = 'O', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print one line per batch (or per record with --records) of a
    /// partition directory or segment file, ours or any Kafka broker's.
    DumpLog {
        /// A partition directory or a single `.log` segment file.
        path: PathBuf,
        /// Decode the batches and print every record.
        #[arg(long)]
        records: bool,
        #[arg(short = 'O', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Append lines from standard input (one record each) to a partition
    /// directory through the real log, creating it if needed.
    WriteLog {
        /// The partition directory.
        path: PathBuf,
        /// Records per batch.
        #[arg(long, default_value_t = 100)]
        batch_records: usize,
        /// Codec for the batches: none, gzip, snappy, lz4 or zstd.
        #[arg(long, default_value = "none")]
        compression: runnel_wire::Compression,
        /// Sealed segments roll at this size (e.g. 1MiB, 1GiB).
        #[arg(long, default_value = "1GiB")]
        segment_size: runnel_types::ByteSize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// What a command returns: an exit code, or an error printed as
/// `error: …` with exit code 2.
type CommandResult = Result<ExitCode, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let profile = cli.profile;
    let result = match cli.command {
        Command::Debug(DebugCommand::VerifyLog { path, output }) => {
            debug::verify_log(&path, output)
        }
        Command::Debug(DebugCommand::DumpLog {
            path,
            records,
            output,
        }) => debug::dump_log(&path, records, output),
        Command::Debug(DebugCommand::WriteLog {
            path,
            batch_records,
            compression,
            segment_size,
        }) => debug::write_log(&path, batch_records, compression, segment_size),
        Command::Run(RunCommand::Sc(args)) => server::run_sc(args),
        Command::Run(RunCommand::Spu(args)) => server::run_spu(args),
        Command::Profile(command) => profile::run(command),
        Command::Cluster(command) => block_on(cluster::run(command)),
        Command::Topic(command) => block_on(admin::topic(profile, command)),
        Command::Partition(PartitionCommand::List { topic, output }) => {
            block_on(admin::list_partitions(profile, topic, output))
        }
        Command::Partition(PartitionCommand::ElectPreferred {
            topic,
            partition,
            output,
        }) => block_on(admin::elect_preferred(profile, topic, partition, output)),
        Command::Spu(SpuCommand::List { output }) => block_on(admin::list_spus(profile, output)),
        Command::Produce(args) => block_on(produce::run(profile, args)),
        Command::Consume(args) => block_on(consume::run(profile, args)),
        Command::Benchmark(command) => block_on(benchmark::run(profile, command)),
    };
    match result {
        Ok(code) => code,
        // A reader that stops early (`| head`) is not an error.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|error| error.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// Runs an async command on a runtime of its own.
fn block_on(command: impl Future<Output = CommandResult>) -> CommandResult {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(command)
}
