//! [`BlobStore`]: content-addressed objects on an `object_store` backend.

use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{
    ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use sha2::{Digest, Sha256};

use crate::BlobError;

/// Bodies up to this size are written with one conditional PUT; larger ones
/// are streamed from disk as a multipart upload, so no large body is ever
/// held in memory.
pub const SINGLE_PUT_MAX: u64 = 8 * 1024 * 1024;
/// Part size of multipart uploads (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// "sha256:<hex>" of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    finish(Sha256::new_with_prefix(bytes))
}

/// "sha256:<hex>" of what `hasher` has seen.
fn finish(hasher: Sha256) -> String {
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// The lowercase hex of a `sha256:<64 hex>` digest.
pub fn hex_of(digest: &str) -> Result<&str, BlobError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(h)
        }
        _ => Err(BlobError::BadDigest(digest.to_string())),
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub digest: String,
    pub size: u64,
    /// False when the store already held this digest (the write was a no-op).
    pub created: bool,
}

/// What the store holds under a digest, read through and hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    Present {
        size: u64,
    },
    Absent,
    /// An object is there but its bytes hash to `actual`.
    Altered {
        actual: String,
    },
}

/// A download whose bytes are checked against the digest as they pass: the
/// last chunk is held back until the whole body hashed right, so a reader
/// never receives all of an altered object (the stream ends with
/// [`BlobError::DigestMismatch`] instead).
pub struct VerifiedStream {
    pub size: u64,
    pub body: BoxStream<'static, Result<Bytes, BlobError>>,
}

impl VerifiedStream {
    /// The whole body, verified, if it is at most `limit` bytes.
    pub async fn collect(mut self, limit: u64) -> Result<Bytes, BlobError> {
        if self.size > limit {
            return Err(BlobError::TooLarge { limit });
        }
        let mut out = Vec::with_capacity(self.size as usize);
        while let Some(chunk) = self.body.next().await {
            out.extend_from_slice(&chunk?);
            if out.len() as u64 > limit {
                return Err(BlobError::TooLarge { limit });
            }
        }
        Ok(Bytes::from(out))
    }
}

/// An upload body hashed before anything reaches the store (see [`spool`]):
/// in memory up to [`SINGLE_PUT_MAX`], in a temporary file beyond.
#[derive(Debug)]
pub struct Spooled {
    held: Held,
    pub digest: String,
    pub size: u64,
}

#[derive(Debug)]
enum Held {
    Memory(Bytes),
    File(tempfile::NamedTempFile),
}

impl Spooled {
    /// The spooled bytes, from the start.
    pub fn reader(&self) -> Result<Box<dyn Read + Send>, BlobError> {
        match &self.held {
            Held::Memory(bytes) => Ok(Box::new(std::io::Cursor::new(bytes.clone()))),
            Held::File(file) => file
                .reopen()
                .map(|f| Box::new(f) as Box<dyn Read + Send>)
                .map_err(|e| BlobError::io(file.path().display(), e)),
        }
    }
}

/// Hashes `body`, refusing it once it passes `limit` bytes; kept in memory
/// up to [`SINGLE_PUT_MAX`] (one conditional PUT's worth), written to a
/// temporary file in `dir` beyond, so no large body is held in memory.
pub async fn spool<S>(mut body: S, limit: u64, dir: &Path) -> Result<Spooled, BlobError>
where
    S: futures_util::Stream<Item = Result<Bytes, BlobError>> + Unpin,
{
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut memory: Vec<u8> = Vec::new();
    let mut file: Option<tempfile::NamedTempFile> = None;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(BlobError::TooLarge { limit });
        }
        hasher.update(&chunk);
        if file.is_none() && size > SINGLE_PUT_MAX {
            std::fs::create_dir_all(dir).map_err(|e| BlobError::io(dir.display(), e))?;
            let mut f = tempfile::NamedTempFile::new_in(dir)
                .map_err(|e| BlobError::io(dir.display(), e))?;
            f.write_all(&memory)
                .map_err(|e| BlobError::io(f.path().display(), e))?;
            memory = Vec::new();
            file = Some(f);
        }
        match &mut file {
            Some(f) => f
                .write_all(&chunk)
                .map_err(|e| BlobError::io(f.path().display(), e))?,
            None => memory.extend_from_slice(&chunk),
        }
    }
    let held = match file {
        Some(mut f) => {
            f.flush()
                .map_err(|e| BlobError::io(f.path().display(), e))?;
            Held::File(f)
        }
        None => Held::Memory(Bytes::from(memory)),
    };
    Ok(Spooled {
        held,
        digest: finish(hasher),
        size,
    })
}

