//! `runnel run sc|spu`: one cluster process in the foreground, logging to
//! standard error, until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use runnel_sc::ScConfig;
use runnel_spu::SpuConfig;
use runnel_transport::CancellationToken;
use runnel_types::SpuId;
use tokio::signal::unix::{SignalKind, signal};

use crate::CommandResult;

/// Exit status when a second signal cuts a shutdown short (as a shell
/// reports a process ended by SIGTERM).
const EXIT_SECOND_SIGNAL: i32 = 143;

#[derive(Debug, Args)]
pub struct ScArgs {
    /// Address clients connect to.
    #[arg(long, default_value = "127.0.0.1:9003")]
    public_addr: String,
    /// Address SPUs connect to.
    #[arg(long, default_value = "127.0.0.1:9004")]
    private_addr: String,
    /// Where the metadata store lives.
    #[arg(long)]
    data_dir: PathBuf,
    /// An SPU silent this long is offline (e.g. 3s, 500ms).
    #[arg(long, default_value = "3s")]
    session_timeout: runnel_types::Duration,
}

#[derive(Debug, Args)]
pub struct SpuArgs {
    /// This SPU's id, unique in the cluster.
    #[arg(long)]
    id: u32,
    /// Address clients connect to.
    #[arg(long)]
    public_addr: String,
    /// Address peer SPUs connect to.
    #[arg(long)]
    private_addr: String,
    /// The public address announced to clients, if not `--public-addr`
    /// (behind a proxy or NAT).
    #[arg(long)]
    advertise_public_addr: Option<String>,
    /// The private address announced to peer SPUs, if not
    /// `--private-addr`.
    #[arg(long)]
    advertise_private_addr: Option<String>,
    /// The SC's private address.
    #[arg(long, default_value = "127.0.0.1:9004")]
    sc_addr: String,
    /// Where this SPU keeps its partition replicas.
    #[arg(long)]
    data_dir: PathBuf,
}

pub fn run_sc(args: ScArgs) -> CommandResult {
    let config = ScConfig {
        data_dir: args.data_dir,
        public_addr: args.public_addr,
        private_addr: args.private_addr,
        session_timeout: args.session_timeout.to_std(),
        ..ScConfig::default()
    };
    serve(|shutdown| async move { runnel_sc::run(config, shutdown).await.map_err(Into::into) })
}

pub fn run_spu(args: SpuArgs) -> CommandResult {
    let config = SpuConfig {
        id: SpuId(args.id),
        public_addr: args.public_addr,
        private_addr: args.private_addr,
        advertised_public_addr: args.advertise_public_addr,
        advertised_private_addr: args.advertise_private_addr,
        sc_addr: args.sc_addr,
        data_dir: args.data_dir,
        ..SpuConfig::default()
    };
    serve(|shutdown| async move { runnel_spu::run(config, shutdown).await.map_err(Into::into) })
}

/// Sets up logging and a runtime, and runs `process` until it ends or a
/// termination signal asks it to stop.
fn serve<F, Fut>(process: F) -> CommandResult
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), Box<dyn std::error::Error>>>,
{
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNNEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let stopper = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::info!("stopping on signal; a second signal stops at once");
            stopper.cancel();
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::warn!("stopping at once on a second signal");
            std::process::exit(EXIT_SECOND_SIGNAL);
        });
        process(shutdown).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    // Blocking tasks (a log's fsync) finish before the process exits.
    runtime.shutdown_timeout(Duration::from_secs(10));
    Ok(ExitCode::SUCCESS)
}
