//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`).
//!
//! With the feature on, the layers and key sources record the series below into whatever
//! recorder the application installed (for Prometheus, `metrics-exporter-prometheus`; the
//! gateway example serves them on its admin listener). Without a recorder, or without the
//! feature, recording costs nothing.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `gatekeeper_decisions_total` | counter | `stage` (`authenticate`, `authorize`), `outcome` (`allow`, `deny`), `reason` | one per decision; `reason` is a fixed text (the rejection's description), so its cardinality is bounded |
//! | `gatekeeper_decision_duration_seconds` | histogram | `stage`, `outcome` | how long deciding took (key fetches included) |
//! | `gatekeeper_key_fetches_total` | counter | `source`, `result` (`ok`, `error`) | remote JWKS / discovery fetches |
//! | `gatekeeper_keys_last_success_timestamp_seconds` | gauge | `source` | Unix time of the last good fetch: key staleness is `time() - this` |
//! | `gatekeeper_keys_stale` | gauge | `source` | 1 while keys were dropped for being past their maximum staleness (answering 503), else 0 |
//! | `gatekeeper_cache_lookups_total` | counter | `result` (`hit`, `miss`) | verification cache lookups, when a cache reports them; hit ratio = hits / all |
//!
//! `source` is the key source's URL as configured (no query secrets belong there).

use std::time::Duration;
#[cfg(feature = "metrics")]
use std::time::{SystemTime, UNIX_EPOCH};

use crate::outcome::{Outcome, Stage};

/// Name of the decisions counter.
pub const DECISIONS_TOTAL: &str = "gatekeeper_decisions_total";
/// Name of the decision latency histogram.
pub const DECISION_DURATION_SECONDS: &str = "gatekeeper_decision_duration_seconds";
/// Name of the key fetch counter.
pub const KEY_FETCHES_TOTAL: &str = "gatekeeper_key_fetches_total";
/// Name of the last-good-fetch gauge.
pub const KEYS_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "gatekeeper_keys_last_success_timestamp_seconds";
/// Name of the stale-keys gauge.
pub const KEYS_STALE: &str = "gatekeeper_keys_stale";
/// Name of the cache lookup counter.
pub const CACHE_LOOKUPS_TOTAL: &str = "gatekeeper_cache_lookups_total";

/// One decision.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn decision(stage: Stage, outcome: Outcome, reason: &str, latency: Duration) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!(
            DECISIONS_TOTAL,
            "stage" => stage.as_str(),
            "outcome" => outcome.as_str(),
            "reason" => reason.to_owned(),
        )
        .increment(1);
        metrics::histogram!(
            DECISION_DURATION_SECONDS,
            "stage" => stage.as_str(),
            "outcome" => outcome.as_str(),
        )
        .record(latency.as_secs_f64());
    }
}

/// One remote key fetch finished (`ok`: keys installed).
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
#[cfg_attr(not(feature = "remote"), allow(dead_code))]
pub(crate) fn key_fetch(source: &str, ok: bool) {
    #[cfg(feature = "metrics")]
    {
        let result = if ok { "ok" } else { "error" };
        metrics::counter!(KEY_FETCHES_TOTAL, "source" => source.to_owned(), "result" => result)
            .increment(1);
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            metrics::gauge!(KEYS_LAST_SUCCESS_TIMESTAMP_SECONDS, "source" => source.to_owned())
                .set(now);
            metrics::gauge!(KEYS_STALE, "source" => source.to_owned()).set(0.0);
        }
    }
}

/// A source's keys were dropped for staleness (`true`) or are fresh again.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
#[cfg_attr(not(feature = "remote"), allow(dead_code))]
pub(crate) fn keys_stale(source: &str, stale: bool) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(KEYS_STALE, "source" => source.to_owned()).set(if stale { 1.0 } else { 0.0 });
}

/// Counts one lookup of the verified-token cache (`authenticate::cache`).
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn cache_lookup(hit: bool) {
    #[cfg(feature = "metrics")]
    metrics::counter!(CACHE_LOOKUPS_TOTAL, "result" => if hit { "hit" } else { "miss" })
        .increment(1);
}
