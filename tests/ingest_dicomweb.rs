//! `clew ingest dicomweb` against a real PACS: Orthanc with its DICOMweb
//! plugin (installed by tests/setup.sh, started per test on its own port and
//! storage, see tests/pacs), loaded with the real pydicom files — as shipped
//! (identifiable) and as de-identified copies — and, for hostile answers, a
//! small server in this test that answers what no PACS should.

use crate::ingest_dicom::{
    deidentify, demo, ingest, ingest_with, ledger_size, real_files, stderr, Declared, SOURCES,
};
use crate::support::{self, clew};

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use clew_pacs_server::Pacs;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use serde_json::Value as Json;

/// `clew ingest dicomweb <url> --report <report> args…`, with the PACS's credentials.
fn ingest_pacs(url: &str, auth: &Path, report: &Path, extra: &[&str]) -> (Output, Json) {
    let mut args: Vec<OsString> = vec!["dicomweb".into(), url.into()];
    args.extend(["--pacs-basic-auth-file".into(), auth.into()]);
    args.extend(extra.iter().map(Into::into));
    ingest_with(&args, report)
}

/// A de-identified copy of `src` with new UIDs and study date, as Part 10 bytes.
fn copy_with_uids(src: &Path, tmp: &Path, n: usize, study: &str, date: &str) -> Vec<u8> {
    let sop = format!("2.25.{}", 1_000_000 + n);
    copy_with(src, tmp, n, [study, &format!("{study}.1"), &sop], date)
}

/// A de-identified copy of `src` with these study, series and SOP Instance UIDs.
fn copy_with(src: &Path, tmp: &Path, n: usize, uids: [&str; 3], date: &str) -> Vec<u8> {
    let [study, series, sop] = uids;
    let file = tmp.join(format!("copy-{n}.dcm"));
    deidentify(
        src,
        &file,
        n,
        Declared {
            patient_characteristics: true,
            safe_private: false,
        },
    );
    let mut obj = dicom_object::open_file(&file).expect("the copy reads back");
    obj.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(sop),
    ));
    obj.put(DataElement::new(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(study),
    ));
    obj.put(DataElement::new(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(series),
    ));
    obj.put(DataElement::new(
        tags::STUDY_DATE,
        VR::DA,
        PrimitiveValue::from(date),
    ));
    obj.update_meta(|m| m.media_storage_sop_instance_uid = sop.to_string());
    let mut bytes = Vec::new();
    obj.write_all(&mut bytes).expect("the copy is written");
    std::fs::remove_file(&file).ok();
    bytes
}

fn sop_uid(path: &Path) -> String {
    let obj = dicom_object::open_file(path).expect("readable");
    obj.element(tags::SOP_INSTANCE_UID)
        .expect("SOP Instance UID")
        .to_str()
        .expect("text")
        .trim_end_matches('\0')
        .to_string()
}

fn findings_of(f: &Json) -> Vec<(String, String, String, String)> {
    f["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|x| {
            let s = |k: &str| x[k].as_str().unwrap_or_default().to_string();
            (s("tag"), s("keyword"), s("at"), s("problem"))
        })
        .collect()
}

fn manifest(data: &str, digest: &str) -> Json {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let bytes = std::fs::read(Path::new(data).join(format!("manifests/sha256/{hex}")))
        .expect("the manifest is stored");
    serde_json::from_slice(&bytes).expect("the manifest is JSON")
}

