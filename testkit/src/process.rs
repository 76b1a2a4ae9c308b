//! Child processes: started with their output captured to a log file, stopped by their PID
//! when their guard drops (a failing test too), their log printed if the test is failing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::poll::{wait_for, DEADLINE};

/// A child process stopped by its PID on drop (continued first if frozen), its log printed if
/// the test is failing.
pub struct Process {
    child: Option<Child>,
    name: String,
    log: PathBuf,
    printed: bool,
}

impl Process {
    /// Spawns `command` with stdin closed and stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Process {
        let file =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Process {
            child: Some(child),
            name: name.to_string(),
            log,
            printed: false,
        }
    }

    /// The process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        child.try_wait().unwrap().map(|s| s.to_string())
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// SIGSTOP, then waits until every thread of the process is stopped.
    pub fn freeze(&self) {
        self.signal("STOP");
        let pid = self.pid();
        wait_for("the process to stop (SIGSTOP)", DEADLINE, || {
            all_threads_stopped(pid)
        });
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    /// SIGKILL (nothing flushed, no drain, as a crash would), and waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process must be continued to die of SIGKILL promptly (one that has
            // exited already is left alone: its PID is no longer its own).
            if matches!(child.try_wait(), Ok(None)) {
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (at most `deadline`) for the exit status.
    pub fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        self.signal("TERM");
        let child = self.child.as_mut().expect("the process is running");
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < until,
                "{} did not exit after SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `deadline`) for the process to exit by itself: its status, or `None` if
    /// it is still running then.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops the process and, if the test is failing, prints its log (once). Owners call it
    /// before they remove the directory the log is in.
    pub fn finish(&mut self) {
        self.stop();
        if std::thread::panicking() && !self.printed {
            self.printed = true;
            eprintln!(
                "\n===== {} log ({}) =====\n{}\n===== end of {} log =====",
                self.name,
                self.log.display(),
                self.log(),
                self.name
            );
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Every thread of process `pid` is in state T. `kill -STOP` returns once the signal is sent,
/// and on a busy machine a thread stops only when it is next scheduled — meanwhile it can still
/// answer (seen: a "frozen" quotad granted a lease 5 ms after `kill`), so a freeze waits for this.
pub fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
        })
    })
}

/// What a command that ran to completion printed, and its exit code (-1: killed by a signal).
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to completion with `stdin` as its input, capturing its output.
pub fn run_with_input(command: &mut Command, stdin: &str) -> Out {
    let program = command.get_program().to_string_lossy().to_string();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}
