//! `runnel consume`: records pushed from a topic, printed as they arrive.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Args;
use runnel_client::{ConsumerConfig, ConsumerRecord, StartFrom};
use runnel_types::{PartitionId, TopicName};
use serde_json::json;

use crate::{CommandResult, Output};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    topic: TopicName,
    /// Only this partition (default: all).
    #[arg(short = 'p', long)]
    partition: Option<u32>,
    /// Start at the beginning of each partition.
    #[arg(short = 'B', long = "beginning", group = "start")]
    beginning: bool,
    /// Start at this absolute offset.
    #[arg(short = 'o', long, group = "start")]
    offset: Option<i64>,
    /// Start this many records before the end of each partition.
    #[arg(short = 'T', long = "tail", group = "start")]
    tail: Option<u64>,
    /// Start at the first record at or after this time (milliseconds
    /// since the Unix epoch).
    #[arg(long, group = "start")]
    timestamp: Option<i64>,
    /// Exit once the records that existed at start have been printed.
    #[arg(short = 'd', long = "disable-continuous")]
    disable_continuous: bool,
    /// `json` prints {"partition","offset","timestamp","key","value"} per
    /// record.
    #[arg(short = 'O', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Print each record through a template with {{partition}},
    /// {{offset}}, {{timestamp}}, {{key}} and {{value}}.
    #[arg(long, conflicts_with = "output")]
    format: Option<String>,
}

pub async fn run(profile: Option<String>, args: ConsumeArgs) -> CommandResult {
    let start = if args.beginning {
        StartFrom::Beginning
    } else if let Some(offset) = args.offset {
        StartFrom::Offset(offset)
    } else if let Some(count) = args.tail {
        StartFrom::FromEnd(count)
    } else if let Some(timestamp) = args.timestamp {
        StartFrom::Timestamp(timestamp)
    } else {
        StartFrom::End
    };
    let client = crate::admin::connect(profile).await?;
    let config = ConsumerConfig {
        partitions: args.partition.map(|partition| vec![PartitionId(partition)]),
        start,
        stop_at_end: args.disable_continuous,
        ..ConsumerConfig::default()
    };
    let mut consumer = client.consumer(&args.topic, config).await?;
    let mut stdout = io::stdout().lock();
    while let Some(record) = consumer.next().await {
        let record = record?;
        let line = match (&args.format, args.output) {
            (Some(template), _) => render(template, &record),
            (None, Output::Json) => json!({
                "partition": record.partition.0,
                "offset": record.offset.0,
                "timestamp": record.timestamp,
                "key": record.key.as_ref().map(|key| String::from_utf8_lossy(key)),
                "value": String::from_utf8_lossy(&record.value),
            })
            .to_string(),
            (None, Output::Text) => String::from_utf8_lossy(&record.value).into_owned(),
        };
        writeln!(stdout, "{line}")?;
        if args.disable_continuous {
            continue;
        }
        stdout.flush()?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Fills the template in one pass, so a field's text is never taken for
/// a placeholder.
fn render(template: &str, record: &ConsumerRecord) -> String {
    let mut out = String::with_capacity(template.len() + record.value.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            rest = &rest[open..];
            break;
        };
        match &after[..close] {
            "partition" => out.push_str(&record.partition.to_string()),
            "offset" => out.push_str(&record.offset.to_string()),
            "timestamp" => out.push_str(&record.timestamp.to_string()),
            "key" => {
                if let Some(key) = &record.key {
                    out.push_str(&String::from_utf8_lossy(key));
                }
            }
            "value" => out.push_str(&String::from_utf8_lossy(&record.value)),
            other => {
                out.push_str("{{");
                out.push_str(other);
                out.push_str("}}");
            }
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}
