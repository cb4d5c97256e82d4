//! The simulated clock every sandbox runs on: real time scaled by `time_scale`, plus whatever a
//! test moved it forward by.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// The simulated clock: sim_now = wall clock at start + elapsed real time × time_scale.
pub(crate) struct Clock {
    start: Instant,
    start_wall_us: i64,
    scale: f64,
    /// Simulated time added by [`Clock::advance`] (the test clock).
    offset_us: AtomicI64,
}

impl Clock {
    pub(crate) fn new(scale: f64) -> Clock {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            0.0
        };
        Clock {
            start: Instant::now(),
            start_wall_us: chrono::Utc::now().timestamp_micros(),
            scale,
            offset_us: AtomicI64::new(0),
        }
    }

    /// Simulated now, in microseconds since the Unix epoch.
    pub(crate) fn now_us(&self) -> i64 {
        self.start_wall_us
            + self.offset_us.load(Ordering::Relaxed)
            + (self.start.elapsed().as_secs_f64() * self.scale * 1e6) as i64
    }

    /// Moves simulated time forward by `by`.
    pub(crate) fn advance(&self, by: Duration) {
        let us = i64::try_from(by.as_micros()).unwrap_or(i64::MAX / 4);
        self.offset_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The simulated instant `secs` seconds after the start (negative = before), in microseconds.
    pub(crate) fn at_us(&self, secs: f64) -> i64 {
        self.start_wall_us + (secs * 1e6).round() as i64
    }
}
