//! Blobs: immutable byte sequences of any size, written once as a stream
//! and read back by range, never held whole in memory.
//!
//! A blob is the data of an object bucket's object (or of one part of
//! it). What makes an object visible is its metadata, written through
//! [`super::KeyValue`] in the same write as its change; a blob is only
//! bytes under an id the provider chose. A blob is readable once
//! [`BlobWriter::finish`] has returned, and then it is durable. A writer
//! dropped before that (a body cut short, a wrong digest, a crash) leaves
//! nothing readable; what a crash leaves on disk is swept.
//!
//! Both ends are channels to a task of the provider, bounded to a few
//! chunks, so a slow disk slows the sender instead of filling memory.
//!
//! [`Files`] keeps blobs as files, for the embedded provider: each is
//! written to a temporary file, fsynced, renamed into place, and its
//! directory fsynced. Ids are made here, from the time and random bits,
//! and an id that is not of that form is refused before it reaches a
//! path, so no name from outside ever becomes part of one.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{Result, StorageError};

/// Chunks a writer or reader holds in its channel at most.
const CHANNEL: usize = 4;
/// The size of the chunks a reader sends.
pub const READ_CHUNK: usize = 256 << 10;
/// Temporary files older than this, left by a crash, are removed when
/// the blobs are opened.
const STALE_TEMPORARY: Duration = Duration::from_secs(24 * 3600);

/// A finished blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub id: String,
    pub size: u64,
}

/// What a writer's task is sent.
pub enum BlobWrite {
    Data(Bytes),
    /// Make the blob durable and answer with it.
    Finish(oneshot::Sender<Result<Blob>>),
}

/// The writing end of a new blob. Dropping it before [`finish`] keeps
/// nothing.
///
/// [`finish`]: BlobWriter::finish
pub struct BlobWriter {
    tx: mpsc::Sender<BlobWrite>,
}

impl BlobWriter {
    /// A writer and the receiving end its provider's task drains.
    pub fn channel() -> (BlobWriter, mpsc::Receiver<BlobWrite>) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        (BlobWriter { tx }, rx)
    }

    /// Appends `chunk`, waiting while the provider is behind.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.tx.send(BlobWrite::Data(chunk)).await.map_err(|_| stopped())
    }

    /// Makes the blob durable and readable, and returns it.
    pub async fn finish(self) -> Result<Blob> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(BlobWrite::Finish(reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StorageError {
    StorageError::Unavailable("the blob writer stopped; see the server's log".into())
}

/// The reading end of a blob's range, chunk by chunk.
pub struct BlobReader {
    rx: mpsc::Receiver<Result<Bytes>>,
}

impl BlobReader {
    /// A reader and the sending end its provider's task fills.
    pub fn channel() -> (mpsc::Sender<Result<Bytes>>, BlobReader) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        (tx, BlobReader { rx })
    }

    /// The next chunk; `None` at the end of the range.
    pub async fn next(&mut self) -> Option<Result<Bytes>> {
        self.rx.recv().await
    }

    /// The next chunk, for pollers (HTTP bodies).
    pub fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Result<Bytes>>> {
        self.rx.poll_recv(cx)
    }
}

/// Blobs, in buckets: every provider's.
#[async_trait::async_trait]
pub trait Blobs: Send + Sync {
    /// Starts a new blob in `bucket`.
    async fn create_blob(&self, bucket: &str) -> Result<BlobWriter>;

    /// Reads `len` bytes from `offset` of the blob `id`, or `None` if
    /// there is no such blob. A range past the blob's end is cut short.
    async fn read_blob(&self, bucket: &str, id: &str, offset: u64, len: u64) -> Result<Option<BlobReader>>;

    /// Removes a blob; whether there was one.
    async fn remove_blob(&self, bucket: &str, id: &str) -> Result<bool>;

    /// The blobs of `bucket` finished before `before`, for sweeping the
    /// ones nothing refers to.
    async fn list_blobs(&self, bucket: &str, before: SystemTime) -> Result<Vec<String>>;

    /// Removes what writers that never finished left of their blobs in
    /// `bucket` (their last write before `before`); how many.
    async fn sweep_unfinished(&self, bucket: &str, before: SystemTime) -> Result<usize>;
}

/// A new blob id: the time in microseconds, then 64 random bits, in hex.
/// Ids sort by the time they were made.
pub fn new_blob_id() -> String {
    let us = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64;
    format!("{us:014x}{:016x}", rand::random::<u64>())
}

/// Whether `id` is of the form [`new_blob_id`] makes.
pub fn is_blob_id(id: &str) -> bool {
    id.len() == 30 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Blobs as files under one directory: `DIR/BUCKET/ID`, with temporary
/// files in `DIR/.partial`.
pub struct Files {
    root: PathBuf,
}

impl Files {
    /// Opens (or creates) the directory, removing what a crash left
    /// half-written long ago.
    pub fn open(root: &Path) -> Result<Files> {
        let partial = root.join(".partial");
        fs::create_dir_all(&partial).map_err(|e| io_error(&partial, e))?;
        let files = Files {
            root: root.to_path_buf(),
        };
        files.remove_partial(SystemTime::now() - STALE_TEMPORARY);
        Ok(files)
    }

    /// Removes the temporary files last written before `before`.
    fn remove_partial(&self, before: SystemTime) -> usize {
        let Ok(entries) = fs::read_dir(self.root.join(".partial")) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < before);
            if old && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    fn directory(&self, bucket: &str) -> PathBuf {
        self.root.join(directory_name(bucket))
    }

    fn path(&self, bucket: &str, id: &str) -> Option<PathBuf> {
        is_blob_id(id).then(|| self.directory(bucket).join(id))
    }
}

/// A bucket's directory name: its letters, digits, `.` and `-` as they
/// are, every other byte (and a leading `.`) as `_XX`, so that any bucket
/// name is one path segment of its own.
fn directory_name(bucket: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + 1);
    out.push('b');
    for (i, b) in bucket.bytes().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' => out.push(b as char),
            b'.' if i > 0 => out.push('.'),
            _ => out.push_str(&format!("_{b:02x}")),
        }
    }
    out
}

