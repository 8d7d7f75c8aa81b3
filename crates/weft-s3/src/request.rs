//! One request's head into an [`Operation`], and the headers several
//! operations read the same way: `Range`, the conditional headers, user
//! metadata and `Content-MD5`.
//!
//! This module knows neither storage nor credentials: whether the bucket
//! exists, or the caller may touch it, is decided after parsing. It reads
//! the method, the path, the query and a few headers, and nothing of the
//! body.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, Method, StatusCode, Uri};
use jiff::Timestamp;
use percent_encoding::percent_decode_str;

use crate::S3Error;
use crate::names::{check_bucket, check_key};
use crate::xml::printable;

/// What one request asks of S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    ListBuckets,
    HeadBucket {
        bucket: String,
    },
    GetBucketLocation {
        bucket: String,
    },
    CreateBucket {
        bucket: String,
    },
    DeleteBucket {
        bucket: String,
    },
    ListObjectsV2 {
        bucket: String,
        list: ListParams,
    },
    /// Version 1 of the listing: pages by `marker` instead of
    /// `continuation-token`.
    ListObjects {
        bucket: String,
        list: ListParams,
    },
    ListMultipartUploads {
        bucket: String,
    },
    PutObject {
        bucket: String,
        key: String,
    },
    CopyObject {
        bucket: String,
        key: String,
        source: CopySource,
    },
    GetObject {
        bucket: String,
        key: String,
        part_number: Option<u32>,
    },
    HeadObject {
        bucket: String,
        key: String,
        part_number: Option<u32>,
    },
    DeleteObject {
        bucket: String,
        key: String,
    },
    DeleteObjects {
        bucket: String,
    },
    CreateMultipartUpload {
        bucket: String,
        key: String,
    },
    UploadPart {
        bucket: String,
        key: String,
        upload_id: String,
        part_number: u32,
    },
    CompleteMultipartUpload {
        bucket: String,
        key: String,
        upload_id: String,
    },
    AbortMultipartUpload {
        bucket: String,
        key: String,
        upload_id: String,
    },
    ListParts {
        bucket: String,
        key: String,
        upload_id: String,
        /// At most 1000, as in S3.
        max_parts: u32,
        /// List parts after this number; 0 lists from the first.
        marker: u32,
    },
}

/// Where the bucket's name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style<'a> {
    /// `/BUCKET/KEY`.
    Path,
    /// The bucket came from the `Host` (`BUCKET.s3.weft.internal`); the whole
    /// path is the key.
    Virtual(&'a str),
}

/// The query of `ListObjectsV2` and `ListObjects`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams {
    /// Only keys that begin with this; empty lists them all.
    pub prefix: String,
    /// `None` when absent or empty, as S3 treats an empty delimiter.
    pub delimiter: Option<String>,
    /// 1000 by default and at most.
    pub max_keys: u32,
    /// Version 2 only.
    pub continuation_token: Option<String>,
    /// Version 2 only.
    pub start_after: Option<String>,
    /// Version 1 only.
    pub marker: Option<String>,
    /// `encoding-type=url`: keys in the answer are percent-encoded.
    pub encoding_url: bool,
    /// `fetch-owner=true` in version 2; always true in version 1, which
    /// lists owners unasked.
    pub fetch_owner: bool,
}

/// The source of `CopyObject`, from `x-amz-copy-source` and its companions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySource {
    pub bucket: String,
    pub key: String,
    /// `x-amz-copy-source-if-*`, checked against the source with
    /// [`Conditions::for_copy`].
    pub conditions: Conditions,
    pub directive: MetadataDirective,
}

/// `x-amz-metadata-directive`: whether a copy keeps the source's metadata or
/// takes the request's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetadataDirective {
    #[default]
    Copy,
    Replace,
}

/// The most parts a multipart upload has, and so the highest part number.
pub const MAX_PARTS: u32 = 10_000;

/// The most entries one listing page holds (`max-keys`, `max-parts`).
pub const MAX_PAGE: u32 = 1000;

/// The most bytes of user metadata (`x-amz-meta-*` names without the prefix,
/// plus values) one object carries.
pub const MAX_METADATA: usize = 2048;

/// Query parameters that select S3 features weft does not serve.
const UNSERVED: &[(&str, &str)] = &[
    ("accelerate", "transfer acceleration"),
    ("acl", "access control lists"),
    ("analytics", "storage class analysis"),
    ("attributes", "GetObjectAttributes"),
    ("cors", "CORS configuration"),
    ("encryption", "bucket encryption configuration"),
    ("intelligent-tiering", "Intelligent-Tiering"),
    ("inventory", "inventory configuration"),
    ("legal-hold", "object legal holds"),
    ("lifecycle", "lifecycle configuration"),
    ("logging", "access logging"),
    ("metadataTable", "metadata tables"),
    ("metrics", "request metrics"),
    ("notification", "event notifications"),
    ("object-lock", "object lock"),
    ("ownershipControls", "ownership controls"),
    ("policy", "bucket policies"),
    ("policyStatus", "bucket policy status"),
    ("publicAccessBlock", "public access blocks"),
    ("replication", "replication"),
    ("requestPayment", "requester pays"),
    ("restore", "restoring archived objects"),
    ("retention", "object retention"),
    ("select", "S3 Select"),
    ("session", "CreateSession"),
    ("tagging", "tagging"),
    ("torrent", "BitTorrent"),
    ("versioning", "versioning"),
    ("versions", "listing object versions"),
    ("website", "website hosting"),
];

/// Reads a request's method, path and query (and, for copies and parts,
/// a few headers) into the operation it asks for.
///
/// The path is percent-decoded once. Bucket names are checked with
/// [`check_bucket`] and keys with [`check_key`]. Sub-resources weft does not
/// serve (`?acl`, `?tagging`, `?versions`, ...) are `501 NotImplemented`,
/// methods S3 has no use for are `405 MethodNotAllowed`.
pub fn parse(method: &Method, uri: &Uri, headers: &HeaderMap, style: Style<'_>) -> Result<Operation, S3Error> {
    let query = Query::parse(uri.query().unwrap_or(""))?;
    refuse_unserved(&query)?;
    let path = percent_decode_str(uri.path()).decode_utf8().map_err(|_| {
        S3Error::invalid_argument(
            "the request path is not UTF-8 once percent-decoded; percent-encode the key's UTF-8 bytes",
        )
    })?;
    let path = path.strip_prefix('/').unwrap_or(&path);
    let (bucket, key) = match style {
        Style::Path => path.split_once('/').unwrap_or((path, "")),
        Style::Virtual(bucket) => (bucket, path),
    };
    if ![Method::GET, Method::HEAD, Method::PUT, Method::POST, Method::DELETE].contains(method) {
        let resource = if bucket.is_empty() {
            "SERVICE"
        } else if key.is_empty() {
            "BUCKET"
        } else {
            "OBJECT"
        };
        return Err(method_not_allowed(method, resource, "GET, HEAD, PUT, POST or DELETE"));
    }
    if matches!(style, Style::Path) && bucket.is_empty() && key.is_empty() {
        return match *method {
            Method::GET => Ok(Operation::ListBuckets),
            _ => Err(method_not_allowed(method, "SERVICE", "GET to list buckets")),
        };
    }
    check_bucket(bucket).map_err(|message| {
        S3Error::new(StatusCode::BAD_REQUEST, "InvalidBucketName", message).with("BucketName", printable(bucket))
    })?;
    if key.is_empty() {
        bucket_operation(method, bucket.to_string(), &query)
    } else {
        // No `<Resource>`: the key may hold the control character being refused.
        check_key(key)?;
        object_operation(method, bucket.to_string(), key.to_string(), &query, headers)
    }
}

