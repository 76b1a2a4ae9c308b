//! What the filter does with one request, decided without touching the host: forward it
//! (with identity headers, the credential hidden if asked, RateLimit fields for the response)
//! or answer it locally. This is where the operating options apply: CORS preflights, the usage
//! endpoint, shadow mode and the store-error policy.
//!
//! The request is read through [`Request`], lazily: a header is fetched only when a rule needs
//! it (e.g. `content-type` only to shape a refusal for gRPC). An admitted request allocates
//! little: its verdict is plain fields, and the policy field is shared ([`Memo::policy`]).

use crate::admission::decide_with;
use crate::config::{Config, CorsPreflight, Mode, OnStoreError};
use crate::credentials::Source;
use crate::credentials::{extract, strip_query_param, Credential};
use crate::decision::{Attempt, Caller, Charged, Decision, Denial, DrawAsk, Reason};
use crate::events::{crossings, Crossing};
use crate::memo::Memo;
use crate::metrics::{Increments, Metric};
use crate::paymentauth;
use crate::payments::{self, Pay, Presented, Refused};
use crate::quota::{check_and_take, peek, Usage};
use crate::response::{
    rate_limit_state, refusal, usage, usage_method_not_allowed, QuotaRefusal, RateLimitFields,
    Reply,
};
use crate::shadow_log::ShadowLog;
use crate::store::Store;

/// Read access to the request headers (`:method`, `:path` included), by lowercase name.
pub trait Request {
    fn header(&mut self, name: &str) -> Option<Vec<u8>>;
}

impl<F: FnMut(&str) -> Option<Vec<u8>>> Request for F {
    fn header(&mut self, name: &str) -> Option<Vec<u8>> {
        self(name)
    }
}

/// Forward upstream, after these changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Forward<'c> {
    /// The identity headers' names (consumer, plan). Whatever a client sent in them never goes
    /// upstream: they are set to the caller's names, or removed.
    pub identity_headers: (&'c str, &'c str),
    /// Whether the caller is named in them (`identity_headers`); off, they are only removed.
    pub name_caller: bool,
    /// The names to set in them (consumer, plan). `None`: nobody is named, so whatever a
    /// client sent in the identity headers is removed. Setting a header replaces every value a
    /// client sent, so a named caller needs no removal (one host call per header).
    pub caller: Option<(&'c str, &'c str)>,
    /// The credential header to remove (with `hide_credentials`).
    pub hide_header: Option<&'c str>,
    /// A new `:path` (the credential parameter removed, with `hide_credentials`).
    pub path: Option<Vec<u8>>,
    /// The RateLimit fields to add to the upstream's response.
    pub rate_limit: Option<RateLimitFields>,
    /// Fleet mode: the consumer's lease (by index) to refill ahead of time, while this
    /// request goes on.
    pub refill: Option<(usize, crate::lease::Ask)>,
    /// A priced request (a route's cost, an LLM reservation): what it took, to settle.
    pub charged: Option<Charged>,
    /// Which payment headers ([`payments::HEADERS`]: x402's, HTTP Payment credentials) the
    /// request carries, with `payments` configured: they never go upstream.
    pub payment_headers: [bool; 4],
}

impl<'c> Forward<'c> {
    /// Request headers this forward removes.
    pub fn removed(&self) -> Vec<&'c str> {
        let mut removed = Vec::new();
        if self.named().is_none() {
            let (consumer, plan) = self.identity_headers;
            removed.extend([consumer, plan]);
        }
        removed.extend(self.hide_header);
        removed
    }

    /// The names the identity headers are set to (consumer, plan); `None`: they are removed.
    pub fn named(&self) -> Option<(&'c str, &'c str)> {
        self.caller.filter(|_| self.name_caller)
    }

    /// Request headers this forward sets, with their values.
    pub fn set_headers(&self) -> Vec<(&'c str, &'c str)> {
        let (consumer_header, plan_header) = self.identity_headers;
        match self.named() {
            Some((consumer, plan)) => vec![(consumer_header, consumer), (plan_header, plan)],
            None => Vec::new(),
        }
    }

    /// Response headers this forward adds.
    pub fn response_headers(&self) -> Vec<(&'static str, String)> {
        self.rate_limit
            .as_ref()
            .map(RateLimitFields::headers)
            .unwrap_or_default()
    }
}

