//! LLM requests held at their body in fleet mode (while their consumer's lease is refilled):
//! what deciding one again from another context needs — the headers its dry run kept, its
//! store, its body to rewrite — and what it was charged, for its own context's settlement.
//! Shared by the HTTP context (which holds and settles) and fleet mode's host (which decides
//! again), so that neither imports the other.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::types::BufferType;

use super::buffers;
use super::request::{run_with, unavailable};
use super::runtime::Runtime;
use super::shared_data::SharedData;
use crate::decision::{Attempt, Charged};
use crate::verdict::Step;

/// An LLM request held at its body (fleet mode, its lease refilled meanwhile): what deciding it
/// again from another context needs, since Envoy lends its headers no longer.
pub struct HeldBody {
    pub context: u32,
    pub kept_headers: Vec<(String, Option<Vec<u8>>)>,
    pub store: SharedData,
    /// The body as read, to be forwarded with the cap the decision sets.
    pub body: crate::llm::Body,
    pub cap: u64,
    pub size: usize,
}

// Per VM (one thread): held bodies, and what a resumed one was charged (for its settlement,
// picked up by its own context when the response comes).
thread_local! {
    pub static HELD_BODIES: RefCell<Vec<HeldBody>> = const { RefCell::new(Vec::new()) };
    pub static CHARGED: RefCell<Vec<(u32, Charged)>> = const { RefCell::new(Vec::new()) };
}

pub fn take_entry<T>(
    list: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    at: impl Fn(&T) -> bool,
) -> Option<T> {
    list.with(|l| {
        let mut l = l.try_borrow_mut().ok()?;
        let i = l.iter().position(at)?;
        Some(l.swap_remove(i))
    })
}

pub fn put_entry<T>(list: &'static std::thread::LocalKey<RefCell<Vec<T>>>, entry: T) {
    list.with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            l.push(entry);
        }
    });
}

/// A charge for the request of `context`, admitted from another context: its own context
/// picks it up for the settlement (`Filter::adopt`).
pub fn hand_over(context: u32, charged: Charged) {
    put_entry(&CHARGED, (context, charged));
}

/// Forwards the body with the output cap the decision set; false if Envoy would not take it.
pub fn rewrite_body(body: crate::llm::Body, cap: u64, size: usize) -> bool {
    let (rewritten, _) = body.rewrite(cap);
    buffers::set(BufferType::HttpRequestBody, 0, size, &rewritten)
}

/// Decides an LLM request held at its body again (from another context, made effective by
/// [`fleet`]): with the headers its dry run kept, and its body rewritten with the cap before
/// it is resumed.
pub fn decide_held_body(
    context: u32,
    runtime: &Rc<Runtime>,
    attempt: &Attempt,
    now_ms: i64,
) -> Step {
    let Some(held) = take_entry(&HELD_BODIES, |h| h.context == context) else {
        unavailable("tollgate lost the request it held\n");
        return Step::Replied;
    };
    let mut from_kept = |name: &str| {
        held.kept_headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    };
    let step = run_with(runtime, attempt, now_ms, &mut from_kept, &held.store);
    match &step {
        Step::Continue { charged, .. } => {
            let cap = charged
                .as_ref()
                .and_then(|c| c.output_cap)
                .unwrap_or(held.cap);
            // Its context settles it, whatever comes next (a reservation never answered is
            // released when the request is done).
            if let Some(charged) = charged {
                put_entry(&CHARGED, (context, charged.clone()));
            }
            if !rewrite_body(held.body, cap, held.size) {
                log::error!("LLM request: the body could not be rewritten with its output cap");
                unavailable("tollgate could not set the request's output cap\n");
                return Step::Replied;
            }
        }
        Step::Wait(_) => put_entry(&HELD_BODIES, held),
        // A request whose headers went upstream pays nothing (its payment headers are ignored),
        // nor draws on credits (its cost is settled from its response).
        Step::Replied | Step::Pay(_) | Step::Draw(_) => {}
    }
    step
}
