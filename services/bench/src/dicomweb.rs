//! `clew-bench dicomweb`: metadata ingest from a real PACS, Clew against
//! the well-known Python client, same PACS, same run.
//!
//! Starts Orthanc with its DICOMweb plugin (`clew-pacs-server`) and loads N
//! instances (default 2,000): de-identified copies of the real files in the
//! pydicom wheel with new UIDs, 20 instances per series, 2 series per study.
//! Then, after one untimed pass of each (the PACS's storage in the page
//! cache), it times alternately, `runs` times each:
//! - `clew ingest dicomweb --dry-run` (the release binary): QIDO-RS studies
//!   and series, WADO-RS series metadata, every instance read into a data set
//!   and gated — `--concurrency` requests at once (4, its default);
//! - `tests/dicom/dicomweb_client_scan.py`: dicomweb-client (PyPI) making the
//!   same searches and metadata requests, one at a time, as the client does.
//!
//! Both read the same studies, series and instances (checked). Besides each
//! side's instances/s it reads the CPU time Orthanc and the client spent
//! (`/proc/<pid>/stat`, `getrusage(RUSAGE_CHILDREN)`), so it can say whether
//! Orthanc — what is left of the machine to it — is the limit of Clew's run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clew_ingest::ConfidentialityTable;
use clew_pacs_server::Pacs;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::Serialize;

/// What the benchmark measured (medians of the runs).
#[derive(Debug, Serialize)]
pub struct DicomWebBench {
    pub pacs: String,
    pub instances: usize,
    pub series: usize,
    pub studies: usize,
    pub runs: usize,
    /// Clew's requests in flight at once.
    pub concurrency: usize,
    pub clew_instances_per_s: f64,
    pub client_instances_per_s: f64,
    /// Clew / the Python client.
    pub ratio: f64,
    pub client: String,
    /// Cores Orthanc kept busy during Clew's run, and during the client's.
    pub orthanc_cores_clew_run: f64,
    pub orthanc_cores_client_run: f64,
    /// Cores Clew's process used; the client's.
    pub clew_cores: f64,
    pub client_cores: f64,
    /// The machine's cores.
    pub cores: usize,
    /// Orthanc's cores during Clew's run over the cores Clew left to it.
    pub orthanc_share_of_its_limit: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// CPU seconds of process `pid` so far (user + system, `/proc/<pid>/stat`).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading the CPU time of process {pid}"))?;
    // After the command's name in parentheses: fields 14 and 15 of proc(5).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11) + ticks(12)) / hz)
}

/// CPU seconds of this process's children that have ended.
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Removes what the Basic Profile removes (X, private attributes) at every
/// depth and marks the instance de-identified (PS3.15 E.1.1).
fn deidentify(obj: &mut InMemDicomObject, table: &ConfidentialityTable) {
    fn strip(obj: &mut InMemDicomObject, table: &ConfidentialityTable) {
        let doomed: Vec<Tag> = obj
            .tags()
            .filter(|t| t.group() % 2 == 1 || table.rule(*t).is_some_and(|r| r.must_be_removed()))
            .collect();
        for t in doomed {
            obj.remove_element(t);
        }
        let sequences: Vec<Tag> = obj
            .iter()
            .filter(|e| matches!(e.value(), Value::Sequence(_)))
            .map(|e| e.header().tag)
            .collect();
        for t in sequences {
            obj.update_value(t, |v| {
                if let Some(items) = v.items_mut() {
                    for item in items.iter_mut() {
                        strip(item, table);
                    }
                }
            });
        }
    }
    strip(obj, table);
    obj.put(DataElement::new(
        tags::PATIENT_IDENTITY_REMOVED,
        VR::CS,
        PrimitiveValue::from("YES"),
    ));
    obj.put(DataElement::new(
        tags::DEIDENTIFICATION_METHOD,
        VR::LO,
        PrimitiveValue::from("Basic Application Confidentiality Profile"),
    ));
}

