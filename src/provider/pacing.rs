//! Adaptive pacing for one provider, in the manner of the AWS SDKs' "adaptive" retry mode and
//! rclone's pacer: no client-side cap until the provider throttles; then a token bucket starting
//! at a fraction of the rate we were sending at, shrinking on each further throttle and growing
//! back while requests succeed. A documented limit is the starting cap and the ceiling; a user's
//! `requests_per_minute`, when set, is the ceiling instead (the user knows their plan).
//!
//! It owns only the rate decision. The bucket itself is governor's, rebuilt when the rate changes
//! (rarely: on a throttle, and at most once a second while growing). Server-named waits
//! (`Retry-After`, `X-RateLimit-Reset`) are the limiter's pause gate, not this.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// On a throttle the cap becomes this share of the rate we were sending at (or of the old cap).
const DECREASE: f64 = 0.7;
/// While requests succeed, the cap grows by this share per second...
const GROWTH_PER_SEC: f64 = 0.05;
/// ...but at least this many requests/s per second, so a tiny cap recovers in reasonable time.
const MIN_GROWTH: f64 = 0.1;
/// No growth this soon after a throttle: the server's window is still counting what we sent.
const HOLD: Duration = Duration::from_secs(2);
/// The lowest cap a throttle can set (one request every 10 s).
const FLOOR: f64 = 0.1;
/// How far back the send rate is measured.
const WINDOW: Duration = Duration::from_secs(10);
/// Without a ceiling, the cap is lifted once it is this many times what we actually send: it no
/// longer limits anything, and throttles will find the right rate again if the server minds.
const LIFT_AT: f64 = 2.0;

/// The current cap and what it was learned from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceSnapshot {
    /// Requests per second allowed now; `None` = no client-side cap.
    pub rate: Option<f64>,
    /// Throttles seen since start.
    pub throttles: u64,
    /// The rate we sent at over the last few seconds.
    pub sent_rate: f64,
}

struct State {
    rate: Option<f64>,
    bucket: Option<Arc<DefaultDirectRateLimiter>>,
    sent: VecDeque<Instant>,
    last_throttle: Option<Instant>,
    last_growth: Instant,
    throttles: u64,
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

fn bucket(rate: f64) -> Arc<DefaultDirectRateLimiter> {
    // One request per period, no burst: a burst is what a server counting windows refuses.
    let period = Duration::from_secs_f64(1.0 / rate.max(FLOOR));
    let quota = Quota::with_period(period.max(Duration::from_micros(100)))
        .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN));
    Arc::new(RateLimiter::direct(quota))
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
                bucket: ceiling.map(if burst { minute_bucket } else { bucket }),
                sent: VecDeque::new(),
                last_throttle: None,
                last_growth: Instant::now(),
                throttles: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the cap allows one more request, and counts it as sent.
    pub async fn acquire(&self) {
        let current = self.lock().bucket.clone();
        if let Some(b) = current {
            b.until_ready().await;
        }
        let now = Instant::now();
        let mut s = self.lock();
        s.sent.push_back(now);
        while s
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) > WINDOW)
        {
            s.sent.pop_front();
        }
    }

    fn sent_rate(s: &State, now: Instant) -> f64 {
        let Some(first) = s.sent.front() else {
            return 0.0;
        };
        // At least one second of span, so two requests in a millisecond are not 2,000/s.
        let span = now.duration_since(*first).max(Duration::from_secs(1));
        s.sent.len() as f64 / span.as_secs_f64()
    }

    /// The provider refused for rate (429, 503, or headers saying the budget is spent): cap at a
    /// share of what we were sending, or shrink the cap we had.
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
        let sent = Self::sent_rate(&s, now);
        let base = match s.rate {
            Some(r) if sent > 0.0 => r.min(sent),
            Some(r) => r,
            None => sent,
        };
        let rate = (base * DECREASE).max(FLOOR);
        let rate = self.ceiling.map_or(rate, |c| rate.min(c));
        s.rate = Some(rate);
        s.bucket = Some(bucket(rate));
        s.last_throttle = Some(now);
        s.last_growth = now;
        tracing::debug!(rate_per_min = rate * 60.0, "throttled: pacing down");
    }

    /// A request succeeded: past the hold time, grow the cap (at most once a second), lifting it
    /// when nothing caps us and it no longer binds.
    pub fn succeeded(&self) {
        let now = Instant::now();
        let mut s = self.lock();
        let Some(rate) = s.rate else {
            return;
        };
        let held = s
            .last_throttle
            .is_some_and(|t| now.duration_since(t) < HOLD);
        let elapsed = now.duration_since(s.last_growth);
        if held || elapsed < Duration::from_secs(1) {
            return;
        }
        let secs = elapsed.as_secs_f64();
        let grown = rate + (rate * GROWTH_PER_SEC).max(MIN_GROWTH) * secs;
        s.last_growth = now;
        let sent = Self::sent_rate(&s, now);
        let next = match self.ceiling {
            Some(c) => Some(grown.min(c)),
            None if grown > sent * LIFT_AT => None,
            None => Some(grown),
        };
        if next != s.rate {
            s.rate = next;
            s.bucket = next.map(bucket);
        }
    }

    /// Starts from a cap an earlier run learned (kept in the ledger), within the ceiling, as if
    /// just throttled: it grows back from there while requests succeed.
    pub fn restore(&self, per_minute: f64) {
        let rate = (per_minute / 60.0).max(FLOOR);
        let rate = self.ceiling.map_or(rate, |c| rate.min(c));
        let now = Instant::now();
        let mut s = self.lock();
        s.rate = Some(rate);
        s.bucket = Some(bucket(rate));
        s.last_growth = now;
    }

    pub fn snapshot(&self) -> PaceSnapshot {
        let s = self.lock();
        PaceSnapshot {
            rate: s.rate,
            throttles: s.throttles,
            sent_rate: Self::sent_rate(&s, Instant::now()),
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
        // Growth waits out the hold time, then climbs while requests succeed, then the cap lifts.
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
