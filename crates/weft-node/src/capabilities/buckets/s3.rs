//! The S3 operations on a node's buckets: who may ask, then each
//! operation against the storage.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use md5::{Digest as _, Md5};
use sha2::Sha256;
use weft_events::objects::Head;
use weft_runtime::WasiBody;
use weft_s3::request::{self, Conditions, CopySource, ListParams, Operation, Outcome};
use weft_s3::sigv4::{self, Payload};
use weft_s3::{S3Error, xml};
use weft_store::durable::{Expect, StorageError, Write};

use super::body::{self, Expected, Incoming};
use super::{Buckets, Settings};
use crate::body::{Body, full};
use crate::deployment::Deployed;
use crate::node::Node;

/// The region weft's S3 answers as (any region signs, this one is shown).
pub const REGION: &str = "us-east-1";
/// The largest XML document read (DeleteObjects, CompleteMultipartUpload).
const MAX_DOCUMENT: usize = 2 << 20;
/// The smallest part of a multipart upload, but the last.
const MIN_PART: u64 = 5 << 20;
/// Writes of one key that lose a race to others before one gives up.
const MAX_RACES: u32 = 32;
/// The most keys a page of a listing reads.
const PAGE: usize = 1000;

pub use weft_s3::request::Style;

/// One part of a multipart upload, kept at `UPLOAD/NUMBER`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Part {
    pub blob: String,
    pub size: u64,
    pub etag: String,
    pub modified_us: i64,
}

/// A multipart upload, kept under its id.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Upload {
    key: String,
    initiated_us: i64,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    metadata: Vec<(String, String)>,
    /// Set when a CompleteMultipartUpload claimed the upload: from then
    /// on its parts change no more, and nothing else may end it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completing_us: Option<i64>,
}

/// Who sent a request.
enum Who<'a> {
    /// A client outside, whose signature was checked.
    Client,
    /// A function, which may use the buckets its grant names.
    Function(&'a Deployed),
}

struct Context<'a> {
    buckets: &'a Buckets,
    node: &'a Arc<Node>,
    who: Who<'a>,
    request_id: String,
}

/// A request of a client outside: its signature, then the operation.
pub async fn serve_signed(
    buckets: &Buckets,
    node: &Arc<Node>,
    request: http::Request<WasiBody>,
) -> http::Response<Body> {
    let request_id = node.new_request_id();
    let head_only = request.method() == Method::HEAD;
    let keys = match buckets.credentials(node).await {
        Ok(k) => k,
        Err(e) => return error(&body::unavailable(e), &request_id, head_only),
    };
    let verified = match sigv4::verify(
        request.method(),
        request.uri(),
        request.headers(),
        keys.as_ref(),
        jiff::Timestamp::now(),
    ) {
        Ok(v) => v,
        Err(e) => return error(&e, &request_id, head_only),
    };
    let cx = Context {
        buckets,
        node,
        who: Who::Client,
        request_id,
    };
    serve(&cx, request, Style::Path, verified.payload).await
}

/// A request of a function to `bucket` at its internal address.
pub async fn serve_function(
    buckets: &Buckets,
    node: &Arc<Node>,
    caller: &Deployed,
    bucket: &str,
    request: http::Request<WasiBody>,
) -> http::Response<Body> {
    let cx = Context {
        buckets,
        node,
        who: Who::Function(caller),
        request_id: node.new_request_id(),
    };
    // A function's body is whatever it wrote; a chunked upload from an
    // SDK inside a function is decoded as from outside.
    let payload = match request
        .headers()
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        Some(p) if p.starts_with("STREAMING-") => Payload::StreamingUnsignedTrailer,
        _ => Payload::Unsigned,
    };
    serve(&cx, request, Style::Virtual(bucket), payload).await
}

async fn serve(
    cx: &Context<'_>,
    request: http::Request<WasiBody>,
    style: Style<'_>,
    payload: Payload,
) -> http::Response<Body> {
    let head_only = request.method() == Method::HEAD;
    let (parts, body) = request.into_parts();
    let (chunked, signer, sha256) = match payload {
        Payload::Unsigned => (false, None, None),
        Payload::Sha256(hash) => (false, None, Some(hash)),
        Payload::StreamingUnsignedTrailer => (true, None, None),
        Payload::StreamingSigned(signer) => (true, Some(signer), None),
    };
    let mut incoming = Incoming::new(body, signer, chunked);
    let result = match request::parse(&parts.method, &parts.uri, &parts.headers, style) {
        Ok(op) => operate(cx, op, &parts.headers, &mut incoming, sha256).await,
        Err(e) => Err(e),
    };
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!("S3 {} {}: {e}", parts.method, parts.uri.path());
            }
            error(&e, &cx.request_id, head_only)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&cx.request_id) {
        response.headers_mut().insert("x-amz-request-id", v);
    }
    response
}

/// S3's error document (no body for HEAD).
fn error(e: &S3Error, request_id: &str, head_only: bool) -> http::Response<Body> {
    let body = if head_only {
        full(Bytes::new())
    } else {
        full(e.to_xml(request_id))
    };
    let mut response = http::Response::new(body);
    *response.status_mut() = e.status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    response
}

fn xml_response(status: StatusCode, document: String) -> http::Response<Body> {
    let mut response = http::Response::new(full(document));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    response
}

