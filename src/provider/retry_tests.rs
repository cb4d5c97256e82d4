//! Unit tests of the retry decorator and the per-provider limiter: what is retried, how long a
//! throttle or a server-named wait holds requests.

use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

struct Flaky {
    name: ProviderName,
    calls: AtomicU32,
    fail_first: u32,
    error: fn() -> ProviderError,
}

#[async_trait]
impl Provider for Flaky {
    fn name(&self) -> &ProviderName {
        &self.name
    }
    async fn list_batches(&self, _: &ListRequest) -> Result<BatchPage, ProviderError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.fail_first {
            return Err((self.error)());
        }
        Ok(BatchPage {
            batches: vec![],
            rejected: vec![],
            next_cursor: None,
        })
    }
    async fn batch_items(&self, _: &BatchId, _: Option<&str>) -> Result<ItemPage, ProviderError> {
        unreachable!()
    }
    async fn fetch_result(&self, _: &DueItem) -> Result<ResultBody, ProviderError> {
        unreachable!()
    }
}

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        requests_per_minute: Some(60_000),
        documented_per_minute: None,
        submits_per_minute: None,
    }
}

fn flaky(fail_first: u32, error: fn() -> ProviderError) -> Arc<Flaky> {
    Arc::new(Flaky {
        name: ProviderName::parse("t").unwrap(),
        calls: AtomicU32::new(0),
        fail_first,
        error,
    })
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_up_to_the_limit() {
    let inner = flaky(2, || ProviderError::Status {
        url: "u".into(),
        status: 503,
        body: String::new(),
        retry_after: None,
        retryable: None,
    });
    let r = Retrying::new(
        inner.clone(),
        policy(3),
        Arc::new(Limiter::adaptive(None, None)),
        crate::model::no_observer(),
    );
    assert!(r.list_batches(&ListRequest::default()).await.is_ok());
    assert_eq!(inner.calls.load(Ordering::SeqCst), 3);

    let inner = flaky(5, || ProviderError::Transport {
        url: "u".into(),
        message: "reset".into(),
    });
    let r = Retrying::new(
        inner.clone(),
        policy(3),
        Arc::new(Limiter::adaptive(None, None)),
        crate::model::no_observer(),
    );
    assert!(r.list_batches(&ListRequest::default()).await.is_err());
    assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let inner = flaky(5, || ProviderError::Status {
        url: "u".into(),
        status: 404,
        body: String::new(),
        retry_after: None,
        retryable: None,
    });
    let r = Retrying::new(
        inner.clone(),
        policy(5),
        Arc::new(Limiter::adaptive(None, None)),
        crate::model::no_observer(),
    );
    assert!(r.list_batches(&ListRequest::default()).await.is_err());
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
}

fn status(code: u16) -> fn() -> ProviderError {
    match code {
        429 => || ProviderError::Status {
            url: "u".into(),
            status: 429,
            body: String::new(),
            retry_after: None,
            retryable: None,
        },
        _ => || ProviderError::Status {
            url: "u".into(),
            status: 500,
            body: String::new(),
            retry_after: None,
            retryable: None,
        },
    }
}

#[tokio::test(start_paused = true)]
async fn a_throttle_that_names_no_wait_holds_the_provider_a_few_seconds_with_jitter() {
    let mut waits = Vec::new();
    for _ in 0..8 {
        let r = Retrying::new(
            flaky(1, status(429)),
            policy(3),
            Arc::new(Limiter::adaptive(None, None)),
            crate::model::no_observer(),
        );
        let start = Instant::now();
        assert!(r.list_batches(&ListRequest::default()).await.is_ok());
        waits.push(start.elapsed());
    }
    let (lo, hi) = (UNNAMED_THROTTLE_PAUSE, UNNAMED_THROTTLE_PAUSE * 2);
    assert!(
        waits
            .iter()
            .all(|w| *w >= lo && *w <= hi + Duration::from_millis(50)),
        "{waits:?}"
    );
    waits.sort();
    assert!(
        waits[7] - waits[0] > Duration::from_millis(100),
        "jittered: {waits:?}"
    );
    // A failure that is not a throttle keeps the policy's short back-off.
    let r = Retrying::new(
        flaky(1, status(500)),
        policy(3),
        Arc::new(Limiter::adaptive(None, None)),
        crate::model::no_observer(),
    );
    let start = Instant::now();
    assert!(r.list_batches(&ListRequest::default()).await.is_ok());
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_wait_holds_every_request() {
    let inner = flaky(1, || ProviderError::Status {
        url: "u".into(),
        status: 429,
        body: String::new(),
        retry_after: Some(Duration::from_secs(40)),
        retryable: None,
    });
    let r = Retrying::new(
        inner.clone(),
        policy(3),
        Arc::new(Limiter::adaptive(None, None)),
        crate::model::no_observer(),
    );
    let start = Instant::now();
    assert!(r.list_batches(&ListRequest::default()).await.is_ok());
    assert!(start.elapsed() >= Duration::from_secs(40));
    // The gate stays closed for others until the named time, too.
    r.limiter.pause_for(Duration::from_secs(10));
    let t = Instant::now();
    r.limiter.acquire().await;
    assert!(t.elapsed() >= Duration::from_secs(10));
}

/// In real time: governor's buckets keep it.
#[tokio::test]
async fn a_pause_that_begins_while_a_request_waits_its_turn_holds_it_too() {
    let limiter = Arc::new(Limiter::evenly(60));
    limiter.acquire().await;
    let start = std::time::Instant::now();
    let queued = tokio::spawn({
        let limiter = limiter.clone();
        async move {
            limiter.acquire().await;
            start.elapsed()
        }
    });
    // Its turn under 1/s comes in a second; a refusal elsewhere pauses everything for two.
    tokio::time::sleep(Duration::from_millis(100)).await;
    limiter.pause_for(Duration::from_secs(2));
    let took = queued.await.unwrap();
    assert!(
        took >= Duration::from_secs(2),
        "sent during the pause, after {took:?}"
    );
}
