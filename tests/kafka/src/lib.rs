//! A real Apache Kafka broker for tests: single node, KRaft, loopback only.
//!
//! [`KafkaBroker::start`] gives every test the same thing, from any crate:
//!
//! 1. With `KAFKA_BOOTSTRAP` set, that existing broker (it cannot be stopped
//!    or restarted by the test).
//! 2. Otherwise the broker jars (`org.apache.kafka:kafka_2.13`, see
//!    `pom.xml`) are resolved from Maven Central into a cached folder by
//!    `fetch.sh` (`mvn dependency:copy-dependencies`), once per machine;
//!    storage is formatted (`kafka.tools.StorageTool format`), the broker is
//!    started with the machine's Java (`JAVA_HOME` or `java` on the PATH, 17
//!    or newer) on two free loopback ports (client and controller), and the
//!    harness waits until it answers a metadata request.
//!
//! The broker can be stopped gracefully, killed, and restarted on the same
//! ports and data (fault tests); it is killed when the value is dropped. Any
//! failure to get a broker is an error whose message says why — tests turn it
//! into a failure, never a skip.

use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// How long a broker may take to answer its first metadata request.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

static FETCH: Mutex<()> = Mutex::new(());
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the per-process test lock: Kafka tests in one test binary run one at
/// a time (each starts a JVM; two at once on a small machine only slows both).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A broker for one test.
pub struct KafkaBroker {
    bootstrap: String,
    local: Option<Local>,
}

struct Local {
    dir: tempfile::TempDir,
    java: PathBuf,
    libs: PathBuf,
    child: Option<Child>,
}

impl KafkaBroker {
    /// `KAFKA_BOOTSTRAP`'s broker if set, else a new local broker.
    pub fn start() -> Result<Self, String> {
        match std::env::var("KAFKA_BOOTSTRAP") {
            Ok(b) if !b.trim().is_empty() => {
                let broker = Self {
                    bootstrap: b.trim().to_string(),
                    local: None,
                };
                broker.wait_ready(Duration::from_secs(30)).map_err(|e| {
                    format!("KAFKA_BOOTSTRAP={} does not answer: {e}", broker.bootstrap)
                })?;
                Ok(broker)
            }
            _ => Self::start_local(),
        }
    }

    /// A new single-node KRaft broker on free loopback ports.
    pub fn start_local() -> Result<Self, String> {
        let java = java()?;
        let libs = broker_libs()?;
        let dir = tempfile::Builder::new()
            .prefix("clew-kafka-")
            .tempdir()
            .map_err(|e| format!("cannot create the broker's folder: {e}"))?;
        let port = free_port()?;
        let controller = free_port()?;
        let bootstrap = format!("127.0.0.1:{port}");
        write_config(dir.path(), port, controller)?;
        let cluster_id = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::now_v7().as_bytes())
        };
        let out = Command::new(&java)
            .arg("-cp")
            .arg(classpath(&libs))
            .arg(log_config_arg(dir.path()))
            .args(["kafka.tools.StorageTool", "format", "-t", &cluster_id, "-c"])
            .arg(dir.path().join("server.properties"))
            .output()
            .map_err(|e| {
                format!(
                    "cannot run {} to format the broker's storage: {e}",
                    java.display()
                )
            })?;
        if !out.status.success() {
            return Err(format!(
                "formatting the broker's storage failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut broker = Self {
            bootstrap,
            local: Some(Local {
                dir,
                java,
                libs,
                child: None,
            }),
        };
        broker.launch()?;
        Ok(broker)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The local broker's process id (None for `KAFKA_BOOTSTRAP`'s broker or
    /// while stopped).
    pub fn pid(&self) -> Option<u32> {
        self.local.as_ref()?.child.as_ref().map(Child::id)
    }

    /// Whether this is an existing broker from `KAFKA_BOOTSTRAP`.
    pub fn is_external(&self) -> bool {
        self.local.is_none()
    }

    /// The broker's log so far (local brokers).
    pub fn log(&self) -> String {
        let Some(local) = &self.local else {
            return String::new();
        };
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(local.dir.path().join("broker.log")) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(8_000)));
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Stops the broker gracefully (SIGTERM; SIGKILL after 60 s).
    pub fn stop(&mut self) -> Result<(), String> {
        let local = self.local_mut()?;
        if let Some(mut child) = local.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        Ok(())
    }

    /// Kills the broker at once (SIGKILL).
    pub fn kill(&mut self) -> Result<(), String> {
        let local = self.local_mut()?;
        if let Some(mut child) = local.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Starts the stopped (or killed) broker again on the same ports and data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop()?;
        self.launch()
    }

    fn local_mut(&mut self) -> Result<&mut Local, String> {
        self.local.as_mut().ok_or_else(|| {
            "the broker from KAFKA_BOOTSTRAP cannot be stopped or restarted by a test".to_string()
        })
    }

    fn launch(&mut self) -> Result<(), String> {
        let local = self.local_mut()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(local.dir.path().join("broker.log"))
            .map_err(|e| format!("cannot open the broker log: {e}"))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("cannot open the broker log: {e}"))?;
        let child = Command::new(&local.java)
            // The JVM options Kafka's own start scripts give a broker
            // (`kafka-server-start.sh`'s heap, `kafka-run-class.sh`'s
            // performance options). With a 256 MiB initial heap the broker
            // used half of it under load, so G1 ran a concurrent marking
            // cycle after every young collection (four a second at 12k
            // events/s), and GC came near the broker's own work in CPU.
            .args([
                "-Xms1g",
                "-Xmx1g",
                "-server",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent",
                "-XX:MaxInlineLevel=15",
                "-Djava.awt.headless=true",
            ])
            .arg(log_config_arg(local.dir.path()))
            .arg("-cp")
            .arg(classpath(&local.libs))
            .arg("kafka.Kafka")
            .arg(local.dir.path().join("server.properties"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start the broker with {}: {e}", local.java.display()))?;
        local.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.local.as_mut().and_then(|l| l.child.as_mut()) {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "the Kafka broker exited during start-up ({status}); its log:\n{}",
                        self.log()
                    ));
                }
            }
            match self.wait_ready(Duration::from_secs(2)) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                        "the Kafka broker did not answer metadata requests within {}s ({e}); its log:\n{}",
                        READY_TIMEOUT.as_secs(),
                        self.log()
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// One metadata request, with a timeout.
    fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("log_level", "0")
            .create()
            .map_err(|e| e.to_string())?;
        let md = consumer
            .fetch_metadata(None, timeout)
            .map_err(|e| e.to_string())?;
        if md.brokers().is_empty() {
            return Err("metadata lists no broker".into());
        }
        Ok(())
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if self.local.is_some() {
            let _ = self.kill();
        }
    }
}

