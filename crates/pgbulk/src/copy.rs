//! Streaming binary COPY data into the server.

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

use crate::error::{Error, Result};

/// Runs `statement` (a `COPY ... FROM STDIN (FORMAT binary)`) and sends
/// `chunks`, complete binary COPY data from header to trailer. Returns the
/// number of rows the server copied. On error the COPY is aborted; the
/// server's message (with its `COPY ..., line N` context) is kept.
pub async fn copy_in(
    client: &Client,
    statement: &str,
    chunks: impl IntoIterator<Item = Vec<u8>>,
) -> Result<u64> {
    let sink = client
        .copy_in::<_, Bytes>(statement)
        .await
        .map_err(|e| Error::server("starting COPY", e))?;
    futures_util::pin_mut!(sink);
    for chunk in chunks {
        if chunk.is_empty() {
            continue;
        }
        sink.send(Bytes::from(chunk))
            .await
            .map_err(|e| Error::server("COPY", e))?;
    }
    sink.as_mut()
        .finish()
        .await
        .map_err(|e| Error::server("COPY", e))
}
