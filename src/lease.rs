//! Fleet mode's per-consumer lease: quota taken from the rate limit service (quotad) in one
//! call, held in this Envoy's shared data, and spent by every worker with compare-and-swap — so
//! the request path stays one shared-data get and one CAS set, as in local mode, and the store
//! is asked once per lease.
//!
//! A lease holds units **per limit**, in the limit's own unit (requests, tokens, credits): a
//! request spends its cost in every limit at once (1 for a plain request, a route's cost, an
//! LLM request's token reservation), and the store is asked for each limit's share in that
//! limit's descriptor (`hits_addend`). Leases are sized in *requests' worth*: the request that
//! claims a refill asks for enough for about that many requests like itself (its cost in each
//! limit times the count), so a plan of request limits behaves as it always did.
//!
//! A settlement (see [`crate::settlement`]) gives a refund back to this Envoy's lease, never to
//! the store (the protocol cannot take units back honestly), and takes an overrun from it: a
//! limit's units may go negative, a debt that the next grant pays first. Units (or debt) left
//! when a window ends are dropped with it: the store has no way to take units back, and a debt
//! was never counted there (docs/tokens.md states the bound).
//!
//! A lease is valid while every limit's window (and size) is the one it was taken for. The
//! record also holds the store's last figures (what was left per limit after the last call) for
//! the RateLimit fields, a refill claim with a deadline (at most one refill per consumer in
//! flight per Envoy; a crashed or timed-out refiller blocks nobody past its deadline), and when
//! the last refill failed (so that the requests waiting on it fail with it instead of starting
//! calls of their own).
//!
//! The record, own key prefix `tollgate:v1:lease:`, little-endian, fixed layout:
//!
//! ```text
//! "TL" 0x02                                magic and version
//! i64 answered_at_ms                       when the store last answered (figures updated)
//! i64 claim_until_ms                       a refill is in flight until then (0: none)
//! i64 failed_at_ms                         when the last refill failed (0: it did not)
//! i64 refused_at_ms                        when the store last refused without saying which
//!                                          limit (an answer with no statuses; 0: never)
//! u64 granted, i64 granted_at_ms           requests' worth and time of the last grant (sizing)
//! u8 n, then n × (i64 start, i64 end,      the windows the lease is for, each limit's size,
//!                 u64 size, u64 left,      what the store said was left after its call
//!                                          (u64::MAX: it did not say; u64::MAX - 1: the
//!                                          limit is counted here alone, `scope: envoy`),
//!                 i64 units)               and the units this Envoy holds (negative: a debt)
//! ```
//!
//! Anything else stored under the key (another version, a truncated value) reads as an empty
//! lease: units are never invented from bytes that are not ours. (A lease of version 1, from
//! before units per limit, is such a value: an upgrade drops what the leases held.)

use crate::config::{Config, Limit, Rls, STORE_PREFIX};
use crate::quota::{cost_at, Settlement, Usage, MAX_ATTEMPTS};
use crate::store::{create_set, read_modify_write, CountError, Rewrite, Store, StoreError};
use crate::window::Bounds;

const MAGIC: &[u8] = b"TL\x02";
const HEAD: usize = 3 + 8 * 6 + 1;
const PER_LIMIT: usize = 8 * 5;
/// Prefix of the lease keys (one per consumer).
pub const LEASE_PREFIX: &str = "tollgate:v1:lease:";
/// Of what the store says is left, at most this fraction is taken in one lease (the other
/// Envoys of the fleet need theirs): 1/8 — so the last units of a quota go one by one.
pub const SHARE: u64 = 8;
/// A lease is sized to last about this long at the consumer's recent rate.
pub const LEASE_LIFETIME_MS: i64 = 1_000;
/// The smallest last grant (requests' worth) a lease is refilled ahead of: below, the consumer
/// is slow (or at the end of a quota) and a refill when the lease is empty costs the same
/// number of calls.
pub const AHEAD_MIN_GRANT: u64 = 4;
/// Margin added to the call's timeout for a refill claim's deadline.
pub const CLAIM_MARGIN_MS: i64 = 250;
/// A figure's `left` when the store did not say (a server that answers only `overall_code`,
/// such as Limitador): never short, and no RateLimit fields from it.
pub const UNKNOWN_LEFT: u64 = u64::MAX;
/// A figure's `left` when the limit is counted by this Envoy alone (`scope: envoy`): the units
/// held are all there is. The record so says which figures are the store's, and a limit whose
/// scope changed (a reload, another plan) is never read as the other kind. (The store's `left`
/// is at most the limit's size, far below.)
pub const HERE_LEFT: u64 = u64::MAX - 1;

