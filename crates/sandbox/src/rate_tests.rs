//! The rate limit of every sandbox, over real HTTP: each refuses in its provider's documented form
//! once a key's window is spent, names the wait as that provider does, logs when it let the client
//! back, and counts neither requests without the key nor the extract.page object store.
//!
//! The windows are an hour long, so a test's few requests never straddle two of them.

use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use serde_json::Value;

use super::extract_page::tests::{batch, client, done, get, result_url, spec, start};
use super::{Delivery, LoggedRequest, RateLimit, RetryAfterForm};
use super::{llamacloud as llama, perfectparser as perfect, talonic};

const HOUR: Duration = Duration::from_secs(3600);

fn two_an_hour() -> Option<RateLimit> {
    Some(RateLimit::new(2, HOUR))
}

/// The top of the next hour: where a clock-grid window of an hour ends.
fn next_hour() -> SystemTime {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs((now / 3600 + 1) * 3600)
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> &'h str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The last logged request is a refusal counted in a window, letting the client back about
/// `wait` after it arrived.
fn assert_logged_refusal(log: &[LoggedRequest], wait: Duration) {
    let last = log.last().unwrap();
    assert_eq!(last.status, 429);
    assert!(last.window.is_some() && log.iter().all(|r| r.window == last.window));
    let named = last.retry_at.unwrap() - last.at;
    assert!(
        named.abs_diff(wait) < Duration::from_secs(1),
        "{named:?} vs {wait:?}"
    );
}

#[tokio::test]
async fn extract_page_answers_429_with_retry_after_and_never_counts_the_store() {
    let sb = start(spec(vec![batch(
        "b",
        60,
        vec![done("r", Delivery::Redirect)],
    )]))
    .await;
    sb.set_rate_limit(two_an_hour());
    let list = format!("{}/v1/batches", sb.base_url());
    // Without the key it is the 401's business, not the budget's.
    assert_eq!(client().get(&list).send().await.unwrap().status(), 401);
    let redirect = get(&result_url(&sb, "b", "r")).await;
    assert_eq!(redirect.status(), StatusCode::FOUND);
    let store = redirect.headers()[LOCATION].to_str().unwrap().to_owned();
    assert_eq!(get(&list).await.status(), StatusCode::OK);
    let refused = get(&list).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let secs: u64 = header(refused.headers(), "retry-after").parse().unwrap();
    let until = next_hour().duration_since(SystemTime::now()).unwrap();
    assert!(
        secs >= until.as_secs() && secs <= until.as_secs() + 1,
        "{secs}"
    );
    let body: Value = serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
    assert_eq!(body, serde_json::json!({"detail": "Rate limit exceeded"}));
    let counted: Vec<LoggedRequest> = sb
        .request_log()
        .into_iter()
        .filter(|r| r.window.is_some())
        .collect();
    assert_logged_refusal(&counted, Duration::from_secs(secs));
    // The budget is spent, and still the object store serves: it is not the API.
    assert_eq!(client().get(&store).send().await.unwrap().status(), 200);
    let store_entry = sb.request_log().pop().unwrap();
    assert!(store_entry.path.starts_with("/results/") && store_entry.window.is_none());
    // The date form names the window's end itself.
    sb.set_retry_after_form(RetryAfterForm::HttpDate);
    let refused = get(&list).await;
    let date = httpdate::parse_http_date(header(refused.headers(), "retry-after")).unwrap();
    assert_eq!(date, next_hour());
    let stats = sb.stats();
    assert_eq!((stats.rate_limited, stats.unauthorized), (2, 1));
    sb.set_rate_limit(None);
    let again = get(&list).await;
    assert!(again.status() == StatusCode::OK && again.headers().get(RETRY_AFTER).is_none());
    assert_eq!(
        sb.request_log().pop().unwrap().window,
        None,
        "no limit, nothing counted"
    );
    sb.stop().await;
}

#[tokio::test]
async fn llamacloud_answers_429_with_retry_after_ms_and_retry_after() {
    let sb = llama::LlamaSandbox::start(
        llama::LlamaSpec::generated(1, 1, 500, 1),
        ([127, 0, 0, 1], 0).into(),
    )
    .await
    .unwrap();
    sb.set_rate_limit(two_an_hour());
    let url = format!("{}/api/v1/beta/batch-processing", sb.base_url());
    let send = || {
        client()
            .get(&url)
            .bearer_auth(llama::DEFAULT_API_KEY)
            .send()
    };
    for _ in 0..2 {
        assert_eq!(send().await.unwrap().status(), StatusCode::OK);
    }
    let refused = send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let ms: u64 = header(refused.headers(), "retry-after-ms").parse().unwrap();
    let secs: u64 = header(refused.headers(), "retry-after").parse().unwrap();
    let until = next_hour().duration_since(SystemTime::now()).unwrap();
    assert!(
        Duration::from_millis(ms).abs_diff(until) < Duration::from_secs(1),
        "{ms}"
    );
    assert_eq!(secs, ms.div_ceil(1000));
    let body: Value = serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
    assert_eq!(body["detail"], "Too many requests");
    assert_logged_refusal(&sb.request_log(), Duration::from_millis(ms));
    assert_eq!(sb.stats().rate_limited, 1);
    sb.stop().await;
}

#[tokio::test]
async fn talonic_answers_rate_limited_with_an_iso_reset_at_the_window_end() {
    let sb = talonic::TalonicSandbox::start(
        talonic::TalonicSpec::generated(1, 1, 500, 1),
        ([127, 0, 0, 1], 0).into(),
    )
    .await
    .unwrap();
    sb.set_rate_limit(two_an_hour());
    let url = format!("{}/v1/batches", sb.base_url());
    let send = || {
        client()
            .get(&url)
            .bearer_auth(talonic::DEFAULT_API_KEY)
            .send()
    };
    for remaining in ["1", "0"] {
        let ok = send().await.unwrap();
        assert_eq!(header(ok.headers(), "x-ratelimit-remaining"), remaining);
        assert_eq!(header(ok.headers(), "x-ratelimit-limit"), "2");
    }
    let refused = send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let reset =
        chrono::DateTime::parse_from_rfc3339(header(refused.headers(), "x-ratelimit-reset"))
            .unwrap();
    assert_eq!(SystemTime::from(reset), next_hour());
    assert!(
        refused.headers().get(RETRY_AFTER).is_none(),
        "not unless the spec asks"
    );
    let body: Value = serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
    assert_eq!(
        (&body["code"], &body["retryable"], &body["statusCode"]),
        (&"rate_limited".into(), &true.into(), &429.into())
    );
    let until = next_hour().duration_since(SystemTime::now()).unwrap();
    assert_logged_refusal(&sb.request_log(), until);
    assert_eq!(sb.stats().rate_limited, 1);
    sb.set_rate_limit(None);
    let free = send().await.unwrap();
    assert_eq!(free.status(), StatusCode::OK);
    assert!(
        free.headers().get("x-ratelimit-remaining").is_none(),
        "no limit, no headers"
    );
    sb.stop().await;
}

#[tokio::test]
async fn perfectparser_replaces_its_quota_and_names_the_reset_in_unix_seconds() {
    let sb = perfect::PerfectSandbox::start(
        perfect::PerfectSpec::generated(1, 1, 500, 1),
        ([127, 0, 0, 1], 0).into(),
    )
    .await
    .unwrap();
    sb.set_rate_limit(two_an_hour());
    let url = format!("{}/v1/credits", sb.base_url());
    let send = || {
        client()
            .get(&url)
            .header("X-API-Key", perfect::DEFAULT_API_KEY)
            .send()
    };
    let started = Instant::now();
    for _ in 0..2 {
        assert_eq!(send().await.unwrap().status(), StatusCode::OK);
    }
    let refused = send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(refused.headers(), "x-ratelimit-remaining"), "0");
    let reset: u64 = header(refused.headers(), "x-ratelimit-reset")
        .parse()
        .unwrap();
    // Its window opened with the first request, an hour ago at most a moment.
    let opened = SystemTime::now() - started.elapsed();
    let end = opened + HOUR;
    let named = SystemTime::UNIX_EPOCH + Duration::from_secs(reset);
    assert!(named >= end - Duration::from_secs(1) && named <= end + Duration::from_secs(2));
    let body: Value = serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    assert_logged_refusal(
        &sb.request_log(),
        named.duration_since(SystemTime::now()).unwrap(),
    );
    sb.set_rate_limit(None);
    let free = send().await.unwrap();
    assert_eq!(free.status(), StatusCode::OK);
    assert!(free.headers().get("x-ratelimit-limit").is_none());
    sb.stop().await;
}