/// Loads `n` instances into the PACS; returns (series, studies).
fn load(pacs: &Pacs, source: &Path, n: usize) -> Result<(usize, usize)> {
    let table = ConfidentialityTable::standard()?;
    let mut sources = Vec::new();
    for name in ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm"] {
        let mut obj = dicom_object::open_file(source.join(name))
            .with_context(|| format!("reading {}", source.join(name).display()))?;
        deidentify(&mut obj, &table);
        sources.push(obj);
    }
    let per_series = 20;
    let uid = |kind: u64, i: usize| format!("2.25.{}{:010}", 7000 + kind, i);
    let pb = clew::progress_bar(n as u64, "loading");
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failure = std::sync::Mutex::new(None::<anyhow::Error>);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let series = i / per_series;
                let mut obj = sources[series % sources.len()].clone();
                // One pseudonym per study: a PACS keys a study by patient and UID.
                obj.put(DataElement::new(
                    tags::PATIENT_ID,
                    VR::LO,
                    PrimitiveValue::from(format!("PSEUDO-{}", series / 2)),
                ));
                crate::dicom::set_uids(&mut obj, &uid(1, series / 2), &uid(2, series), &uid(3, i));
                let mut bytes = Vec::new();
                if let Err(e) = obj.write_all(&mut bytes) {
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.into());
                    return;
                }
                pacs.upload(&bytes);
                pb.inc(1);
            });
        }
    });
    pb.finish_and_clear();
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let series = n.div_ceil(per_series);
    Ok((series, series.div_ceil(2)))
}

struct Pass {
    instances: usize,
    /// What was found besides instances (for messages).
    found: String,
    /// Time of the reading (the rate's denominator).
    seconds: f64,
    /// Time of the whole process (the CPU shares' denominator).
    process_seconds: f64,
    orthanc_cpu: f64,
    client_cpu: f64,
}

fn timed(pacs: &Pacs, mut command: Command, what: &str) -> Result<(std::process::Output, Pass)> {
    let pid = pacs.pid().context("the PACS is not running")?;
    let (orthanc0, children0) = (cpu_seconds(pid)?, children_cpu_seconds());
    let t = Instant::now();
    let out = command
        .output()
        .with_context(|| format!("running {what}"))?;
    let seconds = t.elapsed().as_secs_f64();
    let pass = Pass {
        instances: 0,
        found: String::new(),
        seconds,
        process_seconds: seconds,
        orthanc_cpu: cpu_seconds(pid)? - orthanc0,
        client_cpu: children_cpu_seconds() - children0,
    };
    Ok((out, pass))
}

fn clew_pass(
    clew: &Path,
    pacs: &Pacs,
    auth: &Path,
    dir: &Path,
    concurrency: usize,
) -> Result<Pass> {
    let report = dir.join("report.json");
    let mut c = Command::new(clew);
    c.args(["ingest", "dicomweb", &pacs.dicomweb_url()])
        .args(["--dataset", "bench", "--version", "1", "--dry-run"])
        .args(["--concurrency", &concurrency.to_string()])
        .arg("--pacs-basic-auth-file")
        .arg(auth)
        .arg("--scan-state")
        .arg(dir.join("scan-state.jsonl"))
        .arg("--report")
        .arg(&report);
    let (out, mut pass) = timed(pacs, c, "clew ingest dicomweb")?;
    ensure!(
        out.status.success(),
        "clew ingest dicomweb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
    pass.instances = r["instances"].as_u64().unwrap_or_default() as usize;
    Ok(pass)
}

fn client_pass(python: &Path, script: &Path, pacs: &Pacs, auth: &Path) -> Result<Pass> {
    let mut c = Command::new(python);
    c.arg(script).arg(pacs.dicomweb_url()).arg(auth).arg("100");
    let (out, mut pass) = timed(pacs, c, "the dicomweb-client scan")?;
    ensure!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("output of {}", script.display()))?;
    pass.instances = v["instances"].as_u64().unwrap_or_default() as usize;
    pass.found = format!("{} studies, {} series", v["studies"], v["series"]);
    // The reading itself, not Python's start.
    pass.seconds = v["seconds"].as_f64().unwrap_or(pass.seconds);
    Ok(pass)
}

