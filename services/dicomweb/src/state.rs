//! The scan state: what an interrupted run already read, so the next run
//! with the same selection carries on from there.
//!
//! A JSON-lines file. Its first line names the format and the run's key (a
//! SHA-256 over the base URL, the selection and `--digests`); each further
//! line is one series read in full, appended and flushed to disk as soon as
//! it is done. A file with another key is discarded when a run starts; a
//! last line cut short by a crash is ignored; the caller deletes the file
//! once a run has reached an outcome (published, refused, dry run). It holds
//! no identifying values: a refused instance is kept as its findings (tags
//! and places), never its header.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use clew_ingest::{Finding, InstanceHeader};
use serde::{Deserialize, Serialize};

use crate::DicomWebError;

/// Format of the first line.
pub const STATE_FORMAT: &str = "clew.dicomweb-scan-state/1";

/// One instance as read: its header when it passed the gate, its findings when not.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    /// Its WADO-RS path below the base URL.
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<InstanceHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
}

/// One series read in full.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesRecord {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    /// NumberOfSeriesRelatedInstances (0020,1209) as the search reported it
    /// when the series was read; a series whose count has changed is read again.
    pub reported_instances: Option<u64>,
    pub instances: Vec<InstanceRecord>,
}

#[derive(Serialize, Deserialize)]
struct Head {
    format: String,
    key: String,
}

/// The scan state of one run.
pub struct ScanState {
    path: PathBuf,
    file: Option<std::fs::File>,
    done: HashMap<(String, String), SeriesRecord>,
}

impl ScanState {
    /// Opens `path` for the run whose key is `key`: the series it holds are
    /// kept when the key matches, else the file is started afresh.
    pub fn open(path: &Path, key: &str) -> Result<Self, DicomWebError> {
        let err = |e: std::io::Error| DicomWebError::State {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let mut done = HashMap::new();
        let mut matches = false;
        if let Ok(f) = std::fs::File::open(path) {
            let mut lines = std::io::BufReader::new(f).lines();
            if let Some(Ok(first)) = lines.next() {
                matches = serde_json::from_str::<Head>(&first)
                    .is_ok_and(|h| h.format == STATE_FORMAT && h.key == key);
            }
            if matches {
                for line in lines {
                    // A line cut short by a crash ends what is kept.
                    let Ok(line) = line else { break };
                    let Ok(r) = serde_json::from_str::<SeriesRecord>(&line) else {
                        break;
                    };
                    done.insert(
                        (r.study_instance_uid.clone(), r.series_instance_uid.clone()),
                        r,
                    );
                }
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        // Rewritten whole (head, then what is kept): a torn tail goes away.
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            let head = Head {
                format: STATE_FORMAT.into(),
                key: key.into(),
            };
            let mut text = serde_json::to_string(&head).unwrap_or_default();
            text.push('\n');
            for r in done.values() {
                text.push_str(&serde_json::to_string(r).unwrap_or_default());
                text.push('\n');
            }
            f.write_all(text.as_bytes()).map_err(err)?;
            f.sync_data().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(err)?;
        Ok(ScanState {
            path: path.to_path_buf(),
            file: Some(file),
            done,
        })
    }

    /// The series already read, if its reported instance count is unchanged.
    pub fn series(
        &self,
        study: &str,
        series: &str,
        reported: Option<u64>,
    ) -> Option<&SeriesRecord> {
        self.done
            .get(&(study.to_string(), series.to_string()))
            .filter(|r| r.reported_instances == reported)
    }

    /// Number of series kept.
    pub fn len(&self) -> usize {
        self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// Appends one series read in full, on disk before this returns.
    pub fn record(&mut self, r: SeriesRecord) -> Result<(), DicomWebError> {
        let err = |e: std::io::Error| DicomWebError::State {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let mut line = serde_json::to_string(&r).unwrap_or_default();
        line.push('\n');
        if let Some(f) = self.file.as_mut() {
            f.write_all(line.as_bytes()).map_err(err)?;
            f.sync_data().map_err(err)?;
        }
        self.done.insert(
            (r.study_instance_uid.clone(), r.series_instance_uid.clone()),
            r,
        );
        Ok(())
    }

    /// Deletes the file: the run reached an outcome.
    pub fn discard(mut self) -> Result<(), DicomWebError> {
        self.file = None;
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DicomWebError::State {
                path: self.path.clone(),
                detail: e.to_string(),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(series: &str, reported: Option<u64>) -> SeriesRecord {
        SeriesRecord {
            study_instance_uid: "1.2".into(),
            series_instance_uid: series.into(),
            reported_instances: reported,
            instances: vec![InstanceRecord {
                location: format!("studies/1.2/series/{series}/instances/1.2.3"),
                header: Some(InstanceHeader::default()),
                findings: Vec::new(),
            }],
        }
    }

    #[test]
    fn what_was_read_survives_a_torn_tail_and_another_key_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.jsonl");
        let mut s = ScanState::open(&path, "k1").unwrap();
        s.record(record("1.2.1", Some(1))).unwrap();
        s.record(record("1.2.2", None)).unwrap();
        drop(s);
        // A crash in the middle of a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"studyInstanceUid\":\"1.2\",\"seri")
            .unwrap();
        drop(f);
        let s = ScanState::open(&path, "k1").unwrap();
        assert_eq!(s.len(), 2);
        assert!(s.series("1.2", "1.2.1", Some(1)).is_some());
        assert!(
            s.series("1.2", "1.2.1", Some(2)).is_none(),
            "count changed: read again"
        );
        assert!(s.series("1.2", "1.2.2", None).is_some());
        drop(s);
        // The torn line is gone: a record appended now is read back.
        let mut s = ScanState::open(&path, "k1").unwrap();
        s.record(record("1.2.3", Some(1))).unwrap();
        drop(s);
        assert_eq!(ScanState::open(&path, "k1").unwrap().len(), 3);
        let s = ScanState::open(&path, "k2").unwrap();
        assert!(s.is_empty(), "another selection keeps nothing");
        s.discard().unwrap();
        assert!(!path.exists());
    }
}
