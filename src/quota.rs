//! Counting: one shared-data record per consumer holding a counter per limit, checked and
//! incremented in one compare-and-swap cycle.
//!
//! The algorithm (`check_and_take`): read the record and its CAS token, evaluate every limit of
//! the plan against it, and either refuse (writing nothing: a refused request consumes nothing)
//! or write the record with every counter incremented, conditional on the CAS token. A CAS
//! mismatch means another worker counted in between: read again, evaluate again. Because the
//! decision and the increment are one conditional write, workers never admit more than a limit.
//!
//! Envoy checks the CAS only when the key already exists, so two workers that both find a key
//! missing would both succeed in creating it. Records are therefore created *empty*, before any
//! request is counted: [`create_records`] runs for every consumer when the plugin is configured
//! (Envoy configures a canary VM on the main thread before any worker serves), and a counter is
//! only ever written by a CAS-checked `set` of an existing entry.
//!
//! The record's format is in [`crate::record`]. A counter whose stored window is not the current
//! one counts as 0 (its window rolled over), and names keep counts across plan changes: a limit
//! with the same name and window carries on.

use crate::config::{Config, Limit, STORE_PREFIX};
use crate::record::{self, Corrupt, Entry, Record};
use crate::store::{create_set, read_modify_write, CountError, Rewrite, Store, StoreError};
use crate::window::Bounds;

/// Attempts of the read-evaluate-write cycle before giving up on a hot record.
pub const MAX_ATTEMPTS: u32 = 64;

/// The value of a record with no counts.
pub fn empty_record() -> &'static [u8] {
    record::empty()
}

/// The window and count of a limit, given the window this request's clock puts it in: the
/// stored count if it is for that window, 0 if it is for an older one (the window rolled
/// over). If another worker already counted in the *next* window (its clock read was a moment
/// later than ours), that window is the current one: counting into ours would overwrite it and
/// give its requests away again. Only the immediately next, genuine window of this limit is
/// taken that way; anything else stored is treated as stale.
fn used(record: &Record, limit: &Limit, bounds: Bounds, utc_offset: i64) -> (Bounds, u64) {
    match record.entry(&limit.name) {
        Some(e) if e.start == bounds.start && e.end == bounds.end => (bounds, e.count),
        Some(e) if e.start == bounds.end => {
            let next = limit.window.bounds(e.start, utc_offset);
            if next.start == e.start && next.end == e.end {
                (next, e.count)
            } else {
                (bounds, 0)
            }
        }
        _ => (bounds, 0),
    }
}

/// One limit's state for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Units counted in the current window (including this request's, if it was admitted).
    pub used: u64,
    /// The limit's size.
    pub requests: u64,
    pub bounds: Bounds,
    /// This limit has no room for the request's cost (the request was refused because of it).
    pub violated: bool,
    /// What the request takes (or, refused, would have taken) from this limit: 1 for a plain
    /// request, a route's cost, or an LLM request's token reservation. 0: not checked.
    pub cost: u64,
}

impl Usage {
    pub fn remaining(&self) -> u64 {
        self.requests.saturating_sub(self.used)
    }
}

/// The result of counting one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub admitted: bool,
    /// One per limit of the plan, in plan order.
    pub usages: Vec<Usage>,
    /// The stored value was not a record and was replaced by a fresh one (worth a log line).
    pub replaced_corrupt: bool,
    /// Read-evaluate-write cycles used (1 without contention).
    pub attempts: u32,
    /// Credits the request was paid with (0: its limits had room, or it was refused).
    pub drawn: u64,
    /// The balance left, when credits were drawn or could have cured a refusal.
    pub balance: Option<u64>,
}

/// What a request takes from the limit at `index` of its plan: `costs[index]`, 1 where the
/// request has no costs (a plain request).
pub fn cost_at(costs: &[u64], index: usize) -> u64 {
    if costs.is_empty() {
        1
    } else {
        costs.get(index).copied().unwrap_or(1)
    }
}

/// Whether a limit with `used` counted has room for `cost` more (a cost of 0 always has).
pub fn fits(used: u64, cost: u64, size: u64) -> bool {
    cost == 0 || used.saturating_add(cost) <= size
}

/// Evaluates every limit against a record at `now` (calendar at `utc_offset`) for a request
/// of these `costs` (one per limit; empty: 1 each).
fn evaluate(
    limits: &[Limit],
    costs: &[u64],
    record: &Record,
    now: i64,
    utc_offset: i64,
) -> Vec<Usage> {
    limits
        .iter()
        .enumerate()
        .map(|(i, limit)| {
            let (bounds, used) = used(
                record,
                limit,
                limit.window.bounds(now, utc_offset),
                utc_offset,
            );
            let cost = cost_at(costs, i);
            Usage {
                used,
                requests: limit.requests,
                bounds,
                violated: !fits(used, cost, limit.requests),
                cost,
            }
        })
        .collect()
}

