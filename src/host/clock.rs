//! The host's clock.

/// Current time in Unix seconds; `None` only if the host cannot tell.
pub fn now() -> Option<i64> {
    now_ms().map(|ms| ms.div_euclid(1000))
}

/// Current time in Unix milliseconds; `None` only if the host cannot tell.
pub fn now_ms() -> Option<i64> {
    let time = proxy_wasm::hostcalls::get_current_time().ok()?;
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    // Whole seconds and milliseconds apart: 64-bit arithmetic (`as_millis` is 128-bit, which
    // wasm32 emulates, on every request).
    let seconds = i64::try_from(since.as_secs()).ok()?;
    Some(seconds * 1000 + i64::from(since.subsec_millis()))
}