// One Action per request, moved once to the host layer: boxing Forward (the common case) would
// add a heap allocation to every admitted request to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'c> {
    Forward(Forward<'c>),
    Reply(Reply),
    /// Fleet mode: hold the request until the consumer's lease is refilled (by this request's
    /// own store call, `refill`, or another's), then handle it again.
    Wait(Wait),
    /// The request carries a payment, claimed for it: hold it while the facilitator
    /// verifies and settles the payment, then handle it again (with `Attempt::paid`).
    Pay(Pay),
    /// Fleet mode: draw on the consumer's prepaid balance, then handle it again (with
    /// `Attempt::drawn`).
    Draw(DrawAsk),
}

/// A request held for a lease refill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// The consumer's index in the configuration.
    pub consumer: usize,
    /// The store call this request must make (it claimed the refill).
    pub refill: Option<crate::lease::Ask>,
}

/// What became of a request once decided and carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Forward it (its request headers already changed), with these RateLimit fields; with
    /// `refill`, the request claimed its consumer's refill ahead of time (consumer index, ask).
    Continue {
        fields: Option<RateLimitFields>,
        refill: Option<(usize, crate::lease::Ask)>,
        /// A priced request's charge, to settle from its response.
        charged: Option<Charged>,
    },
    /// A local reply was sent.
    Replied,
    /// Fleet mode: hold it for a lease refill.
    Wait(Wait),
    /// Hold it while its payment is verified and settled.
    Pay(Pay),
    /// Fleet mode: hold it while its draw on the prepaid balance is made.
    Draw(DrawAsk),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict<'c> {
    pub action: Action<'c>,
    /// The metrics this request increments.
    pub metrics: Increments,
    /// Whose request this was and the alert thresholds it reached (for usage events).
    pub metered: Metered,
}

/// What usage events need from a request: the consumer it counts for (`None` when nobody
/// is known, or for the usage endpoint), and the thresholds its count reached (empty, and so
/// without allocation, unless `events.alerts` are configured and one is reached).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metered {
    pub consumer: Option<usize>,
    pub crossings: Vec<Crossing>,
}

impl Metered {
    fn of(caller: Option<&Caller>) -> Metered {
        Metered {
            consumer: caller.map(|c| c.consumer.id),
            crossings: Vec::new(),
        }
    }
}

fn plan_index(caller: &Caller) -> Option<usize> {
    Some(caller.consumer.plan)
}

/// Handles one request at `now` (Unix seconds). `exhausted` and `shadow_log` are the VM's
/// memory for this configuration (consumers known to be refused; shadow lines logged).
pub fn handle<'c>(
    config: &'c Config,
    request: &mut impl Request,
    now: i64,
    store: &impl Store,
    memo: &Memo,
    shadow_log: &ShadowLog,
) -> Verdict<'c> {
    let attempt = Attempt {
        now_ms: now.saturating_mul(1000),
        ..Attempt::default()
    };
    handle_with(config, request, now, store, memo, shadow_log, &attempt)
}