/// Creates the record of every consumer whose plan has limits (at configuration time, before
/// any request is counted). Returns how many were created.
pub fn create_records(config: &Config, store: &impl Store) -> Result<usize, StoreError> {
    let counted = || {
        config
            .consumers
            .iter()
            .filter(|c| config.plan_of(c).is_some_and(|p| !p.limits.is_empty()))
            .map(|c| &*c.store_key)
    };
    create_set(
        store,
        &format!("{STORE_PREFIX}records:"),
        counted,
        empty_record(),
    )
}

/// Checks every limit and, if all have room for the request's cost, takes it from all of
/// them, atomically. `costs` has one cost per limit (empty: 1 each, a plain request).
pub fn check_and_take(
    store: &impl Store,
    key: &str,
    limits: &[Limit],
    costs: &[u64],
    now: i64,
    utc_offset: i64,
) -> Result<Counted, CountError> {
    check_and_take_with(store, key, limits, costs, &[], now, utc_offset)
}

/// The name of a record's prepaid credit balance (a `$` never starts a limit's name).
pub const CREDITS: &str = "$credits";
/// The prefix of a ledger entry: a settlement credited to this record, by its digest.
pub const LEDGER_PREFIX: &str = "$tx:";
/// Most ledger entries a record keeps: expired ones go first, then the oldest — but never
/// one younger than [`LEDGER_YOUNG_SECONDS`] while fewer than [`MAX_YOUNG_LEDGER`] are.
pub const MAX_LEDGER: usize = 32;
/// How long a ledger entry is meant to be kept, in seconds (longer than any claim lives).
pub const LEDGER_SECONDS: i64 = 7 * 86_400;
/// An entry this young (seconds) may still be needed: a claim whose settlement began lives a
/// day, and its retry must find the settlement here to not credit it twice.
pub const LEDGER_YOUNG_SECONDS: i64 = 2 * 86_400;
/// Most entries kept for their youth (a consumer buying more packs than this in two days
/// loses the double-credit guard of its oldest ones, only if their claims were never marked).
pub const MAX_YOUNG_LEDGER: usize = 256;

/// Whether an entry is not a limit's counter (a balance, a ledger entry): kept as it is by
/// every write of the record's limits.
fn is_account(entry: &Entry) -> bool {
    entry.name.first() == Some(&b'$')
}

/// The record's prepaid credit balance.
pub fn balance(record: &Record) -> u64 {
    record.entry(CREDITS).map_or(0, |e| e.count)
}

/// The record's limit counters as `next`, followed by its other entries (balance, ledger) as
/// they were: `next` holds the limits only.
fn with_accounts(mut next: Vec<u8>, record: &Record) -> Vec<u8> {
    // Most records have no account entry: one walk over the names says so, nothing allocated.
    if !record.any_name(|name| name.first() == Some(&b'$')) {
        return next;
    }
    let accounts: Vec<Entry> = record.entries().into_iter().filter(is_account).collect();
    if !accounts.is_empty() {
        let tail = record::encode(accounts.iter().copied());
        next.extend_from_slice(tail.get(record::empty().len()..).unwrap_or_default());
    }
    next
}

