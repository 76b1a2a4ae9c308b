//! A `log` backend and panic hook that can never panic themselves (the SDK's own logger
//! unwraps the host's answer; ours ignores a failure to log).

use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        host_log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Installs the logger and the panic hook. Runs in `_initialize`, where Envoy allows no host
/// calls: the level is read later, by [`sync_level`].
pub fn install() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    std::panic::set_hook(Box::new(|info| {
        host_log(LogLevel::Critical, &format!("tollgate panicked: {info}"));
    }));
}

/// Follows Envoy's log level for wasm (e.g. `--component-log-level wasm:debug`), so that
/// debug lines cost nothing unless asked for.
pub fn sync_level() {
    let filter = match hostcalls::get_log_level() {
        Ok(LogLevel::Trace) => log::LevelFilter::Trace,
        Ok(LogLevel::Debug) => log::LevelFilter::Debug,
        Ok(LogLevel::Info) | Err(_) => log::LevelFilter::Info,
        Ok(LogLevel::Warn) => log::LevelFilter::Warn,
        Ok(LogLevel::Error) | Ok(LogLevel::Critical) => log::LevelFilter::Error,
    };
    log::set_max_level(filter);
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
pub fn host_log(level: LogLevel, message: &str) {
    // SAFETY: the pointer and length describe `message`, which outlives the call; the host
    // only reads that many bytes.
    let _status = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}