/// [`handle`], for one attempt at the request: its price, a dry run, and fleet mode's inputs (the host's millisecond clock, and whether the request
/// already waited for a refill).
pub fn handle_with<'c>(
    config: &'c Config,
    request: &mut impl Request,
    now: i64,
    store: &impl Store,
    memo: &Memo,
    shadow_log: &ShadowLog,
    attempt: &Attempt,
) -> Verdict<'c> {
    let mut forward = Forward {
        identity_headers: (config.consumer_header.as_str(), config.plan_header.as_str()),
        name_caller: config.identity_headers,
        ..Forward::default()
    };
    let mut path: Option<Option<Vec<u8>>> = None;
    let mut cached = |name: &str| -> Option<Vec<u8>> {
        if name == ":path" {
            return path.get_or_insert_with(|| request.header(":path")).clone();
        }
        request.header(name)
    };
    let credential = extract(&config.credentials, &mut cached);

    // A CORS preflight carries no credential (browsers never send one), so the method is only
    // looked at when there is none: requests with a key pay nothing for this rule.
    if credential == Credential::Missing
        && config.cors_preflight == CorsPreflight::Pass
        && cached(":method").as_deref() == Some(b"OPTIONS")
        && cached("access-control-request-method").is_some()
    {
        log::debug!("pass CORS preflight");
        return Verdict {
            action: Action::Forward(forward),
            metrics: Increments::one(Metric::Preflight, None),
            metered: Metered::default(),
        };
    }

    if let Some(usage_path) = &config.usage_path {
        let full = cached(":path").unwrap_or_default();
        let only_path = full.split(|c| *c == b'?').next().unwrap_or_default();
        if only_path == usage_path.as_bytes() {
            let method = cached(":method").unwrap_or_default();
            return usage_endpoint(config, credential, &method, now, store, attempt);
        }
    }

    // An LLM route's payment is not read (its dry run must not claim it, and its body's
    // decision comes after its headers went upstream).
    let payable = !attempt.dry_run
        && !attempt.headers_forwarded
        && attempt.paid.is_none()
        && !attempt.claimed
        && attempt.drawn.is_none();
    if let Some(payments) = &config.payments {
        let mut tried = false;
        for (i, header) in payments::HEADERS.into_iter().enumerate() {
            let Some(value) = cached(header) else {
                continue;
            };
            // In `Authorization`, only the `Payment` scheme is a payment (it may carry the
            // API key).
            let token = match header {
                payments::PAYMENT_SIGNATURE | payments::X_PAYMENT => Some(&value[..]),
                paymentauth::AUTHORIZATION => paymentauth::credential_of(&value),
                _ => Some(paymentauth::credential_of(&value).unwrap_or(&value)),
            };
            let Some(token) = token else {
                continue;
            };
            // Removed before the request goes upstream (only the headers a request carries),
            // whether or not it is a way to pay here.
            if let Some(present) = forward.payment_headers.get_mut(i) {
                *present = true;
            }
            let offered = match header {
                payments::PAYMENT_SIGNATURE | payments::X_PAYMENT => payments.x402,
                _ => payments.http_payment.is_some(),
            };
            // One that is not is still looked at if its claim is settling: a configuration
            // change must not drop a payment whose money may have moved.
            // (Fleet mode: the claims are in the store; `pay` has the root look there.)
            let fleet_look = config.store.is_some() && !attempt.looked;
            let looked_at = offered
                || (payable
                    && (fleet_look
                        || payments::settling(store, payments, header, token, None).is_some()));
            if !looked_at {
                continue;
            }
            if payable && !tried {
                tried = true;
                let pays = pay(config, &credential, header, token, offered, store, attempt);
                if let Some(verdict) = pays {
                    return verdict;
                }
            }
        }
    }

    if config.hide_credentials {
        hide(config, &credential, &mut forward, || cached(":path"));
    }

    let denial = match decide_with(config, credential, now, store, memo, attempt) {
        Decision::Allow {
            caller,
            usages,
            refill,
            drawn,
        } => {
            log::debug!(
                "allow consumer={} plan={}",
                caller.consumer.name(),
                caller.plan.name
            );
            forward.refill = refill.map(|ask| (caller.consumer.id, ask));
            if !attempt.price.is_plain() {
                forward.charged = Some(Charged {
                    consumer: caller.consumer.id,
                    usages: usages.clone(),
                    output_cap: attempt.price.tokens.map(|t| t.cap_for(caller.plan)),
                    in_record: config.store.is_none(),
                    drawn,
                });
            }
            let metrics = Increments::one(Metric::Allowed, plan_index(&caller));
            let local = config.store.is_none();
            let mut verdict = admit(config, memo, forward, caller, &usages, now, metrics, local);
            if attempt.dry_run {
                // Nothing was counted: no threshold was crossed.
                verdict.metered.crossings.clear();
            }
            return verdict;
        }
        Decision::Deny(denial) => denial,
        Decision::Draw { ask, .. } => {
            return Verdict {
                action: Action::Draw(ask),
                metrics: Increments::default(),
                metered: Metered::default(),
            }
        }
        Decision::Wait { caller, refill } => {
            return Verdict {
                action: Action::Wait(Wait {
                    consumer: caller.consumer.id,
                    refill,
                }),
                metrics: Increments::default(),
                metered: Metered::default(),
            }
        }
    };

    refuse(
        config, request, now, store, memo, shadow_log, forward, denial, attempt,
    )
}

