//! Clew's standard interfaces, each exercised by a client Clew did not write:
//! the OpenLineage Python client posting to `/api/v1/lineage` (Marquez's
//! endpoint). The clients live in tests/standards (PyPI, installed by
//! tests/setup.sh into target/standards-venv).

use crate::support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};
use support::repo_root;
use support::server::{Api, Server};

fn python() -> PathBuf {
    let py = repo_root().join("target/standards-venv/bin/python");
    assert!(
        py.is_file(),
        "{} is missing: run tests/setup.sh (it installs tests/standards/requirements.txt)",
        py.display()
    );
    py
}

fn run_client(script: &str, args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(repo_root().join("tests/standards").join(script))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{stdout}"))
}

async fn size(api: &Api, token: &str) -> u64 {
    api.ok(token, "{ checkpoint { size } }", json!({})).await["checkpoint"]["size"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openlineage_python_client_records_runs_through_the_marquez_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::demo_async(&data).await;
    let api = Api::new(&server.base);
    let governance = server.demo_token("governance-board");
    // The output the run made, published first (as ingest would).
    let digest = api.upload_manifest(&governance, "riverside 3.0").await;
    api.ok(
        &governance,
        "mutation($i: DatasetVersionInput!) { publishDatasetVersion(input: $i) { leafIndex } }",
        json!({"i": {"datasetId": "riverside-cxr", "version": "3.0",
                     "manifestDigest": digest}}),
    )
    .await;
    let before = size(&api, &governance).await;

    let base = server.base.clone();
    let token = governance.clone();
    let r = tokio::task::spawn_blocking(move || {
        run_client(
            "openlineage_client.py",
            &[&base, &token, "riverside-cxr@1.0", "riverside-cxr", "3.0"],
        )
    })
    .await
    .unwrap();
    let status = &r["status"];
    assert_eq!(
        status["start"], 200,
        "START acknowledged, not recorded: {r}"
    );
    assert_eq!(status["complete"], 201, "{r}");
    assert_eq!(
        status["retry"], 200,
        "a retry answers with the first record: {r}"
    );
    assert_eq!(status["training"], 201, "{r}");
    assert_eq!(status["dataset_event"], 200, "{r}");
    assert_eq!(status["job_event"], 200, "{r}");
    assert_eq!(status["unknown_input"], 422, "{r}");
    assert!(
        status["unknown_input_error"]
            .as_str()
            .unwrap()
            .contains("s3://raw-bucket:exports/cxr.csv is not a Clew dataset version"),
        "{r}"
    );
    assert_eq!(
        size(&api, &governance).await,
        before + 2,
        "exactly the two COMPLETE runs were recorded"
    );

    // The transform, through GraphQL: inputs → outputs, kind, code, facets kept.
    let run = r["transform_run"].as_str().unwrap();
    let lineage = api
        .ok(
            &governance,
            "query($s: String!) { lineage(subject: $s, direction: UPSTREAM, depth: 1) { edges { from relation to } } entity(subject: $s) { attributes } }",
            json!({"s": format!("dataset-version/riverside-cxr@3.0")}),
        )
        .await;
    let edges = lineage["lineage"]["edges"].as_array().unwrap();
    assert!(
        edges
            .iter()
            .any(|e| e["relation"] == "wasGeneratedBy" && e["to"] == format!("transform/{run}")),
        "{lineage:#}"
    );
    let t = api
        .ok(
            &governance,
            "query($s: String!) { entity(subject: $s) { attributes } lineage(subject: $s, direction: UPSTREAM, depth: 1) { edges { from relation to } } }",
            json!({"s": format!("transform/{run}")}),
        )
        .await;
    let a = &t["entity"]["attributes"];
    assert_eq!(a["kind"], "TRANSFORM_KIND_RESAMPLING", "{a:#}");
    assert_eq!(a["toolName"], "clew-resampler");
    assert_eq!(a["toolVersion"], "2.4.1");
    assert_eq!(a["codeDigest"], "git:3f2c9d1e7a4b");
    assert_eq!(a["parameters"]["spacing_mm"], "0.5");
    assert_eq!(a["openlineage"]["jobNamespace"], "nhs-imaging");
    assert_eq!(a["openlineage"]["jobName"], "resample-cxr");
    let facets: Value =
        serde_json::from_str(a["openlineage"]["facetsJson"].as_str().unwrap()).unwrap();
    assert_eq!(
        facets["job"]["sourceCodeLocation"]["url"],
        "https://git.example.nhs.uk/imaging/resample"
    );
    assert_eq!(
        facets["outputs"][0]["facets"]["version"]["datasetVersion"],
        "3.0"
    );
    let up = t["lineage"]["edges"].as_array().unwrap();
    assert!(
        up.iter()
            .any(|e| e["relation"] == "used" && e["to"] == "dataset-version/riverside-cxr@1.0"),
        "{t:#}"
    );

    // The training run: its input with the role from the custom facet.
    let tr = r["training_run"].as_str().unwrap();
    let t = api
        .ok(
            &governance,
            "query($s: String!) { entity(subject: $s) { attributes } }",
            json!({"s": format!("training-run/{tr}")}),
        )
        .await;
    let a = &t["entity"]["attributes"];
    assert_eq!(a["modelName"], "cxr-triage-ol");
    assert_eq!(a["used"][0]["datasetVersionId"], "riverside-cxr@3.0");
    assert_eq!(a["used"][0]["role"], "DATASET_ROLE_TRAIN");
    assert_eq!(a["generatedModelVersionId"], "cxr-triage-ol-1");
    assert_eq!(a["environment"]["framework"], "pytorch");

    // A researcher (no ingest role) may not post lineage.
    let researcher = server.demo_token("ada-researcher");
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/lineage", server.base))
        .bearer_auth(&researcher)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // Malformed events are refused naming the problem, and append nothing.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/lineage", server.base))
        .bearer_auth(&governance)
        .json(&json!({"eventTime": "2026-11-27T10:00:00Z", "producer": "x", "schemaURL": "y",
                      "eventType": "COMPLETE", "run": {"runId": "not-a-uuid"}, "job": {"namespace": "a", "name": "b"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("is not a UUID"));
    assert_eq!(size(&api, &governance).await, before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcat_ap_and_prov_json_parse_as_linked_data_with_the_expected_triples() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::demo_async(&data).await;
    let api = Api::new(&server.base);
    let governance = server.demo_token("governance-board");
    let subject = "deployment/riverside-cxr-triage";
    let lineage = api
        .ok(
            &governance,
            "query($s: String!) { lineage(subject: $s, direction: UPSTREAM, depth: 10) { nodes { subject } edges { from relation to } } }",
            json!({"s": subject}),
        )
        .await;
    let client = |token: String| {
        let base = server.base.clone();
        tokio::task::spawn_blocking(move || {
            run_client(
                "linked_data_client.py",
                &[&base, &token, "riverside-cxr", subject],
            )
        })
    };
    let r = client(governance.clone()).await.unwrap();
    let base = &server.base;

    // DCAT-AP 3 / HealthDCAT-AP, valid against the official DCAT-AP 3.0.1 shapes.
    assert_eq!(r["catalog_status"], 200);
    assert_eq!(
        r["catalog_shacl_conforms"], true,
        "the catalogue fails DCAT-AP 3.0.1's SHACL shapes: {}",
        r["catalog_shacl_violations"]
    );
    assert_eq!(
        r["dataset_shacl_conforms"], true,
        "the dataset fails DCAT-AP 3.0.1's SHACL shapes: {}",
        r["dataset_shacl_violations"]
    );
    assert_eq!(r["catalog_type"], "application/ld+json");
    let listed: Vec<&str> = r["catalog_datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&"riverside-cxr") && listed.contains(&"nccid-cxr-train"),
        "{listed:?}"
    );
    let d = &r["dataset"];
    assert_eq!(d["types"], json!(["http://www.w3.org/ns/dcat#Dataset"]));
    assert_eq!(d["identifier"], "riverside-cxr");
    assert_eq!(d["title"], "Riverside chest X-ray collection");
    assert!(d["description"]
        .as_str()
        .unwrap()
        .contains("frontal chest radiographs"));
    assert_eq!(d["version"], "1.0");
    assert_eq!(
        d["access_rights"],
        "http://publications.europa.eu/resource/authority/access-right/NON_PUBLIC"
    );
    assert_eq!(
        d["theme"],
        "http://publications.europa.eu/resource/authority/data-theme/HEAL"
    );
    assert_eq!(
        d["publisher_name"],
        "Riverside University Hospitals NHS Trust"
    );
    assert!(d["contact_fn"].as_str().unwrap().contains("Riverside"));
    assert!(d["keywords"].as_array().unwrap().contains(&json!("chest")));
    assert!(
        d["license"].as_str().is_some_and(|l| l.starts_with("http")),
        "the licence is a document IRI on the distribution: {d}"
    );
    assert_eq!(
        d["legislation"],
        "http://data.europa.eu/eli/reg/2025/327/oj"
    );
    assert!(d["health_category"].as_str().is_some(), "{d}");
    assert!(d["provenance"].as_str().unwrap().contains("leaf"));
    let v = &r["versions"][0];
    assert_eq!(v["id"], "riverside-cxr@1.0");
    assert_eq!(v["version"], "1.0");
    assert_eq!(v["is_version_of"], format!("{base}/datasets/riverside-cxr"));
    assert_eq!(
        d["records"], v["records"],
        "the dataset's records are its latest version's"
    );
    assert!(
        v["records"].as_str().unwrap().parse::<u64>().unwrap() > 0,
        "{v}"
    );
    assert!(
        v["individuals"].as_str().unwrap().parse::<u64>().unwrap() > 0,
        "{v}"
    );
    assert_eq!(
        v["access_url"],
        format!("{base}/dataset-versions/riverside-cxr@1.0/manifest")
    );
    assert_eq!(v["checksum"].as_str().unwrap().len(), 64);
    assert_eq!(
        v["checksum_type"],
        "http://www.w3.org/2001/XMLSchema#hexBinary"
    );
    assert_eq!(v["checksums"], 1, "one checksum per distribution: {v}");
    assert_eq!(
        v["format"],
        "http://publications.europa.eu/resource/authority/file-type/JSON"
    );
    assert!(
        v["publisher"].as_str().is_some(),
        "versions carry a publisher: {v}"
    );
    assert!(v["start"].as_str().unwrap().starts_with("20"), "{v}");
    assert!(!v["modalities"].as_array().unwrap().is_empty(), "{v}");

    // PROV-JSON, read by the W3C `prov` library and as PROV-O triples.
    assert_eq!(r["prov_status"], 200);
    let edges = lineage["lineage"]["edges"].as_array().unwrap();
    let used: Vec<Value> = edges
        .iter()
        .filter(|e| e["relation"] == "used")
        .map(|e| {
            json!([
                format!("clew:{}", e["from"].as_str().unwrap()),
                format!("clew:{}", e["to"].as_str().unwrap())
            ])
        })
        .collect();
    let mut used_sorted = used.clone();
    used_sorted.sort_by_key(|v| v.to_string());
    assert_eq!(
        r["prov_usages"],
        json!(used_sorted),
        "every used edge is a PROV usage"
    );
    assert_eq!(r["prov_rdf_used"].as_array().unwrap().len(), used.len());
    let iri = |s: &str| format!("{base}/entity/{s}");
    assert!(
        r["prov_rdf_used"].as_array().unwrap().contains(&json!([
            iri("deployment/riverside-cxr-triage"),
            iri("model-version/cxr-pneumonia-triage-1.1")
        ])),
        "{r}"
    );
    let generated = edges
        .iter()
        .filter(|e| e["relation"] == "wasGeneratedBy")
        .count();
    assert_eq!(r["prov_counts"]["ProvGeneration"], generated);
    assert_eq!(r["prov_rdf_generated"].as_array().unwrap().len(), generated);
    assert!(r["prov_entities"]
        .as_array()
        .unwrap()
        .contains(&json!(iri("dataset-version/riverside-cxr@1.0"))));

    // A researcher sees neither the controlled dataset nor its version in either.
    let r = client(server.demo_token("ada-researcher")).await.unwrap();
    let listed: Vec<&str> = r["catalog_datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(!listed.contains(&"riverside-cxr"), "{listed:?}");
    assert!(!listed.is_empty());
    assert_eq!(r["dataset_status"], 404);
    let entities = r["prov_entities"].as_array().unwrap();
    assert!(
        !entities.contains(&json!(iri("dataset-version/riverside-cxr@1.0"))),
        "{entities:?}"
    );
}
