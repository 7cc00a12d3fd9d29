//! The admin token (`admin_token_sha256`, `admin_token_file`) and `log_format`.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Parses `log_format`'s value.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "`log_format` {other:?} is not a log format; use \"text\" or \"json\""
            )),
        }
    }
}

/// The `log_format` of the configuration file at `path`, read before the file is loaded so
/// that the first log line has the configured format. [`LogFormat::Text`] when the file or
/// the key cannot be read (loading the file then reports why).
pub fn log_format_of(path: &Path) -> LogFormat {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| toml::from_str::<toml::Table>(&text).ok())
        .and_then(|table| {
            table
                .get("log_format")
                .and_then(toml::Value::as_str)
                .and_then(|text| LogFormat::parse(text).ok())
        })
        .unwrap_or_default()
}

/// The SHA-256 of the admin token: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AdminToken([u8; 32]);

impl AdminToken {
    /// Whether `presented` hashes to the configured value (compared in constant time).
    pub(crate) fn matches(&self, presented: &str) -> bool {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(hash.ct_eq(&self.0))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<sha-256>)")
    }
}

/// The checked admin and logging settings.
#[derive(Debug, Clone, Default)]
pub(crate) struct AdminSettings {
    /// `None`: the admin actions (revoke, refresh, reload) are not served.
    pub(crate) token: Option<AdminToken>,
    pub(crate) log_format: LogFormat,
}

pub(crate) fn compile_admin(
    sha256: Option<String>,
    file: Option<PathBuf>,
    log_format: Option<String>,
    base: &Path,
) -> Result<AdminSettings, String> {
    let log_format = log_format
        .as_deref()
        .map(LogFormat::parse)
        .transpose()?
        .unwrap_or_default();
    let token = match (sha256, file) {
        (Some(_), Some(_)) => {
            return Err(
                "`admin_token_sha256` and `admin_token_file` are both set; set one".to_owned(),
            );
        }
        (Some(hex), None) => Some(parse_sha256(hex.trim()).ok_or_else(|| {
            "`admin_token_sha256` must be 64 hexadecimal digits: the SHA-256 of the admin token (printf %s \"$TOKEN\" | sha256sum)".to_owned()
        })?),
        (None, Some(file)) => {
            let path = base.join(&file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!("`admin_token_file` {:?}: {e}", path.display().to_string())
            })?;
            Some(parse_sha256(text.trim()).ok_or_else(|| {
                format!(
                    "`admin_token_file` {:?} must hold 64 hexadecimal digits: the SHA-256 of the admin token (printf %s \"$TOKEN\" | sha256sum), not the token",
                    path.display().to_string()
                )
            })?)
        }
        (None, None) => None,
    };
    Ok(AdminSettings { token, log_format })
}

fn parse_sha256(hex: &str) -> Option<AdminToken> {
    let hex = hex.split_whitespace().next()?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(AdminToken(out))
}
