//! What every resolver shares: the request's node and viewer, error codes,
//! and the bounded pool that runs catalogue reads off the async workers.

use std::sync::Arc;

use async_graphql::Context;

use crate::access::Viewer;
use crate::ApiError;
use clew_node::Node;

pub(crate) type Result<T> = std::result::Result<T, async_graphql::Error>;

/// Converts our errors with their codes (see [`ApiError::into_graphql`]).
pub(crate) trait Coded<T> {
    fn coded(self) -> Result<T>;
}

impl<T, E: Into<ApiError>> Coded<T> for std::result::Result<T, E> {
    fn coded(self) -> Result<T> {
        self.map_err(|e| e.into().into_graphql())
    }
}

pub(crate) fn parts<'a>(ctx: &'a Context<'_>) -> Result<(&'a Arc<Node>, &'a Arc<Viewer>)> {
    let node = ctx.data::<Arc<Node>>()?;
    let viewer = ctx
        .data::<Arc<Viewer>>()
        .map_err(|_| ApiError::Unauthenticated("no bearer token".into()).into_graphql())?;
    Ok((node, viewer))
}

/// Catalogue reads running at once: twice the cores. More only makes every
/// read slower (they are CPU-bound) and starves the HTTP workers, which also
/// carry the mutations; the rest wait their turn here.
pub(crate) fn readers() -> &'static tokio::sync::Semaphore {
    static READERS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    READERS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores * 2)
    })
}

/// Runs a catalogue / ledger read off the async workers.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::result::Result<T, ApiError> + Send + 'static,
{
    let _turn = readers()
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("shutting down".into()).into_graphql())?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("reader task failed: {e}")).into_graphql())?
        .coded()
}
