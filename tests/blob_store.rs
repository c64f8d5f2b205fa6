//! Manifests in a real S3-compatible bucket (SeaweedFS, started by the
//! `clew-s3-server` harness on loopback): cited only when present on both
//! buses, shared by replicas that keep nothing of it on disk, an outage of
//! the store refused cleanly and resumed from, an object altered inside the
//! bucket refused on read and named by `clew verify --content`, and a data
//! directory's own store moved into the bucket with `clew blobs sync`.

use crate::support;

use std::path::Path;
use std::process::Output;

use clew_s3_server::S3Server;
use serde_json::{json, Value};
use support::kafka::{broker, kafka_args, prefix, replica_with, wait_for_size, Sequencer};
use support::server::{manifest_body as manifest, Api, Server};
use support::{clew, Fixture};

const PUBLISH: &str =
    "mutation($i: DatasetVersionInput!) { publishDatasetVersion(input: $i) { leafIndex } }";

/// PUT /manifests/{digest}: (status, body text).
async fn upload(base: &str, token: &str, body: &[u8]) -> (u16, String) {
    let digest = clew_blobs::digest_of(body);
    let resp = reqwest::Client::new()
        .put(format!("{base}/manifests/{digest}"))
        .bearer_auth(token)
        .body(body.to_vec())
        .send()
        .await
        .expect("PUT /manifests");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// GET a version's manifest: the status and the body, or None when the
/// body did not arrive whole (the server cut the response off: status 0 when
/// not even the head arrived, as when a small body is held back whole).
async fn download(base: &str, token: &str, version: &str) -> (u16, Option<Vec<u8>>) {
    let sent = reqwest::Client::new()
        .get(format!("{base}/dataset-versions/{version}/manifest"))
        .bearer_auth(token)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) if e.is_request() => return (0, None),
        Err(e) => panic!("GET manifest: {e}"),
    };
    let status = resp.status().as_u16();
    (status, resp.bytes().await.ok().map(|b| b.to_vec()))
}

fn version_input(dataset: &str, version: &str, digest: &str) -> Value {
    json!({"i": {"datasetId": dataset, "version": version, "manifestDigest": digest,
                 "imagingSummary": {"modalities": ["CT"]}}})
}

/// Publishes `input`, which must be refused with `MISSING_CONTENT`;
/// returns the GraphQL error.
async fn refused_as_missing(api: &Api, token: &str, input: Value) -> Value {
    let refused = api.fails(token, PUBLISH, input, "REJECTED").await;
    let error = refused["errors"][0].clone();
    assert_eq!(error["extensions"]["reason"], "MISSING_CONTENT", "{error}");
    error
}

async fn tree_size(api: &Api, token: &str) -> u64 {
    api.ok(token, "{ checkpoint { size } }", json!({})).await["checkpoint"]["size"]
        .as_u64()
        .expect("size")
}