/// [`check_and_take`], with prepaid credits standing in for the limits at the indices
/// `credits`: a request that only those refuse is paid from the record's balance instead
/// (one credit per unit of the largest cost among them) and counted in the other limits
/// only, in the same compare-and-swap cycle. [`Counted::drawn`] says what it took.
pub fn check_and_take_with(
    store: &impl Store,
    key: &str,
    limits: &[Limit],
    costs: &[u64],
    credits: &[usize],
    now: i64,
    utc_offset: i64,
) -> Result<Counted, CountError> {
    let mut replaced_corrupt = false;
    read_modify_write(store, key, MAX_ATTEMPTS, |bytes, attempt| {
        let record = match Record::decode(&bytes) {
            Ok(record) => record,
            Err(Corrupt) => {
                replaced_corrupt = true;
                Record::default()
            }
        };
        let mut usages = evaluate(limits, costs, &record, now, utc_offset);
        let mut drawn = 0;
        let mut paid = 0;
        if usages.iter().any(|u| u.violated) {
            let covered = |i: usize| credits.contains(&i);
            let curable = !credits.is_empty()
                && usages
                    .iter()
                    .enumerate()
                    .all(|(i, u)| !u.violated || covered(i));
            let draw = usages
                .iter()
                .enumerate()
                .filter(|(i, u)| u.violated && covered(*i))
                .map(|(_, u)| u.cost)
                .max()
                .unwrap_or(0);
            let balance = balance(&record);
            if !curable || draw > balance {
                return Ok(Rewrite::Keep(Counted {
                    admitted: false,
                    usages,
                    replaced_corrupt,
                    attempts: attempt,
                    drawn: 0,
                    balance: (!credits.is_empty()).then_some(balance),
                }));
            }
            // Paid from the balance: the limits credits stand in for count nothing of it.
            for (i, u) in usages.iter_mut().enumerate() {
                if covered(i) {
                    u.cost = 0;
                    u.violated = false;
                }
            }
            drawn = draw;
            paid = balance - draw;
        }
        let limits_part = record::encode(limits.iter().zip(&usages).map(|(limit, usage)| Entry {
            name: limit.name.as_bytes(),
            start: usage.bounds.start,
            end: usage.bounds.end,
            count: usage.used.saturating_add(usage.cost),
        }));
        let next = if drawn > 0 {
            set_account(&record, limits_part, CREDITS, paid, 0, i64::MAX)
        } else {
            with_accounts(limits_part, &record)
        };
        let usages = usages
            .into_iter()
            .map(|u| Usage {
                used: u.used.saturating_add(u.cost),
                ..u
            })
            .collect();
        Ok(Rewrite::Write(
            next,
            Counted {
                admitted: true,
                usages,
                replaced_corrupt,
                attempts: attempt,
                drawn,
                balance: (drawn > 0).then_some(paid),
            },
        ))
    })
}

/// `limits_part` (a record of limits only) followed by `record`'s account entries, with the
/// one called `name` set to `count` over `[start, end)` (added if missing).
fn set_account(
    record: &Record,
    limits_part: Vec<u8>,
    name: &str,
    count: u64,
    start: i64,
    end: i64,
) -> Vec<u8> {
    let mut accounts: Vec<Entry> = record
        .entries()
        .into_iter()
        .filter(|e| is_account(e) && e.name != name.as_bytes())
        .collect();
    accounts.insert(
        0,
        Entry {
            name: name.as_bytes(),
            start,
            end,
            count,
        },
    );
    let mut next = limits_part;
    let tail = record::encode(accounts.iter().copied());
    next.extend_from_slice(tail.get(record::empty().len()..).unwrap_or_default());
    next
}

/// What crediting a settlement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credited {
    /// False: the ledger already had this settlement (a retry): nothing was added.
    pub added: bool,
    pub balance: u64,
}

/// Adds `credits` to the balance of the record at `key`, with a ledger entry named by
/// `ledger` (a settlement's digest), in one compare-and-swap cycle: a settlement the ledger
/// already holds adds nothing, so a retried settlement is credited once. The ledger keeps its
/// [`MAX_LEDGER`] newest entries. The record's limits are kept as they are.
pub fn credit(
    store: &impl Store,
    key: &str,
    credits: u64,
    ledger: &str,
    now: i64,
) -> Result<Credited, CountError> {
    let ledger_name = format!("{LEDGER_PREFIX}{ledger}");
    read_modify_write(store, key, MAX_ATTEMPTS, |bytes, _| {
        let record = Record::decode(&bytes).unwrap_or_default();
        let entries = record.entries();
        let balance = balance(&record);
        if entries.iter().any(|e| e.name == ledger_name.as_bytes()) {
            return Ok(Rewrite::Keep(Credited {
                added: false,
                balance,
            }));
        }
        let total = balance.saturating_add(credits);
        let limits = entries.iter().filter(|e| !is_account(e));
        let mut ledger: Vec<Entry> = entries
            .iter()
            .filter(|e| e.name.starts_with(LEDGER_PREFIX.as_bytes()))
            .copied()
            .collect();
        // Expired entries go first, then the oldest beyond the bound (newest first) unless
        // they are young enough to be needed.
        if ledger.len() >= MAX_LEDGER {
            ledger.retain(|e| e.end > now);
        }
        ledger.sort_by_key(|e| std::cmp::Reverse(e.start));
        let young = ledger
            .iter()
            .take_while(|e| e.start > now.saturating_sub(LEDGER_YOUNG_SECONDS))
            .count();
        let keep = if young > MAX_LEDGER - 1 {
            young.min(MAX_YOUNG_LEDGER - 1)
        } else {
            MAX_LEDGER - 1
        };
        ledger.truncate(keep);
        let head = [
            Entry {
                name: CREDITS.as_bytes(),
                start: 0,
                end: i64::MAX,
                count: total,
            },
            Entry {
                name: ledger_name.as_bytes(),
                start: now,
                end: now.saturating_add(LEDGER_SECONDS),
                count: credits,
            },
        ];
        let all: Vec<Entry> = limits.copied().chain(head).chain(ledger).collect();
        Ok(Rewrite::Write(
            record::encode(all.iter().copied()),
            Credited {
                added: true,
                balance: total,
            },
        ))
    })
}

