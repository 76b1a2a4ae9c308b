//! Waiting without sleeping as synchronisation: polling a condition against a deadline, and
//! aligning a scenario to a quota window (alignment is the one place a test sleeps).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a service (Redis, quotad, Envoy) gets to become ready on a loaded machine.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(90);

/// How long a test waits for something that should happen (a failover, decisions resuming).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Between two looks at a condition: often enough to add little to a test's time, seldom enough
/// that looking (an Envoy `/stats` page, a `redis-cli` process) does not load a busy machine.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `check` until it returns `Some`, or panics (naming `what`) after `deadline`.
pub fn poll<T>(deadline: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `ready` until it holds, or panics (naming `what`) after `deadline`.
pub fn wait_for(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    poll(deadline, what, || ready().then_some(()));
}

/// Unix seconds now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Whole Unix seconds now.
pub fn now() -> i64 {
    unix_now().floor() as i64
}

/// Start of the fixed window of `len` seconds containing Unix time `t` (epoch-aligned, as
/// tollgate aligns its windows).
pub fn window_start(t: f64, len: u64) -> f64 {
    (t / len as f64).floor() * len as f64
}

/// If the fixed window of `len` seconds (epoch-aligned, shifted by `offset` seconds east of
/// UTC) has less than `need` seconds left, sleeps into the next one.
fn room_in_window(len: u64, need: f64, offset: f64) {
    let now = unix_now() + offset;
    let left = window_start(now, len) + len as f64 - now;
    if left < need {
        std::thread::sleep(Duration::from_secs_f64(left + 0.02));
    }
}

/// Waits until the current fixed window of `len` seconds has at least `need` seconds left, so
/// that a sequence of requests falls into one window (alignment, not synchronisation).
pub fn align_to_window(len: u64, need: impl Into<f64>) {
    room_in_window(len, need.into(), 0.0);
}

/// Runs `scenario` inside one fixed window of `len` seconds. If less than `need` seconds are
/// left in the current window, it first waits for the next one to begin (alignment, not
/// synchronisation). If the machine was too slow to finish before the window ended, it runs
/// the scenario again (at most `tries` times; each gets its attempt number so that it can use
/// fresh consumers). Returns the result of the attempt that fit.
pub fn within_one_window<T>(
    len: u64,
    need: f64,
    tries: u32,
    mut scenario: impl FnMut(u32) -> T,
) -> T {
    for attempt in 0..tries {
        align_to_window(len, need);
        let window = window_start(unix_now(), len);
        let result = scenario(attempt);
        if window_start(unix_now(), len) == window {
            return result;
        }
        eprintln!("attempt {attempt} did not fit in one {len}s window; retrying");
    }
    panic!("the scenario never fit in one {len}s window in {tries} attempts (machine too slow?)");
}

/// Waits out the last 40 s before a calendar day ends at UTC or at +05:30 (the offsets the
/// tests use; month ends are day ends), so that a test's requests fall in one day and month.
pub fn clear_of_day_boundary() {
    for offset in [0.0, 5.0 * 3600.0 + 30.0 * 60.0] {
        room_in_window(86_400, 40.0, offset);
    }
}