fn java() -> Result<PathBuf, String> {
    let java = match std::env::var_os("JAVA_HOME") {
        Some(home) if Path::new(&home).join("bin/java").exists() => {
            Path::new(&home).join("bin/java")
        }
        _ => PathBuf::from("java"),
    };
    let out = Command::new(&java).arg("-version").output().map_err(|e| {
        format!(
            "the Kafka broker needs Java 17 or newer, and `{}` cannot run: {e}",
            java.display()
        )
    })?;
    let text = String::from_utf8_lossy(&out.stderr);
    let major = text
        .split('"')
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if major < 17 {
        return Err(format!(
            "the Kafka broker needs Java 17 or newer; `{} -version` says: {}",
            java.display(),
            text.trim()
        ));
    }
    Ok(java)
}

/// The cached jar folder, resolved with `fetch.sh` on first use.
fn broker_libs() -> Result<PathBuf, String> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let libs = match std::env::var_os("CLEW_KAFKA_LIBS") {
        Some(p) => PathBuf::from(p),
        None => here.join("../../target/kafka-broker/libs"),
    };
    let _guard = FETCH.lock().unwrap_or_else(|p| p.into_inner());
    if libs.join(".complete").exists() {
        return Ok(libs);
    }
    let out = Command::new("bash")
        .arg(here.join("fetch.sh"))
        .arg(&libs)
        .output()
        .map_err(|e| format!("cannot run tests/kafka/fetch.sh (needs bash and Maven): {e}"))?;
    if !out.status.success() || !libs.join(".complete").exists() {
        return Err(format!(
            "resolving the Kafka broker jars with Maven failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(libs)
}

fn classpath(libs: &Path) -> String {
    format!("{}/*", libs.display())
}

fn log_config_arg(dir: &Path) -> String {
    format!(
        "-Dlog4j2.configurationFile={}",
        dir.join("log4j2.properties").display()
    )
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

fn write_config(dir: &Path, port: u16, controller: u16) -> Result<(), String> {
    let data = dir.join("data");
    let props = format!(
        "process.roles=broker,controller\n\
         node.id=1\n\
         controller.quorum.voters=1@127.0.0.1:{controller}\n\
         listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
         controller.listener.names=CONTROLLER\n\
         inter.broker.listener.name=PLAINTEXT\n\
         listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
         log.dirs={}\n\
         num.partitions=1\n\
         num.network.threads=2\n\
         num.io.threads=4\n\
         offsets.topic.replication.factor=1\n\
         offsets.topic.num.partitions=4\n\
         transaction.state.log.replication.factor=1\n\
         transaction.state.log.min.isr=1\n\
         transaction.state.log.num.partitions=4\n\
         share.coordinator.state.topic.replication.factor=1\n\
         share.coordinator.state.topic.min.isr=1\n\
         group.initial.rebalance.delay.ms=0\n\
         auto.create.topics.enable=false\n",
        data.display()
    );
    let log4j = "rootLogger.level=WARN\n\
                 rootLogger.appenderRef.out.ref=OUT\n\
                 appender.out.type=Console\n\
                 appender.out.name=OUT\n\
                 appender.out.layout.type=PatternLayout\n\
                 appender.out.layout.pattern=[%d] %p %m (%c)%n\n\
                 logger.server.name=kafka.server\n\
                 logger.server.level=INFO\n";
    std::fs::write(dir.join("server.properties"), props)
        .and_then(|_| std::fs::write(dir.join("log4j2.properties"), log4j))
        .map_err(|e| format!("cannot write the broker's configuration: {e}"))
}
