//! Rate-limit counters: the types the [`Store`](super::Store) methods for
//! limits use, the token bucket's arithmetic, and the per-replica limiter the
//! memory store uses.
//!
//! Every bucket holds one minute's worth of its limit and refills
//! continuously (the generic cell rate algorithm: a bucket is one number,
//! the "theoretical arrival time" `tat`; it is full when `tat <= now` and
//! holds `(window - (tat - now)) / interval` units otherwise). Request
//! buckets take one unit per request and refuse when empty. Token buckets
//! are charged after the fact, with what a model call really used, so they
//! can go into debt: a turn is refused while its caller's bucket is empty
//! and the debt is paid back by waiting. The Redis script in
//! [`super::redis`] does the same arithmetic as [`gcra`], on Redis's clock.
//!
//! Locally, request buckets are `governor`'s keyed limiters (one per
//! distinct limit). Token buckets use [`gcra`] here, because `governor`
//! cannot charge past a bucket's capacity, which a token bucket must.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// The span of every bucket: it holds one minute of its limit.
pub const WINDOW_MS: f64 = 60_000.0;

/// What a token bucket is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    /// Is there at least one token left? (Nothing is taken.)
    Peek,
    /// Take this many, whatever is left: the bucket may go into debt.
    Charge(u64),
}

/// A bucket's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub allowed: bool,
    /// Units left after this call.
    pub remaining: u64,
    /// When refused: how long until the call would be allowed.
    pub retry_after: Duration,
    /// How long until the bucket is full again.
    pub reset: Duration,
}

fn ms(v: f64) -> Duration {
    Duration::from_millis(v.max(0.0).ceil() as u64)
}

/// One step on a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Would one unit fit? Nothing is taken.
    Peek,
    /// Take this many if they fit; refuse (taking nothing) otherwise.
    Take(u64),
    /// Take this many whatever is left (into debt).
    Force(u64),
}

/// One GCRA step on a bucket of `per_minute` units: `tat` is the stored
/// value (`None` for a full bucket) and `now` the time, both in
/// milliseconds. Returns the answer and the value to store (`None`: leave
/// it unchanged).
pub fn gcra(tat: Option<f64>, now: f64, per_minute: u64, op: Op) -> (Bucket, Option<f64>) {
    let interval = WINDOW_MS / per_minute.max(1) as f64;
    let tat = tat.unwrap_or(now).max(now);
    let cost = match op {
        Op::Peek => 1,
        Op::Take(n) | Op::Force(n) => n,
    };
    let new = tat + cost as f64 * interval;
    let allowed = new - now <= WINDOW_MS;
    let stored = match op {
        Op::Peek => None,
        Op::Take(_) => allowed.then_some(new),
        Op::Force(_) => Some(new),
    };
    let level = stored.unwrap_or(tat);
    let remaining = ((WINDOW_MS - (level - now)) / interval).floor().max(0.0) as u64;
    let bucket = Bucket {
        allowed,
        remaining,
        retry_after: if allowed {
            Duration::ZERO
        } else {
            ms(new - now - WINDOW_MS)
        },
        reset: ms(level - now),
    };
    (bucket, stored)
}

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// How many checks between two sweeps of buckets that are full again.
const SWEEP_EVERY: u64 = 4096;

/// The memory store's counters: this replica's only.
#[derive(Debug, Default)]
pub struct Local {
    /// Request buckets: one `governor` limiter per distinct limit.
    requests: Mutex<HashMap<u64, std::sync::Arc<Keyed>>>,
    /// Token buckets: their `tat`, in milliseconds since `start`.
    tokens: Mutex<HashMap<String, f64>>,
    /// Open streams by key.
    slots: Mutex<HashMap<String, u64>>,
    start: std::sync::OnceLock<Instant>,
    calls: AtomicU64,
}

impl Local {
    fn now_ms(&self) -> f64 {
        self.start.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
    }

    /// Every [`SWEEP_EVERY`] calls (of either kind), forget the buckets of
    /// both kinds that are full again: they hold nothing a new one would not.
    fn sweep_if_due(&self) {
        if self.calls.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY != SWEEP_EVERY - 1 {
            return;
        }
        let limiters: Vec<_> = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for l in limiters {
            l.retain_recent();
            l.shrink_to_fit();
        }
        let now = self.now_ms();
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.retain(|_, tat| *tat > now);
        tokens.shrink_to_fit();
    }

