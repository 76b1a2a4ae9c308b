//! Usage events and alerts, host side (the request path's part is `meter.rs`): the root
//! context's [`Sender`], which closes intervals, builds events and sends batches with
//! `dispatch_http_call` from the timer, never from a request. The logic is in [`crate::events`].

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

use super::metrics::{bump, define_counter};
use super::runtime::Runtime;
use super::shared_data::SharedData;
use crate::config::Config;
use crate::events::handover::{self, Settled, Stopped, PENDING_HEADER};
use crate::events::{
    claim, payment_event, reminder_event, reminder_key, reminder_mark, take_worker_slot,
    threshold_event, token_events, usage_event, workers_key, Crossing, Origin, Outbox, Pending,
    Reminders, CONTENT_TYPE,
};
use crate::store::create_if_missing;

/// tollgate's event counters in Envoy (`wasmcustom.tollgate.events.*`, per plan `near_limit`),
/// defined only when events are configured.
struct Counters {
    sent: Option<u32>,
    dropped: Option<u32>,
    failed: Option<u32>,
    thresholds: Option<u32>,
    reminders: Option<u32>,
    handed_over: Option<u32>,
    taken_over: Option<u32>,
    handover_overflow: Option<u32>,
    near_limit: Vec<Option<u32>>,
}

impl Counters {
    fn define(config: &Config) -> Counters {
        Counters {
            sent: define_counter("tollgate.events.sent"),
            dropped: define_counter("tollgate.events.dropped"),
            failed: define_counter("tollgate.events.failed_batches"),
            thresholds: define_counter("tollgate.events.threshold"),
            reminders: define_counter("tollgate.events.reminder"),
            handed_over: define_counter("tollgate.events.handed_over"),
            taken_over: define_counter("tollgate.events.taken_over"),
            handover_overflow: define_counter("tollgate.events.handover_overflow"),
            near_limit: config
                .plans
                .iter()
                .map(|p| define_counter(&format!("tollgate.plan.{}.near_limit", p.name)))
                .collect(),
        }
    }
}

/// The root context's side: the buffer, the call in flight, the reminders to come.
pub struct Sender {
    outbox: Outbox,
    /// The token of the call in flight (responses with other tokens are not ours).
    token: Option<u32>,
    origin: Origin,
    reminders: Reminders,
    counters: Counters,
    /// Dropped since the last log line about drops.
    dropped_unlogged: usize,
    /// The VM is stopping with its record handed over and a batch in flight: the answer is
    /// awaited until then (Unix seconds), then the VM is done either way.
    stopping: Option<i64>,
}

/// What the root context does after an answer of the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// Go on.
    Running,
    /// The stopping VM's last batch is settled: tell Envoy it is done.
    Finished,
}

/// The node id Envoy was started with (`node.id`, `--service-node`), if any.
fn node_id() -> Option<String> {
    let bytes = hostcalls::get_property(vec!["xds", "node", "id"])
        .ok()
        .flatten()?;
    let id = String::from_utf8(bytes).ok()?;
    (!id.is_empty()).then_some(id)
}

fn now_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| {
            d.as_secs()
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::from(d.subsec_nanos()))
        })
}

/// Prepares shared data at configuration time (the canary VM on the main thread does it
/// before any worker serves): the worker counter, the list of handover records and each
/// expiring consumer's reminder key.
pub fn prepare(config: &Config) -> Result<(), String> {
    let Some(events) = &config.events else {
        return Ok(());
    };
    let store = SharedData::default();
    let incarnation = format!("{} 0", now_nanos());
    create_if_missing(&store, &workers_key(), incarnation.as_bytes()).map_err(|e| e.0)?;
    create_if_missing(&store, &handover::pending_key(), PENDING_HEADER).map_err(|e| e.0)?;
    if !events.reminders.is_empty() {
        for consumer in config.consumers.iter().filter(|c| c.expires_at.is_some()) {
            create_if_missing(&store, &reminder_key(consumer.name()), b"\n").map_err(|e| e.0)?;
        }
    }
    Ok(())
}

