//! `runnel cluster …`: a local cluster of one SC and N SPUs as background
//! processes of this same binary.
//!
//! Everything lives under `RUNNEL_HOME/local/`: `cluster.json` (ports,
//! SPU count, data directory, TLS directory), `run/<process>.pid`,
//! `logs/<process>.log`, `tls/` for a cluster started with `--tls` (see
//! [`tls`]), and by default `data/<process>/`. A process counts as
//! running only if its pid file names a live process whose command line
//! is ours for that role and data directory, so a reused pid is never
//! taken for ours.
//!
//! A cluster started once with `--tls` stays a TLS cluster: its SC runs
//! with the CA key (so `runnel login` works) and `admin` as superuser, and
//! the `local` profile uses the admin certificate.

mod tls;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use runnel_client::{Profile, ProfileTls, Profiles, RunnelClient, runnel_home};
use runnel_types::SpuId;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{ClusterCommand, CommandResult, Output};
use tls::{ADMIN, Identity, TlsFiles};

/// How long `start` waits for the SC to answer and every SPU to be online.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `stop` waits for a process to exit after SIGTERM before it
/// sends SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const PROFILE: &str = "local";

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Number of SPUs (3 for a new cluster; an existing one keeps its
    /// count unless this asks for more).
    #[arg(long)]
    spus: Option<u32>,
    /// First of the ports the cluster uses: the SC takes P and P+1, SPU i
    /// takes P+2i and P+2i+1.
    #[arg(long)]
    base_port: Option<u16>,
    /// Where the processes keep their data (default RUNNEL_HOME/local/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run with TLS on every listener and authorization on: creates a
    /// cluster CA and certificates in RUNNEL_HOME/local/tls (once), makes
    /// `admin` a superuser, and has profile `local` use its certificate.
    /// The cluster stays a TLS cluster on later starts.
    #[arg(long)]
    tls: bool,
}

const DEFAULT_BASE_PORT: u16 = 9003;
const DEFAULT_SPUS: u32 = 3;

/// The settings a cluster was created with; later starts reuse them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Settings {
    base_port: u16,
    spus: u32,
    data_dir: PathBuf,
    /// The CA and certificates of a TLS cluster; none for plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_dir: Option<PathBuf>,
}

impl Settings {
    fn sc_public(&self) -> String {
        format!("127.0.0.1:{}", self.base_port)
    }

    fn sc_private(&self) -> String {
        format!("127.0.0.1:{}", self.base_port + 1)
    }

    fn processes(&self) -> Vec<Process> {
        let mut processes = vec![Process::Sc];
        processes.extend((1..=self.spus).map(|id| Process::Spu(SpuId(id))));
        processes
    }

    fn spu_ports(&self, id: SpuId) -> (u16, u16) {
        let public = self.base_port + 2 * id.0 as u16;
        (public, public + 1)
    }

    fn data_dir_of(&self, process: Process) -> PathBuf {
        self.data_dir.join(process.name())
    }

    fn tls_files(&self) -> Option<TlsFiles> {
        self.tls_dir.clone().map(TlsFiles::new)
    }

    /// The certificates a TLS cluster needs: one per process, and the
    /// admin's.
    fn identities(&self) -> Vec<Identity> {
        let mut identities: Vec<Identity> = self
            .processes()
            .into_iter()
            .map(|process| Identity {
                file_stem: process.name(),
                common_name: process.principal(),
                node: true,
            })
            .collect();
        identities.push(Identity {
            file_stem: ADMIN.to_string(),
            common_name: ADMIN.to_string(),
            node: false,
        });
        identities
    }

    /// The `local` profile: the SC's address, and with TLS, the admin's
    /// certificate.
    fn profile(&self) -> Profile {
        Profile {
            tls: self.tls_files().map(|files| ProfileTls {
                ca: files.ca_cert(),
                cert: files.cert(ADMIN),
                key: files.key(ADMIN),
                domain: None,
            }),
            ..Profile::plaintext(PROFILE, &self.sc_public())
        }
    }

