//! The layout of a Clew data directory.
//!
//! ```text
//! <data-dir>/ledger.db/        the ledger (sled)
//! <data-dir>/catalog/          the catalogue: catalog.db/ (sled) and search/ (tantivy);
//!                              a projection, rebuilt by `clew reindex`
//! <data-dir>/keys/ledger.key   checkpoint signing key (C2SP signer key, 0600)
//! <data-dir>/keys/ledger.vkey  what partners verify checkpoints with
//! <data-dir>/keys/admin.key    genesis administrator's key (move it offline in production)
//! <data-dir>/keys/admin.vkey
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clew_ledger::{Ledger, LedgerOptions};

use crate::keyfiles;

/// Principal id of the genesis administrator.
pub const ADMIN_PRINCIPAL: &str = "admin";

/// Paths inside a data directory, and where its content is kept.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    /// A blob store outside the directory (an S3 bucket shared by replicas
    /// and the sequencer) and the CA file its TLS is checked with; None:
    /// `<data-dir>/manifests`.
    blob_store: Option<(String, Option<PathBuf>)>,
    /// Page cache of the ledger's and the catalogue's stores together.
    page_cache_bytes: u64,
    /// Whether this process opens no catalogue (the Kafka sequencer): the
    /// ledger then has the whole page cache.
    ledger_only: bool,
}

/// The page cache a serving process gives its stores unless told otherwise:
/// what it holds beyond it grows with the data (the resident lineage graph),
/// not with time, so a memory limit is this plus a per-event budget.
pub const DEFAULT_PAGE_CACHE_BYTES: u64 = 128 << 20;