impl Sender {
    /// The sender for a new configuration. The previous one's buffer carries over (its
    /// events keep their ids); its runtime's open intervals are closed into it first.
    pub fn configure(
        previous: Option<Sender>,
        old: Option<&Runtime>,
        config: &Config,
        now: i64,
    ) -> Option<Sender> {
        let mut previous = previous;
        if let (Some(sender), Some(old)) = (previous.as_mut(), old) {
            sender.close_intervals(old, now, true);
        }
        let Some(events) = &config.events else {
            if let Some(sender) = previous {
                if !sender.outbox.is_empty() {
                    log::warn!(
                        "events: the new configuration has no events block; {} unsent events dropped",
                        sender.outbox.len()
                    );
                    bump(sender.counters.dropped, sender.outbox.len());
                }
            }
            return None;
        };
        // A worker slot per configuration: ids of this VM's intervals never collide with the
        // ones an earlier configuration of it (or another worker) reported.
        let store = SharedData::default();
        let (incarnation, worker) = match take_worker_slot(&store) {
            Ok(slot) => slot,
            Err(e) => {
                log::warn!(
                    "events: no worker slot from shared data ({}); using the clock",
                    e.0
                );
                ("clock".to_string(), now_nanos() % 1_000_000_007)
            }
        };
        let origin = Origin {
            instance: node_id().unwrap_or_else(|| "envoy".into()),
            incarnation,
            worker,
        };
        let reminders = Reminders::new(config, &events.reminders, now);
        let (outbox, token, dropped_unlogged) = match previous {
            Some(mut sender) => {
                sender.outbox.set_capacity(events.buffer);
                (sender.outbox, sender.token, sender.dropped_unlogged)
            }
            None => (Outbox::new(events.buffer), None, 0),
        };
        log::debug!(
            "events: worker slot {} sends to cluster {}",
            origin.worker,
            events.cluster
        );
        Some(Sender {
            outbox,
            token,
            origin,
            reminders,
            counters: Counters::define(config),
            dropped_unlogged,
            stopping: None,
        })
    }

    #[inline(never)]
    fn push(&mut self, event: Pending) {
        if !self.outbox.push(event) {
            self.dropped_unlogged += 1;
            bump(self.counters.dropped, 1);
        }
    }

    /// Renders and queues an event, unless the buffer is full: then it is counted as dropped
    /// without being rendered (a sink that is down must not cost the worker the JSON of every
    /// event it will drop).
    fn push_with(&mut self, render: impl FnOnce(&Origin) -> Pending) {
        if self.outbox.is_full() {
            self.dropped_unlogged += 1;
            bump(self.counters.dropped, 1);
            return;
        }
        let event = render(&self.origin);
        self.push(event);
    }