    /// The TLS flags of `process`, none for a plaintext cluster.
    fn tls_arguments(&self, process: Process) -> Vec<String> {
        let Some(files) = self.tls_files() else {
            return Vec::new();
        };
        let path = |path: PathBuf| path.display().to_string();
        let mut arguments = vec![
            "--tls-ca".to_string(),
            path(files.ca_cert()),
            "--tls-cert".to_string(),
            path(files.cert(&process.name())),
            "--tls-key".to_string(),
            path(files.key(&process.name())),
        ];
        if process == Process::Sc {
            arguments.extend([
                "--tls-ca-key".to_string(),
                path(files.ca_key()),
                "--superuser".to_string(),
                ADMIN.to_string(),
            ]);
        }
        arguments
    }

    /// The command line that runs `process`; also how a running process is
    /// recognised.
    fn arguments(&self, process: Process) -> Vec<String> {
        let data_dir = self.data_dir_of(process).display().to_string();
        let mut arguments = match process {
            Process::Sc => vec![
                "run".into(),
                "sc".into(),
                "--public-addr".into(),
                self.sc_public(),
                "--private-addr".into(),
                self.sc_private(),
                "--data-dir".into(),
                data_dir,
            ],
            Process::Spu(id) => {
                let (public, private) = self.spu_ports(id);
                vec![
                    "run".into(),
                    "spu".into(),
                    "--id".into(),
                    id.to_string(),
                    "--public-addr".into(),
                    format!("127.0.0.1:{public}"),
                    "--private-addr".into(),
                    format!("127.0.0.1:{private}"),
                    "--sc-addr".into(),
                    self.sc_private(),
                    "--data-dir".into(),
                    data_dir,
                ]
            }
        };
        arguments.extend(self.tls_arguments(process));
        arguments
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Process {
    Sc,
    Spu(SpuId),
}

impl Process {
    fn name(self) -> String {
        match self {
            Process::Sc => "sc".to_string(),
            Process::Spu(id) => format!("spu-{id}"),
        }
    }

    /// The node identity its certificate names.
    fn principal(self) -> String {
        match self {
            Process::Sc => runnel_auth::SC_PRINCIPAL.to_string(),
            Process::Spu(id) => runnel_auth::spu_principal(id.0),
        }
    }
}

/// The files of the local cluster under RUNNEL_HOME.
#[derive(Debug)]
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn new() -> Result<Layout, Box<dyn std::error::Error>> {
        Ok(Layout {
            root: runnel_home()?.join("local"),
        })
    }

    fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    fn settings_path(&self) -> PathBuf {
        self.root.join("cluster.json")
    }

    fn pid_path(&self, process: Process) -> PathBuf {
        self.root
            .join("run")
            .join(format!("{}.pid", process.name()))
    }

    fn log_path(&self, process: Process) -> PathBuf {
        self.root
            .join("logs")
            .join(format!("{}.log", process.name()))
    }

    /// Holds the cluster's lock file until dropped: one `start`, `stop` or
    /// `delete` at a time, so two never both start an SC.
    fn lock(&self) -> Result<fs::File, Box<dyn std::error::Error>> {
        fs::create_dir_all(&self.root)?;
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|error| format!("cannot lock {}: {error}", path.display()))?;
        Ok(file)
    }

    fn settings(&self) -> Result<Option<Settings>, Box<dyn std::error::Error>> {
        match fs::read(self.settings_path()) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|error| {
                format!(
                    "{} is unreadable ({error}); remove it or run `runnel cluster delete`",
                    self.settings_path().display()
                )
            })?)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn save_settings(&self, settings: &Settings) -> Result<(), Box<dyn std::error::Error>> {
        fs::create_dir_all(&self.root)?;
        let tmp = self.root.join("cluster.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(settings)?)?;
        fs::rename(tmp, self.settings_path())?;
        Ok(())
    }

    /// The pid of `process` if it is running as part of this cluster.
    fn running_pid(&self, settings: &Settings, process: Process) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.pid_path(process))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let arguments: Vec<&[u8]> = cmdline.split(|&byte| byte == 0).skip(1).collect();
        let expected = settings.arguments(process);
        let matches = arguments.len() >= expected.len()
            && expected
                .iter()
                .zip(&arguments)
                .all(|(want, have)| want.as_bytes() == *have);
        matches.then_some(pid)
    }
}

