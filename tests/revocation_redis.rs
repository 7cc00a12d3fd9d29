//! Revocations shared through a real `redis-server`, started here on a free loopback port
//! without persistence: two replicas (separate stores, separate connections) see each
//! other's revocations within a second; Redis killed and restarted loses none; fail-closed
//! answers 503 while Redis is down.
//!
//! When `redis-server` is not installed these tests skip with a loud message, except under
//! `CI=true`, where that is a failure.
#![cfg(feature = "redis")]

#[path = "support/redis_server.rs"]
mod redis_server;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::time::{Instant, sleep, timeout};
use tower_gatekeeper::credential::RequestHead;
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::{SigningKey, StaticKeys};
use tower_gatekeeper::revocation::{
    FailMode, MemoryRevocations, RedisRevocations, Revocable, Revocation, RevocationError,
    RevocationStore, Revocations,
};
use tower_gatekeeper::{Authenticator, JwtAuthenticator, RejectionKind};

use redis_server::RedisServer;

const ISS: &str = "https://idp.example.test";
const AUD: &str = "api://orders";
/// Generous bound for what takes milliseconds; only reached when a test fails.
const BOUND: Duration = Duration::from_secs(30);
/// The contract: a revocation written by one replica is enforced by all within this.
const PROPAGATION: Duration = Duration::from_secs(1);
const FAR: u64 = 4_102_444_800;

// ---------------------------------------------------------------------------------------------
// Replicas
// ---------------------------------------------------------------------------------------------

type Replica = Revocable<JwtAuthenticator<StaticKeys>, RedisRevocations>;

