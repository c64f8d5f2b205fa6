//! Manifests through Clew against the store's own client, same run, same
//! store: SeaweedFS (`clew-s3-server`) on loopback.
//!
//! Through Clew: `PUT /manifests/{digest}` to `clew serve --blob-store
//! s3://clew/through-clew` (authenticated, spooled to disk while hashed,
//! format-checked, then written once by digest) and `GET
//! /dataset-versions/{id}/manifest` (access-checked, verified as it streams).
//! Directly: the same objects put and read with `object_store`'s S3 client
//! (what Clew itself uses underneath) — one PUT up to 8 MiB, above it a
//! multipart upload of 8 MiB parts, two in flight, as Clew does — with no
//! hashing, no spooling, no checks. The ratio is direct time / Clew time
//! (Clew's share of the store's own throughput); medians of the runs.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use clew_s3_server::S3Server;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, WriteMultipart};
use serde::Serialize;
use serde_json::json;

/// One manifest size's figures.
#[derive(Debug, Serialize)]
pub struct SizeFigures {
    pub mib: u64,
    pub runs: usize,
    pub clew_put_p50_ms: f64,
    pub clew_put_p99_ms: f64,
    pub direct_put_p50_ms: f64,
    pub direct_put_p99_ms: f64,
    pub clew_put_mib_per_s: f64,
    pub direct_put_mib_per_s: f64,
    pub put_ratio: f64,
    pub clew_get_p50_ms: f64,
    pub clew_get_p99_ms: f64,
    pub direct_get_p50_ms: f64,
    pub direct_get_p99_ms: f64,
    pub clew_get_mib_per_s: f64,
    pub direct_get_mib_per_s: f64,
    pub get_ratio: f64,
}

/// The whole benchmark.
#[derive(Debug, Serialize)]
pub struct BlobBench {
    pub store: String,
    pub sizes: Vec<SizeFigures>,
    /// The lowest of the put and get ratios (the goal is ≥ 0.8).
    pub worst_ratio: f64,
}

/// A manifest in Clew's format of at least `bytes` bytes, unique to `seed`.
fn manifest(seed: usize, bytes: usize) -> Bytes {
    let instance = |i: usize| {
        json!({"path": format!("series-{seed}/{i:07}.dcm"),
               "sopInstanceUid": format!("2.25.{seed}.1.{i}"),
               "sha256": format!("{:064x}", i * 7919 + seed), "size": 524_288})
    };
    // About 170 bytes per instance.
    let n = bytes / 170 + 1;
    let series = json!({
        "studyInstanceUid": format!("2.25.{seed}"), "seriesInstanceUid": format!("2.25.{seed}.1"),
        "modality": "CT", "bodyPartExamined": "CHEST", "manufacturer": "SIEMENS",
        "manufacturerModelName": "SOMATOM Definition AS+", "sliceThicknessMm": 1.0,
        "studyDate": "20260101", "instanceCount": n,
        "instances": (0..n).map(instance).collect::<Vec<_>>(),
    });
    Bytes::from(
        json!({"format": "clew.dicom-series-manifest/1", "series": [series]})
            .to_string()
            .into_bytes(),
    )
}

/// The `p` quantile of samples sorted ascending (0 when there are none).
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(samples: &mut [Duration]) -> Vec<f64> {
    samples.sort();
    samples.iter().map(|d| d.as_secs_f64() * 1e3).collect()
}

/// The direct put: one PUT up to 8 MiB, else multipart (8 MiB parts, 2 in flight).
async fn direct_put(store: &Arc<dyn ObjectStore>, key: &Key, body: &Bytes) -> Result<()> {
    if body.len() as u64 <= clew_blobs::SINGLE_PUT_MAX {
        store.put(key, body.clone().into()).await?;
        return Ok(());
    }
    let upload = store.put_multipart(key).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    for chunk in body.chunks(8 << 20) {
        writer.wait_for_capacity(2).await?;
        writer.put(body.slice_ref(chunk));
    }
    writer.finish().await?;
    Ok(())
}

