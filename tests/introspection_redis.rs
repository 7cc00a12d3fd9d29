//! The introspection cache shared by replicas through a real `redis-server`, started here on
//! a free loopback port without persistence, in front of an identity provider started here
//! that counts its requests: two `IntrospectionAuthenticator`s ("replicas") share active and
//! inactive results (the IdP is asked once), Redis keys expire no later than the local cache
//! would (`cache_ttl`, `negative_ttl`, the token's `exp`), each replica re-checks what it reads
//! with its own configuration, unusable entries are ignored, and Redis killed, restarted or
//! silent never fails a request nor stalls it.
//!
//! When `redis-server` is not installed these tests skip with a loud message, except under
//! `CI=true`, where that is a failure.
#![cfg(all(feature = "introspection", feature = "redis"))]

#[path = "support/redis_server.rs"]
mod redis_server;

#[path = "support/http_server.rs"]
mod http_server;

mod shared {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use redis::aio::MultiplexedConnection;
    use serde_json::{Value, json};
    use sha2::{Digest, Sha256};
    use tokio::net::TcpListener;
    use tokio::time::{Instant, sleep, timeout};
    use tower_gatekeeper::RejectionKind;
    use tower_gatekeeper::authenticate::{
        ClientAuth, IntrospectionAuthenticator, IntrospectionConfig, RedisIntrospectionCache,
        SharedIntrospectionCache,
    };

    use super::http_server::serve;
    use super::redis_server::RedisServer;

    /// Generous bound for what takes milliseconds; only reached when a test fails.
    const BOUND: Duration = Duration::from_secs(30);
    /// No request may take longer than this, whatever Redis does (its timeout is 250 ms).
    const NO_STALL: Duration = Duration::from_secs(3);
    const CACHE_TTL: Duration = Duration::from_secs(30);
    const NEGATIVE_TTL: Duration = Duration::from_secs(10);
    const ISS: &str = "https://idp.example.test";

    // -----------------------------------------------------------------------------------------
    // redis-server (tests/support/redis_server.rs)
    // -----------------------------------------------------------------------------------------

    /// A connection of the test's own, to look at and tamper with what replicas store.
    async fn connect(redis: &RedisServer) -> MultiplexedConnection {
        redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// The Redis key of `token` for an authenticator of `endpoint` as `client_id`: the
    /// prefix, then the hex SHA-256 of the length-prefixed endpoint and client id and the
    /// token (the documented format, computed independently here).
    fn key_with(endpoint: &str, client_id: &str, prefix: &str, token: &str) -> String {
        let mut hash = Sha256::new();
        for part in [endpoint, client_id] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        hash.update(token.as_bytes());
        let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        format!("{prefix}{hex}")
    }

    /// The Redis key of `token` for the replicas of [`config`].
    fn key(idp: SocketAddr, prefix: &str, token: &str) -> String {
        key_with(
            &format!("http://{idp}/introspect"),
            "gateway",
            prefix,
            token,
        )
    }

    /// An entry as a gatekeeper writes it: the answer and when it was fetched.
    fn entry(mut answer: Value, fetched_at: u64) -> Vec<u8> {
        answer[FETCHED_AT] = fetched_at.into();
        answer.to_string().into_bytes()
    }

    const FETCHED_AT: &str = "gatekeeper:fetched_at";

    async fn get(conn: &mut MultiplexedConnection, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET").arg(key).query_async(conn).await.unwrap()
    }

    async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
        redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
    }

