//! [`Store`] over proxy-wasm shared data (one map per `vm_id`, shared by all workers).
//!
//! The ABI is called through tollgate's own imports, not `proxy_wasm::hostcalls`: the SDK's
//! `get_shared_data`/`set_shared_data` (0.2.5) panic on any status but Ok, NotFound and
//! CasMismatch, and declare the status as its `Status` enum, which cannot even hold some of
//! the values a host returns (e.g. 6, InvalidMemoryAccess). Here the status is read as a plain
//! integer and every failure becomes a [`StoreError`], so `on_store_error` decides instead of a
//! trapped VM.
//!
//! A build with the `fault-injection` feature (tests only, never shipped; see
//! [`SharedData::for_request`]) can make these calls fail for real, on request.

use crate::store::{SetError, Store, StoreError};

// Same imports as the SDK's, with the status as a `u32`.
#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
}

// proxy-wasm ABI statuses (proxy_status_t).
const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const CAS_MISMATCH: u32 = 8;

/// The ABI's name of a status, for the log.
fn status_name(status: u32) -> &'static str {
    match status {
        1 => "NotFound",
        2 => "BadArgument",
        3 => "SerializationFailure",
        4 => "ParseFailure",
        5 => "BadExpression",
        6 => "InvalidMemoryAccess",
        7 => "Empty",
        8 => "CasMismatch",
        9 => "ResultMismatch",
        10 => "InternalFailure",
        11 => "BrokenConnection",
        12 => "Unimplemented",
        _ => "unknown status",
    }
}

fn failure(call: &str, status: u32) -> StoreError {
    StoreError(format!("{call}: {} ({status})", status_name(status)))
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SharedData {
    #[cfg(feature = "fault-injection")]
    fault: fault::Fault,
}

impl SharedData {
    /// The store for one HTTP request. In a `fault-injection` build, the request header
    /// `x-tollgate-fault-injection: get` (or `set`) makes this request's shared-data reads
    /// (or writes) fail in Envoy; a shipped build has no such header, code or string.
    pub fn for_request() -> SharedData {
        SharedData {
            #[cfg(feature = "fault-injection")]
            fault: fault::Fault::from_request(),
        }
    }

    /// Where the key is passed to the host: the key itself, or in a fault-injection build
    /// asked to fail, an address outside the VM's memory, which the host refuses with
    /// InvalidMemoryAccess (6) — a real host failure, through the real call.
    fn key_address(&self, key: &str, _write: bool) -> *const u8 {
        #[cfg(feature = "fault-injection")]
        if self.fault.fails(_write) {
            return fault::OUTSIDE_MEMORY;
        }
        key.as_ptr()
    }
}

impl Store for SharedData {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        let mut cas: u32 = 0;
        // SAFETY: the key pointer and length describe `key` (or, in a fault-injection build,
        // an address the host only checks and refuses); the three out-pointers are valid
        // locals the host writes once each on success.
        let status = unsafe {
            proxy_get_shared_data(
                self.key_address(key, false),
                key.len(),
                &mut data,
                &mut size,
                &mut cas,
            )
        };
        match status {
            OK => {
                // The host allocated the value through the SDK's `proxy_on_memory_allocate`
                // (a boxed slice of exactly `size` bytes from the global allocator), so it is
                // owned here as a Vec of length and capacity `size`, freed when dropped.
                let value = if data.is_null() {
                    Vec::new()
                } else {
                    // SAFETY: see above: `data` is a live allocation of `size` bytes with
                    // alignment 1, owned by nobody else, fully written by the host.
                    unsafe { Vec::from_raw_parts(data, size, size) }
                };
                Ok((cas != 0).then_some((value, cas)))
            }
            NOT_FOUND => Ok(None),
            status => Err(failure("get_shared_data", status)),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        // SAFETY: the pointers and lengths describe `key` and `value`, which outlive the call
        // (or, in a fault-injection build, an address the host only checks and refuses); the
        // host only reads them.
        let status = unsafe {
            proxy_set_shared_data(
                self.key_address(key, true),
                key.len(),
                value.as_ptr(),
                value.len(),
                cas,
            )
        };
        match status {
            OK => Ok(()),
            CAS_MISMATCH => Err(SetError::CasMismatch),
            status => Err(SetError::Failed(failure("set_shared_data", status))),
        }
    }
}

/// Test builds only (`--features fault-injection`): shared-data calls that fail on request.
#[cfg(feature = "fault-injection")]
mod fault {
    use proxy_wasm::hostcalls;
    use proxy_wasm::types::MapType;

    /// The request header that asks for a failure: `get` or `set`.
    const HEADER: &str = "x-tollgate-fault-injection";

    /// Past the end of any wasm32 memory Envoy grants a VM.
    pub const OUTSIDE_MEMORY: *const u8 = (u32::MAX - 1024) as usize as *const u8;

    #[derive(Debug, Default, Clone, Copy)]
    pub struct Fault {
        get: bool,
        set: bool,
    }

    impl Fault {
        pub fn from_request() -> Fault {
            let asked = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, HEADER)
                .ok()
                .flatten()
                .unwrap_or_default();
            Fault {
                get: asked == b"get",
                set: asked == b"set",
            }
        }

        pub fn fails(&self, write: bool) -> bool {
            if write {
                self.set
            } else {
                self.get
            }
        }
    }
}
