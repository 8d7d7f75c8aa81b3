//! What flows in and out of an object operation: request bodies read
//! chunk by chunk (decoding `aws-chunked` when the client sent it), into
//! blobs with their digests checked; object data streamed out of blobs.

use std::collections::VecDeque;

use bytes::Bytes;
use http_body_util::BodyExt;
use md5::{Digest as _, Md5};
use sha2::Sha256;
use weft_runtime::{HttpError, WasiBody};
use weft_s3::S3Error;
use weft_s3::chunked::Decoder;
use weft_store::durable::{Blob, BlobReader, Storage};

use crate::body::Body;

/// How much of a body is gathered before it goes to the blob's writer.
const GATHER: usize = 1 << 20;
/// Gathered chunks the digests may fall behind the socket by.
const HASH_AHEAD: usize = 4;
/// The largest aws-chunked chunk accepted.
const MAX_CHUNK: usize = 16 << 20;

/// A request body, chunk by chunk.
pub struct Incoming {
    body: WasiBody,
    decoder: Option<Decoder>,
    ready: VecDeque<Bytes>,
    done: bool,
    /// The trailers of an aws-chunked body, once it ended.
    pub trailers: Vec<(String, String)>,
}

impl Incoming {
    pub fn new(body: WasiBody, signer: Option<weft_s3::sigv4::ChunkSigner>, chunked: bool) -> Incoming {
        Incoming {
            body,
            decoder: chunked.then(|| Decoder::new(signer, MAX_CHUNK)),
            ready: VecDeque::new(),
            done: false,
            trailers: Vec::new(),
        }
    }