    async fn set(conn: &mut MultiplexedConnection, key: &str, value: &[u8], px: Option<u64>) {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ms) = px {
            cmd.arg("PX").arg(ms);
        }
        cmd.query_async::<()>(conn).await.unwrap();
    }

    /// Waits until a replica has written `key` (writes happen after the answer) and returns
    /// the value as JSON, without its fetch time (which it must have, about now).
    async fn stored(conn: &mut MultiplexedConnection, key: &str) -> Value {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(value) = get(conn, key).await {
                let mut value: Value = serde_json::from_slice(&value).expect("a JSON value");
                let fetched_at = value
                    .as_object_mut()
                    .and_then(|o| o.remove(FETCHED_AT))
                    .and_then(|v| v.as_u64())
                    .expect("the fetch time is stored");
                assert!(fetched_at.abs_diff(now()) <= 5, "fetched at {fetched_at}");
                return value;
            }
            assert!(Instant::now() < deadline, "{key} was never written");
            sleep(Duration::from_millis(5)).await;
        }
    }

    // -----------------------------------------------------------------------------------------
    // The identity provider: counts requests per token
    // -----------------------------------------------------------------------------------------

    #[derive(Default)]
    struct Idp {
        counts: Mutex<HashMap<String, usize>>,
        /// Every token is inactive (another authorization server).
        inactive_all: std::sync::atomic::AtomicBool,
        /// The fixed `exp` of the token `short`, set on first use.
        short_exp: OnceLock<u64>,
    }

    impl Idp {
        fn count(&self, token: &str) -> usize {
            self.counts.lock().unwrap().get(token).copied().unwrap_or(0)
        }
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    async fn answer(idp: Arc<Idp>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let token = String::from_utf8(body.to_vec())
            .unwrap()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            })
            .unwrap_or_default();
        *idp.counts.lock().unwrap().entry(token.clone()).or_default() += 1;
        let far = now() + 3600;
        let body = match token.as_str() {
            _ if idp.inactive_all.load(Ordering::SeqCst) => json!({"active": false}),
            // Whatever else an inactive answer says is not shared.
            "inactive" => json!({"active": false, "sub": "not-shared", "note": "revoked"}),
            "short" => {
                let exp = *idp.short_exp.get_or_init(|| now() + 2);
                json!({"active": true, "sub": "short-lived", "iss": ISS,
                       "aud": "api://orders", "exp": exp})
            }
            "billing" => {
                json!({"active": true, "sub": "biller", "iss": ISS, "aud": "api://billing",
                       "exp": far})
            }
            _ => json!({
                "active": true, "sub": format!("user-of-{token}"), "iss": ISS,
                "aud": ["api://orders"], "scope": "orders:read", "exp": far,
                "roles": ["clerk"],
            }),
        };
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    }

    async fn start_idp() -> (SocketAddr, Arc<Idp>) {
        let idp = Arc::new(Idp::default());
        let state = Arc::clone(&idp);
        let addr = serve(move |req| answer(Arc::clone(&state), req)).await;
        (addr, idp)
    }

    // -----------------------------------------------------------------------------------------
    // Replicas
    // -----------------------------------------------------------------------------------------

    fn config(idp: SocketAddr, audience: &str) -> IntrospectionConfig {
        IntrospectionConfig::new(
            format!("http://{idp}/introspect"),
            ClientAuth::Basic {
                client_id: "gateway".into(),
                client_secret: "s3cret".into(),
            },
        )
        .issuer(ISS)
        .audiences([audience])
        .timeout(Duration::from_secs(2))
        .cache_ttl(CACHE_TTL)
        .negative_ttl(NEGATIVE_TTL)
    }

    fn cache(url: &str, prefix: &str) -> RedisIntrospectionCache {
        RedisIntrospectionCache::builder(url)
            .prefix(prefix)
            .timeout(Duration::from_millis(250))
            .backoff(Duration::from_millis(200))
            .build()
            .unwrap()
    }

    /// A replica: its own authenticator (own local cache, own Redis connection).
    fn replica(idp: SocketAddr, url: &str, prefix: &str) -> IntrospectionAuthenticator {
        replica_for(idp, url, prefix, "api://orders")
    }

    fn replica_for(
        idp: SocketAddr,
        url: &str,
        prefix: &str,
        audience: &str,
    ) -> IntrospectionAuthenticator {
        IntrospectionAuthenticator::new(config(idp, audience).shared_cache(cache(url, prefix)))
            .unwrap()
    }

    /// `verify`, failing the test when it takes longer than [`NO_STALL`].
    async fn verify(
        replica: &IntrospectionAuthenticator,
        token: &str,
    ) -> Result<String, RejectionKind> {
        let started = Instant::now();
        let outcome = timeout(NO_STALL, replica.verify(token))
            .await
            .unwrap_or_else(|_| panic!("{token}: no answer within {NO_STALL:?}"));
        let took = started.elapsed();
        assert!(took < NO_STALL, "{token} took {took:?}");
        outcome
            .map(|ctx| ctx.subject().unwrap_or_default().to_owned())
            .map_err(|r| r.kind())
    }

    // -----------------------------------------------------------------------------------------
    // Tests
    // -----------------------------------------------------------------------------------------

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_share_active_and_inactive_results_and_ask_the_idp_once() {
        let Some(redis) = RedisServer::start() else {
            return;
        };
        let mut conn = connect(&redis).await;
        let (idp_addr, idp) = start_idp().await;
        let prefix = "t1:introspection:";
        let (a, b) = (
            replica(idp_addr, &redis.url(), prefix),
            replica(idp_addr, &redis.url(), prefix),
        );

        // Active: introspected through A, written under prefix + hex SHA-256 of the token.
        assert_eq!(verify(&a, "opaque-1").await, Ok("user-of-opaque-1".into()));
        let k = key(idp_addr, prefix, "opaque-1");
        let value = stored(&mut conn, &k).await;
        assert_eq!(value["active"], true);
        assert_eq!(value["sub"], "user-of-opaque-1");
        let ttl = pttl(&mut conn, &k).await;
        assert!(
            ttl > 0 && ttl <= CACHE_TTL.as_millis() as i64,
            "PTTL {ttl} ms, cache_ttl {CACHE_TTL:?}"
        );
        // The raw token is stored nowhere.
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(keys.iter().all(|k| !k.contains("opaque-1")), "{keys:?}");
        // B accepts it from Redis, with the same identity; the IdP was asked once.
        assert_eq!(verify(&b, "opaque-1").await, Ok("user-of-opaque-1".into()));
        let ctx = b.verify("opaque-1").await.unwrap();
        assert_eq!(ctx.roles(), ["clerk"]);
        assert_eq!(ctx.scopes(), ["orders:read"]);
        assert_eq!(ctx.issuer(), Some(ISS));
        assert_eq!(idp.count("opaque-1"), 1);

        // Inactive: shared too, as `{"active":false}` only, for negative_ttl at most.
        assert_eq!(
            verify(&a, "inactive").await,
            Err(RejectionKind::InvalidToken)
        );
        let k = key(idp_addr, prefix, "inactive");
        assert_eq!(stored(&mut conn, &k).await, json!({"active": false}));
        let ttl = pttl(&mut conn, &k).await;
        assert!(
            ttl > 0 && ttl <= NEGATIVE_TTL.as_millis() as i64,
            "PTTL {ttl} ms, negative_ttl {NEGATIVE_TTL:?}"
        );
        assert_eq!(
            verify(&b, "inactive").await,
            Err(RejectionKind::InvalidToken)
        );
        assert_eq!(idp.count("inactive"), 1);

        // Each replica re-checks what it reads with its own configuration: one for another
        // audience rejects the entry A wrote (without asking the IdP)...
        let billing = replica_for(idp_addr, &redis.url(), prefix, "api://billing");
        assert_eq!(
            verify(&billing, "opaque-1").await,
            Err(RejectionKind::InvalidToken)
        );
        assert_eq!(idp.count("opaque-1"), 1);
        // ...and accepts what the IdP said is active for it, although A rejected it.
        assert_eq!(
            verify(&a, "billing").await,
            Err(RejectionKind::InvalidToken)
        );
        assert_eq!(
            stored(&mut conn, &key(idp_addr, prefix, "billing")).await["sub"],
            "biller"
        );
        assert_eq!(verify(&billing, "billing").await, Ok("biller".into()));
        assert_eq!(idp.count("billing"), 1);

        // Another prefix is another cache.
        let other = replica(idp_addr, &redis.url(), "t1-other:");
        assert_eq!(
            verify(&other, "opaque-1").await,
            Ok("user-of-opaque-1".into())
        );
        assert_eq!(idp.count("opaque-1"), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_entries_never_outlive_exp_and_expired_tokens_are_not_served() {
        let Some(redis) = RedisServer::start() else {
            return;
        };
        let mut conn = connect(&redis).await;
        let (idp_addr, idp) = start_idp().await;
        let prefix = "t2:";
        // An hour of cache_ttl: only `exp` bounds the entry.
        let long = |url: &str| {
            IntrospectionAuthenticator::new(
                config(idp_addr, "api://orders")
                    .cache_ttl(Duration::from_secs(3600))
                    .shared_cache(cache(url, prefix)),
            )
            .unwrap()
        };
        let (a, b) = (long(&redis.url()), long(&redis.url()));

        assert_eq!(verify(&a, "short").await, Ok("short-lived".into()));
        let exp = *idp.short_exp.get().unwrap();
        let k = key(idp_addr, prefix, "short");
        stored(&mut conn, &k).await;
        let before = now_ms();
        let ttl = pttl(&mut conn, &k).await;
        // The key expires at `exp` (give or take the SET's transit on loopback).
        let to_exp = (exp * 1000) as i64 - before as i64;
        assert!(
            ttl > 0 && ttl <= to_exp + 50,
            "PTTL {ttl} ms, exp in {to_exp} ms"
        );
        assert!(ttl <= 2000, "PTTL {ttl} ms");

        // Once `exp` has passed, B does not get it from Redis: it asks the IdP, which says it
        // expired.
        while now() <= exp {
            sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            get(&mut conn, &k).await,
            None,
            "the key expired with the token"
        );
        assert_eq!(verify(&b, "short").await, Err(RejectionKind::InvalidToken));
        assert_eq!(idp.count("short"), 2);

        // An entry claiming an active token past its `exp` (tampered, or a clock skew) is
        // re-checked and rejected, whatever its Redis TTL.
        let stale = json!({"active": true, "sub": "mallory", "iss": ISS,
                           "aud": "api://orders", "exp": now() - 10});
        set(
            &mut conn,
            &key(idp_addr, prefix, "stale"),
            &entry(stale, now()),
            Some(60_000),
        )
        .await;
        assert_eq!(verify(&b, "stale").await, Err(RejectionKind::InvalidToken));
        assert_eq!(idp.count("stale"), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redis_entry_bounds_the_local_cache_of_the_replica_that_reads_it() {
        let Some(redis) = RedisServer::start() else {
            return;
        };
        let mut conn = connect(&redis).await;
        let (idp_addr, idp) = start_idp().await;
        let prefix = "t3:";
        let b = replica(idp_addr, &redis.url(), prefix);
        // An entry with a second left: B serves it, then (its local copy gone with it) asks the
        // IdP, although its own cache_ttl is 30 s.
        let planted = json!({"active": true, "sub": "planted", "iss": ISS,
                             "aud": "api://orders", "exp": now() + 3600});
        set(
            &mut conn,
            &key(idp_addr, prefix, "brief"),
            &entry(planted, now()),
            Some(1000),
        )
        .await;
        assert_eq!(verify(&b, "brief").await, Ok("planted".into()));
        assert_eq!(idp.count("brief"), 0);
        sleep(Duration::from_millis(1200)).await;
        assert_eq!(verify(&b, "brief").await, Ok("user-of-brief".into()));
        assert_eq!(idp.count("brief"), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unusable_redis_entries_are_ignored_and_replaced() {
        let Some(redis) = RedisServer::start() else {
            return;
        };
        let mut conn = connect(&redis).await;
        let (idp_addr, idp) = start_idp().await;
        let prefix = "t4:";
        let a = replica(idp_addr, &redis.url(), prefix);
        let mallory = json!({"active": true, "sub": "mallory", "iss": ISS, "aud": "api://orders"});
        let huge = json!({"active": true, "sub": "mallory", "iss": ISS, "aud": "api://orders",
                          "pad": "x".repeat(70 * 1024)});
        let cases: [(&str, Vec<u8>, Option<u64>); 8] = [
            ("not-json", b"not json {".to_vec(), Some(60_000)),
            ("array", b"[1, 2, 3]".to_vec(), Some(60_000)),
            ("empty", Vec::new(), Some(60_000)),
            // Never written by a gatekeeper: an entry without expiry is not trusted.
            ("persistent", entry(mallory.clone(), now()), None),
            ("huge", entry(huge, now()), Some(60_000)),
            // Without a fetch time, an entry's age is unknown.
            ("undated", mallory.to_string().into_bytes(), Some(60_000)),
            // Fetched in the future (beyond clock skew): not believed.
            ("future", entry(mallory.clone(), now() + 3600), Some(60_000)),
            // Older than this replica's cache_ttl (30 s), whatever its Redis TTL.
            ("old", entry(mallory, now() - 31), Some(60_000)),
        ];
        for (token, value, px) in cases {
            let k = key(idp_addr, prefix, token);
            set(&mut conn, &k, &value, px).await;
            assert_eq!(
                verify(&a, token).await,
                Ok(format!("user-of-{token}")),
                "{token}: the IdP decides"
            );
            assert_eq!(idp.count(token), 1, "{token}");
            // The IdP's answer replaces the unusable entry.
            let deadline = Instant::now() + BOUND;
            while get(&mut conn, &k).await.as_deref() == Some(&value[..]) {
                assert!(Instant::now() < deadline, "{token}: never replaced");
                sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(
                stored(&mut conn, &k).await["sub"],
                format!("user-of-{token}")
            );
            assert!(pttl(&mut conn, &k).await > 0, "{token}");
        }

        // A key of another type (a Redis error): still answered by the IdP.
        let k = key(idp_addr, prefix, "hash");
        redis::cmd("HSET")
            .arg(&k)
            .arg("f")
            .arg("v")
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        assert_eq!(verify(&a, "hash").await, Ok("user-of-hash".into()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_killed_never_fails_nor_stalls_requests_and_sharing_resumes_after_restart() {
        let Some(mut redis) = RedisServer::start() else {
            return;
        };
        let (idp_addr, idp) = start_idp().await;
        let prefix = "t5:";
        let (a, b) = (
            replica(idp_addr, &redis.url(), prefix),
            replica(idp_addr, &redis.url(), prefix),
        );
        let mut conn = connect(&redis).await;
        assert_eq!(verify(&a, "before").await, Ok("user-of-before".into()));
        stored(&mut conn, &key(idp_addr, prefix, "before")).await;
        assert_eq!(verify(&b, "before").await, Ok("user-of-before".into()));
        assert_eq!(idp.count("before"), 1);

        redis.kill();
        // Both replicas keep answering, through the IdP, promptly (each call is bounded by
        // NO_STALL in `verify`); no 503. Spread over more than one back-off, so reconnection
        // attempts to the dead Redis happen too.
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_millis(700) || n < 5 {
            let token = format!("during-{n}");
            assert_eq!(verify(&a, &token).await, Ok(format!("user-of-{token}")));
            assert_eq!(verify(&b, &token).await, Ok(format!("user-of-{token}")));
            assert_eq!(
                idp.count(&token),
                2,
                "nothing is shared while Redis is down"
            );
            n += 1;
            sleep(Duration::from_millis(50)).await;
        }
        // What each had cached locally still serves.
        assert_eq!(verify(&a, "before").await, Ok("user-of-before".into()));
        assert_eq!(verify(&b, "before").await, Ok("user-of-before".into()));
        assert_eq!(idp.count("before"), 1);

        // After the restart (empty: no persistence) sharing resumes by itself: after its
        // back-off A reconnects and writes again, and B reads it.
        redis.restart();
        let mut conn = connect(&redis).await;
        let deadline = Instant::now() + BOUND;
        for attempt in 1.. {
            assert!(Instant::now() < deadline, "sharing never resumed");
            let token = format!("after-{attempt}");
            assert_eq!(verify(&a, &token).await, Ok(format!("user-of-{token}")));
            // A may still be backing off (then it writes nothing), and so may B (then it asks
            // the IdP itself): try again with the next token.
            let written = Instant::now() + Duration::from_millis(300);
            while get(&mut conn, &key(idp_addr, prefix, &token))
                .await
                .is_none()
                && Instant::now() < written
            {
                sleep(Duration::from_millis(5)).await;
            }
            if get(&mut conn, &key(idp_addr, prefix, &token))
                .await
                .is_none()
            {
                continue;
            }
            assert_eq!(verify(&b, &token).await, Ok(format!("user-of-{token}")));
            if idp.count(&token) == 1 {
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_redis_costs_one_timeout_per_back_off() {
        // Accepts connections and never answers: every operation would hang.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        let (idp_addr, idp) = start_idp().await;
        let silent = RedisIntrospectionCache::builder(format!("redis://{addr}/"))
            .timeout(Duration::from_millis(250))
            .backoff(Duration::from_secs(3))
            .build()
            .unwrap();
        let a = IntrospectionAuthenticator::new(
            config(idp_addr, "api://orders").shared_cache(silent.clone()),
        )
        .unwrap();

        let started = Instant::now();
        assert_eq!(verify(&a, "s-0").await, Ok("user-of-s-0".into()));
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "waited for Redis up to its timeout"
        );
        // Within the back-off, Redis is not tried again: no new connection, no waiting.
        for i in 1..5 {
            let token = format!("s-{i}");
            assert_eq!(verify(&a, &token).await, Ok(format!("user-of-{token}")));
            assert_eq!(idp.count(&token), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection attempt");
        // The trait reports it too.
        assert!(matches!(
            silent.get("00").await,
            Err(tower_gatekeeper::authenticate::SharedCacheError::BackingOff)
        ));
        // After the back-off, the next use tries once more.
        sleep(Duration::from_secs(3)).await;
        assert_eq!(verify(&a, "s-5").await, Ok("user-of-s-5".into()));
        let deadline = Instant::now() + BOUND;
        while accepted.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "never reconnected");
            sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn authorization_servers_sharing_a_redis_never_read_each_others_answers() {
        let Some(redis) = RedisServer::start() else {
            return;
        };
        let mut conn = connect(&redis).await;
        let (idp_addr, idp) = start_idp().await;
        let (other_addr, other) = start_idp().await;
        other.inactive_all.store(true, Ordering::SeqCst);
        let prefix = "t6:";
        let a = replica(idp_addr, &redis.url(), prefix);
        let b = replica(other_addr, &redis.url(), prefix);
        assert_eq!(verify(&a, "cross").await, Ok("user-of-cross".into()));
        stored(&mut conn, &key(idp_addr, prefix, "cross")).await;
        // B's authorization server never issued it: B asks its own, which says inactive.
        assert_eq!(verify(&b, "cross").await, Err(RejectionKind::InvalidToken));
        assert_eq!(other.count("cross"), 1);
        assert_ne!(a.shared_cache_key("cross"), b.shared_cache_key("cross"));
        // The same server as another client is another cache too.
        let c = IntrospectionAuthenticator::new(
            IntrospectionConfig::new(
                format!("http://{idp_addr}/introspect"),
                ClientAuth::Post {
                    client_id: "another-client".into(),
                    client_secret: "pw".into(),
                },
            )
            .issuer(ISS)
            .audiences(["api://orders"])
            .shared_cache(cache(&redis.url(), prefix)),
        )
        .unwrap();
        assert_eq!(verify(&c, "cross").await, Ok("user-of-cross".into()));
        assert_eq!(idp.count("cross"), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_keeps_an_entry_no_longer_than_its_own_cache_ttl() {
        let Some(redis) = RedisServer::start() else {
            return;
        };
        let mut conn = connect(&redis).await;
        let (idp_addr, idp) = start_idp().await;
        let prefix = "t7:";
        let with_ttl = |ttl: Duration| {
            IntrospectionAuthenticator::new(
                config(idp_addr, "api://orders")
                    .cache_ttl(ttl)
                    .shared_cache(cache(&redis.url(), prefix)),
            )
            .unwrap()
        };
        // A writes with an hour of TTL; B allows one second.
        let (a, b) = (
            with_ttl(Duration::from_secs(3600)),
            with_ttl(Duration::from_secs(1)),
        );
        assert_eq!(verify(&a, "aged").await, Ok("user-of-aged".into()));
        let k = key(idp_addr, prefix, "aged");
        stored(&mut conn, &k).await;
        assert!(pttl(&mut conn, &k).await > 3_000_000);
        assert_eq!(verify(&b, "aged").await, Ok("user-of-aged".into()));
        assert_eq!(idp.count("aged"), 1, "B read A's fresh entry");
        // Past B's cache_ttl since the fetch, B asks the IdP itself (its local copy expired
        // with it, and the Redis entry is too old for it), although Redis keeps the entry.
        sleep(Duration::from_millis(2100)).await;
        assert_eq!(verify(&b, "aged").await, Ok("user-of-aged".into()));
        assert_eq!(idp.count("aged"), 2);
    }

    #[tokio::test]
    async fn configuration_mistakes_are_named_and_the_url_is_not_shown() {
        let err = RedisIntrospectionCache::builder("not a url")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("Redis URL"), "{err}");
        // TLS URLs need the `redis-tls` feature.
        let tls = RedisIntrospectionCache::builder("rediss://127.0.0.1:6379/").build();
        if cfg!(feature = "redis-tls") {
            tls.unwrap();
        } else {
            let err = tls.unwrap_err();
            assert!(err.to_string().contains("TLS"), "{err}");
        }
        let err = RedisIntrospectionCache::builder("redis://127.0.0.1:1/")
            .prefix("")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("prefix"), "{err}");
        let err = RedisIntrospectionCache::builder("redis://127.0.0.1:1/")
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("timeout"), "{err}");

        let builder = RedisIntrospectionCache::builder("redis://:top-secret@127.0.0.1:1/");
        assert!(!format!("{builder:?}").contains("top-secret"));
        let cache = builder.build().unwrap();
        assert!(!format!("{cache:?}").contains("top-secret"));
        let auth = IntrospectionAuthenticator::new(
            IntrospectionConfig::new("http://127.0.0.1:1/i", ClientAuth::None)
                .any_audience()
                .shared_cache(cache),
        )
        .unwrap();
        assert!(!format!("{auth:?}").contains("top-secret"));
        // Building connects to nothing (no runtime needed, no Redis needed).
        assert_eq!(
            RedisIntrospectionCache::builder("redis://127.0.0.1:1/")
                .build()
                .unwrap()
                .key("ab"),
            "gatekeeper:introspection:ab"
        );
    }
}
