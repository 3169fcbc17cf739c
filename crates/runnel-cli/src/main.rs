//! The `runnel` binary. This crate is the only one that knows clap; each
//! subcommand parses its flags here and calls into the library crates.

mod admin;
mod benchmark;
mod cluster;
mod consume;
mod debug;
mod files;
mod login;
mod produce;
mod profile;
mod role;
mod server;
mod user;

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
    /// Log in to a TLS cluster with a password: get a certificate for a
    /// key made here, and a profile that uses it (named after the user,
    /// or --profile), made current.
    Login(login::LoginArgs),
    /// Manage users and their certificates (admin, TLS cluster).
    #[command(subcommand)]
    User(user::UserCommand),
    /// Manage roles and who holds them (admin, TLS cluster).
    #[command(subcommand)]
    Role(role::RoleCommand),
    /// Make a policy file (roles and bindings, YAML) the cluster's whole
    /// policy (admin, TLS cluster).
    Apply(role::ApplyArgs),
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
    /// Add (or change) a profile for the SC at ADDRESS (host:port), with
    /// the TLS files of a cluster that runs with TLS.
    Add(profile::AddArgs),
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
        Command::Login(args) => block_on(login::run(profile, args)),
        Command::User(command) => block_on(user::run(profile, command)),
        Command::Role(command) => block_on(role::run(profile, command)),
        Command::Apply(args) => block_on(role::apply(profile, args)),
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

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    fn parse(arguments: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("runnel").chain(arguments.iter().copied()))
    }

    fn refused(arguments: &[&str]) -> clap::Error {
        parse(arguments).expect_err(&arguments.join(" "))
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    const SC: &[&str] = &["run", "sc", "--data-dir", "d"];
    const SPU: &[&str] = &[
        "run",
        "spu",
        "--id",
        "1",
        "--public-addr",
        "a:1",
        "--private-addr",
        "a:2",
        "--data-dir",
        "d",
    ];

    fn with(base: &[&'static str], extra: &[&'static str]) -> Vec<&'static str> {
        base.iter().chain(extra).copied().collect()
    }

    #[test]
    fn node_tls_flags_come_all_three_or_none() {
        let all = [
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "n.pem",
            "--tls-key",
            "n.key",
        ];
        for base in [SC, SPU] {
            parse(base).expect("no TLS flag");
            parse(&with(base, &all)).expect("all three TLS flags");
            for missing in 0..3 {
                let mut partial: Vec<&str> = base.to_vec();
                for (index, pair) in all.chunks(2).enumerate() {
                    if index != missing {
                        partial.extend(pair);
                    }
                }
                let error = refused(&partial);
                assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument, "{error}");
                assert!(error.to_string().contains(all[2 * missing]), "{error}");
            }
        }
    }

    #[test]
    fn sc_security_flags_need_tls_and_valid_values() {
        let error = refused(&with(SC, &["--superuser", "admin"]));
        assert!(error.to_string().contains("--tls-ca"), "{error}");
        let error = refused(&with(SC, &["--tls-ca-key", "ca.key"]));
        assert!(error.to_string().contains("--tls-ca"), "{error}");
        let tls = ["--tls-ca", "c", "--tls-cert", "c", "--tls-key", "k"];
        let error = refused(&[SC, &tls[..], &["--superuser", "bad name"]].concat());
        assert!(error.to_string().contains("invalid principal"), "{error}");
        let error = refused(&with(SC, &["--principal-from", "subject"]));
        assert!(error.to_string().contains("san-dns"), "{error}");
        let error = refused(&with(SC, &["--max-cert-lifetime", "0s"]));
        assert!(error.to_string().contains("longer than 0"), "{error}");
        parse(
            &[
                SC,
                &tls[..],
                &["--superuser", "admin", "--superuser", "ops"],
            ]
            .concat(),
        )
        .expect("repeated superusers");
    }

    #[test]
    fn limit_flags_refuse_values_that_cannot_work() {
        for (flag, value, expected) in [
            ("--max-connections-per-addr", "0", "not in 1.."),
            ("--max-in-flight", "0", "not in 1.."),
            ("--max-frame-bytes", "1KiB", "at least 64KiB"),
            ("--max-frame-bytes", "2GiB", "at most 1GiB"),
            ("--max-stream-queued-bytes", "0", "larger than 0"),
            ("--handshake-timeout", "0s", "longer than 0"),
            ("--idle-timeout", "soon", "soon"),
        ] {
            for base in [SC, SPU] {
                let error = refused(&with(base, &[flag, value]));
                assert_eq!(error.kind(), ErrorKind::ValueValidation, "{flag}: {error}");
                let message = error.to_string();
                assert!(message.contains(flag), "{message}");
                assert!(message.contains(expected), "{message}");
            }
        }
        let error = refused(&with(SPU, &["--max-decompressed-batch-bytes", "0"]));
        assert!(error.to_string().contains("larger than 0"), "{error}");
    }

    #[test]
    fn role_rules_are_checked_when_parsed() {
        let error = refused(&["role", "create", "writers", "--allow", "write"]);
        assert_eq!(error.kind(), ErrorKind::ValueValidation, "{error}");
        assert!(
            error.to_string().contains("is not ACTIONS=PATTERN"),
            "{error}"
        );
        let error = refused(&["role", "create", "writers", "--deny", "steal=topic:a"]);
        assert!(error.to_string().contains("unknown action"), "{error}");
        let error = refused(&["role", "create", "writers"]);
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument, "{error}");
        let error = refused(&["role", "create", "bad role", "--allow", "read=topic:a"]);
        assert!(error.to_string().contains("invalid role name"), "{error}");
        let Command::Role(role::RoleCommand::Create(_)) = parse(&[
            "role",
            "create",
            "writers",
            "--allow",
            "write,describe=topic:orders-*",
            "--allow",
            "read=group:g",
            "--deny",
            "write=topic:orders-audit",
            "--replace",
        ])
        .expect("valid role")
        .command
        else {
            panic!("parsed as another command");
        };
    }

    #[test]
    fn profile_tls_flags_come_all_three_or_none() {
        parse(&["profile", "add", "p", "h:1"]).expect("plaintext profile");
        parse(&[
            "profile",
            "add",
            "p",
            "h:1",
            "--tls-ca",
            "c",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--tls-domain",
            "sc.example.com",
        ])
        .expect("TLS profile");
        let error = refused(&["profile", "add", "p", "h:1", "--tls-ca", "c"]);
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument, "{error}");
        let error = refused(&["profile", "add", "p", "h:1", "--tls-domain", "d"]);
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument, "{error}");
    }

    #[test]
    fn user_commands_check_names_and_revocation_targets() {
        let error = refused(&["user", "add", "sc"]);
        assert!(error.to_string().contains("invalid user name"), "{error}");
        let error = refused(&["user", "revoke"]);
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument, "{error}");
        let error = refused(&["user", "revoke", "alice", "--serial", "0a"]);
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict, "{error}");
        parse(&["user", "revoke", "--serial", "0a"]).expect("by serial");
        parse(&["user", "passwd", "alice", "--password-stdin"]).expect("passwd");
        let error = refused(&["login", "h:1", "--user", "alice"]);
        assert!(error.to_string().contains("--tls-ca"), "{error}");
        parse(&[
            "--profile",
            "ops",
            "login",
            "h:1",
            "--user",
            "alice",
            "--tls-ca",
            "ca.pem",
            "--cert-lifetime",
            "7d",
        ])
        .expect("login");
    }
}
