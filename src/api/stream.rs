//! A stored blob as an HTTP body: read and verified one chunk group at a time on the blocking
//! pool and handed to the connection through a small channel, so a download holds about
//! [`GROUPS_IN_FLIGHT`] groups of memory whatever the blob's size (up to the store's 16 GiB),
//! where reading it whole held all of it and refused blobs above 256 MiB.
//!
//! A group that fails verification ends the body there: the client receives fewer bytes than
//! `Content-Length` promised, an error for any HTTP client, and never a byte that was not
//! verified. A client that goes away stops the reading at the next group.

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use crate::store::{Store, StoreError};

/// Verified groups (256 KiB each) read ahead of the client.
pub const GROUPS_IN_FLIGHT: usize = 4;

/// The blob `hash` as a response body with its length; `Err(NotFound)` if it is not stored.
pub async fn blob(store: &Store, hash: blake3::Hash) -> Result<Response, StoreError> {
    let len = store
        .blocking(move |s| s.len(&hash))
        .await?
        .ok_or_else(|| StoreError::NotFound(hash.to_hex().to_string()))?;
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(GROUPS_IN_FLIGHT);
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut to_client = ToClient(tx.clone());
        match store.write_to(&hash, &mut to_client) {
            Ok(_) => {}
            // The client went away: nothing to tell anyone.
            Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => {
                tracing::warn!(blob = %hash, "the local API's download of a blob ended early: {e}");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response())
}

/// Hands what the store writes to the connection; fails once the client has gone.
struct ToClient(mpsc::Sender<std::io::Result<Bytes>>);

impl Write for ToClient {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