pub async fn run(command: ClusterCommand) -> CommandResult {
    let layout = Layout::new()?;
    let _lock = match command {
        ClusterCommand::Status { .. } => None,
        _ => Some(layout.lock()?),
    };
    match command {
        ClusterCommand::Start(args) => start(&layout, args).await,
        ClusterCommand::Status { output } => status(&layout, output).await,
        ClusterCommand::Stop => stop(&layout).map(|()| ExitCode::SUCCESS),
        ClusterCommand::Delete => delete(&layout),
    }
}

async fn start(layout: &Layout, args: StartArgs) -> CommandResult {
    if args.spus == Some(0) {
        return Err("--spus must be at least 1".into());
    }
    let settings = match layout.settings()? {
        None => Settings {
            base_port: args.base_port.unwrap_or(DEFAULT_BASE_PORT),
            spus: args.spus.unwrap_or(DEFAULT_SPUS),
            data_dir: match args.data_dir {
                Some(dir) => std::path::absolute(dir)?,
                None => layout.root.join("data"),
            },
            tls_dir: args.tls.then(|| layout.tls_dir()),
        },
        Some(existing) => restart_settings(layout, existing, args)?,
    };
    let last_port = u32::from(settings.base_port) + 2 * settings.spus + 1;
    if last_port > u32::from(u16::MAX) {
        return Err(format!(
            "{} SPUs from base port {} need ports up to {last_port}; choose a lower --base-port",
            settings.spus, settings.base_port
        )
        .into());
    }
    if let Some(files) = settings.tls_files() {
        let renewals = files.ensure(&settings.identities(), time::OffsetDateTime::now_utc())?;
        for renewal in &renewals {
            println!(
                "renewed the TLS certificate {} with a new key: {}",
                files.cert(&renewal.file_stem).display(),
                renewal.reason
            );
            let running = settings.processes().into_iter().any(|process| {
                process.name() == renewal.file_stem
                    && layout.running_pid(&settings, process).is_some()
            });
            if running {
                println!(
                    "{} is running and keeps its old certificate until restarted \
                     (`runnel cluster stop`, then `runnel cluster start`)",
                    renewal.file_stem
                );
            }
        }
    }
    layout.save_settings(&settings)?;
    fs::create_dir_all(layout.root.join("run"))?;
    fs::create_dir_all(layout.root.join("logs"))?;

    let mut started = Vec::new();
    let launched = launch_missing(layout, &settings, &mut started).await;
    if let Err(error) = launched {
        // Nothing half-started stays behind: what this run started stops.
        for (process, pid) in &started {
            let _ = terminate(*pid);
            let _ = fs::remove_file(layout.pid_path(*process));
        }
        return Err(error);
    }

    if started.is_empty() {
        println!("the local cluster is already running");
    }
    for (process, pid) in &started {
        println!("started {} (pid {pid})", process.name());
    }
    println!(
        "SC at {}{} with {} SPUs online; profile '{PROFILE}' is current",
        settings.sc_public(),
        if settings.tls_dir.is_some() {
            " (TLS)"
        } else {
            ""
        },
        settings.spus
    );
    println!("logs: {}", layout.root.join("logs").display());
    println!("data: {}", settings.data_dir.display());
    Ok(ExitCode::SUCCESS)
}

/// The settings of a later start: those the cluster was created with,
/// with more SPUs if asked for, and TLS from now on if asked for.
fn restart_settings(
    layout: &Layout,
    existing: Settings,
    args: StartArgs,
) -> Result<Settings, Box<dyn std::error::Error>> {
    if let Some(port) = args.base_port.filter(|&port| port != existing.base_port) {
        return Err(format!(
            "the local cluster uses base port {}, not {port}; omit --base-port, or run \
             `runnel cluster delete` first to make a new cluster",
            existing.base_port
        )
        .into());
    }
    if let Some(dir) = args.data_dir {
        let dir = std::path::absolute(dir)?;
        if dir != existing.data_dir {
            return Err(format!(
                "the local cluster keeps its data in {}, not {}; omit --data-dir, or run \
                 `runnel cluster delete` first",
                existing.data_dir.display(),
                dir.display()
            )
            .into());
        }
    }
    if args.tls && existing.tls_dir.is_none() {
        let running = existing
            .processes()
            .into_iter()
            .any(|process| layout.running_pid(&existing, process).is_some());
        if running {
            return Err("the local cluster is running without TLS; stop it with \
                        `runnel cluster stop`, then start it again with --tls"
                .into());
        }
    }
    Ok(Settings {
        spus: existing.spus.max(args.spus.unwrap_or(0)),
        tls_dir: existing
            .tls_dir
            .clone()
            .or_else(|| args.tls.then(|| layout.tls_dir())),
        ..existing
    })
}

