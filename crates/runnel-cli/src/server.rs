//! `runnel run sc|spu`: one cluster process in the foreground, logging to
//! standard error, until SIGTERM or SIGINT. TLS files, and the limits on
//! what peers control, come from flags.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use runnel_pki::PrincipalSource;
use runnel_sc::ScConfig;
use runnel_spu::SpuConfig;
use runnel_transport::{CancellationToken, NodeTls, TransportConfig};
use runnel_types::{ByteSize, SpuId};
use tokio::signal::unix::{SignalKind, signal};

use crate::CommandResult;

/// Exit status when a second signal cuts a shutdown short (as a shell
/// reports a process ended by SIGTERM).
const EXIT_SECOND_SIGNAL: i32 = 143;
/// Smallest frame limit accepted: below this, ordinary requests and
/// metadata snapshots would not fit.
const MIN_FRAME_BYTES: u64 = 64 << 10;
/// Largest frame limit accepted: a frame is read whole into memory.
const MAX_FRAME_BYTES: u64 = 1 << 30;

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
    #[command(flatten)]
    tls: TlsArgs,
    /// The cluster CA's private key (PEM), with which the SC signs the
    /// certificates `runnel login` asks for. Without it, login is refused.
    #[arg(long, value_name = "FILE", requires = "tls_ca")]
    tls_ca_key: Option<PathBuf>,
    /// A principal allowed everything, whatever the roles say (repeatable).
    #[arg(long, value_name = "NAME", requires = "tls_ca", value_parser = parse_principal)]
    superuser: Vec<String>,
    /// Longest lifetime of a certificate issued at login (e.g. 30d, 12h).
    #[arg(long, default_value_t = defaults::duration(ScConfig::default().max_cert_lifetime),
        value_parser = positive_duration)]
    max_cert_lifetime: runnel_types::Duration,
    #[command(flatten)]
    limits: LimitArgs,
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
    #[command(flatten)]
    tls: TlsArgs,
    /// Most a produce request's batches may decompress to, together (e.g.
    /// 32MiB); past it the request is refused without decompressing
    /// further.
    #[arg(long, default_value_t = ByteSize(SpuConfig::default().max_decompressed_batch_bytes as u64),
        value_parser = positive_size)]
    max_decompressed_batch_bytes: ByteSize,
    #[command(flatten)]
    limits: LimitArgs,
}

/// A node's TLS: with all three files, every listener and every
/// connection to other nodes is TLS 1.3 and clients need certificates.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// The cluster CA's certificate (PEM): peers' certificates must chain
    /// to it. Turns TLS, authentication and authorization on.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), naming `sc` or `spu:<id>`.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// Where a client certificate names its principal: cn (the subject's
    /// common name), san-dns, san-email or san-uri.
    #[arg(long, default_value = "cn")]
    principal_from: PrincipalSource,
}

impl TlsArgs {
    /// The node's TLS material, read from the files; `None` without TLS.
    fn node_tls(&self) -> Result<Option<NodeTls>, Box<dyn std::error::Error>> {
        let (Some(ca), Some(cert), Some(key)) = (&self.tls_ca, &self.tls_cert, &self.tls_key)
        else {
            return Ok(None);
        };
        Ok(Some(NodeTls::from_files(
            ca,
            cert,
            key,
            self.principal_from,
        )?))
    }
}

/// Limits on what peers control, for every listener of the process and
/// its connections. The defaults are [`TransportConfig::default`]'s.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Largest frame accepted or sent (e.g. 64MiB).
    #[arg(long, default_value_t = defaults::max_frame_bytes(), value_parser = frame_size)]
    max_frame_bytes: ByteSize,
    /// Connections served at once from one IP address; more are closed.
    #[arg(long, default_value_t = TransportConfig::default().max_connections_per_addr as u32,
        value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_addr: u32,
    /// Requests one connection may have in progress at once.
    #[arg(long, default_value_t = TransportConfig::default().max_in_flight as u32,
        value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight: u32,
    /// Bytes of one stream's responses queued for a slow reader (e.g.
    /// 32MiB).
    #[arg(long, default_value_t = defaults::max_stream_queued_bytes(), value_parser = positive_size)]
    max_stream_queued_bytes: ByteSize,
    /// How long a client has to finish the TLS handshake (e.g. 10s).
    #[arg(long, default_value_t = defaults::handshake_timeout(), value_parser = positive_duration)]
    handshake_timeout: runnel_types::Duration,
    /// A connection with nothing in progress is closed after this long
    /// without a frame (e.g. 5m).
    #[arg(long, default_value_t = defaults::idle_timeout(), value_parser = positive_duration)]
    idle_timeout: runnel_types::Duration,
    /// How long a connection whose authentication failed is held before
    /// it is closed, to slow guessing (e.g. 1s; 0s closes at once).
    #[arg(long, default_value_t = defaults::failed_auth_delay())]
    failed_auth_delay: runnel_types::Duration,
}

impl LimitArgs {
    /// `transport` with these limits.
    fn apply(&self, transport: TransportConfig) -> TransportConfig {
        TransportConfig {
            max_frame_bytes: self.max_frame_bytes.as_u64() as usize,
            max_connections_per_addr: self.max_connections_per_addr as usize,
            max_in_flight: self.max_in_flight as usize,
            max_stream_queued_bytes: self.max_stream_queued_bytes.as_u64() as usize,
            handshake_timeout: self.handshake_timeout.to_std(),
            idle_timeout: self.idle_timeout.to_std(),
            failed_auth_delay: self.failed_auth_delay.to_std(),
            ..transport
        }
    }
}

/// [`TransportConfig::default`]'s limits in the units flags take.
mod defaults {
    use runnel_transport::TransportConfig;
    use runnel_types::{ByteSize, Duration};