#[test]
fn identifiable_originals_are_refused_over_dicomweb_with_the_findings_their_files_give() {
    let tmp = tempfile::tempdir().unwrap();
    let pacs = Pacs::start(&tmp.path().join("pacs"));
    let auth = pacs.basic_auth_file(tmp.path());
    let src = real_files();
    // The first file uploaded with a SOP Instance UID is the one Orthanc keeps.
    let mut by_uid: BTreeMap<String, &str> = BTreeMap::new();
    for name in SOURCES {
        pacs.upload(&std::fs::read(src.join(name)).unwrap());
        by_uid.entry(sop_uid(&src.join(name))).or_insert(name);
    }
    let data = demo(tmp.path());
    let before = ledger_size(&data);
    let manifests =
        || std::fs::read_dir(Path::new(&data).join("manifests/sha256")).map_or(0, |d| d.count());
    let manifests_before = manifests();

    let (out, report) = ingest_pacs(
        &pacs.dicomweb_url(),
        &auth,
        &tmp.path().join("report.json"),
        &[
            "--dataset",
            "riverside-cxr",
            "--version",
            "9.0",
            "--data-dir",
            &data,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "stderr:\n{}", stderr(&out));
    assert_eq!(report["outcome"], "refused-identifiable", "{report:#}");
    assert_eq!(ledger_size(&data), before, "nothing was published");
    assert_eq!(manifests(), manifests_before, "no manifest was stored");
    let refused = report["refusedFiles"].as_array().unwrap();
    assert_eq!(refused.len(), by_uid.len(), "every instance is refused");
    assert_eq!(report["dicomweb"]["studies"], by_uid.len());

    // The same instance as a file on disk: the very same findings (tag,
    // keyword, place inside sequences, problem).
    let folder = tmp.path().join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    for name in by_uid.values() {
        std::fs::copy(src.join(name), folder.join(name)).unwrap();
    }
    let (_, on_disk) = ingest(
        &folder,
        &tmp.path().join("folder.json"),
        &["--dataset", "d", "--version", "1", "--dry-run"],
    );
    let disk: BTreeMap<String, &Json> = on_disk["refusedFiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), f))
        .collect();
    let err = stderr(&out);
    for f in refused {
        let location = f["path"].as_str().unwrap();
        assert!(location.starts_with("studies/"), "{location}");
        let sop = location.rsplit('/').next().unwrap();
        let name = by_uid[sop];
        assert_eq!(
            findings_of(f),
            findings_of(disk[name]),
            "{name} over DICOMweb and on disk"
        );
        assert!(
            err.contains(&format!(
                "refused {location}: (0012,0062) PatientIdentityRemoved"
            )),
            "{err}"
        );
    }
    // Private attributes and nested ones are among them.
    let all: Vec<_> = refused.iter().flat_map(findings_of).collect();
    assert!(all.iter().any(|f| f.3.contains("private attribute")));
    assert!(all.iter().any(|f| f.2.contains("] > ")), "nested findings");
}

#[test]
fn deidentified_copies_are_published_with_the_folder_manifest_and_where_they_live() {
    let tmp = tempfile::tempdir().unwrap();
    let pacs = Pacs::start(&tmp.path().join("pacs"));
    let auth = pacs.basic_auth_file(tmp.path());
    let src = real_files();
    let folder = tmp.path().join("deid");
    std::fs::create_dir_all(&folder).unwrap();
    for (n, name) in SOURCES.iter().enumerate() {
        let bytes = copy_with_uids(
            &src.join(name),
            tmp.path(),
            n,
            &format!("2.25.77{n}"),
            "20250301",
        );
        std::fs::write(folder.join(name), &bytes).unwrap();
        pacs.upload(&bytes);
    }
    assert_eq!(pacs.instance_count(), SOURCES.len());
    let data = demo(tmp.path());
    let site = ["--site", "riverside", "--data-dir", &data];

    // The folder, published as one version…
    let (out, from_disk) = ingest(
        &folder,
        &tmp.path().join("folder.json"),
        &[
            &["--dataset", "riverside-cxr", "--version", "2026.1"],
            &site[..],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    let before = ledger_size(&data);
    // … and the same instances from the PACS, with their digests, as another.
    let state = tmp.path().join("scan-state.jsonl");
    let pacs_args = [
        "--dataset",
        "riverside-cxr",
        "--version",
        "2026.2",
        "--digests",
        "--source-name",
        "riverside-research-pacs",
        "--scan-state",
        state.to_str().unwrap(),
    ];
    let (out, report) = ingest_pacs(
        &pacs.dicomweb_url(),
        &auth,
        &tmp.path().join("pacs.json"),
        &[&pacs_args[..], &site[..]].concat(),
    );
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    assert_eq!(report["outcome"], "published", "{report:#}");
    assert_eq!(report["instances"], SOURCES.len());
    assert_eq!(report["leafIndex"], before);
    assert_eq!(ledger_size(&data), before + 1, "exactly one event");
    assert_eq!(report["dicomweb"]["studies"], SOURCES.len());
    assert_eq!(report["dicomweb"]["digests"], true);
    assert!(!state.exists(), "the scan state is gone once published");
    let err = stderr(&out);
    assert!(
        err.contains(
            "published: 7 studies, 7 series, 7 instances read from riverside-research-pacs"
        ),
        "one-line summary: {err}"
    );

    let disk = manifest(&data, from_disk["manifestDigest"].as_str().unwrap());
    let web = manifest(&data, report["manifestDigest"].as_str().unwrap());
    assert_eq!(
        web["source"],
        serde_json::json!({"kind": "dicomweb", "name": "riverside-research-pacs", "baseUrl": pacs.dicomweb_url()})
    );
    assert!(disk.get("source").is_none());
    // Series for series the same; instance for instance the same SOP
    // Instance UID, SHA-256 and size — only the folder's paths are not there.
    let series = |m: &Json| -> Vec<Json> {
        m["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let mut s = s.clone();
                let mut instances: Vec<Json> = s["instances"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| {
                        let mut i = i.clone();
                        i.as_object_mut().unwrap().remove("path");
                        i
                    })
                    .collect();
                instances.sort_by_key(|i| i["sopInstanceUid"].as_str().unwrap().to_string());
                s["instances"] = Json::Array(instances);
                s
            })
            .collect()
    };
    assert_eq!(series(&web), series(&disk));
    let first = &web["series"][0]["instances"][0];
    assert!(first.get("path").is_none(), "{first}");
    assert_eq!(first["sha256"].as_str().unwrap().len(), 64);
    // The event's imaging summary is the folder's too.
    let summary = |v: &str| {
        let dir = clew::datadir::DataDir::new(&data);
        let ledger = dir
            .open(None, clew_ledger::LedgerOptions::default())
            .unwrap();
        dir.catalog(&ledger)
            .unwrap()
            .node(&format!("dataset-version/riverside-cxr@{v}"))
            .unwrap()
            .expect("in the catalogue")
            .attributes()["imagingSummary"]
            .clone()
    };
    assert_eq!(summary("2026.2"), summary("2026.1"));
    support::ok(&["verify", "--data-dir", &data, "--content"]);

    // The PACS again: the same manifest, refused as a duplicate.
    let mut again = pacs_args.to_vec();
    again[3] = "2026.3";
    let (out, report) = ingest_pacs(
        &pacs.dicomweb_url(),
        &auth,
        &tmp.path().join("again.json"),
        &[&again[..], &site[..]].concat(),
    );
    assert_eq!(out.status.code(), Some(3), "stderr:\n{}", stderr(&out));
    assert!(
        report["detail"]
            .as_str()
            .unwrap()
            .contains("riverside-cxr@2026.2"),
        "{report:#}"
    );
    // Wrong credentials: a clear refusal, nothing published.
    let bad = tmp.path().join("bad-auth");
    std::fs::write(&bad, "clew-ingest:wrong\n").unwrap();
    let (out, report) = ingest_pacs(
        &pacs.dicomweb_url(),
        &bad,
        &tmp.path().join("bad.json"),
        &[&again[..], &site[..]].concat(),
    );
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", stderr(&out));
    let detail = report["detail"].as_str().unwrap();
    assert!(detail.contains("answered 401"), "{detail}");
    assert!(
        !detail.contains("wrong"),
        "the password is never printed: {detail}"
    );
    assert_eq!(ledger_size(&data), before + 1);
}

/// Loads `n` one-instance studies: CT copies, every fifth an MR, dated 2019
/// for the first half and 2020 after. Returns the study UIDs.
fn load_many(pacs: &Pacs, tmp: &Path, n: usize) -> Vec<String> {
    let src = real_files();
    let mut studies = Vec::new();
    for k in 0..n {
        let name = if k % 5 == 4 {
            "MR_small.dcm"
        } else {
            "CT_small.dcm"
        };
        let study = format!("2.25.9{k:04}");
        let date = if k < n / 2 { "20190615" } else { "20200615" };
        pacs.upload(&copy_with_uids(&src.join(name), tmp, 100 + k, &study, date));
        studies.push(study);
    }
    studies
}

#[test]
fn hundreds_of_studies_are_paged_selected_and_an_outage_mid_run_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pacs = Pacs::start(&tmp.path().join("pacs"));
    let auth = pacs.basic_auth_file(tmp.path());
    let n = 300;
    let studies = load_many(&pacs, tmp.path(), n);
    assert_eq!(pacs.instance_count(), n);
    let url = pacs.dicomweb_url();
    let dry = |name: &str, extra: &[&str]| -> Json {
        let (out, report) = ingest_pacs(
            &url,
            &auth,
            &tmp.path().join(format!("{name}.json")),
            &[
                &[
                    "--dataset",
                    "d",
                    "--version",
                    "1",
                    "--dry-run",
                    "--page-size",
                    "40",
                ][..],
                &[
                    "--scan-state",
                    tmp.path().join(format!("{name}.state")).to_str().unwrap(),
                ],
                extra,
            ]
            .concat(),
        );
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        report
    };
    // Every study, forty at a time.
    let all = dry("all", &[]);
    assert_eq!(all["instances"], n);
    assert_eq!(all["dicomweb"]["studies"], n);
    let pages = n / 40 + 1;
    assert!(
        all["dicomweb"]["requests"].as_u64().unwrap() >= (pages + 2 * n) as u64,
        "{all:#}"
    );
    // Selections: modality, date range, a list of UIDs, any attribute.
    assert_eq!(dry("mr", &["--modality", "MR"])["instances"], n / 5);
    assert_eq!(
        dry("mr-ct", &["--modality", "MR", "--modality", "CT"])["instances"],
        n
    );
    assert_eq!(
        dry("2020", &["--study-date", "20200101-20201231"])["instances"],
        n / 2
    );
    assert_eq!(
        dry(
            "two",
            &["--study-uid", &studies[3], "--study-uid", &studies[250]]
        )["instances"],
        2
    );
    assert_eq!(
        dry(
            "query",
            &["--query", &format!("StudyInstanceUID={}", studies[7])]
        )["instances"],
        1
    );

    // Orthanc stopped in the middle of a run: nothing is published, and what
    // was read is kept; the rerun reads only the rest.
    let data = demo(tmp.path());
    let before = ledger_size(&data);
    let state = tmp.path().join("outage.state");
    let args: Vec<String> = [
        "ingest",
        "dicomweb",
        &url,
        "--dataset",
        "riverside-cxr",
        "--version",
        "2030.1",
        "--data-dir",
        &data,
        "--digests",
        "--concurrency",
        "1",
        "--retries",
        "1",
        "--page-size",
        "50",
        "--pacs-basic-auth-file",
        auth.to_str().unwrap(),
        "--scan-state",
        state.to_str().unwrap(),
        "--report",
        tmp.path().join("outage.json").to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut child = clew()
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = || {
        std::fs::read_to_string(&state)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while lines() < 6 {
        assert!(Instant::now() < deadline, "the scan never got going");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the outage"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    pacs.stop();
    let out = child.wait_with_output().unwrap();
    let report: Json =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("outage.json")).unwrap())
            .unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", stderr(&out));
    assert_eq!(report["outcome"], "pacs-error", "{report:#}");
    assert!(
        report["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was published"),
        "{report:#}"
    );
    assert_eq!(ledger_size(&data), before, "nothing was published");
    let kept = lines() - 1;
    assert!(kept >= 5 && kept < n, "{kept} series kept");

    pacs.restart();
    let out = clew().args(&args).output().unwrap();
    let report: Json =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("outage.json")).unwrap())
            .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    assert_eq!(report["outcome"], "published", "{report:#}");
    assert_eq!(report["instances"], n);
    assert_eq!(report["dicomweb"]["resumedSeries"], kept, "{report:#}");
    assert!(stderr(&out).contains(&format!("{kept} series already read")));
    assert_eq!(ledger_size(&data), before + 1);
    assert!(!state.exists());
}

/// A small server that answers as no PACS should, on loopback.
mod hostile_pacs {
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::Router;
    use serde_json::json;

    pub const STUDY: &str = "2.25.11";
    pub const SERIES: &str = "2.25.11.1";
    pub const SOP: &str = "2.25.11.1.1";

    /// What the server saw: (path and query, Authorization header).
    #[derive(Clone, Default)]
    pub struct Seen(pub Arc<Mutex<Vec<(String, String)>>>);

    fn dicom_json(body: impl Into<Body>) -> Response {
        ([("content-type", "application/dicom+json")], body.into()).into_response()
    }

    fn instance() -> serde_json::Value {
        json!({
            "00080018": {"vr": "UI", "Value": [SOP]},
            "0020000D": {"vr": "UI", "Value": [STUDY]},
            "0020000E": {"vr": "UI", "Value": [SERIES]},
            "00080060": {"vr": "CS", "Value": ["CT"]},
            "00120062": {"vr": "CS", "Value": ["YES"]},
            "00120063": {"vr": "LO", "Value": ["Basic Application Confidentiality Profile"]}
        })
    }

    fn one_study(uid: &str) -> Response {
        dicom_json(json!([{"0020000D": {"vr": "UI", "Value": [uid]}}]).to_string())
    }

    async fn answer(
        State((seen, part10)): State<(Seen, Arc<Vec<u8>>)>,
        Path((mode, rest)): Path<(String, String)>,
        uri: Uri,
        headers: HeaderMap,
    ) -> Response {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        seen.0.lock().unwrap().push((uri.to_string(), auth.clone()));
        // Searches (studies, series) have one page: the next is empty.
        let search = rest == "studies" || rest.ends_with("/series");
        if search && !uri.query().unwrap_or_default().contains("offset=0") {
            return dicom_json("[]");
        }
        match (mode.as_str(), rest.as_str()) {
            ("wrong-type", _) => ([("content-type", "text/html")], "<html>login</html>").into_response(),
            ("truncated", _) => dicom_json(r#"[{"0020000D": {"vr": "UI", "Val"#),
            ("redirect", _) => (
                StatusCode::FOUND,
                [("location", "http://elsewhere.example/dicom-web/studies")],
            )
                .into_response(),
            ("announced-10gb", _) => Response::builder()
                .header("content-type", "application/dicom+json")
                .header("content-length", "10737418240")
                // A body of unknown size that then stalls: the announced
                // length goes out, and the rest never comes.
                .body(Body::from_stream(
                    futures_util::StreamExt::chain(
                        futures_util::stream::once(async {
                            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"["))
                        }),
                        futures_util::stream::pending(),
                    ),
                ))
                .unwrap(),
            ("endless", _) => {
                // A body with no announced end that never stops.
                let chunk = bytes::Bytes::from(vec![b' '; 1 << 16]);
                let stream = futures_util::stream::repeat_with(move || {
                    Ok::<_, std::io::Error>(chunk.clone())
                });
                Response::builder()
                    .header("content-type", "application/dicom+json")
                    .body(Body::from_stream(stream))
                    .unwrap()
            }
            ("uid-injection", _) => one_study("../../admin"),
            ("bearer", _) if auth != "Bearer pacs-token-7" => StatusCode::UNAUTHORIZED.into_response(),
            ("bearer", _) => dicom_json("[]"),
            (_, "studies") => one_study(STUDY),
            (_, r) if r == format!("studies/{STUDY}/series") => dicom_json(
                json!([{"0020000E": {"vr": "UI", "Value": [SERIES]}, "00201209": {"vr": "IS", "Value": [1]}}]).to_string(),
            ),
            ("other-series", r) if r.ends_with("/metadata") => {
                let mut i = instance();
                i["0020000E"] = json!({"vr": "UI", "Value": ["2.25.99"]});
                dicom_json(json!([i]).to_string())
            }
            (_, r) if r.ends_with("/metadata") => dicom_json(json!([instance()]).to_string()),
            (m, r) if r.ends_with(SOP) => {
                let (announced, data): (usize, Vec<u8>) = match m {
                    "lying-part" => (part10.len() + 5000, part10.to_vec()),
                    "lying-value-length" => {
                        // A value length in the file's header says more bytes follow than do.
                        let mut d = part10.to_vec();
                        let at = d.windows(4).position(|w| w == [0x08, 0x00, 0x18, 0x00]).expect("SOP tag");
                        d[at + 6..at + 8].copy_from_slice(&0xFFF0u16.to_le_bytes());
                        (d.len(), d)
                    }
                    _ => (part10.len(), part10.to_vec()),
                };
                let mut body = format!(
                    "--B0UND\r\nContent-Type: application/dicom\r\nContent-Length: {announced}\r\n\r\n"
                )
                .into_bytes();
                body.extend_from_slice(&data);
                body.extend_from_slice(b"\r\n--B0UND--\r\n");
                Response::builder()
                    .header(
                        "content-type",
                        "multipart/related; type=\"application/dicom\"; boundary=B0UND",
                    )
                    .body(Body::from(body))
                    .unwrap()
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }

    /// Serves `/{mode}/…` on a free port; returns its address and what it saw.
    pub async fn start(part10: Vec<u8>) -> (String, Seen) {
        let seen = Seen::default();
        let app = Router::new()
            .route("/{mode}/{*rest}", get(answer))
            .with_state((seen.clone(), Arc::new(part10)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), seen)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_are_refused_naming_the_problem_and_nothing_is_published() {
    let tmp = tempfile::tempdir().unwrap();
    // A real de-identified file for the instance retrievals, with the UIDs the fake server lists.
    let part10 = {
        let dir = tmp.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let src = real_files().join("CT_small.dcm");
            let uids = [hostile_pacs::STUDY, hostile_pacs::SERIES, hostile_pacs::SOP];
            copy_with(&src, &dir, 11, uids, "20250101")
        })
        .await
        .unwrap()
    };
    let (base, seen) = hostile_pacs::start(part10).await;
    let data = {
        let tmp = tmp.path().to_path_buf();
        tokio::task::spawn_blocking(move || demo(&tmp))
            .await
            .unwrap()
    };
    let before = ledger_size(&data);
    let token = tmp.path().join("pacs.token");
    std::fs::write(&token, "pacs-token-7\n").unwrap();
    let run = |mode: &'static str, extra: Vec<String>| {
        let (base, data, dir, token) = (
            base.clone(),
            data.clone(),
            tmp.path().to_path_buf(),
            token.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let report = dir.join(format!("{mode}.json"));
            let out = clew()
                .args([
                    "ingest",
                    "dicomweb",
                    &format!("{base}/{mode}"),
                    "--dataset",
                    "riverside-cxr",
                ])
                .args(["--version", "3000.1", "--data-dir", &data, "--retries", "1"])
                .arg("--pacs-token-file")
                .arg(&token)
                .arg("--scan-state")
                .arg(dir.join(format!("{mode}.state")))
                .arg("--report")
                .arg(&report)
                .args(extra)
                .output()
                .expect("clew runs");
            let report: Json = std::fs::read_to_string(&report)
                .map(|t| serde_json::from_str(&t).unwrap())
                .unwrap_or(Json::Null);
            (out, report)
        })
    };
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("wrong-type", vec![], "media type \"text/html\", not application/dicom+json"),
        ("truncated", vec![], "not complete, valid JSON"),
        ("redirect", vec![], "redirecting to \"http://elsewhere.example/dicom-web/studies\"; Clew follows no redirects"),
        ("announced-10gb", vec![], "announces a 10737418240-byte answer"),
        ("endless", vec!["--max-metadata-mib".into(), "4".into()], "sent more than the 4194304 bytes accepted"),
        ("uid-injection", vec![], "\"../../admin\" is not a UID"),
        ("other-series", vec![], "belongs to study 2.25.11 series 2.25.99, not the series asked for"),
        ("lying-part", vec!["--digests".into()], "Content-Length"),
        ("lying-value-length", vec!["--digests".into()], "not a readable Part 10 file"),
    ];
    for (mode, extra, expected) in cases {
        let started = Instant::now();
        let (out, report) = run(mode, extra).await.unwrap();
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", stderr(&out));
        assert_eq!(report["outcome"], "pacs-error", "{mode}: {report:#}");
        let detail = report["detail"].as_str().unwrap();
        assert!(detail.contains(expected), "{mode}: {detail}");
        assert!(detail.contains("answer refused"), "{mode}: {detail}");
        assert!(detail.contains("nothing was published"), "{mode}: {detail}");
        assert!(
            stderr(&out).contains(expected),
            "{mode}: told on stderr: {}",
            stderr(&out)
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{mode} took {:?}",
            started.elapsed()
        );
    }
    // The same answers, honest: the instance passes and is published.
    let (out, report) = run("honest", vec!["--digests".into()]).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "honest: {}", stderr(&out));
    assert_eq!(report["outcome"], "published", "{report:#}");
    assert_eq!(
        ledger_size(&data),
        before + 1,
        "only the honest run published"
    );
    // The bearer token went in the Authorization header, never in a URL.
    let (out, report) = run("bearer", vec![]).await.unwrap();
    assert_eq!(report["outcome"], "no-instances", "{}", stderr(&out));
    let seen = seen.0.lock().unwrap().clone();
    let bearer: Vec<_> = seen
        .iter()
        .filter(|(u, _)| u.starts_with("/bearer/"))
        .collect();
    assert!(!bearer.is_empty());
    for (uri, auth) in &seen {
        assert!(!uri.contains("pacs-token-7"), "token in a URL: {uri}");
        assert_eq!(auth, "Bearer pacs-token-7", "{uri}");
    }
    // Paging was asked for with limit and offset.
    assert!(
        bearer[0].0.contains("limit=100") && bearer[0].0.contains("offset=0"),
        "{bearer:?}"
    );
}
