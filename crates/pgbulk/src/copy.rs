//! Streaming binary COPY data into the server: the one place pgbulk runs
//! `COPY ... FROM STDIN (FORMAT binary)`.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::{Client, CopyInSink};

use crate::codec::{COPY_HEADER, COPY_TRAILER};
use crate::error::{Error, Result};

/// The largest message sent at once. The connection copies each message
/// into its write buffer, so a larger chunk (a huge field) goes in slices
/// and that buffer stays small.
const MESSAGE: usize = 1 << 20;

/// An open binary COPY: the header is sent when it opens, tuples as they
/// come, the trailer when it finishes. Dropped unfinished, the COPY is
/// aborted (and so is the transaction it ran in).
pub struct CopyIn {
    sink: Pin<Box<CopyInSink<Bytes>>>,
}

impl std::fmt::Debug for CopyIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CopyIn")
    }
}

impl CopyIn {
    /// Runs `statement` (a `COPY ... FROM STDIN (FORMAT binary)`) on
    /// `client` (inside a transaction: `tx.client()`) and sends the header.
    pub async fn start(client: &Client, statement: &str) -> Result<Self> {
        let mut copy = Self::open(client, statement).await?;
        copy.send(Bytes::from_static(COPY_HEADER)).await?;
        Ok(copy)
    }

    async fn open(client: &Client, statement: &str) -> Result<Self> {
        let sink = client
            .copy_in::<_, Bytes>(statement)
            .await
            .map_err(|e| Error::server("starting COPY", e))?;
        Ok(Self {
            sink: Box::pin(sink),
        })
    }

    /// Sends encoded tuples (whole ones or not: the server reassembles).
    pub async fn send(&mut self, data: Bytes) -> Result<()> {
        let mut start = 0;
        while start < data.len() {
            let end = data.len().min(start + MESSAGE);
            self.sink
                .send(data.slice(start..end))
                .await
                .map_err(|e| Error::server("COPY", e))?;
            start = end;
        }
        Ok(())
    }

    /// Sends the trailer and ends the COPY; returns the rows the server
    /// copied. An error keeps the server's message (with its `COPY ...,
    /// line N` context).
    pub async fn finish(mut self) -> Result<u64> {
        self.send(Bytes::from_static(COPY_TRAILER)).await?;
        self.end().await
    }

    /// Ends the COPY (`CopyDone`) as it stands.
    async fn end(mut self) -> Result<u64> {
        self.sink
            .as_mut()
            .finish()
            .await
            .map_err(|e| Error::server("COPY", e))
    }
}

/// Runs `read` (a `COPY (...) TO STDOUT (FORMAT binary)`) on `from` and
/// `write` (a `COPY ... FROM STDIN (FORMAT binary)` whose columns take the
/// read's, type for type) on `to` at once, passing the bytes on as they
/// come, header to trailer, none decoded: one server reads while the other
/// writes. Returns the number of rows the writing server copied. A failure
/// on either side aborts the write's COPY (and so its transaction).
pub async fn relay(from: &Client, read: &str, to: &Client, write: &str) -> Result<u64> {
    use futures_util::StreamExt;
    let mut copy = CopyIn::open(to, write).await?;
    let stream = from
        .copy_out(read)
        .await
        .map_err(|e| Error::server("starting COPY TO", e))?;
    // The server sends a message per row: they are gathered into messages
    // of about `MESSAGE` bytes.
    let mut messages = Box::pin(stream.ready_chunks(1024));
    let mut buffer = Vec::with_capacity(MESSAGE + MESSAGE / 8);
    while let Some(arrived) = messages.next().await {
        for message in arrived {
            let message = message.map_err(|e| Error::server("COPY TO", e))?;
            buffer.extend_from_slice(&message);
        }
        if buffer.len() >= MESSAGE {
            let full = std::mem::replace(&mut buffer, Vec::with_capacity(MESSAGE + MESSAGE / 8));
            copy.send(Bytes::from(full)).await?;
        }
    }
    if !buffer.is_empty() {
        copy.send(Bytes::from(buffer)).await?;
    }
    copy.end().await
}

/// Runs `statement` and sends `chunks`: complete binary COPY data from
/// header to trailer (as [`crate::codec::CopyWriter::finish`] makes it).
/// Returns the number of rows the server copied.
pub async fn copy_in(
    client: &Client,
    statement: &str,
    chunks: impl IntoIterator<Item = Vec<u8>>,
) -> Result<u64> {
    let mut copy = CopyIn::open(client, statement).await?;
    for chunk in chunks {
        copy.send(Bytes::from(chunk)).await?;
    }
    copy.end().await
}
