//! The injected faults on the wire, checked without the crate's client: what a cut body sends
//! before the cut, the redirect loop's two hops, the outage and the test clock.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tests::{KEY, batch, client, done, result_url, spec, start};
use super::*;

/// A raw HTTP/1.1 GET of the item's result: (headers, body bytes until the connection closed).
async fn raw_get(sb: &Sandbox, b: &str, i: &str) -> (String, Vec<u8>) {
    let url = url::Url::parse(&result_url(sb, b, i)).unwrap();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nX-API-KEY: {KEY}\r\nConnection: close\r\n\r\n",
        url.path()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    // A reset may end the read with an error: what arrived before it is what counts.
    let _ = conn.read_to_end(&mut all).await;
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..split]).to_lowercase();
    (head, all[split + 4..].to_vec())
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::to_owned)
}

fn fault(sb: &Sandbox, item: &str, fault: ResultFault) {
    sb.push_fault(Fault::Result {
        batch: "b".into(),
        item: item.into(),
        fault,
    });
}

#[tokio::test]
async fn cut_bodies_announce_the_whole_length_and_send_half() {
    let sb = start(spec(vec![batch(
        "b",
        3600,
        vec![done("i", Delivery::Inline)],
    )]))
    .await;
    let (_, len) = sb.expected("b", "i").unwrap();
    for f in [ResultFault::Reset, ResultFault::ShortBody] {
        fault(&sb, "i", f.clone());
        let (head, body) = raw_get(&sb, "b", "i").await;
        assert!(head.starts_with("http/1.1 200"), "{f:?}: {head}");
        assert_eq!(header(&head, "content-length"), Some(len.to_string()));
        assert_eq!(body.len() as u64, len / 2, "{f:?}");
    }
    // Truncated JSON is a complete message of half the body.
    fault(&sb, "i", ResultFault::TruncatedJson);
    let (head, body) = raw_get(&sb, "b", "i").await;
    assert_eq!(header(&head, "content-length"), Some((len / 2).to_string()));
    assert_eq!(body.len() as u64, len / 2);
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());
    // Faults are one-shot: the next request is served whole.
    let (_, body) = raw_get(&sb, "b", "i").await;
    assert_eq!(body.len() as u64, len);
}

#[tokio::test]
async fn a_redirect_loop_goes_to_the_store_and_back_to_the_same_result_url() {
    let sb = start(spec(vec![batch(
        "b",
        3600,
        vec![done("i", Delivery::Inline)],
    )]))
    .await;
    fault(&sb, "i", ResultFault::RedirectLoop);
    let first = result_url(&sb, "b", "i");
    let resp = client()
        .get(&first)
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let hop = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(hop.starts_with(&sb.object_store_url()), "{hop}");
    let back = client().get(&hop).send().await.unwrap();
    assert_eq!(back.status(), 302);
    assert_eq!(back.headers()["location"].to_str().unwrap(), first);
}

#[tokio::test]
async fn a_gzip_bomb_is_gzip_on_the_wire_and_decodes_to_its_size() {
    let sb = start(spec(vec![batch(
        "b",
        3600,
        vec![done("i", Delivery::Redirect)],
    )]))
    .await;
    fault(
        &sb,
        "i",
        ResultFault::GzipBomb {
            decoded_bytes: 4 << 20,
        },
    );
    // The API redirects; the store, which serves the body, takes the fault.
    let resp = client()
        .get(result_url(&sb, "b", "i"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    // Undecoded: the crate's reqwest has gzip decoding on.
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let resp = raw.get(&location).send().await.unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let wire = resp.bytes().await.unwrap();
    assert!(wire.len() < 64 * 1024, "{} bytes on the wire", wire.len());
    let mut decoded = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&wire[..]), &mut decoded).unwrap();
    assert_eq!(decoded.len(), 4 << 20);
}

#[tokio::test]
async fn an_outage_answers_503_and_the_test_clock_expires_results() {
    let mut s = spec(vec![batch("b", 3600, vec![done("i", Delivery::Inline)])]);
    s.time_scale = 0.0;
    s.retention = Duration::from_secs(3600);
    let sb = start(s).await;
    sb.set_outage(Some("/result"));
    let url = result_url(&sb, "b", "i");
    let get = || client().get(&url).header("x-api-key", KEY).send();
    assert_eq!(get().await.unwrap().status(), 503);
    let list = format!("{}/v1/batches", sb.base_url());
    let listed = client()
        .get(&list)
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200, "only matching paths are down");
    sb.set_outage(None);
    assert_eq!(get().await.unwrap().status(), 200);
    // Finished a minute ago with an hour of retention: 59 more minutes, and it is gone.
    sb.advance_clock(Duration::from_secs(58 * 60));
    assert_eq!(get().await.unwrap().status(), 200);
    sb.advance_clock(Duration::from_secs(2 * 60));
    assert_eq!(get().await.unwrap().status(), 410);
}

#[tokio::test]
async fn each_served_result_costs_simulated_time() {
    let mut s = spec(vec![batch("b", 3600, vec![done("i", Delivery::Redirect)])]);
    s.time_scale = 0.0;
    s.retention = Duration::from_secs(3600);
    let sb = start(s).await;
    sb.set_result_cost(Duration::from_secs(30 * 60));
    let fetch = || async {
        let resp = client()
            .get(result_url(&sb, "b", "i"))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap();
        if resp.status() != 302 {
            return resp.status();
        }
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        client().get(&location).send().await.unwrap().status()
    };
    // Served at +1 min and +31 min of its hour; the third ask, at +61 min, is too late.
    assert_eq!(fetch().await, 200);
    assert_eq!(fetch().await, 200);
    assert_eq!(fetch().await, 410);
}