/// The shared-data key of a consumer's lease.
pub fn key(consumer: &str) -> String {
    format!("{LEASE_PREFIX}{consumer}")
}

/// One limit as the lease knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Figure {
    pub start: i64,
    pub end: i64,
    /// The limit's size.
    pub requests: u64,
    /// Left in the store after its last answer (other Envoys' leases count as used).
    pub left: u64,
    /// Units this Envoy holds in this limit; negative: settled overruns the next grant pays.
    pub units: i64,
}

impl Figure {
    /// A `per_envoy` limit's figure at the start of its window: all of it held, nothing in the
    /// store (`left` 0: the units held are all there is).
    fn fresh((bounds, requests): &(Bounds, u64)) -> Figure {
        Figure {
            start: bounds.start,
            end: bounds.end,
            requests: *requests,
            left: HERE_LEFT,
            units: i64::try_from(*requests).unwrap_or(i64::MAX),
        }
    }

    /// Whether this figure is counted by this Envoy alone ([`HERE_LEFT`]).
    fn here(&self) -> bool {
        self.left == HERE_LEFT
    }

    /// Whether this figure is for that window and size, counted here (`per_envoy`) or by the
    /// store.
    fn is_for(&self, (bounds, requests): &(Bounds, u64), per_envoy: bool) -> bool {
        self.start == bounds.start
            && self.end == bounds.end
            && self.requests == *requests
            && self.here() == per_envoy
    }

    /// What can still be spent in this window: the units held, and what the store had left.
    fn room(&self) -> i128 {
        if self.here() {
            i128::from(self.units)
        } else {
            i128::from(self.left) + i128::from(self.units)
        }
    }