fn empty(status: StatusCode) -> http::Response<Body> {
    let mut response = http::Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

fn timestamp(us: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_microsecond(us).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn http_date(us: i64) -> String {
    request::http_date(timestamp(us))
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

impl Context<'_> {
    /// The deployed bucket `name`, if the sender may use it.
    fn bucket(&self, name: &str) -> Result<Arc<Settings>, S3Error> {
        if let Who::Function(f) = &self.who
            && !f.spec.buckets.iter().any(|b| b == name)
        {
            return Err(S3Error::access_denied(format!(
                "function `{}` may not use bucket `{name}`: add `buckets = [\"{name}\"]` to [function.{}] in weft.toml",
                f.name, f.name
            ))
            .on(format!("/{name}")));
        }
        self.buckets.settings(name).ok_or_else(|| S3Error::no_such_bucket(name))
    }

    async fn head(&self, b: &Settings, key: &str) -> Result<Option<(Head, u64)>, S3Error> {
        let Some(entry) = self.node.storage.get(&b.heads, key).await.map_err(body::unavailable)? else {
            return Ok(None);
        };
        let head = Head::from_json(&entry.value).map_err(S3Error::internal)?;
        Ok(Some((head, entry.revision)))
    }

    /// Writes `head` at `key` unless someone else wrote the key since
    /// `seen` was read; the old head's blobs that the new one does not
    /// share are then retired.
    async fn commit(&self, b: &Settings, key: &str, head: &Head, seen: Option<&(Head, u64)>) -> Result<bool, S3Error> {
        let event = weft_events::objects::event_name(Some(head));
        let write = Write {
            expect: seen.map_or(Expect::Absent, |(_, r)| Expect::Revision(*r)),
            ttl: None,
            changes: b.changes(&event, key),
        };
        match self.node.storage.set(&b.heads, key, head.to_json(), &write).await {
            Ok(_) => {
                if let Some((old, _)) = seen {
                    self.buckets.retire(b, key, old, Some(head));
                }
                Ok(true)
            }
            Err(StorageError::Conflict { .. }) => Ok(false),
            Err(e) => Err(body::unavailable(e)),
        }
    }

    async fn drop_blobs(&self, b: &Settings, blobs: &[(String, u64)]) {
        for (id, _) in blobs {
            if let Err(e) = self.node.storage.remove_blob(b.blobs(), id).await {
                // The sweep removes it later.
                tracing::debug!("bucket `{}`: cannot remove blob {id}: {e}", b.spec.name);
            }
        }
    }

    /// Writes `head` at `key` as the last writer wins, checking the
    /// write's conditions against what is there each time.
    async fn replace(&self, b: &Settings, key: &str, head: &Head, conditions: &Conditions) -> Result<(), S3Error> {
        until_won(key, "writes", || async move {
            let seen = self.head(b, key).await?;
            conditions.for_write(seen.as_ref().map(|(h, _)| h.etag.as_str()))?;
            Ok(self.commit(b, key, head, seen.as_ref()).await?.then_some(()))
        })
        .await
    }

    /// [`replace`](Context::replace) for a head whose blobs are new and
    /// nobody else's: if it was not written, they are removed. Where the
    /// storage's answer leaves that unknown (a write may be kept though
    /// its confirmation was lost), the head is read again, and the blobs
    /// are left to the sweep unless it is certain they are not used.
    async fn replace_or_drop(
        &self,
        b: &Settings,
        key: &str,
        head: &Head,
        conditions: &Conditions,
    ) -> Result<(), S3Error> {
        let Err(e) = self.replace(b, key, head, conditions).await else {
            return Ok(());
        };
        if e.status != StatusCode::SERVICE_UNAVAILABLE || e.code == "SlowDown" {
            self.drop_blobs(b, &head.blobs).await;
            return Err(e);
        }
        match self.head(b, key).await {
            Ok(Some((now, _))) if now.blobs == head.blobs => Ok(()),
            Ok(_) => {
                self.drop_blobs(b, &head.blobs).await;
                Err(e)
            }
            Err(_) => Err(e),
        }
    }
}

/// Runs `attempt` until it wins its compare-and-set (answers `Some`),
/// waiting a little longer after each loss, at most [`MAX_RACES`] times.
async fn until_won<T, F, Fut>(key: &str, what: &str, mut attempt: F) -> Result<T, S3Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, S3Error>>,
{
    for race in 0..MAX_RACES {
        if race > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(race))).await;
        }
        if let Some(won) = attempt().await? {
            return Ok(won);
        }
    }
    Err(S3Error::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "SlowDown",
        format!("`{key}` changed under {MAX_RACES} {what} in a row; try again"),
    ))
}

/// An XML request body, whole, checked against the Content-MD5 and the
/// payload hash that were signed.
async fn document(headers: &HeaderMap, incoming: &mut Incoming, sha256: Option<[u8; 32]>) -> Result<Vec<u8>, S3Error> {
    let md5 = request::content_md5(headers)?;
    let document = incoming.collect(MAX_DOCUMENT).await?;
    if md5.is_some_and(|m| m != <[u8; 16]>::from(Md5::digest(&document))) {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "BadDigest",
            "the Content-MD5 you specified did not match what was received",
        ));
    }
    if sha256.is_some_and(|h| h != <[u8; 32]>::from(Sha256::digest(&document))) {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "XAmzContentSHA256Mismatch",
            "the x-amz-content-sha256 you signed did not match the body received",
        ));
    }
    Ok(document)
}

