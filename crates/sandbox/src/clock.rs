//! The simulated clock every sandbox runs on: real time scaled by `time_scale`, plus whatever a
//! test moved it forward by; and [`Span`], one piece of work's course on it (queued, running,
//! done or cancelled), which every sandbox's statuses come from.

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

/// Where a [`Span`] stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Queued,
    Running,
    Done,
    /// A cancel stopped it before it was done.
    Cancelled,
}

/// One piece of work (an item, a document) on the simulated clock: queued until `running_us`,
/// running until `done_us`, unless a cancel at `cancelled_us` (set only while it was not done)
/// stopped it first. Every sandbox's timeline reads its statuses from it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(crate) running_us: i64,
    pub(crate) done_us: i64,
    pub(crate) cancelled_us: Option<i64>,
}

impl Span {
    pub(crate) fn new(running_us: i64, done_us: i64, cancelled_us: Option<i64>) -> Span {
        Span {
            running_us,
            done_us,
            cancelled_us,
        }
    }

    pub(crate) fn phase(&self, now_us: i64) -> Phase {
        if self.cancelled_us.is_some_and(|c| now_us >= c) {
            Phase::Cancelled
        } else if now_us >= self.done_us {
            Phase::Done
        } else if now_us >= self.running_us {
            Phase::Running
        } else {
            Phase::Queued
        }
    }

    /// When it ended, if it has by `now_us`.
    pub(crate) fn finished_us(&self, now_us: i64) -> Option<i64> {
        match self.phase(now_us) {
            Phase::Queued | Phase::Running => None,
            Phase::Done => Some(self.done_us),
            Phase::Cancelled => self.cancelled_us,
        }
    }

    /// Whether it had been picked up by `now_us` (a cancel may come before or after that).
    pub(crate) fn started(&self, now_us: i64) -> bool {
        match self.phase(now_us) {
            Phase::Queued => false,
            Phase::Cancelled => self.cancelled_us.is_some_and(|c| c >= self.running_us),
            Phase::Running | Phase::Done => true,
        }
    }

    /// The time of its latest transition at or before `now_us` (`created_us` while queued), so
    /// it only moves forward.
    pub(crate) fn updated_us(&self, created_us: i64, now_us: i64) -> i64 {
        match self.phase(now_us) {
            Phase::Queued => created_us,
            Phase::Running => self.running_us,
            Phase::Done | Phase::Cancelled => self.finished_us(now_us).unwrap_or(created_us),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_runs_its_course_unless_cancelled() {
        let plain = Span {
            running_us: 10,
            done_us: 20,
            cancelled_us: None,
        };
        let phases: Vec<Phase> = [0, 10, 19, 20].map(|t| plain.phase(t)).into();
        assert_eq!(
            phases,
            [Phase::Queued, Phase::Running, Phase::Running, Phase::Done]
        );
        assert_eq!(
            (plain.finished_us(19), plain.finished_us(25)),
            (None, Some(20))
        );
        assert_eq!([0, 15, 25].map(|t| plain.updated_us(5, t)), [5, 10, 20]);
        let early = Span {
            cancelled_us: Some(5),
            ..plain
        };
        assert_eq!(
            (early.phase(4), early.phase(30)),
            (Phase::Queued, Phase::Cancelled)
        );
        assert_eq!((early.started(30), early.finished_us(30)), (false, Some(5)));
        let late = Span {
            cancelled_us: Some(15),
            ..plain
        };
        assert_eq!((late.phase(12), late.started(30)), (Phase::Running, true));
        assert_eq!(late.updated_us(5, 30), 15);
    }
}
