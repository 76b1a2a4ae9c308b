//! Unit tests of the handover: Envoy's shared data is the in-memory [`MemoryStore`] (same CAS
//! semantics), and the fakes below put another VM's write between a read and a write, or make
//! shared data fail.

use std::cell::Cell;

use super::*;
use crate::events::{usage_event, Origin, Tally};
use crate::metrics::Metric;
use crate::store::{create_if_missing, FailingStore, MemoryStore, SetError, Store, StoreError};

/// Shared data as configuration time leaves it.
fn prepared() -> MemoryStore {
    let store = MemoryStore::new();
    create_if_missing(&store, &pending_key(), PENDING_HEADER).unwrap();
    store
}

fn event(n: usize) -> Pending {
    Pending {
        id: format!("{n:032x}"),
        json: format!("{{\"id\":\"{n:032x}\",\"data\":{{\"text\":\"a b\\nc\"}}}}"),
    }
}

fn outbox_of(capacity: usize, events: impl IntoIterator<Item = usize>) -> Outbox {
    let mut o = Outbox::new(capacity);
    for n in events {
        assert!(o.push(event(n)));
    }
    o
}

fn ids(o: &Outbox) -> Vec<String> {
    o.ids().map(str::to_string).collect()
}

fn want(events: impl IntoIterator<Item = usize>) -> Vec<String> {
    events.into_iter().map(|n| event(n).id).collect()
}

fn listed_slots(store: &MemoryStore) -> Vec<u64> {
    listed(&store.value(&pending_key()).unwrap())
        .iter()
        .map(|e| e.slot)
        .collect()
}

#[test]
fn a_record_reads_back_as_written() {
    let open = Record::Open {
        in_flight: 2,
        until: 1_700_000_007,
        events: vec![event(1), event(2), event(3)],
    };
    assert_eq!(Record::parse(&open.render()), Ok(open));
    assert_eq!(Record::parse(CLAIMED), Ok(Record::Claimed));
    let settled = Record::Open {
        in_flight: 0,
        until: i64::MIN,
        events: vec![event(9)],
    };
    assert_eq!(Record::parse(&settled.render()), Ok(settled));
    for bad in [
        &b""[..],
        b"handover v2 0 0\n",
        b"handover v1 x 0\n",
        b"handover v1 0\n",
        b"handover v1 0 0\nno-id-line\n",
        b"\xff\xfe",
    ] {
        assert!(Record::parse(bad).is_err(), "{bad:?}");
    }
    // A count beyond the events is clamped (never an index out of range).
    assert_eq!(
        Record::parse(b"handover v1 9 5\nid {}\n"),
        Ok(Record::Open {
            in_flight: 1,
            until: 5,
            events: vec![Pending {
                id: "id".into(),
                json: "{}".into()
            }],
        })
    );
}

#[test]
fn an_empty_outbox_hands_over_nothing() {
    let store = prepared();
    let mut o = Outbox::new(10);
    assert_eq!(hand_over(&store, 3, &mut o, 0, 0), Ok(Stopped::Empty));
    assert_eq!(store.value(&record_key(3)), None);
    assert!(listed_slots(&store).is_empty());
    assert_eq!(claim(&store, &mut o, 0), Claims::default());
}

#[test]
fn handed_over_events_are_taken_over_once_with_their_ids() {
    let store = prepared();
    let mut stopping = outbox_of(10, 1..=4);
    assert_eq!(
        hand_over(&store, 7, &mut stopping, 0, 100),
        Ok(Stopped::HandedOver {
            events: 4,
            dropped: 0,
            awaiting: false
        })
    );
    assert!(stopping.is_empty(), "the events left the stopping VM");
    assert_eq!(listed_slots(&store), [7]);

    // A VM that goes on, with events of its own: the handed-over ones come after them.
    let mut next = outbox_of(10, [50]);
    let claims = claim(&store, &mut next, 0);
    assert_eq!((claims.records, claims.events, claims.waiting), (1, 4, 0));
    assert_eq!(ids(&next), want([50, 1, 2, 3, 4]));
    assert_eq!(store.value(&record_key(7)).unwrap(), CLAIMED);
    assert!(listed_slots(&store).is_empty());

    // Nobody takes them again.
    let mut other = Outbox::new(10);
    assert_eq!(claim(&store, &mut other, 0), Claims::default());
    assert!(other.is_empty());
}

