//! A real PACS for tests: Orthanc with its DICOMweb plugin, from the
//! operating system's packages, on a free loopback port with its own storage
//! directory (see the README). One [`Pacs`] is one `Orthanc` process; it is
//! stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

/// The user every server is started with (HTTP basic authentication is on).
pub const USER: &str = "clew-ingest";
/// Its password.
pub const PASSWORD: &str = "pacs-test-secret";

/// The Orthanc binary: `CLEW_ORTHANC`, or the packaged one.
pub fn orthanc_binary() -> PathBuf {
    let path = std::env::var_os("CLEW_ORTHANC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/Orthanc"));
    assert!(
        path.exists(),
        "Orthanc is not installed at {}: run tests/setup.sh (it installs the packages orthanc and orthanc-dicomweb)",
        path.display()
    );
    path
}

/// The DICOMweb plugin: `CLEW_ORTHANC_DICOMWEB`, or the packaged one.
pub fn dicomweb_plugin() -> PathBuf {
    if let Some(p) = std::env::var_os("CLEW_ORTHANC_DICOMWEB") {
        return PathBuf::from(p);
    }
    let dir = Path::new("/usr/lib/orthanc");
    let found = std::fs::read_dir(dir).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libOrthancDicomWeb.so"))
            })
            .max()
    });
    found.unwrap_or_else(|| {
        panic!(
            "the Orthanc DICOMweb plugin is not in {}: run tests/setup.sh (package orthanc-dicomweb)",
            dir.display()
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port for Orthanc: {e}"))
}

/// One Orthanc server on loopback.
pub struct Pacs {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    log: PathBuf,
}

impl Pacs {
    /// Starts a server keeping its storage and index in `dir`; returns once
    /// its REST API answers.
    pub fn start(dir: &Path) -> Self {
        let mut pacs = Pacs {
            child: None,
            dir: dir.to_path_buf(),
            port: free_port(),
            log: dir.join("orthanc.log"),
        };
        pacs.restart();
        pacs
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The DICOMweb base URL, `http://127.0.0.1:<port>/dicom-web`.
    pub fn dicomweb_url(&self) -> String {
        format!("http://127.0.0.1:{}/dicom-web", self.port)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A `user:password` file for `--pacs-basic-auth-file`, written into `dir`.
    pub fn basic_auth_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("pacs-basic-auth");
        std::fs::write(&path, format!("{USER}:{PASSWORD}\n"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// The server's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn config(&self) -> serde_json::Value {
        let storage = self.dir.join("storage");
        serde_json::json!({
            "Name": "clew-test-pacs",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": self.port,
            "DicomServerEnabled": false,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": true,
            "RegisteredUsers": { USER: PASSWORD },
            "SaveJobs": false,
            "Plugins": [dicomweb_plugin()],
            "DicomWeb": {
                "Enable": true,
                "Root": "/dicom-web/",
                "EnableWado": false,
                "Host": format!("127.0.0.1:{}", self.port)
            }
        })
    }

    /// Starts the server again on the same port and storage (after [`Pacs::stop`]).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            return;
        }
        std::fs::create_dir_all(&self.dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.dir.display()));
        let config = self.dir.join("orthanc.json");
        std::fs::write(&config, self.config().to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log.display()));
        let stderr = log
            .try_clone()
            .unwrap_or_else(|e| panic!("Orthanc log: {e}"));
        let child = Command::new(orthanc_binary())
            .arg(&config)
            .current_dir(&self.dir)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", orthanc_binary().display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = self.request("GET", "/system", b"") {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("Orthanc exited ({status}); its log:\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                panic!(
                    "Orthanc did not answer within 60 s; its log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after 20 s); storage is kept.
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

    /// Stores one Part 10 file (Orthanc's REST `POST /instances`); panics
    /// with Orthanc's answer when it is not stored.
    pub fn upload(&self, part10: &[u8]) {
        match self.request("POST", "/instances", part10) {
            Ok((200, _)) => {}
            Ok((status, body)) => panic!("Orthanc refused an upload: {status}: {body}"),
            Err(e) => panic!("uploading to Orthanc: {e}; its log:\n{}", self.log_text()),
        }
    }

    /// Number of instances stored.
    pub fn instance_count(&self) -> usize {
        let (status, body) = self
            .request("GET", "/statistics", b"")
            .unwrap_or_else(|e| panic!("Orthanc statistics: {e}"));
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["CountInstances"].as_u64().unwrap_or_default() as usize
    }

    /// One request to Orthanc's REST API, authenticated; (status, body).
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Basic {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )?;
        s.write_all(body)?;
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {answer:?}")))?;
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for Pacs {
    fn drop(&mut self) {
        self.stop();
    }
}