    /// Whether the store and this lease together cannot cover `cost` any more in this window.
    fn short(&self, cost: u64) -> bool {
        cost > 0 && self.room() < i128::from(cost)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lease {
    /// When the store last answered (figures updated).
    pub answered_at_ms: i64,
    pub claim_until_ms: i64,
    pub failed_at_ms: i64,
    /// When the store last refused without statuses (the requests waiting then are refused).
    pub refused_at_ms: i64,
    /// Requests' worth of the last grant, for sizing.
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

/// `a + b` for units and counts, within i64.
fn add(units: i64, delta: i128) -> i64 {
    let sum = i128::from(units).saturating_add(delta);
    i64::try_from(sum).unwrap_or(if sum < 0 { i64::MIN } else { i64::MAX })
}

/// Whether limit `i` is counted by this Envoy alone (`scope: envoy`); missing: not.
fn is_per_envoy(per_envoy: &[bool], i: usize) -> bool {
    per_envoy.get(i).copied().unwrap_or(false)
}

/// Per limit, whether it is counted by each Envoy alone (`scope: envoy`); empty (no
/// allocation on the request path) when none is, which [`is_per_envoy`] reads alike.
pub fn scopes(limits: &[Limit]) -> Vec<bool> {
    if !limits.iter().any(|l| l.per_envoy) {
        return Vec::new();
    }
    limits.iter().map(|l| l.per_envoy).collect()
}

impl Lease {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD + PER_LIMIT * self.figures.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.answered_at_ms.to_le_bytes());
        out.extend_from_slice(&self.claim_until_ms.to_le_bytes());
        out.extend_from_slice(&self.failed_at_ms.to_le_bytes());
        out.extend_from_slice(&self.refused_at_ms.to_le_bytes());
        out.extend_from_slice(&self.granted.to_le_bytes());
        out.extend_from_slice(&self.granted_at_ms.to_le_bytes());
        out.push(u8::try_from(self.figures.len()).unwrap_or(u8::MAX));
        for f in self.figures.iter().take(usize::from(u8::MAX)) {
            out.extend_from_slice(&f.start.to_le_bytes());
            out.extend_from_slice(&f.end.to_le_bytes());
            out.extend_from_slice(&f.requests.to_le_bytes());
            out.extend_from_slice(&f.left.to_le_bytes());
            out.extend_from_slice(&f.units.to_le_bytes());
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
                    units: read_i64(bytes, at + 32)?,
                })
            })
            .collect::<Option<Vec<Figure>>>()?;
        Some(Lease {
            answered_at_ms: read_i64(bytes, 3)?,
            claim_until_ms: read_i64(bytes, 11)?,
            failed_at_ms: read_i64(bytes, 19)?,
            refused_at_ms: read_i64(bytes, 27)?,
            granted: read_u64(bytes, 35)?,
            granted_at_ms: read_i64(bytes, 43)?,
            figures,
        })
    }

    /// Whether the lease is for these limits' current windows and sizes (the store's limits:
    /// a `per_envoy` limit's figure is this Envoy's own count, rolled by [`Lease::roll`]).
    fn valid(&self, current: &[(Bounds, u64)], per_envoy: &[bool]) -> bool {
        self.figures.len() == current.len()
            && self
                .figures
                .iter()
                .zip(current)
                .enumerate()
                .all(|(i, (f, now))| is_per_envoy(per_envoy, i) || f.is_for(now, false))
    }

    /// Starts the `per_envoy` limits whose window (or size) changed afresh: their whole size
    /// held, nothing asked of the store. A plan of `per_envoy` limits only is never asked: its
    /// lease starts here.
    fn roll(&mut self, current: &[(Bounds, u64)], per_envoy: &[bool]) {
        if !per_envoy.contains(&true) {
            return;
        }
        if self.figures.len() != current.len() {
            if per_envoy.contains(&false) || per_envoy.len() != current.len() {
                return;
            }
            self.figures = current.iter().map(Figure::fresh).collect();
            return;
        }
        for (i, (f, now)) in self.figures.iter_mut().zip(current).enumerate() {
            if is_per_envoy(per_envoy, i) && !f.is_for(now, true) {
                *f = Figure::fresh(now);
            }
        }
    }

    /// A refusal by a limit counted here alone, decided from the record when the store's
    /// limits' lease is not valid (a new window of theirs, none yet): the request makes no call.
    fn refused_here(
        &self,
        current: &[(Bounds, u64)],
        costs: &[u64],
        per_envoy: &[bool],
    ) -> Option<Vec<Usage>> {
        if self.figures.len() != current.len() {
            return None;
        }
        let short = |i: usize, f: &Figure| {
            is_per_envoy(per_envoy, i) && f.here() && f.short(cost_at(costs, i))
        };
        if !self.figures.iter().enumerate().any(|(i, f)| short(i, f)) {
            return None;
        }
        let mut usages = unknown(current, costs);
        for (i, (u, f)) in usages.iter_mut().zip(&self.figures).enumerate() {
            if is_per_envoy(per_envoy, i) && f.here() {
                let room = u64::try_from(f.room().max(0)).unwrap_or(u64::MAX);
                u.used = u.requests - room.min(u.requests);
                u.violated = short(i, f);
            }
        }
        Some(usages)
    }

    /// Whether the units held pay for `costs` in every limit (a limit the request does not
    /// take from is no obstacle, even in debt).
    fn covers(&self, costs: &[u64]) -> bool {
        self.figures.iter().enumerate().all(|(i, f)| {
            let cost = cost_at(costs, i);
            cost == 0 || i128::from(f.units) >= i128::from(cost)
        })
    }

    /// Whether some limit cannot pay for `costs` even with all the store has left.
    fn short(&self, costs: &[u64]) -> bool {
        self.figures
            .iter()
            .enumerate()
            .any(|(i, f)| f.short(cost_at(costs, i)))
    }

    /// Requests' worth the units held pay for (`costs` each) in the store's limits, for
    /// refilling ahead.
    fn worth(&self, costs: &[u64], per_envoy: &[bool]) -> u64 {
        self.figures
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let cost = cost_at(costs, i);
                (cost > 0 && !is_per_envoy(per_envoy, i))
                    .then(|| u64::try_from(f.units.max(0)).unwrap_or(0) / cost)
            })
            .min()
            .unwrap_or(u64::MAX)
    }

    /// What each limit has used and has left, for the RateLimit fields, the usage endpoint,
    /// a refusal's body and a settlement; none if the store did not say ([`UNKNOWN_LEFT`]).
    fn usages(&self, costs: &[u64], violated: bool) -> Vec<Usage> {
        if self.figures.iter().any(|f| f.left == UNKNOWN_LEFT) {
            return Vec::new();
        }
        self.figures
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let cost = cost_at(costs, i);
                let room = f.room().max(0);
                let remaining = u64::try_from(room).unwrap_or(u64::MAX).min(f.requests);
                Usage {
                    used: f.requests - remaining,
                    requests: f.requests,
                    bounds: Bounds {
                        start: f.start,
                        end: f.end,
                    },
                    violated: violated && f.short(cost),
                    cost,
                }
            })
            .collect()
    }
}

