//! Proxying over real loopback HTTP: hop-by-hop headers, request and response bodies that
//! stream, an unreachable (502) or silent (504) upstream and when the upstream timeout starts,
//! HTTP/2 clients, HTTP/1.1 or h2c upstreams per route, and graceful shutdown.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use support::upstream::{ChannelBody, DOWNLOAD_FIRST, DOWNLOAD_REST, Fnv};
use support::{
    BOUND, ONE_ISSUER, Running, Upstream, assert_mentions, client, gateway_dir, json_body, setup,
    token,
};

// ---------------------------------------------------------------------------------------------
// Proxying
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (_upstream, gw, _dir) = setup().await;
    let response = client()
        .get(gw.url("/public/x"))
        .header("connection", "keep-alive, x-hop-secret")
        .header("x-hop-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .send()
        .await
        .unwrap();
    let echo = json_body(response).await;
    let headers = echo["headers"].as_object().unwrap();
    for name in [
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "trailer",
    ] {
        assert!(!headers.contains_key(name), "{name} was forwarded: {echo}");
    }
    assert_eq!(headers["x-end-to-end"], "kept");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_stream_to_the_upstream_intact() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 64; // 4 MiB
    let (upstream, gw, _dir) = setup().await;
    let chunk = |k: usize| -> Bytes {
        (0..CHUNK)
            .map(|i| (i.wrapping_mul(31) ^ k.wrapping_mul(7)) as u8)
            .collect::<Vec<_>>()
            .into()
    };
    let mut expected = Fnv::default();
    for k in 0..CHUNKS {
        expected.write(&chunk(k));
    }

    // The rest of the body is only sent once the upstream has seen the first chunk: a gateway
    // that buffered the request would deadlock here (and fail at the bound).
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let state = Arc::clone(&upstream.state);
    let sender = tokio::spawn(async move {
        tx.send(chunk(0)).await.unwrap();
        state.first_chunk.notified().await;
        for k in 1..CHUNKS {
            tx.send(chunk(k)).await.unwrap();
        }
    });
    let hyper_client = Client::builder(TokioExecutor::new()).build_http::<ChannelBody>();
    let request = Request::post(gw.url("/orders/upload"))
        .header("authorization", format!("Bearer {}", token("rs256_valid")))
        .body(ChannelBody(rx))
        .unwrap();
    let response = tokio::time::timeout(BOUND, async {
        let response = hyper_client.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap().to_bytes()
    })
    .await
    .expect("the upload streams through the gateway");
    sender.await.unwrap();
    let echo: Value = serde_json::from_slice(&response).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_length"], (CHUNK * CHUNKS) as u64);
    assert_eq!(echo["body_hash"], expected.0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bodies_stream_to_the_client() {
    let (upstream, gw, _dir) = setup().await;
    tokio::time::timeout(BOUND, async {
        let mut response = client().get(gw.url("/download/file")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // The upstream holds the rest back until we have the first chunk.
        let mut got = Vec::new();
        while got.len() < DOWNLOAD_FIRST.len() {
            got.extend_from_slice(&response.chunk().await.unwrap().expect("first chunk"));
        }
        assert_eq!(got, DOWNLOAD_FIRST);
        upstream.state.client_got_first.notify_one();
        while let Some(chunk) = response.chunk().await.unwrap() {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, [DOWNLOAD_FIRST, DOWNLOAD_REST].concat());
    })
    .await
    .expect("the download streams through the gateway");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502() {
    let (_upstream, gw, _dir) = setup().await;
    let response = client().get(gw.url("/down/x")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(json_body(response).await["error"], "bad_gateway");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_is_504_after_the_timeout() {
    // An upstream that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let dir = gateway_dir();
    let path = dir.write_config(&format!(
        r#"
upstream_timeout_seconds = 0.2

[[route]]
path = "/{{*rest}}"
upstream = "http://{silent_addr}"
auth = "public"
"#
    ));
    let gw = Running::start(gatekeeper::load_config(&path).unwrap()).await;
    let response = client().get(gw.url("/slow")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json_body(response).await["error"], "gateway_timeout");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_timeout_covers_sending_the_request_body() {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    let path = dir.write_config(&format!(
        r#"
upstream_timeout_seconds = 0.2

[[route]]
path = "/{{*rest}}"
upstream = "http://{}"
auth = "public"
"#,
        upstream.addr
    ));
    let gw = Running::start(gatekeeper::load_config(&path).unwrap()).await;
    // The timeout runs from the moment the request is sent: an upload that outlasts it is
    // answered 504 (a client that stalls between pieces is cut off earlier, by the body
    // timeout of `[server]`).
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let state = Arc::clone(&upstream.state);
    let sender = tokio::spawn(async move {
        tx.send(Bytes::from_static(b"first")).await.unwrap();
        state.first_chunk.notified().await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let _ = tx.send(Bytes::from_static(b", last")).await;
    });
    let hyper_client = Client::builder(TokioExecutor::new()).build_http::<ChannelBody>();
    let request = Request::post(gw.url("/slow-upload"))
        .body(ChannelBody(rx))
        .unwrap();
    let response = tokio::time::timeout(BOUND, hyper_client.request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    // The client may still push its last chunk into a closed body; only the answer matters.
    let _ = sender.await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_http2_prior_knowledge() {
    let (_upstream, gw, _dir) = setup().await;
    let http2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = http2
        .get(gw.url("/orders/9"))
        .bearer_auth(token("eddsa_valid"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let echo = json_body(response).await;
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["headers"]["x-user-id"], "user-123");
    assert_eq!(echo["headers"]["x-forwarded-host"], gw.addr.to_string());
    assert!(echo["headers"].get("authorization").is_none());
    let response = http2.get(gw.url("/orders/9")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Upstream protocols: HTTP/1.1 and h2c
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_choose_http1_or_h2c_upstreams() {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    let toml = format!(
        r#"{ONE_ISSUER}
[[route]]
path = "/h1/{{*rest}}"
upstream = "http://{up}"

[[route]]
path = "/h2/{{*rest}}"
upstream = "http://{up}"
upstream_protocol = "h2c"

[[route]]
path = "/auto/{{*rest}}"
upstream = "http://{up}"
upstream_protocol = "auto"
"#,
        up = upstream.addr
    );
    let config = gatekeeper::load_config(dir.write_config(&toml)).unwrap_or_else(|e| panic!("{e}"));
    let gw = Running::start(config).await;
    let bearer = format!("Bearer {}", token("rs256_valid"));
    for (path, version) in [
        ("/h1/a", "HTTP/1.1"),
        ("/h2/a", "HTTP/2.0"),
        ("/auto/a", "HTTP/1.1"),
    ] {
        let response = client()
            .post(gw.url(path))
            .header("authorization", &bearer)
            .header("te", "trailers")
            .header("x-user-id", "spoofed")
            .body("twelve bytes")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let echo = json_body(response).await;
        assert_eq!(echo["version"], version, "{path}");
        assert_eq!(echo["headers"]["x-user-id"], "user-123", "{path}");
        assert!(echo["headers"].get("authorization").is_none(), "{path}");
        assert_eq!(echo["body_length"], 12, "{path}");
        if version == "HTTP/2.0" {
            // `:authority` carries the upstream; `TE: trailers` is the one TE h2 allows.
            assert!(echo["headers"].get("host").is_none(), "{echo}");
            assert_eq!(echo["headers"]["te"], "trailers");
        } else {
            assert_eq!(echo["headers"]["host"], upstream.addr.to_string());
            assert!(echo["headers"].get("te").is_none(), "{echo}");
        }
    }
    // A mistyped protocol is named at load time.
    let bad = toml.replace(r#""h2c""#, r#""http2""#);
    let error = gatekeeper::load_config(dir.write_config(&bad))
        .unwrap_err()
        .to_string();
    assert_mentions(&error, &["upstream_protocol", "http2", "h2c"]);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_then_returns() {
    let (upstream, gw, _dir) = setup().await;
    let addr = gw.addr;
    let in_flight = tokio::spawn(client().get(gw.url("/hold/1")).send());
    tokio::time::timeout(BOUND, upstream.state.arrived.notified())
        .await
        .expect("the request reaches the upstream");

    let Running {
        shutdown, mut task, ..
    } = gw;
    shutdown.unwrap().send(()).unwrap();
    upstream.state.release.notify_one();
    let response = tokio::time::timeout(BOUND, in_flight)
        .await
        .expect("the in-flight request finishes")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(response).await["path"], "/hold/1");
    tokio::time::timeout(BOUND, &mut task)
        .await
        .expect("run() returns")
        .unwrap()
        .unwrap();
    // The listener is gone.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_when_shutdown_resolves_while_idle() {
    let (_upstream, gw, _dir) = setup().await;
    // A kept-alive idle connection must not hold the shutdown up.
    let http = client();
    let response = http.get(gw.url("/public/x")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    gw.stop().await;
}