fn bucket_operation(method: &Method, bucket: String, query: &Query) -> Result<Operation, S3Error> {
    match *method {
        Method::GET if query.has("location") => Ok(Operation::GetBucketLocation { bucket }),
        Method::GET if query.has("uploads") => Ok(Operation::ListMultipartUploads { bucket }),
        Method::GET => match query.get("list-type") {
            Some("2") => Ok(Operation::ListObjectsV2 {
                bucket,
                list: list_params(query, 2)?,
            }),
            None => Ok(Operation::ListObjects {
                bucket,
                list: list_params(query, 1)?,
            }),
            Some(other) => Err(invalid_argument(
                "list-type",
                other,
                format!(
                    "list-type `{}` is not one S3 knows; send `list-type=2` or leave it out for version 1",
                    printable(other)
                ),
            )),
        },
        Method::HEAD => Ok(Operation::HeadBucket { bucket }),
        Method::PUT => Ok(Operation::CreateBucket { bucket }),
        Method::DELETE => Ok(Operation::DeleteBucket { bucket }),
        Method::POST if query.has("delete") => Ok(Operation::DeleteObjects { bucket }),
        Method::POST => Err(not_implemented(
            "POST uploads from HTML forms",
            "upload with PUT /BUCKET/KEY, or POST /BUCKET?delete to delete objects",
        )),
        _ => Err(method_not_allowed(method, "BUCKET", "GET, HEAD, PUT, POST or DELETE")),
    }
}

fn object_operation(
    method: &Method,
    bucket: String,
    key: String,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Operation, S3Error> {
    let upload_id = match query.get("uploadId") {
        Some("") => {
            return Err(invalid_argument(
                "uploadId",
                "",
                "uploadId is empty; send the UploadId that CreateMultipartUpload returned",
            ));
        }
        other => other.map(str::to_string),
    };
    let part_number = query.get("partNumber").map(part_number).transpose()?;
    let copy_source = headers.get("x-amz-copy-source");
    match *method {
        Method::PUT => match (upload_id, part_number) {
            (Some(_), Some(_)) if copy_source.is_some() => Err(not_implemented(
                "UploadPartCopy (x-amz-copy-source on a part)",
                "read the source object and upload its bytes as the part",
            )),
            (Some(upload_id), Some(part_number)) => Ok(Operation::UploadPart {
                bucket,
                key,
                upload_id,
                part_number,
            }),
            (Some(_), None) => Err(S3Error::invalid_argument(
                "PUT with uploadId uploads a part and needs partNumber; add partNumber=N with N from 1 to 10000",
            )),
            (None, Some(_)) => Err(S3Error::invalid_argument(
                "PUT with partNumber uploads a part and needs uploadId; add the UploadId that \
                 CreateMultipartUpload returned",
            )),
            (None, None) => match copy_source {
                Some(value) => {
                    let source = copy_source_of(value.as_bytes(), headers, &bucket, &key)?;
                    Ok(Operation::CopyObject { bucket, key, source })
                }
                None => Ok(Operation::PutObject { bucket, key }),
            },
        },
        Method::GET => match upload_id {
            Some(upload_id) => Ok(Operation::ListParts {
                bucket,
                key,
                upload_id,
                max_parts: query
                    .get("max-parts")
                    .map(|v| count("max-parts", v))
                    .transpose()?
                    .map_or(MAX_PAGE, |n| n.min(MAX_PAGE)),
                marker: query
                    .get("part-number-marker")
                    .map(|v| count("part-number-marker", v))
                    .transpose()?
                    .unwrap_or(0),
            }),
            None => Ok(Operation::GetObject {
                bucket,
                key,
                part_number,
            }),
        },
        Method::HEAD => Ok(Operation::HeadObject {
            bucket,
            key,
            part_number,
        }),
        Method::DELETE => match upload_id {
            Some(upload_id) => Ok(Operation::AbortMultipartUpload { bucket, key, upload_id }),
            None => Ok(Operation::DeleteObject { bucket, key }),
        },
        Method::POST if query.has("uploads") => Ok(Operation::CreateMultipartUpload { bucket, key }),
        Method::POST => match upload_id {
            Some(upload_id) => Ok(Operation::CompleteMultipartUpload { bucket, key, upload_id }),
            None => Err(method_not_allowed(
                method,
                "OBJECT",
                "POST with ?uploads or ?uploadId=ID for multipart uploads, or PUT to upload",
            )),
        },
        _ => Err(method_not_allowed(method, "OBJECT", "GET, HEAD, PUT, POST or DELETE")),
    }
}

/// `version` 1 reads `marker`, version 2 `continuation-token`,
/// `start-after` and `fetch-owner`; each ignores the other's.
fn list_params(query: &Query, version: u8) -> Result<ListParams, S3Error> {
    let non_empty = |name: &str| query.get(name).filter(|v| !v.is_empty()).map(str::to_string);
    let max_keys = query
        .get("max-keys")
        .map(|v| count("max-keys", v))
        .transpose()?
        .map_or(MAX_PAGE, |n| n.min(MAX_PAGE));
    let encoding_url = match query.get("encoding-type") {
        None | Some("") => false,
        Some("url") => true,
        Some(other) => {
            return Err(invalid_argument(
                "encoding-type",
                other,
                format!(
                    "encoding-type `{}` is not one S3 knows; the only one is `url`",
                    printable(other)
                ),
            ));
        }
    };
    let fetch_owner = match (version, query.get("fetch-owner")) {
        (1, _) => true,
        (_, None) => false,
        (_, Some(v)) if v.eq_ignore_ascii_case("true") => true,
        (_, Some(v)) if v.eq_ignore_ascii_case("false") => false,
        (_, Some(other)) => {
            return Err(invalid_argument(
                "fetch-owner",
                other,
                format!(
                    "fetch-owner `{}` is not a boolean; send `true` or `false`",
                    printable(other)
                ),
            ));
        }
    };
    Ok(ListParams {
        prefix: query.get("prefix").unwrap_or("").to_string(),
        delimiter: non_empty("delimiter"),
        max_keys,
        continuation_token: if version == 2 {
            non_empty("continuation-token")
        } else {
            None
        },
        start_after: if version == 2 { non_empty("start-after") } else { None },
        marker: if version == 1 { non_empty("marker") } else { None },
        encoding_url,
        fetch_owner,
    })
}

/// A count such as `max-keys`: an integer from 0 to 2^31-1, as S3 takes it.
fn count(name: &'static str, value: &str) -> Result<u32, S3Error> {
    value
        .parse::<i64>()
        .ok()
        .filter(|n| (0..=i64::from(i32::MAX)).contains(n))
        .map(|n| n as u32)
        .ok_or_else(|| {
            invalid_argument(
                name,
                value,
                format!("Provided {name} not an integer or within integer range; send a whole number from 0"),
            )
        })
}

fn part_number(value: &str) -> Result<u32, S3Error> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_PARTS).contains(n))
        .ok_or_else(|| {
            invalid_argument(
                "partNumber",
                value,
                "Part number must be an integer between 1 and 10000, inclusive",
            )
        })
}

