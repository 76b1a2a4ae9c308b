//! Fleet mode's per-consumer lease: requests' worth of quota taken from the rate limit
//! service (quotad) in one call, held in this Envoy's shared data, and spent by every worker
//! with compare-and-swap — so the request path stays one shared-data get and one CAS set, as
//! in local mode, and the store is asked once per lease.
//!
//! A lease is valid while every limit's window (and size) is the one it was taken for; units
//! left when a window ends are lost (the store has no way to take them back: RLS has no
//! negative hits and quotad refuses them). The record also holds the store's last figures
//! (remaining per limit after the last call) for the RateLimit fields, a refill claim with a
//! deadline (at most one refill per consumer in flight per Envoy; a crashed or timed-out
//! refiller blocks nobody past its deadline), and when the last refill failed (so that the
//! requests waiting on it fail with it instead of starting calls of their own).
//!
//! The record, own key prefix `tollgate:v1:lease:`, little-endian, fixed layout:
//!
//! ```text
//! "TL" 0x01                                magic and version
//! u64 units                                requests this Envoy may still admit
//! i64 answered_at_ms                       when the store last answered (figures updated)
//! i64 claim_until_ms                       a refill is in flight until then (0: none)
//! i64 failed_at_ms                         when the last refill failed (0: it did not)
//! u64 granted, i64 granted_at_ms           size and time of the last grant (sizing)
//! u8 n, then n × (i64 start, i64 end,      the windows the lease is for, each limit's size,
//!                 u64 requests, u64 left)  and what the store said was left after its call
//! ```
//!
//! Anything else stored under the key (another version, a truncated value) reads as an empty
//! lease: units are never invented from bytes that are not ours.

use crate::config::{Config, Limit, Rls, STORE_PREFIX};
use crate::quota::{Usage, MAX_ATTEMPTS};
use crate::store::{create_set, read_modify_write, CountError, Rewrite, Store, StoreError};
use crate::window::Bounds;

const MAGIC: &[u8] = b"TL\x01";
const HEAD: usize = 3 + 8 * 6 + 1;
const PER_LIMIT: usize = 8 * 4;
/// Prefix of the lease keys (one per consumer).
pub const LEASE_PREFIX: &str = "tollgate:v1:lease:";
/// Of what the store says is left, at most this fraction is taken in one lease (the other
/// Envoys of the fleet need theirs): 1/8 — so the last units of a quota go one by one.
pub const SHARE: u64 = 8;
/// A lease is sized to last about this long at the consumer's recent rate.
pub const LEASE_LIFETIME_MS: i64 = 1_000;
/// The smallest last grant a lease is refilled ahead of: below, the consumer is slow (or at the
/// end of a quota) and a refill when the lease is empty costs the same number of calls.
pub const AHEAD_MIN_GRANT: u64 = 4;
/// Margin added to the call's timeout for a refill claim's deadline.
pub const CLAIM_MARGIN_MS: i64 = 250;

/// The shared-data key of a consumer's lease.
pub fn key(consumer: &str) -> String {
    format!("{LEASE_PREFIX}{consumer}")
}

/// One limit as the lease knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Figure {
    pub start: i64,
    pub end: i64,
    pub requests: u64,
    /// Left in the store after its last answer (other Envoys' leases count as used).
    pub left: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lease {
    pub units: u64,
    /// When the store last answered (figures updated).
    pub answered_at_ms: i64,
    pub claim_until_ms: i64,
    pub failed_at_ms: i64,
    pub granted: u64,
    pub granted_at_ms: i64,
    pub figures: Vec<Figure>,
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(chunk))
}

fn read_i64(bytes: &[u8], at: usize) -> Option<i64> {
    read_u64(bytes, at).map(|v| v as i64)
}