    /// The next chunk of data; `None` once the body ended whole.
    pub async fn next(&mut self) -> Result<Option<Bytes>, S3Error> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Ok(Some(b));
            }
            if self.done {
                return Ok(None);
            }
            match self.body.frame().await {
                None => {
                    self.done = true;
                    if let Some(d) = self.decoder.take() {
                        self.trailers = d.finish()?;
                    }
                }
                Some(Err(e)) => return Err(incomplete(&e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        match &mut self.decoder {
                            Some(d) => self.ready.extend(d.feed(data)?),
                            None => self.ready.push_back(data),
                        }
                    }
                }
            }
        }
    }

    /// The whole body, refused past `max` bytes (XML documents).
    pub async fn collect(&mut self, max: usize) -> Result<Vec<u8>, S3Error> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next().await? {
            if out.len() + chunk.len() > max {
                return Err(S3Error::new(
                    http::StatusCode::BAD_REQUEST,
                    "MaxMessageLengthExceeded",
                    format!("the request body is over {max} bytes"),
                ));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

fn incomplete(why: &str) -> S3Error {
    S3Error::new(
        http::StatusCode::BAD_REQUEST,
        "IncompleteBody",
        format!("the body ended before its declared length; nothing was kept ({why})"),
    )
}

/// What a body written to a blob must match.
#[derive(Default)]
pub struct Expected {
    /// `Content-Length` (or `x-amz-decoded-content-length`).
    pub length: Option<u64>,
    /// The most it may hold.
    pub max: u64,
    pub md5: Option<[u8; 16]>,
    pub sha256: Option<[u8; 32]>,
    /// `x-amz-checksum-crc32`, from the headers or the trailers.
    pub crc32: Option<String>,
    /// `x-amz-checksum-sha256`, base64.
    pub checksum_sha256: Option<String>,
    /// The trailer `x-amz-trailer` announces, lowercased: a checksum that
    /// arrives after the data.
    pub trailer: Option<String>,
}

/// A body kept as a blob, with its MD5.
pub struct Received {
    pub blob: Blob,
    pub md5: [u8; 16],
}

/// The digests of a body, as far as they are wanted.
struct Digests {
    md5: Md5,
    sha256: Option<Sha256>,
    crc32: Option<crc32fast::Hasher>,
}

impl Digests {
    fn update(&mut self, chunk: &[u8]) {
        self.md5.update(chunk);
        if let Some(h) = &mut self.sha256 {
            h.update(chunk);
        }
        if let Some(h) = &mut self.crc32 {
            h.update(chunk);
        }
    }
}

fn hashing_stopped() -> S3Error {
    S3Error::internal("the digest of the body stopped before its end")
}

/// Writes the body to a new blob of `bucket` and checks it against
/// `expected`; on any mismatch the blob is dropped unfinished, so nothing
/// is kept.
pub async fn receive(
    storage: &dyn Storage,
    bucket: &str,
    body: &mut Incoming,
    mut expected: Expected,
) -> Result<Received, S3Error> {
    let mut writer = storage.create_blob(bucket).await.map_err(unavailable)?;
    // Each digest is computed only when something will be checked against it.
    let announced = |name: &str| expected.trailer.as_deref() == Some(name);
    let digests = Digests {
        md5: Md5::new(),
        sha256: (expected.sha256.is_some() || expected.checksum_sha256.is_some() || announced("x-amz-checksum-sha256"))
            .then(Sha256::new),
        crc32: (expected.crc32.is_some() || announced("x-amz-checksum-crc32")).then(crc32fast::Hasher::new),
    };
    // The digests run on a thread of their own, beside the writer's, so
    // reading the socket never waits for hashing.
    let (hash, mut chunks) = tokio::sync::mpsc::channel::<Bytes>(HASH_AHEAD);
    let hashing = tokio::task::spawn_blocking(move || {
        let mut digests = digests;
        while let Some(chunk) = chunks.blocking_recv() {
            digests.update(&chunk);
        }
        digests
    });
    let forward = async |chunk: Bytes, writer: &mut weft_store::durable::BlobWriter| -> Result<(), S3Error> {
        hash.send(chunk.clone()).await.map_err(|_| hashing_stopped())?;
        writer.write(chunk).await.map_err(unavailable)
    };
    let mut size = 0u64;
    // Small frames off the socket are gathered before they go on: one
    // hand-off and one write per megabyte, not per frame.
    let mut pending = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await? {
        size += chunk.len() as u64;
        if size > expected.max {
            return Err(too_large(expected.max));
        }
        if expected.length.is_some_and(|l| size > l) {
            return Err(S3Error::invalid_request(
                "the body is longer than its declared length; nothing was kept",
            ));
        }
        if pending.is_empty() && chunk.len() >= GATHER {
            forward(chunk, &mut writer).await?;
            continue;
        }
        if pending.capacity() - pending.len() < chunk.len() && !pending.is_empty() {
            forward(pending.split().freeze(), &mut writer).await?;
        }
        if pending.capacity() == 0 {
            pending.reserve(GATHER);
        }
        pending.extend_from_slice(&chunk);
        if pending.len() >= GATHER {
            forward(pending.split().freeze(), &mut writer).await?;
        }
    }
    if !pending.is_empty() {
        forward(pending.freeze(), &mut writer).await?;
    }
    if expected.length.is_some_and(|l| size != l) {
        return Err(incomplete(&format!("got {size} bytes")));
    }
    drop(hash);
    let Digests { md5, sha256, crc32 } = hashing.await.map_err(|_| hashing_stopped())?;
    let md5: [u8; 16] = md5.finalize().into();
    if expected.md5.is_some_and(|m| m != md5) {
        return Err(S3Error::new(
            http::StatusCode::BAD_REQUEST,
            "BadDigest",
            "the Content-MD5 you specified did not match what was received; nothing was kept",
        ));
    }
    let sha256: Option<[u8; 32]> = sha256.map(|h| h.finalize().into());
    if let (Some(want), Some(got)) = (expected.sha256, sha256)
        && want != got
    {
        return Err(S3Error::new(
            http::StatusCode::BAD_REQUEST,
            "XAmzContentSHA256Mismatch",
            "the x-amz-content-sha256 you signed did not match what was received; nothing was kept",
        ));
    }
    for (name, value) in &body.trailers {
        match name.to_ascii_lowercase().as_str() {
            "x-amz-checksum-crc32" => expected.crc32 = Some(value.clone()),
            "x-amz-checksum-sha256" => expected.checksum_sha256 = Some(value.clone()),
            _ => {}
        }
    }
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(name) = &expected.trailer
        && !body.trailers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        return Err(incomplete(&format!(
            "x-amz-trailer announced {name}, and the body did not end with it"
        )));
    }
    // A checksum in a trailer that x-amz-trailer did not announce has no
    // digest to be checked against.
    if let Some(want) = &expected.crc32 {
        let got = crc32.map(|h| b64.encode(h.finalize().to_be_bytes()));
        if got.as_ref() != Some(want) {
            return Err(bad_checksum("crc32"));
        }
    }
    if let Some(want) = &expected.checksum_sha256
        && sha256.map(|got| b64.encode(got)).as_ref() != Some(want)
    {
        return Err(bad_checksum("sha256"));
    }
    let blob = writer.finish().await.map_err(unavailable)?;
    Ok(Received { blob, md5 })
}

fn bad_checksum(algorithm: &str) -> S3Error {
    S3Error::new(
        http::StatusCode::BAD_REQUEST,
        "BadDigest",
        format!("the x-amz-checksum-{algorithm} you specified did not match what was received; nothing was kept"),
    )
}

pub fn too_large(max: u64) -> S3Error {
    S3Error::new(
        http::StatusCode::BAD_REQUEST,
        "EntityTooLarge",
        format!("the object is over this bucket's max_object of {max} bytes; raise max_object in [bucket.NAME]"),
    )
    .with("MaxSizeAllowed", max.to_string())
}

pub fn unavailable(e: weft_store::durable::StorageError) -> S3Error {
    S3Error::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        format!("the storage could not take the request: {e}"),
    )
}