/// The current usage of every limit, without counting anything (the usage endpoint).
pub fn peek(
    store: &impl Store,
    key: &str,
    limits: &[Limit],
    now: i64,
    utc_offset: i64,
) -> Result<Vec<Usage>, StoreError> {
    look(store, key, limits, &[], now, utc_offset)
}

/// Whether every limit has room for these costs, without taking anything: the usages as
/// [`check_and_take`] would evaluate them (a refusal's `violated` marks), nothing written.
pub fn look(
    store: &impl Store,
    key: &str,
    limits: &[Limit],
    costs: &[u64],
    now: i64,
    utc_offset: i64,
) -> Result<Vec<Usage>, StoreError> {
    let bytes = store.get(key)?.map(|(bytes, _)| bytes).unwrap_or_default();
    let record = Record::decode(&bytes).unwrap_or_default();
    Ok(evaluate(limits, costs, &record, now, utc_offset))
}

/// What one limit's reservation turned out to cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// Index of the limit in the plan.
    pub limit: usize,
    /// The window the reservation was taken in.
    pub bounds: Bounds,
    /// What admission took.
    pub taken: u64,
    /// What the request cost.
    pub actual: u64,
}

/// What a request paid with prepaid credits turned out to cost, in the credits' unit: the
/// balance gets the difference back (or gives the overrun, down to 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditSettlement {
    /// Credits drawn on admission.
    pub taken: u64,
    /// What the request cost.
    pub actual: u64,
}