impl Lease {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD + PER_LIMIT * self.figures.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.units.to_le_bytes());
        out.extend_from_slice(&self.answered_at_ms.to_le_bytes());
        out.extend_from_slice(&self.claim_until_ms.to_le_bytes());
        out.extend_from_slice(&self.failed_at_ms.to_le_bytes());
        out.extend_from_slice(&self.granted.to_le_bytes());
        out.extend_from_slice(&self.granted_at_ms.to_le_bytes());
        out.push(u8::try_from(self.figures.len()).unwrap_or(u8::MAX));
        for f in self.figures.iter().take(usize::from(u8::MAX)) {
            out.extend_from_slice(&f.start.to_le_bytes());
            out.extend_from_slice(&f.end.to_le_bytes());
            out.extend_from_slice(&f.requests.to_le_bytes());
            out.extend_from_slice(&f.left.to_le_bytes());
        }
        out
    }

    /// The lease in `bytes`; `None` if they are not one (read as an empty lease).
    pub fn decode(bytes: &[u8]) -> Option<Lease> {
        if !bytes.starts_with(MAGIC) {
            return None;
        }
        let n = usize::from(*bytes.get(HEAD - 1)?);
        if bytes.len() != HEAD + n * PER_LIMIT {
            return None;
        }
        let figures = (0..n)
            .map(|i| {
                let at = HEAD + i * PER_LIMIT;
                Some(Figure {
                    start: read_i64(bytes, at)?,
                    end: read_i64(bytes, at + 8)?,
                    requests: read_u64(bytes, at + 16)?,
                    left: read_u64(bytes, at + 24)?,
                })
            })
            .collect::<Option<Vec<Figure>>>()?;
        Some(Lease {
            units: read_u64(bytes, 3)?,
            answered_at_ms: read_i64(bytes, 11)?,
            claim_until_ms: read_i64(bytes, 19)?,
            failed_at_ms: read_i64(bytes, 27)?,
            granted: read_u64(bytes, 35)?,
            granted_at_ms: read_i64(bytes, 43)?,
            figures,
        })
    }

    /// Whether the lease is for these limits' current windows and sizes.
    fn valid(&self, current: &[(Bounds, u64)]) -> bool {
        self.figures.len() == current.len()
            && self.figures.iter().zip(current).all(|(f, (b, requests))| {
                f.start == b.start && f.end == b.end && f.requests == *requests
            })
    }

    fn usages(&self, violated: bool) -> Vec<Usage> {
        self.figures
            .iter()
            .map(|f| {
                let remaining = f.left.saturating_add(self.units).min(f.requests);
                Usage {
                    used: f.requests - remaining,
                    requests: f.requests,
                    bounds: Bounds {
                        start: f.start,
                        end: f.end,
                    },
                    violated: violated && f.left == 0,
                    cost: 1,
                }
            })
            .collect()
    }
}

/// The time of a request: Unix seconds (windows) and milliseconds (claims, sizing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub now: i64,
    pub now_ms: i64,
}

/// The fleet settings a take needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// Largest lease (`store.rls.lease`).
    pub lease: u64,
    pub timeout_ms: i64,
    pub utc_offset: i64,
}

impl Terms {
    /// The terms of a fleet configuration (`store.rls`) with its calendar offset.
    pub fn of(rls: &Rls, utc_offset: i64) -> Terms {
        Terms {
            lease: rls.lease,
            timeout_ms: i64::try_from(rls.timeout_ms).unwrap_or(i64::MAX),
            utc_offset,
        }
    }
}

/// A store call to make: take `hits` from every limit, in these windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub hits: u64,
    pub windows: Vec<(Bounds, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    /// A unit was spent: admit. Usages from the store's last figures and the lease left.
    /// With an [`Ask`], the lease ran low and this request claimed its refill ahead of time:
    /// make the call without holding the request (see [`ahead`]).
    Admitted(Vec<Usage>, Option<Ask>),
    /// The store said a limit is spent in its current window, and the lease is empty.
    Refused(Vec<Usage>),
    /// The lease is empty and this request claimed its refill: ask the store.
    Refill(Ask),
    /// Another request of this Envoy is refilling until `until_ms` at the latest: wait.
    Wait { until_ms: i64 },
}

fn current(limits: &[Limit], now: i64, utc_offset: i64) -> Vec<(Bounds, u64)> {
    limits
        .iter()
        .map(|l| (l.window.bounds(now, utc_offset), l.requests))
        .collect()
}

/// How much to ask for: at most the lease, a [`SHARE`] of what the store last said was
/// left (of the limit sizes, for the first call of a window), and about a
/// [`LEASE_LIFETIME_MS`]'s worth at the consumer's recent rate; at least 1.
pub fn size(
    lease: &Lease,
    valid: bool,
    current: &[(Bounds, u64)],
    terms: &Terms,
    now_ms: i64,
) -> u64 {
    let left = if valid {
        lease.figures.iter().map(|f| f.left).min()
    } else {
        current.iter().map(|(_, requests)| *requests).min()
    }
    .unwrap_or(1);
    let share = left / SHARE;
    let rate = if lease.granted > 0 && lease.granted_at_ms > 0 {
        let lasted = now_ms.saturating_sub(lease.granted_at_ms).max(1);
        if lasted <= LEASE_LIFETIME_MS {
            lease.granted.saturating_mul(2)
        } else {
            let per_lifetime = u128::from(lease.granted) * LEASE_LIFETIME_MS as u128
                / lasted.unsigned_abs() as u128;
            u64::try_from(per_lifetime).unwrap_or(u64::MAX)
        }
    } else {
        u64::MAX
    };
    terms.lease.min(share).min(rate).max(1)
}

