//! The client side of PerfectParser's documented per-key quota (`providers.md` §4.1): every
//! response's `X-RateLimit-Remaining`/`X-RateLimit-Reset`, less the requests still in flight, so
//! concurrent requests stop *before* the server would refuse one.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Longest the local budget holds requests for one window (a later reset is capped to it).
const MAX_BUDGET_WAIT: Duration = Duration::from_secs(15 * 60);

/// The client's picture of the server's per-key window: what is left of it, when it resets, and
/// how many requests are out. A response's `Remaining` does not count requests sent after it was
/// served, so those still in flight are subtracted: the budget reaches 0 before the server does.
#[derive(Default)]
pub(super) struct Budget {
    state: Mutex<BudgetState>,
}

#[derive(Default)]
struct BudgetState {
    remaining: Option<u64>,
    reset: Option<SystemTime>,
    in_flight: u64,
}

/// One request counted as in flight until observed or dropped (a transport error, a cancel).
pub(super) struct Ticket<'a> {
    budget: &'a Budget,
    open: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.open {
            let mut s = self.budget.lock();
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }
}

impl Budget {
    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits while the window is known to be spent, then takes one request from it.
    pub(super) async fn acquire(&self) -> Ticket<'_> {
        loop {
            let wait = {
                let mut s = self.lock();
                let now = SystemTime::now();
                if s.reset.is_none_or(|r| now >= r) {
                    s.remaining = None;
                    s.reset = None;
                }
                match (s.remaining, s.reset) {
                    (Some(0), Some(reset)) => reset.duration_since(now).unwrap_or_default(),
                    (left, _) => {
                        s.remaining = left.map(|n| n.saturating_sub(1));
                        s.in_flight += 1;
                        break;
                    }
                }
            };
            tracing::debug!(
                ?wait,
                "PerfectParser quota spent: waiting for the window to reset"
            );
            tokio::time::sleep(wait.min(MAX_BUDGET_WAIT)).await;
        }
        Ticket {
            budget: self,
            open: true,
        }
    }

    pub(super) fn observe(
        &self,
        mut ticket: Ticket<'_>,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        now: SystemTime,
    ) {
        ticket.open = false;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        // A hostile or absurd reset is capped, never trusted to overflow or stall for hours.
        let reset = header("x-ratelimit-reset")
            .and_then(|t| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(t)))
            .map(|t| t.min(now + MAX_BUDGET_WAIT));
        let remaining = match header("x-ratelimit-remaining") {
            _ if status == 429 => Some(0),
            r => r,
        };
        let (Some(reset), Some(remaining)) = (reset, remaining) else {
            return;
        };
        if reset <= now || s.reset.is_some_and(|cur| reset < cur) {
            return; // a late answer from a window already over
        }
        let estimate = remaining.saturating_sub(s.in_flight);
        s.remaining = match s.remaining {
            Some(cur) if s.reset == Some(reset) => Some(cur.min(estimate)),
            _ => Some(estimate),
        };
        s.reset = Some(reset);
    }
}
