//! The blob store's behaviour on its two backends: a local directory and a
//! real S3-compatible server nobody here wrote (SeaweedFS, `weed server -s3`,
//! built by `tests/setup.sh`, started by the `clew-s3-server` harness on
//! loopback with its own data directory).

use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clew_blobs::{block_on, digest_of, spool, BlobError, BlobStore, Presence, SINGLE_PUT_MAX};
use clew_s3_server::S3Server;
use futures_util::StreamExt;

fn s3_store(port: u16) -> BlobStore {
    static ENV: OnceLock<()> = OnceLock::new();
    ENV.get_or_init(|| {
        // The same values for every test of this binary.
        std::env::set_var("AWS_ACCESS_KEY_ID", "clew-test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "clew-test-secret");
        std::env::set_var("AWS_REGION", "us-east-1");
    });
    std::env::set_var("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"));
    BlobStore::open("s3://clew/manifests", None).expect("open the S3 store")
}

fn manifest(seed: u64, bytes: usize) -> Bytes {
    let mut out =
        format!("{{\"format\":\"clew.dicom-series-manifest/1\",\"seed\":{seed},\"pad\":\"");
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    while out.len() + 2 < bytes {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push(char::from(b'a' + (x >> 59) as u8));
    }
    out.push_str("\"}");
    Bytes::from(out)
}