impl DataDir {
    /// Wraps a data directory path (content kept inside it).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            blob_store: None,
            page_cache_bytes: DEFAULT_PAGE_CACHE_BYTES,
            ledger_only: false,
        }
    }

    /// Gives the ledger's and the catalogue's stores `bytes` of page cache
    /// together (a quarter to the ledger, whose serving reads are the
    /// recent leaves and duplicate checks; the rest to the catalogue).
    pub fn with_page_cache(mut self, bytes: u64) -> Self {
        self.page_cache_bytes = bytes.max(16 << 20);
        self
    }

    /// Gives the whole page cache to the ledger (a process that opens no
    /// catalogue).
    pub fn ledger_only(mut self) -> Self {
        self.ledger_only = true;
        self
    }

    /// The ledger's share of the page cache.
    pub fn ledger_cache_bytes(&self) -> u64 {
        if self.ledger_only {
            self.page_cache_bytes
        } else {
            self.page_cache_bytes / 4
        }
    }

    /// The catalogue's share of the page cache.
    pub fn catalog_cache_bytes(&self) -> u64 {
        self.page_cache_bytes - self.ledger_cache_bytes()
    }

    /// Keeps content in the blob store at `url` (`s3://bucket[/prefix]`,
    /// `file:///dir`; see `clew_blobs::BlobStore::open`) instead of inside
    /// the directory.
    pub fn with_blob_store(mut self, url: Option<String>, ca_file: Option<PathBuf>) -> Self {
        self.blob_store = url.map(|u| (u, ca_file));
        self
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Key directory.
    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// Ledger signer key file.
    pub fn ledger_key(&self) -> PathBuf {
        self.keys().join("ledger.key")
    }

    /// Ledger verifier key file.
    pub fn ledger_vkey(&self) -> PathBuf {
        self.keys().join("ledger.vkey")
    }

    /// Genesis admin signer key file.
    pub fn admin_key(&self) -> PathBuf {
        self.keys().join("admin.key")
    }

    /// Where uploaded and ingested dataset-version manifests are kept.
    pub fn manifests(&self) -> PathBuf {
        self.root().join("manifests")
    }

    /// The content store for manifests: the configured blob store, or the
    /// data directory's own (keys `sha256/<hex>` under
    /// [`DataDir::manifests`]). Manifests kept by earlier versions as
    /// `sha256/<hex>.json` are renamed to their keys first (same bytes, same
    /// digest), so they stay readable.
    pub fn manifest_store(&self) -> Result<clew_blobs::BlobStore> {
        if let Some((url, ca)) = &self.blob_store {
            return clew_blobs::BlobStore::open(url, ca.as_deref())
                .with_context(|| format!("opening the blob store {url}"));
        }
        self.local_manifest_store()
    }

    /// The data directory's own content store (what `clew blobs sync`
    /// copies into a bucket when a deployment moves to one).
    pub fn local_manifest_store(&self) -> Result<clew_blobs::BlobStore> {
        let dir = self.manifests().join("sha256");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if let Some(hex) = name.strip_suffix(".json") {
                    if clew_blobs::hex_of(&format!("sha256:{hex}")).is_ok() {
                        std::fs::rename(&path, dir.join(hex))
                            .with_context(|| format!("migrating {}", path.display()))?;
                    }
                }
            }
        }
        Ok(clew_blobs::BlobStore::local(&self.manifests())?)
    }

    /// Where uploads are spooled while they are hashed and checked.
    pub fn spool_dir(&self) -> PathBuf {
        self.root().join("spool")
    }

    /// The catalogue (projection of the ledger: sled state + search index).
    pub fn catalog_dir(&self) -> PathBuf {
        self.root.join("catalog")
    }

    /// Opens the catalogue with its share of the page cache, as it is.
    pub fn open_catalog(&self) -> Result<clew_catalog::Catalog> {
        Ok(clew_catalog::Catalog::open_with_cache(
            &self.catalog_dir(),
            self.catalog_cache_bytes(),
        )?)
    }

    /// Opens the catalogue and brings it up to date with `ledger`.
    pub fn catalog(&self, ledger: &Ledger) -> Result<clew_catalog::Catalog> {
        let catalog = self.open_catalog()?;
        catalog.catch_up(ledger, &|_, _| {})?;
        Ok(catalog)
    }

    /// `options` with the ledger's share of the page cache.
    pub fn ledger_options(&self, options: LedgerOptions) -> LedgerOptions {
        LedgerOptions {
            cache_bytes: self.ledger_cache_bytes(),
            ..options
        }
    }

    /// Whether a ledger exists here.
    pub fn has_ledger(&self) -> bool {
        self.root.join(clew_ledger::LEDGER_DB_DIR).exists()
    }

    /// Makes the directory the operator's alone (0700), creating it if
    /// needed: a data directory made by an older Clew, or by hand, may be
    /// readable by every local user.
    pub fn secure(&self) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", self.root.display()))?;
        Ok(())
    }

    /// Creates keys and the ledger (with its genesis leaf).
    pub fn init(&self, origin: &str, options: LedgerOptions) -> Result<Ledger> {
        if self.has_ledger() {
            bail!("{} already holds a ledger", self.root.display());
        }
        self.secure()?;
        let keys = self.keys();
        // Keys placed here beforehand (e.g. from a Kubernetes Secret, see
        // `clew ledger --keys-from`) are used; missing ones are generated.
        let ledger_key = match keys.join("ledger.key") {
            p if p.exists() => keyfiles::read_producer(&p)?,
            _ => {
                keyfiles::generate(&keys, "ledger", origin)
                    .with_context(|| format!("creating the ledger key for origin {origin:?}"))?
                    .2
            }
        };
        let admin = match keys.join("admin.key") {
            p if p.exists() => keyfiles::read_producer(&p)?,
            _ => keyfiles::generate(&keys, "admin", &format!("{origin}/admin"))?.2,
        };
        Ok(Ledger::create(
            &self.root,
            &ledger_key.to_signer_text(),
            &admin,
            ADMIN_PRINCIPAL,
            options,
        )?)
    }

    /// Opens the ledger with the key stored here (or `key_file`).
    pub fn open(&self, key_file: Option<&Path>, options: LedgerOptions) -> Result<Ledger> {
        if !self.has_ledger() {
            bail!(
                "{} holds no ledger; create one with `clew init --data-dir {}`",
                self.root.display(),
                self.root.display()
            );
        }
        self.secure()?;
        let key_path = key_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.ledger_key());
        let key = keyfiles::read(&key_path)?;
        Ok(Ledger::open(&self.root, &key, options)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_cache_is_shared_a_quarter_to_the_ledger_unless_it_is_alone() {
        let dir = DataDir::new("d").with_page_cache(400 << 20);
        assert_eq!(dir.ledger_cache_bytes(), 100 << 20);
        assert_eq!(dir.catalog_cache_bytes(), 300 << 20);
        assert_eq!(dir.clone().ledger_only().ledger_cache_bytes(), 400 << 20);
        let default = DataDir::new("d");
        assert_eq!(
            default.ledger_cache_bytes() + default.catalog_cache_bytes(),
            DEFAULT_PAGE_CACHE_BYTES
        );
        // A cache too small to hold a page's working set is raised to 16 MiB.
        assert_eq!(
            DataDir::new("d").with_page_cache(1).catalog_cache_bytes(),
            12 << 20
        );
    }

    #[test]
    fn manifests_kept_in_the_earlier_layout_stay_readable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        let body = br#"{"format":"clew.dicom-series-manifest/1","series":[]}"#;
        let digest = clew_blobs::digest_of(body);
        let hex = clew_blobs::hex_of(&digest).unwrap();
        let old = dir.manifests().join("sha256");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join(format!("{hex}.json")), body).unwrap();
        let store = dir.manifest_store().unwrap();
        let got = clew_blobs::block_on({
            let (store, digest) = (store.clone(), digest.clone());
            async move { store.get(&digest, 1 << 20).await }
        });
        assert_eq!(got.unwrap().unwrap().as_ref(), body);
        assert!(!old.join(format!("{hex}.json")).exists());
        // Opening again finds nothing left to migrate.
        assert!(dir.manifest_store().is_ok());
    }
}