/// `clew args…` with the bucket's environment.
fn clew_with(args: &[&str], env: &[(String, String)]) -> Output {
    clew()
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("the clew binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_server_cites_only_manifests_in_the_bucket_and_rides_out_its_outage() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = tokio::task::block_in_place(|| S3Server::start(&tmp.path().join("s3")));
    let env = s3.client_env();
    let data = tmp.path().join("data");
    let server = {
        let (data, env) = (data.clone(), env.clone());
        tokio::task::spawn_blocking(move || {
            Server::start_with(
                &data,
                &["demo", "--serve", "--blob-store", "s3://clew/manifests"],
                &env,
            )
        })
        .await
        .unwrap()
    };
    let api = Api::new(&server.base);
    let admin = server.admin_token();
    let mut s3 = s3;

    // The demo's manifests went into the bucket, not the data directory.
    let (status, body) = download(&server.base, &admin, "riverside-cxr@1.0").await;
    assert_eq!(status, 200);
    let demo: Value = serde_json::from_slice(&body.expect("whole body")).unwrap();
    assert_eq!(demo["format"], "clew.dicom-series-manifest/1");
    assert!(
        !data.join("manifests/sha256").exists(),
        "no manifest is kept on the server's disk"
    );

    // A version citing a manifest nobody uploaded is refused by the ledger.
    let before = tree_size(&api, &admin).await;
    let never = clew_blobs::digest_of(b"never uploaded");
    let error =
        refused_as_missing(&api, &admin, version_input("riverside-cxr", "8.0", &never)).await;
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&never) && message.contains("s3://clew/manifests"),
        "{message}"
    );
    assert_eq!(
        tree_size(&api, &admin).await,
        before,
        "nothing was recorded"
    );

    // Uploaded first, then cited: accepted.
    let body = manifest("kept");
    let digest = clew_blobs::digest_of(&body);
    assert_eq!(upload(&server.base, &admin, &body).await.0, 201);
    let published = api
        .ok(
            &admin,
            PUBLISH,
            version_input("riverside-cxr", "8.0", &digest),
        )
        .await;
    let leaf = published["publishDatasetVersion"]["leafIndex"]
        .as_u64()
        .unwrap();

    // The store stopped: an upload is refused naming it, a version that
    // cites a manifest (even one it holds) is not recorded, and both work
    // once the store is back.
    let waiting = manifest("uploaded while the store was away");
    let waiting_digest = clew_blobs::digest_of(&waiting);
    let held = manifest("held before the outage");
    let held_digest = clew_blobs::digest_of(&held);
    assert_eq!(upload(&server.base, &admin, &held).await.0, 201);
    tokio::task::block_in_place(|| s3.stop());
    let (status, why) = upload(&server.base, &admin, &waiting).await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("s3://clew/manifests"), "{why}");
    let size = tree_size(&api, &admin).await;
    let unavailable = api
        .fails(
            &admin,
            PUBLISH,
            version_input("riverside-cxr", "8.1", &held_digest),
            "UNAVAILABLE",
        )
        .await;
    assert!(
        unavailable["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nothing was recorded"),
        "{unavailable}"
    );
    assert_eq!(tree_size(&api, &admin).await, size, "nothing was recorded");
    tokio::task::block_in_place(|| s3.restart());
    assert_eq!(upload(&server.base, &admin, &waiting).await.0, 201);
    api.ok(
        &admin,
        PUBLISH,
        version_input("riverside-cxr", "8.1", &held_digest),
    )
    .await;
    api.ok(
        &admin,
        PUBLISH,
        version_input("riverside-cxr", "8.2", &waiting_digest),
    )
    .await;

    // An object altered inside the bucket: the server does not serve it
    // whole, and `clew verify --content` names the leaf that cites it.
    let hex = digest.trim_start_matches("sha256:");
    let mut altered = body.clone();
    altered[20] ^= 1;
    let status = s3
        .put_raw(&format!("/clew/manifests/sha256/{hex}"), &altered)
        .unwrap();
    assert_eq!(status, 200);
    let (status, got) = download(&server.base, &admin, "riverside-cxr@8.0").await;
    assert_eq!(status, 500, "an altered manifest is not served");
    let said = String::from_utf8_lossy(got.as_deref().unwrap_or_default()).into_owned();
    assert!(
        said.contains("is damaged") && !said.contains("\"format\""),
        "{said}"
    );
    assert_eq!(server.stop().code(), Some(0));
    let data_dir = data.to_string_lossy().into_owned();
    let verified = tokio::task::block_in_place(|| {
        clew_with(
            &[
                "verify",
                "--content",
                "--data-dir",
                &data_dir,
                "--blob-store",
                "s3://clew/manifests",
            ],
            &env,
        )
    });
    let said = text(&verified);
    assert_eq!(verified.status.code(), Some(2), "{said}");
    assert!(
        said.contains("1 cited manifests are missing or altered")
            && said.contains(&format!("leaf {leaf}: manifest {digest}"))
            && said.contains("altered"),
        "{said}"
    );
}