/// `x-amz-copy-source` is `/BUCKET/KEY` or `BUCKET/KEY`, percent-encoded,
/// optionally with `?versionId=`.
fn copy_source_of(value: &[u8], headers: &HeaderMap, bucket: &str, key: &str) -> Result<CopySource, S3Error> {
    let bad = |why: &str| {
        S3Error::invalid_argument(format!(
            "x-amz-copy-source {why}; send `/BUCKET/KEY` with the key percent-encoded"
        ))
        .with("ArgumentName", "x-amz-copy-source")
    };
    let value = std::str::from_utf8(value).map_err(|_| bad("is not ASCII"))?;
    let (path, version) = match value.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (value, None),
    };
    if let Some(version) = version {
        match version.strip_prefix("versionId=") {
            Some("null") => {}
            Some(_) => {
                return Err(not_implemented(
                    "copying a specific object version (versionId in x-amz-copy-source)",
                    "weft keeps one version of each object; leave versionId out",
                ));
            }
            None => return Err(bad(&format!("has `?{version}`, which is not `versionId=`"))),
        }
    }
    let path = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| bad("is not UTF-8 once percent-decoded"))?;
    let path = path.strip_prefix('/').unwrap_or(&path);
    let (source_bucket, source_key) = path
        .split_once('/')
        .ok_or_else(|| bad(&format!("`{value}` names no key")))?;
    check_bucket(source_bucket).map_err(|message| bad(&format!("names an invalid bucket: {message}")))?;
    if source_key.is_empty() {
        return Err(bad(&format!("`{value}` names no key")));
    }
    check_key(source_key)?;
    let directive = match headers.get("x-amz-metadata-directive").map(|v| v.as_bytes()) {
        None | Some(b"COPY") => MetadataDirective::Copy,
        Some(b"REPLACE") => MetadataDirective::Replace,
        Some(other) => {
            let other = String::from_utf8_lossy(other);
            return Err(invalid_argument(
                "x-amz-metadata-directive",
                &other,
                format!("x-amz-metadata-directive `{other}` is unknown; send COPY or REPLACE"),
            ));
        }
    };
    if source_bucket == bucket && source_key == key && directive == MetadataDirective::Copy {
        return Err(S3Error::invalid_request(format!(
            "copying `{key}` onto itself without changing its metadata changes nothing; send \
             x-amz-metadata-directive: REPLACE with the new x-amz-meta-* headers"
        )));
    }
    Ok(CopySource {
        bucket: source_bucket.to_string(),
        key: source_key.to_string(),
        conditions: Conditions::copy_source(headers),
        directive,
    })
}

fn refuse_unserved(query: &Query) -> Result<(), S3Error> {
    if let Some((name, what)) = UNSERVED.iter().find(|(name, _)| query.has(name)) {
        return Err(not_implemented(
            &format!("`?{name}` ({what})"),
            &format!("leave `{name}` out of the query"),
        ));
    }
    match query.get("versionId") {
        // "null" is the version of an object in an unversioned bucket, the only kind weft has.
        None | Some("null") => Ok(()),
        Some(_) => Err(not_implemented(
            "object versions (`?versionId=`)",
            "weft keeps one version of each object; leave versionId out",
        )),
    }
}

/// The query, decoded: `+` is a space, as in HTML forms and S3.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Result<Query, S3Error> {
        let decode = |part: &str| {
            percent_decode_str(&part.replace('+', " "))
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| {
                    S3Error::invalid_argument(format!(
                        "query parameter `{part}` is not UTF-8 once percent-decoded; percent-encode its UTF-8 bytes"
                    ))
                })
        };
        let mut pairs = Vec::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((decode(name)?, decode(value)?));
        }
        Ok(Query(pairs))
    }

    /// The first value of `name`; S3 reads the first of repeated parameters.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// `InvalidArgument` with S3's `<ArgumentName>` and `<ArgumentValue>`.
fn invalid_argument(name: &'static str, value: &str, message: impl Into<String>) -> S3Error {
    S3Error::invalid_argument(message)
        .with("ArgumentName", name)
        .with("ArgumentValue", printable(value))
}

fn not_implemented(what: &str, fix: &str) -> S3Error {
    S3Error::new(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        format!("{what} is not implemented by weft; {fix}"),
    )
}

fn method_not_allowed(method: &Method, resource_type: &'static str, allowed: &str) -> S3Error {
    S3Error::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{method} is not allowed here; use {allowed}"),
    )
    .with("Method", method.as_str())
    .with("ResourceType", resource_type)
}

/// A `Range` header's one range of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=A-B`, both inclusive.
    FromTo(u64, u64),
    /// `bytes=A-`.
    From(u64),
    /// `bytes=-N`: the last N bytes.
    Suffix(u64),
}

/// Reads a `Range` header. `None` for anything but one byte range (several
/// ranges, other units, garbage): S3 ignores such headers and serves the
/// whole object, and so does weft.
pub fn parse_range(value: &str) -> Option<ByteRange> {
    let value = value.trim();
    let (unit, spec) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    let digits = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            // Saturate: a position past u64 is past any object's end.
            .then(|| {
                s.bytes()
                    .fold(0u64, |n, b| n.saturating_mul(10).saturating_add(u64::from(b - b'0')))
            })
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, true) => None,
        (true, false) => Some(ByteRange::Suffix(digits(last)?)),
        (false, true) => Some(ByteRange::From(digits(first)?)),
        (false, false) => {
            let (a, b) = (digits(first)?, digits(last)?);
            (a <= b).then_some(ByteRange::FromTo(a, b))
        }
    }
}