    pub fn duration(duration: std::time::Duration) -> Duration {
        Duration::from_millis(duration.as_millis() as u64)
    }

    pub fn max_frame_bytes() -> ByteSize {
        ByteSize(TransportConfig::default().max_frame_bytes as u64)
    }

    pub fn max_stream_queued_bytes() -> ByteSize {
        ByteSize(TransportConfig::default().max_stream_queued_bytes as u64)
    }

    pub fn handshake_timeout() -> Duration {
        duration(TransportConfig::default().handshake_timeout)
    }

    pub fn idle_timeout() -> Duration {
        duration(TransportConfig::default().idle_timeout)
    }

    pub fn failed_auth_delay() -> Duration {
        duration(TransportConfig::default().failed_auth_delay)
    }
}

/// A principal named on the command line, as bindings and superusers
/// take it.
pub(crate) fn parse_principal(text: &str) -> Result<String, String> {
    runnel_auth::validate_principal(text)
        .map(|()| text.to_string())
        .map_err(|error| error.to_string())
}

pub(crate) fn positive_duration(text: &str) -> Result<runnel_types::Duration, String> {
    let duration: runnel_types::Duration = text.parse().map_err(|error| format!("{error}"))?;
    if duration.as_millis() == 0 {
        return Err("it must be longer than 0 (e.g. 10s)".into());
    }
    Ok(duration)
}

fn positive_size(text: &str) -> Result<ByteSize, String> {
    let size: ByteSize = text.parse().map_err(|error| format!("{error}"))?;
    if size.as_u64() == 0 {
        return Err("it must be larger than 0 (e.g. 32MiB)".into());
    }
    if usize::try_from(size.as_u64()).is_err() {
        return Err("it is larger than this machine can address".into());
    }
    Ok(size)
}

fn frame_size(text: &str) -> Result<ByteSize, String> {
    let size = positive_size(text)?;
    if size.as_u64() < MIN_FRAME_BYTES {
        return Err(format!(
            "it must be at least {} so ordinary requests fit",
            ByteSize(MIN_FRAME_BYTES)
        ));
    }
    if size.as_u64() > MAX_FRAME_BYTES {
        return Err(format!(
            "it must be at most {}: a frame is held whole in memory",
            ByteSize(MAX_FRAME_BYTES)
        ));
    }
    Ok(size)
}

/// Reads the CA key the SC signs login certificates with.
fn read_ca_key(path: Option<&Path>) -> Result<Option<Vec<u8>>, Box<dyn std::error::Error>> {
    path.map(|path| {
        std::fs::read(path)
            .map_err(|error| format!("cannot read the CA key {}: {error}", path.display()).into())
    })
    .transpose()
}

pub fn run_sc(args: ScArgs) -> CommandResult {
    let config = ScConfig {
        data_dir: args.data_dir,
        public_addr: args.public_addr,
        private_addr: args.private_addr,
        session_timeout: args.session_timeout.to_std(),
        tls: args.tls.node_tls()?,
        ca_key_pem: read_ca_key(args.tls_ca_key.as_deref())?,
        superusers: args.superuser,
        max_cert_lifetime: args.max_cert_lifetime.to_std(),
        transport: args.limits.apply(TransportConfig::default()),
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
        tls: args.tls.node_tls()?,
        max_decompressed_batch_bytes: args.max_decompressed_batch_bytes.as_u64() as usize,
        transport: args.limits.apply(TransportConfig::default()),
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Limits {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn limit_defaults_are_the_transport_defaults() {
        let defaults = TransportConfig::default();
        let parsed = Limits::try_parse_from(["limits"]).expect("no flags");
        let applied = parsed.limits.apply(TransportConfig {
            max_frame_bytes: 1,
            max_connections_per_addr: 1,
            max_in_flight: 1,
            max_stream_queued_bytes: 1,
            handshake_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            failed_auth_delay: Duration::ZERO,
            ..TransportConfig::default()
        });
        assert_eq!(applied.max_frame_bytes, defaults.max_frame_bytes);
        assert_eq!(
            applied.max_connections_per_addr,
            defaults.max_connections_per_addr
        );
        assert_eq!(applied.max_in_flight, defaults.max_in_flight);
        assert_eq!(
            applied.max_stream_queued_bytes,
            defaults.max_stream_queued_bytes
        );
        assert_eq!(applied.handshake_timeout, defaults.handshake_timeout);
        assert_eq!(applied.idle_timeout, defaults.idle_timeout);
        assert_eq!(applied.failed_auth_delay, defaults.failed_auth_delay);
    }

    #[test]
    fn limit_flags_reach_the_transport_config() {
        let parsed = Limits::try_parse_from([
            "limits",
            "--max-frame-bytes",
            "1MiB",
            "--max-connections-per-addr",
            "8",
            "--max-in-flight",
            "16",
            "--max-stream-queued-bytes",
            "2MiB",
            "--handshake-timeout",
            "2s",
            "--idle-timeout",
            "1m",
            "--failed-auth-delay",
            "0s",
        ])
        .expect("valid flags");
        let applied = parsed.limits.apply(TransportConfig::default());
        assert_eq!(applied.max_frame_bytes, 1 << 20);
        assert_eq!(applied.max_connections_per_addr, 8);
        assert_eq!(applied.max_in_flight, 16);
        assert_eq!(applied.max_stream_queued_bytes, 2 << 20);
        assert_eq!(applied.handshake_timeout, Duration::from_secs(2));
        assert_eq!(applied.idle_timeout, Duration::from_secs(60));
        assert_eq!(applied.failed_auth_delay, Duration::ZERO);
    }
}
