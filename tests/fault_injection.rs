//! The fault-injection seam exists only in the test build (`make build-fault`, feature
//! `fault-injection`), never in the shipped `.wasm`: no header name, no code that reads it,
//! no export of its own.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

const SEAM: &[u8] = b"x-tollgate-fault-injection";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn leb128(bytes: &[u8], at: &mut usize) -> usize {
    let (mut value, mut shift) = (0usize, 0);
    loop {
        let byte = bytes[*at];
        *at += 1;
        value |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

/// The names a Wasm module exports (its export section, id 7).
fn exports(wasm: &[u8]) -> Vec<String> {
    assert_eq!(&wasm[..4], b"\0asm", "not a Wasm module");
    let mut at = 8;
    let mut names = Vec::new();
    while at < wasm.len() {
        let id = wasm[at];
        at += 1;
        let size = leb128(wasm, &mut at);
        let end = at + size;
        if id == 7 {
            let mut p = at;
            for _ in 0..leb128(wasm, &mut p) {
                let len = leb128(wasm, &mut p);
                names.push(String::from_utf8(wasm[p..p + len].to_vec()).unwrap());
                p += len;
                p += 1; // kind
                leb128(wasm, &mut p); // index
            }
        }
        at = end;
    }
    names
}

#[test]
fn the_shipped_wasm_has_no_fault_injection_seam() {
    let shipped = std::fs::read(wasm_path()).unwrap();
    let fault = std::fs::read(fault_wasm_path()).unwrap();
    // The check can tell: the test build does carry the seam.
    assert!(
        contains(&fault, SEAM),
        "the fault-injection build lacks the seam"
    );
    assert!(
        !contains(&shipped, SEAM),
        "{} carries the fault-injection header",
        wasm_path().display()
    );
    let (shipped_exports, fault_exports) = (exports(&shipped), exports(&fault));
    assert!(shipped_exports
        .iter()
        .any(|e| e == "proxy_on_request_headers"));
    assert_eq!(shipped_exports, fault_exports, "no export of its own");
    assert!(!shipped_exports.iter().any(|e| e.contains("fault")));
}
