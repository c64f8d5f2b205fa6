//! Realistic sample events (NHS-style sites, chest imaging datasets, their
//! versions and the algorithms trained on them) for benchmarks, tests and the
//! demo. Deterministic: the same index always yields the same body.

use crate::proto::{self, event::Body};

const MODALITIES: &[&str] = &["CT", "DX", "CR", "MR", "PT"];
const BODY_PARTS: &[&str] = &["CHEST", "ABDOMEN", "HEAD", "PELVIS", "SPINE"];
const SCANNERS: &[(&str, &str)] = &[
    ("SIEMENS", "SOMATOM Definition AS+"),
    ("GE MEDICAL SYSTEMS", "Revolution CT"),
    ("Philips", "Ingenuity CT"),
    ("Canon Medical Systems", "Aquilion ONE"),
    ("SIEMENS", "Ysio Max"),
    ("Carestream Health", "DRX-Evolution"),
];
/// DICOM PS3.16 CID 7050 de-identification method codes (scheme DCM).
pub const CID_7050: &[(&str, &str)] = &[
    ("113100", "Basic Application Confidentiality Profile"),
    ("113101", "Clean Pixel Data Option"),
    ("113104", "Clean Structured Content Option"),
    ("113105", "Clean Descriptors Option"),
    (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    ("113108", "Retain Patient Characteristics Option"),
    ("113109", "Retain Device Identity Option"),
    ("113111", "Retain Safe Private Option"),
];
const REGIONS: &[&str] = &[
    "London",
    "North West",
    "Midlands",
    "South West",
    "North East and Yorkshire",
    "East of England",
    "South East",
];

/// A site id for index `i`.
pub fn site_id(i: u64) -> String {
    format!("site-{i:04}")
}

/// A dataset id for index `i`.
pub fn dataset_id(i: u64) -> String {
    format!("ds-{i:06}")
}

/// `SiteRegistered` for a hospital trust.
pub fn site(i: u64) -> Body {
    Body::SiteRegistered(proto::SiteRegistered {
        site_id: site_id(i),
        name: format!(
            "{} Hospitals NHS Foundation Trust {i}",
            REGIONS[(i % 7) as usize]
        ),
        kind: proto::SiteKind::HospitalTrust as i32,
        organisation_code: format!("R{:04}", i % 10_000),
        country: "GB".into(),
        region: REGIONS[(i % 7) as usize].into(),
    })
}

/// `DatasetRegistered` for dataset `i` held by `site`.
pub fn dataset(i: u64, site: u64) -> Body {
    let modality = MODALITIES[(i % 5) as usize];
    let part = BODY_PARTS[(i / 5 % 5) as usize];
    let access = match i % 10 {
        0..=5 => proto::AccessLevel::Open,
        6..=8 => proto::AccessLevel::Restricted,
        _ => proto::AccessLevel::Controlled,
    };
    Body::DatasetRegistered(proto::DatasetRegistered {
        dataset_id: dataset_id(i),
        title: format!(
            "{part} {modality} imaging cohort {i} ({})",
            REGIONS[(site % 7) as usize]
        ),
        description: format!(
            "Routinely collected {modality} studies of the {} from adult patients, \
             de-identified at source under the Basic Application Confidentiality Profile \
             and curated for AI development and validation.",
            part.to_lowercase()
        ),
        custodian_site_id: site_id(site),
        access_level: access as i32,
        licence: if i.is_multiple_of(3) {
            "CC-BY-4.0".into()
        } else {
            "NCCID Data Access Agreement".into()
        },
        tags: vec![
            modality.to_lowercase(),
            part.to_lowercase(),
            "covid-19".into(),
            "research".into(),
        ],
    })
}

fn digest_of(label: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(label.as_bytes())))
}

/// An imaging summary for dataset `i`, version `v` (about 700 bytes encoded).
pub fn imaging_summary(i: u64, v: u64) -> proto::ImagingSummary {
    let studies = 200 + (i * 37 + v * 11) % 5000;
    let scanner_a = SCANNERS[(i % 6) as usize];
    let scanner_b = SCANNERS[((i + 2) % 6) as usize];
    let year = 2015 + (i % 9);
    let methods = [0usize, 1, 4, 5 + (i % 4) as usize]
        .iter()
        .map(|&k| proto::CodedConcept {
            code_value: CID_7050[k].0.into(),
            coding_scheme_designator: "DCM".into(),
            code_meaning: CID_7050[k].1.into(),
        })
        .collect();
    proto::ImagingSummary {
        modalities: vec![MODALITIES[(i % 5) as usize].into(), "SR".into()],
        body_parts_examined: vec![BODY_PARTS[(i / 5 % 5) as usize].into()],
        manufacturers: [scanner_a, scanner_b, SCANNERS[((i + 4) % 6) as usize]]
            .iter()
            .map(|s| proto::ManufacturerModel {
                manufacturer: s.0.into(),
                manufacturer_model_name: s.1.into(),
            })
            .collect(),
        number_of_studies: studies,
        number_of_series: studies * 3,
        number_of_instances: studies * 3 * 180,
        study_date_from: format!("{year}0101"),
        study_date_to: format!("{}1231", year + 1),
        slice_thickness_min_mm: Some(0.625 + (i % 3) as f64 * 0.375),
        slice_thickness_max_mm: Some(5.0),
        deidentification_methods: methods,
        patient_identity_removed: true,
        number_of_patients: studies * 9 / 10,
    }
}

