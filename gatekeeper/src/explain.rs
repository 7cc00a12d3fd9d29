use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::load_config;

pub(crate) const EXPLAIN_USAGE: &str = "\
usage: gatekeeper explain --config FILE [--dpop PROOF --method M --url U] [TOKEN | -]

  Prints, step by step, what the gateway checks for TOKEN (header, alg, issuer, each claim,
  key, signature) and whether it would be accepted. No upstream is called; remote key
  sources are fetched. Without TOKEN, or with -, the token is read from stdin (keeps it out
  of shell history). A leading \"Bearer \" or \"DPoP \" is ignored. Then the sender-constraint
  checks: with --dpop PROOF (a DPoP proof JWT) and the request's --method and --url (absolute;
  public_origin replaces its scheme and host when set), the proof (RFC 9449) and the token's
  cnf.jkt; without, whether the token may be sent as Bearer. The proof's jti is not recorded.
  Exit status: 0 accepted, 1 rejected, 2 usage or configuration error.";

/// `gatekeeper explain ...`: returns the exit status and the report.
pub async fn explain_command(
    mut args: impl Iterator<Item = OsString>,
    stdin: impl io::Read,
) -> (u8, String) {
    let mut config = None;
    let mut token = None;
    let (mut proof, mut method, mut url) = (None, None, None);
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy().into_owned();
        let slot = match text.as_str() {
            "--dpop" => Some(&mut proof),
            "--method" => Some(&mut method),
            "--url" => Some(&mut url),
            _ => None,
        };
        if let Some(slot) = slot {
            match args.next() {
                Some(value) => *slot = Some(value.to_string_lossy().into_owned()),
                None => return (2, format!("error: {text} needs a value\n\n{EXPLAIN_USAGE}")),
            }
            continue;
        }
        match text.as_str() {
            "-h" | "--help" => return (0, EXPLAIN_USAGE.to_owned()),
            "--config" => match args.next() {
                Some(path) => config = Some(PathBuf::from(path)),
                None => {
                    return (
                        2,
                        format!("error: --config needs a value\n\n{EXPLAIN_USAGE}"),
                    );
                }
            },
            _ if text.starts_with("--config=") => {
                config = Some(PathBuf::from(&text["--config=".len()..]));
            }
            _ if token.is_none() && (text == "-" || !text.starts_with('-')) => token = Some(text),
            _ => return (2, format!("error: unexpected argument\n\n{EXPLAIN_USAGE}")),
        }
    }
    let Some(path) = config else {
        return (
            2,
            format!("error: --config FILE is required\n\n{EXPLAIN_USAGE}"),
        );
    };
    let token = match token.filter(|t| t != "-") {
        Some(token) => token,
        None => {
            let mut text = String::new();
            let mut stdin = stdin;
            if let Err(error) = stdin.read_to_string(&mut text) {
                return (
                    2,
                    format!("error: cannot read the token from stdin: {error}"),
                );
            }
            text
        }
    };
    let token = token.trim();
    let token = match token.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => token[7..].trim_start(),
        _ => match token.get(..5) {
            Some(prefix) if prefix.eq_ignore_ascii_case("dpop ") => token[5..].trim_start(),
            _ => token,
        },
    };
    let request = match dpop_request(proof, method, url) {
        Ok(request) => request,
        Err(error) => return (2, format!("error: {error}\n\n{EXPLAIN_USAGE}")),
    };
    let config = match load_config(&path) {
        Ok(config) => config,
        Err(error) => return (2, format!("error: {error}")),
    };
    let Some(auth) = config.authenticator.clone() else {
        return (
            2,
            format!(
                "error: {}: no [[issuer]] is configured: no token can be accepted",
                path.display()
            ),
        );
    };
    let mut out = format!(
        "config: {}\nissuers: {}\n(no upstream is called)\n\n",
        path.display(),
        auth.issuers()
            .map(|i| format!("{i:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Remote keys: wait a bounded time for the first fetch; the report says when they are
    // missing.
    match tokio::time::timeout(Duration::from_secs(10), config.keys_ready()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => out.push_str(&format!("warning: issuer keys: {error}\n\n")),
        Err(_) => out.push_str("warning: keys not loaded within 10 s\n\n"),
    }
    let report =
        tower_gatekeeper::explain::explain_request(&auth, &config.dpop, token, request).await;
    out.push_str(&report.to_string());
    out.push('\n');
    (if report.accepted() { 0 } else { 1 }, out)
}

/// The request the sender-constraint checks look at: `--dpop`, `--method` and `--url`
/// together, or none of them (a Bearer request).
fn dpop_request(
    proof: Option<String>,
    method: Option<String>,
    url: Option<String>,
) -> Result<http::Request<()>, String> {
    let mut request = http::Request::new(());
    match (proof, method, url) {
        (None, None, None) => {}
        (Some(proof), Some(method), Some(url)) => {
            *request.method_mut() = method
                .parse()
                .map_err(|_| format!("--method {method:?} is not an HTTP method"))?;
            let uri: http::Uri = url
                .parse()
                .map_err(|_| format!("--url {url:?} is not a URL"))?;
            if uri.scheme().is_none() || uri.authority().is_none() {
                return Err(format!(
                    "--url {url:?} must be absolute (https://host/path)"
                ));
            }
            *request.uri_mut() = uri;
            let value = http::HeaderValue::try_from(proof.trim())
                .map_err(|_| "--dpop: the proof is not a valid header value".to_owned())?;
            request.headers_mut().insert("dpop", value);
        }
        _ => return Err("--dpop, --method and --url go together".to_owned()),
    }
    Ok(request)
}