async fn operate(
    cx: &Context<'_>,
    op: Operation,
    headers: &HeaderMap,
    incoming: &mut Incoming,
    sha256: Option<[u8; 32]>,
) -> Result<http::Response<Body>, S3Error> {
    match op {
        Operation::ListBuckets => {
            let names = match &cx.who {
                Who::Client => cx.buckets.names(),
                Who::Function(f) => f.spec.buckets.clone(),
            };
            let created = jiff::Timestamp::UNIX_EPOCH;
            let list: Vec<(String, jiff::Timestamp)> = names.into_iter().map(|n| (n, created)).collect();
            Ok(xml_response(StatusCode::OK, xml::list_buckets(&list, "weft")))
        }
        Operation::HeadBucket { bucket } => {
            cx.bucket(&bucket)?;
            let mut r = empty(StatusCode::OK);
            r.headers_mut()
                .insert("x-amz-bucket-region", HeaderValue::from_static(REGION));
            Ok(r)
        }
        Operation::GetBucketLocation { bucket } => {
            cx.bucket(&bucket)?;
            Ok(xml_response(StatusCode::OK, xml::location_constraint(REGION)))
        }
        Operation::CreateBucket { bucket } => match cx.bucket(&bucket) {
            Ok(_) => Err(S3Error::new(
                StatusCode::CONFLICT,
                "BucketAlreadyOwnedByYou",
                format!("bucket `{bucket}` exists: it is declared in weft.toml"),
            )),
            Err(_) => Err(S3Error::access_denied(format!(
                "buckets are made by deploys: declare [bucket.{bucket}] in weft.toml and run weft deploy"
            ))),
        },
        Operation::DeleteBucket { bucket } => {
            cx.bucket(&bucket)?;
            Err(S3Error::access_denied(format!(
                "buckets are removed by deploys: remove [bucket.{bucket}] from weft.toml and run weft deploy"
            )))
        }
        Operation::ListObjectsV2 { bucket, list } => list_objects(cx, &*cx.bucket(&bucket)?, list, true).await,
        Operation::ListObjects { bucket, list } => list_objects(cx, &*cx.bucket(&bucket)?, list, false).await,
        Operation::ListMultipartUploads { bucket } => list_uploads(cx, &*cx.bucket(&bucket)?).await,
        Operation::PutObject { bucket, key } => {
            let b = cx.bucket(&bucket)?;
            put_object(cx, &b, &key, headers, incoming, sha256).await
        }
        Operation::CopyObject { bucket, key, source } => {
            let b = cx.bucket(&bucket)?;
            copy_object(cx, &b, &key, headers, &source).await
        }
        Operation::GetObject {
            bucket,
            key,
            part_number,
        } => get_object(cx, &*cx.bucket(&bucket)?, &key, headers, part_number, false).await,
        Operation::HeadObject {
            bucket,
            key,
            part_number,
        } => get_object(cx, &*cx.bucket(&bucket)?, &key, headers, part_number, true).await,
        Operation::DeleteObject { bucket, key } => {
            let b = cx.bucket(&bucket)?;
            delete_object(cx, &b, &key).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Operation::DeleteObjects { bucket } => {
            let b = cx.bucket(&bucket)?;
            let document = document(headers, incoming, sha256).await?;
            let delete = xml::parse_delete(&document)?;
            let (mut deleted, mut errors) = (Vec::new(), Vec::new());
            for key in delete.keys {
                if let Err(e) = weft_s3::names::check_key(&key) {
                    errors.push((key, e.code, e.message));
                    continue;
                }
                match delete_object(cx, &b, &key).await {
                    Ok(()) => deleted.push(key),
                    Err(e) => errors.push((key, e.code, e.message)),
                }
            }
            Ok(xml_response(
                StatusCode::OK,
                xml::delete_result(&deleted, &errors, delete.quiet),
            ))
        }
        Operation::CreateMultipartUpload { bucket, key } => {
            let b = cx.bucket(&bucket)?;
            let upload_id = weft_store::durable::new_blob_id();
            let upload = Upload {
                key: key.clone(),
                initiated_us: now_us(),
                content_type: content_type(headers),
                metadata: request::user_metadata(headers)?,
                completing_us: None,
            };
            let write = Write {
                expect: Expect::Absent,
                ..Write::default()
            };
            let value = serde_json::to_vec(&upload).unwrap_or_default();
            cx.node
                .storage
                .set(&b.uploads, &upload_id, value, &write)
                .await
                .map_err(body::unavailable)?;
            Ok(xml_response(
                StatusCode::OK,
                xml::initiate_multipart_upload(&bucket, &key, &upload_id),
            ))
        }
        Operation::UploadPart {
            bucket,
            key,
            upload_id,
            part_number,
        } => {
            let b = cx.bucket(&bucket)?;
            upload_part(cx, &b, &key, &upload_id, part_number, headers, incoming, sha256).await
        }
        Operation::CompleteMultipartUpload { bucket, key, upload_id } => {
            let b = cx.bucket(&bucket)?;
            let document = document(headers, incoming, sha256).await?;
            let listed = xml::parse_complete(&document)?;
            complete(cx, &b, &key, &upload_id, &listed, headers).await
        }
        Operation::AbortMultipartUpload { bucket, key, upload_id } => {
            let b = cx.bucket(&bucket)?;
            abort(cx, &b, &key, &upload_id).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Operation::ListParts {
            bucket,
            key,
            upload_id,
            max_parts,
            marker,
        } => {
            let b = cx.bucket(&bucket)?;
            upload_of(cx, &b, &key, &upload_id).await?;
            let parts = parts_of(cx, &b, &upload_id).await?;
            let after: Vec<(u32, Part)> = parts.into_iter().filter(|(n, _)| *n > marker).collect();
            let truncated = after.len() > max_parts as usize;
            let shown: Vec<xml::PartSummary> = after
                .iter()
                .take(max_parts as usize)
                .map(|(n, p)| xml::PartSummary {
                    number: *n,
                    last_modified: timestamp(p.modified_us),
                    etag: p.etag.clone(),
                    size: p.size,
                })
                .collect();
            let next = shown.last().map_or(0, |p| p.number);
            Ok(xml_response(
                StatusCode::OK,
                xml::list_parts(&bucket, &key, &upload_id, &shown, marker, next, max_parts, truncated),
            ))
        }
    }
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What the body of a PUT must match, from its headers.
fn expected(headers: &HeaderMap, max: u64, sha256: Option<[u8; 32]>) -> Result<Expected, S3Error> {
    let number = |name: &str| -> Result<Option<u64>, S3Error> {
        header_text(headers, name)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| S3Error::invalid_argument(format!("{name} must be a number of bytes, got `{v}`")))
            })
            .transpose()
    };
    let length = match number("x-amz-decoded-content-length")? {
        Some(l) => Some(l),
        None => number("content-length")?,
    };
    if length.is_some_and(|l| l > max) {
        return Err(body::too_large(max));
    }
    let trailer = header_text(headers, "x-amz-trailer").map(|t| t.trim().to_ascii_lowercase());
    for algorithm in ["crc32c", "crc64nvme", "sha1"] {
        let name = format!("x-amz-checksum-{algorithm}");
        if headers.contains_key(name.as_str()) || trailer.as_deref() == Some(name.as_str()) {
            return Err(S3Error::invalid_request(format!(
                "weft checks the checksums crc32 and sha256; send the object with one of them instead of {algorithm}"
            )));
        }
    }
    Ok(Expected {
        length,
        max,
        md5: request::content_md5(headers)?,
        sha256,
        crc32: header_text(headers, "x-amz-checksum-crc32").map(str::to_string),
        checksum_sha256: header_text(headers, "x-amz-checksum-sha256").map(str::to_string),
        trailer,
    })
}

