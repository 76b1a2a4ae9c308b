//! The proxy-wasm glue: the only code that calls the host. It gathers inputs (configuration
//! bytes, request headers, the clock), calls the pure core, and acts on its decisions.

mod entitlements;
mod events;
mod fleet;
mod http;
mod logger;
mod metrics;
mod root;
mod shared_data;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    logger::install();
    proxy_wasm::set_root_context(|id| Box::new(root::Root::new(id)));
}}

/// Current time in Unix seconds; `None` only if the host cannot tell.
fn now() -> Option<i64> {
    now_ms().map(|ms| ms.div_euclid(1000))
}

/// Current time in Unix milliseconds; `None` only if the host cannot tell.
fn now_ms() -> Option<i64> {
    let time = proxy_wasm::hostcalls::get_current_time().ok()?;
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    // Whole seconds and milliseconds apart: 64-bit arithmetic (`as_millis` is 128-bit, which
    // wasm32 emulates, on every request).
    let seconds = i64::try_from(since.as_secs()).ok()?;
    Some(seconds * 1000 + i64::from(since.subsec_millis()))
}

// The SDK's `hostcalls::log` panics when the host answers anything but Ok; the panic hook and
// the logger must not be able to panic, so they call the ABI function directly and ignore the
// answer. Same import as the SDK's, with the status read as a plain integer (an unexpected
// value must not be turned into an enum).
#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
}

/// Logs through the host, ignoring a failure to log (which must not become a trap).
fn host_log(level: LogLevel, message: &str) {
    // SAFETY: the pointer and length describe `message`, which outlives the call; the host
    // only reads that many bytes.
    let _status = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}
