//! Adaptive pacing for one provider, in the manner of the AWS SDKs' "adaptive" retry mode (a
//! token bucket whose rate grows along a cubic) and rclone's pacer: no client-side cap until the
//! provider throttles; then a cap at a share of the rate the provider was answering at, which
//! climbs back along a cubic: quickly to a little under that rate, slowly past it, then ever
//! faster, so a raised or lifted limit is found within seconds. A documented limit is the starting
//! cap and the ceiling; a user's `requests_per_minute`, when set, is the ceiling instead (the user
//! knows their plan).
//!
//! It owns only the rate decision. The bucket itself is governor's, rebuilt when the rate changes
//! (on a throttle, and at most four times a second while growing); a request queued under a
//! replaced bucket queues again under the new one. Server-named waits (`Retry-After`,
//! `X-RateLimit-Reset`) are the limiter's pause gate, not this.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// On a throttle the cap becomes this share of the rate the provider was answering at (or of the
/// old cap, if lower).
const DECREASE: f64 = 0.7;
/// The cubic levels off this far below the rate the provider was answering at: right at it, a
/// server counting fixed windows refuses every window's last request.
const MARGIN: f64 = 0.95;
/// The cubic's coefficient, per second cubed, relative to the level: the cap is
/// `level × (1 + CUBIC × (t − K)³)` at `t` seconds after the throttle, K ≈ 2.4 s. So it is back
/// near the level within about a second, stays within 2 % of it from 1.4 s to 3.4 s, is twice it
/// at 6 s and ten times it at 10 s. Growing linearly (5 %/s), it was still under 3 times a lifted
/// limit 12 s later, and every throttle cost the next windows a third of their requests.
const CUBIC: f64 = 0.02;
/// A volley of refusals from requests already in flight shrinks the cap once: later refusals
/// within this time of the first are not new news.
const HOLD: Duration = Duration::from_secs(2);
/// The shortest time between two rate changes while growing (each rebuilds the bucket).
const STEP: Duration = Duration::from_millis(250);
/// The lowest cap a throttle can set (one request every 10 s).
const FLOOR: f64 = 0.1;
/// How far back the rates sent and answered are measured.
const WINDOW: Duration = Duration::from_secs(10);
/// Without a ceiling, the cap is lifted once it is this many times what we actually send: it no
/// longer limits anything, and throttles will find the right rate again if the server minds.
const LIFT_AT: f64 = 2.0;

/// The current cap and the throttles it was learned from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceSnapshot {
    /// Requests per second allowed now; `None` = no client-side cap.
    pub rate: Option<f64>,
    /// Throttles seen since start.
    pub throttles: u64,
}

/// Events over the last [`WINDOW`], as a rate.
#[derive(Default)]
struct Rate {
    events: VecDeque<Instant>,
    /// The first event ever: until a whole window has passed, the rate is over the time since.
    since: Option<Instant>,
}

impl Rate {
    fn record(&mut self, now: Instant) {
        self.since.get_or_insert(now);
        self.events.push_back(now);
        while self
            .events
            .front()
            .is_some_and(|t| now.duration_since(*t) > WINDOW)
        {
            self.events.pop_front();
        }
    }

    fn per_sec(&self, now: Instant) -> f64 {
        let Some(since) = self.since else {
            return 0.0;
        };
        // Over the whole window, not from its first event: after a pause the first event can
        // be seconds into it, and the rate would come out too high. At least one second, so two
        // requests in a millisecond are not 2,000/s.
        let span = now
            .duration_since(since)
            .clamp(Duration::from_secs(1), WINDOW);
        let n = self
            .events
            .iter()
            .filter(|t| now.duration_since(**t) <= WINDOW)
            .count();
        n as f64 / span.as_secs_f64()
    }
}

struct State {
    rate: Option<f64>,
    bucket: Option<Arc<DefaultDirectRateLimiter>>,
    /// Counts bucket rebuilds, so a request queued under an old bucket can tell.
    generation: u64,
    sent: Rate,
    /// Requests that succeeded: what the provider let through.
    answered: Rate,
    last_throttle: Option<Instant>,
    /// The rate the cubic levels off at, learned at the last throttle.
    level: f64,
    last_step: Instant,
    throttles: u64,
}