impl ByteRange {
    /// The first and last byte (inclusive) this range selects from an object
    /// of `size` bytes. A last byte past the end is clamped to it; a range
    /// that selects nothing (it starts at or past the end, asks for the last
    /// 0 bytes, or the object is empty) is `416 InvalidRange`.
    pub fn resolve(&self, size: u64) -> Result<(u64, u64), S3Error> {
        let selected = match *self {
            ByteRange::FromTo(a, b) if a < size => Some((a, b.min(size - 1))),
            ByteRange::From(a) if a < size => Some((a, size - 1)),
            ByteRange::Suffix(n) if n > 0 && size > 0 => Some((size - n.min(size), size - 1)),
            _ => None,
        };
        selected.ok_or_else(|| {
            let fix = if size == 0 {
                "the object is empty; request it without Range".to_string()
            } else {
                format!("ask for a range that starts below byte {size}, or request the object without Range")
            };
            S3Error::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                format!("the range `{self}` selects no bytes of this {size}-byte object; {fix}"),
            )
            .with("RangeRequested", self.to_string())
            .with("ActualObjectSize", size.to_string())
        })
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByteRange::FromTo(a, b) => write!(f, "bytes={a}-{b}"),
            ByteRange::From(a) => write!(f, "bytes={a}-"),
            ByteRange::Suffix(n) => write!(f, "bytes=-{n}"),
        }
    }
}

/// The four conditional headers of RFC 7232, as S3 reads them.
///
/// ETags are kept without quotes and without a weak `W/` prefix (S3 compares
/// them as strings); `*` is kept as `*`. A date that does not parse is
/// dropped, as S3 ignores it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    pub if_match: Option<Vec<String>>,
    pub if_none_match: Option<Vec<String>>,
    pub if_modified_since: Option<Timestamp>,
    pub if_unmodified_since: Option<Timestamp>,
}

/// Why a read's conditions stopped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `412`; the error names the condition that failed.
    PreconditionFailed(S3Error),
    /// `304`, with no body.
    NotModified,
}

/// Which of the four `If-*` conditions failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    Match,
    UnmodifiedSince,
    NoneMatch,
    ModifiedSince,
}

impl Failed {
    fn header(self) -> &'static str {
        match self {
            Failed::Match => "If-Match",
            Failed::UnmodifiedSince => "If-Unmodified-Since",
            Failed::NoneMatch => "If-None-Match",
            Failed::ModifiedSince => "If-Modified-Since",
        }
    }

    fn why(self) -> &'static str {
        match self {
            Failed::Match => "the object's ETag is not one it names",
            Failed::UnmodifiedSince => "the object was modified after that date",
            Failed::NoneMatch => "the object's ETag is one it names",
            Failed::ModifiedSince => "the object was not modified after that date",
        }
    }
}

impl Conditions {
    /// `If-Match`, `If-None-Match`, `If-Modified-Since` and
    /// `If-Unmodified-Since`.
    pub fn from_headers(headers: &HeaderMap) -> Conditions {
        Conditions::read(headers, "")
    }

    /// `x-amz-copy-source-if-match` and its three siblings, which put the
    /// same conditions on a copy's source.
    pub fn copy_source(headers: &HeaderMap) -> Conditions {
        Conditions::read(headers, "x-amz-copy-source-")
    }

    fn read(headers: &HeaderMap, prefix: &str) -> Conditions {
        let date = |name: &str| {
            headers
                .get(format!("{prefix}{name}"))
                .and_then(|v| v.to_str().ok())
                .and_then(parse_http_date)
        };
        Conditions {
            if_match: etags(headers, &format!("{prefix}if-match")),
            if_none_match: etags(headers, &format!("{prefix}if-none-match")),
            if_modified_since: date("if-modified-since"),
            if_unmodified_since: date("if-unmodified-since"),
        }
    }

