//! Stateless server nonces (RFC 9449 §8, §9): an HMAC of a time window under a secret that
//! every replica shares, so any replica can issue and check them without storage.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::clock::Clock;
use crate::config_error::ConfigError;

/// The shortest secret accepted (bytes).
pub const MIN_NONCE_SECRET_BYTES: usize = 32;

/// Issues and checks DPoP server nonces without state.
///
/// A nonce is `base64url(window ‖ HMAC-SHA256(secret, "dpop-nonce" ‖ window)[..16])`, where
/// `window` is the number of whole [`period`](Self::period)s since the Unix epoch (8 bytes,
/// big-endian). A nonce is accepted during its own window and the next one, so it lives
/// between one and two periods (default 5 minutes: 5 to 10 minutes); then the client is
/// told `use_dpop_nonce` with a fresh one. Replicas that share the secret accept each
/// other's nonces; changing the secret invalidates every nonce at once (clients retry once).
///
/// ```
/// use tower_gatekeeper::dpop::NonceSource;
///
/// let nonces = NonceSource::new(&[7u8; 32]).unwrap();
/// let nonce = nonces.issue();
/// assert!(nonces.check(&nonce));
/// assert!(!nonces.check("made-up"));
/// ```
#[derive(Clone)]
pub struct NonceSource {
    key: Arc<Hmac<Sha256>>,
    period: Duration,
    clock: Clock,
}

impl fmt::Debug for NonceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceSource")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl NonceSource {
    /// Nonces keyed by `secret` (at least 32 bytes), rotating every 5 minutes.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the secret is shorter than 32 bytes.
    pub fn new(secret: &[u8]) -> Result<Self, ConfigError> {
        if secret.len() < MIN_NONCE_SECRET_BYTES {
            return Err(ConfigError::invalid(format!(
                "the DPoP nonce secret must be at least {MIN_NONCE_SECRET_BYTES} bytes (it has {})",
                secret.len()
            )));
        }
        let key = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|_| ConfigError::invalid("the DPoP nonce secret is unusable"))?;
        Ok(NonceSource {
            key: Arc::new(key),
            period: Duration::from_secs(300),
            clock: Clock::system(),
        })
    }

    /// How often nonces rotate (default 5 minutes; at least one second).
    #[must_use]
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period.max(Duration::from_secs(1));
        self
    }

    /// The clock windows are read from (tests).
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn window(&self) -> u64 {
        let now = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        now / self.period.as_secs().max(1)
    }

    fn mac(&self, window: u64) -> [u8; 16] {
        let mut mac = (*self.key).clone();
        mac.update(b"dpop-nonce");
        mac.update(&window.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// A nonce for the current window.
    pub fn issue(&self) -> String {
        let window = self.window();
        let mut raw = [0u8; 24];
        raw[..8].copy_from_slice(&window.to_be_bytes());
        raw[8..].copy_from_slice(&self.mac(window));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `nonce` was issued with this secret in the current or the previous window.
    pub fn check(&self, nonce: &str) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        if raw.len() != 24 {
            return false;
        }
        let mut window = [0u8; 8];
        window.copy_from_slice(&raw[..8]);
        let window = u64::from_be_bytes(window);
        let current = self.window();
        if window != current && window.saturating_add(1) != current {
            return false;
        }
        bool::from(raw[8..].ct_eq(&self.mac(window)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn nonces_rotate_and_expire() {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let clock_now = Arc::clone(&now);
        let clock = Clock::from_fn(move || {
            SystemTime::UNIX_EPOCH + Duration::from_secs(clock_now.load(Ordering::Relaxed))
        });
        let nonces = NonceSource::new(&[1u8; 32]).unwrap().clock(clock);
        let first = nonces.issue();
        assert!(nonces.check(&first));
        now.fetch_add(300, Ordering::Relaxed);
        assert!(nonces.check(&first), "still good in the next window");
        assert_ne!(nonces.issue(), first, "rotated");
        now.fetch_add(300, Ordering::Relaxed);
        assert!(!nonces.check(&first), "expired after two windows");
        assert!(!NonceSource::new(&[2u8; 32]).unwrap().check(&nonces.issue()));
        assert!(NonceSource::new(&[0u8; 31]).is_err());
    }
}