impl State {
    /// A new cap, and a bucket for it that starts spent: the old one just let a request go.
    fn set_rate(&mut self, rate: Option<f64>) {
        self.rate = rate;
        self.bucket = rate.map(|r| bucket(r, true));
        self.generation += 1;
    }
}

/// One provider's adaptive cap.
pub struct Pacer {
    ceiling: Option<f64>,
    state: Mutex<State>,
}

/// The bucket of a stated per-minute limit: a minute's worth may go at once, as a server counting
/// per-minute windows allows (the PerfectParser adapter also tracks the server's own window).
fn minute_bucket(rate: f64) -> Arc<DefaultDirectRateLimiter> {
    let per_minute = (rate * 60.0).round().clamp(1.0, f64::from(u32::MAX)) as u32;
    let per_minute = std::num::NonZeroU32::new(per_minute).unwrap_or(std::num::NonZeroU32::MIN);
    Arc::new(RateLimiter::direct(Quota::per_minute(per_minute)))
}

/// A bucket for `rate` requests a second; `spent` starts it with no request available (a rebuilt
/// bucket follows one that just let a request go, and must not grant an extra one).
fn bucket(rate: f64, spent: bool) -> Arc<DefaultDirectRateLimiter> {
    // One request per period, no burst: a burst is what a server counting windows refuses.
    let period = Duration::from_secs_f64(1.0 / rate.max(FLOOR));
    let quota = Quota::with_period(period.max(Duration::from_micros(100)))
        .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN));
    let limiter = RateLimiter::direct(quota);
    if spent {
        let _ = limiter.check();
    }
    Arc::new(limiter)
}

