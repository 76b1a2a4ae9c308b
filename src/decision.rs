//! The decision for one request: who is calling, are they in good standing, and do their
//! limits allow one more request. Pure apart from the [`Store`] it counts in.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::config::{Config, Consumer, Limit, Plan};
use crate::credentials::Credential;
use crate::metrics::Reason;
use crate::quota::{check_and_take, CountError, Usage};
use crate::store::Store;

/// A consumer and its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'c> {
    pub consumer: &'c Consumer,
    pub plan: &'c Plan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'c> {
    /// Forward upstream; `usages` (one per limit of the plan) feed the RateLimit headers.
    Allow {
        caller: Caller<'c>,
        usages: Vec<Usage>,
    },
    Deny(Denial<'c>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial<'c> {
    /// No configured credential source is present, and there is no anonymous plan.
    MissingCredential,
    /// A source is present but unusable (empty key, broken encoding).
    MalformedCredential(&'static str),
    /// No consumer owns the key.
    UnknownKey,
    Suspended(Caller<'c>),
    Expired {
        caller: Caller<'c>,
        expired_at: i64,
    },
    /// At least one limit is exhausted; `usages` has one entry per limit, violated ones marked.
    QuotaExceeded {
        caller: Caller<'c>,
        usages: Vec<Usage>,
    },
    /// Shared data failed (or, with `contended`, every CAS attempt lost its race): the
    /// request cannot be counted.
    StoreUnavailable {
        caller: Caller<'c>,
        contended: bool,
        reason: String,
    },
}

impl<'c> Denial<'c> {
    /// The metrics reason.
    pub fn reason(&self) -> Reason {
        match self {
            Denial::MissingCredential => Reason::MissingCredential,
            Denial::MalformedCredential(_) | Denial::UnknownKey => Reason::InvalidCredential,
            Denial::Suspended(_) => Reason::Suspended,
            Denial::Expired { .. } => Reason::Expired,
            Denial::QuotaExceeded { .. } => Reason::Quota,
            Denial::StoreUnavailable { .. } => Reason::StoreError,
        }
    }

    /// The consumer, when the refusal concerns a known one.
    pub fn caller(&self) -> Option<Caller<'c>> {
        match self {
            Denial::MissingCredential | Denial::MalformedCredential(_) | Denial::UnknownKey => None,
            Denial::Suspended(caller)
            | Denial::Expired { caller, .. }
            | Denial::QuotaExceeded { caller, .. }
            | Denial::StoreUnavailable { caller, .. } => Some(*caller),
        }
    }

    /// For logs: the reason and the consumer, never the key.
    pub fn describe(&self) -> String {
        match self {
            Denial::MalformedCredential(why) => format!("invalid_credential ({why})"),
            Denial::StoreUnavailable { caller, reason, .. } => {
                format!("store_error consumer={} ({reason})", caller.consumer.name)
            }
            other => match other.caller() {
                Some(c) => format!(
                    "{} consumer={} plan={}",
                    other.reason().name(),
                    c.consumer.name,
                    c.plan.name
                ),
                None => other.reason().name().to_string(),
            },
        }
    }
}

/// Remembers, per consumer, that a limit is exhausted until its window ends. Counts only grow
/// within a window and a refused request writes nothing, so until then every request of that
/// consumer is refused: a flood of refused requests needs no shared-data access at all (it
/// costs less than an admitted request). One per configuration and VM; a new configuration
/// starts empty, so a raised quota applies at once.
#[derive(Debug, Default)]
pub struct Exhausted {
    consumers: RefCell<HashMap<String, Vec<Usage>>>,
}

impl Exhausted {
    /// The usages of a consumer known to be refused at `now`, brought up to date: limits whose
    /// window has ended since are shown fresh. `None` once no limit is exhausted any more.
    fn refused(
        &self,
        key: &str,
        limits: &[Limit],
        now: i64,
        utc_offset: i64,
    ) -> Option<Vec<Usage>> {
        let mut consumers = self.consumers.try_borrow_mut().ok()?;
        let usages = consumers.get_mut(key)?;
        for (usage, limit) in usages.iter_mut().zip(limits) {
            if now >= usage.bounds.end {
                let bounds = limit.window.bounds(now, utc_offset);
                *usage = Usage {
                    used: 0,
                    requests: limit.requests,
                    bounds,
                    violated: false,
                };
            }
        }
        if usages.iter().any(|u| u.violated) {
            return Some(usages.clone());
        }
        consumers.remove(key);
        None
    }

    fn remember(&self, key: &str, usages: &[Usage]) {
        if let Ok(mut consumers) = self.consumers.try_borrow_mut() {
            consumers.insert(key.to_string(), usages.to_vec());
        }
    }
}

/// Decides a request. `now` is Unix seconds.
pub fn decide<'c>(
    config: &'c Config,
    credential: Credential,
    now: i64,
    store: &impl Store,
    exhausted: &Exhausted,
) -> Decision<'c> {
    let consumer = match credential {
        Credential::Key(presented) => match config.consumer_for_key(&presented.key) {
            Some(consumer) => consumer,
            None => return Decision::Deny(Denial::UnknownKey),
        },
        Credential::Missing => match config.anonymous.and_then(|i| config.consumers.get(i)) {
            Some(anonymous) => anonymous,
            None => return Decision::Deny(Denial::MissingCredential),
        },
        Credential::Malformed(reason) => {
            return Decision::Deny(Denial::MalformedCredential(reason))
        }
    };
    let Some(plan) = config.plan_of(consumer) else {
        // Unreachable for a validated configuration; refuse rather than trap.
        return Decision::Deny(Denial::UnknownKey);
    };
    let caller = Caller { consumer, plan };
    if consumer.suspended {
        return Decision::Deny(Denial::Suspended(caller));
    }
    if let Some(expired_at) = consumer.expires_at.filter(|at| now >= *at) {
        return Decision::Deny(Denial::Expired { caller, expired_at });
    }
    if plan.limits.is_empty() {
        return Decision::Allow {
            caller,
            usages: Vec::new(),
        };
    }
    if let Some(usages) =
        exhausted.refused(&consumer.store_key, &plan.limits, now, config.utc_offset)
    {
        return Decision::Deny(Denial::QuotaExceeded { caller, usages });
    }
    match check_and_take(
        store,
        &consumer.store_key,
        &plan.limits,
        now,
        config.utc_offset,
    ) {
        Ok(counted) => {
            if counted.replaced_corrupt {
                log::warn!(
                    "consumer {}: its shared-data record was not readable and was reset",
                    consumer.name
                );
            }
            if counted.admitted {
                Decision::Allow {
                    caller,
                    usages: counted.usages,
                }
            } else {
                exhausted.remember(&consumer.store_key, &counted.usages);
                Decision::Deny(Denial::QuotaExceeded {
                    caller,
                    usages: counted.usages,
                })
            }
        }
        Err(CountError::Store(e)) => {
            let reason = format!("shared data failed: {}", e.0);
            Decision::Deny(Denial::StoreUnavailable {
                caller,
                contended: false,
                reason,
            })
        }
        Err(CountError::Contended) => {
            let reason = "shared data stayed contended; CAS retries exhausted".to_string();
            Decision::Deny(Denial::StoreUnavailable {
                caller,
                contended: true,
                reason,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Presented;
    use crate::store::MemoryStore;

    const CONFIG: &str = r#"{
      "plans": {
        "free": { "limits": [ {"name": "daily", "requests": 2, "window": "day"} ] },
        "unlimited": { "limits": [] }
      },
      "consumers": {
        "acme":    { "plan": "free", "keys": ["acme-1", "acme-2"] },
        "globex":  { "plan": "free", "keys": ["globex"], "expires_at": "2027-01-01T00:00:00Z" },
        "initech": { "plan": "free", "keys": ["initech"], "status": "suspended" },
        "hooli":   { "plan": "unlimited", "keys": ["hooli"] }
      }
    }"#;
    const NOW: i64 = 1_795_000_000;

    fn key(k: &str) -> Credential {
        Credential::Key(Presented {
            key: k.as_bytes().to_vec(),
            source: 0,
        })
    }

    fn name(d: &Decision) -> String {
        match d {
            Decision::Allow { caller, .. } => format!("allow {}", caller.consumer.name),
            Decision::Deny(denial) => format!("{denial:?}")
                .split([' ', '('])
                .next()
                .unwrap()
                .into(),
        }
    }

    #[test]
    fn decisions() {
        let config = Config::from_json(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        crate::quota::create_records(&config, &store).unwrap();
        let cases = [
            (Credential::Missing, NOW, "MissingCredential"),
            (Credential::Malformed("empty"), NOW, "MalformedCredential"),
            (key("nobody"), NOW, "UnknownKey"),
            (key("initech"), NOW, "Suspended"),
            (key("globex"), 1_798_761_600, "Expired"),
            (key("globex"), 1_798_761_599, "allow globex"),
            (key("acme-1"), NOW, "allow acme"),
            (key("acme-2"), NOW, "allow acme"),
            (key("acme-1"), NOW, "QuotaExceeded"),
            (key("hooli"), NOW, "allow hooli"),
        ];
        for (credential, now, want) in cases {
            let d = decide(
                &config,
                credential.clone(),
                now,
                &store,
                &Exhausted::default(),
            );
            assert_eq!(name(&d), want, "{credential:?}");
        }
        // Suspended callers consume nothing; the unlimited plan has no record at all.
        let record = |name: &str| store.value(&format!("tollgate:v1:consumer:{name}"));
        assert_eq!(
            record("initech").as_deref(),
            Some(crate::quota::empty_record())
        );
        assert_eq!(record("hooli"), None);
        assert_eq!(
            store.len(),
            3 + 1,
            "three records and the marker of their creation"
        );
    }

    #[test]
    fn anonymous_plan_counts_requests_without_credential_together() {
        let json = CONFIG.replace(
            "\"consumers\"",
            "\"anonymous_plan\": \"free\", \"consumers\"",
        );
        let config = Config::from_json(json.as_bytes()).unwrap();
        let store = MemoryStore::new();
        crate::quota::create_records(&config, &store).unwrap();
        let keyless = || {
            name(&decide(
                &config,
                Credential::Missing,
                NOW,
                &store,
                &Exhausted::default(),
            ))
        };
        assert_eq!(keyless(), "allow anonymous");
        assert_eq!(keyless(), "allow anonymous");
        assert_eq!(keyless(), "QuotaExceeded");
        // A wrong key is still refused, not downgraded to anonymous.
        assert_eq!(
            name(&decide(
                &config,
                key("nobody"),
                NOW,
                &store,
                &Exhausted::default()
            )),
            "UnknownKey"
        );
    }

    /// Counts the reads that reach the store.
    struct Counting<'a> {
        inner: &'a MemoryStore,
        gets: std::cell::Cell<u32>,
    }

    impl Store for Counting<'_> {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, crate::store::StoreError> {
            self.gets.set(self.gets.get() + 1);
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), crate::store::SetError> {
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn a_flood_of_refused_requests_does_not_touch_the_store() {
        let config = Config::from_json(
            br#"{"plans": {"p": {"limits": [{"name": "minute", "requests": 2, "window": "minute"},
                                              {"name": "second", "requests": 100, "window": "second"}]}},
                 "consumers": {"a": {"plan": "p", "keys": ["a"]}}}"#,
        )
        .unwrap();
        let inner = MemoryStore::new();
        crate::quota::create_records(&config, &inner).unwrap();
        let store = Counting {
            inner: &inner,
            gets: std::cell::Cell::new(0),
        };
        let exhausted = Exhausted::default();
        let start = NOW - NOW % 60;
        for _ in 0..2 {
            assert!(matches!(
                decide(&config, key("a"), start, &store, &exhausted),
                Decision::Allow { .. }
            ));
        }
        let first = decide(&config, key("a"), start, &store, &exhausted);
        assert!(matches!(
            first,
            Decision::Deny(Denial::QuotaExceeded { .. })
        ));
        let reads = store.gets.get();
        for now in start..start + 60 {
            let Decision::Deny(Denial::QuotaExceeded { usages, .. }) =
                decide(&config, key("a"), now, &store, &exhausted)
            else {
                panic!("refused until the minute ends")
            };
            // The per-second limit is reported for the current second, untouched.
            assert_eq!(
                (usages[1].used, usages[1].bounds.start),
                (if now == start { 2 } else { 0 }, now)
            );
            assert_eq!(usages[0].remaining(), 0);
        }
        assert_eq!(
            store.gets.get(),
            reads,
            "no shared-data read while the minute is spent"
        );
        // The next minute: the store is asked again and the request is admitted.
        assert!(matches!(
            decide(&config, key("a"), start + 60, &store, &exhausted),
            Decision::Allow { .. }
        ));
        assert_eq!(store.gets.get(), reads + 1);
    }

    #[test]
    fn log_descriptions_name_the_reason_and_consumer_never_the_key() {
        let config = Config::from_json(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        crate::quota::create_records(&config, &store).unwrap();
        let describe = |credential: Credential, now: i64| match decide(
            &config,
            credential,
            now,
            &store,
            &Exhausted::default(),
        ) {
            Decision::Deny(denial) => denial.describe(),
            Decision::Allow { .. } => "allow".into(),
        };
        assert_eq!(describe(Credential::Missing, NOW), "missing_credential");
        assert_eq!(
            describe(Credential::Malformed("empty key"), NOW),
            "invalid_credential (empty key)"
        );
        assert_eq!(describe(key("nobody"), NOW), "invalid_credential");
        assert_eq!(
            describe(key("initech"), NOW),
            "suspended consumer=initech plan=free"
        );
        assert_eq!(
            describe(key("globex"), 1_798_761_600),
            "expired consumer=globex plan=free"
        );
        for _ in 0..2 {
            describe(key("acme-1"), NOW);
        }
        assert_eq!(
            describe(key("acme-1"), NOW),
            "quota consumer=acme plan=free"
        );
        let failed = decide(
            &config,
            key("acme-2"),
            NOW,
            &crate::store::FailingStore,
            &Exhausted::default(),
        );
        let Decision::Deny(denial) = failed else {
            panic!("a failing store refuses")
        };
        assert_eq!(
            denial.describe(),
            "store_error consumer=acme (shared data failed: down)"
        );
    }
}
