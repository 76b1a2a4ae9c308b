//! Bodies and properties, read and written without the SDK's panics: its `get_buffer`,
//! `set_buffer` and `get_property` trap on any status they do not expect (a body that is
//! not there any more, a property Envoy does not know), and a trap would take the worker's
//! VM with it. These call the ABI and answer `None`/`false` instead.

use proxy_wasm::types::BufferType;

// Same imports as the SDK's, with the status as a `u32`.
#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
}

const OK: u32 = 0;

/// Takes ownership of what the host allocated for an answer.
fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: the host allocated the value through the SDK's `proxy_on_memory_allocate` (a
    // boxed slice of exactly `size` bytes from the global allocator), owned by nobody else,
    // fully written: it is ours as a Vec of length and capacity `size`.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// `size` bytes of a buffer from `start` (the request or response body of the current
/// context: in a streamed callback, the current chunk).
pub fn get(buffer: BufferType, start: usize, size: usize) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: the two out-pointers are valid locals the host writes once each on success.
    let status = unsafe { proxy_get_buffer_bytes(buffer as u32, start, size, &mut data, &mut len) };
    (status == OK).then(|| owned(data, len))
}

/// Replaces `size` bytes of a buffer from `start` with `value`.
/// The largest answer read from the store (quotad's rate limit and payments answers are a
/// few hundred bytes): a larger one is not read, and so is a failed call.
pub const MAX_GRPC_ANSWER: usize = 64 * 1024;

/// The body of the gRPC answer being handled (`status` 0), read from the effective context
/// (where Envoy put it: the context the call was made from); `None` for a failed call or one
/// past [`MAX_GRPC_ANSWER`] (a store error, as no answer is).
pub fn grpc_answer(status: u32, size: usize) -> Option<Vec<u8>> {
    if status != 0 || size > MAX_GRPC_ANSWER {
        return None;
    }
    Some(get(BufferType::GrpcReceiveBuffer, 0, size).unwrap_or_default())
}

pub fn set(buffer: BufferType, start: usize, size: usize, value: &[u8]) -> bool {
    // SAFETY: the pointer and length describe `value`, which the host only reads.
    let status =
        unsafe { proxy_set_buffer_bytes(buffer as u32, start, size, value.as_ptr(), value.len()) };
    status == OK
}

/// A property of the stream (e.g. `xds.route_name`), by its path's segments.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    // The ABI's path: the segments, separated by NULs.
    let mut serialized = Vec::with_capacity(path.iter().map(|p| p.len() + 1).sum());
    for segment in path {
        serialized.extend_from_slice(segment.as_bytes());
        serialized.push(0);
    }
    // As the SDK does: no NUL after the last segment.
    serialized.pop();
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: the path pointer and length describe `serialized`; the out-pointers are valid
    // locals the host writes once each on success.
    let status =
        unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut len) };
    (status == OK).then(|| owned(data, len))
}