/// The series manifest sample version `v` of any dataset cites, in Clew's
/// DICOM series manifest format (`clew.dicom-series-manifest/1`: one
/// series, one instance). It depends on the version number only: within a
/// dataset each version has its own (the ledger refuses a version citing its
/// dataset's earlier content), and a load stream of any length needs only a
/// few in the blob store (see [`stream_manifests`]).
pub fn manifest(v: u64) -> Vec<u8> {
    let scanner = SCANNERS[(v % 6) as usize];
    let file = format!("sample-{v}");
    serde_json::json!({
        "format": "clew.dicom-series-manifest/1",
        "series": [{
            "studyInstanceUid": format!("2.25.{}", 1000 + v),
            "seriesInstanceUid": format!("2.25.{}.1", 1000 + v),
            "modality": MODALITIES[(v % 5) as usize],
            "bodyPartExamined": BODY_PARTS[(v / 5 % 5) as usize],
            "manufacturer": scanner.0,
            "manufacturerModelName": scanner.1,
            "sliceThicknessMm": 1.25,
            "studyDate": format!("{}0101", 2015 + v % 9),
            "instanceCount": 1,
            "instances": [{
                "path": format!("{file}/1.dcm"),
                "sopInstanceUid": format!("2.25.{}.1.1", 1000 + v),
                "sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(file.as_bytes())),
                "size": 524_288,
            }],
        }],
    })
    .to_string()
    .into_bytes()
}

/// Every manifest the versions of a [`stream_body`] stream of `total`
/// events cite (to put into a blob store before the stream is sequenced by
/// a ledger that checks cited content).
pub fn stream_manifests(total: u64) -> impl Iterator<Item = Vec<u8>> {
    let datasets = (total / 5).clamp(1, 20_000);
    (1..=total / datasets + 2).map(manifest)
}

/// `DatasetVersionPublished` for dataset `i`, version `v` (1-based).
pub fn dataset_version(i: u64, v: u64, derived_from: Vec<String>) -> Body {
    Body::DatasetVersionPublished(proto::DatasetVersionPublished {
        dataset_id: dataset_id(i),
        version: format!("{v}.0"),
        manifest_digest: {
            use sha2::{Digest, Sha256};
            format!("sha256:{}", hex::encode(Sha256::digest(manifest(v))))
        },
        imaging_summary: Some(imaging_summary(i, v)),
        was_derived_from: derived_from,
        release_notes: format!(
            "Release {v}.0: adds studies received up to the monthly cut-off; \
             re-run of the de-identification pipeline with burned-in annotation \
             detection; corrected {} series with missing BodyPartExamined and {} \
             with inconsistent SliceThickness; excluded studies from patients who \
             registered a national data opt-out since the previous release.",
            (i + v) % 40,
            (i * 3 + v) % 17
        ),
    })
}

/// Dataset version id of dataset `i`, version `v`.
pub fn dataset_version_id(i: u64, v: u64) -> String {
    format!("{}@{v}.0", dataset_id(i))
}

/// `TransformRecorded`: a de-identification or annotation step.
pub fn transform(id: &str, used: Vec<String>, generated: Vec<String>) -> Body {
    Body::TransformRecorded(proto::TransformRecorded {
        transform_id: id.into(),
        kind: proto::TransformKind::Deidentification as i32,
        tool_name: "clew-deid".into(),
        tool_version: "2.4.1".into(),
        code_digest: digest_of(id),
        parameters: [
            (
                "profile".to_string(),
                "basic+retain-longitudinal-dates".to_string(),
            ),
            ("pixel_scrub".to_string(), "true".to_string()),
        ]
        .into_iter()
        .collect(),
        used,
        generated,
        openlineage: Some(proto::OpenLineageRun {
            job_namespace: "nhs-imaging".into(),
            job_name: "deidentify".into(),
            run_id: "01890a5d-ac96-774b-bcce-b302099a8057".into(),
            facets_json: String::new(),
        }),
    })
}