async fn put_object(
    cx: &Context<'_>,
    b: &Settings,
    key: &str,
    headers: &HeaderMap,
    incoming: &mut Incoming,
    sha256: Option<[u8; 32]>,
) -> Result<http::Response<Body>, S3Error> {
    let conditions = Conditions::from_headers(headers);
    // Fail a conditional write before reading its body where it can.
    if !conditions.is_empty() {
        let seen = cx.head(b, key).await?;
        conditions.for_write(seen.as_ref().map(|(h, _)| h.etag.as_str()))?;
    }
    let expected = expected(headers, b.spec.max_object, sha256)?;
    let metadata = request::user_metadata(headers)?;
    let received = body::receive(cx.node.storage.as_ref(), b.blobs(), incoming, expected).await?;
    let head = Head {
        size: received.blob.size,
        etag: weft_s3::hex(&received.md5),
        modified_us: now_us(),
        content_type: content_type(headers),
        metadata,
        blobs: vec![(received.blob.id.clone(), received.blob.size)],
        made: "Put".into(),
        upload: None,
    };
    cx.replace_or_drop(b, key, &head, &conditions).await?;
    let mut r = empty(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(&quoted(&head.etag)) {
        r.headers_mut().insert(header::ETAG, v);
    }
    Ok(r)
}

async fn get_object(
    cx: &Context<'_>,
    b: &Settings,
    key: &str,
    headers: &HeaderMap,
    part_number: Option<u32>,
    head_only: bool,
) -> Result<http::Response<Body>, S3Error> {
    let Some((head, _)) = cx.head(b, key).await? else {
        return Err(S3Error::no_such_key(key).on(format!("/{}/{key}", b.spec.name)));
    };
    let modified = timestamp(head.modified_us);
    match Conditions::from_headers(headers).for_read(&head.etag, modified) {
        Ok(()) => {}
        Err(Outcome::PreconditionFailed(e)) => return Err(e),
        Err(Outcome::NotModified) => {
            let mut r = empty(StatusCode::NOT_MODIFIED);
            if let Ok(v) = HeaderValue::from_str(&quoted(&head.etag)) {
                r.headers_mut().insert(header::ETAG, v);
            }
            return Ok(r);
        }
    }
    let size = head.size;
    // The bytes asked for: a part, a range, or the whole object.
    let (range, status) = if let Some(n) = part_number {
        let count = head.blobs.len().max(1) as u32;
        if n > count || (head.parts().is_none() && n != 1) {
            return Err(S3Error::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidPartNumber",
                format!("the object has {count} parts; ask for one from 1 to {count}"),
            ));
        }
        let start: u64 = head.blobs[..(n - 1) as usize].iter().map(|(_, s)| s).sum();
        let len = head.blobs.get((n - 1) as usize).map_or(0, |(_, s)| *s);
        if len == 0 {
            (None, StatusCode::OK)
        } else {
            (Some((start, start + len - 1)), StatusCode::PARTIAL_CONTENT)
        }
    } else {
        match header_text(headers, "range").and_then(request::parse_range) {
            Some(r) => (Some(r.resolve(size)?), StatusCode::PARTIAL_CONTENT),
            None => (None, StatusCode::OK),
        }
    };
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let length = if size == 0 { 0 } else { end - start + 1 };
    let data = if head_only || length == 0 {
        full(Bytes::new())
    } else {
        body::object_body(
            cx.node.storage.clone(),
            b.blobs().to_string(),
            head.blobs.clone(),
            start,
            end,
        )
    };
    let mut r = http::Response::new(data);
    *r.status_mut() = status;
    let h = r.headers_mut();
    let mut set = |name: &str, value: String| {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            h.insert(n, v);
        }
    };
    set("etag", quoted(&head.etag));
    set("last-modified", http_date(head.modified_us));
    set("content-length", length.to_string());
    set("accept-ranges", "bytes".into());
    set(
        "content-type",
        head.content_type
            .clone()
            .unwrap_or_else(|| "binary/octet-stream".into()),
    );
    if range.is_some() {
        set("content-range", format!("bytes {start}-{end}/{size}"));
    }
    if let Some(parts) = head.parts() {
        set("x-amz-mp-parts-count", parts.to_string());
    }
    for (name, value) in &head.metadata {
        set(&format!("x-amz-meta-{name}"), value.clone());
    }
    Ok(r)
}

