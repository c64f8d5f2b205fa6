//! `clew demo`: a realistic national scenario recorded through the same
//! signed-event path as everything else.
//!
//! Five hospital trusts contribute chest X-ray and CT datasets, signing their
//! own events with their own keys (submitted as partner envelopes are). The
//! national platform's model team records, through the API's service key, a
//! de-identification transform, an annotation transform and a train /
//! validation / held-back test split; two training runs produce model versions
//! with model cards; external validation runs at two trusts with subgroup
//! metrics; a deployment goes shadow → live; then one trust's source dataset
//! version is withdrawn (identifiable data found) and the impact reaches the
//! live deployment.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clew_api::TokenStore;
use clew_events::proto::{self, event::Body, Role};
use clew_events::ProducerKey;
use clew_node::{Node, Outcome};
use prost::Message;

use crate::datadir::{DataDir, ADMIN_PRINCIPAL};
use crate::keyfiles;

/// The trusts: (site id, name, ODS-style code, region).
pub const TRUSTS: &[(&str, &str, &str, &str)] = &[
    (
        "northgate",
        "Northgate Hospitals NHS Foundation Trust",
        "RNG",
        "North East and Yorkshire",
    ),
    (
        "riverside",
        "Riverside University Hospitals NHS Trust",
        "RRV",
        "London",
    ),
    (
        "st-aldhelm",
        "St Aldhelm's Hospital NHS Foundation Trust",
        "RSA",
        "South West",
    ),
    (
        "moorland",
        "Moorland and Peaks Teaching Hospitals NHS Trust",
        "RMP",
        "Midlands",
    ),
    (
        "harbourside",
        "Harbourside Teaching Hospitals NHS Trust",
        "RHB",
        "South East",
    ),
];

/// Site id of the national platform (a trusted research environment).
pub const PLATFORM_SITE: &str = "national-imaging-platform";

/// Demo principals with API tokens: (id, display name, role).
pub const PEOPLE: &[(&str, &str, Role)] = &[
    (
        "governance-board",
        "National Imaging Governance Board",
        Role::Governance,
    ),
    (
        "ada-researcher",
        "Dr Ada Okafor (researcher)",
        Role::Researcher,
    ),
    ("model-team", "National Platform AI Team", Role::Ingest),
    ("eucaim-partner", "EUCAIM partner platform", Role::Partner),
];

/// The withdrawn source version.
pub const WITHDRAWN: &str = "northgate-cxr@1.0";

fn digest(label: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(label.as_bytes())))
}

fn coded(k: usize) -> proto::CodedConcept {
    let (code, meaning) = clew_events::sample::CID_7050[k];
    proto::CodedConcept {
        code_value: code.into(),
        coding_scheme_designator: "DCM".into(),
        code_meaning: meaning.into(),
    }
}

fn scanner(m: &str, model: &str) -> proto::ManufacturerModel {
    proto::ManufacturerModel {
        manufacturer: m.into(),
        manufacturer_model_name: model.into(),
    }
}

struct Summary {
    ct: bool,
    studies: u64,
    years: (u32, u32),
    scanners: Vec<proto::ManufacturerModel>,
    methods: Vec<usize>,
    identity_removed: bool,
}

fn summary(s: Summary) -> proto::ImagingSummary {
    let series = if s.ct { s.studies * 4 } else { s.studies * 2 };
    proto::ImagingSummary {
        modalities: if s.ct {
            vec!["CT".into()]
        } else {
            vec!["DX".into(), "CR".into()]
        },
        body_parts_examined: vec!["CHEST".into()],
        manufacturers: s.scanners,
        number_of_studies: s.studies,
        number_of_series: series,
        number_of_instances: if s.ct { series * 320 } else { series },
        study_date_from: format!("{}0301", s.years.0),
        study_date_to: format!("{}1130", s.years.1),
        slice_thickness_min_mm: s.ct.then_some(0.625),
        slice_thickness_max_mm: s.ct.then_some(1.25),
        deidentification_methods: s.methods.into_iter().map(coded).collect(),
        patient_identity_removed: s.identity_removed,
        number_of_patients: s.studies * 85 / 100,
    }
}