/// Runs the benchmark: `runs_small` runs of 1 MiB and `runs_large` of 32 MiB.
pub fn run(exe: &Path, runs_small: usize, runs_large: usize) -> Result<BlobBench> {
    let tmp = tempfile::tempdir()?;
    let s3 = S3Server::start(&tmp.path().join("s3"));
    let env = s3.client_env();
    let data = tmp.path().join("data");
    let (child, base) = crate::api::start_serve(
        exe,
        &data,
        &["--blob-store", "s3://clew/through-clew"],
        &env,
    )?;
    let admin = std::fs::read_to_string(data.join("admin.token"))?
        .trim()
        .to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let direct: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(s3.endpoint())
            .with_allow_http(true)
            .with_bucket_name(clew_s3_server::BUCKET)
            .with_region("us-east-1")
            .with_access_key_id("clew-bench")
            .with_secret_access_key("clew-bench-secret")
            .build()?,
    );
    let result = rt.block_on(async {
        let client = reqwest::Client::new();
        crate::api::post(&client, &base, &admin,
            "mutation($i: SiteInput!) { registerSite(input: $i) { leafIndex } }",
            json!({"i": {"siteId": "bench-trust", "name": "Bench Trust", "kind": "SITE_KIND_HOSPITAL_TRUST"}})).await?;
        crate::api::post(&client, &base, &admin,
            "mutation($i: DatasetInput!) { registerDataset(input: $i) { leafIndex } }",
            json!({"i": {"datasetId": "bench-ct", "title": "Benchmark manifests", "custodianSiteId": "bench-trust",
                         "accessLevel": "ACCESS_LEVEL_OPEN", "licence": "CC-BY-4.0"}})).await?;
        let mut sizes = Vec::new();
        let mut seed = 0usize;
        for (mib, runs) in [(1u64, runs_small), (32u64, runs_large)] {
            let (mut cp, mut dp, mut cg, mut dg) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            // One untimed run of each first (connections, caches).
            for run in 0..=runs {
                seed += 1;
                let body = manifest(seed, (mib << 20) as usize);
                let digest = clew_blobs::digest_of(&body);
                // Through Clew.
                let t = Instant::now();
                let resp = client
                    .put(format!("{base}/manifests/{digest}"))
                    .bearer_auth(&admin)
                    .body(body.clone())
                    .send()
                    .await?;
                let status = resp.status();
                resp.bytes().await?;
                let clew_put = t.elapsed();
                anyhow::ensure!(status.as_u16() == 201, "PUT /manifests answered {status}");
                // Directly.
                let key = Key::from(format!("direct/{seed}"));
                let t = Instant::now();
                direct_put(&direct, &key, &body).await?;
                let direct_put_time = t.elapsed();
                // A version cites it, so it can be read back through Clew.
                let version = format!("{seed}.0");
                crate::api::post(&client, &base, &admin,
                    "mutation($i: DatasetVersionInput!) { publishDatasetVersion(input: $i) { leafIndex } }",
                    json!({"i": {"datasetId": "bench-ct", "version": version, "manifestDigest": digest}})).await?;
                let t = Instant::now();
                let got = client
                    .get(format!("{base}/dataset-versions/bench-ct@{version}/manifest"))
                    .bearer_auth(&admin)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
                let clew_get = t.elapsed();
                anyhow::ensure!(got.len() == body.len(), "GET returned {} of {} bytes", got.len(), body.len());
                let t = Instant::now();
                let got = direct.get(&key).await?.bytes().await?;
                let direct_get = t.elapsed();
                anyhow::ensure!(got.len() == body.len(), "direct GET returned {} bytes", got.len());
                if run > 0 {
                    cp.push(clew_put);
                    dp.push(direct_put_time);
                    cg.push(clew_get);
                    dg.push(direct_get);
                }
            }
            let (cp, dp, cg, dg) = (ms(&mut cp), ms(&mut dp), ms(&mut cg), ms(&mut dg));
            let actual_mib = manifest(0, (mib << 20) as usize).len() as f64 / (1u64 << 20) as f64;
            let rate = |p50_ms: f64| actual_mib / (p50_ms / 1e3);
            let f = SizeFigures {
                mib,
                runs,
                clew_put_p50_ms: percentile(&cp, 0.5),
                clew_put_p99_ms: percentile(&cp, 0.99),
                direct_put_p50_ms: percentile(&dp, 0.5),
                direct_put_p99_ms: percentile(&dp, 0.99),
                clew_put_mib_per_s: rate(percentile(&cp, 0.5)),
                direct_put_mib_per_s: rate(percentile(&dp, 0.5)),
                put_ratio: percentile(&dp, 0.5) / percentile(&cp, 0.5),
                clew_get_p50_ms: percentile(&cg, 0.5),
                clew_get_p99_ms: percentile(&cg, 0.99),
                direct_get_p50_ms: percentile(&dg, 0.5),
                direct_get_p99_ms: percentile(&dg, 0.99),
                clew_get_mib_per_s: rate(percentile(&cg, 0.5)),
                direct_get_mib_per_s: rate(percentile(&dg, 0.5)),
                get_ratio: percentile(&dg, 0.5) / percentile(&cg, 0.5),
            };
            sizes.push(f);
        }
        anyhow::Ok(sizes)
    });
    crate::api::stop_serve(child);
    let sizes = result?;
    let worst_ratio = sizes
        .iter()
        .flat_map(|s| [s.put_ratio, s.get_ratio])
        .fold(f64::INFINITY, f64::min);
    Ok(BlobBench {
        store: format!("SeaweedFS S3 gateway at {}", s3.endpoint()),
        sizes,
        worst_ratio,
    })
}