/// A request that carries a payment (`header`): read it, match it to a pack, and claim it —
/// or refuse it. `None`: the payment is not this request's business (no consumer whose plan
/// has credits, or a replay of a settled payment), and the request is decided as usual.
#[allow(clippy::too_many_arguments)] // the payment header, as the loop found it, and the request
fn pay<'c>(
    config: &'c Config,
    credential: &Credential,
    header: &str,
    value: &[u8],
    offered: bool,
    store: &impl Store,
    attempt: &Attempt,
) -> Option<Verdict<'c>> {
    let payments = config.payments.as_ref()?;
    let consumer = match credential {
        Credential::Key(presented) => config.consumer_for_key(&presented.key)?,
        Credential::Missing => config.anonymous.and_then(|i| config.consumers.get(i))?,
        Credential::Malformed(_) => return None,
    };
    let plan = config.plan_of(consumer)?;
    let now = attempt.now_ms.div_euclid(1000);
    let read = || match header {
        payments::PAYMENT_SIGNATURE | payments::X_PAYMENT => {
            payments::read(payments, header, value, now)
        }
        _ => payments::read_credential(payments, header, value, now, consumer.name()),
    };
    // A payment whose settlement is under way or unknown is decided by its claim, whatever
    // changed since it was taken (the plan, the standing, the packs): its money may have moved.
    // Local mode looks in shared data. Fleet mode's claims are in the store: a payment this
    // request would turn away is looked up there first, by the root (`Pay::look`), and the
    // request decided again as here (`Attempt::looked`) if it has no claim under way.
    let replay = match config.store {
        Some(_) => None,
        None => payments::settling(store, payments, header, value, Some(consumer.name())),
    };
    let settling = replay.is_some();
    let look = |presented: Option<Presented>| -> Option<Verdict<'c>> {
        if config.store.is_none() || attempt.looked {
            return None;
        }
        let candidates = payments::replay_candidates(payments, header, value);
        if candidates.is_empty() {
            return None;
        }
        Some(Verdict {
            action: Action::Pay(Pay {
                consumer: consumer.id,
                readable: presented.is_some(),
                presented: presented.unwrap_or_default(),
                verify: false,
                remote: true,
                look: candidates,
            }),
            metrics: Increments::default(),
            metered: Metered::default(),
        })
    };
    // Fleet mode pays a request from credits only when its cost is known on admission: on a
    // route whose cost is settled from the response, a payment is not taken (pay elsewhere).
    if config.store.is_some() && attempt.price.settled_later(config) {
        return look(read().ok());
    }
    if !offered && !settling {
        return look(read().ok());
    }
    if plan.credits.is_empty() && !settling {
        return look(read().ok());
    }
    // A consumer that credits would not let through (its standing, or a limit credits do not
    // stand in for, such as a burst) is refused as usual, before any money moves.
    if !settling
        && !matches!(
            consumer.standing(now),
            crate::config::Standing::Active | crate::config::Standing::Grace { .. }
        )
    {
        return look(read().ok());
    }
    let costs = attempt.price.costs(config, plan);
    let looked = if settling {
        // Checked by its claim below.
        None
    } else if let Some(rls) = &config.store {
        // Fleet mode: what the consumer's lease knows of the store's counts.
        let clock = crate::lease::Clock {
            now,
            now_ms: attempt.now_ms,
        };
        let terms = crate::lease::Terms::of(rls, config.utc_offset);
        let key = crate::lease::key(consumer.name());
        match crate::lease::peek(store, &key, &plan.limits, &costs, clock, &terms) {
            Ok(crate::lease::Take::Refused(usages)) => Some(usages),
            _ => None,
        }
    } else {
        crate::quota::look(
            store,
            &consumer.store_key,
            &plan.limits,
            &costs,
            now,
            config.utc_offset,
        )
        .ok()
    };
    if let Some(usages) = looked {
        let uncured = usages
            .iter()
            .enumerate()
            .any(|(i, u)| u.violated && !plan.credits.contains(&i));
        if uncured {
            return look(read().ok());
        }
    }
    let caller = Caller { consumer, plan };
    let reply = |kind: &'static str, detail: String, retry: Option<u64>| Verdict {
        action: Action::Reply(payments::reply(payments, &caller, kind, detail, retry, now)),
        metrics: Increments::default(),
        metered: Metered::of(Some(&caller)),
    };
    let presented = match read() {
        Ok(presented) => presented,
        // Fleet mode: turned away only once the store says it has no claim under way.
        Err(_) if look(None).is_some() => return look(None),
        // Its claim says the money may have moved, but what took it is no longer offered:
        // never a fresh 402; the operator settles it from the facilitator's records.
        Err(Refused::Credential(_, why) | Refused::Mismatch(why) | Refused::Malformed(why))
            if settling =>
        {
            log::error!(
                "payments: consumer={}: a payment whose settlement is unknown (replay key {}) \
                 can no longer be settled here ({why}); check it with the facilitator and \
                 credit it by hand",
                consumer.name(),
                replay.unwrap_or_default()
            );
            return Some(reply(
                crate::response::PAYMENT_UNRESOLVED,
                payments::UNRESOLVED.into(),
                None,
            ));
        }
        Err(Refused::Credential(kind, why)) => {
            log::debug!(
                "consumer={}: Payment credential refused ({why})",
                consumer.name()
            );
            return Some(reply(kind, why, None));
        }
        Err(Refused::Malformed(why)) => {
            log::debug!("consumer={}: malformed payment ({why})", consumer.name());
            return Some(reply(crate::response::PAYMENT_MALFORMED, why, None));
        }
        Err(Refused::Mismatch(why)) => {
            log::debug!("consumer={}: payment refused ({why})", consumer.name());
            return Some(reply(crate::response::PAYMENT_REFUSED, why, None));
        }
    };
    let pay = |verify: bool, remote: bool| Verdict {
        action: Action::Pay(Pay {
            consumer: consumer.id,
            presented: presented.clone(),
            verify,
            remote,
            look: Vec::new(),
            readable: true,
        }),
        metrics: Increments::default(),
        metered: Metered::default(),
    };
    if config.store.is_some() {
        // Fleet mode: claimed in the store, by the root context, before anything else.
        return Some(pay(true, true));
    }
    let stale = payments::stale_ms(payments);
    let claimed = match payments::claim(store, &presented, consumer.name(), attempt.now_ms, stale) {
        Ok(claimed) => claimed,
        Err(e) => {
            log::error!("payments: cannot claim a payment: {}", e.reason());
            return Some(reply(
                crate::response::PAYMENT_PENDING,
                payments::NOT_TAKEN.into(),
                Some(1),
            ));
        }
    };
    match payments::after_claim(claimed, &presented, consumer.name()) {
        Ok(verify) => Some(pay(verify, false)),
        Err(None) => None,
        Err(Some((kind, detail, retry))) => Some(reply(kind, detail, retry)),
    }
}