/// One step: who records it, and the body.
enum Signer {
    /// Through the API's service key, with this principal as the actor.
    Api(&'static str),
    /// Signed by a trust's own key.
    Trust(usize),
}

fn dataset(
    id: &str,
    title: &str,
    description: &str,
    site: &str,
    access: proto::AccessLevel,
    licence: &str,
    tags: &[&str],
) -> Body {
    Body::DatasetRegistered(proto::DatasetRegistered {
        dataset_id: id.into(),
        title: title.into(),
        description: description.into(),
        custodian_site_id: site.into(),
        access_level: access as i32,
        licence: licence.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    })
}

fn version(dataset: &str, s: proto::ImagingSummary, from: &[&str], notes: &str) -> Body {
    Body::DatasetVersionPublished(proto::DatasetVersionPublished {
        dataset_id: dataset.into(),
        version: "1.0".into(),
        manifest_digest: digest(&format!("manifest {dataset}")),
        imaging_summary: Some(s),
        was_derived_from: from.iter().map(|f| f.to_string()).collect(),
        release_notes: notes.into(),
    })
}

fn transform(
    id: &str,
    kind: proto::TransformKind,
    tool: (&str, &str),
    params: &[(&str, &str)],
    used: Vec<String>,
    generated: &[&str],
    job: &str,
) -> Body {
    Body::TransformRecorded(proto::TransformRecorded {
        transform_id: id.into(),
        kind: kind as i32,
        tool_name: tool.0.into(),
        tool_version: tool.1.into(),
        code_digest: digest(&format!("code {id}")),
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        used,
        generated: generated.iter().map(|g| g.to_string()).collect(),
        openlineage: Some(proto::OpenLineageRun {
            job_namespace: "national-imaging-platform".into(),
            job_name: job.into(),
            run_id: clew_events::new_event_id(),
            facets_json: String::new(),
        }),
    })
}

fn training_run(id: &str, model_version: &str, lr: &str, auroc: f64) -> Body {
    let input = |d: &str, role: proto::DatasetRole| proto::TrainingInput {
        dataset_version_id: d.into(),
        role: role as i32,
    };
    Body::TrainingRunRecorded(proto::TrainingRunRecorded {
        training_run_id: id.into(),
        model_name: "cxr-pneumonia-triage".into(),
        used: vec![
            input("nccid-cxr-train@1.0", proto::DatasetRole::Train),
            input("nccid-cxr-val@1.0", proto::DatasetRole::Validation),
        ],
        code_digest: digest(&format!("git {id}")),
        hyperparameters: [
            ("architecture", "DenseNet-121"),
            ("learning_rate", lr),
            ("epochs", "40"),
            ("batch_size", "64"),
            ("image_size", "512"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        environment: Some(proto::ComputeEnvironment {
            framework: "PyTorch".into(),
            framework_version: "2.4.0".into(),
            hardware: "4x NVIDIA A100 80GB".into(),
            container_image_digest: digest(&format!("image {id}")),
        }),
        metrics: [
            ("val_auroc".to_string(), auroc),
            ("val_loss".to_string(), 0.31),
        ]
        .into_iter()
        .collect(),
        generated_model_version_id: model_version.into(),
        openlineage: None,
    })
}

fn model_version(id: &str, version: &str, run: &str) -> Body {
    Body::ModelVersionRegistered(proto::ModelVersionRegistered {
        model_version_id: id.into(),
        model_name: "cxr-pneumonia-triage".into(),
        version: version.into(),
        artifact_digest: digest(&format!("weights {id}")),
        training_run_id: run.into(),
        model_card: Some(proto::ModelCard {
            intended_use: "Prioritise adult frontal chest radiographs with suspected pneumonia \
                           for earlier reporting by a radiologist."
                .into(),
            limitations: "Not validated for children, lateral views, portable ICU films or \
                          post-operative chests; performance drops on images from scanner \
                          models absent from training."
                .into(),
            regulatory_class: "UKCA Class IIa".into(),
            out_of_scope_use: "Autonomous reporting or discharge decisions.".into(),
            contact: "ai-governance@national-imaging.example.nhs.uk".into(),
        }),
    })
}

fn metric(name: &str, value: f64, subgroup: &str, ci: Option<(f64, f64)>) -> proto::Metric {
    proto::Metric {
        name: name.into(),
        value,
        subgroup: subgroup.into(),
        ci_lower: ci.map(|c| c.0),
        ci_upper: ci.map(|c| c.1),
    }
}

fn validation(id: &str, dataset_version: &str, site: &str, auroc: f64) -> Body {
    Body::ValidationRecorded(proto::ValidationRecorded {
        validation_id: id.into(),
        model_version_id: "cxr-pneumonia-triage-1.1".into(),
        dataset_version_id: dataset_version.into(),
        site_id: site.into(),
        metrics: vec![
            metric("auroc", auroc, "", Some((auroc - 0.02, auroc + 0.02))),
            metric("sensitivity", 0.88, "", Some((0.85, 0.91))),
            metric("specificity", 0.84, "", Some((0.81, 0.87))),
            metric("auroc", auroc - 0.01, "sex=F", None),
            metric("auroc", auroc + 0.01, "sex=M", None),
            metric("auroc", auroc - 0.04, "age>=80", None),
            metric(
                "auroc",
                auroc - 0.03,
                "manufacturer=Carestream Health",
                None,
            ),
        ],
        verdict: proto::Verdict::Pass as i32,
        summary: "Retrospective external validation on consecutive adult frontal chest \
                  radiographs; no clinically significant subgroup gap."
            .into(),
    })
}

fn deployment(status: proto::DeploymentStatus) -> Body {
    Body::DeploymentRecorded(proto::DeploymentRecorded {
        deployment_id: "riverside-cxr-triage".into(),
        model_version_id: "cxr-pneumonia-triage-1.1".into(),
        site_id: "riverside".into(),
        environment: "Riverside PACS worklist prioritisation".into(),
        status: status as i32,
        approvals: vec![proto::Approval {
            approver: "Dr Sam Patel, Clinical Safety Officer".into(),
            role: "DCB0160 clinical safety".into(),
            approved_at: Some(clew_events::now_timestamp()),
            reference: "RRV-CSC-2026-031".into(),
        }],
        validation_ids: vec!["val-riverside-2026".into()],
    })
}

fn steps(trust_keys: &[ProducerKey]) -> Vec<(Signer, Body)> {
    use proto::AccessLevel::{Controlled, Open, Restricted};
    let mut s: Vec<(Signer, Body)> = Vec::new();
    // Principals: people who act through the API, and the trusts' own keys.
    for (id, name, role) in PEOPLE {
        s.push((
            Signer::Api(ADMIN_PRINCIPAL),
            Body::PrincipalRegistered(proto::PrincipalRegistered {
                principal_id: id.to_string(),
                display_name: name.to_string(),
                roles: vec![*role as i32],
                verifier_key: String::new(),
                organisation: "National Imaging Platform".into(),
            }),
        ));
    }
    for (i, (site, name, _, _)) in TRUSTS.iter().enumerate() {
        s.push((
            Signer::Api(ADMIN_PRINCIPAL),
            Body::PrincipalRegistered(proto::PrincipalRegistered {
                principal_id: format!("{site}-gateway"),
                display_name: format!("{name} imaging gateway"),
                roles: vec![Role::Ingest as i32],
                verifier_key: trust_keys[i].verifier().to_text(),
                organisation: name.to_string(),
            }),
        ));
    }
    // Sites.
    s.push((
        Signer::Api("governance-board"),
        Body::SiteRegistered(proto::SiteRegistered {
            site_id: PLATFORM_SITE.into(),
            name: "National Imaging Platform trusted research environment".into(),
            kind: proto::SiteKind::TrustedResearchEnvironment as i32,
            organisation_code: "X26".into(),
            country: "GB".into(),
            region: "England".into(),
        }),
    ));
    for (site, name, code, region) in TRUSTS {
        s.push((
            Signer::Api("governance-board"),
            Body::SiteRegistered(proto::SiteRegistered {
                site_id: site.to_string(),
                name: name.to_string(),
                kind: proto::SiteKind::HospitalTrust as i32,
                organisation_code: code.to_string(),
                country: "GB".into(),
                region: region.to_string(),
            }),
        ));
    }
    // Each trust contributes a chest X-ray and a chest CT collection.
    let cxr_scanners = [
        ("Carestream Health", "DRX-Evolution"),
        ("SIEMENS", "Ysio Max"),
        ("Philips", "DigitalDiagnost C90"),
        ("FUJIFILM Corporation", "FDR Smart X"),
        ("GE Healthcare", "Definium 656 HD"),
    ];
    let ct_scanners = [
        ("SIEMENS", "SOMATOM Definition AS+"),
        ("GE MEDICAL SYSTEMS", "Revolution CT"),
        ("Canon Medical Systems", "Aquilion ONE"),
        ("Philips", "Ingenuity CT"),
        ("SIEMENS", "SOMATOM go.Top"),
    ];
    for (i, (site, name, _, _)) in TRUSTS.iter().enumerate() {
        let short = name.split(' ').next().unwrap_or(site);
        s.push((
            Signer::Trust(i),
            dataset(
                &format!("{site}-cxr"),
                &format!("{short} chest X-ray collection"),
                &format!(
                    "Adult frontal chest radiographs from {name}'s emergency and acute medical \
                     admissions, with radiology reports, pseudonymised at the trust gateway."
                ),
                site,
                Controlled,
                "National Imaging Platform Data Access Agreement",
                &["chest", "x-ray", "pneumonia", "covid-19"],
            ),
        ));
        s.push((
            Signer::Trust(i),
            version(
                &format!("{site}-cxr"),
                summary(Summary {
                    ct: false,
                    studies: 4_200 + 1_137 * i as u64,
                    years: (2020, 2025),
                    scanners: vec![scanner(cxr_scanners[i].0, cxr_scanners[i].1)],
                    methods: vec![0, 5],
                    identity_removed: true,
                }),
                &[],
                "First contribution: studies from March 2020 to November 2025.",
            ),
        ));
        s.push((
            Signer::Trust(i),
            dataset(
                &format!("{site}-ct"),
                &format!("{short} chest CT collection"),
                &format!(
                    "Thin-slice non-contrast chest CT from {name}, including COVID-19 \
                     pneumonitis and interstitial lung disease follow-up, pseudonymised at the \
                     trust gateway."
                ),
                site,
                Controlled,
                "National Imaging Platform Data Access Agreement",
                &["chest", "ct", "covid-19", "ild"],
            ),
        ));
        s.push((
            Signer::Trust(i),
            version(
                &format!("{site}-ct"),
                summary(Summary {
                    ct: true,
                    studies: 900 + 311 * i as u64,
                    years: (2020, 2025),
                    scanners: vec![scanner(ct_scanners[i].0, ct_scanners[i].1)],
                    methods: vec![0, 5],
                    identity_removed: true,
                }),
                &[],
                "First contribution.",
            ),
        ));
    }
    // National de-identified, annotated and split collections.
    let cxr_sources: Vec<String> = TRUSTS.iter().map(|t| format!("{}-cxr@1.0", t.0)).collect();
    let ct_sources: Vec<String> = TRUSTS.iter().map(|t| format!("{}-ct@1.0", t.0)).collect();
    let all_cxr = cxr_scanners
        .iter()
        .map(|(m, n)| scanner(m, n))
        .collect::<Vec<_>>();
    let all_ct = ct_scanners
        .iter()
        .map(|(m, n)| scanner(m, n))
        .collect::<Vec<_>>();
    let full_methods = vec![0, 1, 3, 5, 6];
    let national = |id: &str, title: &str, desc: &str, access| {
        (
            Signer::Api("model-team"),
            dataset(
                id,
                title,
                desc,
                PLATFORM_SITE,
                access,
                "CC-BY-4.0",
                &["chest", "national", "de-identified"],
            ),
        )
    };
    let cxr_refs: Vec<&str> = cxr_sources.iter().map(String::as_str).collect();
    let ct_refs: Vec<&str> = ct_sources.iter().map(String::as_str).collect();
    s.push(national(
        "nccid-cxr-deid",
        "National chest X-ray collection (de-identified)",
        "Chest radiographs from five trusts, de-identified under the DICOM PS3.15 Basic \
         Application Confidentiality Profile with pixel cleaning, retaining modified dates.",
        Open,
    ));
    s.push((
        Signer::Api("model-team"),
        version(
            "nccid-cxr-deid",
            summary(Summary {
                ct: false,
                studies: 32_385,
                years: (2020, 2025),
                scanners: all_cxr.clone(),
                methods: full_methods.clone(),
                identity_removed: true,
            }),
            &cxr_refs,
            "Pooled from the five trust contributions.",
        ),
    ));
    s.push(national(
        "nccid-ct-deid",
        "National chest CT collection (de-identified)",
        "Thin-slice chest CT from five trusts, de-identified with retained modified dates; \
         restricted because of rare-disease re-identification risk.",
        Restricted,
    ));
    s.push((
        Signer::Api("model-team"),
        version(
            "nccid-ct-deid",
            summary(Summary {
                ct: true,
                studies: 7_610,
                years: (2020, 2025),
                scanners: all_ct,
                methods: full_methods.clone(),
                identity_removed: true,
            }),
            &ct_refs,
            "Pooled from the five trust contributions.",
        ),
    ));
    s.push((
        Signer::Api("model-team"),
        transform(
            "deid-cxr-2026-01",
            proto::TransformKind::Deidentification,
            ("dicom-deid-pipeline", "3.2.0"),
            &[
                ("profile", "PS3.15 basic + clean pixel + modified dates"),
                ("burned_in_text_ocr", "true"),
            ],
            cxr_sources.clone(),
            &["nccid-cxr-deid@1.0"],
            "deidentify-cxr",
        ),
    ));
    s.push((
        Signer::Api("model-team"),
        transform(
            "deid-ct-2026-01",
            proto::TransformKind::Deidentification,
            ("dicom-deid-pipeline", "3.2.0"),
            &[(
                "profile",
                "PS3.15 basic + clean descriptors + modified dates",
            )],
            ct_sources,
            &["nccid-ct-deid@1.0"],
            "deidentify-ct",
        ),
    ));
    s.push(national(
        "nccid-cxr-annotated",
        "National chest X-ray collection with consensus pneumonia labels",
        "Radiologist consensus labels (pneumonia, consolidation, effusion) over the \
         de-identified national chest X-ray collection.",
        Open,
    ));
    s.push((
        Signer::Api("model-team"),
        version(
            "nccid-cxr-annotated",
            summary(Summary {
                ct: false,
                studies: 32_385,
                years: (2020, 2025),
                scanners: all_cxr.clone(),
                methods: full_methods.clone(),
                identity_removed: true,
            }),
            &["nccid-cxr-deid@1.0"],
            "Two-reader labels with adjudication by a third consultant radiologist.",
        ),
    ));
    s.push((
        Signer::Api("model-team"),
        transform(
            "annotate-cxr-2026-02",
            proto::TransformKind::Annotation,
            ("label-studio", "1.13.1"),
            &[("readers", "2"), ("adjudication", "consultant radiologist")],
            vec!["nccid-cxr-deid@1.0".into()],
            &["nccid-cxr-annotated@1.0"],
            "annotate-cxr",
        ),
    ));
    let splits = [
        ("nccid-cxr-train", "training split", 22_670, Open),
        ("nccid-cxr-val", "validation split", 3_238, Open),
        ("nccid-cxr-test", "held-back test split", 6_477, Restricted),
    ];
    for (id, what, studies, access) in splits {
        s.push(national(
            id,
            &format!("National chest X-ray {what}"),
            &format!(
                "Patient-level {what} of the annotated national chest X-ray collection \
                 (70/10/20, stratified by trust and label)."
            ),
            access,
        ));
        s.push((
            Signer::Api("model-team"),
            version(
                id,
                summary(Summary {
                    ct: false,
                    studies,
                    years: (2020, 2025),
                    scanners: all_cxr.clone(),
                    methods: full_methods.clone(),
                    identity_removed: true,
                }),
                &["nccid-cxr-annotated@1.0"],
                "Split seed 20260214.",
            ),
        ));
    }
    s.push((
        Signer::Api("model-team"),
        transform(
            "split-cxr-2026-02",
            proto::TransformKind::CohortSplit,
            ("cohort-splitter", "0.9.2"),
            &[
                ("ratios", "70/10/20"),
                ("unit", "patient"),
                ("seed", "20260214"),
            ],
            vec!["nccid-cxr-annotated@1.0".into()],
            &[
                "nccid-cxr-train@1.0",
                "nccid-cxr-val@1.0",
                "nccid-cxr-test@1.0",
            ],
            "split-cxr",
        ),
    ));
    // Two training runs, two model versions.
    for (run, mv, ver, lr, auroc) in [
        (
            "train-cxr-2026-03",
            "cxr-pneumonia-triage-1.0",
            "1.0.0",
            "0.0003",
            0.902,
        ),
        (
            "train-cxr-2026-04",
            "cxr-pneumonia-triage-1.1",
            "1.1.0",
            "0.0001",
            0.921,
        ),
    ] {
        s.push((Signer::Api("model-team"), training_run(run, mv, lr, auroc)));
        s.push((Signer::Api("model-team"), model_version(mv, ver, run)));
    }
    // Held-back test, then external validation at two trusts on local data.
    s.push((
        Signer::Api("model-team"),
        Body::ValidationRecorded(proto::ValidationRecorded {
            validation_id: "val-heldback-1.1".into(),
            model_version_id: "cxr-pneumonia-triage-1.1".into(),
            dataset_version_id: "nccid-cxr-test@1.0".into(),
            site_id: PLATFORM_SITE.into(),
            metrics: vec![metric("auroc", 0.917, "", Some((0.909, 0.925)))],
            verdict: proto::Verdict::Pass as i32,
            summary: "Held-back national test split, evaluated once.".into(),
        }),
    ));
    for (i, site, auroc) in [(1usize, "riverside", 0.912), (4, "harbourside", 0.905)] {
        let ds = format!("{site}-cxr-external");
        s.push((
            Signer::Trust(i),
            dataset(
                &ds,
                &format!("{} external validation chest X-rays 2026", TRUSTS[i].1),
                "Consecutive adult frontal chest radiographs from January to March 2026, \
                 never seen in training, with reports as reference standard.",
                site,
                Open,
                "CC-BY-4.0",
                &["chest", "x-ray", "external-validation"],
            ),
        ));
        s.push((
            Signer::Trust(i),
            version(
                &ds,
                summary(Summary {
                    ct: false,
                    studies: 1_500 + 200 * i as u64,
                    years: (2026, 2026),
                    scanners: vec![scanner(cxr_scanners[i].0, cxr_scanners[i].1)],
                    methods: full_methods.clone(),
                    identity_removed: true,
                }),
                &[],
                "Locally held; de-identified for validation only.",
            ),
        ));
        s.push((
            Signer::Trust(i),
            validation(
                &format!("val-{site}-2026"),
                &format!("{ds}@1.0"),
                site,
                auroc,
            ),
        ));
    }
    // Shadow, then live, at Riverside.
    s.push((
        Signer::Trust(1),
        deployment(proto::DeploymentStatus::Shadow),
    ));
    s.push((Signer::Trust(1), deployment(proto::DeploymentStatus::Live)));
    // The researcher may see the restricted CT collection under a grant.
    s.push((
        Signer::Api(ADMIN_PRINCIPAL),
        Body::AccessGranted(proto::AccessGranted {
            grant_id: "grant-ada-ct-2026".into(),
            grantee: Some(proto::access_granted::Grantee::PrincipalId(
                "ada-researcher".into(),
            )),
            dataset_id: "nccid-ct-deid".into(),
            purpose: "ILD progression model feasibility study (project IMG-2026-117)".into(),
            expires_at: Some(clew_events::now_timestamp_plus_days(365)),
        }),
    ));
    // Identifiable data found in one source version: withdraw it.
    s.push((
        Signer::Api("governance-board"),
        Body::DatasetVersionWithdrawn(proto::DatasetVersionWithdrawn {
            dataset_version_id: WITHDRAWN.into(),
            reason: proto::WithdrawalReason::IdentifiableDataFound as i32,
            detail: "Burned-in patient names found on 37 portable radiographs that escaped \
                     pixel cleaning; incident IG-2026-044."
                .into(),
        }),
    ));
    s
}

/// Whether the demo is already recorded in this data directory.
pub fn recorded(node: &Node) -> Result<bool> {
    Ok(node
        .catalog()
        .node(&format!("dataset-version/{WITHDRAWN}"))?
        .is_some())
}

/// Records the scenario; returns (events recorded, tokens written per principal).
pub async fn record(
    dir: &DataDir,
    node: &Node,
    tokens: &TokenStore,
) -> Result<(usize, BTreeMap<String, PathBuf>)> {
    let key_dir = dir.keys().join("demo");
    let origin = node.ledger().origin().to_string();
    let mut trust_keys = Vec::new();
    for (site, _, _, _) in TRUSTS {
        let path = key_dir.join(format!("{site}-gateway.key"));
        let key = if path.exists() {
            keyfiles::read_producer(&path)?
        } else {
            keyfiles::generate(
                &key_dir,
                &format!("{site}-gateway"),
                &format!("{origin}/{site}"),
            )?
            .2
        };
        trust_keys.push(key);
    }
    let all = steps(&trust_keys);
    let pb = crate::progress_bar(all.len() as u64, "demo");
    let mut n = 0;
    for (signer, body) in all {
        let kind = clew_events::kind_of(&body).as_str_name();
        let outcome = match signer {
            Signer::Api(actor) => node.record(actor, body, None).await?,
            Signer::Trust(i) => {
                let actor = format!("{}-gateway", TRUSTS[i].0);
                let env = clew_events::seal(&trust_keys[i], &actor, body, None, None)?;
                node.submit(env.encode_to_vec()).await?
            }
        };
        match outcome {
            Outcome::Accepted(_) => n += 1,
            // Already there from an interrupted earlier run.
            Outcome::Rejected(r) if r.reason == proto::RejectionReason::Conflict => {}
            Outcome::Rejected(r) => bail!("demo step {kind} was refused: {}", r.detail),
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let token_dir = dir.root().join("demo-tokens");
    std::fs::create_dir_all(&token_dir).with_context(|| token_dir.display().to_string())?;
    let mut written = BTreeMap::new();
    for (id, _, _) in PEOPLE {
        let path = token_dir.join(format!("{id}.token"));
        if !path.exists() {
            crate::server::write_secret(&path, &tokens.issue(id)?)?;
        }
        written.insert(id.to_string(), path);
    }
    Ok((n, written))
}

/// Example queries to try, with the token files to use.
pub fn examples(addr: &str, admin_token: &std::path::Path, dir: &DataDir) -> String {
    let tok = |who: &str| dir.root().join("demo-tokens").join(format!("{who}.token"));
    format!(
        r#"Try (tokens are in {tokens}):

  # Find de-identified chest imaging, with facet counts
  curl -s http://{addr}/graphql -H "Authorization: Bearer $(cat {researcher})" \
    -H 'content-type: application/json' \
    -d '{{"query":"{{ search(input: {{text: \"chest\", filters: [{{facet: \"modality\", values: [\"DX\"]}}]}}) {{ total hits {{ subject title }} facets {{ name values {{ value count }} }} }} }}"}}'

  # Which data made the live deployment? (governance)
  curl -s http://{addr}/graphql -H "Authorization: Bearer $(cat {governance})" \
    -H 'content-type: application/json' \
    -d '{{"query":"{{ lineage(subject: \"deployment/riverside-cxr-triage\", direction: UPSTREAM, depth: 10) {{ nodes {{ subject label affected }} edges {{ from relation to }} }} }}"}}'

  # What does the withdrawal of {withdrawn} affect?
  curl -s http://{addr}/graphql -H "Authorization: Bearer $(cat {governance})" \
    -H 'content-type: application/json' \
    -d '{{"query":"{{ impact(datasetVersion: \"{withdrawn}\") {{ liveDeployments affected {{ subject status }} }} }}"}}'

  # Prove it: the latest checkpoint, and an inclusion proof of the withdrawal
  curl -s http://{addr}/checkpoint -H "Authorization: Bearer $(cat {admin})"

Or open http://{addr}/graphql in a browser (GraphiQL) and set the header
  {{"Authorization": "Bearer <token>"}}
"#,
        tokens = dir.root().join("demo-tokens").display(),
        researcher = tok("ada-researcher").display(),
        governance = tok("governance-board").display(),
        admin = admin_token.display(),
        withdrawn = WITHDRAWN,
    )
}
