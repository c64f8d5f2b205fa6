//! A real S3-compatible server for tests: SeaweedFS on loopback (see the
//! README). One [`S3Server`] is one `weed server -s3` process with its own
//! data directory; it is stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bucket every server is started with.
pub const BUCKET: &str = "clew";

/// The `weed` binary: `CLEW_WEED`, or the one `tests/setup.sh` builds.
pub fn weed_binary() -> PathBuf {
    let path = std::env::var_os("CLEW_WEED")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/bin/weed")
        });
    assert!(
        path.exists(),
        "SeaweedFS is not built at {}: run tests/setup.sh (it builds `weed` from the Go module proxy)",
        path.display()
    );
    path
}

/// A port that is free, and whose +10000 neighbour (SeaweedFS's gRPC port
/// for it) is free too.
fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = l.local_addr() else {
            continue;
        };
        let p = addr.port();
        if p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
    panic!("no free loopback port pair for SeaweedFS");
}

/// One SeaweedFS server (master, volume, filer, S3 gateway) on loopback.
pub struct S3Server {
    child: Option<Child>,
    dir: PathBuf,
    ports: [u16; 4],
    log: PathBuf,
}

impl S3Server {
    /// Starts a server keeping its data in `dir` and creates [`BUCKET`];
    /// returns once the S3 gateway answers.
    pub fn start(dir: &Path) -> Self {
        let ports = [
            free_port_pair(),
            free_port_pair(),
            free_port_pair(),
            free_port_pair(),
        ];
        let mut server = S3Server {
            child: None,
            dir: dir.to_path_buf(),
            ports,
            log: dir.join("weed.log"),
        };
        server.restart();
        server
    }

    /// The S3 gateway's port.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The environment a Clew process needs to use `s3://clew[/prefix]` on
    /// this server (the server accepts any credentials: it has no identities).
    pub fn client_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", "clew-test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "clew-test-secret".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The server's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("LockRing"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts the server again on the same ports and data (after [`S3Server::stop`]).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            return;
        }
        std::fs::create_dir_all(&self.dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.dir.display()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log.display()));
        let [s3, master, volume, filer] = self.ports;
        let stderr = log
            .try_clone()
            .unwrap_or_else(|e| panic!("SeaweedFS log: {e}"));
        let child = Command::new(weed_binary())
            .arg("server")
            .arg(format!("-dir={}", self.dir.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"])
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg("-master.volumeSizeLimitMB=64")
            // One master, no Raft election: a restart is ready in seconds.
            .arg("-master.peers=none")
            // Anonymous access (no identities): SeaweedFS would take these
            // as its admin identity.
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", weed_binary().display()));
        self.child = Some(child);
        // Ready when the S3 gateway answers the bucket's creation.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(status) = self.put_raw(&format!("/{BUCKET}"), b"") {
                if status == 200 || status == 409 {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "SeaweedFS did not start within 90 s; its log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after 20 s); data is kept.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One unsigned `PUT path` with `body`, around any client (the server
    /// accepts anonymous requests); returns the HTTP status.
    pub fn put_raw(&self, path: &str, body: &[u8]) -> std::io::Result<u16> {
        let port = self.port();
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        s.write_all(body)?;
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {answer:?}")))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