fn store(redis: &RedisServer, prefix: &str, mode: FailMode) -> RedisRevocations {
    RedisRevocations::builder(redis.url())
        .prefix(prefix)
        .fail_mode(mode)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

fn replica(signer: &SigningKey, store: RedisRevocations) -> Replica {
    let keys = StaticKeys::new([signer.verifying_key().clone()]);
    let validation = Validation::new(ISS).audiences([AUD]);
    Revocable::new(JwtAuthenticator::new(keys, validation).unwrap(), store)
}

async fn ready(store: &RedisRevocations) {
    timeout(BOUND, store.ready())
        .await
        .expect("store synchronised with Redis");
}

fn token(signer: &SigningKey, jti: &str, sub: &str, iat: u64) -> String {
    signer
        .sign(&json!({
            "iss": ISS, "aud": AUD, "sub": sub, "jti": jti, "iat": iat, "exp": FAR,
        }))
        .unwrap()
}

/// What a request with `token` gets from `replica`: `Ok(())` or the rejection kind.
async fn outcome(replica: &impl Authenticator, token: &str) -> Result<(), RejectionKind> {
    let req = http::Request::builder()
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let fut = replica
        .authenticate(&RequestHead::of(&req))
        .map_err(|r| r.kind())?;
    fut.await.map(drop).map_err(|r| r.kind())
}

/// Polls until `replica` answers `want` for `token`; returns how long it took. Fails after
/// [`BOUND`].
async fn until(
    replica: &impl Authenticator,
    token: &str,
    want: Result<(), RejectionKind>,
) -> Duration {
    let start = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        if outcome(replica, token).await == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < BOUND,
            "still not {want:?} after {attempts} attempts"
        );
        sleep(Duration::from_millis(5)).await;
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn far() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(FAR)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_written_by_one_replica_is_enforced_by_both_within_a_second() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let signer = SigningKey::generate_ed25519().unwrap().with_kid("k1");
    let (store_a, store_b) = (
        store(&redis, "t1", FailMode::Open),
        store(&redis, "t1", FailMode::Open),
    );
    ready(&store_a).await;
    ready(&store_b).await;
    let (a, b) = (
        replica(&signer, store_a.clone()),
        replica(&signer, store_b.clone()),
    );

    let t1 = token(&signer, "jti-1", "user-1", now());
    let other = token(&signer, "jti-2", "user-1", now());
    assert_eq!(outcome(&a, &t1).await, Ok(()));
    assert_eq!(outcome(&b, &t1).await, Ok(()));

    // Revoke by jti through A: A at once, B within a second.
    store_a
        .revoke(Revocation::token("jti-1", far()))
        .await
        .unwrap();
    assert_eq!(outcome(&a, &t1).await, Err(RejectionKind::InvalidToken));
    let took = until(&b, &t1, Err(RejectionKind::InvalidToken)).await;
    assert!(took < PROPAGATION, "replica B took {took:?}");
    assert_eq!(outcome(&b, &other).await, Ok(()), "only jti-1 is revoked");

    // "Log out everywhere" through B: every token of user-2 issued before now.
    let old = token(&signer, "jti-3", "user-2", now() - 10);
    assert_eq!(outcome(&a, &old).await, Ok(()));
    store_b
        .revoke(Revocation::subject("user-2", SystemTime::now()))
        .await
        .unwrap();
    let took = until(&a, &old, Err(RejectionKind::InvalidToken)).await;
    assert!(took < PROPAGATION, "replica A took {took:?}");
    assert_eq!(outcome(&b, &old).await, Err(RejectionKind::InvalidToken));
    // A token issued after the cut-off is accepted by both.
    let fresh = token(&signer, "jti-4", "user-2", now() + 2);
    assert_eq!(outcome(&a, &fresh).await, Ok(()));
    assert_eq!(outcome(&b, &fresh).await, Ok(()));

    // A third replica that starts later gets everything from Redis.
    let store_c = store(&redis, "t1", FailMode::Open);
    ready(&store_c).await;
    let c = replica(&signer, store_c);
    assert_eq!(outcome(&c, &t1).await, Err(RejectionKind::InvalidToken));
    assert_eq!(outcome(&c, &old).await, Err(RejectionKind::InvalidToken));
    assert_eq!(outcome(&c, &fresh).await, Ok(()));

    // Another prefix is another set.
    let store_d = store(&redis, "other", FailMode::Open);
    ready(&store_d).await;
    assert_eq!(outcome(&replica(&signer, store_d), &t1).await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_loses_no_revocation() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let signer = SigningKey::generate_ed25519().unwrap().with_kid("k1");
    let (store_a, store_b) = (
        store(&redis, "t2", FailMode::Open),
        store(&redis, "t2", FailMode::Open),
    );
    ready(&store_a).await;
    ready(&store_b).await;
    let (a, b) = (
        replica(&signer, store_a.clone()),
        replica(&signer, store_b.clone()),
    );
    let before = token(&signer, "before", "u", now());
    let during = token(&signer, "during", "u", now());

    store_a
        .revoke(Revocation::token("before", far()))
        .await
        .unwrap();
    until(&b, &before, Err(RejectionKind::InvalidToken)).await;

    // Redis goes away (without persistence: it comes back empty).
    redis.kill();
    let deadline = Instant::now() + BOUND;
    while store_a.is_synced() || store_b.is_synced() {
        assert!(Instant::now() < deadline, "stores never noticed Redis left");
        sleep(Duration::from_millis(5)).await;
    }
    // The last known set is still enforced (fail open: the rest is served).
    assert_eq!(outcome(&a, &before).await, Err(RejectionKind::InvalidToken));
    assert_eq!(outcome(&b, &before).await, Err(RejectionKind::InvalidToken));
    assert_eq!(outcome(&b, &during).await, Ok(()));
    // A revocation written now is enforced here at once, and reported as not shared yet.
    let err = store_a
        .revoke(Revocation::token("during", far()))
        .await
        .unwrap_err();
    assert!(matches!(err, RevocationError::Unavailable(_)), "{err:?}");
    assert_eq!(outcome(&a, &during).await, Err(RejectionKind::InvalidToken));

    redis.restart();
    // Both catch up: B learns "during" from A's write-back; nothing was lost.
    until(&b, &during, Err(RejectionKind::InvalidToken)).await;
    assert_eq!(outcome(&b, &before).await, Err(RejectionKind::InvalidToken));
    timeout(BOUND, store_a.ready()).await.unwrap();
    assert_eq!(outcome(&a, &before).await, Err(RejectionKind::InvalidToken));
    assert_eq!(outcome(&a, &during).await, Err(RejectionKind::InvalidToken));

    // Redis itself holds both again: a replica started now knows them.
    let store_c = store(&redis, "t2", FailMode::Open);
    ready(&store_c).await;
    let c = replica(&signer, store_c);
    assert_eq!(outcome(&c, &before).await, Err(RejectionKind::InvalidToken));
    assert_eq!(outcome(&c, &during).await, Err(RejectionKind::InvalidToken));

    // And propagation works again after the restart.
    let after = token(&signer, "after", "u", now());
    assert_eq!(outcome(&a, &after).await, Ok(()));
    store_b
        .revoke(Revocation::token("after", far()))
        .await
        .unwrap();
    let took = until(&a, &after, Err(RejectionKind::InvalidToken)).await;
    assert!(took < PROPAGATION, "replica A took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_answers_503_while_redis_is_down() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let signer = SigningKey::generate_ed25519().unwrap().with_kid("k1");
    let closed = store(&redis, "t3", FailMode::Closed);
    let open = store(&redis, "t3", FailMode::Open);
    let (c, o) = (
        replica(&signer, closed.clone()),
        replica(&signer, open.clone()),
    );
    let t = token(&signer, "x", "u", now());
    ready(&closed).await;
    ready(&open).await;
    assert_eq!(outcome(&c, &t).await, Ok(()));

    redis.kill();
    until(&c, &t, Err(RejectionKind::KeysUnavailable)).await;
    assert_eq!(outcome(&o, &t).await, Ok(()), "fail open keeps serving");

    redis.restart();
    until(&c, &t, Ok(())).await;
}

/// A token of `sub` with `jti` that expired `ago` seconds ago.
fn expired_token(signer: &SigningKey, jti: &str, ago: u64) -> (String, u64) {
    let exp = now() - ago;
    let token = signer
        .sign(&json!({"iss": ISS, "aud": AUD, "sub": "u", "jti": jti, "iat": exp - 60, "exp": exp}))
        .unwrap();
    (token, exp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_within_the_exp_leeway_stays_revoked_everywhere() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let signer = SigningKey::generate_ed25519().unwrap().with_kid("k1");
    // Short resyncs, so that several happen (each prunes, locally and in Redis).
    let quick = |prefix| {
        RedisRevocations::builder(redis.url())
            .prefix(prefix)
            .resync_interval(Duration::from_millis(200))
            .build()
            .unwrap()
    };
    let (sa, sb) = (quick("t5"), quick("t5"));
    let (a, b) = (replica(&signer, sa.clone()), replica(&signer, sb.clone()));
    ready(&sa).await;
    ready(&sb).await;
    // Expired five seconds ago: the verifiers (30 s leeway) still accept it.
    let (t, exp) = expired_token(&signer, "late", 5);
    assert_eq!(outcome(&a, &t).await, Ok(()));
    sa.revoke(Revocation::token(
        "late",
        UNIX_EPOCH + Duration::from_secs(exp),
    ))
    .await
    .unwrap();
    assert_eq!(outcome(&a, &t).await, Err(RejectionKind::InvalidToken));
    // Published although past `exp`: the other replica hears of it...
    let took = until(&b, &t, Err(RejectionKind::InvalidToken)).await;
    assert!(took < PROPAGATION, "replica B took {took:?}");
    // ...and neither forgets it on prune or resync while a verifier could accept the token.
    sleep(Duration::from_millis(700)).await;
    sa.prune();
    sb.prune();
    assert_eq!(outcome(&a, &t).await, Err(RejectionKind::InvalidToken));
    assert_eq!(outcome(&b, &t).await, Err(RejectionKind::InvalidToken));
    // Redis keeps it too, and a replica that starts now loads it.
    let sc = quick("t5");
    let c = replica(&signer, sc.clone());
    ready(&sc).await;
    assert_eq!(outcome(&c, &t).await, Err(RejectionKind::InvalidToken));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_notices_a_silent_redis_within_seconds() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let signer = SigningKey::generate_ed25519().unwrap().with_kid("k1");
    // A resync interval far beyond the test: only the heartbeat can notice.
    let closed = RedisRevocations::builder(redis.url())
        .prefix("t6")
        .fail_mode(FailMode::Closed)
        .timeout(Duration::from_millis(500))
        .heartbeat_interval(Duration::from_millis(250))
        .resync_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let c = replica(&signer, closed.clone());
    let t = token(&signer, "x", "u", now());
    ready(&closed).await;
    assert_eq!(outcome(&c, &t).await, Ok(()));

    // Stopped, not killed: every connection stays open and nothing answers.
    redis.pause();
    let took = until(&c, &t, Err(RejectionKind::KeysUnavailable)).await;
    assert!(
        took < Duration::from_secs(3),
        "a silent outage took {took:?} to notice"
    );
    assert!(!closed.is_synced());
    redis.resume();
    until(&c, &t, Ok(())).await;
    assert!(closed.is_synced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_writer_is_bounded() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let zadd = |key: &str, score: f64, member: Vec<u8>| {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(key).arg(score).arg(member);
        cmd
    };
    // A subject locked out for ever, an 8 MiB jti, and far more entries than allowed.
    zadd("t7:subjects", 1.8e19, b"victim".to_vec())
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    zadd("t7:tokens", 4e9, vec![b'j'; 8 << 20])
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    for i in 0..500 {
        zadd("t7:tokens", FAR as f64, format!("jti-{i}").into_bytes())
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
    let store = RedisRevocations::builder(redis.url())
        .prefix("t7")
        .max_entries(100)
        .build()
        .unwrap();
    ready(&store).await;
    let shown = format!("{store:?}");
    // At most 100 (the over-long one, read among the first 100, was dropped).
    assert!(
        shown.contains("tokens: 99,") || shown.contains("tokens: 100,"),
        "{shown}"
    );
    // The over-long member is gone from Redis.
    let long_ones: u64 = redis::cmd("ZCOUNT")
        .arg("t7:tokens")
        .arg(3.9e9)
        .arg(4.1e9)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(long_ones, 0);
    // The lock-out is clamped: tokens issued after the skew bound are accepted.
    use tower_gatekeeper::revocation::{MAX_CUTOFF_SKEW, RevocationStatus, TokenFacts};
    let later = now() + MAX_CUTOFF_SKEW.as_secs() + 60;
    assert_eq!(
        store.check(&TokenFacts::new(None, Some("victim"), Some(later))),
        RevocationStatus::Active
    );
    assert_eq!(
        store.check(&TokenFacts::new(None, Some("victim"), Some(now()))),
        RevocationStatus::Revoked
    );
    // A local revocation beyond the bounds is refused, loudly.
    let err = store
        .revoke(Revocation::token("k".repeat(2048), far()))
        .await
        .unwrap_err();
    assert!(matches!(err, RevocationError::Refused(_)), "{err}");
    let mut refused = None;
    for i in 0..2 {
        if let Err(err) = store
            .revoke(Revocation::token(format!("more-{i}"), far()))
            .await
        {
            refused = Some(err);
            break;
        }
    }
    let err = refused.expect("the set is full");
    assert!(matches!(err, RevocationError::Refused(_)), "{err}");
}

#[tokio::test]
async fn configuration_mistakes_are_named() {
    let err = RedisRevocations::builder("not a url").build().unwrap_err();
    assert!(err.to_string().contains("Redis URL"), "{err}");
    let err = RedisRevocations::builder("redis://127.0.0.1:1/")
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("timeout"), "{err}");
    let err = RedisRevocations::builder("redis://127.0.0.1:1/")
        .prefix("")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("prefix"), "{err}");
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    let err = RedisRevocations::builder("redis://127.0.0.1:1/")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_either_store_shares_through_redis_or_keeps_to_itself_in_memory() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let signer = SigningKey::generate_ed25519().unwrap().with_kid("k1");
    let with = |store: Revocations| {
        let keys = StaticKeys::new([signer.verifying_key().clone()]);
        let validation = Validation::new(ISS).audiences([AUD]);
        Revocable::new(JwtAuthenticator::new(keys, validation).unwrap(), store)
    };
    let shared = Revocations::from(store(&redis, "either", FailMode::Open));
    let plain = store(&redis, "either", FailMode::Open);
    let memory = Revocations::from(MemoryRevocations::new());
    timeout(BOUND, shared.ready())
        .await
        .expect("store synchronised with Redis");
    ready(&plain).await;
    assert!(shared.is_synced());
    let (a, b, local) = (
        with(shared.clone()),
        replica(&signer, plain.clone()),
        with(memory.clone()),
    );

    // Revoked through the enum: shared with the other replica, not with the memory store.
    let t1 = token(&signer, "either-1", "user-1", now());
    shared
        .revoke(Revocation::token("either-1", far()))
        .await
        .unwrap();
    assert_eq!(outcome(&a, &t1).await, Err(RejectionKind::InvalidToken));
    assert!(until(&b, &t1, Err(RejectionKind::InvalidToken)).await <= PROPAGATION);
    assert_eq!(outcome(&local, &t1).await, Ok(()));

    // Revoked by the other replica: seen through the enum within a second.
    let t2 = token(&signer, "either-2", "user-2", now());
    assert_eq!(outcome(&a, &t2).await, Ok(()));
    plain
        .revoke(Revocation::token("either-2", far()))
        .await
        .unwrap();
    assert!(until(&a, &t2, Err(RejectionKind::InvalidToken)).await <= PROPAGATION);

    // Revoked in memory: this process only.
    let t3 = token(&signer, "either-3", "user-3", now());
    memory
        .revoke(Revocation::token("either-3", far()))
        .await
        .unwrap();
    assert_eq!(outcome(&local, &t3).await, Err(RejectionKind::InvalidToken));
    assert_eq!(outcome(&a, &t3).await, Ok(()));
}
