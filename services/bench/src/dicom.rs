//! `clew-bench dicom`: Clew's header scan against pydicom on the same tree.
//!
//! Builds a tree of (by default) 20,000 DICOM files from the real files in
//! the pydicom wheel (tests/dicom/fetch.sh), each a copy with new Study,
//! Series and SOP Instance UIDs, 200 instances per series. Then, in the same
//! run and after one untimed pass that puts the tree in the page cache, it
//! times alternately, `runs` times each:
//! - Clew's ingest scan (walk, SHA-256 of every byte, the whole data set
//!   parsed, de-identification gate) on the rayon pool (all cores) and on one
//!   thread;
//! - `tests/dicom/pydicom_scan.py`: `dcmread(path, stop_before_pixels=True)`
//!   for every file, reading the same attributes, in one Python process.
//!
//! Reports medians in files/s and the ratios to pydicom.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clew_ingest::{ConfidentialityTable, FileOutcome};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use rayon::prelude::*;
use serde::Serialize;

/// What the benchmark measured.
#[derive(Debug, Serialize)]
pub struct DicomBench {
    /// Files in the tree.
    pub files: usize,
    /// Distinct real source files they were copied from.
    pub source_files: usize,
    /// Bytes in the tree.
    pub bytes: u64,
    /// Timed runs per contender (medians reported).
    pub runs: usize,
    /// Clew's ingest scan on all cores.
    pub clew_files_per_s: f64,
    /// Clew's ingest scan on one thread.
    pub clew_1_thread_files_per_s: f64,
    /// pydicom dcmread(stop_before_pixels=True), one process.
    pub pydicom_files_per_s: f64,
    /// clew / pydicom.
    pub ratio: f64,
    /// clew on one thread / pydicom.
    pub ratio_1_thread: f64,
    /// pydicom version.
    pub pydicom: String,
    /// Cores of the rayon pool.
    pub cores: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Source files Clew and dicom-object read and write back cleanly.
fn sources(dir: &Path) -> Result<Vec<(PathBuf, dicom_object::DefaultDicomObject)>> {
    let table = ConfidentialityTable::standard()?;
    let mut out = Vec::new();
    for (rel, path) in clew_ingest::list_files(dir)? {
        if !matches!(
            clew_ingest::scan::scan_file(&path, &rel, &table),
            FileOutcome::Instance { .. }
        ) {
            continue;
        }
        let Ok(obj) = dicom_object::open_file(&path) else {
            continue;
        };
        let mut probe = Vec::new();
        if obj.write_all(&mut probe).is_ok() {
            out.push((path, obj));
        }
    }
    Ok(out)
}

/// Gives a copy its own Study, Series and SOP Instance UIDs (the file meta too).
pub(crate) fn set_uids(
    obj: &mut dicom_object::DefaultDicomObject,
    study: &str,
    series: &str,
    sop: &str,
) {
    for (tag, value) in [
        (tags::STUDY_INSTANCE_UID, study),
        (tags::SERIES_INSTANCE_UID, series),
        (tags::SOP_INSTANCE_UID, sop),
    ] {
        obj.put(DataElement::new(tag, VR::UI, PrimitiveValue::from(value)));
    }
    obj.update_meta(|m| m.media_storage_sop_instance_uid = sop.to_string());
}

fn build_tree(
    sources: &[(PathBuf, dicom_object::DefaultDicomObject)],
    n: usize,
    out: &Path,
) -> Result<u64> {
    let pb = clew::progress_bar(n as u64, "building");
    let uid = |kind: u64, i: usize| format!("2.25.{}{:010}", 1000 + kind, i);
    let sizes: Result<Vec<u64>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let (src, obj) = &sources[i % sources.len()];
            let mut obj = obj.clone();
            let series = i / 200;
            let study = series / 4;
            set_uids(&mut obj, &uid(1, study), &uid(2, series), &uid(3, i));
            let dir = out
                .join(format!("study-{study:04}"))
                .join(format!("series-{series:05}"));
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("{i:06}.dcm"));
            obj.write_to_file(&path)
                .with_context(|| format!("writing a copy of {}", src.display()))?;
            pb.inc(1);
            Ok(std::fs::metadata(&path)?.len())
        })
        .collect();
    pb.finish_and_clear();
    Ok(sizes?.iter().sum())
}