    /// Whether nothing is asked.
    pub fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }

    /// RFC 7232's order, which S3 follows: a false `If-Match` is 412, and
    /// without `If-Match` so is a false `If-Unmodified-Since`; then a
    /// matching `If-None-Match` is 304, and without `If-None-Match` so is a
    /// false `If-Modified-Since`. Dates compare to the second, the
    /// resolution of `Last-Modified`.
    fn evaluate(&self, etag: &str, modified: Timestamp) -> Result<(), Failed> {
        let etag = unquote(etag);
        let modified = modified.as_second();
        if let Some(tags) = &self.if_match {
            if !matches_any(tags, etag) {
                return Err(Failed::Match);
            }
        } else if let Some(since) = self.if_unmodified_since
            && modified > since.as_second()
        {
            return Err(Failed::UnmodifiedSince);
        }
        if let Some(tags) = &self.if_none_match {
            if matches_any(tags, etag) {
                return Err(Failed::NoneMatch);
            }
        } else if let Some(since) = self.if_modified_since
            && modified <= since.as_second()
        {
            return Err(Failed::ModifiedSince);
        }
        Ok(())
    }

    /// Checks a GET or HEAD against the object's ETag (with or without
    /// quotes) and modification time.
    pub fn for_read(&self, etag: &str, modified: Timestamp) -> Result<(), Outcome> {
        self.evaluate(etag, modified).map_err(|failed| match failed {
            Failed::NoneMatch | Failed::ModifiedSince => Outcome::NotModified,
            _ => Outcome::PreconditionFailed(precondition_failed(failed.header(), failed.why())),
        })
    }

    /// Checks a copy's source, read from [`Conditions::copy_source`]. Every
    /// failure is 412, as a copy has nothing to answer 304 with.
    pub fn for_copy(&self, etag: &str, modified: Timestamp) -> Result<(), S3Error> {
        self.evaluate(etag, modified).map_err(|failed| {
            let header = format!("x-amz-copy-source-{}", failed.header().to_ascii_lowercase());
            precondition_failed(&header, failed.why())
        })
    }

    /// Checks a conditional write (PutObject, CompleteMultipartUpload)
    /// against the ETag of the object now at the key, if any.
    ///
    /// `If-None-Match: *` fails with 412 when an object exists; `If-Match`
    /// fails with 412 when the ETag differs, and with `404 NoSuchKey` when
    /// there is no object, as in S3 (the caller adds `<Key>`). Date
    /// conditions do not apply to writes and are ignored.
    pub fn for_write(&self, current: Option<&str>) -> Result<(), S3Error> {
        if let Some(tags) = &self.if_none_match {
            if tags.iter().any(|t| t != "*") {
                return Err(not_implemented(
                    "If-None-Match with an ETag on a write",
                    "send `If-None-Match: *` to write only where no object exists",
                ));
            }
            if current.is_some() {
                return Err(precondition_failed(
                    "If-None-Match",
                    "an object already exists at this key",
                ));
            }
        }
        if let Some(tags) = &self.if_match {
            match current {
                None => {
                    return Err(S3Error::new(
                        StatusCode::NOT_FOUND,
                        "NoSuchKey",
                        "If-Match names an ETag but no object exists at this key; write without If-Match \
                         to create it",
                    ));
                }
                Some(etag) if !matches_any(tags, unquote(etag)) => {
                    return Err(precondition_failed("If-Match", "the object's ETag is not one it names"));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

fn precondition_failed(header: &str, why: &str) -> S3Error {
    S3Error::new(
        StatusCode::PRECONDITION_FAILED,
        "PreconditionFailed",
        format!(
            "the {header} condition does not hold: {why}; read the object's current ETag and Last-Modified and retry"
        ),
    )
    .with("Condition", header)
}

/// Every ETag the headers named `name` list, comma-separated, or `None` if
/// they list none.
fn etags(headers: &HeaderMap, name: &str) -> Option<Vec<String>> {
    let tags: Vec<String> = headers
        .get_all(name)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .map(|t| {
            let t = t.trim();
            unquote(t.strip_prefix("W/").unwrap_or(t)).to_string()
        })
        .filter(|t| !t.is_empty())
        .collect();
    (!tags.is_empty()).then_some(tags)
}

fn matches_any(tags: &[String], etag: &str) -> bool {
    tags.iter().any(|t| t == "*" || t == etag)
}

fn unquote(etag: &str) -> &str {
    etag.strip_prefix('"').and_then(|e| e.strip_suffix('"')).unwrap_or(etag)
}

/// An HTTP date: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), or the
/// obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
/// (`Sun Nov  6 08:49:37 1994`) forms RFC 7231 asks servers to read.
pub fn parse_http_date(value: &str) -> Option<Timestamp> {
    let value = value.trim();
    // asctime pads a one-digit day with a space; collapse it so one format reads both.
    let collapsed = value.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
    [
        "%a, %d %b %Y %H:%M:%S GMT",
        "%A, %d-%b-%y %H:%M:%S GMT",
        "%a %b %d %H:%M:%S %Y",
    ]
    .iter()
    .find_map(|format| {
        let time = jiff::fmt::strtime::parse(format, &collapsed).ok()?;
        time.to_datetime().ok()?.to_zoned(jiff::tz::TimeZone::UTC).ok()
    })
    .map(|zoned| zoned.timestamp())
}

/// `time` as an IMF-fixdate, for `Last-Modified` and `Date`.
pub fn http_date(time: Timestamp) -> String {
    time.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// The `x-amz-meta-*` headers: names without the prefix (lowercase, as
/// HTTP/1 and `http` keep them) and values, in header order. Repeated
/// headers are joined with commas, as S3 does.
///
/// More than [`MAX_METADATA`] bytes of names and values is
/// `400 MetadataTooLarge`; a value that is not UTF-8 is `InvalidArgument`.
pub fn user_metadata(headers: &HeaderMap) -> Result<Vec<(String, String)>, S3Error> {
    let mut metadata: Vec<(String, String)> = Vec::new();
    let mut size = 0;
    for (name, value) in headers {
        let Some(field) = name.as_str().strip_prefix("x-amz-meta-") else {
            continue;
        };
        if field.is_empty() {
            return Err(S3Error::invalid_argument(
                "a header is named `x-amz-meta-` with nothing after it; name the field, as in `x-amz-meta-color`",
            ));
        }
        let value = std::str::from_utf8(value.as_bytes()).map_err(|_| {
            S3Error::invalid_argument(format!(
                "header `{name}` is not UTF-8; send metadata values as UTF-8 (or encode them, as RFC 2047 does)"
            ))
        })?;
        match metadata.iter_mut().find(|(n, _)| n == field) {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(value);
                size += 1 + value.len();
            }
            None => {
                metadata.push((field.to_string(), value.to_string()));
                size += field.len() + value.len();
            }
        }
    }
    if size > MAX_METADATA {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "MetadataTooLarge",
            format!(
                "the x-amz-meta-* headers hold {size} bytes of names and values; S3 allows {MAX_METADATA}, so \
                 shorten them or keep the data in the object"
            ),
        ));
    }
    Ok(metadata)
}

/// `Content-MD5`: the base64 of the body's 16-byte MD5 digest, or `None`
/// when absent. Anything else is `400 InvalidDigest`.
pub fn content_md5(headers: &HeaderMap) -> Result<Option<[u8; 16]>, S3Error> {
    let Some(value) = headers.get("content-md5") else {
        return Ok(None);
    };
    STANDARD
        .decode(value.as_bytes().trim_ascii())
        .ok()
        .and_then(|digest| <[u8; 16]>::try_from(digest).ok())
        .map(Some)
        .ok_or_else(|| {
            S3Error::new(
                StatusCode::BAD_REQUEST,
                "InvalidDigest",
                "Content-MD5 is not the base64 of a 16-byte MD5 digest; send base64(md5(body)), such as \
                 `1B2M2Y8AsgTpgAmY7PhCfg==` for an empty body",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn op(method: &str, target: &str) -> Result<Operation, S3Error> {
        op_with(method, target, &[])
    }

    fn op_with(method: &str, target: &str, headers: &[(&'static str, &str)]) -> Result<Operation, S3Error> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let uri: Uri = target.parse().unwrap();
        parse(&method, &uri, &header_map(headers), Style::Path)
    }

    fn header_map(headers: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn code(result: Result<Operation, S3Error>) -> (u16, &'static str) {
        let e = result.unwrap_err();
        (e.status.as_u16(), e.code)
    }

    fn s(text: &str) -> String {
        text.to_string()
    }

    #[test]
    fn the_root_lists_buckets() {
        assert_eq!(op("GET", "/"), Ok(Operation::ListBuckets));
        assert_eq!(op("GET", "/?x-id=ListBuckets"), Ok(Operation::ListBuckets));
        assert_eq!(code(op("PUT", "/")), (405, "MethodNotAllowed"));
    }

    #[test]
    fn bucket_operations_are_chosen_by_method_and_sub_resource() {
        let b = || s("photos");
        assert_eq!(op("HEAD", "/photos"), Ok(Operation::HeadBucket { bucket: b() }));
        assert_eq!(op("PUT", "/photos/"), Ok(Operation::CreateBucket { bucket: b() }));
        assert_eq!(op("DELETE", "/photos"), Ok(Operation::DeleteBucket { bucket: b() }));
        assert_eq!(
            op("GET", "/photos?location"),
            Ok(Operation::GetBucketLocation { bucket: b() })
        );
        assert_eq!(
            op("GET", "/photos?uploads"),
            Ok(Operation::ListMultipartUploads { bucket: b() })
        );
        assert_eq!(
            op("POST", "/photos?delete"),
            Ok(Operation::DeleteObjects { bucket: b() })
        );
        assert!(matches!(
            op("GET", "/photos?list-type=2"),
            Ok(Operation::ListObjectsV2 { .. })
        ));
        assert!(matches!(op("GET", "/photos"), Ok(Operation::ListObjects { .. })));
        assert_eq!(code(op("GET", "/photos?list-type=3")), (400, "InvalidArgument"));
        assert_eq!(code(op("POST", "/photos")), (501, "NotImplemented"));
    }

    #[test]
    fn virtual_hosted_requests_take_the_bucket_from_the_host() {
        let parse_virtual = |target: &str| {
            parse(
                &Method::GET,
                &target.parse().unwrap(),
                &HeaderMap::new(),
                Style::Virtual("photos"),
            )
        };
        assert_eq!(
            parse_virtual("/2025/cat.jpg"),
            Ok(Operation::GetObject {
                bucket: s("photos"),
                key: s("2025/cat.jpg"),
                part_number: None
            })
        );
        assert_eq!(
            parse_virtual("/?location"),
            Ok(Operation::GetBucketLocation { bucket: s("photos") })
        );
        let bad = parse(
            &Method::GET,
            &"/k".parse().unwrap(),
            &HeaderMap::new(),
            Style::Virtual("Bad_Name"),
        );
        assert_eq!(bad.unwrap_err().code, "InvalidBucketName");
    }

    #[test]
    fn keys_are_percent_decoded_once_and_may_hold_slashes() {
        assert_eq!(
            op("PUT", "/photos/a%20b/c%2Fd/%25zz/"),
            Ok(Operation::PutObject {
                bucket: s("photos"),
                key: s("a b/c/d/%zz/")
            })
        );
        assert_eq!(
            op("GET", "/photos/a+b"),
            Ok(Operation::GetObject {
                bucket: s("photos"),
                key: s("a+b"),
                part_number: None
            })
        );
        assert_eq!(
            op("DELETE", "/photos//etc/../passwd"),
            Ok(Operation::DeleteObject {
                bucket: s("photos"),
                key: s("/etc/../passwd")
            })
        );
        assert_eq!(code(op("GET", "/photos/%FF")), (400, "InvalidArgument"));
        assert_eq!(code(op("GET", "/photos/a%0Ab")), (400, "InvalidArgument"));
        assert_eq!(
            code(op("GET", &format!("/photos/{}", "k".repeat(1025)))),
            (400, "KeyTooLongError")
        );
    }

    #[test]
    fn invalid_bucket_names_are_400_with_the_name() {
        let e = op("GET", "/Photos/cat.jpg").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "InvalidBucketName"));
        assert_eq!(e.details, vec![("BucketName", s("Photos"))]);
        assert!(e.message.contains("use `photos`"));
        assert_eq!(code(op("GET", "//cat.jpg")), (400, "InvalidBucketName"));
        // A control character in what the request sent is quoted as `\u{1}`, so the error stays readable XML.
        let control = op("GET", "/a%01b/k").unwrap_err().to_xml("r");
        assert!(
            control.contains("<BucketName>a\\u{1}b</BucketName>") && !control.contains("&#x1;"),
            "{control}"
        );
        let value = op("GET", "/photos?max-keys=%01").unwrap_err();
        assert!(
            value.details.contains(&("ArgumentValue", s("\\u{1}"))),
            "{:?}",
            value.details
        );
    }

    #[test]
    fn multipart_operations_are_chosen_by_upload_id_and_part_number() {
        let (b, k, u) = (|| s("photos"), || s("big.bin"), || s("u-1"));
        assert_eq!(
            op("POST", "/photos/big.bin?uploads"),
            Ok(Operation::CreateMultipartUpload { bucket: b(), key: k() })
        );
        assert_eq!(
            op("PUT", "/photos/big.bin?partNumber=3&uploadId=u-1"),
            Ok(Operation::UploadPart {
                bucket: b(),
                key: k(),
                upload_id: u(),
                part_number: 3
            })
        );
        assert_eq!(
            op("POST", "/photos/big.bin?uploadId=u-1"),
            Ok(Operation::CompleteMultipartUpload {
                bucket: b(),
                key: k(),
                upload_id: u()
            })
        );
        assert_eq!(
            op("DELETE", "/photos/big.bin?uploadId=u-1"),
            Ok(Operation::AbortMultipartUpload {
                bucket: b(),
                key: k(),
                upload_id: u()
            })
        );
        assert_eq!(
            op("GET", "/photos/big.bin?uploadId=u-1"),
            Ok(Operation::ListParts {
                bucket: b(),
                key: k(),
                upload_id: u(),
                max_parts: 1000,
                marker: 0
            })
        );
        assert_eq!(
            op(
                "GET",
                "/photos/big.bin?uploadId=u-1&max-parts=5000&part-number-marker=7"
            ),
            Ok(Operation::ListParts {
                bucket: b(),
                key: k(),
                upload_id: u(),
                max_parts: 1000,
                marker: 7
            })
        );
        assert_eq!(
            code(op("GET", "/photos/big.bin?uploadId=u-1&max-parts=-1")),
            (400, "InvalidArgument")
        );
        assert_eq!(
            code(op("PUT", "/photos/big.bin?uploadId=u-1")),
            (400, "InvalidArgument")
        );
        assert_eq!(
            code(op("PUT", "/photos/big.bin?partNumber=1")),
            (400, "InvalidArgument")
        );
        assert_eq!(
            code(op("PUT", "/photos/big.bin?uploadId=&partNumber=1")),
            (400, "InvalidArgument")
        );
        assert_eq!(
            code(op_with(
                "PUT",
                "/photos/big.bin?partNumber=1&uploadId=u",
                &[("x-amz-copy-source", "/photos/a")]
            )),
            (501, "NotImplemented")
        );
        assert_eq!(code(op("POST", "/photos/big.bin")), (405, "MethodNotAllowed"));
    }

    #[test]
    fn part_numbers_are_1_to_10000() {
        for bad in ["0", "10001", "-1", "x", "", "1.5"] {
            let e = op("PUT", &format!("/photos/k?uploadId=u&partNumber={bad}")).unwrap_err();
            assert_eq!(
                e.message, "Part number must be an integer between 1 and 10000, inclusive",
                "{bad}"
            );
            assert!(e.details.contains(&("ArgumentValue", bad.to_string())));
        }
        assert_eq!(
            op("HEAD", "/photos/k?partNumber=10000"),
            Ok(Operation::HeadObject {
                bucket: s("photos"),
                key: s("k"),
                part_number: Some(10000)
            })
        );
    }

    #[test]
    fn unserved_sub_resources_are_501_naming_them() {
        for (target, names) in [
            ("/photos?acl", "`?acl`"),
            ("/photos/k?tagging", "`?tagging`"),
            ("/photos?versioning", "`?versioning`"),
            ("/photos?versions", "`?versions`"),
            ("/photos?policy", "`?policy`"),
            ("/photos?cors", "`?cors`"),
            ("/photos?lifecycle", "`?lifecycle`"),
            ("/photos/k?retention", "`?retention`"),
            ("/photos/k?legal-hold", "`?legal-hold`"),
            ("/photos/k?attributes", "`?attributes`"),
            ("/photos/k?select&select-type=2", "`?select`"),
            ("/photos/k?versionId=3HL4kqtJ", "versionId"),
        ] {
            let e = op("GET", target).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (501, "NotImplemented"), "{target}");
            assert!(e.message.contains(names), "{target}: {}", e.message);
        }
        assert!(op("GET", "/photos/k?versionId=null").is_ok());
    }

    #[test]
    fn unknown_methods_are_405() {
        for target in ["/", "/photos", "/photos/k"] {
            let e = op("PATCH", target).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (405, "MethodNotAllowed"));
            assert!(e.details.contains(&("Method", s("PATCH"))));
        }
        assert_eq!(code(op("OPTIONS", "/photos/k")), (405, "MethodNotAllowed"));
    }

    #[test]
    fn list_parameters_have_s3_defaults_and_caps() {
        let Ok(Operation::ListObjectsV2 { list, .. }) = op("GET", "/photos?list-type=2") else {
            panic!()
        };
        assert_eq!(
            list,
            ListParams {
                prefix: s(""),
                delimiter: None,
                max_keys: 1000,
                continuation_token: None,
                start_after: None,
                marker: None,
                encoding_url: false,
                fetch_owner: false,
            }
        );
        let Ok(Operation::ListObjectsV2 { list, .. }) = op(
            "GET",
            "/photos?list-type=2&prefix=a%2Fb+c&delimiter=%2F&max-keys=5000&continuation-token=t%2B1\
             &start-after=x&encoding-type=url&fetch-owner=true&marker=ignored",
        ) else {
            panic!()
        };
        assert_eq!(
            list,
            ListParams {
                prefix: s("a/b c"),
                delimiter: Some(s("/")),
                max_keys: 1000,
                continuation_token: Some(s("t+1")),
                start_after: Some(s("x")),
                marker: None,
                encoding_url: true,
                fetch_owner: true,
            }
        );
        let Ok(Operation::ListObjects { list, .. }) = op(
            "GET",
            "/photos?marker=m&max-keys=0&delimiter=&continuation-token=ignored",
        ) else {
            panic!()
        };
        assert_eq!(
            (list.marker, list.max_keys, list.delimiter, list.continuation_token),
            (Some(s("m")), 0, None, None)
        );
        assert!(list.fetch_owner);
        for bad in [
            "max-keys=-1",
            "max-keys=ten",
            "max-keys=99999999999",
            "encoding-type=base64",
            "fetch-owner=yes",
        ] {
            assert_eq!(
                code(op("GET", &format!("/photos?list-type=2&{bad}"))),
                (400, "InvalidArgument"),
                "{bad}"
            );
        }
    }

    #[test]
    fn copies_read_the_source_and_its_conditions() {
        let headers = [
            ("x-amz-copy-source", "/other/a%20dir/k%3Fq.txt"),
            ("x-amz-copy-source-if-match", "\"abc\""),
            ("x-amz-copy-source-if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("x-amz-metadata-directive", "REPLACE"),
        ];
        let Ok(Operation::CopyObject { bucket, key, source }) = op_with("PUT", "/photos/dst", &headers) else {
            panic!()
        };
        assert_eq!((bucket.as_str(), key.as_str()), ("photos", "dst"));
        assert_eq!(
            (source.bucket.as_str(), source.key.as_str()),
            ("other", "a dir/k?q.txt")
        );
        assert_eq!(source.directive, MetadataDirective::Replace);
        assert_eq!(source.conditions.if_match, Some(vec![s("abc")]));
        assert_eq!(
            source.conditions.if_unmodified_since,
            Some("1994-11-06T08:49:37Z".parse().unwrap())
        );

        let Ok(Operation::CopyObject { source, .. }) =
            op_with("PUT", "/photos/dst", &[("x-amz-copy-source", "other/k?versionId=null")])
        else {
            panic!()
        };
        assert_eq!((source.key.as_str(), source.directive), ("k", MetadataDirective::Copy));

        for (value, expect) in [
            ("other/k?versionId=abc", (501, "NotImplemented")),
            ("other", (400, "InvalidArgument")),
            ("/other/", (400, "InvalidArgument")),
            ("Other/k", (400, "InvalidArgument")),
            ("/photos/dst", (400, "InvalidRequest")),
        ] {
            assert_eq!(
                code(op_with("PUT", "/photos/dst", &[("x-amz-copy-source", value)])),
                expect,
                "{value}"
            );
        }
        let directive = [("x-amz-copy-source", "/other/k"), ("x-amz-metadata-directive", "MERGE")];
        assert_eq!(
            code(op_with("PUT", "/photos/dst", &directive)),
            (400, "InvalidArgument")
        );
        let onto_itself = [
            ("x-amz-copy-source", "/photos/dst"),
            ("x-amz-metadata-directive", "REPLACE"),
        ];
        assert!(op_with("PUT", "/photos/dst", &onto_itself).is_ok());
    }

    #[test]
    fn ranges_are_one_byte_range_or_none() {
        assert_eq!(parse_range("bytes=0-99"), Some(ByteRange::FromTo(0, 99)));
        assert_eq!(parse_range("bytes=100-"), Some(ByteRange::From(100)));
        assert_eq!(parse_range("bytes=-500"), Some(ByteRange::Suffix(500)));
        assert_eq!(parse_range(" Bytes = 1 - 2 "), Some(ByteRange::FromTo(1, 2)));
        assert_eq!(
            parse_range("bytes=0-99999999999999999999999"),
            Some(ByteRange::FromTo(0, u64::MAX))
        );
        for ignored in [
            "bytes=0-1,5-6",
            "bytes=5-2",
            "bytes=-",
            "items=0-1",
            "bytes=a-b",
            "bytes=1",
            "",
            "bytes=+1-2",
        ] {
            assert_eq!(parse_range(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn ranges_resolve_against_the_size_or_are_416() {
        assert_eq!(ByteRange::FromTo(0, 99).resolve(1000), Ok((0, 99)));
        assert_eq!(ByteRange::FromTo(900, 5000).resolve(1000), Ok((900, 999)));
        assert_eq!(ByteRange::From(999).resolve(1000), Ok((999, 999)));
        assert_eq!(ByteRange::Suffix(10).resolve(1000), Ok((990, 999)));
        assert_eq!(ByteRange::Suffix(5000).resolve(1000), Ok((0, 999)));
        for (range, size) in [
            (ByteRange::FromTo(1000, 1001), 1000),
            (ByteRange::From(1000), 1000),
            (ByteRange::Suffix(0), 1000),
            (ByteRange::FromTo(0, 0), 0),
            (ByteRange::Suffix(1), 0),
        ] {
            let e = range.resolve(size).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (416, "InvalidRange"));
            assert_eq!(
                e.details,
                vec![
                    ("RangeRequested", range.to_string()),
                    ("ActualObjectSize", size.to_string())
                ]
            );
        }
        assert_eq!(ByteRange::Suffix(0).to_string(), "bytes=-0");
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn http_dates_are_read_in_all_three_forms() {
        let expected = at("1994-11-06T08:49:37Z");
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(expected));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(expected));
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(expected));
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("2025-01-02T03:04:05Z"), None);
        assert_eq!(http_date(expected), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn conditional_headers_are_read_with_or_without_quotes() {
        let c = Conditions::from_headers(&header_map(&[
            ("if-match", "\"a\", b"),
            ("if-match", "W/\"c\""),
            ("if-none-match", "*"),
            ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("if-unmodified-since", "not a date"),
        ]));
        assert_eq!(c.if_match, Some(vec![s("a"), s("b"), s("c")]));
        assert_eq!(c.if_none_match, Some(vec![s("*")]));
        assert_eq!(c.if_modified_since, Some(at("1994-11-06T08:49:37Z")));
        assert_eq!(c.if_unmodified_since, None);
        assert!(Conditions::from_headers(&header_map(&[("if-match", " , ")])).is_empty());
    }

    #[test]
    fn reads_follow_rfc_7232_precedence() {
        let modified = at("2025-01-02T03:04:05.600Z");
        let (before, same, after) = (
            at("2025-01-02T03:04:04Z"),
            at("2025-01-02T03:04:05Z"),
            at("2025-01-02T03:04:06Z"),
        );
        let tags = |t: &[&str]| Some(t.iter().map(|t| s(t)).collect::<Vec<_>>());
        let check = |c: Conditions| c.for_read("\"abc\"", modified);
        let failed = |r: Result<(), Outcome>| match r {
            Err(Outcome::PreconditionFailed(e)) => {
                assert_eq!((e.status.as_u16(), e.code), (412, "PreconditionFailed"));
                e.details[0].1.clone()
            }
            other => panic!("expected 412, got {other:?}"),
        };

        assert_eq!(check(Conditions::default()), Ok(()));
        assert_eq!(
            check(Conditions {
                if_match: tags(&["abc"]),
                ..Default::default()
            }),
            Ok(())
        );
        assert_eq!(
            check(Conditions {
                if_match: tags(&["*"]),
                ..Default::default()
            }),
            Ok(())
        );
        assert_eq!(
            failed(check(Conditions {
                if_match: tags(&["x", "y"]),
                ..Default::default()
            })),
            "If-Match"
        );
        // A true If-Match overrides a false If-Unmodified-Since.
        assert_eq!(
            check(Conditions {
                if_match: tags(&["abc"]),
                if_unmodified_since: Some(before),
                ..Default::default()
            }),
            Ok(())
        );
        assert_eq!(
            failed(check(Conditions {
                if_unmodified_since: Some(before),
                ..Default::default()
            })),
            "If-Unmodified-Since"
        );
        // Same second: not modified since, so both date conditions read it as unchanged.
        assert_eq!(
            check(Conditions {
                if_unmodified_since: Some(same),
                ..Default::default()
            }),
            Ok(())
        );
        assert_eq!(
            check(Conditions {
                if_modified_since: Some(same),
                ..Default::default()
            }),
            Err(Outcome::NotModified)
        );
        assert_eq!(
            check(Conditions {
                if_modified_since: Some(after),
                ..Default::default()
            }),
            Err(Outcome::NotModified)
        );
        assert_eq!(
            check(Conditions {
                if_modified_since: Some(before),
                ..Default::default()
            }),
            Ok(())
        );
        assert_eq!(
            check(Conditions {
                if_none_match: tags(&["abc"]),
                ..Default::default()
            }),
            Err(Outcome::NotModified)
        );
        // A false If-None-Match (no match) overrides If-Modified-Since.
        assert_eq!(
            check(Conditions {
                if_none_match: tags(&["zzz"]),
                if_modified_since: Some(after),
                ..Default::default()
            }),
            Ok(())
        );
        // If-Match is checked before If-None-Match.
        assert_eq!(
            failed(check(Conditions {
                if_match: tags(&["zzz"]),
                if_none_match: tags(&["abc"]),
                ..Default::default()
            })),
            "If-Match"
        );
    }

    #[test]
    fn copy_source_conditions_fail_with_412_naming_the_copy_header() {
        let c = Conditions::copy_source(&header_map(&[("x-amz-copy-source-if-none-match", "abc")]));
        let e = c.for_copy("abc", at("2025-01-01T00:00:00Z")).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.details[0].1.as_str()),
            (412, "x-amz-copy-source-if-none-match")
        );
        assert!(Conditions::from_headers(&header_map(&[("x-amz-copy-source-if-none-match", "abc")])).is_empty());
    }

    #[test]
    fn conditional_writes_check_the_current_object() {
        let none_match = Conditions::from_headers(&header_map(&[("if-none-match", "*")]));
        assert_eq!(none_match.for_write(None), Ok(()));
        assert_eq!(none_match.for_write(Some("abc")).unwrap_err().status.as_u16(), 412);
        let if_match = Conditions::from_headers(&header_map(&[("if-match", "\"abc\"")]));
        assert_eq!(if_match.for_write(Some("\"abc\"")), Ok(()));
        assert_eq!(if_match.for_write(Some("abd")).unwrap_err().code, "PreconditionFailed");
        let missing = if_match.for_write(None).unwrap_err();
        assert_eq!((missing.status.as_u16(), missing.code), (404, "NoSuchKey"));
        let etag_none_match = Conditions::from_headers(&header_map(&[("if-none-match", "abc")]));
        assert_eq!(etag_none_match.for_write(None).unwrap_err().code, "NotImplemented");
    }

    #[test]
    fn user_metadata_is_the_x_amz_meta_headers_within_2_kib() {
        let headers = header_map(&[
            ("x-amz-meta-color", "blue"),
            ("content-type", "text/plain"),
            ("x-amz-meta-tag", "a"),
            ("x-amz-meta-tag", "b"),
            ("x-amz-meta-note", "ünïcode"),
        ]);
        assert_eq!(
            user_metadata(&headers),
            Ok(vec![
                (s("color"), s("blue")),
                (s("tag"), s("a,b")),
                (s("note"), s("ünïcode"))
            ])
        );
        let fits = "v".repeat(MAX_METADATA - 1);
        assert!(user_metadata(&header_map(&[("x-amz-meta-k", &fits)])).is_ok());
        let too_big = "v".repeat(MAX_METADATA);
        let e = user_metadata(&header_map(&[("x-amz-meta-k", &too_big)])).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "MetadataTooLarge"));
        let mut latin1 = HeaderMap::new();
        latin1.insert("x-amz-meta-k", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        assert_eq!(user_metadata(&latin1).unwrap_err().code, "InvalidArgument");
    }

    #[test]
    fn content_md5_is_16_bytes_of_base64() {
        assert_eq!(content_md5(&HeaderMap::new()), Ok(None));
        let empty = content_md5(&header_map(&[("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==")]))
            .unwrap()
            .unwrap();
        assert_eq!(empty[..4], [0xd4, 0x1d, 0x8c, 0xd9]);
        for bad in ["nope", "AAAA", "1B2M2Y8AsgTpgAmY7PhCfg"] {
            let e = content_md5(&header_map(&[("content-md5", bad)])).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (400, "InvalidDigest"), "{bad}");
        }
    }
}
