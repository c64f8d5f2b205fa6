//! `clew ingest dicom` on the real DICOM files shipped in the pydicom wheel
//! (fetched by tests/setup.sh into target/dicom-files): as shipped they are
//! identifiable and refused; de-identified copies made here with dicom-object
//! pass, are published once through the signed path, and re-runs are refused.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Output;

use clew_ingest::ConfidentialityTable;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use support::server::{read_token, Server};
use support::{clew, ok};

/// The real files, or a panic saying how to get them.
pub(crate) fn real_files() -> PathBuf {
    let dir = support::repo_root().join("target/dicom-files");
    assert!(
        dir.join("CT_small.dcm").is_file(),
        "the real DICOM test files are missing from {}: run tests/setup.sh (or tests/dicom/fetch.sh)",
        dir.display()
    );
    dir
}

/// Files that are valid DICOM and carry identifying data as shipped.
pub(crate) const SOURCES: &[&str] = &[
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "JPEG2000.dcm",
    "rtplan.dcm",
    "waveform_ecg.dcm",
];

fn code(value: &str, meaning: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)),
        DataElement::new(
            tags::CODING_SCHEME_DESIGNATOR,
            VR::SH,
            PrimitiveValue::from("DCM"),
        ),
        DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
    ])
}

/// Removes what the Basic Profile removes (pure X, private attributes),
/// at every depth, keeping what `keep` says.
fn strip(obj: &mut InMemDicomObject, table: &ConfidentialityTable, keep: &dyn Fn(Tag) -> bool) {
    let doomed: Vec<Tag> = obj
        .tags()
        .filter(|t| !keep(*t))
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
                    strip(item, table, keep);
                }
            }
        });
    }
}

/// Options a copy declares, beyond the Basic Profile (113100).
#[derive(Clone, Copy, Default)]
pub(crate) struct Declared {
    pub(crate) patient_characteristics: bool,
    pub(crate) safe_private: bool,
}

