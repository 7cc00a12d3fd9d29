//! A real `redis-server` for the tests that need one, started on a free loopback port without
//! persistence, killed on drop. Included with `#[path]` by each test file that uses it.
//!
//! When `redis-server` is not installed these tests skip with a loud message, except under
//! `CI=true`, where that is a failure (`.ci/run` installs it).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Generous bound for the server to start listening; only reached when something is wrong.
const START_BOUND: Duration = Duration::from_secs(30);

fn find_redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// A `redis-server` child on a fixed loopback port, killed on drop.
pub(crate) struct RedisServer {
    binary: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one, or returns `None` (after a loud message) when it is not installed on a
    /// developer machine. Under `CI=true` a missing server fails the test.
    pub(crate) fn start() -> Option<RedisServer> {
        let Some(binary) = find_redis_server() else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("redis-server is not installed, and CI=true: .ci/run must install it");
            }
            eprintln!(
                "\n\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !!! SKIPPED: redis-server not found on PATH; the Redis tests of `{}` \n\
                 !!! did not run. Install it (Debian: apt-get install redis-server).   \n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
                env!("CARGO_CRATE_NAME")
            );
            return None;
        };
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let mut server = RedisServer {
            binary,
            addr,
            child: None,
        };
        server.spawn();
        Some(server)
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(&self.binary)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + START_BOUND;
        let mut attempts = 0;
        while TcpStream::connect(self.addr).is_err() {
            attempts += 1;
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen after {attempts} attempts"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (what it held is lost: no persistence).
    pub(crate) fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, as in a
    /// partition or a hung host.
    #[allow(dead_code)]
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    #[allow(dead_code)]
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Starts it again, empty, on the same port.
    pub(crate) fn restart(&mut self) {
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