async fn delete_object(cx: &Context<'_>, b: &Settings, key: &str) -> Result<(), S3Error> {
    until_won(key, "deletes", || async move {
        let Some((head, revision)) = cx.head(b, key).await? else {
            // S3 answers a delete of nothing as done.
            return Ok(Some(()));
        };
        let write = Write {
            expect: Expect::Revision(revision),
            ttl: None,
            changes: b.changes(&weft_events::objects::event_name(None), key),
        };
        match cx.node.storage.remove(&b.heads, key, &write).await {
            Ok(_) => {
                cx.buckets.retire(b, key, &head, None);
                Ok(Some(()))
            }
            Err(StorageError::Conflict { .. }) => Ok(None),
            Err(e) => Err(body::unavailable(e)),
        }
    })
    .await
}

async fn copy_object(
    cx: &Context<'_>,
    b: &Settings,
    key: &str,
    headers: &HeaderMap,
    source: &CopySource,
) -> Result<http::Response<Body>, S3Error> {
    let from = cx.bucket(&source.bucket)?;
    let Some((original, _)) = cx.head(&from, &source.key).await? else {
        return Err(S3Error::no_such_key(&source.key).on(format!("/{}/{}", source.bucket, source.key)));
    };
    source
        .conditions
        .for_copy(&original.etag, timestamp(original.modified_us))?;
    let replace = source.directive == request::MetadataDirective::Replace;
    if !replace && source.bucket == b.spec.name && source.key == key {
        return Err(S3Error::invalid_request(
            "this copy request is illegal because it is trying to copy an object to itself without changing \
             the object's metadata; send x-amz-metadata-directive: REPLACE",
        ));
    }
    if original.size > b.spec.max_object {
        return Err(body::too_large(b.spec.max_object));
    }
    // The copy's bytes go through a new blob, so the two objects share
    // nothing and either may go without the other.
    let data = body::object_body(
        cx.node.storage.clone(),
        from.blobs().to_string(),
        original.blobs.clone(),
        0,
        original.size.saturating_sub(1),
    );
    let mut incoming = Incoming::new(data, None, false);
    let expected = Expected {
        length: Some(original.size),
        max: b.spec.max_object,
        ..Expected::default()
    };
    let received = body::receive(cx.node.storage.as_ref(), b.blobs(), &mut incoming, expected).await?;
    let (content_type, metadata) = if replace {
        (content_type(headers), request::user_metadata(headers)?)
    } else {
        (original.content_type.clone(), original.metadata.clone())
    };
    let head = Head {
        size: received.blob.size,
        // A copy of a multipart object keeps its ETag, as on S3.
        etag: original.etag.clone(),
        modified_us: now_us(),
        content_type,
        metadata,
        blobs: vec![(received.blob.id.clone(), received.blob.size)],
        made: "Copy".into(),
        upload: None,
    };
    cx.replace_or_drop(b, key, &head, &Conditions::from_headers(headers))
        .await?;
    Ok(xml_response(
        StatusCode::OK,
        xml::copy_object_result(&head.etag, timestamp(head.modified_us)),
    ))
}

