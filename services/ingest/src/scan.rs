//! Reading one file: its SHA-256 over every byte, its data set parsed (all
//! of it: attributes after the pixel data are gated too), and the
//! de-identification findings.

use std::borrow::Cow;
use std::path::Path;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::Tag;
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::file::ReadPreamble;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::table::{ConfidentialityTable, OptionSet, ProfileOption};

/// A coded concept from DeidentificationMethodCodeSequence (0012,0064).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MethodCode {
    pub code_value: String,
    pub coding_scheme_designator: String,
    pub code_meaning: String,
}

/// What Clew keeps of one instance's header.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InstanceHeader {
    /// Path relative to the ingested folder, `/`-separated ("" for an
    /// instance read over DICOMweb).
    pub path: String,
    /// Lowercase hex SHA-256 of the whole file ("" when no file was read).
    pub sha256: String,
    pub size: u64,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub modality: String,
    pub body_part_examined: String,
    pub manufacturer: String,
    pub manufacturer_model_name: String,
    pub slice_thickness_mm: Option<f64>,
    pub study_date: String,
    /// PatientID (0010,0020) as found (a pseudonym in de-identified data);
    /// only counted, never stored in the manifest.
    pub patient_id: String,
    pub patient_identity_removed: bool,
    pub deidentification_method: String,
    pub method_codes: Vec<MethodCode>,
}

/// One reason a file is not de-identified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The offending tag, "(gggg,eeee)".
    pub tag: String,
    /// Its keyword in the standard dictionary ("" for private or unknown tags).
    pub keyword: String,
    /// Where in the data set: enclosing sequences and item numbers, e.g.
    /// "(0040,0275)[0] > (0010,1040)".
    pub at: String,
    pub problem: String,
}

/// The result of reading one file.
#[derive(Debug, Clone)]
pub enum FileOutcome {
    /// A DICOM instance (findings empty when it passes the gate).
    Instance {
        header: Box<InstanceHeader>,
        findings: Vec<Finding>,
    },
    /// Not DICOM, truncated or malformed: skipped and reported.
    Skipped { path: String, reason: String },
}

/// Reads `path` (shown as `rel`), hashes it and checks it.
pub fn scan_file(path: &Path, rel: &str, table: &ConfidentialityTable) -> FileOutcome {
    let skipped = |reason: String| FileOutcome::Skipped {
        path: rel.to_string(),
        reason,
    };
    // One read buffer per thread: fresh multi-megabyte allocations cost a
    // page fault per 4 KiB for the kernel to zero.
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with_borrow_mut(|bytes| {
        bytes.clear();
        let read = std::fs::File::open(path).and_then(|mut f| {
            use std::io::Read;
            f.read_to_end(bytes)
        });
        let outcome = match read {
            Ok(_) => scan_bytes(bytes, rel, table),
            Err(e) => skipped(format!("cannot read: {e}")),
        };
        if bytes.capacity() > 64 << 20 {
            *bytes = Vec::new();
        }
        outcome
    })
}

/// [`scan_file`] on bytes already read.
pub fn scan_bytes(bytes: &[u8], rel: &str, table: &ConfidentialityTable) -> FileOutcome {
    let skipped = |reason: String| FileOutcome::Skipped {
        path: rel.to_string(),
        reason,
    };
    // PS3.10 7.1: a 128-byte preamble, then the prefix "DICM".
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return skipped("not a DICOM file (no \"DICM\" prefix after the 128-byte preamble)".into());
    }
    let sha256 = hex::encode(Sha256::digest(bytes));
    let obj = match OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        // Not `read_until(PIXEL_DATA)`: what follows the pixel data (private
        // groups such as (7FE1,xxxx), Data Set Trailing Padding (FFFC,FFFC),
        // Digital Signatures (FFFA,FFFA)) falls under Table E.1-1 too.
        .from_reader(bytes)
    {
        Ok(o) => o,
        Err(e) => return skipped(format!("malformed or truncated DICOM: {}", chain(&e))),
    };
    let mut header = read_header(&obj);
    header.path = rel.to_string();
    header.sha256 = sha256;
    header.size = bytes.len() as u64;
    if header.sop_instance_uid.is_empty() {
        header.sop_instance_uid = obj
            .meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0')
            .to_string();
    }
    if header.study_instance_uid.is_empty() || header.series_instance_uid.is_empty() {
        return skipped(
            "malformed DICOM: no StudyInstanceUID (0020,000D) or SeriesInstanceUID (0020,000E)"
                .into(),
        );
    }
    let findings = gate(&obj, &header, table);
    FileOutcome::Instance {
        header: Box::new(header),
        findings,
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

// `get`, not `element_opt`: the latter builds (and drops) an error with a
// captured backtrace for every absent attribute.
fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok().map(Cow::into_owned))
        .map(|s| {
            s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string()
        })
        .unwrap_or_default()
}

