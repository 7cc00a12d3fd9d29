//! `[cors]` in a real browser: headless Chromium loads a page from one loopback origin
//! (`http://127.0.0.1:PAGE`) whose script calls the gateway on another
//! (`http://127.0.0.1:GATEWAY`) with `fetch(…, {headers: {Authorization: 'Bearer …'}})`,
//! which makes the browser send a preflight first. The call succeeds with `[cors]` and fails
//! without it. The page reports the outcome to its own server.
//!
//! Needs Chromium (`apt-get install -y chromium`; `/usr/bin/chromium`, or the path in
//! `CHROMIUM`). Without it the test is skipped with a message, except under `CI=true`,
//! where it fails.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use tokio::sync::mpsc;

use support::{BOUND, ONE_ISSUER, Running, TempDir, Upstream, admin_token, gateway_dir};

/// The Chromium binary, or `None` (the test then skips, or fails under CI).
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!(
            "CI=true but Chromium is not installed at {}: .ci/run must `apt-get install -y chromium`",
            path.display()
        );
    }
    eprintln!(
        "\n\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED: the CORS browser test needs Chromium at {} (apt-get install -y chromium,\n\
         !!! or set CHROMIUM=/path/to/chromium). Under CI=true this is a failure.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
        path.display()
    );
    None
}

/// A headless Chromium on `url`, killed on drop (its helper processes end with it).
struct Browser {
    child: Child,
    _profile: TempDir,
}

impl Browser {
    fn open(binary: &PathBuf, url: &str) -> Browser {
        let profile = TempDir::new("chromium-profile");
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Chromium starts");
        Browser {
            child,
            _profile: profile,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Only the process this test started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves the page that calls `gateway` with `token`, and collects what it reports.
async fn page_server(gateway: String, token: String) -> (String, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let tx = Arc::new(Mutex::new(tx));
    let page = format!(
        r#"<!doctype html><html><head><title>cors</title></head><body><script>
function report(outcome) {{
  fetch('/report?outcome=' + encodeURIComponent(outcome));
}}
fetch('{gateway}/orders/1', {{ headers: {{ 'Authorization': 'Bearer {token}' }} }})
  .then(r => r.json().then(j => report('ok ' + r.status + ' ' + j.headers['x-user-id'] + ' ' + j.method)))
  .catch(e => report('failed ' + e.name));
</script></body></html>"#
    );
    let addr = support::http_server::serve(move |req| {
        let page = page.clone();
        let tx = Arc::clone(&tx);
        async move {
            if req.uri().path() == "/report" {
                let query = req.uri().query().unwrap_or("");
                let outcome = query.strip_prefix("outcome=").unwrap_or(query);
                let outcome = percent_encoding::percent_decode_str(outcome)
                    .decode_utf8_lossy()
                    .into_owned();
                let _ = tx.lock().unwrap().send(outcome);
                return Response::new(Full::new(Bytes::new()));
            }
            if req.uri().path() != "/" {
                return Response::builder()
                    .status(404)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            }
            Response::builder()
                .header("content-type", "text/html; charset=utf-8")
                .body(Full::new(Bytes::from(page)))
                .unwrap()
        }
    })
    .await;
    (format!("http://{addr}"), rx)
}

/// Runs the page against a gateway with `cors` (a `[cors]` section, or nothing) and
/// returns what the page reported, and how many requests reached the upstream.
async fn run_page(binary: &PathBuf, cors: impl Fn(&str) -> String) -> (String, usize) {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    // The page's origin is only known once its server listens: start it first, pointing at
    // the gateway's address, which is only known once the gateway listens. So the gateway
    // gets a listener first.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_addr = listener.local_addr().unwrap();
    let (page_origin, mut reports) =
        page_server(format!("http://{gateway_addr}"), admin_token()).await;
    let toml = format!(
        "{ONE_ISSUER}\n[[route]]\npath = \"/orders/{{*rest}}\"\nmethods = [\"GET\"]\nupstream = \"http://{}\"\n{}",
        upstream.addr,
        cors(&page_origin)
    );
    let config = gatekeeper::load_config(dir.write_config(&toml)).unwrap_or_else(|e| panic!("{e}"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(gatekeeper::run(config, listener, async {
        let _ = stop_rx.await;
    }));
    let gw = Running {
        addr: gateway_addr,
        shutdown: Some(stop_tx),
        task,
    };

    let browser = Browser::open(binary, &format!("{page_origin}/"));
    let outcome = tokio::time::timeout(BOUND, reports.recv())
        .await
        .expect("the page reports within 30 s")
        .expect("a report");
    drop(browser);
    gw.stop().await;
    (outcome, upstream.hits())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_calls_the_gateway_cross_origin_with_a_bearer_token() {
    let Some(binary) = chromium() else {
        return;
    };
    // With [cors] allowing the page's origin: the preflight is answered at the edge, the
    // call goes through with the token, and the page reads the answer.
    let (outcome, hits) = run_page(&binary, |origin| {
        format!("\n[cors]\nallow_origins = [\"{origin}\"]\nallow_methods = [\"GET\"]\n")
    })
    .await;
    assert_eq!(outcome, "ok 200 admin-1 GET");
    assert_eq!(
        hits, 1,
        "only the call itself reached the upstream, not the preflight"
    );

    // Without [cors]: the preflight is refused (the route takes GET only: 405), the browser
    // never sends the call.
    let (outcome, hits) = run_page(&binary, |_| String::new()).await;
    assert_eq!(outcome, "failed TypeError");
    assert_eq!(hits, 0);

    // With [cors] for another origin: the browser refuses too.
    let (outcome, hits) = run_page(&binary, |_| {
        "\n[cors]\nallow_origins = [\"http://elsewhere.example.test\"]\n".to_owned()
    })
    .await;
    assert_eq!(outcome, "failed TypeError");
    assert_eq!(hits, 0);
}
