//! Selection of jsonwebtoken's crypto backend, without its process-wide default.
//!
//! jsonwebtoken 11 picks a process-level `CryptoProvider` from its features and panics when
//! both or neither are enabled. We never rely on that default: every signature is checked
//! through the provider chosen here, at compile time, from our own features. With both
//! `aws-lc-rs` and `rust-crypto` enabled (`--all-features`), aws-lc-rs is used.

use jsonwebtoken::crypto::CryptoProvider;

#[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
compile_error!(
    "tower-gatekeeper needs a crypto backend: enable the `aws-lc-rs` (default) or the `rust-crypto` feature"
);

/// The provider every verification and signature of this crate goes through.
pub(crate) fn provider() -> &'static CryptoProvider {
    #[cfg(feature = "aws-lc-rs")]
    {
        &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER
    }
    #[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
    {
        &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER
    }
}

/// The name of the compiled-in backend, for logs and the README's figures.
pub const BACKEND: &str = if cfg!(feature = "aws-lc-rs") {
    "aws-lc-rs"
} else {
    "rust-crypto"
};

/// Fills `buf` with random bytes from the operating system.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(buf)
}
