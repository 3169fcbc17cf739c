//! One cluster process under the test's control: started with fixed
//! arguments, its standard error appended to a log file, and signalled
//! by its pid (kill -9, SIGTERM, SIGSTOP/SIGCONT); restarted with the same
//! arguments. Dropping it kills the process, even when the test panics.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};

/// How long a process may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct Node {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    log_path: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Node {
    /// Starts `program ARGS`, appending its standard error to `log_path`.
    pub fn start(name: &str, program: &Path, args: Vec<OsString>, log_path: PathBuf) -> Node {
        let mut node = Node {
            name: name.to_string(),
            program: program.to_path_buf(),
            args,
            log_path,
            child: None,
            starts: 0,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "{} is still running; stop it before starting it again",
            self.name
        );
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|error| panic!("opening {}: {error}", self.log_path.display()));
        writeln!(log, "=== {} start {} ===", self.name, self.starts).expect("log file writable");
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", self.name));
        self.child = Some(child);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the process is running (possibly stopped by SIGSTOP).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            None => false,
            Some(child) => matches!(child.try_wait(), Ok(None)),
        }
    }

    fn pid(&self) -> Pid {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        Pid::from_child(child)
    }

    fn signal(&self, signal: Signal) {
        kill_process(self.pid(), signal)
            .unwrap_or_else(|error| panic!("sending {signal:?} to {}: {error}", self.name));
    }

    /// kill -9, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // It may have exited already: then the signal finds a zombie
            // (still ours, never reused before the wait) or fails harmlessly.
            let _ = kill_process(Pid::from_child(&child), Signal::KILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean stop; kill -9 if it takes longer
    /// than [`STOP_TIMEOUT`]. Returns how it ended.
    pub async fn terminate(&mut self) -> Result<ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err(format!("{} was not running", self.name));
        };
        let pid = Pid::from_child(&child);
        let _ = kill_process(pid, Signal::TERM);
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {
                    let _ = kill_process(pid, Signal::KILL);
                    let _ = child.wait();
                    return Err(format!(
                        "{} did not stop within {STOP_TIMEOUT:?} of SIGTERM and was killed",
                        self.name
                    ));
                }
            }
        }
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn pause(&self) {
        self.signal(Signal::STOP);
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) {
        self.signal(Signal::CONT);
    }

    /// Starts the process again with the same arguments; it must have
    /// been killed or terminated.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// The last `lines` lines of the log, for a failure report.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|error| format!("(cannot read {}: {error})", self.log_path.display()));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_log(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    /// The state letter of a process in /proc (R, S, T for stopped, Z…).
    fn state(pid: Pid) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    /// Waits (bounded) until the process's state is `wanted`.
    fn wait_for_state(pid: Pid, wanted: char) -> bool {
        for _ in 0..500 {
            if state(pid) == Some(wanted) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Waits (bounded) until the log satisfies `condition`.
    fn wait_for_log(path: &Path, condition: impl Fn(&str) -> bool) -> bool {
        for _ in 0..500 {
            if condition(&read_log(path)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn shell(name: &str, script: &str, dir: &Path) -> Node {
        Node::start(
            name,
            Path::new("/bin/sh"),
            vec!["-c".into(), script.into()],
            dir.join(format!("{name}.log")),
        )
    }

    #[test]
    fn pause_resume_kill_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut node = shell("sleeper", "echo started >&2; exec sleep 60", dir.path());
        let pid = node.pid();
        node.pause();
        assert!(wait_for_state(pid, 'T'), "stopped by SIGSTOP");
        node.resume();
        assert!(wait_for_state(pid, 'S'), "sleeping again after SIGCONT");

        node.kill();
        assert!(!node.is_running());
        assert_eq!(state(pid), None, "killed and reaped");

        node.restart();
        assert!(node.is_running());
        assert_ne!(node.pid(), pid);
        let log = dir.path().join("sleeper.log");
        assert!(
            wait_for_log(&log, |text| text.matches("started").count() == 2),
            "the restarted process writes to the same log: {}",
            read_log(&log)
        );
        assert!(read_log(&log).contains("=== sleeper start 2 ==="));
        let restarted = node.pid();
        drop(node);
        assert_eq!(state(restarted), None, "dropping kills and reaps");
    }

    #[test]
    fn a_paused_process_is_killed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let node = shell("frozen", "exec sleep 60", dir.path());
        let pid = node.pid();
        node.pause();
        assert!(wait_for_state(pid, 'T'));
        drop(node);
        assert_eq!(state(pid), None);
    }

    #[tokio::test]
    async fn terminate_waits_for_a_clean_exit() {
        let dir = tempfile::tempdir().unwrap();
        let mut node = shell(
            "polite",
            "trap 'echo bye >&2; exit 0' TERM; echo ready >&2; while :; do sleep 0.05; done",
            dir.path(),
        );
        let log = dir.path().join("polite.log");
        assert!(wait_for_log(&log, |text| text.contains("ready")));
        let status = node.terminate().await.expect("stops on SIGTERM");
        assert!(status.success(), "{status:?}");
        assert!(node.log_tail(1).contains("bye"), "{}", node.log_tail(5));
        assert!(node.terminate().await.is_err(), "nothing left to stop");
    }
}