fn io_error(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Unavailable(format!("{}: {e}", path.display()))
}

#[async_trait::async_trait]
impl Blobs for Files {
    async fn create_blob(&self, bucket: &str) -> Result<BlobWriter> {
        let id = new_blob_id();
        let partial = self.root.join(".partial").join(&id);
        let directory = self.directory(bucket);
        let file = File::create_new(&partial).map_err(|e| io_error(&partial, e))?;
        let (writer, rx) = BlobWriter::channel();
        tokio::task::spawn_blocking(move || write_file(file, rx, &partial, &directory, id));
        Ok(writer)
    }

    async fn read_blob(&self, bucket: &str, id: &str, offset: u64, len: u64) -> Result<Option<BlobReader>> {
        let Some(path) = self.path(bucket, id) else {
            return Ok(None);
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, e)),
        };
        let (tx, reader) = BlobReader::channel();
        tokio::task::spawn_blocking(move || read_file(file, &path, offset, len, tx));
        Ok(Some(reader))
    }

    async fn remove_blob(&self, bucket: &str, id: &str) -> Result<bool> {
        let Some(path) = self.path(bucket, id) else {
            return Ok(false);
        };
        tokio::task::spawn_blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(&path, e)),
        })
        .await
        .map_err(|e| StorageError::Other(e.to_string()))?
    }

    async fn list_blobs(&self, bucket: &str, before: SystemTime) -> Result<Vec<String>> {
        let directory = self.directory(bucket);
        tokio::task::spawn_blocking(move || {
            let entries = match fs::read_dir(&directory) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io_error(&directory, e)),
            };
            let mut ids = Vec::new();
            for entry in entries.flatten() {
                let Ok(id) = entry.file_name().into_string() else {
                    continue;
                };
                let finished = entry.metadata().and_then(|m| m.modified()).ok();
                if is_blob_id(&id) && finished.is_some_and(|t| t < before) {
                    ids.push(id);
                }
            }
            ids.sort();
            Ok(ids)
        })
        .await
        .map_err(|e| StorageError::Other(e.to_string()))?
    }

    /// Temporary files are shared by all buckets; any bucket's sweep
    /// removes the old ones.
    async fn sweep_unfinished(&self, _bucket: &str, before: SystemTime) -> Result<usize> {
        let files = Files {
            root: self.root.clone(),
        };
        tokio::task::spawn_blocking(move || files.remove_partial(before))
            .await
            .map_err(|e| StorageError::Other(e.to_string()))
    }
}