/// `TrainingRunRecorded` with train / validation / test inputs.
pub fn training_run(
    id: &str,
    model_version_id: &str,
    train: &str,
    validation: &str,
    test: &str,
) -> Body {
    let input = |d: &str, role: proto::DatasetRole| proto::TrainingInput {
        dataset_version_id: d.into(),
        role: role as i32,
    };
    Body::TrainingRunRecorded(proto::TrainingRunRecorded {
        training_run_id: id.into(),
        model_name: "chest-ct-covid-classifier".into(),
        used: vec![
            input(train, proto::DatasetRole::Train),
            input(validation, proto::DatasetRole::Validation),
            input(test, proto::DatasetRole::Test),
        ],
        code_digest: "git:4f2a9c1e7b3d".into(),
        hyperparameters: [
            ("learning_rate", "0.0003"),
            ("epochs", "60"),
            ("batch_size", "32"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        environment: Some(proto::ComputeEnvironment {
            framework: "PyTorch".into(),
            framework_version: "2.4.0".into(),
            hardware: "4x NVIDIA A100 80GB".into(),
            container_image_digest: digest_of("image"),
        }),
        metrics: [
            ("auroc".to_string(), 0.91),
            ("sensitivity".to_string(), 0.87),
        ]
        .into_iter()
        .collect(),
        generated_model_version_id: model_version_id.into(),
        openlineage: None,
    })
}

/// `ModelVersionRegistered` produced by `training_run_id`.
pub fn model_version(id: &str, training_run_id: &str) -> Body {
    Body::ModelVersionRegistered(proto::ModelVersionRegistered {
        model_version_id: id.into(),
        model_name: "chest-ct-covid-classifier".into(),
        version: "1.0.0".into(),
        artifact_digest: digest_of(id),
        training_run_id: training_run_id.into(),
        model_card: Some(proto::ModelCard {
            intended_use: "Triage support for suspected COVID-19 pneumonia on chest CT in adults."
                .into(),
            limitations: "Not validated on paediatric patients or contrast-enhanced studies."
                .into(),
            regulatory_class: "UKCA Class IIa".into(),
            out_of_scope_use: "Standalone diagnosis.".into(),
            contact: "ai-governance@example.nhs.uk".into(),
        }),
    })
}

/// `ValidationRecorded` of a model version on a dataset version at a site.
pub fn validation(
    id: &str,
    model_version_id: &str,
    dataset_version_id: &str,
    site: &str,
    pass: bool,
) -> Body {
    Body::ValidationRecorded(proto::ValidationRecorded {
        validation_id: id.into(),
        model_version_id: model_version_id.into(),
        dataset_version_id: dataset_version_id.into(),
        site_id: site.into(),
        metrics: vec![
            proto::Metric {
                name: "auroc".into(),
                value: 0.9,
                subgroup: String::new(),
                ci_lower: Some(0.88),
                ci_upper: Some(0.92),
            },
            proto::Metric {
                name: "auroc".into(),
                value: 0.89,
                subgroup: "sex=F".into(),
                ci_lower: None,
                ci_upper: None,
            },
        ],
        verdict: if pass {
            proto::Verdict::Pass
        } else {
            proto::Verdict::Fail
        } as i32,
        summary: "Local retrospective validation on consecutive cases.".into(),
    })
}

/// `DeploymentRecorded` with the given status.
pub fn deployment(
    id: &str,
    model_version_id: &str,
    site: &str,
    status: proto::DeploymentStatus,
    validations: Vec<String>,
) -> Body {
    Body::DeploymentRecorded(proto::DeploymentRecorded {
        deployment_id: id.into(),
        model_version_id: model_version_id.into(),
        site_id: site.into(),
        environment: "production PACS integration".into(),
        status: status as i32,
        approvals: vec![proto::Approval {
            approver: "Clinical Safety Officer".into(),
            role: "DCB0160".into(),
            approved_at: None,
            reference: "CSC-2026-014".into(),
        }],
        validation_ids: validations,
    })
}

/// `PrincipalRegistered` for a producer key.
pub fn principal(id: &str, key: &crate::ProducerKey, roles: &[proto::Role]) -> Body {
    Body::PrincipalRegistered(proto::PrincipalRegistered {
        principal_id: id.into(),
        display_name: format!("Principal {id}"),
        roles: roles.iter().map(|r| *r as i32).collect(),
        verifier_key: key.verifier().to_text(),
        organisation: String::new(),
    })
}

/// Number of hospital trusts in [`stream_body`]'s synthetic nation.
pub const STREAM_SITES: u64 = 200;

/// Body of event `i` of a synthetic national stream of `total` events.
///
/// Order: 200 sites, then datasets (a fifth of the stream, at most 20,000),
/// then dataset versions interleaved with transforms (every 97th) and
/// training runs (every 499th) that cite earlier versions.
pub fn stream_body(i: u64, total: u64) -> Body {
    let datasets = (total / 5).clamp(1, 20_000);
    if i < STREAM_SITES {
        return site(i);
    }
    let i = i - STREAM_SITES;
    if i < datasets {
        return dataset(i, i % STREAM_SITES);
    }
    let k = i - datasets;
    let d = k % datasets;
    if k >= datasets && k % 97 == 96 {
        return transform(
            &format!("tf-{k}"),
            vec![
                dataset_version_id(d, 1),
                dataset_version_id((d + 1) % datasets, 1),
            ],
            vec![],
        );
    }
    if k >= datasets && k % 499 == 498 {
        return training_run(
            &format!("run-{k}"),
            &format!("mv-{k}"),
            &dataset_version_id(d, 1),
            &dataset_version_id((d + 1) % datasets, 1),
            &dataset_version_id((d + 2) % datasets, 1),
        );
    }
    let v = k / datasets + 1;
    let derived = if v > 1 {
        vec![dataset_version_id(d, 1)]
    } else {
        vec![]
    };
    dataset_version(d, v, derived)
}