/// What to hide of the credential if the request goes upstream (`hide_credentials`).
fn hide<'c>(
    config: &'c Config,
    credential: &Credential,
    forward: &mut Forward<'c>,
    path: impl FnOnce() -> Option<Vec<u8>>,
) {
    let Credential::Key(presented) = credential else {
        return;
    };
    match config.credentials.get(presented.source) {
        Some(Source::Header(name)) => forward.hide_header = Some(name),
        Some(Source::Authorization(_)) => forward.hide_header = Some("authorization"),
        Some(Source::Query(name)) => {
            forward.path = path().and_then(|p| strip_query_param(&p, name));
        }
        None => {}
    }
}

/// What becomes of a denied request: `on_store_error` first (forward uncounted, or count in
/// this Envoy), then shadow mode (forward, log what enforcing would do), else the refusal.
#[allow(clippy::too_many_arguments)] // the request's whole context, passed along as it is
fn refuse<'c>(
    config: &'c Config,
    request: &mut impl Request,
    now: i64,
    store: &impl Store,
    memo: &Memo,
    shadow_log: &ShadowLog,
    mut forward: Forward<'c>,
    mut denial: Denial<'c>,
    attempt: &Attempt,
) -> Verdict<'c> {
    let caller = denial.caller();
    let plan = caller.as_ref().and_then(plan_index);
    let mut metrics = Increments::default();
    if let Some(verdict) = store_error(
        config,
        now,
        store,
        memo,
        shadow_log,
        &mut forward,
        &mut denial,
        &mut metrics,
        attempt,
    ) {
        return verdict;
    }

    if config.mode == Mode::Shadow {
        let who = caller.as_ref().map_or("", |c| c.consumer.name());
        match shadow_log.admit(who, denial.reason(), now) {
            Some(0) => log::info!("shadow mode: would refuse {}", denial.describe()),
            Some(held_back) => log::info!(
                "shadow mode: would refuse {} ({held_back} more like it not logged since the \
                 last such line)",
                denial.describe()
            ),
            None => metrics.push(Metric::ShadowLogSuppressed, None),
        }
        forward.caller = caller.map(|c| (c.consumer.name(), c.plan.name.as_str()));
        if let Denial::QuotaExceeded { caller, usages } = &denial {
            forward.rate_limit = rate_limit_fields(config, memo, caller, usages, now);
        }
        metrics.push(Metric::Shadowed(denial.reason()), plan);
        return Verdict {
            action: Action::Forward(forward),
            metrics,
            metered: Metered::of(caller.as_ref()),
        };
    }

    log::debug!("refuse {}", denial.describe());
    let grpc = request
        .header("content-type")
        .is_some_and(|ct| ct.starts_with(b"application/grpc"));
    metrics.push(Metric::Refused(denial.reason()), plan);
    let reply = match &denial {
        // Rendered once while the consumer stays refused; only the seconds are filled in. A
        // priced request's refusal says what it needed: rendered for it alone.
        Denial::QuotaExceeded { caller, usages } => {
            let render = || {
                let policy = config
                    .ratelimit_policy
                    .then(|| memo.policy(caller.consumer.plan, caller.plan, usages));
                QuotaRefusal::new(caller, usages, grpc, policy, config.payments.as_ref())
            };
            let plain = usages.iter().all(|u| u.cost <= 1);
            let refusal = if plain {
                memo.quota_refusal(caller.consumer.id, grpc, render)
            } else {
                std::rc::Rc::new(render())
            };
            refusal.at(caller, usages, now, config.payments.as_ref())
        }
        _ => refusal(config, &denial, now, grpc),
    };
    Verdict {
        action: Action::Reply(reply),
        metrics,
        metered: Metered::of(caller.as_ref()),
    }
}

