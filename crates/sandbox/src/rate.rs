//! Per-key request budgets, one helper for all four sandboxes: a limit of `requests` per fixed
//! `window`, counted per API key, and the verdict each sandbox turns into its provider's documented
//! refusal (extract.page: 429 + `Retry-After`; LlamaCloud: 429 + `retry-after-ms`/`retry-after`;
//! Talonic: its `rate_limited` envelope + `X-RateLimit-*` with an ISO-8601 reset; PerfectParser:
//! 429 `RATE_LIMITED` + `X-RateLimit-*` in Unix seconds). It also owns what the request log keeps
//! of a verdict ([`Mark`]: the window a request counted in, and when a refusal said the client may
//! come back), so a test can hold a client to what it was told.
//!
//! Windows run on the real clock, not the simulated one: a client paces in real time. API requests
//! only: the extract.page object store never asks.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

/// A budget of `requests` per `window`, per API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests a key may make per window; the next one is refused until the window ends.
    pub requests: u32,
    /// The window's length (at least 1 ms).
    pub window: Duration,
}

impl RateLimit {
    /// `requests` per `window`.
    pub fn new(requests: u32, window: Duration) -> Self {
        Self { requests, window }
    }

    /// `requests` per minute.
    pub fn per_minute(requests: u32) -> Self {
        Self::new(requests, Duration::from_secs(60))
    }
}

/// How a refusal names its wait in `Retry-After` (HTTP allows both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryAfterForm {
    /// Delay-seconds, rounded up (a client obeying it comes back up to a second after the window
    /// ended).
    #[default]
    Seconds,
    /// An HTTP date: the window's end itself when it falls on a whole second.
    HttpDate,
}

/// Where a key's windows start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    /// On a grid from the Unix epoch: a one-day window is the UTC day, a 2 s window starts on an
    /// even second, so an end named in whole seconds is exact.
    Clock,
    /// At the first request after the previous window ended (a per-key minute that starts when
    /// the key is first used).
    FirstRequest,
}

/// What the request log keeps of a verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) window: Option<u64>,
    pub(crate) retry_at: Option<Instant>,
}

/// The budget's verdict on one request, and what the rate headers say.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verdict {
    pub(crate) allowed: bool,
    pub(crate) limit: u32,
    pub(crate) remaining: u32,
    /// The window it counted in (None when only read).
    pub(crate) window: Option<u64>,
    /// When the window ends, on the wall clock.
    pub(crate) reset: SystemTime,
    wall: SystemTime,
    instant: Instant,
}

impl Verdict {
    /// How long until the window ends.
    pub(crate) fn wait(&self) -> Duration {
        self.reset.duration_since(self.wall).unwrap_or_default()
    }

    /// Whole seconds until the window ends, rounded up.
    pub(crate) fn retry_after_secs(&self) -> u64 {
        self.wait().as_millis().div_ceil(1000) as u64
    }

    /// Milliseconds until the window ends, rounded up.
    pub(crate) fn retry_after_ms(&self) -> u64 {
        self.wait().as_micros().div_ceil(1000) as u64
    }

    /// The window's end in Unix seconds, rounded up.
    pub(crate) fn reset_unix_secs(&self) -> u64 {
        let since = self
            .reset
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        since.as_secs() + u64::from(since.subsec_nanos() > 0)
    }

    /// `Retry-After` in `form`, and the instant it lets the client come back.
    pub(crate) fn retry_after(&self, form: RetryAfterForm) -> (String, Instant) {
        match form {
            RetryAfterForm::Seconds => {
                let secs = self.retry_after_secs();
                (secs.to_string(), self.after(Duration::from_secs(secs)))
            }
            RetryAfterForm::HttpDate => {
                let at = SystemTime::UNIX_EPOCH + Duration::from_secs(self.reset_unix_secs());
                (httpdate::fmt_http_date(at), self.reset_at())
            }
        }
    }

    /// The instant of [`Verdict::reset_unix_secs`]: when a reset named in whole seconds lets the
    /// client back.
    pub(crate) fn reset_at(&self) -> Instant {
        self.instant_at(SystemTime::UNIX_EPOCH + Duration::from_secs(self.reset_unix_secs()))
    }

    /// The instant `wait` after the verdict, on the clock of the request log.
    pub(crate) fn after(&self, wait: Duration) -> Instant {
        self.instant + wait
    }

    /// The instant a wall-clock time names, on the clock of the request log.
    pub(crate) fn instant_at(&self, at: SystemTime) -> Instant {
        match at.duration_since(self.wall) {
            Ok(ahead) => self.instant + ahead,
            Err(behind) => self.instant - behind.duration(),
        }
    }

    /// What the log keeps of an admitted request: the window it counted in.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            window: self.window,
            retry_at: None,
        }
    }

    /// What the log keeps of a refusal that let the client come back at `retry_at`.
    pub(crate) fn refused(&self, retry_at: Instant) -> Mark {
        Mark {
            retry_at: Some(retry_at),
            ..self.mark()
        }
    }
}

/// One key's current window.
#[derive(Debug)]
struct Window {
    /// Epoch index ([`Align::Clock`]) or sequence number ([`Align::FirstRequest`]).
    id: u64,
    end: SystemTime,
    used: u32,
}

/// The per-key budgets of one sandbox.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: Option<RateLimit>,
    align: Align,
    keys: HashMap<String, Window>,
}

/// No limit, windows on the clock grid.
impl Default for Budget {
    fn default() -> Self {
        Self::new(None, Align::Clock)
    }
}

impl Budget {
    pub(crate) fn new(limit: Option<RateLimit>, align: Align) -> Self {
        Self {
            limit,
            align,
            keys: HashMap::new(),
        }
    }