    /// Count one request against `key`'s `per_minute` limit.
    pub fn request(&self, key: &str, per_minute: u64) -> Bucket {
        let n = NonZeroU32::new(per_minute.clamp(1, u64::from(u32::MAX)) as u32)
            .unwrap_or(NonZeroU32::MIN);
        self.sweep_if_due();
        let limiter = {
            let mut all = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            all.entry(per_minute)
                .or_insert_with(|| {
                    std::sync::Arc::new(
                        RateLimiter::keyed(Quota::per_minute(n))
                            .with_middleware::<StateInformationMiddleware>(),
                    )
                })
                .clone()
        };
        let per_unit = WINDOW_MS / f64::from(n.get());
        match limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = u64::from(snapshot.remaining_burst_capacity());
                Bucket {
                    allowed: true,
                    remaining,
                    retry_after: Duration::ZERO,
                    reset: ms((per_minute.saturating_sub(remaining)) as f64 * per_unit),
                }
            }
            Err(not_until) => Bucket {
                allowed: false,
                remaining: 0,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                reset: ms(WINDOW_MS),
            },
        }
    }

    /// Peek at or charge `key`'s token bucket of `per_minute`.
    pub fn tokens(&self, key: &str, per_minute: u64, how: Tokens) -> Bucket {
        self.sweep_if_due();
        let now = self.now_ms();
        let mut all = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let op = match how {
            Tokens::Peek => Op::Peek,
            Tokens::Charge(n) => Op::Force(n),
        };
        let (bucket, stored) = gcra(all.get(key).copied(), now, per_minute, op);
        if let Some(tat) = stored {
            all.insert(key.to_owned(), tat);
        }
        bucket
    }

    /// Open one of `max` slots of `key`; `false` when all are taken.
    pub fn open_slot(&self, key: &str, max: u64) -> bool {
        let mut all = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let open = all.entry(key.to_owned()).or_default();
        if *open >= max {
            return false;
        }
        *open += 1;
        true
    }

    pub fn close_slot(&self, key: &str) {
        let mut all = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = all.get_mut(key) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                all.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_a_minute_and_refills_continuously() {
        // 60 per minute: one unit a second.
        let (b, tat) = gcra(None, 0.0, 60, Op::Take(1));
        assert!(b.allowed);
        assert_eq!(b.remaining, 59);
        assert_eq!(tat, Some(1000.0));
        let mut tat = tat;
        for _ in 0..59 {
            let (b, t) = gcra(tat, 0.0, 60, Op::Take(1));
            assert!(b.allowed);
            tat = t;
        }
        let (b, unchanged) = gcra(tat, 0.0, 60, Op::Take(1));
        assert!(!b.allowed);
        assert_eq!(b.remaining, 0);
        assert_eq!(b.retry_after, Duration::from_secs(1));
        assert_eq!(unchanged, None);
        // A second later one unit is back.
        let (b, _) = gcra(tat, 1000.0, 60, Op::Take(1));
        assert!(b.allowed);
        assert_eq!(b.remaining, 0);
    }

    #[test]
    fn a_charge_goes_into_debt_and_is_paid_back_by_waiting() {
        // 600 tokens a minute; a turn used 1,800: three minutes of debt.
        let (b, tat) = gcra(None, 0.0, 600, Op::Force(1800));
        assert!(!b.allowed);
        assert_eq!(tat, Some(180_000.0));
        let (peek, unchanged) = gcra(tat, 0.0, 600, Op::Peek);
        assert!(!peek.allowed);
        assert_eq!(unchanged, None);
        assert_eq!(peek.retry_after, Duration::from_millis(120_100));
        let (peek, _) = gcra(tat, 120_100.0, 600, Op::Peek);
        assert!(peek.allowed);
        assert_eq!(peek.remaining, 1);
    }

    #[test]
    fn local_token_buckets_peek_without_taking() {
        let local = Local::default();
        let peek = local.tokens("t", 100, Tokens::Peek);
        assert!(peek.allowed);
        assert_eq!(peek.remaining, 100);
        let charged = local.tokens("t", 100, Tokens::Charge(250));
        assert!(!charged.allowed);
        assert!(!local.tokens("t", 100, Tokens::Peek).allowed);
        assert!(local.tokens("other", 100, Tokens::Peek).allowed);
    }

    #[test]
    fn local_request_buckets_are_governors() {
        let local = Local::default();
        for left in (0..3).rev() {
            let b = local.request("k", 3);
            assert!(b.allowed);
            assert_eq!(b.remaining, left);
        }
        let refused = local.request("k", 3);
        assert!(!refused.allowed);
        assert!(refused.retry_after > Duration::from_secs(15));
        assert!(refused.retry_after <= Duration::from_secs(20));
        assert!(local.request("another", 3).allowed);
    }

    #[test]
    fn buckets_full_again_are_forgotten_whichever_kind_of_call_comes() {
        let local = Local::default();
        // Many tenants, each touched once with a limit far from reached:
        // their buckets refill at once and must not pile up.
        for i in 0..(3 * SWEEP_EVERY) {
            let key = format!("t{i}");
            if i % 2 == 0 {
                local.request(&key, 1_000_000_000);
            } else {
                local.tokens(&key, 1_000_000_000, Tokens::Peek);
            }
        }
        let held: usize = local
            .requests
            .lock()
            .unwrap()
            .values()
            .map(|l| l.len())
            .sum();
        assert!(held < SWEEP_EVERY as usize, "{held} request buckets held");
        assert!(local.tokens.lock().unwrap().len() < SWEEP_EVERY as usize);
    }

    #[test]
    fn local_slots_count_and_close() {
        let local = Local::default();
        assert!(local.open_slot("s", 2));
        assert!(local.open_slot("s", 2));
        assert!(!local.open_slot("s", 2));
        local.close_slot("s");
        assert!(local.open_slot("s", 2));
        local.close_slot("s");
        local.close_slot("s");
        local.close_slot("s");
        assert!(local.slots.lock().unwrap().is_empty());
    }
}
