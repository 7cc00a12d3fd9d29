//! `gatekeeper`: arguments, tracing and signals; everything else is the `gatekeeper` library.

use std::ffi::OsString;
use std::future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use gatekeeper::{
    BoxError, Live, LogFormat, demo_instructions, explain_command, load_config, log_format_of,
    run_live, start_admin, start_demo,
};
use tokio::net::TcpListener;
use tracing::{error, info, warn};

const USAGE: &str = "\
usage: gatekeeper [--config FILE] [--listen ADDR]
       gatekeeper explain --config FILE [--dpop PROOF --method M --url U] [TOKEN | -]

  (no arguments)    run the embedded demo on 127.0.0.1:8080
  --config FILE     run the gateway described by FILE (TOML; see gateway.example.toml)
  --listen ADDR     listen on ADDR (e.g. 127.0.0.1:8080), overriding the file's `listen`
  explain           explain why a token is accepted or rejected (gatekeeper explain --help)
  -h, --help        print this help

Logs go to stderr; set RUST_LOG (default \"info\", \"debug\" logs one line per request).
Worker threads: one per CPU; set TOKIO_WORKER_THREADS to change it (1: a single-threaded
scheduler).";

fn main() -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main())
}

/// The runtime: one worker per CPU (or `TOKIO_WORKER_THREADS`, read by tokio), and with
/// `TOKIO_WORKER_THREADS=1` the single-threaded scheduler, which serves one core without the
/// work-stealing machinery (no cross-thread queues or wake-ups).
fn runtime() -> io::Result<tokio::runtime::Runtime> {
    let one_worker = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1");
    let mut builder = if one_worker {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}

async fn async_main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "explain") {
        return explain_main(std::env::args_os().skip(2)).await;
    }
    let args = match Args::parse(std::env::args_os().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Read before anything is logged, so that every line has the configured format.
    let format = args
        .config
        .as_deref()
        .map(log_format_of)
        .unwrap_or_default();
    init_tracing(format);
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) if format == LogFormat::Json => {
            error!(error = %failure, "gatekeeper stopped");
            ExitCode::FAILURE
        }
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), BoxError> {
    let (config, demo) = match &args.config {
        Some(path) => (load_config(path)?, None),
        None => {
            let demo = start_demo().await?;
            (demo.config, Some((demo.token, demo.upstream)))
        }
    };
    let listen = args.listen.unwrap_or(config.listen());
    // Serve at once (requests get 503 with Retry-After until keys are in), but stop with a
    // clear message when an issuer's keys can never work.
    let ready = config.keys_ready();
    let admin_ready = config.keys_ready();
    let live = Live::new(config);
    start_admin(&live, admin_ready).await?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e} (--listen ADDR picks another)"))?;
    if let Some((token, upstream)) = demo {
        println!(
            "{}",
            demo_instructions(listener.local_addr()?, upstream, &token)
        );
    }
    let server = run_live(live, listener, shutdown_signal());
    tokio::pin!(server);
    tokio::select! {
        served = &mut server => return Ok(served?),
        checked = ready => match checked {
            Ok(()) => info!("every issuer has usable keys"),
            Err(error) => return Err(format!("issuer keys: {error}").into()),
        },
    }
    server.await?;
    Ok(())
}

/// Command-line arguments.
#[derive(Debug, Default)]
struct Args {
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
}

impl Args {
    /// `Ok(None)` for `--help`.
    fn parse(mut args: impl Iterator<Item = OsString>) -> Result<Option<Args>, String> {
        let mut parsed = Args::default();
        while let Some(arg) = args.next() {
            let text = arg.to_string_lossy();
            let (name, inline) = match text.split_once('=') {
                Some((name, value)) if name.starts_with("--") => (name, Some(value)),
                _ => (&*text, None),
            };
            let mut value = |name: &str| -> Result<OsString, String> {
                match inline {
                    Some(v) => Ok(OsString::from(v)),
                    None => args.next().ok_or_else(|| format!("{name} needs a value")),
                }
            };
            match name {
                "-h" | "--help" => return Ok(None),
                "--config" => parsed.config = Some(PathBuf::from(value(name)?)),
                "--listen" => {
                    let addr = value(name)?;
                    let addr = addr.to_string_lossy();
                    parsed.listen = Some(addr.parse().map_err(|_| {
                        format!(
                            "--listen {addr:?} is not an IP address and port, e.g. 127.0.0.1:8080"
                        )
                    })?);
                }
                _ => return Err(format!("unknown argument {text:?}")),
            }
        }
        Ok(Some(parsed))
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    match format {
        // One JSON object per line: the event's fields flattened beside level, target and
        // timestamp.
        LogFormat::Json => builder.json().flatten_event(true).init(),
        _ => builder
            .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
            .init(),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            warn!(%error, "cannot listen for SIGINT");
            future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM");
                future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = future::pending::<()>();
    tokio::select! {
        () = interrupt => info!("SIGINT received"),
        () = terminate => info!("SIGTERM received"),
    }
}

async fn explain_main(args: impl Iterator<Item = OsString>) -> ExitCode {
    let (code, text) = explain_command(args, io::stdin()).await;
    if code == 2 {
        eprintln!("{text}");
    } else {
        print!("{text}");
    }
    ExitCode::from(code)
}