fn clew_scan(tree: &Path, table: &ConfidentialityTable) -> Result<(usize, f64)> {
    let t = Instant::now();
    let scan = clew_ingest::scan_folder(tree, table, &|| {})?;
    let secs = t.elapsed().as_secs_f64();
    Ok((scan.accepted.len() + scan.refused.len(), secs))
}

fn pydicom_scan(python: &Path, script: &Path, tree: &Path) -> Result<(usize, f64)> {
    let out = Command::new(python)
        .arg(script)
        .arg(tree)
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    ensure!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("output of {}", script.display()))?;
    Ok((
        v["files"].as_u64().unwrap_or_default() as usize,
        v["seconds"].as_f64().unwrap_or(f64::NAN),
    ))
}

/// Runs the benchmark. `repo` is the repository root (for the script and the
/// fetched files), `keep` an optional folder to build the tree in and keep.
pub fn run(
    files: usize,
    runs: usize,
    source: &Path,
    python: &Path,
    script: &Path,
    keep: Option<&Path>,
) -> Result<DicomBench> {
    if !source.join("CT_small.dcm").is_file() || !python.is_file() {
        bail!(
            "the real DICOM files ({}) or pydicom's Python ({}) are missing: run tests/dicom/fetch.sh",
            source.display(),
            python.display()
        );
    }
    let pydicom = String::from_utf8_lossy(
        &Command::new(python)
            .args(["-c", "import pydicom; print(pydicom.__version__)"])
            .output()
            .context("asking pydicom for its version")?
            .stdout,
    )
    .trim()
    .to_string();
    let sources = sources(source)?;
    ensure!(
        !sources.is_empty(),
        "no usable DICOM files in {}",
        source.display()
    );
    let tmp;
    let tree = match keep {
        Some(dir) => dir.to_path_buf(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("tree")
        }
    };
    let existing = clew_ingest::list_files(&tree).map(|f| f.len()).unwrap_or(0);
    let bytes = if existing == files {
        eprintln!("reusing the tree in {}", tree.display());
        clew_ingest::list_files(&tree)?
            .iter()
            .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum()
    } else {
        if tree.exists() {
            std::fs::remove_dir_all(&tree)?;
        }
        build_tree(&sources, files, &tree)?
    };
    let table = ConfidentialityTable::standard()?;
    // Untimed: both then read from the page cache.
    let (seen, _) = clew_scan(&tree, &table)?;
    ensure!(seen == files, "Clew read {seen} of {files} files");
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let (mut all, mut single, mut py) = (Vec::new(), Vec::new(), Vec::new());
    let pb = clew::progress_bar(runs as u64, "timing");
    for _ in 0..runs {
        let (n, s) = clew_scan(&tree, &table)?;
        ensure!(n == files, "Clew read {n} of {files}");
        all.push(n as f64 / s);
        let (n, s) = one.install(|| clew_scan(&tree, &table))?;
        single.push(n as f64 / s);
        let (n, s) = pydicom_scan(python, script, &tree)?;
        ensure!(n == files, "pydicom read {n} of {files} files");
        py.push(n as f64 / s);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let (clew, clew1, pyd) = (median(all), median(single), median(py));
    Ok(DicomBench {
        files,
        source_files: sources.len(),
        bytes,
        runs,
        clew_files_per_s: clew,
        clew_1_thread_files_per_s: clew1,
        pydicom_files_per_s: pyd,
        ratio: clew / pyd,
        ratio_1_thread: clew1 / pyd,
        pydicom,
        cores: rayon::current_num_threads(),
    })
}