    /// Replaces the limit; every key starts a fresh window.
    pub(crate) fn set(&mut self, limit: Option<RateLimit>) {
        self.limit = limit;
        self.keys.clear();
    }

    /// Counts one request of `key` against its window, if the budget allows it (a refusal costs
    /// nothing). None when no limit is set.
    pub(crate) fn take(&mut self, key: &str) -> Option<Verdict> {
        self.check(key, true)
    }

    /// Counts one request of `key` as [`Budget::take`] does and marks it for the log; the verdict
    /// only when it is refused.
    pub(crate) fn refuse(&mut self, key: &str, mark: &mut Mark) -> Option<Verdict> {
        let verdict = self.take(key)?;
        *mark = verdict.mark();
        (!verdict.allowed).then_some(verdict)
    }

    /// The verdict `key`'s next request would get, counting nothing.
    pub(crate) fn peek(&mut self, key: &str) -> Option<Verdict> {
        self.check(key, false)
    }

    fn check(&mut self, key: &str, take: bool) -> Option<Verdict> {
        let limit = self.limit?;
        let window = limit.window.max(Duration::from_millis(1));
        let (wall, instant) = (SystemTime::now(), Instant::now());
        if self.keys.get(key).is_none_or(|w| wall >= w.end) {
            let next = open(self.align, window, wall, self.keys.get(key));
            self.keys.insert(key.to_owned(), next);
        }
        let w = self.keys.get_mut(key)?;
        let allowed = w.used < limit.requests;
        if take && allowed {
            w.used += 1;
        }
        Some(Verdict {
            allowed,
            limit: limit.requests,
            remaining: limit.requests - w.used.min(limit.requests),
            window: take.then_some(w.id),
            reset: w.end,
            wall,
            instant,
        })
    }
}

/// The window a request at `wall` opens, after `previous`.
fn open(align: Align, window: Duration, wall: SystemTime, previous: Option<&Window>) -> Window {
    match align {
        Align::Clock => {
            let since = wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let id = since.as_nanos() / window.as_nanos();
            let end = u64::try_from((id + 1) * window.as_nanos()).unwrap_or(u64::MAX);
            Window {
                id: id as u64,
                end: SystemTime::UNIX_EPOCH + Duration::from_nanos(end),
                used: 0,
            }
        }
        Align::FirstRequest => Window {
            id: previous.map_or(0, |p| p.id + 1),
            end: wall + window,
            used: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_admits_its_requests_then_refuses_until_it_ends() {
        let mut b = Budget::new(
            Some(RateLimit::new(2, Duration::from_millis(300))),
            Align::Clock,
        );
        assert!(
            b.peek("k").unwrap().window.is_none(),
            "a peek counts nothing"
        );
        let first = b.take("k").unwrap();
        let second = b.take("k").unwrap();
        let refused = b.take("k").unwrap();
        // The three may straddle a window boundary; within one window they are 2, 1, refused.
        if first.window == refused.window {
            assert_eq!((first.remaining, second.remaining), (1, 0));
            assert!(!refused.allowed && refused.remaining == 0);
            assert!(refused.wait() <= Duration::from_millis(300));
            let mark = refused.refused(refused.after(refused.wait()));
            assert_eq!(mark.window, refused.window);
            assert!(mark.retry_at.is_some());
        }
        assert!(b.take("other").unwrap().allowed, "budgets are per key");
        std::thread::sleep(refused.wait() + Duration::from_millis(5));
        let next = b.take("k").unwrap();
        assert!(next.allowed && next.window > refused.window, "a new window");
        assert_eq!(next.mark().retry_at, None);
        b.set(None);
        assert!(b.take("k").is_none(), "no limit, no verdict");
    }

    #[test]
    fn clock_windows_end_on_the_grid_and_first_request_windows_a_window_later() {
        let mut day = Budget::new(
            Some(RateLimit::new(5, Duration::from_secs(86_400))),
            Align::Clock,
        );
        let v = day.take("k").unwrap();
        assert_eq!(v.reset_unix_secs() % 86_400, 0, "the next UTC midnight");
        assert_eq!(
            v.reset
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
            0
        );
        let mut minute = Budget::new(Some(RateLimit::per_minute(5)), Align::FirstRequest);
        let v = minute.take("k").unwrap();
        assert!(v.wait() > Duration::from_millis(59_900) && v.wait() <= Duration::from_secs(60));
        assert_eq!(v.window, Some(0));
        assert_eq!(minute.take("k").unwrap().window, Some(0));
    }

    #[test]
    fn the_wait_is_named_rounded_up_in_every_form() {
        let mut b = Budget::new(
            Some(RateLimit::new(1, Duration::from_millis(1500))),
            Align::Clock,
        );
        b.take("k");
        let v = b.take("k").unwrap();
        let wait = v.wait();
        assert!(v.retry_after_secs() as f64 >= wait.as_secs_f64());
        assert!(v.retry_after_ms() as f64 >= wait.as_secs_f64() * 1000.0);
        let (secs, at) = v.retry_after(RetryAfterForm::Seconds);
        assert_eq!(secs, v.retry_after_secs().to_string());
        assert!(at >= v.after(wait));
        let (date, at) = v.retry_after(RetryAfterForm::HttpDate);
        let named = httpdate::parse_http_date(&date).unwrap();
        assert!(named >= v.reset && at >= v.after(wait), "{date}");
        let unix = SystemTime::UNIX_EPOCH + Duration::from_secs(v.reset_unix_secs());
        assert!(unix >= v.reset && unix < v.reset + Duration::from_secs(1));
    }
}