/// A de-identified copy of `src`: pseudonymised PatientID, dummy name,
/// identity-removed marks and method codes; PatientAge kept when Retain
/// Patient Characteristics is declared.
pub(crate) fn deidentify(src: &Path, dst: &Path, n: usize, declared: Declared) -> InMemDicomObject {
    let table = ConfidentialityTable::standard().expect("table");
    let mut file =
        dicom_object::open_file(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let keep = |t: Tag| {
        (declared.patient_characteristics && t == tags::PATIENT_AGE)
            || (declared.safe_private && t.group() % 2 == 1)
    };
    strip(&mut file, &table, &keep);
    file.put(DataElement::new(
        tags::PATIENT_NAME,
        VR::PN,
        PrimitiveValue::from(format!("ANON^{n:04}")),
    ));
    file.put(DataElement::new(
        tags::PATIENT_ID,
        VR::LO,
        PrimitiveValue::from(format!("PSEUDO-{:04}", n % 3)),
    ));
    file.put(DataElement::new(
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        PrimitiveValue::Empty,
    ));
    file.put(DataElement::new(
        tags::PATIENT_IDENTITY_REMOVED,
        VR::CS,
        PrimitiveValue::from("YES"),
    ));
    file.put(DataElement::new(
        tags::DEIDENTIFICATION_METHOD,
        VR::LO,
        PrimitiveValue::from("Basic Application Confidentiality Profile"),
    ));
    let mut codes = vec![code("113100", "Basic Application Confidentiality Profile")];
    if declared.patient_characteristics {
        codes.push(code("113108", "Retain Patient Characteristics Option"));
    }
    if declared.safe_private {
        codes.push(code("113111", "Retain Safe Private Option"));
    }
    file.put(DataElement::new(
        tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(codes),
    ));
    file.write_to_file(dst)
        .unwrap_or_else(|e| panic!("{}: {e}", dst.display()));
    (*file).clone()
}

pub(crate) fn ingest(folder: &Path, report: &Path, extra: &[&str]) -> (Output, Json) {
    let mut args = vec![std::ffi::OsString::from("dicom"), folder.into()];
    args.extend(extra.iter().map(Into::into));
    ingest_with(&args, report)
}

/// `clew ingest <args…> --report <report>`: its output and the report it wrote.
pub(crate) fn ingest_with(args: &[std::ffi::OsString], report: &Path) -> (Output, Json) {
    let out = clew()
        .arg("ingest")
        .args(args)
        .arg("--report")
        .arg(report)
        .output()
        .expect("clew runs");
    let report = std::fs::read_to_string(report)
        .map(|t| serde_json::from_str(&t).expect("report is JSON"))
        .unwrap_or(Json::Null);
    (out, report)
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn ledger_size(data: &str) -> u64 {
    let note = ok(&["checkpoint", "--data-dir", data]);
    note.lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .expect("checkpoint size line")
}

/// A demo data directory (sites and datasets registered, e.g. riverside-cxr held by riverside).
pub(crate) fn demo(tmp: &Path) -> String {
    let data = tmp.join("data");
    let data_str = data.to_string_lossy().into_owned();
    ok(&["demo", "--data-dir", &data_str]);
    data_str
}

fn deidentified_folder(dir: &Path, declared: Declared) -> usize {
    let src = real_files();
    std::fs::create_dir_all(dir.join("series")).unwrap();
    for (n, name) in SOURCES.iter().enumerate() {
        deidentify(&src.join(name), &dir.join("series").join(name), n, declared);
    }
    SOURCES.len()
}

#[test]
fn files_as_shipped_are_refused_naming_each_file_and_tag_and_nothing_is_published() {
    let tmp = tempfile::tempdir().unwrap();
    let data = demo(tmp.path());
    let before = ledger_size(&data);
    let manifests =
        || std::fs::read_dir(Path::new(&data).join("manifests/sha256")).map_or(0, |d| d.count());
    let manifests_before = manifests();
    let raw = tmp.path().join("raw");
    support::copy_dir(&real_files(), &raw);
    let report_path = tmp.path().join("report.json");
    let (out, report) = ingest(
        &raw,
        &report_path,
        &[
            "--dataset",
            "riverside-cxr",
            "--version",
            "9.0",
            "--data-dir",
            &data,
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit status; stderr:\n{}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("refused CT_small.dcm: (0012,0062) PatientIdentityRemoved"),
        "{err}"
    );
    assert_eq!(report["outcome"], "refused-identifiable");
    let refused = report["refusedFiles"].as_array().unwrap();
    let ct = refused
        .iter()
        .find(|f| f["path"] == "CT_small.dcm")
        .expect("CT_small refused");
    let ct_tags: Vec<&str> = ct["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["tag"].as_str().unwrap())
        .collect();
    assert!(ct_tags.contains(&"(0012,0062)"), "{ct_tags:?}");
    // Private attributes and X attributes are named too.
    let ecg = refused
        .iter()
        .find(|f| f["path"] == "waveform_ecg.dcm")
        .expect("ECG refused");
    let ecg_findings = ecg["findings"].as_array().unwrap();
    assert!(
        ecg_findings.iter().any(|f| f["keyword"] == "PatientAge"),
        "{ecg:#}"
    );
    assert!(ecg_findings
        .iter()
        .any(|f| f["problem"].as_str().unwrap().contains("private attribute")));
    // Every readable DICOM file of the wheel is refused; none slipped through.
    assert_eq!(report["instances"], 0);
    assert!(refused.len() >= 40, "{} refused", refused.len());
    // Not DICOM, truncated or damaged: skipped and reported, not a crash.
    let skipped: Vec<&str> = report["skippedFiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for name in [
        "README.txt",
        "no_meta.dcm",
        "rtplan_truncated.dcm",
        "zipMR.gz",
    ] {
        assert!(skipped.contains(&name), "{name} not in skipped {skipped:?}");
    }
    assert_eq!(ledger_size(&data), before, "nothing was published");
    assert_eq!(
        manifests(),
        manifests_before,
        "no manifest was stored (the demo's are all there is)"
    );
}

#[test]
fn deidentified_copies_are_published_once_and_reruns_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = demo(tmp.path());
    let folder = tmp.path().join("deid");
    let n = deidentified_folder(
        &folder,
        Declared {
            patient_characteristics: true,
            safe_private: false,
        },
    );
    // Junk and damage beside them: skipped and reported.
    std::fs::write(folder.join("notes.txt"), "transfer notes: 7 files\n").unwrap();
    let whole = std::fs::read(folder.join("series/CT_small.dcm")).unwrap();
    std::fs::write(folder.join("series/CT_small_truncated.dcm"), &whole[..900]).unwrap();
    std::fs::copy(real_files().join("no_meta.dcm"), folder.join("no_meta.dcm")).unwrap();

    let report_path = tmp.path().join("report.json");
    let args = [
        "--dataset",
        "riverside-cxr",
        "--version",
        "2026.1",
        "--site",
        "riverside",
        "--data-dir",
        &data,
    ];
    let before = ledger_size(&data);
    let (out, report) = ingest(&folder, &report_path, &args);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    assert_eq!(report["outcome"], "published", "{report:#}");
    assert_eq!(report["instances"], n as u64);
    let skipped: Vec<&str> = report["skippedFiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        skipped,
        ["no_meta.dcm", "notes.txt", "series/CT_small_truncated.dcm"]
    );
    assert_eq!(report["leafIndex"], before);
    assert_eq!(ledger_size(&data), before + 1, "exactly one event");

    // The event carries the manifest digest and the imaging summary.
    let digest = report["manifestDigest"].as_str().unwrap().to_string();
    let body = {
        let dir = clew::datadir::DataDir::new(&data);
        let ledger = dir
            .open(None, clew_ledger::LedgerOptions::default())
            .unwrap();
        let node = dir
            .catalog(&ledger)
            .unwrap()
            .node("dataset-version/riverside-cxr@2026.1")
            .unwrap()
            .expect("in the catalogue");
        assert_eq!(node.created_leaf, before);
        node.attributes()
    };
    assert_eq!(body["manifestDigest"], digest.as_str(), "{body:#}");
    let summary = &body["imagingSummary"];
    let modalities: Vec<&str> = summary["modalities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for m in ["CT", "MR", "RTPLAN"] {
        assert!(modalities.contains(&m), "{modalities:?}");
    }
    assert_eq!(summary["numberOfInstances"], n.to_string());
    assert_eq!(summary["patientIdentityRemoved"], true);
    assert_eq!(summary["numberOfPatients"], "3", "pseudonyms counted");
    let codes: Vec<&str> = summary["deidentificationMethods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["codeValue"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["113100", "113108"]);

    // The manifest is stored under its digest, lists every file with its SHA-256.
    let hex = digest.strip_prefix("sha256:").unwrap();
    let stored = std::fs::read(Path::new(&data).join(format!("manifests/sha256/{hex}"))).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&stored)), hex);
    let manifest: Json = serde_json::from_slice(&stored).unwrap();
    let ct = manifest["series"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["instances"].as_array().unwrap())
        .find(|i| i["path"] == "series/CT_small.dcm")
        .expect("CT listed");
    assert_eq!(ct["sha256"], hex::encode(Sha256::digest(&whole)));
    ok(&["verify", "--data-dir", &data]);

    // The same folder again: same digest, refused as a duplicate, nothing appended.
    let (out, again) = ingest(&folder, &report_path, &args);
    assert_eq!(out.status.code(), Some(3), "stderr:\n{}", stderr(&out));
    assert_eq!(again["outcome"], "refused-by-ledger");
    assert_eq!(again["manifestDigest"], digest.as_str());
    assert!(
        again["detail"].as_str().unwrap().contains("DUPLICATE"),
        "{again:#}"
    );
    // … and under a new version number too.
    let mut v2 = args.to_vec();
    v2[3] = "2026.2";
    let (out, again) = ingest(&folder, &report_path, &v2);
    assert_eq!(out.status.code(), Some(3), "stderr:\n{}", stderr(&out));
    assert!(
        again["detail"]
            .as_str()
            .unwrap()
            .contains("dataset-version/riverside-cxr@2026.1"),
        "{again:#}"
    );
    assert_eq!(ledger_size(&data), before + 1, "re-runs appended nothing");

    // A trust that is not the custodian is stopped before anything is stored.
    let mut wrong = args.to_vec();
    wrong[5] = "northgate";
    wrong[3] = "2026.3";
    let (out, _) = ingest(&folder, &report_path, &wrong);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("held by site \"riverside\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_gate_looks_at_every_depth_and_honours_declared_options() {
    let tmp = tempfile::tempdir().unwrap();
    let src = real_files().join("CT_small.dcm");
    let gate = |name: &str, declared: Declared, edit: &dyn Fn(&mut InMemDicomObject)| -> Json {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("1.dcm");
        deidentify(&src, &file, 1, declared);
        let mut obj = dicom_object::open_file(&file).unwrap();
        edit(&mut obj);
        obj.write_to_file(&file).unwrap();
        let (out, report) = ingest(
            &dir,
            &tmp.path().join(format!("{name}.json")),
            &["--dataset", "d", "--version", "1", "--dry-run"],
        );
        let expected = if report["refusedFiles"].as_array().unwrap().is_empty() {
            0
        } else {
            2
        };
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{name}: {}",
            stderr(&out)
        );
        report
    };
    let findings = |r: &Json| -> Vec<(String, String)> {
        r["refusedFiles"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| f["findings"].as_array().unwrap().clone())
            .map(|f| {
                (
                    f["tag"].as_str().unwrap().to_string(),
                    f["at"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let plain = Declared::default();

    let r = gate("clean", plain, &|_| {});
    assert_eq!(
        r["outcome"], "dry-run",
        "a de-identified copy passes: {r:#}"
    );

    // PatientAddress hidden inside a sequence item is found there.
    let r = gate("nested", plain, &|o| {
        let item = InMemDicomObject::from_element_iter([
            DataElement::new(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from("1.2.3.4"),
            ),
            DataElement::new(
                tags::PATIENT_ADDRESS,
                VR::LO,
                PrimitiveValue::from("1 High Street, Leeds"),
            ),
        ]);
        o.put(DataElement::new(
            tags::REFERENCED_STUDY_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![item]),
        ));
    });
    assert_eq!(
        findings(&r),
        [(
            "(0010,1040)".to_string(),
            "(0008,1110)[0] > (0010,1040)".to_string()
        )]
    );

    // PatientAge needs Retain Patient Characteristics (113108).
    let age = |o: &mut InMemDicomObject| {
        o.put(DataElement::new(
            tags::PATIENT_AGE,
            VR::AS,
            PrimitiveValue::from("054Y"),
        ));
    };
    let r = gate("age", plain, &age);
    assert_eq!(
        findings(&r),
        [("(0010,1010)".to_string(), "(0010,1010)".to_string())]
    );
    let r = gate(
        "age-kept",
        Declared {
            patient_characteristics: true,
            ..plain
        },
        &age,
    );
    assert_eq!(r["outcome"], "dry-run", "{r:#}");

    // Private attributes need Retain Safe Private (113111).
    let private = |o: &mut InMemDicomObject| {
        o.put(DataElement::new(
            Tag(0x0029, 0x0010),
            VR::LO,
            PrimitiveValue::from("ACME 1.1"),
        ));
        o.put(DataElement::new(
            Tag(0x0029, 0x1001),
            VR::LO,
            PrimitiveValue::from("calibration 7"),
        ));
    };
    let r = gate("private", plain, &private);
    assert_eq!(findings(&r).len(), 2);
    let r = gate(
        "private-kept",
        Declared {
            safe_private: true,
            ..plain
        },
        &private,
    );
    assert_eq!(r["outcome"], "dry-run", "{r:#}");

    // Marked de-identified but no method declared.
    let r = gate("no-method", plain, &|o| {
        o.remove_element(tags::DEIDENTIFICATION_METHOD);
        o.remove_element(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE);
    });
    assert_eq!(
        findings(&r),
        [("(0012,0063)".to_string(), "(0012,0063)".to_string())]
    );

    // An empty X attribute leaks nothing; a dummy in a Z attribute is fine.
    let r = gate("empty-and-dummy", plain, &|o| {
        o.put(DataElement::new(
            Tag(0x0010, 0x1000),
            VR::LO,
            PrimitiveValue::Empty,
        ));
        o.put(DataElement::new(
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            PrimitiveValue::from("DUMMY^REFERRER"),
        ));
    });
    assert_eq!(r["outcome"], "dry-run", "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_through_a_running_server_stores_the_manifest_it_serves_by_access() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::demo_async(&data).await;
    let folder = tmp.path().join("deid");
    deidentified_folder(
        &folder,
        Declared {
            patient_characteristics: true,
            safe_private: false,
        },
    );
    let token_file = data.join("admin.token");
    let report_path = tmp.path().join("report.json");
    let (out, report) = {
        let (folder, report_path, base, token_file) = (
            folder.clone(),
            report_path.clone(),
            server.base.clone(),
            token_file.clone(),
        );
        tokio::task::spawn_blocking(move || {
            ingest(
                &folder,
                &report_path,
                &[
                    "--dataset",
                    "riverside-cxr",
                    "--version",
                    "2026.1",
                    "--site",
                    "riverside",
                    "--server",
                    &base,
                    "--token-file",
                    &token_file.to_string_lossy(),
                ],
            )
        })
        .await
        .unwrap()
    };
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    assert_eq!(report["outcome"], "published");
    let digest = report["manifestDigest"].as_str().unwrap().to_string();

    let http = reqwest::Client::new();
    let url = format!(
        "{}/dataset-versions/riverside-cxr@2026.1/manifest",
        server.base
    );
    let admin = read_token(&token_file);
    let resp = http.get(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
        digest
    );
    // A researcher without a grant does not see the controlled dataset's version at all.
    let researcher = server.demo_token("ada-researcher");
    let resp = http
        .get(&url)
        .bearer_auth(&researcher)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Uploads are checked against the digest they claim, and need a role.
    let other = format!("sha256:{}", "ab".repeat(32));
    let resp = http
        .put(format!("{}/manifests/{other}", server.base))
        .bearer_auth(&admin)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("hash to"));
    let resp = http
        .put(format!("{}/manifests/{digest}", server.base))
        .bearer_auth(&researcher)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = http
        .put(format!(
            "{}/manifests/sha256:{}",
            server.base,
            hex::encode(Sha256::digest(b"{}"))
        ))
        .bearer_auth(&admin)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "not a manifest");

    // A re-run through the server is refused as a duplicate, like locally.
    let (out, again) = tokio::task::spawn_blocking(move || {
        ingest(
            &folder,
            &report_path,
            &[
                "--dataset",
                "riverside-cxr",
                "--version",
                "2026.2",
                "--server",
                &server.base.clone(),
                "--token-file",
                &token_file.to_string_lossy(),
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(3), "stderr:\n{}", stderr(&out));
    assert!(
        again["detail"]
            .as_str()
            .unwrap()
            .contains("already published"),
        "{again:#}"
    );
}

#[test]
fn a_standard_basic_profile_tools_output_passes_and_what_it_leaves_nested_is_named() {
    let python = support::repo_root().join("target/dicom-venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run tests/setup.sh (or tests/dicom/fetch.sh)",
        python.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("anonymized");
    let src = real_files();
    let out = std::process::Command::new(&python)
        .arg(support::repo_root().join("tests/dicom/basic_profile_tool.py"))
        .arg(&out_dir)
        .args(SOURCES.iter().map(|s| src.join(s)))
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (out, report) = ingest(
        &out_dir,
        &tmp.path().join("report.json"),
        &["--dataset", "d", "--version", "1", "--dry-run"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Everything at the top level of every file passes; what the tool leaves
    // is only inside sequences (it applies the table to the top level only),
    // and PS3.15 applies the profile at every depth.
    let refused = report["refusedFiles"].as_array().unwrap();
    let names: Vec<&str> = refused
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rtplan.dcm", "waveform_ecg.dcm"], "{report:#}");
    for f in refused {
        for x in f["findings"].as_array().unwrap() {
            assert!(
                x["at"].as_str().unwrap().contains("] > "),
                "top-level finding {x}"
            );
        }
    }
    // The files whose identifying attributes are all at the top level pass.
    for name in ["rtplan.dcm", "waveform_ecg.dcm"] {
        std::fs::remove_file(out_dir.join(name)).unwrap();
    }
    let (out, report) = ingest(
        &out_dir,
        &tmp.path().join("report2.json"),
        &["--dataset", "d", "--version", "1", "--dry-run"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["instances"], SOURCES.len() as u64 - 2);
}