/// Figures for windows the lease knows nothing of yet: nothing used that this Envoy knows.
fn unknown(windows: &[(Bounds, u64)], costs: &[u64]) -> Vec<Usage> {
    windows
        .iter()
        .enumerate()
        .map(|(i, (bounds, requests))| Usage {
            used: 0,
            requests: *requests,
            bounds: *bounds,
            violated: false,
            cost: cost_at(costs, i),
        })
        .collect()
}

/// Whether some limit is smaller than what the request costs in it.
fn too_large(windows: &[(Bounds, u64)], costs: &[u64]) -> bool {
    windows
        .iter()
        .enumerate()
        .any(|(i, (_, requests))| cost_at(costs, i) > *requests)
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
    /// Largest lease (`store.rls.lease`), in requests' worth.
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

/// A store call to make: take `hits[i]` from limit `i`, in these windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// Per limit, what to take.
    pub hits: Vec<u64>,
    /// Per limit, the least of `hits` that pays for the request waiting on this call (0: none
    /// waits, or it is paid already): an answer with less room than that refuses it.
    pub needs: Vec<u64>,
    /// Requests' worth of `hits` (sizing the next lease).
    pub worth: u64,
    pub windows: Vec<(Bounds, u64)>,
    /// Per limit, whether it is counted by this Envoy alone (`scope: envoy`): not in the call,
    /// its `hits` and `needs` 0 (empty: none is).
    pub per_envoy: Vec<bool>,
}

impl Ask {
    /// Whether this call takes nothing (the usage endpoint's look).
    pub fn is_look(&self) -> bool {
        self.hits.iter().all(|h| *h == 0)
    }

    /// Whether limit `i` is in the call (counted by the store).
    pub fn asks(&self, i: usize) -> bool {
        !is_per_envoy(&self.per_envoy, i)
    }

