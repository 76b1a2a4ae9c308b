//! The proxy-wasm glue: the only code that calls the host. It gathers inputs (configuration
//! bytes, request headers, the clock), calls the pure core, and acts on its decisions.

mod http;
mod logger;
mod metrics;
mod root;
mod shared_data;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    logger::install();
    proxy_wasm::set_root_context(|_| Box::new(root::Root::default()));
}}

/// Current time in Unix seconds; `None` only if the host cannot tell.
fn now() -> Option<i64> {
    let time = proxy_wasm::hostcalls::get_current_time().ok()?;
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_secs()).ok()
}

/// Logs through the host, ignoring a failure to log (which must not become a trap).
fn host_log(level: LogLevel, message: &str) {
    let _ = proxy_wasm::hostcalls::log(level, message);
}
