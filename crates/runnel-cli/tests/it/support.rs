//! A local cluster of real `runnel` processes for one test: its own
//! RUNNEL_HOME, free ports, and every process killed by pid on drop, even
//! when the test fails.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use runnel_testkit::free_ports;
use serde_json::Value;

pub fn runnel_binary() -> &'static str {
    env!("CARGO_BIN_EXE_runnel")
}

#[derive(Debug)]
pub struct TestCluster {
    pub home: tempfile::TempDir,
    pub base_port: u16,
}

impl TestCluster {
    /// Starts an SC and `spus` SPUs with `runnel cluster start`.
    pub fn start(spus: u32) -> TestCluster {
        TestCluster::start_with(spus, &[])
    }

    /// Starts a cluster with more `cluster start` flags.
    pub fn start_with(spus: u32, flags: &[&str]) -> TestCluster {
        let home = tempfile::tempdir().expect("temporary RUNNEL_HOME");
        let cluster = TestCluster {
            base_port: free_ports(2 + 2 * spus as u16),
            home,
        };
        let base_port = cluster.base_port.to_string();
        let spus = spus.to_string();
        let mut args = vec![
            "cluster",
            "start",
            "--spus",
            &spus,
            "--base-port",
            &base_port,
        ];
        args.extend_from_slice(flags);
        cluster.ok(&args);
        cluster
    }

    /// `runnel cluster start` again, with no flags: the cluster's settings
    /// are remembered, and whatever is not running starts.
    pub fn cluster_start(&self) -> String {
        self.ok(&["cluster", "start"])
    }

    pub fn sc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.base_port)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(runnel_binary());
        command
            .args(args)
            .env("RUNNEL_HOME", self.home.path())
            .env_remove("RUNNEL_PROFILE");
        command
    }

    /// Runs `runnel ARGS` with `stdin`, to completion.
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runnel starts");
        let mut input = child.stdin.take().expect("piped stdin");
        let stdin = stdin.to_vec();
        let writer = std::thread::spawn(move || input.write_all(&stdin));
        let output = child.wait_with_output().expect("runnel runs");
        // A command may stop reading early (it refused the input).
        match writer.join().expect("stdin writer") {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                panic!("writing runnel's stdin: {error}")
            }
            _ => output,
        }
    }

    /// Runs `runnel ARGS` and returns its standard output; panics with
    /// its standard error if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args, b"");
        assert!(
            output.status.success(),
            "runnel {args:?} failed: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    /// Runs `runnel ARGS`, expects it to fail, and returns its standard
    /// error.
    pub fn fails(&self, args: &[&str], stdin: &[u8]) -> String {
        let output = self.run(args, stdin);
        assert!(
            !output.status.success(),
            "runnel {args:?} should fail but printed: {}",
            text(&output.stdout)
        );
        text(&output.stderr)
    }

    /// Parses one JSON object per line.
    pub fn json_lines(&self, args: &[&str], stdin: &[u8]) -> Vec<Value> {
        let output = self.run(args, stdin);
        assert!(
            output.status.success(),
            "runnel {args:?} failed: {}",
            text(&output.stderr)
        );
        text(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }

    fn run_dir(&self) -> PathBuf {
        self.home.path().join("local").join("run")
    }

    /// The pid of a cluster process (`sc`, `spu-1`, …) from its pid file.
    pub fn pid(&self, process: &str) -> Option<i32> {
        std::fs::read_to_string(self.run_dir().join(format!("{process}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn kill(&self, process: &str) {
        let pid = self.pid(process).expect("the process has a pid file");
        kill_and_reap(pid);
    }

    pub fn data_dir(&self) -> PathBuf {
        self.home.path().join("local").join("data")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.run_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            if let Some(pid) = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                kill_and_reap(pid);
            }
        }
    }
}

/// SIGKILL, then wait (bounded) until the process is gone. Only pids from
/// this test's own pid files are passed here.
fn kill_and_reap(pid: i32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    for _ in 0..500 {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| !stat.contains(") Z "))
            .unwrap_or(false);
        if !alive {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A long-running `runnel` process (a consumer) whose output lines are
/// read by a thread; killed on drop.
#[derive(Debug)]
pub struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Background {
    pub fn spawn(mut command: Command) -> Background {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("runnel starts");
        let stdout: ChildStdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Background { child, lines }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line, waiting at most `timeout` (a bound on a hung test,
    /// not a measurement).
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
