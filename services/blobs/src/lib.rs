//! The content-addressed blob store: where the bulk content the ledger cites
//! by digest (dataset-version manifests) is kept, so that every digest in a
//! signed event names bytes someone can produce.
//!
//! One interface, [`BlobStore`], over Apache Arrow's `object_store`: a local
//! directory (the embedded default, inside the data directory) or an
//! S3-compatible bucket (the distributed deployment, shared by the sequencer
//! and every replica). Data flows:
//!
//! - **in**: an upload is [`spool`]ed to a temporary file while it is hashed
//!   (bounded memory, a size limit), then [`BlobStore::put_spooled`] writes it
//!   under `sha256/<hex>` once — a conditional create (`If-None-Match: *` on
//!   S3) for bodies up to [`SINGLE_PUT_MAX`], a streamed multipart upload
//!   above. A second writer of the same digest is a no-op; an object of
//!   another size under that key is reported as [`BlobError::Conflict`].
//! - **out**: [`BlobStore::open_read`] streams the object and hashes it on
//!   the way, holding the last chunk back until the digest matched, so an
//!   object altered inside the store never reaches a reader whole.
//! - **checks**: [`BlobStore::contains`] (the sequencer's "cited only when
//!   present"), [`BlobStore::check`] (reads through: present, absent or
//!   altered), [`BlobStore::digests`] and [`BlobStore::copy_to`] (migrating a
//!   local store into a bucket).
//!
//! Callers that are not async use [`block_on`], which runs the store's
//! futures on a small runtime of its own.

mod error;
mod store;

pub use error::BlobError;
pub use store::{
    block_on, digest_of, hex_of, spool, BlobStore, Presence, Spooled, Stored, VerifiedStream,
    SINGLE_PUT_MAX,
};
