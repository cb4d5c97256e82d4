//! The low-speed guard on result bodies, like curl's `--speed-limit`/`--speed-time`: a body that
//! delivers fewer than `limit × time` bytes while we wait `time` on it is abandoned as a transport
//! error (so the attempt is retried).
//!
//! The per-read idle timeout (`download.read_timeout`) cannot catch a server that trickles one
//! byte a second: each read succeeds. Only time spent waiting on the network counts here, not time
//! the consumer (a slow disk) spends before asking for more, so our own back-pressure never trips it.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::BodyStream;
use crate::error::ProviderError;

struct Guard {
    stream: BodyStream,
    url: String,
    limit: u64,
    window: Duration,
    /// Bytes and network wait of the current window.
    seen: u64,
    waited: Duration,
    done: bool,
}

impl Guard {
    /// Closes the window once `window` of waiting has passed: an error when too little came.
    fn check(&mut self) -> Option<ProviderError> {
        if self.waited < self.window {
            return None;
        }
        let need = (self.limit as f64 * self.window.as_secs_f64()) as u64;
        if self.seen < need {
            self.done = true;
            return Some(ProviderError::Transport {
                url: self.url.clone(),
                message: format!(
                    "body too slow: {} bytes in {} (download.low_speed_limit is {} bytes/s over {})",
                    self.seen,
                    humantime::format_duration(self.waited),
                    self.limit,
                    humantime::format_duration(self.window)
                ),
            });
        }
        self.seen = 0;
        self.waited = Duration::ZERO;
        None
    }
}

/// Wraps `stream` so that it fails when slower than `limit` bytes/s over `window`. A zero limit or
/// window turns the guard off. `url` is already redacted.
pub fn guard(stream: BodyStream, url: String, limit: u64, window: Duration) -> BodyStream {
    if limit == 0 || window.is_zero() {
        return stream;
    }
    let state = Guard {
        stream,
        url,
        limit,
        window,
        seen: 0,
        waited: Duration::ZERO,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut g| async move {
        if g.done {
            return None;
        }
        loop {
            let started = Instant::now();
            let left = g.window.saturating_sub(g.waited);
            tokio::select! {
                biased;
                next = g.stream.next() => {
                    g.waited += started.elapsed();
                    return match next {
                        Some(Ok(chunk)) => {
                            g.seen += chunk.len() as u64;
                            match g.check() {
                                Some(e) => Some((Err(e), g)),
                                None => Some((Ok(chunk), g)),
                            }
                        }
                        Some(Err(e)) => {
                            g.done = true;
                            Some((Err(e), g))
                        }
                        None => None,
                    };
                }
                () = tokio::time::sleep(left) => {
                    g.waited = g.window;
                    if let Some(e) = g.check() {
                        return Some((Err(e), g));
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A body of `n` chunks of `size` bytes, one every `every`.
    fn paced(n: usize, size: usize, every: Duration) -> BodyStream {
        Box::pin(futures_util::stream::unfold(0, move |i| async move {
            if i == n {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok(Bytes::from(vec![b'x'; size])), i + 1))
        }))
    }

    async fn drain(mut s: BodyStream) -> (u64, Option<ProviderError>) {
        let mut n = 0;
        while let Some(r) = s.next().await {
            match r {
                Ok(c) => n += c.len() as u64,
                Err(e) => return (n, Some(e)),
            }
        }
        (n, None)
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_is_abandoned_after_the_window() {
        let window = Duration::from_secs(10);
        let s = guard(
            paced(1000, 1, Duration::from_secs(1)),
            "u".into(),
            100,
            window,
        );
        let (n, err) = drain(s).await;
        let err = err.expect("a 1 byte/s body fails a 100 bytes/s floor");
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("too slow"), "{err}");
        assert!(n <= 10, "gave up within the first window: {n} bytes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_body_is_abandoned_too() {
        let s = guard(
            paced(1, 1, Duration::from_secs(3600)),
            "u".into(),
            1,
            Duration::from_secs(5),
        );
        let started = Instant::now();
        let (n, err) = drain(s).await;
        assert!(err.is_some() && n == 0);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn fast_enough_bodies_and_a_disabled_guard_pass_whole() {
        let fast = guard(
            paced(50, 1000, Duration::from_secs(1)),
            "u".into(),
            500,
            Duration::from_secs(3),
        );
        assert_eq!(drain(fast).await.0, 50_000);
        let off = guard(
            paced(20, 1, Duration::from_secs(1)),
            "u".into(),
            0,
            Duration::from_secs(3),
        );
        let (n, err) = drain(off).await;
        assert!(err.is_none() && n == 20);
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_consumer_takes_is_not_counted() {
        // The network is instant; the consumer (a slow disk) takes 10 s per chunk.
        let mut s = guard(
            paced(5, 1, Duration::ZERO),
            "u".into(),
            1000,
            Duration::from_secs(2),
        );
        let mut n = 0;
        while let Some(r) = s.next().await {
            n += r.expect("our own slowness is not the server's").len();
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        assert_eq!(n, 5);
    }
}
