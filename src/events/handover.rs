//! Handing a stopping VM's unsent events over to the VMs that go on, through shared data.
//!
//! A configuration push (LDS) replaces each worker's root context: the old one serves the
//! draining connections, then Envoy stops it (`on_done`) when the drain ends — with a short
//! drain (`--drain-time-s`), before its open interval has closed or its buffer has been sent.
//! Its events must not die with it. Shared data outlives it (one map per `vm_id` and process),
//! so the stopping VM writes what it has into a **handover record** of its own, lists it, and
//! whichever VM of the Envoy with an `events` block ticks next **claims** it with one CAS
//! write, moves its events into its own buffer and sends them — with their ids unchanged.
//!
//! - A record: `tollgate:v1:events:handover:<worker slot>` (a worker slot belongs to one VM
//!   and configuration, so the stopping VM is its only writer until it lists it), holding a
//!   header line (`handover v1 <in flight> <until>`) and one line per event (`<id> <json>`;
//!   the JSON of an event is compact, without a newline). `in flight` events at its front are
//!   in a batch whose answer the stopping VM still awaits, until `until` (Unix seconds).
//! - The list of records to claim: `tollgate:v1:events:handover:pending`, one slot per line
//!   after its header, created at configuration time (the CAS of a read-modify-write only
//!   protects an existing key).
//! - A claim replaces the record's value by [`CLAIMED`] with the CAS of the read: exactly one
//!   VM wins it, so no event is taken twice and none is left behind. The key itself stays
//!   (shared data has no delete): a few bytes per stopped VM that had something to hand over.
//! - A batch in flight at the stop: the stopping VM tells Envoy it is not done yet
//!   (`on_done` → false) and waits for the answer; then it [`settle`]s its record — the
//!   delivered events removed, the rest claimable at once. Claimers leave a record with a
//!   batch in flight alone until `until` (the call's timeout and a margin); past it (the
//!   answer never came: the VM was destroyed first), the whole record is claimed and the
//!   batch may reach the sink twice, with the same ids.
//!
//! Delivery is therefore **at least once, with deterministic ids**: every event reaches the
//! sink once, or — only when an answer was lost — more than once with the same id and content.

use crate::store::{read_modify_write, CountError, Rewrite, SetError, Store, StoreError};

use super::{Outbox, Pending};

/// First line of the list of records to claim (created at configuration time).
pub const PENDING_HEADER: &[u8] = b"handover v1\n";

/// A claimed (or fully delivered) record's whole value.
pub const CLAIMED: &[u8] = b"handover v1 claimed\n";

/// Extra seconds a claimer leaves a stopping VM beyond the timeout of its call in flight.
pub const SETTLE_MARGIN: i64 = 2;

/// Attempts of a read-modify-write of the list or a record before giving up (for this tick).
const ATTEMPTS: u32 = 16;

/// The shared-data key of the list of records to claim.
pub fn pending_key() -> String {
    format!("{}events:handover:pending", crate::config::STORE_PREFIX)
}

/// The shared-data key of the handover record of a worker slot.
pub fn record_key(worker: u64) -> String {
    format!("{}events:handover:{worker}", crate::config::STORE_PREFIX)
}

/// A handover record, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Claimed already (or everything in it was delivered by the stopping VM).
    Claimed,
    Open {
        /// Events at the front of `events` in a batch the stopping VM still awaits.
        in_flight: usize,
        /// Until when (Unix seconds) claimers leave it to the stopping VM.
        until: i64,
        events: Vec<Pending>,
    },
}

impl Record {
    /// The record's bytes (the inverse of [`Record::parse`]).
    pub fn render(&self) -> Vec<u8> {
        match self {
            Record::Claimed => CLAIMED.to_vec(),
            Record::Open {
                in_flight,
                until,
                events,
            } => {
                let size: usize = events.iter().map(|e| e.id.len() + e.json.len() + 2).sum();
                let mut out = Vec::with_capacity(size + 40);
                out.extend_from_slice(format!("handover v1 {in_flight} {until}\n").as_bytes());
                for event in events {
                    out.extend_from_slice(event.id.as_bytes());
                    out.push(b' ');
                    out.extend_from_slice(event.json.as_bytes());
                    out.push(b'\n');
                }
                out
            }
        }
    }