/// Runs the benchmark.
pub fn run(
    clew: &Path,
    instances: usize,
    concurrency: usize,
    runs: usize,
    source: &Path,
    python: &Path,
    script: &Path,
) -> Result<DicomWebBench> {
    ensure!(
        source.join("CT_small.dcm").is_file(),
        "the real DICOM files are missing from {}: run tests/setup.sh",
        source.display()
    );
    ensure!(
        python.is_file(),
        "{} is missing: run tests/setup.sh (it installs dicomweb-client)",
        python.display()
    );
    let client = String::from_utf8_lossy(
        &Command::new(python)
            .args([
                "-c",
                "import dicomweb_client; print(dicomweb_client.__version__)",
            ])
            .output()
            .context("asking dicomweb-client for its version")?
            .stdout,
    )
    .trim()
    .to_string();
    let tmp = tempfile::tempdir()?;
    let pacs = Pacs::start(&tmp.path().join("pacs"));
    let auth: PathBuf = pacs.basic_auth_file(tmp.path());
    let (series, studies) = load(&pacs, source, instances)?;
    ensure!(
        pacs.instance_count() == instances,
        "the PACS holds {} of {instances} instances",
        pacs.instance_count()
    );
    let (_, version) = pacs
        .request("GET", "/system", b"")
        .context("asking Orthanc for its version")?;
    let version: serde_json::Value = serde_json::from_str(&version).unwrap_or_default();
    let pacs_name = format!(
        "Orthanc {} with its DICOMweb plugin",
        version["Version"].as_str().unwrap_or("?")
    );
    // Untimed: the PACS's files in the page cache, both clients warmed.
    let warm = clew_pass(clew, &pacs, &auth, tmp.path(), concurrency)?;
    ensure!(
        warm.instances == instances,
        "Clew read {} of {instances}",
        warm.instances
    );
    let warm = client_pass(python, script, &pacs, &auth)?;
    ensure!(
        warm.instances == instances,
        "dicomweb-client read {} of {instances} ({})",
        warm.instances,
        warm.found
    );
    let mut c = (Vec::new(), Vec::new(), Vec::new());
    let mut p = (Vec::new(), Vec::new(), Vec::new());
    let pb = clew::progress_bar(runs as u64, "timing");
    for _ in 0..runs {
        let r = clew_pass(clew, &pacs, &auth, tmp.path(), concurrency)?;
        ensure!(
            r.instances == instances,
            "Clew read {} of {instances}",
            r.instances
        );
        c.0.push(r.instances as f64 / r.seconds);
        c.1.push(r.orthanc_cpu / r.process_seconds);
        c.2.push(r.client_cpu / r.process_seconds);
        let r = client_pass(python, script, &pacs, &auth)?;
        ensure!(
            r.instances == instances,
            "dicomweb-client read {} of {instances}",
            r.instances
        );
        p.0.push(r.instances as f64 / r.seconds);
        p.1.push(r.orthanc_cpu / r.process_seconds);
        p.2.push(r.client_cpu / r.process_seconds);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (clew_rate, orthanc_clew, clew_cores) = (median(c.0), median(c.1), median(c.2));
    let (client_rate, orthanc_client, client_cores) = (median(p.0), median(p.1), median(p.2));
    Ok(DicomWebBench {
        pacs: pacs_name,
        instances,
        series,
        studies,
        runs,
        concurrency,
        clew_instances_per_s: clew_rate,
        client_instances_per_s: client_rate,
        ratio: clew_rate / client_rate,
        client,
        orthanc_cores_clew_run: orthanc_clew,
        orthanc_cores_client_run: orthanc_client,
        clew_cores,
        client_cores,
        cores,
        orthanc_share_of_its_limit: orthanc_clew / (cores as f64 - clew_cores).max(0.1),
    })
}