async fn list_objects(
    cx: &Context<'_>,
    b: &Settings,
    list: ListParams,
    v2: bool,
) -> Result<http::Response<Body>, S3Error> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let resume = if v2 {
        match &list.continuation_token {
            Some(token) => Some(
                b64.decode(token)
                    .ok()
                    .and_then(|t| String::from_utf8(t).ok())
                    .ok_or_else(|| S3Error::invalid_argument("the continuation token is not one weft gave"))?,
            ),
            None => list.start_after.clone(),
        }
    } else {
        list.marker.clone()
    };
    let delimiter = list.delimiter.clone().filter(|d| !d.is_empty());
    let mut contents = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut after = resume.clone();
    let mut truncated = false;
    let mut last_item: Option<String> = None;
    'pages: loop {
        let keys = cx
            .node
            .storage
            .list(&b.heads, &list.prefix, after.as_deref(), PAGE)
            .await
            .map_err(body::unavailable)?;
        for key in &keys {
            after = Some(key.clone());
            let group = delimiter.as_deref().and_then(|d| {
                key[list.prefix.len()..]
                    .find(d)
                    .map(|i| key[..list.prefix.len() + i + d.len()].to_string())
            });
            // A page that resumes inside a common prefix skips its keys.
            if let Some(g) = &group
                && (prefixes.last() == Some(g) || resume.as_deref() == Some(g.as_str()))
            {
                continue;
            }
            if contents.len() + prefixes.len() >= list.max_keys as usize {
                truncated = true;
                break 'pages;
            }
            match group {
                Some(g) => {
                    last_item = Some(g.clone());
                    prefixes.push(g);
                }
                None => {
                    let Some((head, _)) = cx.head(b, key).await? else {
                        continue;
                    };
                    last_item = Some(key.clone());
                    contents.push(xml::ObjectSummary {
                        key: key.clone(),
                        last_modified: timestamp(head.modified_us),
                        etag: head.etag,
                        size: head.size,
                        storage_class: "STANDARD",
                    });
                }
            }
        }
        if keys.len() < PAGE || list.max_keys == 0 {
            break;
        }
    }
    let next = truncated.then(|| last_item.clone()).flatten();
    let page = xml::ListPage {
        bucket: b.spec.name.clone(),
        prefix: list.prefix.clone(),
        delimiter: list.delimiter.clone(),
        max_keys: list.max_keys,
        start_after: list.start_after.clone(),
        continuation_token: list.continuation_token.clone(),
        next_continuation_token: next.as_ref().map(|n| b64.encode(n)),
        marker: list.marker.clone(),
        next_marker: next.filter(|_| delimiter.is_some()),
        encoding_url: list.encoding_url,
        truncated,
        contents,
        common_prefixes: prefixes,
        owner: (!v2 || list.fetch_owner).then(|| "weft".to_string()),
    };
    let document = if v2 {
        xml::list_objects_v2(&page)
    } else {
        xml::list_objects_v1(&page)
    };
    Ok(xml_response(StatusCode::OK, document))
}

/// The upload `upload_id` of `key`, and the revision it was read at.
async fn upload_of(cx: &Context<'_>, b: &Settings, key: &str, upload_id: &str) -> Result<(Upload, u64), S3Error> {
    if !weft_store::durable::is_blob_id(upload_id) {
        return Err(S3Error::no_such_upload(upload_id));
    }
    let entry = cx
        .node
        .storage
        .get(&b.uploads, upload_id)
        .await
        .map_err(body::unavailable)?
        .ok_or_else(|| S3Error::no_such_upload(upload_id))?;
    let upload: Upload = serde_json::from_slice(&entry.value).map_err(|e| S3Error::internal(e.to_string()))?;
    if upload.key != key {
        return Err(S3Error::no_such_upload(upload_id));
    }
    Ok((upload, entry.revision))
}

/// An upload that is not being completed, for adding parts or aborting.
async fn open_upload(cx: &Context<'_>, b: &Settings, key: &str, upload_id: &str) -> Result<(Upload, u64), S3Error> {
    let (upload, revision) = upload_of(cx, b, key, upload_id).await?;
    if upload.completing_us.is_some() {
        return Err(being_completed(upload_id));
    }
    Ok((upload, revision))
}

fn being_completed(upload_id: &str) -> S3Error {
    S3Error::new(
        StatusCode::CONFLICT,
        "OperationAborted",
        format!("upload {upload_id} is being completed; its parts can no longer change"),
    )
}

fn part_key(upload_id: &str, number: u32) -> String {
    format!("{upload_id}/{number:05}")
}

/// The parts of an upload, by number.
async fn parts_of(cx: &Context<'_>, b: &Settings, upload_id: &str) -> Result<Vec<(u32, Part)>, S3Error> {
    let prefix = format!("{upload_id}/");
    let keys = cx
        .node
        .storage
        .list(&b.uploads, &prefix, None, 10_001)
        .await
        .map_err(body::unavailable)?;
    let mut parts = Vec::with_capacity(keys.len());
    for k in keys {
        let Ok(number) = k[prefix.len()..].parse::<u32>() else {
            continue;
        };
        if let Some(entry) = cx.node.storage.get(&b.uploads, &k).await.map_err(body::unavailable)? {
            let part = serde_json::from_slice::<Part>(&entry.value)
                .map_err(|e| S3Error::internal(format!("part {k} is not readable: {e}")))?;
            parts.push((number, part));
        }
    }
    Ok(parts)
}