#[test]
fn a_local_store_moves_into_the_bucket_with_blobs_sync_resumably() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&tmp.path().join("s3"));
    let env = s3.client_env();
    let data = tmp.path().join("data");
    let data_dir = data.to_string_lossy().into_owned();
    let out = clew_with(&["demo", "--data-dir", &data_dir], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let local = data.join("manifests/sha256");
    let mut names: Vec<_> = std::fs::read_dir(&local)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let total = names.len();
    assert_eq!(total, 18, "one manifest per demo version");

    // A run that stopped part-way: five objects are in the bucket already.
    let partial = tmp.path().join("partial");
    std::fs::create_dir_all(partial.join("sha256")).unwrap();
    for name in &names[..5] {
        std::fs::copy(local.join(name), partial.join("sha256").join(name)).unwrap();
    }
    let to = "s3://clew/migrated";
    let first = clew_with(
        &[
            "blobs",
            "sync",
            "--from",
            &format!("file://{}", partial.display()),
            "--to",
            to,
        ],
        &env,
    );
    assert!(
        text(&first).contains("copied 5 manifests"),
        "{}",
        text(&first)
    );
    let sync = || {
        clew_with(
            &["blobs", "sync", "--data-dir", &data_dir, "--to", to],
            &env,
        )
    };
    let resumed = sync();
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(
        text(&resumed).contains(&format!("copied {} manifests", total - 5))
            && text(&resumed).contains("5 were there already"),
        "{}",
        text(&resumed)
    );
    let again = sync();
    assert!(
        text(&again).contains("copied 0 manifests")
            && text(&again).contains(&format!("{total} were there already")),
        "{}",
        text(&again)
    );

    // An object of the source that does not hash to its name is not copied.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(bad.join("sha256")).unwrap();
    std::fs::write(
        bad.join("sha256").join("ab".repeat(32)),
        b"not what it says",
    )
    .unwrap();
    let refused = clew_with(
        &[
            "blobs",
            "sync",
            "--from",
            &format!("file://{}", bad.display()),
            "--to",
            to,
        ],
        &env,
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains(&format!("not copied: sha256:{}", "ab".repeat(32))),
        "{}",
        text(&refused)
    );

    // The ledger's manifests are all in the bucket and whole.
    let verified = clew_with(
        &[
            "verify",
            "--content",
            "--data-dir",
            &data_dir,
            "--blob-store",
            to,
        ],
        &env,
    );
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(
        text(&verified).contains(&format!("the {total} manifests it cites are in {to}")),
        "{}",
        text(&verified)
    );

    // Served from the bucket once the local copies are gone.
    std::fs::remove_dir_all(data.join("manifests")).unwrap();
    let server = Server::start_with(&data, &["serve", "--blob-store", to], &env);
    let admin = server.admin_token();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = rt.block_on(download(&server.base, &admin, "northgate-ct@1.0"));
    assert_eq!(status, 200);
    assert!(body.is_some_and(|b| b.starts_with(b"{\"format\":\"clew.dicom-series-manifest/1\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard only keeps other Kafka tests of this binary from running at the
// same time; holding it across awaits is the point.
#[allow(clippy::await_holding_lock)]
async fn replicas_share_the_bucket_and_the_kafka_sequencer_cites_only_what_it_holds() {
    let _serial = clew_kafka_broker::serial();
    let broker = broker();
    let kafka = kafka_args(&broker, &prefix("blobs"));
    let fx = Fixture::new();
    let mut s3 = S3Server::start(&fx.path("s3"));
    let env = s3.client_env();
    let bucket = vec!["--blob-store".to_string(), "s3://clew/shared".to_string()];
    let _sequencer =
        tokio::task::block_in_place(|| Sequencer::start_with(&fx.data(), &kafka, &bucket, &env));
    let start = |name: &str| {
        let data = fx.path(name);
        tokio::task::block_in_place(|| replica_with(&fx, &data, &kafka, name, &bucket, &env))
    };
    let a = start("replica-a");
    let b = start("replica-b");
    let (api_a, api_b) = (Api::new(&a.base), Api::new(&b.base));
    let (ta, tb) = (a.admin_token(), b.admin_token());

    api_a
        .ok(
            &ta,
            "mutation($i: SiteInput!) { registerSite(input: $i) { leafIndex } }",
            json!({"i": {"siteId": "bucket-trust", "name": "Bucket Trust", "kind": "SITE_KIND_HOSPITAL_TRUST"}}),
        )
        .await;
    api_a
        .ok(
            &ta,
            "mutation($i: DatasetInput!) { registerDataset(input: $i) { leafIndex } }",
            json!({"i": {"datasetId": "bucket-ct", "title": "Chest CT kept in the bucket",
                         "custodianSiteId": "bucket-trust", "accessLevel": "ACCESS_LEVEL_OPEN",
                         "licence": "CC-BY-4.0"}}),
        )
        .await;

    // Uploaded through one replica, cited, then read through the other.
    let body = manifest("shared");
    let digest = clew_blobs::digest_of(&body);
    assert_eq!(upload(&a.base, &ta, &body).await.0, 201);
    assert_eq!(
        upload(&b.base, &tb, &body).await.0,
        200,
        "the second replica finds it there"
    );
    api_a
        .ok(&ta, PUBLISH, version_input("bucket-ct", "1.0", &digest))
        .await;
    let size = tree_size(&api_a, &ta).await;
    wait_for_size(&api_b, &tb, size).await;
    let (status, got) = download(&b.base, &tb, "bucket-ct@1.0").await;
    assert_eq!((status, got.as_deref()), (200, Some(&body[..])));

    // A version citing an absent manifest is refused by the Kafka sequencer.
    let never = clew_blobs::digest_of(b"not in the bucket");
    refused_as_missing(&api_b, &tb, version_input("bucket-ct", "2.0", &never)).await;

    // The bucket away: the sequencer cannot tell whether a manifest it
    // holds is there, so the batch citing it waits, written neither as a
    // leaf nor as a refusal; once the bucket is back it is sequenced, once.
    let held = manifest("held before the outage");
    let held_digest = clew_blobs::digest_of(&held);
    assert_eq!(upload(&a.base, &ta, &held).await.0, 201);
    let before = tree_size(&api_a, &ta).await;
    tokio::task::block_in_place(|| s3.stop());
    let waiting = {
        let (api, token) = (Api::new(&a.base), ta.clone());
        tokio::spawn(async move {
            api.ok(
                &token,
                PUBLISH,
                version_input("bucket-ct", "3.0", &held_digest),
            )
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert!(!waiting.is_finished(), "answered while the bucket was away");
    assert_eq!(
        tree_size(&api_a, &ta).await,
        before,
        "nothing recorded while the bucket was away"
    );
    tokio::task::block_in_place(|| s3.restart());
    let answered = waiting.await.expect("the publish task");
    let leaf = answered["publishDatasetVersion"]["leafIndex"]
        .as_u64()
        .expect("a leaf once the bucket is back");
    assert_eq!(leaf, before, "the waiting version is the next leaf");
    wait_for_size(&api_b, &tb, before + 1).await;
    let size = tree_size(&api_b, &tb).await;
    assert_eq!(size, before + 1, "sequenced once");

    // Both replicas gone, two new ones on empty disks: every manifest served.
    drop(a);
    drop(b);
    for name in ["replica-c", "replica-d"] {
        let r = start(name);
        let (api, t) = (Api::new(&r.base), r.admin_token());
        wait_for_size(&api, &t, size).await;
        // The mirror holds the size before the catalogue has applied it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let (status, got) = loop {
            let answer = download(&r.base, &t, "bucket-ct@1.0").await;
            if answer.0 != 404 || std::time::Instant::now() > deadline {
                break answer;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        assert_eq!((status, got.as_deref()), (200, Some(&body[..])), "{name}");
        assert!(!Path::new(&fx.path(name)).join("manifests/sha256").exists());
    }
}
