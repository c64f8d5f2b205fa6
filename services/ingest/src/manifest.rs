//! The series-level manifest of a dataset version, its digest, the imaging
//! summary derived from it (the store that keeps it is `clew-blobs`).

use std::collections::{BTreeMap, BTreeSet};

use clew_events::proto;
use serde::{Deserialize, Serialize};

use crate::scan::{InstanceHeader, MethodCode};

/// Format name carried in every manifest.
pub const MANIFEST_FORMAT: &str = "clew.dicom-series-manifest/1";

/// One instance of a series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestInstance {
    /// Path relative to the ingested folder, `/`-separated; absent for an
    /// instance read over DICOMweb (it is found by its UIDs at the source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub sop_instance_uid: String,
    /// Lowercase hex SHA-256 of the whole Part 10 file; absent when it was
    /// not retrieved (DICOMweb without `--digests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Bytes of the Part 10 file, when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Where the instances of a manifest made from a PACS can be retrieved: a
/// partner asks `{baseUrl}/studies/{studyInstanceUid}/series/{seriesInstanceUid}`
/// (DICOM PS3.18 10.4, WADO-RS) for each series, and finds each instance by
/// its SOP Instance UID. Absent for a folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestSource {
    /// "dicomweb".
    pub kind: String,
    /// The endpoint's configured name (e.g. "riverside-research-pacs").
    pub name: String,
    /// The DICOMweb service's base URL (never with credentials).
    pub base_url: String,
}

/// One series, with the attributes that describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestSeries {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub modality: String,
    pub body_part_examined: String,
    pub manufacturer: String,
    pub manufacturer_model_name: String,
    pub slice_thickness_mm: Option<f64>,
    pub study_date: String,
    pub instance_count: u64,
    pub instances: Vec<ManifestInstance>,
}

/// What a dataset version contains. Its canonical form is the compact JSON
/// of this struct (fields in declaration order, absent options left out,
/// series sorted by study then series UID, instances by path then SOP
/// Instance UID), so the same files give the same digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    /// The PACS the instances were read from (absent for a folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ManifestSource>,
    pub series: Vec<ManifestSeries>,
}

fn first_non_empty<'a>(values: impl Iterator<Item = &'a str>) -> String {
    values
        .into_iter()
        .find(|v| !v.is_empty())
        .unwrap_or_default()
        .to_string()
}

impl Manifest {
    /// Groups instances into series. Per-series attributes come from the
    /// first instance (by path, then SOP Instance UID) that has them. An
    /// empty path, SHA-256 or size (an instance read over DICOMweb) is left
    /// out of the manifest.
    pub fn build(instances: &[InstanceHeader]) -> Self {
        let mut groups: BTreeMap<(&str, &str), Vec<&InstanceHeader>> = BTreeMap::new();
        for i in instances {
            groups
                .entry((&i.study_instance_uid, &i.series_instance_uid))
                .or_default()
                .push(i);
        }
        let series = groups
            .into_iter()
            .map(|((study, series), mut members)| {
                members.sort_by(|a, b| {
                    (&a.path, &a.sop_instance_uid).cmp(&(&b.path, &b.sop_instance_uid))
                });
                ManifestSeries {
                    study_instance_uid: study.to_string(),
                    series_instance_uid: series.to_string(),
                    modality: first_non_empty(members.iter().map(|m| m.modality.as_str())),
                    body_part_examined: first_non_empty(
                        members.iter().map(|m| m.body_part_examined.as_str()),
                    ),
                    manufacturer: first_non_empty(members.iter().map(|m| m.manufacturer.as_str())),
                    manufacturer_model_name: first_non_empty(
                        members.iter().map(|m| m.manufacturer_model_name.as_str()),
                    ),
                    slice_thickness_mm: members.iter().find_map(|m| m.slice_thickness_mm),
                    study_date: first_non_empty(members.iter().map(|m| m.study_date.as_str())),
                    instance_count: members.len() as u64,
                    instances: members
                        .iter()
                        .map(|m| ManifestInstance {
                            path: Some(m.path.clone()).filter(|p| !p.is_empty()),
                            sop_instance_uid: m.sop_instance_uid.clone(),
                            sha256: Some(m.sha256.clone()).filter(|h| !h.is_empty()),
                            size: Some(m.size).filter(|_| !m.sha256.is_empty()),
                        })
                        .collect(),
                }
            })
            .collect();
        Manifest {
            format: MANIFEST_FORMAT.into(),
            source: None,
            series,
        }
    }