/// The writer's task: appends what arrives; on `Finish`, fsyncs, renames
/// into place and fsyncs the directory; if the writer goes away first,
/// removes the temporary file.
fn write_file(mut file: File, mut rx: mpsc::Receiver<BlobWrite>, partial: &Path, directory: &Path, id: String) {
    let mut size = 0u64;
    // Bytes up to here were handed to the disk already.
    let mut flushed = 0u64;
    let mut failed: Option<StorageError> = None;
    while let Some(message) = rx.blocking_recv() {
        match message {
            BlobWrite::Data(chunk) => {
                if failed.is_none() {
                    match file.write_all(&chunk) {
                        Ok(()) => {
                            size += chunk.len() as u64;
                            if size - flushed >= WRITEBACK {
                                start_writeback(&file, flushed, size - flushed);
                                flushed = size;
                            }
                        }
                        Err(e) => failed = Some(io_error(partial, e)),
                    }
                }
            }
            BlobWrite::Finish(reply) => {
                let result = match failed.take() {
                    Some(e) => Err(e),
                    None => place(&file, partial, directory, &id).map(|()| Blob { id: id.clone(), size }),
                };
                if result.is_err() {
                    let _ = fs::remove_file(partial);
                }
                let _ = reply.send(result);
                return;
            }
        }
    }
    let _ = fs::remove_file(partial);
}

/// Bytes written between two starts of writeback.
const WRITEBACK: u64 = 8 << 20;

/// Asks the kernel to start writing `len` bytes from `offset` of `file` to
/// the disk now, without waiting, so the fsync that finishes the blob has
/// little left to do. Only a hint: the fsync is what makes it durable.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: the descriptor belongs to `file`, which outlives the call;
        // sync_file_range reads no memory of ours, and its failure (ignored:
        // it is a hint) leaves the file as it was.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

fn place(file: &File, partial: &Path, directory: &Path, id: &str) -> Result<()> {
    file.sync_all().map_err(|e| io_error(partial, e))?;
    if !directory.is_dir() {
        // A bucket's first blob: its directory's entry must be durable too.
        fs::create_dir_all(directory).map_err(|e| io_error(directory, e))?;
        if let Some(root) = directory.parent() {
            File::open(root)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(root, e))?;
        }
    }
    let path = directory.join(id);
    fs::rename(partial, &path).map_err(|e| io_error(&path, e))?;
    File::open(directory)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(directory, e))
}

fn read_file(mut file: File, path: &Path, offset: u64, len: u64, tx: mpsc::Sender<Result<Bytes>>) {
    if let Err(e) = file.seek(SeekFrom::Start(offset)) {
        let _ = tx.blocking_send(Err(io_error(path, e)));
        return;
    }
    let mut left = len;
    while left > 0 {
        let want = left.min(READ_CHUNK as u64) as usize;
        // `take` + `read_to_end` reads into the vector's spare capacity
        // without zeroing it first.
        let mut buffer = Vec::with_capacity(want);
        if let Err(e) = (&mut file).take(want as u64).read_to_end(&mut buffer) {
            let _ = tx.blocking_send(Err(io_error(path, e)));
            return;
        }
        let filled = buffer.len();
        if filled == 0 {
            return;
        }
        left -= filled as u64;
        if tx.blocking_send(Ok(Bytes::from(buffer))).is_err() || filled < want {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_become_one_path_segment_each() {
        assert_eq!(directory_name("uploads"), "buploads");
        assert_eq!(directory_name("my.photos-2"), "bmy.photos-2");
        assert_eq!(directory_name(".."), "b_2e.");
        assert_eq!(directory_name("a/../b"), "ba_2f.._2fb");
        assert_eq!(directory_name("weft:parts"), "bweft_3aparts");
        assert!(!directory_name("../x").contains('/'));
    }

    #[test]
    fn only_ids_made_here_reach_a_path() {
        let id = new_blob_id();
        assert!(is_blob_id(&id), "{id}");
        for bad in [
            "",
            "..",
            "../../etc/passwd",
            &id[..29],
            &format!("{}/", &id[..29]),
            &format!("{}g", &id[..29]),
        ] {
            assert!(!is_blob_id(bad), "{bad}");
        }
    }
}