impl Pacer {
    /// `documented` is the provider's published limit, `user_cap` the config's
    /// `requests_per_minute` (which wins when set), both in requests per minute. The ceiling is
    /// also the starting cap; `burst` lets a minute's worth of it go at once until a throttle
    /// (a learned cap never bursts).
    pub fn new(documented: Option<f64>, user_cap: Option<f64>, burst: bool) -> Self {
        let ceiling = user_cap.or(documented).map(|m| m.max(FLOOR * 60.0) / 60.0);
        Self {
            ceiling,
            state: Mutex::new(State {
                rate: ceiling,
                bucket: ceiling.map(|r| {
                    if burst {
                        minute_bucket(r)
                    } else {
                        bucket(r, false)
                    }
                }),
                generation: 0,
                sent: Rate::default(),
                answered: Rate::default(),
                last_throttle: None,
                level: 0.0,
                last_step: Instant::now(),
                throttles: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the cap allows one more request, and counts it as sent.
    pub async fn acquire(&self) {
        self.turn().await;
        self.sent();
    }

    /// Waits until the cap allows one more request, counting nothing: the caller may still hold
    /// it back (a pause that began meanwhile) and take another turn.
    pub async fn turn(&self) {
        loop {
            let (current, generation) = {
                let s = self.lock();
                (s.bucket.clone(), s.generation)
            };
            let Some(b) = current else {
                return;
            };
            b.until_ready().await;
            // A request queued under a bucket since replaced waits again under the new one:
            // served by both, the queue would run at the two rates at once.
            if self.lock().generation == generation {
                return;
            }
        }
    }

    /// Counts one request as sent, for the measured send rate.
    pub fn sent(&self) {
        self.lock().sent.record(Instant::now());
    }

    /// The provider refused for rate (429, 503, or headers saying the budget is spent): cap at a
    /// share of the rate it was answering us at (what it allows, where the rate we sent at
    /// includes what it refused), or shrink the cap we had.
    pub fn throttled(&self) {
        let now = Instant::now();
        let mut s = self.lock();
        s.throttles += 1;
        // One refusal often comes in a volley from requests already in flight: shrink once per
        // hold time, not once per answer.
        if s.last_throttle
            .is_some_and(|t| now.duration_since(t) < HOLD)
        {
            return;
        }
        // What the provider let through is what it allows; what we sent includes what it refused.
        let answered = match s.answered.per_sec(now) {
            a if a > 0.0 => a,
            _ => s.sent.per_sec(now),
        };
        let allowed = match s.rate {
            Some(r) if answered > 0.0 => r.min(answered),
            Some(r) => r,
            None => answered,
        }
        .max(FLOOR);
        let rate = (allowed * DECREASE).max(FLOOR);
        let rate = self.ceiling.map_or(rate, |c| rate.min(c));
        s.set_rate(Some(rate));
        s.level = allowed * MARGIN;
        s.last_throttle = Some(now);
        s.last_step = now;
        tracing::debug!(rate_per_min = rate * 60.0, "throttled: pacing down");
    }

    /// A request succeeded: move the cap along the cubic since the last throttle (at most every
    /// [`STEP`]), lifting it when nothing caps us and it no longer binds.
    pub fn succeeded(&self) {
        let now = Instant::now();
        let mut s = self.lock();
        s.answered.record(now);
        let (Some(rate), Some(throttled)) = (s.rate, s.last_throttle) else {
            // Uncapped, or still at the documented ceiling: nothing to grow.
            return;
        };
        if now.duration_since(s.last_step) < STEP {
            return;
        }
        s.last_step = now;
        // K puts the cubic's start at the cap the throttle set: level × (1 − CUBIC × K³) is
        // DECREASE × allowed.
        let k = ((1.0 - DECREASE / MARGIN) / CUBIC).cbrt();
        let x = now.duration_since(throttled).as_secs_f64() - k;
        let grown = (s.level * (1.0 + CUBIC * x.powi(3))).max(FLOOR);
        let sent = s.sent.per_sec(now);
        let next = match self.ceiling {
            Some(c) => Some(grown.min(c)),
            None if grown > sent * LIFT_AT => None,
            None => Some(grown),
        };
        // Rebuilding the bucket for a change of under 1 % would only churn it.
        if next.is_none_or(|n| (n - rate).abs() > rate * 0.01) {
            s.set_rate(next);
        }
    }

    /// Starts from a cap an earlier run learned (kept in the ledger), within the ceiling, as if
    /// just throttled: it grows back from there while requests succeed.
    pub fn restore(&self, per_minute: f64) {
        let rate = (per_minute / 60.0).max(FLOOR);
        let rate = self.ceiling.map_or(rate, |c| rate.min(c));
        let now = Instant::now();
        let mut s = self.lock();
        s.set_rate(Some(rate));
        // As after the throttle that taught it: the cubic levels off near what was allowed then.
        s.level = rate / DECREASE * MARGIN;
        s.last_throttle = Some(now);
        s.last_step = now;
    }

    pub fn snapshot(&self) -> PaceSnapshot {
        let s = self.lock();
        PaceSnapshot {
            rate: s.rate,
            throttles: s.throttles,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn no_cap_until_throttled_then_a_share_of_the_sent_rate() {
        let p = Pacer::new(None, None, false);
        let start = Instant::now();
        for _ in 0..1000 {
            p.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "uncapped: nothing waits");
        assert_eq!(p.snapshot().rate, None);
        // 100 requests over 10 s: 10/s, then a throttle caps at 7/s.
        let p = Pacer::new(None, None, false);
        for _ in 0..100 {
            p.acquire().await;
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        p.throttled();
        let rate = p.snapshot().rate.unwrap();
        assert!((rate - 7.0).abs() < 0.5, "{rate}");
        // Requests are now spaced by the cap (governor's bucket keeps real time).
        let start = std::time::Instant::now();
        for _ in 0..8 {
            p.acquire().await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!((0.9..1.2).contains(&took), "8 requests at 7/s took {took}s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_volley_of_refusals_shrinks_once_and_success_grows_back_and_lifts() {
        let p = Pacer::new(None, None, false);
        for _ in 0..50 {
            p.acquire().await;
            tokio::time::advance(Duration::from_millis(200)).await;
        }
        p.throttled();
        let first = p.snapshot().rate.unwrap();
        p.throttled();
        p.throttled();
        assert_eq!(p.snapshot().rate.unwrap(), first, "one shrink per volley");
        assert_eq!(p.snapshot().throttles, 3);
        // Growth waits a step, then climbs while requests succeed, then the cap lifts.
        p.succeeded();
        assert_eq!(p.snapshot().rate.unwrap(), first);
        let mut last = first;
        let mut lifted = false;
        for _ in 0..600 {
            tokio::time::advance(Duration::from_millis(500)).await;
            p.acquire().await;
            p.succeeded();
            match p.snapshot().rate {
                Some(r) => {
                    assert!(r >= last, "never shrinks without a throttle");
                    last = r;
                }
                None => {
                    lifted = true;
                    break;
                }
            }
        }
        assert!(
            lifted,
            "the cap is lifted once it no longer binds (last {last}/s)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_climbs_back_along_a_cubic_from_the_rate_the_provider_answered() {
        let p = Pacer::new(None, None, false);
        // 10 s at 15 requests a second, of which the provider answered 10.
        for i in 0..150 {
            p.sent();
            if i % 3 != 2 {
                p.succeeded();
            }
            tokio::time::advance(Duration::from_micros(66_667)).await;
        }
        p.throttled();
        let cap = |p: &Pacer| p.snapshot().rate.unwrap();
        assert!(
            (cap(&p) - 7.0).abs() < 0.1,
            "0.7 of the 10/s answered, not of 15/s sent: {}",
            cap(&p)
        );
        // Requests keep succeeding at 20 a second (governor's bucket keeps real time, so the test
        // counts them itself instead of waiting its turn).
        let mut seen = Vec::new();
        for step in 1..=120 {
            tokio::time::advance(Duration::from_millis(50)).await;
            p.sent();
            p.succeeded();
            let now = cap(&p);
            assert!(
                seen.last().is_none_or(|l| now >= *l),
                "never shrinks without a throttle"
            );
            seen.push(now);
            let level = 9.5;
            match step {
                // Near the level (0.95 of what was answered) from about 1.4 s to 3.4 s...
                30 | 60 => assert!((now / level - 1.0).abs() < 0.025, "{now} at {step}"),
                // ...and twice it at 6 s.
                120 => assert!((now / level - 2.0).abs() < 0.15, "{now} at 6 s"),
                _ => {}
            }
        }
    }

    /// In real time: governor's buckets keep it.
    #[tokio::test]
    async fn requests_queued_under_the_old_cap_wait_under_the_new_one() {
        let p = Arc::new(Pacer::new(Some(1200.0), None, false));
        p.succeeded();
        p.succeeded();
        let start = std::time::Instant::now();
        let queued: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move {
                    p.turn().await;
                    start.elapsed()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // 20/s until now; then 0.7 of the 2/s answered. Three turns were due within 150 ms.
        p.throttled();
        let mut took = Vec::new();
        for q in queued {
            took.push(q.await.unwrap());
        }
        took.sort();
        assert!(
            took[3] >= Duration::from_millis(1400),
            "queued turns kept the old cap: {took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_documented_limit_is_the_start_and_the_ceiling_unless_the_user_sets_one() {
        let p = Pacer::new(Some(150.0), None, false);
        assert_eq!(p.snapshot().rate, Some(2.5));
        for _ in 0..20 {
            tokio::time::advance(Duration::from_secs(5)).await;
            p.succeeded();
        }
        assert_eq!(
            p.snapshot().rate,
            Some(2.5),
            "never above the documented limit"
        );
        // The user's cap, when set, replaces the documented one (their plan may allow more).
        assert_eq!(
            Pacer::new(Some(150.0), Some(60.0), false).snapshot().rate,
            Some(1.0)
        );
        assert_eq!(
            Pacer::new(Some(150.0), Some(600.0), false).snapshot().rate,
            Some(10.0)
        );
        assert_eq!(
            Pacer::new(None, Some(120.0), false).snapshot().rate,
            Some(2.0)
        );
        // With burst, a minute's worth of the stated limit goes at once, as before any throttle.
        let p = Pacer::new(Some(150.0), None, true);
        let start = std::time::Instant::now();
        for _ in 0..100 {
            p.acquire().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        // A throttle still shrinks below a documented ceiling.
        let p = Pacer::new(Some(150.0), None, false);
        p.throttled();
        assert!(p.snapshot().rate.unwrap() < 2.5);
    }
}