    /// The same manifest, saying where its instances were read from.
    pub fn with_source(self, source: ManifestSource) -> Self {
        Manifest {
            source: Some(source),
            ..self
        }
    }

    /// The canonical bytes (what the digest is taken over and what is stored).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serialising plain structs, strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// "sha256:<64 lowercase hex>" of the canonical bytes.
    pub fn digest(&self) -> String {
        digest_of(&self.canonical_bytes())
    }

    /// Number of instances.
    pub fn instance_count(&self) -> u64 {
        self.series.iter().map(|s| s.instance_count).sum()
    }
}

/// "sha256:<hex>" of some bytes (the blob store's digest).
pub use clew_blobs::digest_of;

/// The imaging summary for search, from the manifest and the headers.
pub fn imaging_summary(manifest: &Manifest, instances: &[InstanceHeader]) -> proto::ImagingSummary {
    let sorted = |it: &mut dyn Iterator<Item = &str>| -> Vec<String> {
        it.filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let modalities = sorted(&mut manifest.series.iter().map(|s| s.modality.as_str()));
    let body_parts = sorted(
        &mut manifest
            .series
            .iter()
            .map(|s| s.body_part_examined.as_str()),
    );
    let manufacturers: BTreeSet<(String, String)> = manifest
        .series
        .iter()
        .filter(|s| !s.manufacturer.is_empty() || !s.manufacturer_model_name.is_empty())
        .map(|s| (s.manufacturer.clone(), s.manufacturer_model_name.clone()))
        .collect();
    // DA is YYYYMMDD; anything else is left out of the range.
    let dates: BTreeSet<&str> = instances
        .iter()
        .map(|i| i.study_date.as_str())
        .filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    let thickness: Vec<f64> = instances
        .iter()
        .filter_map(|i| i.slice_thickness_mm)
        .collect();
    let methods: BTreeSet<&MethodCode> = instances.iter().flat_map(|i| &i.method_codes).collect();
    let studies: BTreeSet<&str> = manifest
        .series
        .iter()
        .map(|s| s.study_instance_uid.as_str())
        .collect();
    let patients: BTreeSet<&str> = instances
        .iter()
        .map(|i| i.patient_id.as_str())
        .filter(|p| !p.is_empty())
        .collect();
    proto::ImagingSummary {
        modalities,
        body_parts_examined: body_parts,
        manufacturers: manufacturers
            .into_iter()
            .map(|(m, model)| proto::ManufacturerModel {
                manufacturer: m,
                manufacturer_model_name: model,
            })
            .collect(),
        number_of_studies: studies.len() as u64,
        number_of_series: manifest.series.len() as u64,
        number_of_instances: manifest.instance_count(),
        study_date_from: dates.first().map(|d| d.to_string()).unwrap_or_default(),
        study_date_to: dates.last().map(|d| d.to_string()).unwrap_or_default(),
        slice_thickness_min_mm: thickness.iter().copied().reduce(f64::min),
        slice_thickness_max_mm: thickness.iter().copied().reduce(f64::max),
        deidentification_methods: methods
            .into_iter()
            .map(|c| proto::CodedConcept {
                code_value: c.code_value.clone(),
                coding_scheme_designator: c.coding_scheme_designator.clone(),
                code_meaning: c.code_meaning.clone(),
            })
            .collect(),
        patient_identity_removed: !instances.is_empty()
            && instances.iter().all(|i| i.patient_identity_removed),
        number_of_patients: patients.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(path: &str, series: &str, thickness: f64, date: &str) -> InstanceHeader {
        InstanceHeader {
            path: path.into(),
            sha256: format!("{:064x}", path.len()),
            size: 10,
            sop_instance_uid: format!("1.2.{}", path.len()),
            study_instance_uid: "1.2.3".into(),
            series_instance_uid: series.into(),
            modality: "CT".into(),
            body_part_examined: "CHEST".into(),
            manufacturer: "GE MEDICAL SYSTEMS".into(),
            manufacturer_model_name: "RHAPSODE".into(),
            slice_thickness_mm: Some(thickness),
            study_date: date.into(),
            patient_id: "PSEUDO-1".into(),
            patient_identity_removed: true,
            ..Default::default()
        }
    }

    #[test]
    fn the_digest_does_not_depend_on_the_order_files_were_read_in() {
        let a = vec![
            instance("b/2.dcm", "1.2.3.2", 1.25, "20040119"),
            instance("a/1.dcm", "1.2.3.1", 5.0, "20040118"),
            instance("a/10.dcm", "1.2.3.1", 5.0, "20040118"),
        ];
        let mut b = a.clone();
        b.reverse();
        let (ma, mb) = (Manifest::build(&a), Manifest::build(&b));
        assert_eq!(ma.digest(), mb.digest());
        assert_eq!(ma.series.len(), 2);
        assert_eq!(ma.series[0].instances[0].path.as_deref(), Some("a/1.dcm"));
        let s = imaging_summary(&ma, &a);
        assert_eq!(s.number_of_series, 2);
        assert_eq!(s.number_of_studies, 1);
        assert_eq!(s.number_of_instances, 3);
        assert_eq!(s.slice_thickness_min_mm, Some(1.25));
        assert_eq!(s.slice_thickness_max_mm, Some(5.0));
        assert_eq!(
            (s.study_date_from.as_str(), s.study_date_to.as_str()),
            ("20040118", "20040119")
        );
        assert_eq!(s.number_of_patients, 1);
        // A changed file changes the digest.
        b[0].sha256 = "f".repeat(64);
        assert_ne!(Manifest::build(&b).digest(), ma.digest());
    }

    #[test]
    fn a_folder_manifest_keeps_the_bytes_it_always_had_and_a_pacs_one_says_where_it_is() {
        let one = vec![instance("a/1.dcm", "1.2.3.1", 5.0, "20040118")];
        // The canonical form of a folder manifest, as every earlier version
        // wrote it: the digests already in ledgers stay the same.
        let folder = Manifest::build(&one);
        assert_eq!(
            String::from_utf8(folder.canonical_bytes()).unwrap(),
            format!(
                r#"{{"format":"clew.dicom-series-manifest/1","series":[{{"studyInstanceUid":"1.2.3","seriesInstanceUid":"1.2.3.1","modality":"CT","bodyPartExamined":"CHEST","manufacturer":"GE MEDICAL SYSTEMS","manufacturerModelName":"RHAPSODE","sliceThicknessMm":5.0,"studyDate":"20040118","instanceCount":1,"instances":[{{"path":"a/1.dcm","sopInstanceUid":"1.2.7","sha256":"{:064x}","size":10}}]}}]}}"#,
                7
            )
        );
        // Read over DICOMweb without digests: no path, hash or size; the source.
        let mut pacs = one.clone();
        pacs[0].path.clear();
        pacs[0].sha256.clear();
        let m = Manifest::build(&pacs).with_source(ManifestSource {
            kind: "dicomweb".into(),
            name: "riverside-pacs".into(),
            base_url: "https://pacs.example/dicom-web".into(),
        });
        let text = String::from_utf8(m.canonical_bytes()).unwrap();
        assert!(
            text.contains(r#""source":{"kind":"dicomweb","name":"riverside-pacs","baseUrl":"https://pacs.example/dicom-web"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#""instances":[{"sopInstanceUid":"1.2.7"}]"#),
            "{text}"
        );
        let back: Manifest = serde_json::from_slice(&m.canonical_bytes()).unwrap();
        assert_eq!(back, m);
    }
}