    /// A record's bytes; an error names what is wrong (a record this code did not write).
    pub fn parse(bytes: &[u8]) -> Result<Record, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let mut words = header.split(' ');
        if (words.next(), words.next()) != (Some("handover"), Some("v1")) {
            return Err(format!("unknown header {header:?}"));
        }
        let state = words.next().unwrap_or_default();
        if state == "claimed" {
            return Ok(Record::Claimed);
        }
        let in_flight: usize = state
            .parse()
            .map_err(|_| format!("bad count in header {header:?}"))?;
        let until: i64 = words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| format!("bad deadline in header {header:?}"))?;
        let mut events = Vec::new();
        for line in lines {
            let (id, json) = line
                .split_once(' ')
                .ok_or_else(|| "an event line without an id".to_string())?;
            events.push(Pending {
                id: id.to_string(),
                json: json.to_string(),
            });
        }
        Ok(Record::Open {
            in_flight: in_flight.min(events.len()),
            until,
            events,
        })
    }
}

/// The slots listed in the list's bytes (lines after the header; unreadable ones skipped).
fn listed(bytes: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(bytes)
        .lines()
        .skip(1)
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn store_error(key: &str, error: CountError) -> StoreError {
    match error {
        CountError::Store(e) => e,
        CountError::Contended => StoreError(format!("{key}: contended for {ATTEMPTS} attempts")),
    }
}

/// Until when claimers leave a record with a batch in flight to the VM that stopped at `now`:
/// the call's timeout (rounded up to whole seconds) and [`SETTLE_MARGIN`]. Envoy answers every
/// call by its timeout (a time-out is an answer), so a VM that still exists has settled by then.
pub fn settle_deadline(now: i64, timeout_ms: u64) -> i64 {
    let timeout = i64::try_from(timeout_ms.div_ceil(1000)).unwrap_or(i64::MAX);
    now.saturating_add(timeout).saturating_add(SETTLE_MARGIN)
}

/// What a stopping sender did with its buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// Nothing was unsent: nothing to hand over.
    Empty,
    /// `events` were written to the worker's record and listed; with `awaiting`, the first
    /// of them are in a batch in flight: the VM should wait for its answer, then [`settle`].
    HandedOver { events: usize, awaiting: bool },
}

/// Hands `outbox` over (its events leave it): written to the record of `worker`, then listed.
/// `until`: when claimers may take a batch still in flight.
pub fn hand_over(
    store: &impl Store,
    worker: u64,
    outbox: &mut Outbox,
    until: i64,
) -> Result<Stopped, StoreError> {
    if outbox.is_empty() {
        return Ok(Stopped::Empty);
    }
    let (events, in_flight) = outbox.take_all();
    let count = events.len();
    let record = Record::Open {
        in_flight,
        until,
        events,
    };
    let key = record_key(worker);
    // The slot is this VM's alone: its record cannot exist yet, unless a slot was reused (a
    // worker without a slot from shared data numbers itself from the clock).
    if store.get(&key)?.is_some() {
        return Err(StoreError(format!("{key} exists already")));
    }
    match store.set(&key, &record.render(), 0) {
        Ok(()) => {}
        Err(SetError::CasMismatch) => return Err(StoreError(format!("{key} exists already"))),
        Err(SetError::Failed(e)) => return Err(e),
    }
    let list = pending_key();
    read_modify_write(store, &list, ATTEMPTS, |bytes, _| {
        let mut next = bytes;
        next.extend_from_slice(format!("{worker}\n").as_bytes());
        Ok(Rewrite::Write(next, ()))
    })
    .map_err(|e| store_error(&list, e))?;
    Ok(Stopped::HandedOver {
        events: count,
        awaiting: in_flight > 0,
    })
}

/// What [`settle`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The record now holds only the events still to send (none: marked claimed).
    Released { delivered: usize, left: usize },
    /// A claimer took the record first (its deadline had passed): the batch may be sent
    /// again by the claimer, with the same ids.
    ClaimedBefore,
}

