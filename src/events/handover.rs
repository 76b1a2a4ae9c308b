//! Handing a stopping VM's unsent events over to the VMs that go on, through shared data.
//!
//! A configuration push (LDS) replaces each worker's root context: the old one serves the
//! draining connections, then Envoy stops it (`on_done`) when the drain ends — with a short
//! drain (`--drain-time-s`), before its open interval has closed or its buffer has been sent.
//! Its events must not die with it. Shared data outlives it (one map per `vm_id` and process),
//! so the stopping VM lists and writes what it has into a **handover record** of its own, and
//! whichever VM of the Envoy with an `events` block ticks next **claims** it with one CAS
//! write, moves its events into its own buffer and sends them — with their ids unchanged.
//!
//! - A record: `tollgate:v1:events:handover:<worker slot>` (a worker slot belongs to one VM
//!   and configuration, so the stopping VM is its only writer until it lists it), holding a
//!   header line (`handover v1 <in flight> <until>`) and one line per event (`<id> <json>`;
//!   the JSON of an event is compact, without a newline). `in flight` events at its front are
//!   in a batch whose answer the stopping VM still awaits, until `until` (Unix seconds).
//! - The list of records to claim: `tollgate:v1:events:handover:pending`, one line per record
//!   after its header (`<worker slot> <events> <listed at>`), created at configuration time
//!   (the CAS of a read-modify-write only protects an existing key). A stopping VM lists its
//!   record *before* writing it, in the same CAS write that checks the bound below, so the
//!   bound holds however many VMs stop at once; a claimer waits for a listed record that is
//!   not written yet, and forgets it [`SETTLE_MARGIN`] seconds after its listing (the write
//!   failed: shared data refused it).
//! - **The bound**: at most [`MAX_LISTED`] events wait in listed records at any time, per
//!   Envoy process and `vm_id` (≈450 bytes each: a few MB of shared data at most, and a
//!   claimer's read of one record copies no more). A stopping VM that finds less room hands
//!   over its oldest events that fit (a batch in flight first) and drops the rest: counted
//!   and logged once, by the VM that drops them.
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

/// At most this many events wait in listed handover records (all VMs of the Envoy process and
/// `vm_id` together).
pub const MAX_LISTED: usize = 10_000;

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

/// One line of the list: a record to claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Listed {
    slot: u64,
    /// Events in the record (what it holds of the bound).
    events: usize,
    /// When it was listed (Unix seconds): a record still missing [`SETTLE_MARGIN`] seconds
    /// later was never written.
    at: i64,
}

impl Listed {
    fn line(&self) -> String {
        format!("{} {} {}\n", self.slot, self.events, self.at)
    }
}

/// The records listed in the list's bytes (lines after the header; unreadable ones skipped).
fn listed(bytes: &[u8]) -> Vec<Listed> {
    String::from_utf8_lossy(bytes)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let slot = words.next()?.parse().ok()?;
            let events = words.next()?.parse().ok()?;
            let at = words.next()?.parse().ok()?;
            Some(Listed { slot, events, at })
        })
        .collect()
}

/// The list's bytes without the records of `slots`.
fn unlisted(bytes: &[u8], slots: &[u64]) -> Vec<u8> {
    let mut next = PENDING_HEADER.to_vec();
    for entry in listed(bytes) {
        if !slots.contains(&entry.slot) {
            next.extend_from_slice(entry.line().as_bytes());
        }
    }
    next
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
    /// `events` were listed and written to the worker's record; `dropped` did not fit in the
    /// bound ([`MAX_LISTED`]). With `awaiting`, the first of them are in a batch in flight:
    /// the VM should wait for its answer, then [`settle`].
    HandedOver {
        events: usize,
        dropped: usize,
        awaiting: bool,
    },
}

/// Hands `outbox` over (its events leave it): listed at `now` within the bound, then written
/// to the record of `worker`. `until`: when claimers may take a batch still in flight. On an
/// error, the events are lost (the caller says so).
pub fn hand_over(
    store: &impl Store,
    worker: u64,
    outbox: &mut Outbox,
    now: i64,
    until: i64,
) -> Result<Stopped, StoreError> {
    if outbox.is_empty() {
        return Ok(Stopped::Empty);
    }
    let key = record_key(worker);
    // The slot is this VM's alone: its record cannot exist yet, unless a slot was reused (a
    // worker without a slot from shared data numbers itself from the clock).
    if store.get(&key)?.is_some() {
        return Err(StoreError(format!("{key} exists already")));
    }
    let (mut events, in_flight) = outbox.take_all();
    let count = events.len();
    let list = pending_key();
    let kept = read_modify_write(store, &list, ATTEMPTS, |bytes, _| {
        let waiting = listed(&bytes)
            .iter()
            .fold(0usize, |sum, e| sum.saturating_add(e.events));
        let kept = count.min(MAX_LISTED.saturating_sub(waiting));
        if kept == 0 {
            return Ok(Rewrite::Keep(0));
        }
        let mut next = bytes;
        let entry = Listed {
            slot: worker,
            events: kept,
            at: now,
        };
        next.extend_from_slice(entry.line().as_bytes());
        Ok(Rewrite::Write(next, kept))
    })
    .map_err(|e| store_error(&list, e))?;
    let dropped = count.saturating_sub(kept);
    if kept == 0 {
        return Ok(Stopped::HandedOver {
            events: 0,
            dropped,
            awaiting: false,
        });
    }
    events.truncate(kept);
    let in_flight = in_flight.min(kept);
    let record = Record::Open {
        in_flight,
        until,
        events,
    };
    match store.set(&key, &record.render(), 0) {
        Ok(()) => {}
        Err(SetError::CasMismatch) => return Err(StoreError(format!("{key} exists already"))),
        Err(SetError::Failed(e)) => return Err(e),
    }
    Ok(Stopped::HandedOver {
        events: kept,
        dropped,
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
    /// Listed records skipped for good (unreadable, or never written), each with why: left
    /// as they are, and logged by the caller.
    pub skipped: Vec<String>,
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
    let entries = listed(&bytes);
    if entries.is_empty() {
        return Ok(());
    }
    let mut finished: Vec<u64> = Vec::new();
    let mut failure = None;
    for entry in entries {
        let key = record_key(entry.slot);
        let found = match store.get(&key) {
            Ok(found) => found,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let Some((bytes, cas)) = found else {
            // Listed, and written right after by the stopping VM: wait for it, unless that
            // write failed (the VM said so in its log).
            if now >= entry.at.saturating_add(SETTLE_MARGIN) {
                claims
                    .skipped
                    .push(format!("{key}: listed at {} and never written", entry.at));
                finished.push(entry.slot);
            } else {
                claims.waiting += 1;
            }
            continue;
        };
        let (in_flight, until, events) = match Record::parse(&bytes) {
            Ok(Record::Claimed) => {
                finished.push(entry.slot);
                continue;
            }
            Ok(Record::Open {
                in_flight,
                until,
                events,
            }) => (in_flight, until, events),
            Err(e) => {
                claims.skipped.push(format!("{key}: {e}"));
                finished.push(entry.slot);
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
        finished.push(entry.slot);
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
            Ok(Rewrite::Write(unlisted(&bytes, &finished), ()))
        })
        .map_err(|e| store_error(&list, e))?;
    }
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests;