/// Refill ahead: how much to ask for now, without holding anyone, from a (valid) lease that
/// just spent a unit — 0 for nothing. Once at least half of the last grant is spent (and the
/// grant was of [`AHEAD_MIN_GRANT`] or more: the consumer's traffic is real evidence, not one
/// request), the lease is topped up to the size a refill would take now ([`size`]: the
/// consumer's rate, a share of what is left, at most `lease`) while it still admits, so that a
/// consumer with steady traffic never finds it empty (requests that would wait for the refill,
/// on every worker, go on spending what is left). Not while a refill is in flight or one failed
/// less than a timeout ago, not once the store said a limit is spent, not when the size is one
/// (the last units of a quota go one call each, with the request they are for). Never more
/// than `lease` units held: what an Envoy can lose stays one lease per consumer.
pub fn ahead(lease: &Lease, now_ms: i64, terms: &Terms) -> u64 {
    // Most requests stop at the first test.
    if lease.units > lease.granted / 2
        || lease.granted < AHEAD_MIN_GRANT
        || lease.claim_until_ms > now_ms
        || failed(lease, now_ms, terms, None).is_some()
        || lease.figures.iter().any(|f| f.left == 0)
    {
        return 0;
    }
    size(lease, true, &[], terms, now_ms).saturating_sub(lease.units)
}

/// Why a request that needs a refill fails without one: the refill it waited for failed, or
/// one failed less than a timeout ago (so that while the store is down every request is
/// answered within the timeout, and the store is not called by every request meanwhile).
fn failed(
    lease: &Lease,
    now_ms: i64,
    terms: &Terms,
    waiting_since_ms: Option<i64>,
) -> Option<&'static str> {
    if lease.failed_at_ms <= 0 {
        return None;
    }
    if waiting_since_ms.is_some_and(|since| lease.failed_at_ms >= since) {
        return Some("the rate limit service did not answer the refill this request waited for");
    }
    (now_ms - lease.failed_at_ms < terms.timeout_ms)
        .then_some("the rate limit service failed to answer less than a timeout ago")
}

/// Spends one unit of a consumer's lease, or says what to do instead. `waiting_since_ms` is
/// set when the request already waited for a refill (since then): a refill that failed since
/// fails it too.
pub fn take(
    store: &impl Store,
    key: &str,
    limits: &[Limit],
    clock: Clock,
    terms: &Terms,
    waiting_since_ms: Option<i64>,
) -> Result<Take, CountError> {
    take_or_look(store, key, limits, clock, terms, waiting_since_ms, true)
}

/// The usage endpoint's figures: [`take`] without spending. A `Refill` asks the store for 0
/// hits (or a `Wait`, for the refill in flight); decided again after it, `Admitted` carries the
/// figures of that answer and this Envoy's unspent lease.
pub fn look(
    store: &impl Store,
    key: &str,
    limits: &[Limit],
    clock: Clock,
    terms: &Terms,
    waiting_since_ms: Option<i64>,
) -> Result<Take, CountError> {
    take_or_look(store, key, limits, clock, terms, waiting_since_ms, false)
}

#[inline(never)] // one copy for requests and the usage endpoint (the .wasm's size budget)
fn take_or_look(
    store: &impl Store,
    key: &str,
    limits: &[Limit],
    clock: Clock,
    terms: &Terms,
    waiting_since_ms: Option<i64>,
    spend: bool,
) -> Result<Take, CountError> {
    let windows = current(limits, clock.now, terms.utc_offset);
    read_modify_write(store, key, MAX_ATTEMPTS, |bytes, _| {
        let mut lease = Lease::decode(&bytes).unwrap_or_default();
        let valid = lease.valid(&windows);
        // The usage endpoint asks the store each time (other Envoys spend too); figures
        // written since it started waiting are that answer (or a refill's, as fresh).
        if valid && !spend && waiting_since_ms.is_some_and(|since| lease.answered_at_ms >= since) {
            return Ok(Rewrite::Keep(Take::Admitted(lease.usages(false), None)));
        }
        if spend && valid && lease.units > 0 {
            lease.units -= 1;
            let hits = ahead(&lease, clock.now_ms, terms);
            if hits > 0 {
                lease.claim_until_ms = clock.now_ms + terms.timeout_ms + CLAIM_MARGIN_MS;
            }
            let ask = (hits > 0).then(|| Ask {
                hits,
                windows: windows.clone(),
            });
            let admitted = Take::Admitted(lease.usages(false), ask);
            return Ok(Rewrite::Write(lease.encode(), admitted));
        }
        if valid && lease.figures.iter().any(|f| f.left == 0) {
            return Ok(Rewrite::Keep(Take::Refused(lease.usages(true))));
        }
        if let Some(why) = failed(&lease, clock.now_ms, terms, waiting_since_ms) {
            return Err(CountError::Store(StoreError(why.into())));
        }
        if lease.claim_until_ms > clock.now_ms {
            return Ok(Rewrite::Keep(Take::Wait {
                until_ms: lease.claim_until_ms,
            }));
        }
        let hits = if spend {
            size(&lease, valid, &windows, terms, clock.now_ms)
        } else {
            0
        };
        if !valid {
            // A new window (or a changed plan): what was left of the old lease is gone.
            lease.units = 0;
            lease.figures.clear();
        }
        lease.claim_until_ms = clock.now_ms + terms.timeout_ms + CLAIM_MARGIN_MS;
        let refill = Take::Refill(Ask {
            hits,
            windows: windows.clone(),
        });
        Ok(Rewrite::Write(lease.encode(), refill))
    })
}