/// The stopping VM's batch in flight was answered (`delivered`: the sink took it): its events
/// leave the record if delivered, and the record becomes claimable at once.
pub fn settle(store: &impl Store, worker: u64, delivered: bool) -> Result<Settled, StoreError> {
    let key = record_key(worker);
    read_modify_write(store, &key, ATTEMPTS, |bytes, _| {
        let (in_flight, mut events) = match Record::parse(&bytes) {
            Ok(Record::Open {
                in_flight, events, ..
            }) => (in_flight, events),
            Ok(Record::Claimed) => return Ok(Rewrite::Keep(Settled::ClaimedBefore)),
            Err(e) => return Err(CountError::Store(StoreError(format!("{key}: {e}")))),
        };
        let delivered = if delivered { in_flight } else { 0 };
        events.drain(..delivered);
        let left = events.len();
        let next = if events.is_empty() {
            Record::Claimed
        } else {
            Record::Open {
                in_flight: 0,
                until: i64::MIN,
                events,
            }
        };
        Ok(Rewrite::Write(
            next.render(),
            Settled::Released { delivered, left },
        ))
    })
    .map_err(|e| store_error(&key, e))
}

/// What one [`claim`] round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// Records claimed, and their events moved into the outbox.
    pub records: usize,
    pub events: usize,
    /// Events of claimed records the outbox had no room for (counted as dropped).
    pub dropped: usize,
    /// Records left for later: a batch still awaited, or no room in the outbox yet.
    pub waiting: usize,
    /// Records that could not be read as one (left as they are, and logged by the caller).
    pub unreadable: Vec<String>,
    /// Shared data failed: the round stopped there (what it claimed before is in the outbox).
    pub error: Option<StoreError>,
}

/// Claims the listed records that are ready at `now` into `outbox`: every record whose batch
/// in flight is settled (or past its deadline) and whose events fit in the outbox — or, when
/// the outbox is empty, any record, keeping what fits (the rest is dropped, counted). Claimed
/// and emptied records leave the list.
pub fn claim(store: &impl Store, outbox: &mut Outbox, now: i64) -> Claims {
    let mut claims = Claims::default();
    if let Err(e) = claim_into(store, outbox, now, &mut claims) {
        claims.error = Some(e);
    }
    claims
}

fn claim_into(
    store: &impl Store,
    outbox: &mut Outbox,
    now: i64,
    claims: &mut Claims,
) -> Result<(), StoreError> {
    let list = pending_key();
    let Some((bytes, _)) = store.get(&list)? else {
        return Ok(());
    };
    let slots = listed(&bytes);
    if slots.is_empty() {
        return Ok(());
    }
    let mut finished: Vec<u64> = Vec::new();
    let mut failure = None;
    for slot in slots {
        let key = record_key(slot);
        let found = match store.get(&key) {
            Ok(found) => found,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let Some((bytes, cas)) = found else {
            // Listed after being written: a missing record is not ours to wait for.
            finished.push(slot);
            continue;
        };
        let (in_flight, until, events) = match Record::parse(&bytes) {
            Ok(Record::Claimed) => {
                finished.push(slot);
                continue;
            }
            Ok(Record::Open {
                in_flight,
                until,
                events,
            }) => (in_flight, until, events),
            Err(e) => {
                claims.unreadable.push(format!("{key}: {e}"));
                finished.push(slot);
                continue;
            }
        };
        let settled = in_flight == 0 || now >= until;
        let fits = events.len() <= outbox.room() || outbox.is_empty();
        if !settled || !fits {
            claims.waiting += 1;
            continue;
        }
        match store.set(&key, CLAIMED, cas) {
            Ok(()) => {}
            // Another VM claimed it, or its VM settled it, since the read: next round.
            Err(SetError::CasMismatch) => {
                claims.waiting += 1;
                continue;
            }
            Err(SetError::Failed(e)) => {
                failure = Some(e);
                break;
            }
        }
        claims.records += 1;
        finished.push(slot);
        for event in events {
            if outbox.push(event) {
                claims.events += 1;
            } else {
                claims.dropped += 1;
            }
        }
    }
    if !finished.is_empty() {
        read_modify_write(store, &list, ATTEMPTS, |bytes, _| {
            let mut next = PENDING_HEADER.to_vec();
            for slot in listed(&bytes) {
                if !finished.contains(&slot) {
                    next.extend_from_slice(format!("{slot}\n").as_bytes());
                }
            }
            Ok(Rewrite::Write(next, ()))
        })
        .map_err(|e| store_error(&list, e))?;
    }
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests;