/// Where an object's response is in its blobs.
struct Reading {
    storage: std::sync::Arc<dyn Storage>,
    bucket: String,
    /// The blobs still to read: id, offset and length.
    pieces: std::vec::IntoIter<(String, u64, u64)>,
    current: Option<BlobReader>,
    failed: bool,
}

impl Reading {
    /// The next chunk of the object, opening its blobs in turn.
    async fn next(&mut self) -> Option<Result<Bytes, HttpError>> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(reader) = &mut self.current {
                match reader.next().await {
                    Some(Ok(chunk)) => return Some(Ok(chunk)),
                    Some(Err(e)) => return self.fail(e.to_string()),
                    None => self.current = None,
                }
            }
            let (id, offset, len) = self.pieces.next()?;
            match self.storage.read_blob(&self.bucket, &id, offset, len).await {
                Ok(Some(reader)) => self.current = Some(reader),
                Ok(None) => return self.fail(format!("blob {id} of the object is gone (was it overwritten?)")),
                Err(e) => return self.fail(e.to_string()),
            }
        }
    }

    fn fail(&mut self, why: String) -> Option<Result<Bytes, HttpError>> {
        self.failed = true;
        Some(Err(HttpError::InternalError(Some(why))))
    }
}

/// The bytes `start..=end` of an object made of `blobs`, streamed straight
/// from each blob's reader to the connection.
pub fn object_body(
    storage: std::sync::Arc<dyn Storage>,
    bucket: String,
    blobs: Vec<(String, u64)>,
    start: u64,
    end: u64,
) -> Body {
    let mut pieces = Vec::new();
    let mut at = 0u64;
    for (id, size) in blobs {
        let (first, last) = (at, at + size);
        at = last;
        if size == 0 || last <= start || first > end {
            continue;
        }
        let offset = start.saturating_sub(first);
        let len = (end + 1).min(last) - first - offset;
        pieces.push((id, offset, len));
    }
    let reading = Reading {
        storage,
        bucket,
        pieces: pieces.into_iter(),
        current: None,
        failed: false,
    };
    let chunks = futures_util::stream::unfold(reading, |mut reading| async move {
        let item = reading.next().await?;
        Some((item.map(hyper::body::Frame::data), reading))
    });
    http_body_util::StreamBody::new(chunks).boxed_unsync()
}
