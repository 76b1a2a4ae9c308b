//! The environment `authorization_env` fields are read from. The filter reads the Wasm VM's
//! (what Envoy's `vm_config.environment_variables` gives it), which the command line cannot
//! see: a variable set in the command line's own environment is checked as the filter checks
//! it; one that is not set stands in as a valid value, so that the rest of the configuration is
//! still checked, and is reported, since Envoy refuses the configuration if its VM lacks it.

use std::cell::RefCell;

/// A valid value for a variable the command line cannot read: an `Authorization` value, and
/// long enough for a secret (`payments.http_payment.secret_env` asks for 32 bytes or more).
const STAND_IN: &str = "Bearer stand-in-for-a-variable-not-set-here";

#[derive(Default)]
pub struct Environment {
    /// Variables asked for and not set here, in order, each once.
    unset: RefCell<Vec<String>>,
}

impl Environment {
    /// Reads `name` from this process's environment, or stands in for it (and notes it).
    pub fn var(&self, name: &str) -> Option<String> {
        if let Ok(value) = std::env::var(name) {
            return Some(value);
        }
        let mut unset = self.unset.borrow_mut();
        if !unset.iter().any(|n| n == name) {
            unset.push(name.to_string());
        }
        Some(STAND_IN.to_string())
    }

    /// One line per variable that was not set here (and forgets them, for the next
    /// configuration).
    pub fn notes(&self) -> Vec<String> {
        self.unset
            .take()
            .into_iter()
            .map(|name| {
                format!(
                    "note: environment variable `{name}` is not set here, so its value was not \
                     checked; Envoy refuses the configuration unless the Wasm VM gets it \
                     (vm_config.environment_variables)"
                )
            })
            .collect()
    }
}
