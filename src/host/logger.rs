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
        super::host_log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Installs the logger and the panic hook. Runs in `_initialize`, where Envoy allows no host
/// calls: the level is read later, by [`sync_level`].
pub fn install() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    std::panic::set_hook(Box::new(|info| {
        super::host_log(LogLevel::Critical, &format!("tollgate panicked: {info}"));
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