/// Runs `future` to completion on the store's own runtime and waits for it
/// here: the blocking face of the store, for callers that are not async
/// (the sequencer's checks, command-line tools). Safe from any thread,
/// including one inside another runtime.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("clew-blobs")
            .enable_all()
            .build()
            .ok()
    });
    match runtime {
        Some(rt) => match futures_executor::block_on(rt.spawn(future)) {
            Ok(out) => out,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        },
        // No runtime could be built (no threads left): run here.
        None => futures_executor::block_on(future),
    }
}

/// Content-addressed objects under keys `sha256/<hex>`: written once, every
/// read verified against its digest.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<dyn ObjectStore>,
    /// Key prefix inside the bucket ("" or ending in '/').
    prefix: String,
    /// Where the store is, for messages (never credentials).
    location: String,
    /// The directory of a local store (its writes are fsynced here).
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("location", &self.location)
            .finish()
    }
}

/// Client settings shared by the remote backends: bounded time-outs and a
/// few retries, so an unreachable store is reported in seconds.
fn client_options(ca_file: Option<&Path>) -> Result<ClientOptions, BlobError> {
    let mut options = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(120));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| BlobError::io(path.display(), e))?;
        let certificates = object_store::Certificate::from_pem_bundle(&pem)
            .map_err(|e| BlobError::Config(format!("CA file {}: {e}", path.display())))?;
        for c in certificates {
            options = options.with_root_certificate(c);
        }
    }
    Ok(options)
}

/// The trimmed contents of the file the environment variable `var` names,
/// if it is set.
fn secret_file(var: &str) -> Result<Option<String>, BlobError> {
    let Some(path) = std::env::var_os(var) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| BlobError::io(format!("{var} ({})", Path::new(&path).display()), e))?;
    Ok(Some(text.trim().to_string()))
}

fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(15),
        ..Default::default()
    }
}