/// Starts every process of the cluster that is not running, points the
/// `local` profile at it, and waits until every SPU is online.
async fn launch_missing(
    layout: &Layout,
    settings: &Settings,
    started: &mut Vec<(Process, i32)>,
) -> Result<(), Box<dyn std::error::Error>> {
    for process in settings.processes() {
        if layout.running_pid(settings, process).is_some() {
            continue;
        }
        fs::create_dir_all(settings.data_dir_of(process))?;
        let pid = spawn(layout, settings, process)?;
        started.push((process, pid));
    }

    let mut profiles = Profiles::load(&runnel_home()?)?;
    profiles.upsert(settings.profile());
    profiles.switch(PROFILE)?;
    profiles.save()?;

    let ids: Vec<SpuId> = (1..=settings.spus).map(SpuId).collect();
    wait_until_online(layout, settings, &ids).await
}

fn spawn(
    layout: &Layout,
    settings: &Settings,
    process: Process,
) -> Result<i32, Box<dyn std::error::Error>> {
    use std::os::unix::process::CommandExt;

    let log_path = layout.log_path(process);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|error| format!("cannot open {}: {error}", log_path.display()))?;
    let child = Command::new(std::env::current_exe()?)
        .args(settings.arguments(process))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // A group of its own: a Ctrl-C in the terminal that started the
        // cluster does not stop it.
        .process_group(0)
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", process.name()))?;
    let pid = child.id() as i32;
    let pid_path = layout.pid_path(process);
    let tmp = pid_path.with_extension("pid.tmp");
    fs::write(&tmp, format!("{pid}\n"))?;
    fs::rename(&tmp, &pid_path)?;
    Ok(pid)
}

