//! Instances described in the DICOM JSON Model (DICOM PS3.18 Annex F), as a
//! DICOMweb server answers WADO-RS metadata: each object is turned into the
//! same in-memory data set a Part 10 file gives, so the header Clew keeps and
//! the de-identification gate are the very ones of [`crate::scan`].
//!
//! Not `dicom-json`: that crate turns on serde_json's `preserve_order` for
//! the whole program (changing the key order of every JSON object Clew
//! writes) and reads an attribute given by `BulkDataURI` as empty, which
//! would let an identifying attribute served by reference pass the gate.

use base64::Engine;
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_object::InMemDicomObject;
use serde_json::Value as Json;

use crate::scan::{gate, read_header, FileOutcome};
use crate::table::ConfidentialityTable;

/// Why a DICOM JSON object could not be read: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {problem}")]
pub struct JsonModelError {
    /// The attribute path, e.g. "(0008,1110)[0] > (0010,1040)" ("" for the object).
    pub at: String,
    pub problem: String,
}

fn fail(at: &str, problem: impl Into<String>) -> JsonModelError {
    JsonModelError {
        at: if at.is_empty() {
            "the data set".into()
        } else {
            at.into()
        },
        problem: problem.into(),
    }
}

/// One data set in the DICOM JSON Model as an in-memory data set.
///
/// A value given by `BulkDataURI` (PS3.18 F.2.6) is not fetched: it becomes
/// a one-byte stand-in, so the attribute counts as present with a value.
pub fn object_from_json(value: &Json) -> Result<InMemDicomObject, JsonModelError> {
    object_at(value, "")
}

fn object_at(value: &Json, prefix: &str) -> Result<InMemDicomObject, JsonModelError> {
    let Json::Object(map) = value else {
        return Err(fail(prefix, "not a JSON object (PS3.18 F.2)"));
    };
    let mut elements = Vec::with_capacity(map.len());
    for (key, attribute) in map {
        // PS3.18 F.2.1.1: the key is the tag as eight hexadecimal digits.
        let tag = parse_tag(key).ok_or_else(|| {
            fail(
                prefix,
                format!("{key:?} is not a tag (eight hexadecimal digits)"),
            )
        })?;
        let at = format!("{prefix}({:04X},{:04X})", tag.group(), tag.element());
        elements.push(element(tag, attribute, &at)?);
    }
    Ok(InMemDicomObject::from_element_iter(elements))
}

fn parse_tag(key: &str) -> Option<Tag> {
    if key.len() != 8 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let n = u32::from_str_radix(key, 16).ok()?;
    Some(Tag((n >> 16) as u16, (n & 0xFFFF) as u16))
}