    /// The store's answer per limit of the call, laid out per limit of the plan (0 where a
    /// limit is counted here alone, whose figure `apply` keeps); `None` for an answer about
    /// some other number of limits. Without limits counted here, and for an answer without
    /// statuses, the answer as it is (`apply` judges it).
    pub fn spread(&self, left: &[u64]) -> Option<Vec<u64>> {
        let asked = (0..self.windows.len()).filter(|i| self.asks(*i)).count();
        if asked == self.windows.len() || left.is_empty() {
            return Some(left.to_vec());
        }
        if left.len() != asked {
            return None;
        }
        let mut answers = left.iter();
        Some(
            (0..self.windows.len())
                .map(|i| {
                    if self.asks(i) {
                        answers.next().copied().unwrap_or(0)
                    } else {
                        0
                    }
                })
                .collect(),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    /// The request's cost was spent: admit. Usages from the store's last figures and the lease
    /// left. With an [`Ask`], the lease ran low and this request claimed its refill ahead of
    /// time: make the call without holding the request (see [`ahead`]).
    Admitted(Vec<Usage>, Option<Ask>),
    /// The store said a limit cannot pay for the request in its current window, and the lease
    /// cannot either.
    Refused(Vec<Usage>),
    /// The store refused the refill this request waited for without saying which limit (an
    /// answer without statuses): refuse it, naming the limit whose window ends first; nothing
    /// lasts (nothing is remembered).
    Over(Vec<Usage>),
    /// The lease cannot pay and this request claimed its refill: ask the store.
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

/// How many requests' worth (of `costs` each) to hold: at most the lease, a [`SHARE`] of what
/// the store last said was left (of the limit sizes, for the first call of a window), and
/// about a [`LEASE_LIFETIME_MS`]'s worth at the consumer's recent rate; at least 1.
pub fn size(
    lease: &Lease,
    valid: bool,
    current: &[(Bounds, u64)],
    costs: &[u64],
    per_envoy: &[bool],
    terms: &Terms,
    now_ms: i64,
) -> u64 {
    let left = |i: usize| {
        if valid {
            lease.figures.get(i).map(|f| f.left)
        } else {
            current.get(i).map(|(_, requests)| *requests)
        }
    };
    let count = if valid {
        lease.figures.len()
    } else {
        current.len()
    };
    let share = (0..count)
        .filter_map(|i| {
            let cost = cost_at(costs, i);
            (cost > 0 && !is_per_envoy(per_envoy, i)).then(|| left(i).unwrap_or(0) / SHARE / cost)
        })
        .min()
        .unwrap_or(u64::MAX);
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

/// What to ask the store for so that the lease holds `worth` requests of `costs` each (this
/// request's included, if it is not `spent` from the lease already): per limit, what tops it
/// up, and (`needs`) the least of that which pays for the request.
fn hits_for(
    lease: &Lease,
    valid: bool,
    count: usize,
    costs: &[u64],
    per_envoy: &[bool],
    worth: u64,
    spent: bool,
) -> (Vec<u64>, Vec<u64>) {
    (0..count)
        .map(|i| {
            if is_per_envoy(per_envoy, i) {
                // Counted here alone: nothing to take from the store.
                return (0, 0);
            }
            let cost = cost_at(costs, i);
            let units = if valid {
                lease.figures.get(i).map_or(0, |f| i128::from(f.units))
            } else {
                0
            };
            let to = |target: i128| u64::try_from((target - units).max(0)).unwrap_or(u64::MAX);
            let target = i128::try_from(u128::from(worth) * u128::from(cost)).unwrap_or(i128::MAX);
            let need = if spent || cost == 0 {
                0
            } else {
                to(i128::from(cost))
            };
            (to(target).max(need), need)
        })
        .unzip()
}

/// Refill ahead: what to ask for now, without holding anyone, from a (valid) lease that just
/// paid for a request of `costs` — `None` for nothing. Once the lease holds at most half of
/// the last grant's worth of such requests (and the grant was of [`AHEAD_MIN_GRANT`] or more:
/// the consumer's traffic is real evidence, not one request), the lease is topped up to the
/// size a refill would take now ([`size`]: the consumer's rate, a share of what is left, at
/// most `lease`) while it still admits, so that a consumer with steady traffic never finds it
/// empty (requests that would wait for the refill, on every worker, go on spending what is
/// left). Not while a refill is in flight or one failed less than a timeout ago, not once the
/// store said a limit cannot pay for another such request, not when the size is one (the
/// last units of a quota go one call each, with the request they are for). Never more than
/// `lease` requests' worth held: what an Envoy can lose stays one lease per consumer.
pub fn ahead(
    lease: &Lease,
    costs: &[u64],
    per_envoy: &[bool],
    now_ms: i64,
    terms: &Terms,
) -> Option<Ask> {
    let held = lease.worth(costs, per_envoy);
    // Most requests stop at the first test.
    if held > lease.granted / 2
        || lease.granted < AHEAD_MIN_GRANT
        || lease.claim_until_ms > now_ms
        || failed(lease, now_ms, terms, None).is_some()
        || lease
            .figures
            .iter()
            .enumerate()
            .any(|(i, f)| !is_per_envoy(per_envoy, i) && f.left < cost_at(costs, i))
    {
        return None;
    }
    let worth = size(lease, true, &[], costs, per_envoy, terms, now_ms);
    if worth <= held {
        return None;
    }
    let (hits, needs) = hits_for(
        lease,
        true,
        lease.figures.len(),
        costs,
        per_envoy,
        worth,
        true,
    );
    let windows = lease
        .figures
        .iter()
        .map(|f| {
            (
                Bounds {
                    start: f.start,
                    end: f.end,
                },
                f.requests,
            )
        })
        .collect();
    (hits.iter().any(|h| *h > 0)).then(|| Ask {
        hits,
        needs,
        worth: worth - held,
        windows,
        per_envoy: per_envoy.to_vec(),
    })
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

/// What [`take_or_look`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Pay for the request, or say how to get what pays for it.
    Spend,
    /// The usage endpoint: ask the store for its figures (a call that takes nothing).
    Look,
    /// A dry run: decide from the lease as it is — refused if it knows the request cannot be
    /// paid for, else admitted — with no write and no call.
    Peek,
}

/// Pays for a request of `costs` (one per limit; empty: 1 each) from a consumer's lease, or
/// says what to do instead. `waiting_since_ms` is set when the request already waited for a
/// refill (since then): a refill that failed since fails it too.
pub fn take(
    store: &impl Store,
    key: &str,
    limits: &[Limit],
    costs: &[u64],
    clock: Clock,
    terms: &Terms,
    waiting_since_ms: Option<i64>,
) -> Result<Take, CountError> {
    let mode = Mode::Spend;
    take_or_look(
        store,
        key,
        limits,
        costs,
        clock,
        terms,
        waiting_since_ms,
        mode,
    )
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
    let mode = Mode::Look;
    take_or_look(
        store,
        key,
        limits,
        &[],
        clock,
        terms,
        waiting_since_ms,
        mode,
    )
}

/// A dry run of [`take`]: `Refused` if the lease knows that the store and the lease together
/// cannot pay for `costs`, else `Admitted` (nothing spent, no call, nothing written).
pub fn peek(
    store: &impl Store,
    key: &str,
    limits: &[Limit],
    costs: &[u64],
    clock: Clock,
    terms: &Terms,
) -> Result<Take, CountError> {
    take_or_look(store, key, limits, costs, clock, terms, None, Mode::Peek)
}

#[inline(never)] // one copy for requests, dry runs and the usage endpoint (the .wasm's budget)
#[allow(clippy::too_many_arguments)] // the three entry points' parameters, passed along
fn take_or_look(
    store: &impl Store,
    key: &str,
    limits: &[Limit],
    costs: &[u64],
    clock: Clock,
    terms: &Terms,
    waiting_since_ms: Option<i64>,
    mode: Mode,
) -> Result<Take, CountError> {
    let windows = current(limits, clock.now, terms.utc_offset);
    let per_envoy = scopes(limits);
    // No limit the store counts: the lease is this Envoy's own count, never asked for.
    let all_here = limits.iter().all(|l| l.per_envoy);
    read_modify_write(store, key, MAX_ATTEMPTS, |bytes, _| {
        let mut lease = Lease::decode(&bytes).unwrap_or_default();
        lease.roll(&windows, &per_envoy);
        let valid = lease.valid(&windows, &per_envoy);
        // The usage endpoint asks the store each time (other Envoys spend too); figures
        // written since it started waiting are that answer (or a refill's, as fresh). With
        // `lease: 1` — servers other than quotad, which count a look (`hits_addend` 0) as a hit
        // — it never calls: the figures of this Envoy's last answer, none before one.
        if mode == Mode::Look
            && (terms.lease == 1
                || all_here
                || valid && waiting_since_ms.is_some_and(|since| lease.answered_at_ms >= since))
        {
            let usages = if valid {
                lease.usages(costs, false)
            } else {
                Vec::new()
            };
            return Ok(Rewrite::Keep(Take::Admitted(usages, None)));
        }
        if mode == Mode::Spend && waiting_since_ms.is_some_and(|since| lease.refused_at_ms >= since)
        {
            // Which limit is spent is not known: the one whose window ends first is named (the
            // earliest a retry may pass), with nothing said to be left.
            // (The store's limits only: it was asked for no other.)
            let mut usages = unknown(&windows, costs);
            let first_end = usages
                .iter()
                .enumerate()
                .filter(|(i, u)| u.cost > 0 && !is_per_envoy(&per_envoy, *i))
                .map(|(_, u)| u.bounds.end)
                .min();
            for (i, u) in usages.iter_mut().enumerate() {
                u.violated =
                    u.cost > 0 && !is_per_envoy(&per_envoy, i) && Some(u.bounds.end) == first_end;
                u.used = if u.violated { u.requests } else { 0 };
            }
            return Ok(Rewrite::Keep(Take::Over(usages)));
        }
        if mode != Mode::Look && valid && lease.covers(costs) {
            if mode == Mode::Peek {
                return Ok(Rewrite::Keep(Take::Admitted(
                    lease.usages(costs, false),
                    None,
                )));
            }
            for (i, f) in lease.figures.iter_mut().enumerate() {
                f.units = add(f.units, -i128::from(cost_at(costs, i)));
            }
            let ask = ahead(&lease, costs, &per_envoy, clock.now_ms, terms);
            if ask.is_some() {
                lease.claim_until_ms = clock.now_ms + terms.timeout_ms + CLAIM_MARGIN_MS;
            }
            let admitted = Take::Admitted(lease.usages(costs, false), ask);
            return Ok(Rewrite::Write(lease.encode(), admitted));
        }
        if mode != Mode::Look && valid && lease.short(costs) {
            return Ok(Rewrite::Keep(Take::Refused(lease.usages(costs, true))));
        }
        if mode != Mode::Look && !valid {
            if let Some(usages) = lease.refused_here(&windows, costs, &per_envoy) {
                return Ok(Rewrite::Keep(Take::Refused(usages)));
            }
        }
        // A cost larger than its limit never fits, whatever the store says.
        if mode != Mode::Look && too_large(&windows, costs) {
            let mut usages = unknown(&windows, costs);
            for u in &mut usages {
                u.violated = u.cost > u.requests;
            }
            return Ok(Rewrite::Keep(Take::Refused(usages)));
        }
        if mode == Mode::Peek {
            let usages = if valid {
                lease.usages(costs, false)
            } else {
                unknown(&windows, costs)
            };
            return Ok(Rewrite::Keep(Take::Admitted(usages, None)));
        }
        if let Some(why) = failed(&lease, clock.now_ms, terms, waiting_since_ms) {
            return Err(CountError::Store(StoreError(why.into())));
        }
        if lease.claim_until_ms > clock.now_ms {
            return Ok(Rewrite::Keep(Take::Wait {
                until_ms: lease.claim_until_ms,
            }));
        }
        let (hits, needs, worth) = if mode == Mode::Spend {
            let worth = size(
                &lease,
                valid,
                &windows,
                costs,
                &per_envoy,
                terms,
                clock.now_ms,
            );
            let (hits, needs) = hits_for(
                &lease,
                valid,
                windows.len(),
                costs,
                &per_envoy,
                worth,
                false,
            );
            (hits, needs, worth)
        } else {
            (vec![0; windows.len()], vec![0; windows.len()], 0)
        };
        if !valid && !per_envoy.contains(&true) {
            // A new window (or a changed plan): what was left of the old lease is gone. (With
            // limits counted here alone, the figures stay for `apply`, which keeps theirs and
            // drops the store's limits' units of another window.)
            lease.figures.clear();
        }
        lease.claim_until_ms = clock.now_ms + terms.timeout_ms + CLAIM_MARGIN_MS;
        let refill = Take::Refill(Ask {
            hits,
            needs,
            worth,
            windows: windows.clone(),
            per_envoy: per_envoy.clone(),
        });
        Ok(Rewrite::Write(lease.encode(), refill))
    })
}

/// What the store answered a refill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Every limit had room: `hits` taken; what is left of each limit after it.
    Granted { left: Vec<u64> },
    /// At least one limit had no room for its hits; nothing taken; what is left of each.
    Over { left: Vec<u64> },
    /// No usable answer (unreachable, timeout, error status, a reply that breaks the
    /// protocol).
    Failed,
    /// The call was given up (its request went away): release the claim, so that another
    /// request refills at once.
    Abandoned,
}

impl Answer {
    /// The answer laid out per limit of the plan ([`Ask::spread`]); `Failed` for one about
    /// other limits than the call's.
    pub fn spread(self, ask: &Ask) -> Answer {
        match self {
            Answer::Granted { left } => ask
                .spread(&left)
                .map_or(Answer::Failed, |left| Answer::Granted { left }),
            Answer::Over { left } => ask
                .spread(&left)
                .map_or(Answer::Failed, |left| Answer::Over { left }),
            other => other,
        }
    }
}

/// What follows from an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The lease holds the answer; the waiting requests take from it again.
    Done,
    /// Every limit has room for what the waiting request needs, less than was asked: ask
    /// again for this (the claim is kept).
    AskAgain(Ask),
}

/// The call to make after an `Over` answer with `left` per limit: the same ask scaled down
/// to the limit with the least room for it (the limits stay in step, as a request takes from
/// them all), at least what the waiting request needs — if every limit has room for that, and
/// the call still takes something.
fn again(ask: &Ask, left: &[u64]) -> Option<Ask> {
    let room = |i: usize| left.get(i).copied().unwrap_or(0);
    let needs_met = ask
        .needs
        .iter()
        .enumerate()
        .all(|(i, need)| room(i) >= *need);
    // The smallest room / hits, as a fraction (numerator, denominator).
    let (num, den) = ask
        .hits
        .iter()
        .enumerate()
        .filter(|(_, h)| **h > 0)
        .map(|(i, h)| (room(i).min(*h), *h))
        .min_by(|(n1, d1), (n2, d2)| {
            (u128::from(*n1) * u128::from(*d2)).cmp(&(u128::from(*n2) * u128::from(*d1)))
        })?;
    let scale = |value: u64| {
        u64::try_from(u128::from(value) * u128::from(num) / u128::from(den)).unwrap_or(value)
    };
    let hits: Vec<u64> = ask
        .hits
        .iter()
        .enumerate()
        .map(|(i, h)| scale(*h).max(ask.needs.get(i).copied().unwrap_or(0)))
        .collect();
    if !needs_met || hits == ask.hits || hits.iter().all(|h| *h == 0) {
        return None;
    }
    Some(Ask {
        hits,
        needs: ask.needs.clone(),
        worth: scale(ask.worth).max(1),
        windows: ask.windows.clone(),
        per_envoy: ask.per_envoy.clone(),
    })
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
        let same_windows = lease.valid(&ask.windows, &ask.per_envoy);
        // What the lease holds per limit after the answer, with `granted` added.
        let figures = |lease: &Lease, left: &[u64], granted: &[u64]| -> Vec<Figure> {
            ask.windows
                .iter()
                .zip(left)
                .enumerate()
                .map(|(i, ((bounds, requests), left))| {
                    if !ask.asks(i) {
                        // Counted here alone: its count goes on in its window — or in a later
                        // one, rolled to while the call was in flight — or starts.
                        return match lease.figures.get(i) {
                            Some(f)
                                if f.here()
                                    && f.requests == *requests
                                    && f.start >= bounds.start =>
                            {
                                *f
                            }
                            _ => Figure::fresh(&(*bounds, *requests)),
                        };
                    }
                    let held = if same_windows {
                        lease.figures.get(i).map_or(0, |f| f.units)
                    } else {
                        0
                    };
                    let grant = granted.get(i).copied().unwrap_or(0);
                    Figure {
                        start: bounds.start,
                        end: bounds.end,
                        requests: *requests,
                        left: if *left == UNKNOWN_LEFT {
                            UNKNOWN_LEFT
                        } else {
                            (*left).min(*requests)
                        },
                        units: add(held, i128::from(grant)),
                    }
                })
                .collect()
        };
        let fits = |left: &Vec<u64>| {
            left.len() == ask.windows.len() && ask.hits.len() == ask.windows.len()
        };
        // A server that answers only `overall_code` (no statuses), with one call per request.
        let silent = |left: &Vec<u64>| {
            left.is_empty() && terms.lease == 1 && ask.hits.len() == ask.windows.len()
        };
        let mut applied = Applied::Done;
        match answer {
            Answer::Granted { left } if silent(left) => {
                let unknown = vec![UNKNOWN_LEFT; ask.windows.len()];
                lease.figures = figures(&lease, &unknown, &ask.hits);
                lease.answered_at_ms = now_ms;
                lease.claim_until_ms = 0;
                lease.failed_at_ms = 0;
            }
            Answer::Over { left } if silent(left) => {
                if !same_windows && !ask.per_envoy.contains(&true) {
                    lease.figures.clear();
                }
                lease.refused_at_ms = now_ms.max(1);
                lease.claim_until_ms = 0;
                lease.failed_at_ms = 0;
            }
            Answer::Granted { left } if fits(left) => {
                lease.figures = figures(&lease, left, &ask.hits);
                lease.answered_at_ms = now_ms;
                if !ask.is_look() {
                    lease.granted = ask.worth;
                    lease.granted_at_ms = now_ms;
                }
                lease.claim_until_ms = 0;
                lease.failed_at_ms = 0;
            }
            Answer::Over { left } if fits(left) => {
                lease.figures = figures(&lease, left, &[]);
                lease.answered_at_ms = now_ms;
                lease.failed_at_ms = 0;
                match again(ask, left) {
                    Some(ask) => {
                        lease.claim_until_ms = now_ms + terms.timeout_ms + CLAIM_MARGIN_MS;
                        applied = Applied::AskAgain(ask);
                    }
                    None => lease.claim_until_ms = 0,
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

/// Settles a request paid from this lease: each limit's units go up by the refund or down by
/// the overrun (to a debt the next grant pays first). A settlement for a window that is no
/// longer the lease's is dropped: the store counted the reservation in that window, and can
/// take nothing back. Returns how many settlements were applied.
pub fn settle(
    store: &impl Store,
    key: &str,
    settlements: &[Settlement],
) -> Result<usize, CountError> {
    read_modify_write(store, key, MAX_ATTEMPTS, |bytes, _| {
        let Some(mut lease) = Lease::decode(&bytes) else {
            return Ok(Rewrite::Keep(0));
        };
        let mut applied = 0;
        for s in settlements.iter().filter(|s| s.taken != s.actual) {
            if let Some(f) = lease
                .figures
                .get_mut(s.limit)
                .filter(|f| f.start == s.bounds.start && f.end == s.bounds.end)
            {
                f.units = add(f.units, i128::from(s.taken) - i128::from(s.actual));
                applied += 1;
            }
        }
        if applied == 0 {
            return Ok(Rewrite::Keep(0));
        }
        Ok(Rewrite::Write(lease.encode(), applied))
    })
}

/// Creates the (empty) lease of every consumer whose plan has limits, at configuration time —
/// as [`crate::quota::create_records`] does for local records, and for the same reason: Envoy
/// checks no CAS when a key is created. Returns how many were created.
pub fn create_leases(config: &Config, store: &impl Store) -> Result<usize, StoreError> {
    let counted = || {
        config
            .consumers
            .iter()
            .filter(|c| config.plan_of(c).is_some_and(|p| !p.limits.is_empty()))
            .map(|c| key(c.name()))
    };
    create_set(
        store,
        &format!("{STORE_PREFIX}leases:"),
        counted,
        &Lease::default().encode(),
    )
}

#[cfg(test)]
mod tests;
