//! Blobs in JetStream object stores: one object store per weft bucket
//! (`weft:blobs:BUCKET`, named by [`crate::names`]), one object per blob,
//! named by its id.
//!
//! The object store writes a blob's chunks, then its metadata; a blob is
//! readable only once its metadata is, which is when
//! [`BlobWriter::finish`] returns. A range is read from the blob's start,
//! skipping to its offset, since the object store reads only whole
//! objects.
//!
//! A writer dropped before it finishes ends its object store put with an
//! error, and the chunks it had published stay in the stream unseen
//! (async-nats names them by an id it does not return).
//! [`Blobs::sweep_unfinished`] purges the chunk subjects no object's
//! metadata names once their last chunk is old.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_nats::jetstream::{object_store, stream};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use weft_store::durable::{
    Blob, BlobReader, BlobWrite, BlobWriter, Blobs, READ_CHUNK, Result, StorageError, is_blob_id, new_blob_id,
};

use crate::JetStream;

/// The object store's chunk size for blobs.
const CHUNK: usize = 256 << 10;

fn store_name(bucket: &str) -> String {
    format!("weft:blobs:{bucket}")
}

/// A blob writer's channel, read as the body of an object store put. It
/// ends at `Finish` (keeping the reply for after the put) and fails if
/// the writer goes away.
struct Incoming {
    rx: mpsc::Receiver<BlobWrite>,
    chunk: Bytes,
    finish: Option<oneshot::Sender<Result<Blob>>>,
}

impl AsyncRead for Incoming {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if !self.chunk.is_empty() {
                let n = self.chunk.len().min(buf.remaining());
                buf.put_slice(&self.chunk.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if self.finish.is_some() {
                return Poll::Ready(Ok(()));
            }
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(BlobWrite::Data(chunk))) => self.chunk = chunk,
                Poll::Ready(Some(BlobWrite::Finish(reply))) => self.finish = Some(reply),
                Poll::Ready(None) => {
                    return Poll::Ready(Err(std::io::Error::other(
                        "the blob's writer went away before finishing",
                    )));
                }
            }
        }
    }
}

impl JetStream {
    async fn blob_store(&self, bucket: &str) -> Result<object_store::ObjectStore> {
        let name = store_name(bucket);
        if let Some(b) = self.objects.read().unwrap_or_else(|p| p.into_inner()).get(&name) {
            return Ok(b.clone());
        }
        self.check_connected()?;
        let stream_name = self.names.object_bucket(&name);
        let store = match self.js.get_object_store(&stream_name).await {
            Ok(s) => s,
            Err(_) => self
                .js
                .create_object_store(object_store::Config {
                    bucket: stream_name.clone(),
                    description: Some(format!("weft blobs of bucket {bucket}")),
                    storage: stream::StorageType::File,
                    num_replicas: self.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| self.error(&format!("cannot open object store {stream_name}"), e))?,
        };
        self.objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, store.clone());
        Ok(store)
    }
}

#[async_trait::async_trait]
impl Blobs for JetStream {
    async fn create_blob(&self, bucket: &str) -> Result<BlobWriter> {
        let store = self.blob_store(bucket).await?;
        self.check_connected()?;
        let (writer, rx) = BlobWriter::channel();
        let id = new_blob_id();
        tokio::spawn(async move {
            let mut incoming = Incoming {
                rx,
                chunk: Bytes::new(),
                finish: None,
            };
            let meta = object_store::ObjectMetadata {
                name: id.clone(),
                chunk_size: Some(CHUNK),
                ..Default::default()
            };
            let put = store.put(meta, &mut incoming).await;
            if let Some(reply) = incoming.finish.take() {
                let _ = reply.send(
                    put.map(|info| Blob {
                        id,
                        size: info.size as u64,
                    })
                    .map_err(|e| StorageError::Unavailable(format!("cannot store the blob: {e}"))),
                );
            }
        });
        Ok(writer)
    }

    async fn read_blob(&self, bucket: &str, id: &str, offset: u64, len: u64) -> Result<Option<BlobReader>> {
        if !is_blob_id(id) {
            return Ok(None);
        }
        let store = self.blob_store(bucket).await?;
        let mut object = match store.get(id).await {
            Ok(o) => o,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error("cannot read the blob", e)),
        };
        let (tx, reader) = BlobReader::channel();
        tokio::spawn(async move {
            let fail = |e: std::io::Error| Err(StorageError::Unavailable(format!("cannot read the blob: {e}")));
            let mut skip = offset;
            let mut left = len;
            let mut buffer = vec![0u8; READ_CHUNK];
            while skip > 0 || left > 0 {
                let want = if skip > 0 { skip } else { left }.min(READ_CHUNK as u64) as usize;
                let n = match object.read(&mut buffer[..want]).await {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(fail(e)).await;
                        return;
                    }
                };
                if skip > 0 {
                    skip -= n as u64;
                    continue;
                }
                left -= n as u64;
                if tx.send(Ok(Bytes::copy_from_slice(&buffer[..n]))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(reader))
    }

    async fn remove_blob(&self, bucket: &str, id: &str) -> Result<bool> {
        if !is_blob_id(id) {
            return Ok(false);
        }
        let store = self.blob_store(bucket).await?;
        self.check_connected()?;
        // The object store keeps a removed object's metadata, marked deleted.
        match store.info(id).await {
            Ok(info) if !info.deleted => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.error("cannot remove the blob", e)),
        }
        match store.delete(id).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.error("cannot remove the blob", e)),
        }
    }

    async fn sweep_unfinished(&self, bucket: &str, before: SystemTime) -> Result<usize> {
        use futures_util::StreamExt;
        let store = self.blob_store(bucket).await?;
        let name = self.names.object_bucket(&store_name(bucket));
        let stream = self
            .js
            .get_stream(format!("OBJ_{name}"))
            .await
            .map_err(|e| self.error("cannot open the blobs' stream", e))?;
        let mut live = std::collections::HashSet::new();
        let mut list = store.list().await.map_err(|e| self.error("cannot list blobs", e))?;
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| self.error("cannot list blobs", e))?;
            live.insert(format!("$O.{name}.C.{}", info.nuid));
        }
        let mut subjects = stream
            .info_with_subjects(format!("$O.{name}.C.>"))
            .await
            .map_err(|e| self.error("cannot list the blobs' chunks", e))?;
        let mut orphans = Vec::new();
        while let Some(subject) = subjects.next().await {
            let (subject, _) = subject.map_err(|e| self.error("cannot list the blobs' chunks", e))?;
            if !live.contains(&subject) {
                orphans.push(subject);
            }
        }
        let mut purged = 0;
        for subject in orphans {
            // A put still running wrote its last chunk a moment ago.
            let last = stream.get_last_raw_message_by_subject(&subject).await;
            if last.is_ok_and(|m| SystemTime::from(m.time) < before) {
                stream
                    .purge()
                    .filter(&subject)
                    .await
                    .map_err(|e| self.error("cannot purge an unfinished blob", e))?;
                purged += 1;
            }
        }
        Ok(purged)
    }

    async fn list_blobs(&self, bucket: &str, before: SystemTime) -> Result<Vec<String>> {
        use futures_util::StreamExt;
        let store = self.blob_store(bucket).await?;
        let mut list = store.list().await.map_err(|e| self.error("cannot list blobs", e))?;
        let mut out = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| self.error("cannot list blobs", e))?;
            let finished = info.modified.map(SystemTime::from);
            if !info.deleted && is_blob_id(&info.name) && finished.is_some_and(|t| t < before) {
                out.push(info.name);
            }
        }
        out.sort();
        Ok(out)
    }
}