impl BlobStore {
    /// A store in a local directory (created when missing).
    pub fn local(dir: &Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir).map_err(|e| BlobError::io(dir.display(), e))?;
        let fs = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| BlobError::Config(format!("{}: {e}", dir.display())))?;
        let root = std::fs::canonicalize(dir).map_err(|e| BlobError::io(dir.display(), e))?;
        Ok(Self {
            inner: Arc::new(fs),
            prefix: String::new(),
            location: root.display().to_string(),
            local_root: Some(root),
        })
    }

    /// Opens the store a URL names: `file:///<dir>` (or a plain path) or
    /// `s3://<bucket>[/<prefix>]`. An S3 store takes its endpoint, region and
    /// credentials from the standard `AWS_*` environment variables
    /// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`; the credentials may instead be files named by
    /// `CLEW_BLOB_STORE_ACCESS_KEY_ID_FILE` and
    /// `CLEW_BLOB_STORE_SECRET_ACCESS_KEY_FILE`), trusts `ca_file` besides the system roots,
    /// and allows plain HTTP only to an `http://` endpoint given explicitly.
    pub fn open(url: &str, ca_file: Option<&Path>) -> Result<Self, BlobError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(BlobError::Config(format!("{url:?} names no bucket")));
            }
            let prefix = prefix.trim_matches('/');
            let prefix = if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            };
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_client_options(client_options(ca_file)?)
                .with_retry(retry());
            // Credentials kept in files (a mounted Secret) win over the environment.
            if let Some(id) = secret_file("CLEW_BLOB_STORE_ACCESS_KEY_ID_FILE")? {
                builder = builder.with_access_key_id(id);
            }
            if let Some(secret) = secret_file("CLEW_BLOB_STORE_SECRET_ACCESS_KEY_FILE")? {
                builder = builder.with_secret_access_key(secret);
            }
            let endpoint = std::env::var("AWS_ENDPOINT_URL")
                .or_else(|_| std::env::var("AWS_ENDPOINT"))
                .unwrap_or_default();
            if endpoint.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
            let s3 = builder
                .build()
                .map_err(|e| BlobError::Config(format!("{url}: {e}")))?;
            let location = if endpoint.is_empty() {
                url.to_string()
            } else {
                format!("{url} at {endpoint}")
            };
            return Ok(Self {
                inner: Arc::new(s3),
                prefix,
                location,
                local_root: None,
            });
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        if dir.contains("://") {
            return Err(BlobError::Config(format!(
                "{url:?}: a blob store is a directory, file:///<dir> or s3://<bucket>[/<prefix>]"
            )));
        }
        Self::local(Path::new(dir))
    }

    /// Where the store is (for messages; never holds credentials).
    pub fn location(&self) -> &str {
        &self.location
    }

    fn key(&self, digest: &str) -> Result<Key, BlobError> {
        let hex = hex_of(digest)?;
        Ok(Key::from(format!("{}sha256/{hex}", self.prefix)))
    }

    fn failed(&self, e: impl std::fmt::Display) -> BlobError {
        BlobError::Store {
            location: self.location.clone(),
            reason: e.to_string(),
        }
    }

    /// The size of the object under `digest`, without reading it.
    pub async fn size_of(&self, digest: &str) -> Result<Option<u64>, BlobError> {
        let key = self.key(digest)?;
        match self.inner.head(&key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Whether the store holds `digest` (by its key; [`BlobStore::check`]
    /// reads the bytes too).
    pub async fn contains(&self, digest: &str) -> Result<bool, BlobError> {
        Ok(self.size_of(digest).await?.is_some())
    }

    /// [`BlobStore::contains`] for code that is not async (the sequencer
    /// asks it of every dataset version it admits). A local store answers
    /// with one `stat` on the calling thread, where the async path would
    /// hand the question to the store's runtime and on to a blocking thread;
    /// the object's file exists only once it is whole (the store writes a
    /// staged file and renames it). Not for code already running on the
    /// store's own runtime (inside [`block_on`]): an S3 store's answer may
    /// need a connection that a task queued on that very thread drives.
    pub fn contains_blocking(&self, digest: &str) -> Result<bool, BlobError> {
        let Some(path) = self.local_path(digest)? else {
            let (store, digest) = (self.clone(), digest.to_string());
            return block_on(async move { store.contains(&digest).await });
        };
        match std::fs::metadata(&path) {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(BlobError::io(path.display(), e)),
        }
    }

    /// [`BlobStore::put`] for code that is not async (see [`block_on`]).
    pub fn put_blocking(&self, bytes: Bytes) -> Result<Stored, BlobError> {
        let store = self.clone();
        block_on(async move { store.put(bytes).await })
    }

    /// Stores `bytes` under their digest with one conditional write; a second
    /// writer of the same digest is a no-op.
    pub async fn put(&self, bytes: Bytes) -> Result<Stored, BlobError> {
        let digest = digest_of(&bytes);
        self.put_verified(&digest, bytes).await
    }

    /// Stores bytes that must hash to `digest`.
    pub async fn put_expecting(&self, digest: &str, bytes: Bytes) -> Result<Stored, BlobError> {
        hex_of(digest)?;
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(BlobError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        self.put_verified(digest, bytes).await
    }

    async fn put_verified(&self, digest: &str, bytes: Bytes) -> Result<Stored, BlobError> {
        let key = self.key(digest)?;
        let size = bytes.len() as u64;
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(&key, PutPayload::from_bytes(bytes), options)
            .await
        {
            Ok(_) => {
                self.sync_local(digest)?;
                Ok(Stored {
                    digest: digest.to_string(),
                    size,
                    created: true,
                })
            }
            // Written before (by us or another writer): the same digest is
            // the same body, unless the object was altered in the store.
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.already_there(digest, size).await
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    async fn already_there(&self, digest: &str, size: u64) -> Result<Stored, BlobError> {
        match self.size_of(digest).await? {
            Some(s) if s == size => Ok(Stored {
                digest: digest.to_string(),
                size,
                created: false,
            }),
            Some(s) => Err(BlobError::Conflict {
                digest: digest.to_string(),
                size: s,
                expected: size,
            }),
            None => Err(self.failed(format!("reported {digest} as present, then as absent"))),
        }
    }

    /// Stores a spooled upload (already hashed). Small bodies go in one
    /// conditional write; larger ones are streamed from the file as a
    /// multipart upload after the store said it lacks them (two writers of
    /// one digest then write the same bytes).
    pub async fn put_spooled(&self, spooled: &Spooled) -> Result<Stored, BlobError> {
        self.put_spooled_checked(spooled, std::future::ready(Ok(())))
            .await
    }

    /// [`BlobStore::put_spooled`] that stores the body only if `check` (the
    /// caller's look at the content, e.g. its format) passes. A multipart
    /// upload's parts go up while `check` runs and the upload is completed
    /// only after it passed (aborted otherwise: nothing becomes visible); a
    /// single PUT waits for it.
    pub async fn put_spooled_checked<C>(
        &self,
        spooled: &Spooled,
        check: C,
    ) -> Result<Stored, BlobError>
    where
        C: Future<Output = Result<(), BlobError>>,
    {
        if let Held::Memory(bytes) = &spooled.held {
            check.await?;
            // `spool` hashed it on the way in.
            return self.put_verified(&spooled.digest, bytes.clone()).await;
        }
        let mut file = spooled.reader()?;
        if self.size_of(&spooled.digest).await?.is_some() {
            check.await?;
            return self.already_there(&spooled.digest, spooled.size).await;
        }
        let key = self.key(&spooled.digest)?;
        let upload = self
            .inner
            .put_multipart(&key)
            .await
            .map_err(|e| self.failed(e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let send = async {
            let mut buf = vec![0u8; 1024 * 1024];
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) => return Err(BlobError::io("the spooled upload", e)),
                };
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.failed(e))?;
                writer.write(&buf[..n]);
            }
        };
        let (sent, checked) = futures_util::join!(send, check);
        if let Err(e) = sent.and(checked) {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.finish().await.map_err(|e| self.failed(e))?;
        self.sync_local(&spooled.digest)?;
        Ok(Stored {
            digest: spooled.digest.clone(),
            size: spooled.size,
            created: true,
        })
    }

    /// The file of the object under `digest` (its key under the store's
    /// root) when the store is a local directory; `None` for S3.
    fn local_path(&self, digest: &str) -> Result<Option<PathBuf>, BlobError> {
        let hex = hex_of(digest)?;
        Ok(self
            .local_root
            .as_ref()
            .map(|root| root.join("sha256").join(hex)))
    }

    /// A local store's new object is durable before its write is reported.
    fn sync_local(&self, digest: &str) -> Result<(), BlobError> {
        let Some(path) = self.local_path(digest)? else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(&path);
        for p in [path.as_path(), dir] {
            std::fs::File::open(p)
                .and_then(|f| f.sync_all())
                .map_err(|e| BlobError::io(p.display(), e))?;
        }
        Ok(())
    }

    /// Opens the object under `digest` for reading, verified as it streams.
    pub async fn open_read(&self, digest: &str) -> Result<Option<VerifiedStream>, BlobError> {
        let key = self.key(digest)?;
        let got = match self.inner.get(&key).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed(e)),
        };
        let size = got.meta.size;
        struct State {
            inner: BoxStream<'static, object_store::Result<Bytes>>,
            store: BlobStore,
            expected: String,
            hasher: Sha256,
            held: Option<Bytes>,
            done: bool,
        }
        let state = State {
            inner: got.into_stream(),
            store: self.clone(),
            expected: digest.to_string(),
            hasher: Sha256::new(),
            held: None,
            done: false,
        };
        let body = futures_util::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            loop {
                match st.inner.next().await {
                    Some(Ok(chunk)) => {
                        st.hasher.update(&chunk);
                        if let Some(previous) = st.held.replace(chunk) {
                            return Some((Ok(previous), st));
                        }
                    }
                    Some(Err(e)) => {
                        st.done = true;
                        let e = st.store.failed(e);
                        return Some((Err(e), st));
                    }
                    None => {
                        st.done = true;
                        let actual = finish(std::mem::take(&mut st.hasher));
                        if actual != st.expected {
                            tracing::error!(
                                store = %st.store.location, digest = %st.expected, %actual,
                                "a stored object does not match its digest"
                            );
                            let expected = st.expected.clone();
                            return Some((Err(BlobError::DigestMismatch { expected, actual }), st));
                        }
                        return st.held.take().map(|last| (Ok(last), st));
                    }
                }
            }
        })
        .boxed();
        Ok(Some(VerifiedStream { size, body }))
    }

    /// The whole object under `digest`, verified; refused past `limit` bytes.
    pub async fn get(&self, digest: &str, limit: u64) -> Result<Option<Bytes>, BlobError> {
        match self.open_read(digest).await? {
            Some(read) => read.collect(limit).await.map(Some),
            None => Ok(None),
        }
    }

    /// Reads the object under `digest` through and says whether it is there
    /// and whole (for `verify --content`); never holds it in memory.
    pub async fn check(&self, digest: &str) -> Result<Presence, BlobError> {
        let Some(mut read) = self.open_read(digest).await? else {
            return Ok(Presence::Absent);
        };
        let mut size = 0u64;
        while let Some(chunk) = read.body.next().await {
            match chunk {
                Ok(c) => size += c.len() as u64,
                Err(BlobError::DigestMismatch { actual, .. }) => {
                    return Ok(Presence::Altered { actual })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Presence::Present { size })
    }

    /// Every digest the store holds, sorted (objects under other keys are
    /// not Clew's and are left out).
    pub async fn digests(&self) -> Result<Vec<String>, BlobError> {
        let prefix = Key::from(format!("{}sha256", self.prefix));
        let mut listing = self.inner.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.failed(e))?;
            if let Some(name) = meta.location.filename() {
                let digest = format!("sha256:{name}");
                if hex_of(&digest).is_ok() {
                    out.push(digest);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Copies the object under `digest` into `target` (verified on the way,
    /// spooled through `spool_dir`); a no-op when `target` has it.
    pub async fn copy_to(
        &self,
        digest: &str,
        target: &BlobStore,
        spool_dir: &Path,
    ) -> Result<Stored, BlobError> {
        if let Some(size) = target.size_of(digest).await? {
            return Ok(Stored {
                digest: digest.to_string(),
                size,
                created: false,
            });
        }
        let Some(read) = self.open_read(digest).await? else {
            return Err(self.failed(format!("{digest} is not in the store")));
        };
        let spooled = spool(read.body, u64::MAX, spool_dir).await?;
        target.put_spooled(&spooled).await
    }
}
