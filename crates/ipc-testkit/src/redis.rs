//! A private `redis-server` for one test: started on a Unix socket in a
//! temporary directory of its own, with no persistence unless the test asks
//! for the append-only file, and stopped by its pid (its directory removed)
//! when dropped. A test never talks to a server it did not start.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use crate::{temp_path, PATIENCE};

/// What redis-server's log says once it accepts connections ("Ready to
/// accept connections" on TCP, "The server is now ready to accept
/// connections at <socket>" on a Unix socket alone), lowercased.
const READY: &str = "ready to accept connections";

/// A redis-server this test started; see the module docs.
///
/// ```no_run
/// let Some(server) = ipc_testkit::RedisServer::start() else { return };
/// assert!(server.url().starts_with("redis+unix://"));
/// ```
pub struct RedisServer {
    child: Option<Child>,
    dir: PathBuf,
    args: Vec<String>,
    /// The loopback TCP port it also listens on, if asked (with TLS if
    /// `tls`).
    port: Option<u16>,
    tls: bool,
}

impl RedisServer {
    /// Starts a server without persistence, or returns `None` (after saying
    /// so on stderr) where redis-server is not installed. On CI (`CI` set)
    /// a missing redis-server fails the test instead: CI installs it.
    pub fn start() -> Option<RedisServer> {
        RedisServer::start_with(NO_PERSISTENCE, Listen::Unix)
    }

    /// Starts a server without persistence that also listens on a free
    /// TCP port of 127.0.0.1 ([`tcp_url`](Self::tcp_url)).
    pub fn start_tcp() -> Option<RedisServer> {
        RedisServer::start_with(NO_PERSISTENCE, Listen::Tcp)
    }

    /// Starts a server without persistence that also listens for TLS on a
    /// free TCP port of 127.0.0.1 ([`tls_url`](Self::tls_url)), with this
    /// certificate (for `localhost`) and key, both PEM.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Option<RedisServer> {
        RedisServer::start_with(
            NO_PERSISTENCE,
            Listen::Tls {
                cert_pem: cert_pem.to_owned(),
                key_pem: key_pem.to_owned(),
            },
        )
    }

    /// Starts a server that writes every change to its append-only file
    /// before it answers (`appendfsync always`), so that a restart keeps
    /// every acknowledged write.
    pub fn start_with_aof() -> Option<RedisServer> {
        RedisServer::start_with(
            &[
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            Listen::Unix,
        )
    }

    fn start_with(persistence: &[&str], listen: Listen) -> Option<RedisServer> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not installed, and CI must have it (.ci/run installs it)"
            );
            eprintln!("skipped: redis-server is not installed");
            return None;
        }
        let dir = temp_path("ipct_redis");
        std::fs::create_dir(&dir).expect("a directory for the test's redis-server");
        let socket = dir.join("redis.sock");
        let mut args: Vec<String> = [
            "--port",
            "0",
            "--unixsocket",
            socket.to_str().expect("a UTF-8 temporary directory"),
            "--unixsocketperm",
            "700",
            "--dir",
            dir.to_str().expect("a UTF-8 temporary directory"),
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(persistence.iter().map(|s| s.to_string()));
        let port = match &listen {
            Listen::Unix => None,
            Listen::Tcp | Listen::Tls { .. } => Some(free_port()),
        };
        let path = |name: &str| dir.join(name).to_str().expect("UTF-8").to_owned();
        match &listen {
            Listen::Unix => {}
            Listen::Tcp => {
                let port = port.expect("a port").to_string();
                args.extend(["--port".into(), port, "--bind".into(), "127.0.0.1".into()]);
            }
            Listen::Tls { cert_pem, key_pem } => {
                std::fs::write(dir.join("cert.pem"), cert_pem).expect("the certificate written");
                std::fs::write(dir.join("key.pem"), key_pem).expect("the key written");
                let port = port.expect("a port").to_string();
                args.extend([
                    "--tls-port".into(),
                    port,
                    "--bind".into(),
                    "127.0.0.1".into(),
                    "--tls-cert-file".into(),
                    path("cert.pem"),
                    "--tls-key-file".into(),
                    path("key.pem"),
                    // Required beside the certificate; clients show none.
                    "--tls-ca-cert-file".into(),
                    path("cert.pem"),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ]);
            }
        }
        let tls = matches!(listen, Listen::Tls { .. });
        let mut server = RedisServer {
            child: None,
            dir,
            args,
            port,
            tls,
        };
        server.run();
        Some(server)
    }

    /// Runs the server and waits (at most [`PATIENCE`]) until it logs that
    /// it accepts connections.
    fn run(&mut self) {
        let mut child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server starts");
        let stdout = child.stdout.take().expect("its log is piped");
        self.child = Some(child);
        let (ready, is_ready) = mpsc::channel();
        // Reads the log to its end, so the server never blocks on a full
        // pipe; says when the server is ready.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if line.to_ascii_lowercase().contains(READY) {
                    let _ = ready.send(());
                }
            }
        });
        is_ready
            .recv_timeout(PATIENCE)
            .expect("redis-server ready within the patience");
    }

    /// The server's URL (`redis+unix:///…/redis.sock`).
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// `redis://127.0.0.1:<port>/0`, for a server started with
    /// [`start_tcp`](Self::start_tcp).
    pub fn tcp_url(&self) -> Option<String> {
        let port = self.port.filter(|_| !self.tls)?;
        Some(format!("redis://127.0.0.1:{port}/0"))
    }

    /// `rediss://localhost:<port>/0`, for a server started with
    /// [`start_tls`](Self::start_tls).
    pub fn tls_url(&self) -> Option<String> {
        let port = self.port.filter(|_| self.tls)?;
        Some(format!("rediss://localhost:{port}/0"))
    }

    /// The path of the server's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The directory the server keeps its socket and files in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server with SIGKILL, as a crash would, and waits for it:
    /// with the append-only file, every write it acknowledged is on disk
    /// already (`appendfsync always`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and starts it again on the same socket and
    /// directory (with its append-only file, if it has one).
    pub fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.socket());
        self.run();
    }
}

/// The server settings that keep nothing on disk.
const NO_PERSISTENCE: &[&str] = &["--save", "", "--appendonly", "no"];

/// Where a server listens besides its Unix socket.
enum Listen {
    Unix,
    Tcp,
    Tls { cert_pem: String, key_pem: String },
}

/// A TCP port of 127.0.0.1 nothing listens on now (the kernel's pick; the
/// server binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