async fn read_all(store: &BlobStore, digest: &str) -> Result<Vec<u8>, BlobError> {
    let mut read = store.open_read(digest).await?.expect("present");
    let mut out = Vec::new();
    while let Some(c) = read.body.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

/// The blocking face of `contains`, asked as the sequencer asks it: from a
/// thread that is not one of a runtime's workers.
async fn contains_blocking(store: &BlobStore, digest: &str) -> Result<bool, BlobError> {
    let (store, digest) = (store.clone(), digest.to_string());
    tokio::task::spawn_blocking(move || store.contains_blocking(&digest))
        .await
        .expect("the check's thread ended")
}

/// What both backends must do alike.
async fn behaves_as_a_content_store(store: BlobStore, scratch: PathBuf) {
    // Written once, by digest; a second writer is a no-op.
    let body = manifest(1, 4000);
    let first = store.put(body.clone()).await.unwrap();
    assert!(first.created);
    assert_eq!(first.digest, digest_of(&body));
    let again = store.put(body.clone()).await.unwrap();
    assert!(
        !again.created,
        "a second writer of the same digest is a no-op"
    );
    assert!(store.contains(&first.digest).await.unwrap());
    // The blocking face (the sequencer's check) answers alike.
    assert!(contains_blocking(&store, &first.digest).await.unwrap());
    assert_eq!(
        store.get(&first.digest, 1 << 20).await.unwrap().unwrap(),
        body
    );
    assert_eq!(
        store.check(&first.digest).await.unwrap(),
        Presence::Present { size: 4000 }
    );

    // Absent, malformed and mismatched digests.
    let absent = digest_of(b"never stored");
    assert!(!store.contains(&absent).await.unwrap());
    assert!(store.open_read(&absent).await.unwrap().is_none());
    assert_eq!(store.check(&absent).await.unwrap(), Presence::Absent);
    assert!(matches!(
        store.contains("sha256:XYZ").await,
        Err(BlobError::BadDigest(_))
    ));
    assert!(!contains_blocking(&store, &absent).await.unwrap());
    assert!(matches!(
        contains_blocking(&store, "sha256:XYZ").await,
        Err(BlobError::BadDigest(_))
    ));
    assert!(matches!(
        store.put_expecting(&absent, body.clone()).await,
        Err(BlobError::DigestMismatch { .. })
    ));
    assert!(matches!(
        store.get(&first.digest, 100).await,
        Err(BlobError::TooLarge { limit: 100 })
    ));

    // A large body: spooled to disk while hashed, then streamed up in parts.
    let big = manifest(2, (SINGLE_PUT_MAX as usize) * 2 + 12345);
    let chunks: Vec<Result<Bytes, BlobError>> = big
        .chunks(256 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let spooled = spool(futures_util::stream::iter(chunks), 64 << 20, &scratch)
        .await
        .unwrap();
    assert_eq!(spooled.digest, digest_of(&big));
    let stored = store.put_spooled(&spooled).await.unwrap();
    assert!(stored.created);
    assert_eq!(
        store.size_of(&stored.digest).await.unwrap(),
        Some(big.len() as u64)
    );
    assert_eq!(read_all(&store, &stored.digest).await.unwrap(), big);
    assert!(!store.put_spooled(&spooled).await.unwrap().created);

    // A large body the caller's check refuses while its parts go up: the
    // multipart upload is aborted and nothing is stored.
    let refused = manifest(4, (SINGLE_PUT_MAX as usize) + 4096);
    let chunks: Vec<Result<Bytes, BlobError>> = vec![Ok(refused.clone())];
    let spooled_refused = spool(futures_util::stream::iter(chunks), 64 << 20, &scratch)
        .await
        .unwrap();
    let r = store
        .put_spooled_checked(&spooled_refused, async {
            Err(BlobError::Refused("not a manifest".into()))
        })
        .await;
    assert!(matches!(r, Err(BlobError::Refused(_))), "{r:?}");
    assert!(!store.contains(&digest_of(&refused)).await.unwrap());
    // A small body is held in memory and goes up in one conditional PUT.
    let small = manifest(5, 10_000);
    let chunks: Vec<Result<Bytes, BlobError>> = vec![Ok(small.clone())];
    let spooled_small = spool(futures_util::stream::iter(chunks), 64 << 20, &scratch)
        .await
        .unwrap();
    let mut read_back = Vec::new();
    spooled_small
        .reader()
        .unwrap()
        .read_to_end(&mut read_back)
        .unwrap();
    assert_eq!(read_back, small);
    assert!(store.put_spooled(&spooled_small).await.unwrap().created);

    // An upload over its limit is refused before anything is stored.
    let chunks: Vec<Result<Bytes, BlobError>> = vec![Ok(big.slice(0..5000))];
    assert!(matches!(
        spool(futures_util::stream::iter(chunks), 4096, &scratch).await,
        Err(BlobError::TooLarge { limit: 4096 })
    ));

    let mut listed = store.digests().await.unwrap();
    listed.retain(|d| d == &first.digest || d == &stored.digest);
    assert_eq!(listed.len(), 2, "both objects are listed");
}

#[test]
fn a_local_directory_is_a_content_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let store = BlobStore::local(&root).unwrap();
    let scratch = dir.path().join("spool");
    block_on(behaves_as_a_content_store(store.clone(), scratch));

    // An object altered on disk: reads refuse it, the last chunk withheld.
    let body = manifest(3, 100_000);
    let d = block_on({
        let s = store.clone();
        let b = body.clone();
        async move { s.put(b).await.unwrap().digest }
    });
    let file = root.join("sha256").join(clew_blobs::hex_of(&d).unwrap());
    let mut altered = body.to_vec();
    altered[50_000] ^= 1;
    std::fs::write(&file, &altered).unwrap();
    let s = store.clone();
    let dd = d.clone();
    let (got, check, get) = block_on(async move {
        let mut read = s.open_read(&dd).await.unwrap().unwrap();
        let mut received = 0usize;
        let mut end = None;
        while let Some(c) = read.body.next().await {
            match c {
                Ok(c) => received += c.len(),
                Err(e) => end = Some(e),
            }
        }
        (
            (received, end),
            s.check(&dd).await.unwrap(),
            s.get(&dd, 1 << 20).await,
        )
    });
    assert!(
        got.0 < altered.len(),
        "a reader never receives all of an altered object"
    );
    assert!(
        matches!(got.1, Some(BlobError::DigestMismatch { .. })),
        "{:?}",
        got.1
    );
    assert!(matches!(check, Presence::Altered { .. }), "{check:?}");
    assert!(matches!(get, Err(BlobError::DigestMismatch { .. })));

    // Truncated in the store: a new upload of the same digest names the conflict.
    std::fs::write(&file, b"short").unwrap();
    let s = store.clone();
    let r = block_on(async move { s.put(body).await });
    assert!(
        matches!(r, Err(BlobError::Conflict { size: 5, .. })),
        "{r:?}"
    );

    // Plain paths and file:// URLs open the same store; other schemes are refused.
    assert!(BlobStore::open(&format!("file://{}", root.display()), None).is_ok());
    assert!(matches!(
        BlobStore::open("gs://bucket", None),
        Err(BlobError::Config(_))
    ));
}

#[test]
fn seaweedfs_is_a_content_store_shared_by_writers_and_survives_outages() {
    let dir = tempfile::tempdir().unwrap();
    let mut weed = S3Server::start(&dir.path().join("weed"));
    let store = s3_store(weed.port());
    block_on(behaves_as_a_content_store(
        store.clone(),
        dir.path().join("spool"),
    ));

    // Two clients of one bucket (two replicas): what one wrote the other reads,
    // and the second writer's conditional create is the store's 412, a no-op.
    let other = s3_store(weed.port());
    let body = manifest(10, 50_000);
    let (a, b, read) = block_on({
        let (store, other, body) = (store.clone(), other.clone(), body.clone());
        async move {
            let a = store.put(body.clone()).await.unwrap();
            let b = other.put(body).await.unwrap();
            let read = other.get(&a.digest, 1 << 20).await.unwrap();
            (a, b, read)
        }
    });
    assert!(a.created && !b.created, "{a:?} {b:?}");
    assert_eq!(read.unwrap().len(), 50_000);

    // An object altered inside the bucket (written around Clew): refused on read.
    let hex = clew_blobs::hex_of(&a.digest).unwrap().to_string();
    let mut altered = body.to_vec();
    altered[10] ^= 1;
    let status = weed
        .put_raw(&format!("/clew/manifests/sha256/{hex}"), &altered)
        .unwrap();
    assert_eq!(status, 200);
    let (check, get) = block_on({
        let (store, d) = (store.clone(), a.digest.clone());
        async move { (store.check(&d).await.unwrap(), store.get(&d, 1 << 20).await) }
    });
    assert!(matches!(check, Presence::Altered { .. }), "{check:?}");
    assert!(
        matches!(get, Err(BlobError::DigestMismatch { .. })),
        "{get:?}"
    );

    // A local store migrated into the bucket.
    let local = BlobStore::local(&dir.path().join("local")).unwrap();
    let (copied, again) = block_on({
        let (local, store, spool_dir) = (local.clone(), store.clone(), dir.path().join("spool"));
        async move {
            let mut copied = Vec::new();
            for seed in 20..25 {
                local.put(manifest(seed, 3000)).await.unwrap();
            }
            for d in local.digests().await.unwrap() {
                copied.push(local.copy_to(&d, &store, &spool_dir).await.unwrap());
            }
            let mut again = Vec::new();
            for d in local.digests().await.unwrap() {
                again.push(local.copy_to(&d, &store, &spool_dir).await.unwrap());
            }
            (copied, again)
        }
    });
    assert_eq!(copied.len(), 5);
    assert!(copied.iter().all(|s| s.created));
    assert!(
        again.iter().all(|s| !s.created),
        "a second sync copies nothing"
    );

    // The store stopped: writes and reads fail fast with an error naming the
    // store, and work again once it is back.
    weed.stop();
    let started = Instant::now();
    let down = block_on({
        let store = store.clone();
        async move { store.put(manifest(30, 2000)).await }
    });
    let elapsed = started.elapsed();
    match &down {
        Err(e @ BlobError::Store { location, .. }) => {
            assert!(e.is_transient());
            assert!(location.contains("s3://clew/manifests"), "{e}");
        }
        other => panic!("a stopped store must refuse the write: {other:?}"),
    }
    assert!(
        elapsed < Duration::from_secs(60),
        "refused after {elapsed:?}"
    );
    weed.restart();
    let back = block_on({
        let store = store.clone();
        async move { store.put(manifest(30, 2000)).await }
    });
    assert!(
        back.unwrap().created,
        "the write succeeds once the store is back"
    );
    let kept = block_on({
        let (store, d) = (store.clone(), copied[0].digest.clone());
        async move { store.contains(&d).await }
    });
    assert!(kept.unwrap(), "objects survive the store's restart");
}