/// Another VM claims the record between this claimer's read and its write.
struct RivalClaims<'a> {
    inner: &'a MemoryStore,
    rival: Cell<bool>,
}

impl Store for RivalClaims<'_> {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        if self.rival.replace(false) {
            let mut theirs = Outbox::new(10);
            let claims = claim(self.inner, &mut theirs, 0);
            assert_eq!(claims.events, 2, "the rival takes them");
        }
        self.inner.set(key, value, cas)
    }
}

#[test]
fn two_vms_claiming_at_once_take_each_event_once() {
    let store = prepared();
    hand_over(&store, 1, &mut outbox_of(10, [1, 2]), 0, 0).unwrap();
    let racing = RivalClaims {
        inner: &store,
        rival: Cell::new(true),
    };
    let mut mine = Outbox::new(10);
    let claims = claim(&racing, &mut mine, 0);
    assert_eq!((claims.records, claims.events), (0, 0), "{claims:?}");
    assert!(mine.is_empty(), "the CAS lost: nothing taken twice");
    assert!(listed_slots(&store).is_empty());
    assert_eq!(claim(&store, &mut mine, 0), Claims::default());
}

/// Another stopping VM lists its record between this one's read and write of the list.
struct RivalStops<'a> {
    inner: &'a MemoryStore,
    /// The rivals' slots are `base + 1`, `base + 2`, …, the last first.
    base: u64,
    rivals: Cell<u64>,
}

impl Store for RivalStops<'_> {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        let rival = self.rivals.get();
        if key == pending_key() && rival > 0 {
            self.rivals.set(rival - 1);
            let slot = self.base + rival;
            let mut theirs = outbox_of(10, [slot as usize]);
            hand_over(self.inner, slot, &mut theirs, 0, 0).unwrap();
        }
        self.inner.set(key, value, cas)
    }
}

#[test]
fn workers_stopping_together_are_all_listed_and_all_taken_over() {
    let store = prepared();
    let racing = RivalStops {
        inner: &store,
        base: 100,
        rivals: Cell::new(3),
    };
    hand_over(&racing, 1, &mut outbox_of(10, [1]), 0, 0).unwrap();
    let mut slots = listed_slots(&store);
    slots.sort_unstable();
    assert_eq!(slots, [1, 101, 102, 103]);
    // A claimer whose rewrite of the list races a VM that stops meanwhile keeps its record.
    let racing = RivalStops {
        inner: &store,
        base: 200,
        rivals: Cell::new(1),
    };
    let mut next = Outbox::new(10);
    let claims = claim(&racing, &mut next, 0);
    assert_eq!((claims.records, claims.events), (4, 4));
    assert_eq!(
        listed_slots(&store),
        [201],
        "listed while the list was rewritten"
    );
    let claims = claim(&store, &mut next, 0);
    assert_eq!((claims.records, claims.events), (1, 1));
    let mut got = ids(&next);
    got.sort();
    let mut expected = want([1, 101, 102, 103, 201]);
    expected.sort();
    assert_eq!(got, expected);
}