/// Replaces reservations with what the request cost, in one compare-and-swap cycle: each
/// limit's count goes down by the refund or up by the overrun. A settlement for a window that
/// is no longer the record's (it ended, and a request counted in the next one) is dropped:
/// the reservation stays the charge of the window it was taken in (docs/tokens.md). Every
/// other entry of the record is kept as it is (a plan may have changed since admission).
/// Returns how many settlements were applied.
pub fn settle(
    store: &impl Store,
    key: &str,
    limits: &[Limit],
    settlements: &[Settlement],
    credit: Option<CreditSettlement>,
) -> Result<usize, CountError> {
    read_modify_write(store, key, MAX_ATTEMPTS, |bytes, _| {
        let Ok(record) = Record::decode(&bytes) else {
            // Not a record any more (a reset): nothing of ours to settle.
            return Ok(Rewrite::Keep(0));
        };
        let mut applied = 0;
        let mut entries = record.entries();
        if let Some(c) = credit.filter(|c| c.taken != c.actual) {
            // The balance is never lost by a settlement: an entry is made if it went.
            match entries.iter_mut().find(|e| e.name == CREDITS.as_bytes()) {
                Some(e) => e.count = e.count.saturating_add(c.taken).saturating_sub(c.actual),
                None => entries.push(Entry {
                    name: CREDITS.as_bytes(),
                    start: 0,
                    end: i64::MAX,
                    count: c.taken.saturating_sub(c.actual),
                }),
            }
            applied += 1;
        }
        for entry in &mut entries {
            let Some(i) = limits.iter().position(|l| l.name.as_bytes() == entry.name) else {
                continue;
            };
            if let Some(s) = settlements.iter().find(|s| {
                s.limit == i
                    && s.taken != s.actual
                    && s.bounds.start == entry.start
                    && s.bounds.end == entry.end
            }) {
                entry.count = entry.count.saturating_sub(s.taken).saturating_add(s.actual);
                applied += 1;
            }
        }
        if applied == 0 {
            return Ok(Rewrite::Keep(0));
        }
        Ok(Rewrite::Write(record::encode(entries), applied))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{create_if_missing, MemoryStore, SetError};
    use crate::window::Window;
    use std::cell::Cell;

    fn limit(name: &str, requests: u64, window: Window) -> Limit {
        Limit {
            name: name.into(),
            requests,
            unit: crate::config::Unit::Requests,
            window,
            window_text: String::new(),
            status: 402,
            per_envoy: false,
        }
    }

    const K: &str = "tollgate:v1:consumer:acme";

    /// A store where the consumer's record exists, as after configuration.
    fn fresh() -> MemoryStore {
        let store = MemoryStore::new();
        create_if_missing(&store, K, empty_record()).unwrap();
        store
    }
    const NOW: i64 = 1_795_000_000; // 2026-11-18T11:06:40Z, a Wednesday

    #[test]
    fn admits_exactly_the_quota_then_refuses_without_consuming() {
        let store = fresh();
        let limits = [limit("daily", 5, Window::Fixed(86_400))];
        for i in 1..=5 {
            let c = check_and_take(&store, K, &limits, &[], NOW, 0).unwrap();
            assert!(c.admitted);
            assert_eq!(c.usages[0].used, i);
            assert_eq!(c.usages[0].remaining(), 5 - i);
        }
        let before = store.value(K);
        for _ in 0..3 {
            let c = check_and_take(&store, K, &limits, &[], NOW, 0).unwrap();
            assert!(!c.admitted && c.usages[0].violated);
            assert_eq!(c.usages[0].remaining(), 0);
        }
        assert_eq!(store.value(K), before, "refusals write nothing");
    }

    #[test]
    fn every_limit_must_allow_and_a_refusal_consumes_none_of_them() {
        let store = fresh();
        let limits = [
            limit("daily", 100, Window::Fixed(86_400)),
            limit("burst", 2, Window::Fixed(1)),
        ];
        assert!(
            check_and_take(&store, K, &limits, &[], NOW, 0)
                .unwrap()
                .admitted
        );
        assert!(
            check_and_take(&store, K, &limits, &[], NOW, 0)
                .unwrap()
                .admitted
        );
        let refused = check_and_take(&store, K, &limits, &[], NOW, 0).unwrap();
        assert!(!refused.admitted);
        assert_eq!(
            refused.usages[0].used, 2,
            "daily was not charged for the refusal"
        );
        assert!(!refused.usages[0].violated && refused.usages[1].violated);
        // Next second: burst window rolled over, daily carries on.
        let next = check_and_take(&store, K, &limits, &[], NOW + 1, 0).unwrap();
        assert!(next.admitted);
        assert_eq!((next.usages[0].used, next.usages[1].used), (3, 1));
    }

    #[test]
    fn window_rollover_resets_at_the_boundary() {
        let store = fresh();
        let limits = [limit("m", 1, Window::Fixed(60))];
        let start = NOW - NOW % 60;
        assert!(
            check_and_take(&store, K, &limits, &[], start, 0)
                .unwrap()
                .admitted
        );
        assert!(
            !check_and_take(&store, K, &limits, &[], start + 59, 0)
                .unwrap()
                .admitted
        );
        assert!(
            check_and_take(&store, K, &limits, &[], start + 60, 0)
                .unwrap()
                .admitted
        );
    }

    #[test]
    fn counts_follow_limit_names_across_plan_changes() {
        let store = fresh();
        let free = [
            limit("daily", 3, Window::Fixed(86_400)),
            limit("burst", 10, Window::Fixed(1)),
        ];
        for _ in 0..3 {
            check_and_take(&store, K, &free, &[], NOW, 0).unwrap();
        }
        let pro = [limit("daily", 5, Window::Fixed(86_400))];
        let c = check_and_take(&store, K, &pro, &[], NOW, 0).unwrap();
        assert!(c.admitted);
        assert_eq!(c.usages[0].used, 4);
        // Same name, other window: a fresh count.
        let hourly = [limit("daily", 5, Window::Fixed(3600))];
        assert_eq!(
            check_and_take(&store, K, &hourly, &[], NOW, 0)
                .unwrap()
                .usages[0]
                .used,
            1
        );
    }

    #[test]
    fn corrupt_or_foreign_values_become_a_fresh_counter() {
        let limits = [limit("d", 5, Window::Fixed(86_400))];
        let corrupt: [&[u8]; 8] = [
            b"garbage",
            b"TG\x02\x01d",
            b"\xff\xfe",
            b"tg1\nd 1 2",
            b"tg1\nd x 2 3",
            b"tg1\nd 2 1 3",
            b"tg2\nd 1 2 3",
            b"tg1\nd 1 2 -3",
        ];
        for value in corrupt {
            let store = MemoryStore::new();
            store.set(K, value, 0).unwrap();
            let c = check_and_take(&store, K, &limits, &[], NOW, 0).unwrap();
            assert!(c.admitted && c.replaced_corrupt, "{value:?}");
            assert_eq!(c.usages[0].used, 1);
        }
        // An empty value (what remove_shared_data leaves) is a fresh record, not corruption.
        let store = MemoryStore::new();
        store.set(K, b"", 0).unwrap();
        let c = check_and_take(&store, K, &limits, &[], NOW, 0).unwrap();
        assert!(c.admitted && !c.replaced_corrupt);
    }

    #[test]
    fn peek_reports_usage_without_counting() {
        let store = fresh();
        let limits = [limit("d", 5, Window::Day)];
        assert_eq!(
            peek(&MemoryStore::new(), K, &limits, NOW, 0).unwrap()[0].used,
            0
        );
        check_and_take(&store, K, &limits, &[], NOW, 0).unwrap();
        let before = store.value(K);
        let usage = peek(&store, K, &limits, NOW, 0).unwrap();
        assert_eq!((usage[0].used, usage[0].remaining()), (1, 4));
        assert_eq!(store.value(K), before);
    }

    #[test]
    fn a_record_of_the_earlier_text_format_keeps_counting() {
        // A live upgrade from 0.1 (same vm_id): its records carry on, rewritten in format 2.
        let store = MemoryStore::new();
        let limits = [limit("d", 5, Window::Fixed(86_400))];
        let day = limits[0].window.bounds(NOW, 0);
        let text = format!("tg1\nd {} {} 3", day.start, day.end);
        store.set(K, text.as_bytes(), 0).unwrap();
        let c = check_and_take(&store, K, &limits, &[], NOW, 0).unwrap();
        assert!(c.admitted && !c.replaced_corrupt);
        assert_eq!(c.usages[0].used, 4);
        assert!(store.value(K).unwrap().starts_with(b"TG\x02"));
        assert_eq!(
            check_and_take(&store, K, &limits, &[], NOW, 0)
                .unwrap()
                .usages[0]
                .used,
            5
        );
    }

    #[test]
    fn records_are_created_once_per_set_of_counted_consumers() {
        let json = |extra: &str| {
            format!(
                r#"{{"plans": {{"p": {{"limits": [{{"name": "d", "requests": 5, "window": "day"}}]}},
                              "free": {{"limits": []}}}},
                    "consumers": {{"a": {{"plan": "p"}}, "b": {{"plan": "free"}} {extra}}}}}"#
            )
        };
        let store = MemoryStore::new();
        let first = Config::from_json(json("").as_bytes()).unwrap();
        assert_eq!(create_records(&first, &store).unwrap(), 1);
        let a = "tollgate:v1:consumer:a";
        check_and_take(&store, a, &first.plans[0].limits, &[], NOW, 0).unwrap();
        let counted = store.value(a);
        // The same set again (another VM): nothing to do, nothing overwritten.
        assert_eq!(create_records(&first, &store).unwrap(), 0);
        assert_eq!(store.value(a), counted);
        // A new consumer, and b moved onto a plan with limits: both get their record.
        let second = Config::from_json(
            json(r#", "c": {"plan": "p"}"#)
                .replace(r#""b": {"plan": "free"}"#, r#""b": {"plan": "p"}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(create_records(&second, &store).unwrap(), 2);
        assert_eq!(store.value(a), counted);
        assert!(store.value("tollgate:v1:consumer:b").is_some());
        assert!(store.value("tollgate:v1:consumer:c").is_some());
    }

    #[test]
    fn a_record_is_created_once_and_never_overwritten() {
        let store = MemoryStore::new();
        assert!(create_if_missing(&store, K, empty_record()).unwrap());
        let limits = [limit("d", 5, Window::Fixed(86_400))];
        check_and_take(&store, K, &limits, &[], NOW, 0).unwrap();
        let counted = store.value(K);
        assert!(!create_if_missing(&store, K, empty_record()).unwrap());
        assert_eq!(store.value(K), counted);
    }

    /// A store where another "worker" counts a request between our read and our write, a
    /// given number of times: the CAS must catch each of those writes.
    struct Interleaved<'a> {
        inner: &'a MemoryStore,
        interference: Cell<u32>,
        limits: &'a [Limit],
    }

    impl Store for Interleaved<'_> {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
            if self.interference.get() > 0 {
                self.interference.set(self.interference.get() - 1);
                check_and_take(self.inner, key, self.limits, &[], NOW, 0).unwrap();
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn cas_mismatch_retries_and_never_over_admits() {
        let inner = MemoryStore::new();
        create_if_missing(&inner, K, empty_record()).unwrap();
        let limits = [limit("d", 3, Window::Fixed(86_400))];
        let racing = Interleaved {
            inner: &inner,
            interference: Cell::new(2),
            limits: &limits,
        };
        // Two other requests slip in; ours is retried and becomes the third.
        let c = check_and_take(&racing, K, &limits, &[], NOW, 0).unwrap();
        assert!(c.admitted);
        assert_eq!((c.usages[0].used, c.attempts), (3, 3));
        // Quota spent: another racing attempt is refused, not admitted as a fourth.
        let racing = Interleaved {
            inner: &inner,
            interference: Cell::new(1),
            limits: &limits,
        };
        assert!(
            !check_and_take(&racing, K, &limits, &[], NOW, 0)
                .unwrap()
                .admitted
        );
    }

    #[test]
    fn bounded_retries_under_endless_contention() {
        let inner = fresh();
        let limits = [limit("d", u64::MAX, Window::Fixed(86_400))];
        let racing = Interleaved {
            inner: &inner,
            interference: Cell::new(u32::MAX),
            limits: &limits,
        };
        assert_eq!(
            check_and_take(&racing, K, &limits, &[], NOW, 0),
            Err(CountError::Contended)
        );
    }

    #[test]
    fn store_failures_surface_as_errors() {
        let limits = [limit("d", 1, Window::Month)];
        assert_eq!(
            check_and_take(&crate::store::FailingStore, K, &limits, &[], NOW, 0),
            Err(CountError::Store(StoreError("down".into())))
        );
    }

    #[test]
    fn a_stored_far_future_window_is_not_trusted() {
        // Parses as a record, but its window is no window of the limit (found by reasoning
        // over the `record` fuzz target's inputs): it must not lock the consumer out until
        // the end of time.
        let store = MemoryStore::new();
        let limits = [limit("a", 5, Window::Fixed(10))];
        let t = NOW - NOW % 10;
        let stored = |start: i64, end: i64| {
            record::encode([Entry {
                name: b"a",
                start,
                end,
                count: 5,
            }])
        };
        store.set(K, &stored(t + 10, i64::MAX), 0).unwrap();
        let c = check_and_take(&store, K, &limits, &[], t, 0).unwrap();
        assert!(c.admitted);
        assert_eq!((c.usages[0].bounds.start, c.usages[0].used), (t, 1));
        // A window two ahead is not "the next one" either.
        store.set(K, &stored(t + 20, t + 30), 0).unwrap();
        assert_eq!(
            check_and_take(&store, K, &limits, &[], t, 0)
                .unwrap()
                .usages[0]
                .bounds
                .start,
            t
        );
    }

    #[test]
    fn a_missing_record_is_an_error_not_a_blind_create() {
        let store = MemoryStore::new();
        let limits = [limit("d", 2, Window::Week)];
        assert!(matches!(
            check_and_take(&store, K, &limits, &[], NOW, 0),
            Err(CountError::Store(_))
        ));
        assert!(store.is_empty(), "nothing was written");
    }

    #[test]
    fn a_worker_with_an_older_clock_never_reopens_a_past_window() {
        // Quota 1 per 10 s. Worker A counted at t; worker B opened the next window at t+10.
        // Worker A, whose clock read t+9 just before, must see the later window, not its own.
        let store = MemoryStore::new();
        create_if_missing(&store, K, empty_record()).unwrap();
        let limits = [limit("w", 1, Window::Fixed(10))];
        let t = NOW - NOW % 10;
        assert!(
            check_and_take(&store, K, &limits, &[], t, 0)
                .unwrap()
                .admitted
        );
        assert!(
            check_and_take(&store, K, &limits, &[], t + 10, 0)
                .unwrap()
                .admitted
        );
        let late = check_and_take(&store, K, &limits, &[], t + 9, 0).unwrap();
        assert!(
            !late.admitted,
            "the stale clock must not reopen window [t, t+10)"
        );
        assert_eq!(late.usages[0].bounds.start, t + 10);
        assert!(
            !check_and_take(&store, K, &limits, &[], t + 10, 0)
                .unwrap()
                .admitted
        );
    }

    #[test]
    fn a_record_created_empty_is_read_as_a_record_not_as_corrupt() {
        // The empty record is a valid record with no counts: counting into it must not be
        // taken for replacing a corrupt value (which logs a warning on every first request).
        let store = fresh();
        assert_eq!(store.value(K).as_deref(), Some(empty_record()));
        assert!(!empty_record().is_empty());
        let limits = [limit("d", 5, Window::Day)];
        let c = check_and_take(&store, K, &limits, &[], NOW, 0).unwrap();
        assert!(c.admitted && !c.replaced_corrupt, "{c:?}");
        assert_eq!(c.usages[0].used, 1);
    }

    #[test]
    fn a_stored_window_with_the_same_start_but_another_end_is_not_this_window() {
        // At 00:00 UTC a day window and an hour window begin together: a count stored for
        // the day must not be taken for the hour's (same name, window changed by a new plan).
        let midnight = NOW - NOW % 86_400;
        let store = fresh();
        let daily = [limit("x", 10, Window::Fixed(86_400))];
        for _ in 0..3 {
            check_and_take(&store, K, &daily, &[], midnight, 0).unwrap();
        }
        let hourly = [limit("x", 10, Window::Fixed(3_600))];
        let c = check_and_take(&store, K, &hourly, &[], midnight, 0).unwrap();
        assert_eq!(
            (c.usages[0].used, c.usages[0].bounds.end),
            (1, midnight + 3_600)
        );
    }

    #[test]
    fn a_priced_request_takes_its_cost_only_if_every_limit_has_room_for_it() {
        let store = fresh();
        let limits = [
            limit("requests", 10, Window::Day),
            limit("tokens", 1000, Window::Day),
        ];
        let c = check_and_take(&store, K, &limits, &[1, 600], NOW, 0).unwrap();
        assert!(c.admitted);
        assert_eq!((c.usages[0].used, c.usages[1].used), (1, 600));
        assert_eq!(c.usages[1].cost, 600);
        // 600 + 401 > 1000: refused, and nothing taken from either limit.
        let refused = check_and_take(&store, K, &limits, &[1, 401], NOW, 0).unwrap();
        assert!(!refused.admitted);
        assert_eq!(
            (refused.usages[0].violated, refused.usages[1].violated),
            (false, true)
        );
        assert_eq!(refused.usages[1].remaining(), 400);
        // Exactly what is left fits.
        let c = check_and_take(&store, K, &limits, &[1, 400], NOW, 0).unwrap();
        assert!(c.admitted);
        assert_eq!((c.usages[0].used, c.usages[1].used), (2, 1000));
        // A spent limit does not refuse a request that takes nothing from it.
        let c = check_and_take(&store, K, &limits, &[1, 0], NOW, 0).unwrap();
        assert!(c.admitted, "{c:?}");
        assert_eq!((c.usages[0].used, c.usages[1].used), (3, 1000));
        assert!(
            !check_and_take(&store, K, &limits, &[1, 1], NOW, 0)
                .unwrap()
                .admitted
        );
    }

    #[test]
    fn settling_refunds_or_charges_in_the_window_of_the_reservation_only() {
        let store = fresh();
        let limits = [
            limit("requests", 10, Window::Fixed(60)),
            limit("tokens", 1000, Window::Fixed(60)),
        ];
        let c = check_and_take(&store, K, &limits, &[1, 500], NOW, 0).unwrap();
        let bounds = c.usages[1].bounds;
        let refund = Settlement {
            limit: 1,
            bounds,
            taken: 500,
            actual: 300,
        };
        assert_eq!(settle(&store, K, &limits, &[refund], None).unwrap(), 1);
        let now = peek(&store, K, &limits, NOW, 0).unwrap();
        assert_eq!((now[0].used, now[1].used), (1, 300));
        let overrun = Settlement {
            limit: 1,
            bounds,
            taken: 300,
            actual: 1200,
        };
        assert_eq!(settle(&store, K, &limits, &[overrun], None).unwrap(), 1);
        assert_eq!(peek(&store, K, &limits, NOW, 0).unwrap()[1].used, 1200);
        // Nothing to change: nothing written.
        let same = Settlement {
            actual: 1200,
            taken: 1200,
            ..overrun
        };
        assert_eq!(settle(&store, K, &limits, &[same], None).unwrap(), 0);
        // The next window has begun and counted: the old reservation is not settled into it.
        let later = NOW - NOW % 60 + 60;
        check_and_take(&store, K, &limits, &[1, 10], later, 0).unwrap();
        assert_eq!(settle(&store, K, &limits, &[refund], None).unwrap(), 0);
        assert_eq!(peek(&store, K, &limits, later, 0).unwrap()[1].used, 10);
    }

    #[test]
    fn a_refund_larger_than_the_count_stops_at_zero() {
        let store = fresh();
        let limits = [limit("tokens", 1000, Window::Day)];
        let c = check_and_take(&store, K, &limits, &[100], NOW, 0).unwrap();
        let s = Settlement {
            limit: 0,
            bounds: c.usages[0].bounds,
            taken: 500,
            actual: 0,
        };
        settle(&store, K, &limits, &[s], None).unwrap();
        assert_eq!(peek(&store, K, &limits, NOW, 0).unwrap()[0].used, 0);
    }

    #[test]
    fn settling_keeps_the_counts_of_limits_the_settling_plan_does_not_have() {
        let store = fresh();
        let now_plan = [
            limit("daily", 10, Window::Day),
            limit("tokens", 1000, Window::Day),
        ];
        let c = check_and_take(&store, K, &now_plan, &[1, 500], NOW, 0).unwrap();
        // A request admitted under an older plan (tokens only) settles after the change.
        let old_plan = [limit("tokens", 1000, Window::Day)];
        let s = Settlement {
            limit: 0,
            bounds: c.usages[1].bounds,
            taken: 500,
            actual: 100,
        };
        assert_eq!(settle(&store, K, &old_plan, &[s], None).unwrap(), 1);
        let after = peek(&store, K, &now_plan, NOW, 0).unwrap();
        assert_eq!((after[0].used, after[1].used), (1, 100));
    }
}
