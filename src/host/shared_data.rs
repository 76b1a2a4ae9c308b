//! [`Store`] over proxy-wasm shared data (one map per `vm_id`, shared by all workers).

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use crate::store::{SetError, Store, StoreError};

pub struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((_, None)) => Ok(None),
            Ok((value, Some(cas))) => Ok(Some((value.unwrap_or_default(), cas))),
            Err(status) => Err(StoreError(format!("get_shared_data: {status:?}"))),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        let cas = if cas == 0 { None } else { Some(cas) };
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(status) => Err(SetError::Failed(StoreError(format!(
                "set_shared_data: {status:?}"
            )))),
        }
    }
}