#[allow(clippy::too_many_arguments)]
async fn upload_part(
    cx: &Context<'_>,
    b: &Settings,
    key: &str,
    upload_id: &str,
    number: u32,
    headers: &HeaderMap,
    incoming: &mut Incoming,
    sha256: Option<[u8; 32]>,
) -> Result<http::Response<Body>, S3Error> {
    open_upload(cx, b, key, upload_id).await?;
    let expected = expected(headers, b.spec.max_object, sha256)?;
    let received = body::receive(cx.node.storage.as_ref(), b.blobs(), incoming, expected).await?;
    let part = Part {
        blob: received.blob.id.clone(),
        size: received.blob.size,
        etag: weft_s3::hex(&received.md5),
        modified_us: now_us(),
    };
    let at = part_key(upload_id, number);
    let before = cx.node.storage.get(&b.uploads, &at).await.map_err(body::unavailable)?;
    let value = serde_json::to_vec(&part).unwrap_or_default();
    if let Err(e) = cx.node.storage.set(&b.uploads, &at, value, &Write::default()).await {
        // Whether the part was kept is unknown: the sweep decides.
        return Err(body::unavailable(e));
    }
    // The upload may have been claimed or ended meanwhile. Claimed: a
    // completion may have read either part, so both are left to it and to
    // the sweep, which sees what the object and the part records name.
    // Ended: this part is nobody's; the one it replaced went with the
    // upload, or to the sweep.
    match upload_of(cx, b, key, upload_id).await {
        Ok((upload, _)) if upload.completing_us.is_none() => {}
        Ok(_) => return Err(being_completed(upload_id)),
        Err(e) => {
            if e.code == "NoSuchUpload" {
                let _ = cx.node.storage.remove(&b.uploads, &at, &Write::default()).await;
                cx.drop_blobs(b, &[(part.blob.clone(), part.size)]).await;
            }
            return Err(e);
        }
    }
    if let Some(old) = before.and_then(|e| serde_json::from_slice::<Part>(&e.value).ok())
        && old.blob != part.blob
    {
        cx.drop_blobs(b, &[(old.blob, old.size)]).await;
    }
    let mut r = empty(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(&quoted(&part.etag)) {
        r.headers_mut().insert(header::ETAG, v);
    }
    Ok(r)
}

/// The object `listed` parts of an upload make.
fn assemble(
    upload: &Upload,
    upload_id: &str,
    parts: &[(u32, Part)],
    listed: &[(u32, String)],
) -> Result<Head, S3Error> {
    let by_number: std::collections::HashMap<u32, &Part> = parts.iter().map(|(n, p)| (*n, p)).collect();
    let mut blobs = Vec::with_capacity(listed.len());
    let mut digests = Md5::new();
    let mut size = 0u64;
    for (i, (number, etag)) in listed.iter().enumerate() {
        let Some(part) = by_number.get(number).filter(|p| p.etag == etag.trim_matches('"')) else {
            return Err(S3Error::new(
                StatusCode::BAD_REQUEST,
                "InvalidPart",
                format!("part {number} was not uploaded, or its ETag is not {etag}; list the parts with ListParts"),
            )
            .with("PartNumber", number.to_string()));
        };
        if i + 1 < listed.len() && part.size < MIN_PART {
            return Err(S3Error::new(
                StatusCode::BAD_REQUEST,
                "EntityTooSmall",
                format!(
                    "part {number} is {} bytes; every part but the last must be at least 5 MiB",
                    part.size
                ),
            ));
        }
        let raw: Vec<u8> = (0..part.etag.len() / 2)
            .filter_map(|j| u8::from_str_radix(&part.etag[2 * j..2 * j + 2], 16).ok())
            .collect();
        digests.update(&raw);
        size += part.size;
        blobs.push((part.blob.clone(), part.size));
    }
    Ok(Head {
        size,
        etag: format!("{}-{}", weft_s3::hex(&digests.finalize()), listed.len()),
        modified_us: now_us(),
        content_type: upload.content_type.clone(),
        metadata: upload.metadata.clone(),
        blobs,
        made: "CompleteMultipartUpload".into(),
        upload: Some(upload_id.to_string()),
    })
}

/// A claim older than this belongs to a completion that died; another
/// may take it over.
const CLAIM_AGE: Duration = Duration::from_secs(120);

/// Sets (or clears) the upload's claim, unless it changed since it was
/// read at `revision`; whether it did.
async fn claim(
    cx: &Context<'_>,
    b: &Settings,
    upload_id: &str,
    upload: &Upload,
    revision: u64,
    at: Option<i64>,
) -> Result<bool, S3Error> {
    let claimed = Upload {
        completing_us: at,
        ..upload.clone()
    };
    let write = Write {
        expect: Expect::Revision(revision),
        ..Write::default()
    };
    let value = serde_json::to_vec(&claimed).unwrap_or_default();
    match cx.node.storage.set(&b.uploads, upload_id, value, &write).await {
        Ok(_) => Ok(true),
        Err(StorageError::Conflict { .. }) => Ok(false),
        Err(e) => Err(body::unavailable(e)),
    }
}

/// Completes an upload. The completion first claims the upload (one
/// compare-and-set), so only one completion ever makes an object of its
/// parts and no part or abort changes them meanwhile; it then writes the
/// head and removes the upload. Sent again, it finds the claim: if the
/// object is the one it would make, it answers as the first one did.
async fn complete(
    cx: &Context<'_>,
    b: &Settings,
    key: &str,
    upload_id: &str,
    listed: &[(u32, String)],
    headers: &HeaderMap,
) -> Result<http::Response<Body>, S3Error> {
    let conditions = Conditions::from_headers(headers);
    let (head, parts) = until_won(key, "completions", || async move {
        let (upload, revision) = upload_of(cx, b, key, upload_id).await?;
        if let Some(at) = upload.completing_us {
            if let Some((now, _)) = cx.head(b, key).await?
                && now.upload.as_deref() == Some(upload_id)
            {
                // Done before (the object names this upload); what may be
                // left is removing the upload, whose parts the other
                // completion may be removing now.
                let parts = parts_of(cx, b, upload_id).await?;
                return Ok(Some((Some(now), parts)));
            }
            if now_us().saturating_sub(at) < CLAIM_AGE.as_micros() as i64 {
                return Err(being_completed(upload_id));
            }
        }
        Ok(claim(cx, b, upload_id, &upload, revision, Some(now_us()))
            .await?
            .then_some((None, Vec::new())))
    })
    .await?;
    let (head, parts) = match head {
        Some(done) => (done, parts),
        None => {
            // Claimed: the parts change no more.
            let (upload, revision) = upload_of(cx, b, key, upload_id).await?;
            let parts = parts_of(cx, b, upload_id).await?;
            let made = assemble(&upload, upload_id, &parts, listed).and_then(|head| {
                if head.size > b.spec.max_object {
                    return Err(body::too_large(b.spec.max_object));
                }
                // A change carries the old head beside the new one.
                if head.to_json().len() > cx.node.storage.max_value() / 2 {
                    return Err(S3Error::invalid_request(format!(
                        "an object of {} parts does not fit this storage's heads; upload it in fewer, larger parts",
                        listed.len()
                    )));
                }
                Ok(head)
            });
            let written = match made {
                Ok(head) => cx.replace(b, key, &head, &conditions).await.map(|()| head),
                Err(e) => Err(e),
            };
            match written {
                Ok(head) => (head, parts),
                Err(e) => {
                    // Not written for certain: give the claim back. Else
                    // the claim stays for a retry to find and finish.
                    if e.status != StatusCode::SERVICE_UNAVAILABLE || e.code == "SlowDown" {
                        let _ = claim(cx, b, upload_id, &upload, revision, None).await;
                    }
                    return Err(e);
                }
            }
        }
    };
    let kept: Vec<String> = head.blobs.iter().map(|(id, _)| id.clone()).collect();
    end_upload(cx, b, upload_id, &parts, &kept).await?;
    let location = format!("/{}/{key}", b.spec.name);
    let mut r = xml_response(
        StatusCode::OK,
        xml::complete_multipart_upload(&location, &b.spec.name, key, &head.etag),
    );
    if let Ok(v) = HeaderValue::from_str(&quoted(&head.etag)) {
        r.headers_mut().insert(header::ETAG, v);
    }
    Ok(r)
}

/// Aborts an upload: removes its record (compare-and-set, so a
/// completion that claimed it first wins), then its parts and their blobs.
async fn abort(cx: &Context<'_>, b: &Settings, key: &str, upload_id: &str) -> Result<(), S3Error> {
    until_won(key, "aborts", || async move {
        let (_, revision) = open_upload(cx, b, key, upload_id).await?;
        let write = Write {
            expect: Expect::Revision(revision),
            ..Write::default()
        };
        match cx.node.storage.remove(&b.uploads, upload_id, &write).await {
            Ok(_) => Ok(Some(())),
            Err(StorageError::Conflict { .. }) => Ok(None),
            Err(e) => Err(body::unavailable(e)),
        }
    })
    .await?;
    let parts = parts_of(cx, b, upload_id).await?;
    end_upload(cx, b, upload_id, &parts, &[]).await
}

/// Removes an upload and its parts, and the blobs of the parts not `kept`
/// by the object it became.
async fn end_upload(
    cx: &Context<'_>,
    b: &Settings,
    upload_id: &str,
    parts: &[(u32, Part)],
    kept: &[String],
) -> Result<(), S3Error> {
    let storage = &cx.node.storage;
    storage
        .remove(&b.uploads, upload_id, &Write::default())
        .await
        .map_err(body::unavailable)?;
    for (number, part) in parts {
        storage
            .remove(&b.uploads, &part_key(upload_id, *number), &Write::default())
            .await
            .map_err(body::unavailable)?;
        if !kept.contains(&part.blob) {
            cx.drop_blobs(b, &[(part.blob.clone(), part.size)]).await;
        }
    }
    Ok(())
}

async fn list_uploads(cx: &Context<'_>, b: &Settings) -> Result<http::Response<Body>, S3Error> {
    let keys = cx
        .node
        .storage
        .list(&b.uploads, "", None, 100_000)
        .await
        .map_err(body::unavailable)?;
    let mut uploads = Vec::new();
    for id in keys.iter().filter(|k| !k.contains('/')).take(PAGE) {
        if let Some(entry) = cx.node.storage.get(&b.uploads, id).await.map_err(body::unavailable)?
            && let Ok(u) = serde_json::from_slice::<Upload>(&entry.value)
        {
            uploads.push((u.key, id.clone(), timestamp(u.initiated_us)));
        }
    }
    Ok(xml_response(
        StatusCode::OK,
        xml::list_multipart_uploads(&b.spec.name, &uploads),
    ))
}