/// What the store answered a refill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Every limit had room: `hits` taken; what is left of each limit after it.
    Granted { left: Vec<u64> },
    /// At least one limit had no room for `hits`; nothing taken; what is left of each.
    Over { left: Vec<u64> },
    /// No usable answer (unreachable, timeout, error status, a reply that breaks the
    /// protocol).
    Failed,
    /// The call was given up (its request went away): release the claim, so that another
    /// request refills at once.
    Abandoned,
}

/// What follows from an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The lease holds the answer; the waiting requests take from it again.
    Done,
    /// Every limit has some room, less than was asked: ask again for this much (the claim is
    /// kept).
    AskAgain(Ask),
}

/// Records the store's answer to `ask` in the lease, and releases the claim (unless asking
/// again).
#[inline(never)] // one copy for the answer and the abandoned call (the .wasm's size budget)
pub fn apply(
    store: &impl Store,
    key: &str,
    ask: &Ask,
    answer: &Answer,
    now_ms: i64,
    terms: &Terms,
) -> Result<Applied, CountError> {
    read_modify_write(store, key, MAX_ATTEMPTS, |bytes, _| {
        let mut lease = Lease::decode(&bytes).unwrap_or_default();
        let figures = |left: &[u64]| -> Vec<Figure> {
            ask.windows
                .iter()
                .zip(left)
                .map(|((bounds, requests), left)| Figure {
                    start: bounds.start,
                    end: bounds.end,
                    requests: *requests,
                    left: (*left).min(*requests),
                })
                .collect()
        };
        let same_windows = lease.valid(&ask.windows);
        let mut applied = Applied::Done;
        match answer {
            Answer::Granted { left } if left.len() == ask.windows.len() => {
                lease.units = if same_windows {
                    lease.units.saturating_add(ask.hits)
                } else {
                    ask.hits
                };
                lease.figures = figures(left);
                lease.answered_at_ms = now_ms;
                if ask.hits > 0 {
                    lease.granted = ask.hits;
                    lease.granted_at_ms = now_ms;
                }
                lease.claim_until_ms = 0;
                lease.failed_at_ms = 0;
            }
            Answer::Over { left } if left.len() == ask.windows.len() => {
                if !same_windows {
                    lease.units = 0;
                }
                lease.figures = figures(left);
                lease.answered_at_ms = now_ms;
                lease.failed_at_ms = 0;
                match left.iter().min() {
                    Some(&room) if room > 0 && room < ask.hits => {
                        lease.claim_until_ms = now_ms + terms.timeout_ms + CLAIM_MARGIN_MS;
                        applied = Applied::AskAgain(Ask {
                            hits: room,
                            windows: ask.windows.clone(),
                        });
                    }
                    _ => lease.claim_until_ms = 0,
                }
            }
            Answer::Abandoned => lease.claim_until_ms = 0,
            _ => {
                lease.claim_until_ms = 0;
                lease.failed_at_ms = now_ms.max(1);
            }
        }
        Ok(Rewrite::Write(lease.encode(), applied))
    })
}

/// Creates the (empty) lease of every consumer whose plan has limits, at configuration time —
/// as [`crate::quota::create_records`] does for local records, and for the same reason: Envoy
/// checks no CAS when a key is created. Returns how many were created.
pub fn create_leases(config: &Config, store: &impl Store) -> Result<usize, StoreError> {
    let counted: Vec<String> = config
        .consumers
        .iter()
        .filter(|c| config.plan_of(c).is_some_and(|p| !p.limits.is_empty()))
        .map(|c| key(&c.name))
        .collect();
    create_set(
        store,
        &format!("{STORE_PREFIX}leases:"),
        &counted,
        &Lease::default().encode(),
    )
}

#[cfg(test)]
mod tests;