/// The shadow log's key for store-error lines: not a consumer name (names never hold a NUL),
/// so one line a minute per VM for every consumer together.
const STORE_ERROR_LINE: &str = "\0store";

/// `on_store_error` for a request that could not be counted: the verdict when it is
/// forwarded (`allow`: uncounted; `local`: counted in this Envoy's own record and admitted —
/// a dry run only looks there); `None` when it goes on being refused — as a quota refusal
/// (`denial` replaced) when `local` found the plan spent. The store error's metric is pushed
/// either way.
#[allow(clippy::too_many_arguments)] // the request's whole context, passed along as it is
fn store_error<'c>(
    config: &'c Config,
    now: i64,
    store: &impl Store,
    memo: &Memo,
    log_limit: &ShadowLog,
    forward: &mut Forward<'c>,
    denial: &mut Denial<'c>,
    metrics: &mut Increments,
    attempt: &Attempt,
) -> Option<Verdict<'c>> {
    let price = attempt.price;
    let Denial::StoreUnavailable {
        contended, reason, ..
    } = &*denial
    else {
        return None;
    };
    let error = if *contended {
        Metric::Contended
    } else {
        Metric::StoreFailed
    };
    metrics.push(error, None);
    // An outage refuses (or forwards) every request that needs the store: one line a minute
    // per VM says so, with how many were held back (all counted in `errors.*` anyway).
    let logged = match log_limit.admit(STORE_ERROR_LINE, Reason::StoreError, now) {
        Some(0) => {
            log::error!("cannot count the request: {reason}");
            true
        }
        Some(held_back) => {
            log::error!(
                "cannot count the request: {reason} ({held_back} more store errors not logged \
                 since the last such line)"
            );
            true
        }
        None => {
            metrics.push(Metric::StoreLogSuppressed, None);
            false
        }
    };
    let caller = denial.caller();
    let plan = caller.as_ref().and_then(plan_index);
    match (config.on_store_error, caller) {
        (OnStoreError::Allow, _) => {
            if logged {
                log::warn!(
                    "on_store_error=allow: forwarding uncounted ({})",
                    denial.describe()
                );
            }
            forward.caller = caller.map(|c| (c.consumer.name(), c.plan.name.as_str()));
            metrics.push(Metric::Allowed, plan);
            Some(Verdict {
                action: Action::Forward(std::mem::take(forward)),
                metrics: *metrics,
                metered: Metered::of(caller.as_ref()),
            })
        }
        // Fleet mode's local fallback: this Envoy's own record, as in local mode (a refusal is
        // not remembered: the fleet may have room once its store is back). A priced request
        // takes its price there, and is settled there.
        // A dry run (an LLM request's headers) only looks at the record: its body counts.
        (OnStoreError::Local, Some(c)) if attempt.dry_run => {
            let costs = price.costs(config, c.plan);
            match crate::quota::look(
                store,
                &c.consumer.store_key,
                &c.plan.limits,
                &costs,
                now,
                config.utc_offset,
            ) {
                Ok(usages) if usages.iter().any(|u| u.violated) => {
                    *denial = Denial::QuotaExceeded { caller: c, usages };
                    None
                }
                Ok(usages) => {
                    let forward = std::mem::take(forward);
                    Some(admit(
                        config, memo, forward, c, &usages, now, *metrics, false,
                    ))
                }
                Err(_) => None,
            }
        }
        (OnStoreError::Local, Some(c)) => {
            let limits = &c.plan.limits;
            match check_and_take(
                store,
                &c.consumer.store_key,
                limits,
                &price.costs(config, c.plan),
                now,
                config.utc_offset,
            ) {
                Ok(counted) if counted.admitted => {
                    if logged {
                        log::warn!(
                            "on_store_error=local: counted in this Envoy ({})",
                            denial.describe()
                        );
                    }
                    metrics.push(Metric::Allowed, plan);
                    let mut forward = std::mem::take(forward);
                    if !price.is_plain() {
                        forward.charged = Some(Charged {
                            consumer: c.consumer.id,
                            usages: counted.usages.clone(),
                            output_cap: price.tokens.map(|t| t.cap_for(c.plan)),
                            in_record: true,
                            drawn: 0,
                        });
                    }
                    Some(admit(
                        config,
                        memo,
                        forward,
                        c,
                        &counted.usages,
                        now,
                        *metrics,
                        true,
                    ))
                }
                Ok(counted) => {
                    *denial = Denial::QuotaExceeded {
                        caller: c,
                        usages: counted.usages,
                    };
                    None
                }
                Err(e) => {
                    log::error!("on_store_error=local: this Envoy's record failed too: {e:?}");
                    None
                }
            }
        }
        _ => None,
    }
}