#[test]
fn a_batch_in_flight_is_left_to_the_stopping_vm_until_it_is_answered() {
    // Delivered: only the rest is taken over.
    let store = prepared();
    let mut stopping = outbox_of(10, 1..=5);
    stopping.next_batch(0, 2).unwrap();
    assert_eq!(
        hand_over(&store, 4, &mut stopping, 100, 107),
        Ok(Stopped::HandedOver {
            events: 5,
            dropped: 0,
            awaiting: true
        })
    );
    let mut next = Outbox::new(10);
    let claims = claim(&store, &mut next, 100);
    assert_eq!((claims.records, claims.waiting), (0, 1), "answer awaited");
    assert_eq!(
        settle(&store, 4, true),
        Ok(Settled::Released {
            delivered: 2,
            left: 3
        })
    );
    assert_eq!(claim(&store, &mut next, 100).events, 3);
    assert_eq!(ids(&next), want(3..=5));

    // Failed: all of it is taken over, at once.
    let store = prepared();
    let mut stopping = outbox_of(10, 1..=5);
    stopping.next_batch(0, 2).unwrap();
    hand_over(&store, 4, &mut stopping, 100, 107).unwrap();
    assert_eq!(
        settle(&store, 4, false),
        Ok(Settled::Released {
            delivered: 0,
            left: 5
        })
    );
    let mut next = Outbox::new(10);
    assert_eq!(claim(&store, &mut next, 100).events, 5);
    assert_eq!(ids(&next), want(1..=5));

    // Everything was in the batch, and delivered: nothing is left, the list empties.
    let store = prepared();
    let mut stopping = outbox_of(10, 1..=2);
    stopping.next_batch(0, 5).unwrap();
    hand_over(&store, 4, &mut stopping, 100, 107).unwrap();
    assert_eq!(
        settle(&store, 4, true),
        Ok(Settled::Released {
            delivered: 2,
            left: 0
        })
    );
    assert_eq!(store.value(&record_key(4)).unwrap(), CLAIMED);
    let mut next = Outbox::new(10);
    assert_eq!(claim(&store, &mut next, 100).records, 0);
    assert!(next.is_empty() && listed_slots(&store).is_empty());
}

#[test]
fn claimers_wait_for_the_timeout_of_the_call_in_flight_and_a_margin() {
    assert_eq!(settle_deadline(100, 5000), 107);
    assert_eq!(settle_deadline(100, 4001), 107);
    assert_eq!(settle_deadline(100, 0), 102);
    assert_eq!(settle_deadline(i64::MAX - 1, u64::MAX), i64::MAX);
}

#[test]
fn an_answer_that_never_comes_leaves_the_whole_record_to_claimers_after_the_deadline() {
    let store = prepared();
    let mut stopping = outbox_of(10, 1..=3);
    stopping.next_batch(0, 2).unwrap();
    hand_over(&store, 4, &mut stopping, 100, 107).unwrap();
    let mut next = Outbox::new(10);
    assert_eq!(claim(&store, &mut next, 106).waiting, 1);
    let claims = claim(&store, &mut next, 107);
    assert_eq!((claims.records, claims.events), (1, 3));
    assert_eq!(
        ids(&next),
        want(1..=3),
        "the batch in flight too: at least once"
    );
    // The answer comes after all: the stopping VM learns it was taken over.
    assert_eq!(settle(&store, 4, true), Ok(Settled::ClaimedBefore));
}

#[test]
fn a_record_waits_for_room_and_an_empty_outbox_takes_what_fits() {
    let store = prepared();
    hand_over(&store, 2, &mut outbox_of(10, 1..=4), 0, 0).unwrap();
    // 3 free places for 4 events: later.
    let mut busy = outbox_of(5, [90, 91]);
    let claims = claim(&store, &mut busy, 0);
    assert_eq!((claims.records, claims.waiting), (0, 1));
    assert_eq!(busy.len(), 2);
    // An empty outbox smaller than the record (a push that shrank events.buffer): what fits
    // is kept, the rest dropped and counted.
    let mut small = Outbox::new(3);
    let claims = claim(&store, &mut small, 0);
    assert_eq!((claims.records, claims.events, claims.dropped), (1, 3, 1));
    assert_eq!(ids(&small), want(1..=3));
}

