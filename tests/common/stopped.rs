//! Whether a process is stopped (SIGSTOP): shared by this harness and quotad's
//! (`quotad/tests/common` includes this file by path).

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