/// Forward a counted request: its caller named, its RateLimit fields, and the alert thresholds
/// its count reached — when the count is this Envoy's (local mode, or fleet mode's
/// `on_store_error: local`); in fleet mode the store's count decides them, on its grants
/// (see [`crate::fleet`]).
#[allow(clippy::too_many_arguments)] // the request's whole context, passed along as it is
fn admit<'c>(
    config: &'c Config,
    memo: &Memo,
    mut forward: Forward<'c>,
    caller: Caller<'c>,
    usages: &[Usage],
    now: i64,
    metrics: Increments,
    counted_here: bool,
) -> Verdict<'c> {
    forward.caller = Some((caller.consumer.name(), &caller.plan.name));
    forward.rate_limit = rate_limit_fields(config, memo, &caller, usages, now);
    let mut metered = Metered::of(Some(&caller));
    if let Some(thresholds) = config
        .events
        .as_ref()
        .and_then(|e| e.alerts.get(caller.consumer.plan))
        .filter(|_| counted_here)
    {
        crossings(
            thresholds,
            caller.consumer.id,
            usages,
            now,
            &mut metered.crossings,
        );
    }
    Verdict {
        action: Action::Forward(forward),
        metrics,
        metered,
    }
}

fn rate_limit_fields(
    config: &Config,
    memo: &Memo,
    caller: &Caller,
    usages: &[Usage],
    now: i64,
) -> Option<RateLimitFields> {
    if usages.is_empty() {
        return None;
    }
    Some(RateLimitFields {
        policy: config
            .ratelimit_policy
            .then(|| memo.policy(caller.consumer.plan, caller.plan, usages)),
        state: rate_limit_state(caller.plan, usages, now),
    })
}