#[test]
fn failing_shared_data_loses_nothing_it_holds_and_says_so() {
    let store = FailingStore;
    let mut o = outbox_of(10, [1]);
    assert!(hand_over(&store, 1, &mut o, 0, 0).is_err());
    let mut next = outbox_of(10, [2]);
    let claims = claim(&store, &mut next, 0);
    assert!(claims.error.is_some());
    assert_eq!(ids(&next), want([2]), "its own events stay");
    // Unreadable records are reported and leave the list; good ones are still taken.
    let store = prepared();
    store.set(&record_key(5), b"garbage", 0).unwrap();
    store
        .set(&pending_key(), b"handover v1\n5 1 0\nnot-a-slot\n", 0)
        .unwrap();
    hand_over(&store, 6, &mut outbox_of(10, [1]), 0, 0).unwrap();
    let claims = claim(&store, &mut next, 0);
    assert_eq!(claims.skipped.len(), 1, "{claims:?}");
    assert_eq!(claims.events, 1);
    assert!(listed_slots(&store).is_empty());
    // A record key taken already (a reused slot) is not overwritten.
    store
        .set(&record_key(8), b"handover v1 claimed\n", 0)
        .unwrap();
    assert!(hand_over(&store, 8, &mut outbox_of(10, [1]), 0, 0).is_err());
    assert_eq!(store.value(&record_key(8)).unwrap(), CLAIMED);
}

#[test]
fn a_push_in_the_middle_of_an_interval_loses_no_request() {
    // Two workers' VMs of the old configuration count requests, then stop (their intervals
    // still open); the new configuration's VM takes everything over. The usage events add up
    // to the requests, each with an id of its own.
    let config = crate::config::Config::from_json(
        br#"{"plans": {"free": {"limits": [{"name": "d", "requests": 100, "window": "day"}]}},
            "consumers": {"acme": {"plan": "free", "keys": ["a"]}, "wayne": {"plan": "free", "keys": ["w"]}},
            "events": {"cluster": "sink", "url": "http://sink/"}}"#,
    )
    .unwrap();
    let store = prepared();
    let mut next = Outbox::new(100);
    for worker in 0..2u64 {
        let origin = Origin {
            instance: "edge".into(),
            incarnation: "1".into(),
            worker,
        };
        let mut tally = Tally::new(2, 10);
        for consumer in 0..2 {
            for _ in 0..12 {
                tally.record(consumer, 1_005, [Metric::Allowed].into_iter());
            }
        }
        let mut outbox = Outbox::new(100);
        // The stop closes the open interval (everything) at 1_006, before its end (1_010).
        for closed in tally.close(1_006, true) {
            assert!(outbox.push(usage_event(&config, &origin, &closed)));
        }
        hand_over(&store, worker, &mut outbox, 0, 0).unwrap();
    }
    let claims = claim(&store, &mut next, 1_006);
    assert_eq!((claims.records, claims.events), (2, 4));
    let mut admitted = std::collections::BTreeMap::<String, u64>::new();
    let mut seen = std::collections::BTreeSet::new();
    let (body, _) = next.next_batch(1_006, 100).unwrap();
    let batch: serde_json::Value = serde_json::from_str(&body).unwrap();
    for e in batch.as_array().unwrap() {
        assert!(seen.insert(e["id"].as_str().unwrap().to_string()));
        *admitted
            .entry(e["subject"].as_str().unwrap().to_string())
            .or_default() += e["data"]["admitted"].as_u64().unwrap();
    }
    assert_eq!(admitted, [("acme".into(), 24), ("wayne".into(), 24)].into());
}