fn element(
    tag: Tag,
    attribute: &Json,
    at: &str,
) -> Result<DataElement<InMemDicomObject>, JsonModelError> {
    let Json::Object(a) = attribute else {
        return Err(fail(at, "the attribute is not a JSON object"));
    };
    // PS3.18 F.2.2: every attribute names its VR.
    let vr_text = a
        .get("vr")
        .and_then(Json::as_str)
        .ok_or_else(|| fail(at, "no \"vr\""))?;
    let vr: VR = vr_text
        .parse()
        .map_err(|_| fail(at, format!("{vr_text:?} is not a value representation")))?;
    let given = ["Value", "InlineBinary", "BulkDataURI"]
        .iter()
        .filter(|k| a.contains_key(**k))
        .count();
    if given > 1 {
        return Err(fail(
            at,
            "more than one of \"Value\", \"InlineBinary\" and \"BulkDataURI\" (PS3.18 F.2.2)",
        ));
    }
    if let Some(uri) = a.get("BulkDataURI") {
        if !uri.is_string() {
            return Err(fail(at, "\"BulkDataURI\" is not a string"));
        }
        // Present with a value the server keeps apart (never fetched).
        return Ok(DataElement::new(tag, vr, PrimitiveValue::from(vec![1u8])));
    }
    if let Some(b64) = a.get("InlineBinary") {
        let text = b64
            .as_str()
            .ok_or_else(|| fail(at, "\"InlineBinary\" is not a string"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| fail(at, format!("\"InlineBinary\" is not base64: {e}")))?;
        return Ok(DataElement::new(tag, vr, PrimitiveValue::from(bytes)));
    }
    let Some(values) = a.get("Value") else {
        // PS3.18 F.2.5: an attribute with no value.
        return Ok(DataElement::new(tag, vr, PrimitiveValue::Empty));
    };
    let Json::Array(values) = values else {
        return Err(fail(at, "\"Value\" is not an array"));
    };
    if vr == VR::SQ {
        let items = values
            .iter()
            .enumerate()
            .map(|(i, item)| object_at(item, &format!("{at}[{i}] > ")))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(DataElement::new(tag, vr, DataSetSequence::from(items)));
    }
    let mut texts = Vec::with_capacity(values.len());
    for v in values {
        texts.push(match v {
            Json::Null => String::new(),
            Json::String(s) => s.clone(),
            Json::Number(n) => n.to_string(),
            // PS3.18 F.2.2: a person name is an object of its component groups.
            Json::Object(pn) if vr == VR::PN => person_name(pn),
            other => {
                return Err(fail(
                    at,
                    format!("a value of VR {vr_text} cannot be {}", kind(other)),
                ))
            }
        });
    }
    Ok(DataElement::new(
        tag,
        vr,
        PrimitiveValue::Strs(texts.into_iter().collect()),
    ))
}

fn person_name(pn: &serde_json::Map<String, Json>) -> String {
    let part = |k: &str| pn.get(k).and_then(Json::as_str).unwrap_or_default();
    let joined = format!(
        "{}={}={}",
        part("Alphabetic"),
        part("Ideographic"),
        part("Phonetic")
    );
    joined.trim_end_matches('=').to_string()
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Reads one instance's DICOM JSON metadata and puts it through the gate,
/// exactly as [`crate::scan::scan_bytes`] does a file. `location` names it
/// in findings and reports (its WADO-RS path). Its path, SHA-256 and size
/// stay empty: no file was read.
pub fn scan_json(
    value: &Json,
    location: &str,
    table: &ConfidentialityTable,
) -> Result<FileOutcome, JsonModelError> {
    let obj = object_from_json(value)?;
    let header = read_header(&obj);
    if header.sop_instance_uid.is_empty()
        || header.study_instance_uid.is_empty()
        || header.series_instance_uid.is_empty()
    {
        return Err(fail(
            "",
            format!("{location}: no SOPInstanceUID (0008,0018), StudyInstanceUID (0020,000D) or SeriesInstanceUID (0020,000E)"),
        ));
    }
    let findings = gate(&obj, &header, table);
    Ok(FileOutcome::Instance {
        header: Box::new(header),
        findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deidentified() -> Json {
        json!({
            "00080018": {"vr": "UI", "Value": ["1.2.3.4"]},
            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
            "0020000E": {"vr": "UI", "Value": ["1.2.3.1"]},
            "00080060": {"vr": "CS", "Value": ["CT"]},
            "00180050": {"vr": "DS", "Value": [1.25]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "ANON^1"}]},
            "00120062": {"vr": "CS", "Value": ["YES"]},
            "00120063": {"vr": "LO", "Value": ["Basic Application Confidentiality Profile"]},
            "7FE00010": {"vr": "OW", "BulkDataURI": "http://pacs/bulk/7fe00010"}
        })
    }

    fn findings(v: &Json) -> Vec<(String, String)> {
        let table = ConfidentialityTable::standard().unwrap();
        match scan_json(v, "studies/1.2.3", &table).unwrap() {
            FileOutcome::Instance { findings, .. } => {
                findings.into_iter().map(|f| (f.tag, f.at)).collect()
            }
            FileOutcome::Skipped { reason, .. } => panic!("skipped: {reason}"),
        }
    }

    #[test]
    fn a_deidentified_instance_passes_and_its_header_is_read() {
        let table = ConfidentialityTable::standard().unwrap();
        let FileOutcome::Instance { header, findings } =
            scan_json(&deidentified(), "x", &table).unwrap()
        else {
            panic!("not an instance")
        };
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!(header.sop_instance_uid, "1.2.3.4");
        assert_eq!(header.modality, "CT");
        assert_eq!(header.slice_thickness_mm, Some(1.25));
        assert_eq!(header.path, "");
    }

    #[test]
    fn identifying_attributes_are_found_at_every_depth_even_when_served_by_reference() {
        let mut v = deidentified();
        v["00081110"] = json!({"vr": "SQ", "Value": [
            {"00081155": {"vr": "UI", "Value": ["1.2.9"]},
             "00101040": {"vr": "LO", "Value": ["1 High Street, Leeds"]}}
        ]});
        // OtherPatientIDs kept apart by the server: present, so refused.
        v["00101000"] = json!({"vr": "LO", "BulkDataURI": "http://pacs/bulk/00101000"});
        // An empty X attribute leaks nothing (PS3.18 F.2.5).
        v["00104000"] = json!({"vr": "LT"});
        assert_eq!(
            findings(&v),
            [
                ("(0010,1040)".into(), "(0008,1110)[0] > (0010,1040)".into()),
                ("(0010,1000)".into(), "(0010,1000)".into()),
            ]
        );
    }

    #[test]
    fn malformed_objects_are_refused_naming_the_place() {
        let table = ConfidentialityTable::standard().unwrap();
        let cases = [
            (json!([1]), "not a JSON object"),
            (json!({"0010": {"vr": "LO"}}), "is not a tag"),
            (json!({"00100010": {"Value": ["x"]}}), "no \"vr\""),
            (
                json!({"00100010": {"vr": "ZZ"}}),
                "not a value representation",
            ),
            (
                json!({"00100010": {"vr": "OB", "InlineBinary": "%%%"}}),
                "not base64",
            ),
            (
                json!({"00100010": {"vr": "OB", "InlineBinary": "AA==", "BulkDataURI": "x"}}),
                "more than one",
            ),
            (
                json!({"00081110": {"vr": "SQ", "Value": [{"00100010": {"vr": "LO", "Value": [true]}}]}}),
                "(0008,1110)[0] > (0010,0010): a value of VR LO cannot be a boolean",
            ),
            (
                json!({"00100010": {"vr": "LO", "Value": ["a"]}}),
                "no SOPInstanceUID",
            ),
        ];
        for (v, expected) in cases {
            let e = scan_json(&v, "studies/1", &table).expect_err(expected);
            assert!(e.to_string().contains(expected), "{e} lacks {expected}");
        }
    }
}
