//! The `runnel` binary. This crate is the only one that knows clap; each
//! subcommand parses its flags here and calls into the library crates.

mod debug;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "runnel",
    version,
    about = "Runnel: a distributed data-streaming platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Operator tools that work directly on partition directories.
    #[command(subcommand)]
    Debug(DebugCommand),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