#[test]
fn the_handover_holds_at_most_max_listed_events_and_drops_the_newest_beyond() {
    let store = prepared();
    // A first VM takes all the room but 3.
    let mut big = outbox_of(MAX_LISTED, 0..MAX_LISTED - 3);
    assert_eq!(
        hand_over(&store, 1, &mut big, 0, 0),
        Ok(Stopped::HandedOver {
            events: MAX_LISTED - 3,
            dropped: 0,
            awaiting: false
        })
    );
    // A second one, with a batch in flight: its oldest 3 (the batch first) are kept.
    let mut second = outbox_of(10, 100..105);
    second.next_batch(0, 2).unwrap();
    assert_eq!(
        hand_over(&store, 2, &mut second, 0, 7),
        Ok(Stopped::HandedOver {
            events: 3,
            dropped: 2,
            awaiting: true
        })
    );
    assert!(second.is_empty());
    assert_eq!(
        Record::parse(&store.value(&record_key(2)).unwrap()),
        Ok(Record::Open {
            in_flight: 2,
            until: 7,
            events: vec![event(100), event(101), event(102)],
        })
    );
    // A third finds no room: nothing listed, no record written, all of it dropped.
    assert_eq!(
        hand_over(&store, 3, &mut outbox_of(10, [200, 201]), 0, 0),
        Ok(Stopped::HandedOver {
            events: 0,
            dropped: 2,
            awaiting: false
        })
    );
    assert_eq!(store.value(&record_key(3)), None);
    assert_eq!(listed_slots(&store), [1, 2]);
    // Taking the first over frees its room for the next VM that stops.
    let mut next = Outbox::new(MAX_LISTED);
    assert_eq!(claim(&store, &mut next, 0).events, MAX_LISTED - 3);
    assert_eq!(
        hand_over(&store, 4, &mut outbox_of(10, [300]), 0, 0),
        Ok(Stopped::HandedOver {
            events: 1,
            dropped: 0,
            awaiting: false
        })
    );
}

#[test]
fn the_bound_holds_when_vms_stop_at_once() {
    let store = prepared();
    hand_over(
        &store,
        1,
        &mut outbox_of(MAX_LISTED, 0..MAX_LISTED - 1),
        0,
        0,
    )
    .unwrap();
    // Another VM lists its one event (the last place) between this VM's read of the list
    // and its write: the write fails its CAS, the list is read again, and no room is left.
    let racing = RivalStops {
        inner: &store,
        base: 100,
        rivals: Cell::new(1),
    };
    assert_eq!(
        hand_over(&racing, 2, &mut outbox_of(10, [7]), 0, 0),
        Ok(Stopped::HandedOver {
            events: 0,
            dropped: 1,
            awaiting: false
        })
    );
    let entries = listed(&store.value(&pending_key()).unwrap());
    let total: usize = entries.iter().map(|e| e.events).sum();
    assert_eq!(total, MAX_LISTED);
    assert_eq!(listed_slots(&store), [1, 101]);
}

#[test]
fn a_listed_record_not_written_yet_is_awaited_then_forgotten() {
    let store = prepared();
    // Listed at 50 by a VM whose write of the record failed (or is a moment away).
    store
        .set(&pending_key(), b"handover v1\n9 4 50\n", 0)
        .unwrap();
    let mut next = Outbox::new(10);
    let claims = claim(&store, &mut next, 50 + SETTLE_MARGIN - 1);
    assert_eq!((claims.waiting, claims.skipped.len()), (1, 0));
    assert_eq!(listed_slots(&store), [9]);
    let claims = claim(&store, &mut next, 50 + SETTLE_MARGIN);
    assert_eq!((claims.waiting, claims.skipped.len()), (0, 1), "{claims:?}");
    assert!(listed_slots(&store).is_empty());
    // Its room is free again.
    let mut full = outbox_of(MAX_LISTED, 0..MAX_LISTED);
    assert_eq!(
        hand_over(&store, 10, &mut full, 0, 0),
        Ok(Stopped::HandedOver {
            events: MAX_LISTED,
            dropped: 0,
            awaiting: false
        })
    );
}