/// `GET <usage_path>`: the caller's own usage, uncounted.
fn usage_endpoint<'c>(
    config: &'c Config,
    credential: Credential,
    method: &[u8],
    now: i64,
    store: &impl Store,
    attempt: &Attempt,
) -> Verdict<'c> {
    if method != b"GET" && method != b"HEAD" {
        return Verdict {
            action: Action::Reply(usage_method_not_allowed()),
            metrics: Increments::default(),
            metered: Metered::default(),
        };
    }
    let refuse = |denial: Denial| Verdict {
        metrics: Increments::one(Metric::Refused(denial.reason()), None),
        action: Action::Reply(refusal(config, &denial, now, false)),
        metered: Metered::default(),
    };
    let consumer = match credential {
        Credential::Key(presented) => match config.consumer_for_key(&presented.key) {
            Some(consumer) => consumer,
            None => return refuse(config.unknown_key()),
        },
        // Without a key there is nobody to report on (anonymous usage is shared, not the caller's).
        Credential::Missing => return refuse(Denial::MissingCredential),
        Credential::Malformed(why) => return refuse(Denial::MalformedCredential(why)),
    };
    let Some(plan) = config.plan_of(consumer) else {
        return refuse(Denial::UnknownKey);
    };
    let caller = Caller { consumer, plan };
    let standing = consumer.standing(now);
    let counts = match &config.store {
        Some(rls) if !plan.limits.is_empty() => {
            match look_at_lease(config, rls, consumer, plan, now, store, attempt) {
                Ok(Take::Admitted(usages, _) | Take::Refused(usages) | Take::Over(usages)) => {
                    Ok(usages)
                }
                Ok(Take::Refill(ask)) => return wait(consumer.id, Some(ask)),
                Ok(Take::Wait { .. }) => return wait(consumer.id, None),
                Err(e) => Err(e),
            }
        }
        _ => peek(
            store,
            &consumer.store_key,
            &plan.limits,
            now,
            config.utc_offset,
        ),
    };
    // Fleet mode: the balance is the store's, read by a draw of nothing (then decided again
    // with its answer).
    let selling = !plan.credits.is_empty() && config.payments.is_some();
    let balance = match (&config.store, &attempt.drawn) {
        (Some(_), Some(drawn)) => Some(drawn.balance),
        (Some(_), None) if selling && counts.is_ok() => {
            return Verdict {
                action: Action::Draw(DrawAsk {
                    consumer: consumer.id,
                    cost: 0,
                    usages: Vec::new(),
                }),
                metrics: Increments::default(),
                metered: Metered::default(),
            };
        }
        _ => credit_balance(config, consumer, plan, store),
    };
    match counts {
        Ok(usages) => {
            let mut reply = usage(&caller, standing, &usages, balance);
            // A plan that sells credits says what they cost: a client may buy before it runs out.
            if let Some(payments) = config
                .payments
                .as_ref()
                .filter(|_| !plan.credits.is_empty())
            {
                if let Some(offers) = payments.x402_offers() {
                    reply.headers.push(("payment-required", offers.to_string()));
                }
                // RFC 9110 lets a server challenge in any response where credentials could
                // change it: here, a balance.
                crate::response::payment_challenges(
                    payments,
                    consumer.name(),
                    now,
                    &mut reply.headers,
                );
            }
            Verdict {
                action: Action::Reply(reply),
                metrics: Increments::one(Metric::Usage, Some(consumer.plan)),
                metered: Metered::default(),
            }
        }
        Err(e) => {
            let denial = Denial::StoreUnavailable {
                caller,
                contended: false,
                reason: e.0,
            };
            Verdict {
                metrics: Increments::one(Metric::StoreFailed, None),
                action: Action::Reply(refusal(config, &denial, now, false)),
                metered: Metered::default(),
            }
        }
    }
}

/// A consumer's prepaid credits, when its plan has them (local mode: its record's balance).
fn credit_balance(
    config: &Config,
    consumer: &crate::config::Consumer,
    plan: &crate::config::Plan,
    store: &impl Store,
) -> Option<u64> {
    if plan.credits.is_empty() || config.store.is_some() {
        return None;
    }
    let bytes = store.get(&consumer.store_key).ok()??.0;
    Some(crate::quota::balance(
        &crate::record::Record::decode(&bytes).unwrap_or_default(),
    ))
}

fn wait<'c>(consumer: usize, refill: Option<crate::lease::Ask>) -> Verdict<'c> {
    Verdict {
        action: Action::Wait(Wait { consumer, refill }),
        metrics: Increments::default(),
        metered: Metered::default(),
    }
}

/// Fleet mode's usage figures: the lease's, or a store call that takes nothing to get them.
fn look_at_lease(
    config: &Config,
    rls: &crate::config::Rls,
    consumer: &crate::config::Consumer,
    plan: &crate::config::Plan,
    now: i64,
    store: &impl Store,
    attempt: &Attempt,
) -> Result<Take, crate::store::StoreError> {
    if let Some(reason) = &attempt.failed {
        return Err(crate::store::StoreError(reason.clone()));
    }
    let terms = crate::lease::Terms::of(rls, config.utc_offset);
    let clock = crate::lease::Clock {
        now,
        now_ms: attempt.now_ms,
    };
    crate::lease::look(
        store,
        &crate::lease::key(consumer.name()),
        &plan.limits,
        clock,
        &terms,
        attempt.waiting_since_ms,
    )
    .map_err(crate::store::CountError::into_store_error)
}

use crate::lease::Take;

#[cfg(test)]
mod tests;