/// The attributes Clew keeps, read from a parsed data set (a Part 10 file's
/// or a DICOM JSON object's); path, digest and size are the caller's.
pub(crate) fn read_header(obj: &InMemDicomObject) -> InstanceHeader {
    let mut method_codes = Vec::new();
    if let Some(items) = obj
        .get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        .and_then(|e| e.items())
    {
        for item in items {
            method_codes.push(MethodCode {
                code_value: text(item, tags::CODE_VALUE),
                coding_scheme_designator: text(item, tags::CODING_SCHEME_DESIGNATOR),
                code_meaning: text(item, tags::CODE_MEANING),
            });
        }
    }
    InstanceHeader {
        sop_instance_uid: text(obj, tags::SOP_INSTANCE_UID),
        study_instance_uid: text(obj, tags::STUDY_INSTANCE_UID),
        series_instance_uid: text(obj, tags::SERIES_INSTANCE_UID),
        modality: text(obj, tags::MODALITY),
        body_part_examined: text(obj, tags::BODY_PART_EXAMINED),
        manufacturer: text(obj, tags::MANUFACTURER),
        manufacturer_model_name: text(obj, tags::MANUFACTURER_MODEL_NAME),
        slice_thickness_mm: text(obj, tags::SLICE_THICKNESS)
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite()),
        study_date: text(obj, tags::STUDY_DATE),
        patient_id: text(obj, tags::PATIENT_ID),
        patient_identity_removed: text(obj, tags::PATIENT_IDENTITY_REMOVED) == "YES",
        deidentification_method: text(obj, tags::DEIDENTIFICATION_METHOD),
        method_codes,
        ..Default::default()
    }
}

fn tag_text(t: Tag) -> String {
    format!("({:04X},{:04X})", t.group(), t.element())
}

fn keyword(t: Tag) -> String {
    StandardDataDictionary
        .by_tag(t)
        .map(|e| e.alias().to_string())
        .unwrap_or_default()
}

/// Whether an element carries anything: a non-blank value or a sequence item.
fn has_value(v: &Value<InMemDicomObject>) -> bool {
    match v {
        Value::Primitive(PrimitiveValue::Empty) => false,
        Value::Primitive(p) => !p
            .to_str()
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .is_empty(),
        Value::Sequence(s) => !s.items().is_empty(),
        Value::PixelSequence(_) => true,
    }
}

/// The de-identification gate (DICOM PS3.15 Annex E, Table E.1-1) for one file.
pub fn gate(
    obj: &InMemDicomObject,
    header: &InstanceHeader,
    table: &ConfidentialityTable,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mark = |tag: Tag, problem: &str| Finding {
        tag: tag_text(tag),
        keyword: keyword(tag),
        at: tag_text(tag),
        problem: problem.to_string(),
    };
    // PS3.15 E.1.1 item 6 / PS3.3 C.7.1.1: a de-identified instance says so.
    if !header.patient_identity_removed {
        findings.push(mark(
            tags::PATIENT_IDENTITY_REMOVED,
            "PatientIdentityRemoved is not YES: the file does not declare that it was de-identified",
        ));
    }
    if header.deidentification_method.is_empty() && header.method_codes.is_empty() {
        findings.push(mark(
            tags::DEIDENTIFICATION_METHOD,
            "no de-identification method declared: neither DeidentificationMethod (0012,0063) nor DeidentificationMethodCodeSequence (0012,0064)",
        ));
    }
    let mut options = OptionSet::default();
    for c in &header.method_codes {
        if c.coding_scheme_designator == "DCM" {
            if let Some(o) = ProfileOption::from_code(&c.code_value) {
                options.insert(o);
            }
        }
    }
    walk(obj, "", table, options, &mut findings);
    findings
}

fn walk(
    obj: &InMemDicomObject,
    prefix: &str,
    table: &ConfidentialityTable,
    options: OptionSet,
    findings: &mut Vec<Finding>,
) {
    for e in obj.iter() {
        let tag = e.header().tag;
        let at = || format!("{prefix}{}", tag_text(tag));
        if tag.group() % 2 == 1 {
            // Table E.1-1, "Private Attributes (gggg,eeee) where gggg is odd": X,
            // unless the Retain Safe Private Option (113111) keeps them.
            if !options.contains(ProfileOption::RetainSafePrivate) {
                findings.push(Finding {
                    tag: tag_text(tag),
                    keyword: String::new(),
                    at: at(),
                    problem: "private attribute without the Retain Safe Private Option (113111)"
                        .into(),
                });
            }
            continue;
        }
        if let Some(rule) = table.rule(tag) {
            let kept = crate::table::ProfileOption::ALL
                .iter()
                .any(|o| options.contains(*o) && rule.kept_by.contains(*o));
            if rule.must_be_removed() && !kept && has_value(e.value()) {
                findings.push(Finding {
                    tag: tag_text(tag),
                    keyword: keyword(tag),
                    at: at(),
                    problem: format!(
                        "{} must be removed (Basic Profile action X) and no declared option keeps it",
                        rule.name
                    ),
                });
                continue;
            }
        }
        if let Value::Sequence(seq) = e.value() {
            for (i, item) in seq.items().iter().enumerate() {
                walk(
                    item,
                    &format!("{prefix}{}[{i}] > ", tag_text(tag)),
                    table,
                    options,
                    findings,
                );
            }
        }
    }
}