    /// Closes the runtime's ended intervals (all of them with `everything`) and its threshold
    /// crossings into events.
    fn close_intervals(&mut self, runtime: &Runtime, now: i64, everything: bool) {
        let Some(meter) = &runtime.meter else {
            return;
        };
        let closed = match meter.tally.try_borrow_mut() {
            Ok(mut tally) => tally.close(now, everything),
            Err(_) => return,
        };
        for interval in &closed {
            self.push_with(|origin| usage_event(&runtime.config, origin, interval));
            if !interval.tokens.is_empty() {
                for event in token_events(&runtime.config, &self.origin, interval) {
                    self.push_with(|_| event);
                }
            }
        }
        let crossings: Vec<Crossing> = match meter.crossings.try_borrow_mut() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => Vec::new(),
        };
        for crossing in &crossings {
            let plan = runtime
                .config
                .consumers
                .get(crossing.consumer)
                .map(|c| c.plan);
            if let Some(id) = plan.and_then(|p| self.counters.near_limit.get(p)) {
                bump(*id, 1);
            }
            self.push_with(|origin| threshold_event(&runtime.config, origin, crossing));
        }
        bump(self.counters.thresholds, crossings.len());
        let payments = match meter.payments.try_borrow_mut() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => Vec::new(),
        };
        for payment in &payments {
            self.push_with(|origin| payment_event(&runtime.config, origin, payment));
        }
    }

    /// Claims and queues the reminders due at `now` (one VM of the Envoy wins each).
    fn remind(&mut self, runtime: &Runtime, now: i64) {
        let store = SharedData::default();
        for reminder in self.reminders.due(now) {
            let Some(consumer) = runtime.config.consumers.get(reminder.consumer) else {
                continue;
            };
            match claim(
                &store,
                &reminder_key(consumer.name()),
                &reminder_mark(&reminder),
            ) {
                Ok(true) => {
                    bump(self.counters.reminders, 1);
                    self.push(reminder_event(
                        &runtime.config,
                        &self.origin,
                        &reminder,
                        now,
                    ));
                }
                Ok(false) => {}
                Err(e) => log::warn!(
                    "events: reminder for consumer {} not claimed: {}",
                    consumer.name(),
                    e.0
                ),
            }
        }
    }

    /// Takes over the events stopped VMs handed over (a configuration push), if any.
    fn take_over(&mut self, now: i64) {
        if self.outbox.is_full() {
            return;
        }
        let claims = handover::claim(&SharedData::default(), &mut self.outbox, now);
        if claims.records > 0 {
            bump(self.counters.taken_over, claims.events);
            log::info!(
                "events: took over {} unsent events from {} stopped VMs",
                claims.events,
                claims.records
            );
        }
        if claims.dropped > 0 {
            self.dropped_unlogged += claims.dropped;
            bump(self.counters.dropped, claims.dropped);
        }
        for record in &claims.skipped {
            log::warn!("events: a handover record is skipped: {record}");
        }
        if let Some(e) = claims.error {
            log::warn!("events: handover records not taken over: {}", e.0);
        }
    }

    /// The timer: close intervals, take over stopped VMs' events, queue reminders, send a
    /// batch if none is in flight. A stopping VM only waits for its last answer.
    pub fn tick(&mut self, runtime: &Runtime, now: i64) {
        if self.stopping.is_some() {
            return;
        }
        self.close_intervals(runtime, now, false);
        self.take_over(now);
        if !self.reminders.is_empty() {
            self.remind(runtime, now);
        }
        if self.dropped_unlogged > 0 {
            log::warn!(
                "events: buffer full ({} events unsent): {} events dropped (tollgate.events.dropped)",
                self.outbox.len(),
                self.dropped_unlogged
            );
            self.dropped_unlogged = 0;
        }
        self.send(runtime, now);
    }

    fn send(&mut self, runtime: &Runtime, now: i64) {
        let Some(events) = &runtime.config.events else {
            return;
        };
        if self.token.is_some() {
            return;
        }
        let Some((body, n)) = self.outbox.next_batch(now, events.batch) else {
            return;
        };
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", "POST"),
            (":path", &events.path),
            (":authority", &events.authority),
            ("content-type", CONTENT_TYPE),
        ];
        if let Some(auth) = &events.authorization {
            headers.push(("authorization", &auth.0));
        }
        let timeout = Duration::from_millis(events.timeout_ms);
        match hostcalls::dispatch_http_call(
            &events.cluster,
            headers,
            Some(body.as_bytes()),
            vec![],
            timeout,
        ) {
            Ok(token) => {
                log::debug!("events: sending {n} events to {}", events.cluster);
                self.token = Some(token);
            }
            Err(status) => self.failed(now, &format!("cannot be called ({status:?})")),
        }
    }

    /// A batch failed: back off, keep its events, say so.
    #[inline(never)]
    fn failed(&mut self, now: i64, what: &str) {
        let wait = self.outbox.failed(now);
        bump(self.counters.failed, 1);
        log::warn!(
            "events: the sink answered {what}; {} events kept, next try in {wait} s",
            self.outbox.len()
        );
    }

    /// Whether a call's response is this sender's.
    pub fn owns(&self, token: u32) -> bool {
        self.token == Some(token)
    }

    /// The sink answered (or the call failed: no `:status`).
    pub fn response(&mut self, runtime: &Runtime, now: i64) -> Answered {
        self.token = None;
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        let ok = status
            .as_deref()
            .and_then(|s| s.parse::<u16>().ok())
            .is_some_and(|s| (200..300).contains(&s));
        if self.stopping.is_some() {
            self.settle(ok);
            return Answered::Finished;
        }
        if ok {
            bump(self.counters.sent, self.outbox.delivered());
            // More waiting: keep going without waiting for the next tick.
            self.send(runtime, now);
        } else {
            let answer = status
                .as_deref()
                .unwrap_or("nothing (timeout, reset, no host)");
            self.failed(now, answer);
        }
        Answered::Running
    }

    /// The VM is going away (`on_done`): its open intervals are closed into events, and every
    /// unsent event is handed over through shared data to the VMs that go on. `true`: done;
    /// `false`: a batch is in flight, its answer is awaited (see [`Sender::response`], and
    /// [`Sender::overdue`] should it never come).
    pub fn stop(&mut self, runtime: &Runtime, now: i64) -> bool {
        self.close_intervals(runtime, now, true);
        let timeout_ms = runtime.config.events.as_ref().map_or(0, |e| e.timeout_ms);
        let until = handover::settle_deadline(now, timeout_ms);
        let unsent = self.outbox.len();
        match handover::hand_over(
            &SharedData::default(),
            self.origin.worker,
            &mut self.outbox,
            now,
            until,
        ) {
            Ok(Stopped::Empty) => true,
            Ok(Stopped::HandedOver {
                events,
                dropped,
                awaiting,
            }) => {
                bump(self.counters.handed_over, events);
                if dropped > 0 {
                    bump(self.counters.dropped, dropped);
                    bump(self.counters.handover_overflow, dropped);
                    log::warn!(
                        "events: VM stopping: {dropped} unsent events dropped: the handover holds at most {} events waiting to be taken over",
                        handover::MAX_LISTED
                    );
                }
                let waiting = self.token.is_some() && awaiting;
                log::info!(
                    "events: VM stopping: {events} unsent events handed over through shared data (worker slot {}){}",
                    self.origin.worker,
                    if waiting { "; waiting for the answer to the batch in flight" } else { "" }
                );
                if waiting {
                    self.stopping = Some(until);
                }
                !waiting
            }
            Err(e) => {
                bump(self.counters.dropped, unsent);
                log::warn!(
                    "events: VM stopping with {unsent} unsent events; they are lost: shared data failed: {}",
                    e.0
                );
                true
            }
        }
    }

    /// A stopping VM whose answer has not come by its deadline (claimers may take its whole
    /// record from then on): it should stop waiting.
    pub fn overdue(&self, now: i64) -> bool {
        self.stopping.is_some_and(|until| now >= until)
    }

    /// Whether this VM is stopping (waiting for its last answer).
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// The stopping VM's last batch was answered: its record loses the delivered events and
    /// becomes claimable.
    fn settle(&mut self, delivered: bool) {
        match handover::settle(&SharedData::default(), self.origin.worker, delivered) {
            Ok(Settled::Released { delivered, left }) => {
                bump(self.counters.sent, delivered);
                log::info!(
                    "events: VM stopping: last batch {}; {left} events left to take over",
                    if delivered > 0 { "delivered" } else { "failed" }
                );
            }
            Ok(Settled::ClaimedBefore) => log::info!(
                "events: VM stopping: its events were taken over before the last batch was answered (it may reach the sink twice, same ids)"
            ),
            Err(e) => log::warn!(
                "events: VM stopping: the handover record was not settled: {}",
                e.0
            ),
        }
    }
}