async fn wait_until_online(
    layout: &Layout,
    settings: &Settings,
    ids: &[SpuId],
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + START_TIMEOUT;
    let logs = layout.root.join("logs");
    let profile = settings.profile();
    let client = loop {
        match RunnelClient::connect_profile(&profile).await {
            Ok(client) => break client,
            Err(error) if !error.is_retriable() => {
                return Err(format!(
                    "cannot connect to the SC: {error}; see {}",
                    layout.log_path(Process::Sc).display()
                )
                .into());
            }
            Err(error) => {
                if layout.running_pid(settings, Process::Sc).is_none() {
                    return Err(format!(
                        "the SC exited during start-up; see {}",
                        layout.log_path(Process::Sc).display()
                    )
                    .into());
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "the SC did not answer within {START_TIMEOUT:?} ({error}); see the logs in {}",
                        logs.display()
                    )
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let online = |view: &runnel_metadata::MetadataView| {
        ids.iter()
            .all(|id| view.spus.get(id).is_some_and(|spu| spu.online))
    };
    if let Err(error) = client.wait_for_metadata(online, remaining).await {
        let offline: Vec<String> = ids
            .iter()
            .filter(|id| !client.metadata().spus.get(id).is_some_and(|spu| spu.online))
            .map(|id| layout.log_path(Process::Spu(*id)).display().to_string())
            .collect();
        return Err(format!(
            "not every SPU came online ({error}); see {}",
            offline.join(", ")
        )
        .into());
    }
    Ok(())
}

async fn status(layout: &Layout, output: Output) -> CommandResult {
    let Some(settings) = layout.settings()? else {
        match output {
            Output::Json => println!("{}", json!({"exists": false})),
            Output::Text => println!("no local cluster; start one with `runnel cluster start`"),
        }
        return Ok(ExitCode::SUCCESS);
    };
    let spus = match RunnelClient::connect_profile(&settings.profile()).await {
        Ok(client) => client.admin().list_spus().await.ok(),
        Err(_) => None,
    };
    let mut rows = Vec::new();
    for process in settings.processes() {
        let pid = layout.running_pid(&settings, process);
        let online = match process {
            Process::Sc => None,
            Process::Spu(id) => Some(
                spus.as_ref()
                    .is_some_and(|spus| spus.iter().any(|spu| spu.spec.id == id && spu.online)),
            ),
        };
        rows.push(json!({
            "process": process.name(),
            "pid": pid,
            "running": pid.is_some(),
            "online": online,
            "data_dir": settings.data_dir_of(process),
            "log": layout.log_path(process),
        }));
    }
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "exists": true,
                "sc_address": settings.sc_public(),
                "sc_reachable": spus.is_some(),
                "processes": rows,
            })
        ),
        Output::Text => {
            println!(
                "SC {} ({})",
                settings.sc_public(),
                if spus.is_some() {
                    "reachable"
                } else {
                    "not reachable"
                }
            );
            let mut table = crate::admin::table(["PROCESS", "PID", "STATE", "LOG"]);
            for row in &rows {
                let state = match (row["running"].as_bool(), row["online"].as_bool()) {
                    (Some(false), _) => "stopped",
                    (_, Some(false)) => "running, offline",
                    (_, Some(true)) => "running, online",
                    _ => "running",
                };
                table.add_row([
                    row["process"].as_str().unwrap_or_default().to_string(),
                    row["pid"]
                        .as_i64()
                        .map(|pid| pid.to_string())
                        .unwrap_or_default(),
                    state.to_string(),
                    row["log"].as_str().unwrap_or_default().to_string(),
                ]);
            }
            println!("{table}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Stops SPUs first (they close their logs cleanly), then the SC.
fn stop(layout: &Layout) -> Result<(), Box<dyn std::error::Error>> {
    let Some(settings) = layout.settings()? else {
        println!("no local cluster");
        return Ok(());
    };
    let mut processes = settings.processes();
    processes.rotate_left(1);
    for process in processes {
        let Some(pid) = layout.running_pid(&settings, process) else {
            let _ = fs::remove_file(layout.pid_path(process));
            continue;
        };
        terminate(pid)?;
        let _ = fs::remove_file(layout.pid_path(process));
        println!("stopped {} (pid {pid})", process.name());
    }
    Ok(())
}

/// SIGTERM, then SIGKILL if the process has not exited in time.
fn terminate(pid: i32) -> Result<(), Box<dyn std::error::Error>> {
    use rustix::process::{Pid, Signal, kill_process, test_kill_process};

    let pid = Pid::from_raw(pid).ok_or("pid 0 in a pid file")?;
    if kill_process(pid, Signal::TERM).is_err() {
        return Ok(());
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while test_kill_process(pid).is_ok() && !is_zombie(pid.as_raw_nonzero().get()) {
        if Instant::now() > deadline {
            let _ = kill_process(pid, Signal::KILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// An exited process whose parent has not collected it yet.
fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1;
            after_name
                .split_whitespace()
                .next()
                .map(|state| state == "Z")
        })
        .unwrap_or(false)
}

/// Removes what the cluster created: each process's data directory (and
/// the data directory itself only if that leaves it empty: it may be a
/// directory of the user's), then RUNNEL_HOME/local.
fn delete(layout: &Layout) -> CommandResult {
    let settings = layout.settings()?;
    stop(layout)?;
    if let Some(settings) = settings {
        for process in settings.processes() {
            remove_dir(&settings.data_dir_of(process))?;
        }
        let _ = fs::remove_dir(&settings.data_dir);
    }
    remove_dir(&layout.root)?;
    let mut profiles = Profiles::load(&runnel_home()?)?;
    if profiles
        .list()
        .iter()
        .any(|profile| profile.name == PROFILE)
    {
        profiles.delete(PROFILE)?;
        profiles.save()?;
    }
    println!("deleted the local cluster and its data");
    Ok(ExitCode::SUCCESS)
}

fn remove_dir(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    match fs::remove_dir_all(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove {}: {error}", path.display()).into())
        }
        _ => Ok(()),
    }
}
