//! The XML bodies S3 answers with, and the two it reads: `<Delete>`
//! (DeleteObjects) and `<CompleteMultipartUpload>`.
//!
//! Answers are small, flat documents, so they are written straight into a
//! `String`; every text goes through [`escape`]. Requests are read with
//! quick-xml into a small tree, bounded in depth and width, with or without
//! S3's namespace; a DTD is refused outright, so no entity (internal or
//! external) is ever expanded.

use std::borrow::Cow;
use std::fmt::Write;

use http::StatusCode;
use jiff::Timestamp;
use quick_xml::Reader;
use quick_xml::events::Event;

use crate::{NAMESPACE, S3Error};

const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// The most keys one DeleteObjects request names, as in S3.
pub const MAX_DELETE: usize = 1000;

/// The most parts CompleteMultipartUpload lists, as in S3.
pub const MAX_COMPLETE: usize = 10_000;

/// Appends `<name>text</name>`, with `text` escaped.
pub fn element(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    out.push_str(&escape(text));
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// `text` as XML character data: `&`, `<`, `>`, `"` and `'` as entities;
/// control characters other than tab and line feed, and U+FFFE/U+FFFF, as
/// `&#xN;` references.
///
/// Tab and line feed stay literal: XML 1.0 allows them and parsers keep them
/// (S3 sends `<StringToSign>` with its line feeds). A carriage return becomes
/// `&#xD;`, which parsers keep but would otherwise turn into a line feed.
/// Nothing is refused here. The other control characters are not legal in
/// XML 1.0 even as references, so a strict parser may reject a document
/// holding one; weft keeps them out of keys ([`crate::names::check_key`]) and
/// clients that expect them ask for `encoding-type=url`.
pub fn escape(text: &str) -> Cow<'_, str> {
    let needs = |c: char| matches!(c, '&' | '<' | '>' | '"' | '\'') || is_control(c);
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if is_control(c) => {
                let _ = write!(out, "&#x{:X};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` with control characters written as `\u{N}`, for error messages
/// that quote what a request sent: a raw control character would reach the
/// `<Error>` document as a reference many XML parsers refuse, and the client
/// could not read why its request failed.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

fn is_control(c: char) -> bool {
    (c < ' ' && c != '\t' && c != '\n') || c == '\u{7f}' || c == '\u{fffe}' || c == '\u{ffff}'
}

/// A key, prefix or marker as `encoding-type=url` answers it.
///
/// Every UTF-8 byte outside RFC 3986's unreserved set (`A-Z a-z 0-9 - . _ ~`)
/// and `/` is `%XX`; a space is `%20`, not `+`. AWS documents
/// `test_file(3).png` as `test_file%283%29.png` (EncodingType in the S3 API
/// reference), and ceph's s3-tests, which pin real S3's answers, expect
/// `foo+1/` as `foo%2B1/`, `quux ab/` as `quux%20ab/` and `/` literal
/// (`test_bucket_listv2_encoding_basic`). Older reports have S3 sending `+`
/// for a space, which is why botocore decodes with `unquote_plus`
/// (boto/botocore#264); `%20` decodes to a space under `unquote_plus` and
/// plain percent-decoding alike, so it is right for either kind of client.
fn url_encode(text: &str) -> Cow<'_, str> {
    let keep = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/');
    if text.bytes().all(keep) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    Cow::Owned(out)
}

/// A timestamp as S3 writes it in XML, to the second like `Last-Modified`:
/// `2025-01-02T03:04:05.000Z`.
fn timestamp(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string()
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// The declaration and the root's start tag, with S3's namespace.
fn open(root: &str) -> String {
    format!("{DECLARATION}<{root} xmlns=\"{NAMESPACE}\">")
}

fn close(mut out: String, root: &str) -> String {
    let _ = write!(out, "</{root}>");
    out
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSummary {
    pub key: String,
    pub last_modified: Timestamp,
    /// Without quotes; rendered quoted.
    pub etag: String,
    pub size: u64,
    /// `STANDARD`: weft has one storage class.
    pub storage_class: &'static str,
}

impl ObjectSummary {
    /// A summary in the `STANDARD` storage class.
    pub fn new(key: impl Into<String>, last_modified: Timestamp, etag: impl Into<String>, size: u64) -> ObjectSummary {
        ObjectSummary {
            key: key.into(),
            last_modified,
            etag: etag.into(),
            size,
            storage_class: "STANDARD",
        }
    }
}

/// One page of ListObjectsV2 or ListObjects: what was asked (echoed back)
/// and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub bucket: String,
    pub prefix: String,
    pub delimiter: Option<String>,
    pub max_keys: u32,
    /// Version 2.
    pub start_after: Option<String>,
    /// Version 2: the token the request sent.
    pub continuation_token: Option<String>,
    /// Version 2: where the next page starts, when `truncated`.
    pub next_continuation_token: Option<String>,
    /// Version 1: the marker the request sent.
    pub marker: Option<String>,
    /// Version 1: where the next page starts. S3 sends it only with a
    /// delimiter (without one, clients continue after the last key).
    pub next_marker: Option<String>,
    pub encoding_url: bool,
    pub truncated: bool,
    pub contents: Vec<ObjectSummary>,
    pub common_prefixes: Vec<String>,
    /// The owner's ID, rendered in every `<Contents>` when `Some`
    /// (`fetch-owner=true` in version 2; version 1 always lists it).
    pub owner: Option<String>,
}

impl ListPage {
    /// `text` percent-encoded when the request asked for `encoding-type=url`.
    fn encoded<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.encoding_url {
            url_encode(text)
        } else {
            Cow::Borrowed(text)
        }
    }

    fn push_entries(&self, out: &mut String) {
        for object in &self.contents {
            out.push_str("<Contents>");
            element(out, "Key", &self.encoded(&object.key));
            element(out, "LastModified", &timestamp(object.last_modified));
            element(out, "ETag", &quoted(&object.etag));
            element(out, "Size", &object.size.to_string());
            if let Some(owner) = &self.owner {
                push_owner(out, owner);
            }
            element(out, "StorageClass", object.storage_class);
            out.push_str("</Contents>");
        }
        for prefix in &self.common_prefixes {
            out.push_str("<CommonPrefixes>");
            element(out, "Prefix", &self.encoded(prefix));
            out.push_str("</CommonPrefixes>");
        }
    }
}

fn push_owner(out: &mut String, id: &str) {
    out.push_str("<Owner>");
    element(out, "ID", id);
    element(out, "DisplayName", id);
    out.push_str("</Owner>");
}

/// ListBuckets: `<ListAllMyBucketsResult>` with the owner and each bucket's
/// name and creation time.
pub fn list_buckets(buckets: &[(String, Timestamp)], owner_id: &str) -> String {
    let mut out = open("ListAllMyBucketsResult");
    push_owner(&mut out, owner_id);
    out.push_str("<Buckets>");
    for (name, created) in buckets {
        out.push_str("<Bucket>");
        element(&mut out, "Name", name);
        element(&mut out, "CreationDate", &timestamp(*created));
        out.push_str("</Bucket>");
    }
    out.push_str("</Buckets>");
    close(out, "ListAllMyBucketsResult")
}

/// ListObjectsV2: `<ListBucketResult>` with `KeyCount` (objects plus common
/// prefixes) and continuation tokens. With `encoding_url`, `Key`, `Prefix`,
/// `Delimiter`, `StartAfter` and each common prefix are percent-encoded;
/// tokens are opaque and only escaped.
pub fn list_objects_v2(page: &ListPage) -> String {
    let mut out = open("ListBucketResult");
    element(&mut out, "Name", &page.bucket);
    element(&mut out, "Prefix", &page.encoded(&page.prefix));
    if let Some(delimiter) = &page.delimiter {
        element(&mut out, "Delimiter", &page.encoded(delimiter));
    }
    element(&mut out, "MaxKeys", &page.max_keys.to_string());
    if page.encoding_url {
        element(&mut out, "EncodingType", "url");
    }
    element(
        &mut out,
        "KeyCount",
        &(page.contents.len() + page.common_prefixes.len()).to_string(),
    );
    if let Some(token) = &page.continuation_token {
        element(&mut out, "ContinuationToken", token);
    }
    if let Some(token) = &page.next_continuation_token {
        element(&mut out, "NextContinuationToken", token);
    }
    if let Some(start_after) = &page.start_after {
        element(&mut out, "StartAfter", &page.encoded(start_after));
    }
    element(&mut out, "IsTruncated", bool_text(page.truncated));
    page.push_entries(&mut out);
    close(out, "ListBucketResult")
}

/// ListObjects (version 1): `<ListBucketResult>` with `Marker` (always,
/// empty when none was sent) and `NextMarker` when given. With
/// `encoding_url`, `Key`, `Prefix`, `Delimiter`, `Marker`, `NextMarker` and
/// each common prefix are percent-encoded.
pub fn list_objects_v1(page: &ListPage) -> String {
    let mut out = open("ListBucketResult");
    element(&mut out, "Name", &page.bucket);
    element(&mut out, "Prefix", &page.encoded(&page.prefix));
    element(&mut out, "Marker", &page.encoded(page.marker.as_deref().unwrap_or("")));
    if let Some(next) = &page.next_marker {
        element(&mut out, "NextMarker", &page.encoded(next));
    }
    element(&mut out, "MaxKeys", &page.max_keys.to_string());
    if let Some(delimiter) = &page.delimiter {
        element(&mut out, "Delimiter", &page.encoded(delimiter));
    }
    if page.encoding_url {
        element(&mut out, "EncodingType", "url");
    }
    element(&mut out, "IsTruncated", bool_text(page.truncated));
    page.push_entries(&mut out);
    close(out, "ListBucketResult")
}

fn bool_text(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

/// CopyObject's `<CopyObjectResult>`.
pub fn copy_object_result(etag: &str, last_modified: Timestamp) -> String {
    let mut out = open("CopyObjectResult");
    element(&mut out, "ETag", &quoted(etag));
    element(&mut out, "LastModified", &timestamp(last_modified));
    close(out, "CopyObjectResult")
}

/// CreateMultipartUpload's `<InitiateMultipartUploadResult>`.
pub fn initiate_multipart_upload(bucket: &str, key: &str, upload_id: &str) -> String {
    let mut out = open("InitiateMultipartUploadResult");
    element(&mut out, "Bucket", bucket);
    element(&mut out, "Key", key);
    element(&mut out, "UploadId", upload_id);
    close(out, "InitiateMultipartUploadResult")
}

/// `<CompleteMultipartUploadResult>`; `location` is the new object's URL.
pub fn complete_multipart_upload(location: &str, bucket: &str, key: &str, etag: &str) -> String {
    let mut out = open("CompleteMultipartUploadResult");
    element(&mut out, "Location", location);
    element(&mut out, "Bucket", bucket);
    element(&mut out, "Key", key);
    element(&mut out, "ETag", &quoted(etag));
    close(out, "CompleteMultipartUploadResult")
}

/// One uploaded part, as ListParts shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSummary {
    pub number: u32,
    pub last_modified: Timestamp,
    /// Without quotes; rendered quoted.
    pub etag: String,
    pub size: u64,
}

/// ListParts' `<ListPartsResult>`: the parts after `marker`, with
/// `next_marker` the last part number listed.
#[allow(clippy::too_many_arguments)] // One argument per element of S3's document.
pub fn list_parts(
    bucket: &str,
    key: &str,
    upload_id: &str,
    parts: &[PartSummary],
    marker: u32,
    next_marker: u32,
    max_parts: u32,
    truncated: bool,
) -> String {
    let mut out = open("ListPartsResult");
    element(&mut out, "Bucket", bucket);
    element(&mut out, "Key", key);
    element(&mut out, "UploadId", upload_id);
    element(&mut out, "StorageClass", "STANDARD");
    element(&mut out, "PartNumberMarker", &marker.to_string());
    element(&mut out, "NextPartNumberMarker", &next_marker.to_string());
    element(&mut out, "MaxParts", &max_parts.to_string());
    element(&mut out, "IsTruncated", bool_text(truncated));
    for part in parts {
        out.push_str("<Part>");
        element(&mut out, "PartNumber", &part.number.to_string());
        element(&mut out, "LastModified", &timestamp(part.last_modified));
        element(&mut out, "ETag", &quoted(&part.etag));
        element(&mut out, "Size", &part.size.to_string());
        out.push_str("</Part>");
    }
    close(out, "ListPartsResult")
}

/// ListMultipartUploads' `<ListMultipartUploadsResult>`, one page holding
/// every `(key, upload ID, initiated)` given: weft does not page uploads, so
/// `IsTruncated` is false and `MaxUploads` is 1000.
pub fn list_multipart_uploads(bucket: &str, uploads: &[(String, String, Timestamp)]) -> String {
    let mut out = open("ListMultipartUploadsResult");
    element(&mut out, "Bucket", bucket);
    element(&mut out, "KeyMarker", "");
    element(&mut out, "UploadIdMarker", "");
    element(&mut out, "MaxUploads", "1000");
    element(&mut out, "IsTruncated", "false");
    for (key, upload_id, initiated) in uploads {
        out.push_str("<Upload>");
        element(&mut out, "Key", key);
        element(&mut out, "UploadId", upload_id);
        element(&mut out, "StorageClass", "STANDARD");
        element(&mut out, "Initiated", &timestamp(*initiated));
        out.push_str("</Upload>");
    }
    close(out, "ListMultipartUploadsResult")
}

/// DeleteObjects' `<DeleteResult>`: a `<Deleted>` per deleted key unless
/// `quiet`, and an `<Error>` per `(key, code, message)` always.
pub fn delete_result(deleted: &[String], errors: &[(String, &str, String)], quiet: bool) -> String {
    let mut out = open("DeleteResult");
    if !quiet {
        for key in deleted {
            out.push_str("<Deleted>");
            element(&mut out, "Key", key);
            out.push_str("</Deleted>");
        }
    }
    for (key, code, message) in errors {
        out.push_str("<Error>");
        element(&mut out, "Key", key);
        element(&mut out, "Code", code);
        element(&mut out, "Message", message);
        out.push_str("</Error>");
    }
    close(out, "DeleteResult")
}

/// GetBucketLocation's `<LocationConstraint>`. S3 answers an empty one for
/// `us-east-1`, and clients read empty as `us-east-1`, so that is kept.
pub fn location_constraint(region: &str) -> String {
    let region = if region == "us-east-1" { "" } else { region };
    let mut out = open("LocationConstraint");
    out.push_str(&escape(region));
    close(out, "LocationConstraint")
}

/// A DeleteObjects request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    /// `<Quiet>true</Quiet>`: answer only the failures.
    pub quiet: bool,
    /// The keys, exactly as sent (not trimmed, not yet checked with
    /// [`crate::names::check_key`], which the caller does per key so one bad
    /// key is one `<Error>`).
    pub keys: Vec<String>,
}

/// Reads a `<Delete>` document: up to [`MAX_DELETE`] `<Object><Key>`s and an
/// optional `<Quiet>`.
///
/// `<VersionId>` is `501 NotImplemented` (weft keeps one version), as are the
/// conditional `<ETag>`, `<LastModifiedTime>` and `<Size>`, which weft would
/// otherwise ignore and delete unconditionally. Anything else malformed is
/// `400 MalformedXML` saying what.
pub fn parse_delete(body: &[u8]) -> Result<DeleteRequest, S3Error> {
    let too_many = || {
        S3Error::malformed_xml(format!(
            "<Delete> names more than {MAX_DELETE} objects; S3 deletes at most {MAX_DELETE} per request, so \
             split it"
        ))
    };
    // One more than the objects for <Quiet>.
    let root = read_tree(body, "Delete", MAX_DELETE + 1, &too_many)?;
    let mut request = DeleteRequest {
        quiet: false,
        keys: Vec::new(),
    };
    for child in &root.children {
        match child.name.as_str() {
            "Quiet" => {
                request.quiet = match child.leaf()?.trim() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(S3Error::malformed_xml(format!(
                            "<Quiet> holds `{}`; it is `true` or `false`",
                            printable(other)
                        )));
                    }
                }
            }
            "Object" => request.keys.push(object_key(child)?),
            other => {
                return Err(S3Error::malformed_xml(format!(
                    "<Delete> holds <{other}>; it holds <Object> elements and an optional <Quiet>"
                )));
            }
        }
    }
    if request.keys.len() > MAX_DELETE {
        return Err(too_many());
    }
    if request.keys.is_empty() {
        return Err(S3Error::malformed_xml(
            "<Delete> names no objects; add <Object><Key>KEY</Key></Object> for each key to delete",
        ));
    }
    Ok(request)
}

fn object_key(object: &Node) -> Result<String, S3Error> {
    object.container()?;
    let mut key = None;
    for child in &object.children {
        match child.name.as_str() {
            "Key" if key.is_none() => key = Some(child.leaf()?.to_string()),
            "Key" => {
                return Err(S3Error::malformed_xml(
                    "an <Object> holds two <Key>s; give each object its own",
                ));
            }
            "VersionId" => {
                return Err(S3Error::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "NotImplemented",
                    "deleting object versions (<VersionId> in <Delete>) is not implemented by weft; weft keeps \
                     one version of each object, so leave <VersionId> out",
                ));
            }
            "ETag" | "LastModifiedTime" | "Size" => {
                return Err(S3Error::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "NotImplemented",
                    format!(
                        "conditional deletes (<{}> in <Delete>) are not implemented by weft; leave it out, or \
                         delete the object alone with DeleteObject",
                        child.name
                    ),
                ));
            }
            other => {
                return Err(S3Error::malformed_xml(format!(
                    "an <Object> holds <{other}>; it holds one <Key>"
                )));
            }
        }
    }
    key.ok_or_else(|| S3Error::malformed_xml("an <Object> has no <Key>; name the key to delete"))
}

/// Reads a `<CompleteMultipartUpload>` document into `(part number, ETag
/// without quotes)`s, in ascending order of part number.
///
/// Checksum elements are ignored (weft checks parts when they arrive). Parts
/// out of order (or repeated) are `400 InvalidPartOrder`; a part number
/// outside 1..=10000 is `InvalidArgument`; anything else malformed,
/// including no parts at all or more than [`MAX_COMPLETE`], is
/// `400 MalformedXML`.
pub fn parse_complete(body: &[u8]) -> Result<Vec<(u32, String)>, S3Error> {
    let too_many = || {
        S3Error::malformed_xml(format!(
            "<CompleteMultipartUpload> lists more than {MAX_COMPLETE} parts; an upload has at most {MAX_COMPLETE}"
        ))
    };
    let root = read_tree(body, "CompleteMultipartUpload", MAX_COMPLETE, &too_many)?;
    let mut parts: Vec<(u32, String)> = Vec::with_capacity(root.children.len());
    for part in &root.children {
        if part.name != "Part" {
            return Err(S3Error::malformed_xml(format!(
                "<CompleteMultipartUpload> holds <{}>; it holds only <Part> elements",
                part.name
            )));
        }
        let (number, etag) = part_of(part)?;
        if let Some(&(previous, _)) = parts.last()
            && number <= previous
        {
            return Err(S3Error::new(
                StatusCode::BAD_REQUEST,
                "InvalidPartOrder",
                format!(
                    "part {number} is listed after part {previous}; list each part once, in ascending order of \
                     part number"
                ),
            ));
        }
        parts.push((number, etag));
    }
    if parts.is_empty() {
        return Err(S3Error::malformed_xml(
            "<CompleteMultipartUpload> must contain at least one part; list each uploaded part as \
             <Part><PartNumber>N</PartNumber><ETag>ETAG</ETag></Part>",
        ));
    }
    Ok(parts)
}

fn part_of(part: &Node) -> Result<(u32, String), S3Error> {
    part.container()?;
    let (mut number, mut etag) = (None, None);
    for child in &part.children {
        match child.name.as_str() {
            "PartNumber" if number.is_none() => {
                let text = child.leaf()?.trim();
                let n: u32 = text.parse().map_err(|_| {
                    S3Error::malformed_xml(format!(
                        "<PartNumber> holds `{}`, which is not a whole number",
                        printable(text)
                    ))
                })?;
                if !(1..=10_000).contains(&n) {
                    return Err(S3Error::invalid_argument(
                        "Part number must be an integer between 1 and 10000, inclusive",
                    )
                    .with("ArgumentName", "PartNumber")
                    .with("ArgumentValue", printable(text)));
                }
                number = Some(n);
            }
            "ETag" if etag.is_none() => {
                let text = child.leaf()?.trim();
                let bare = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
                etag = Some(bare.to_string());
            }
            "PartNumber" | "ETag" => {
                return Err(S3Error::malformed_xml(format!(
                    "a <Part> holds two <{}>s; give each part one",
                    child.name
                )));
            }
            name if name.starts_with("Checksum") => {}
            other => {
                return Err(S3Error::malformed_xml(format!(
                    "a <Part> holds <{other}>; it holds <PartNumber>, <ETag> and optional checksums"
                )));
            }
        }
    }
    match (number, etag) {
        (Some(number), Some(etag)) if !etag.is_empty() => Ok((number, etag)),
        (Some(number), _) => Err(S3Error::malformed_xml(format!(
            "part {number} has no <ETag>; send the ETag UploadPart returned for it"
        ))),
        (None, _) => Err(S3Error::malformed_xml("a <Part> has no <PartNumber>; number each part")),
    }
}

/// An element read from a request: its local name (namespace dropped), its
/// text and its children.
#[derive(Debug, Default)]
struct Node {
    name: String,
    text: String,
    children: Vec<Node>,
}

impl Node {
    /// The text of an element that must hold only text.
    fn leaf(&self) -> Result<&str, S3Error> {
        match self.children.first() {
            None => Ok(&self.text),
            Some(child) => Err(S3Error::malformed_xml(format!(
                "<{}> holds <{}>; it holds only text",
                self.name, child.name
            ))),
        }
    }

    /// Checks that an element meant to hold elements holds no text but
    /// whitespace.
    fn container(&self) -> Result<(), S3Error> {
        if self.text.trim().is_empty() {
            Ok(())
        } else {
            Err(S3Error::malformed_xml(format!(
                "<{}> holds text; it holds only elements",
                self.name
            )))
        }
    }
}

/// No request document S3 takes nests deeper than this.
const MAX_DEPTH: usize = 4;

/// Reads `body` into a tree whose root must be `root`, with at most
/// `max_children` children under it (`too_many` otherwise, as soon as the
/// limit is passed).
fn read_tree(body: &[u8], root: &str, max_children: usize, too_many: &dyn Fn() -> S3Error) -> Result<Node, S3Error> {
    // Names, entities and quick-xml's errors quote the body, so they go through `printable`.
    let malformed = |what: String| S3Error::malformed_xml(format!("{}; send a <{root}> document", printable(&what)));
    let mut reader = Reader::from_reader(body);
    reader.config_mut().expand_empty_elements = true;
    let mut open: Vec<Node> = Vec::new();
    let mut done: Option<Node> = None;
    loop {
        let event = reader.read_event().map_err(|e| {
            malformed(format!(
                "the body is not well-formed XML at byte {}: {e}",
                reader.error_position()
            ))
        })?;
        match event {
            Event::Start(start) => {
                // Shown in messages, so made printable; a name with a control character matches nothing.
                let name = printable(&String::from_utf8_lossy(start.local_name().as_ref())).into_owned();
                if done.is_some() {
                    return Err(malformed(format!("<{name}> follows the root element")));
                }
                if open.is_empty() && name != root {
                    return Err(malformed(format!("the root element is <{name}>")));
                }
                if open.len() >= MAX_DEPTH {
                    return Err(malformed(format!(
                        "<{name}> is nested deeper than {MAX_DEPTH} elements"
                    )));
                }
                open.push(Node {
                    name,
                    ..Node::default()
                });
            }
            Event::End(_) => {
                let node = open
                    .pop()
                    .ok_or_else(|| malformed("an end tag has no start".to_string()))?;
                match open.last_mut() {
                    Some(parent) => {
                        parent.children.push(node);
                        if open.len() == 1 && open[0].children.len() > max_children {
                            return Err(too_many());
                        }
                    }
                    None => done = Some(node),
                }
            }
            Event::Text(text) => {
                let text = text
                    .xml10_content()
                    .map_err(|e| malformed(format!("the body is not UTF-8: {e}")))?;
                push_text(&mut open, &text, &malformed)?;
            }
            Event::CData(data) => {
                let text = data
                    .decode()
                    .map_err(|e| malformed(format!("the body is not UTF-8: {e}")))?;
                push_text(&mut open, &text, &malformed)?;
            }
            Event::GeneralRef(reference) => {
                let name = reference
                    .decode()
                    .map_err(|e| malformed(format!("the body is not UTF-8: {e}")))?;
                let c = match name.as_ref() {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "apos" => '\'',
                    "quot" => '"',
                    _ => match reference.resolve_char_ref() {
                        Ok(Some(c)) => c,
                        _ => {
                            return Err(malformed(format!(
                                "`&{name};` is not an XML character or predefined entity"
                            )));
                        }
                    },
                };
                push_text(&mut open, c.encode_utf8(&mut [0; 4]), &malformed)?;
            }
            Event::DocType(_) => {
                return Err(malformed(
                    "the body has a DOCTYPE, which weft refuses because it can declare entities; remove it".to_string(),
                ));
            }
            // With `expand_empty_elements`, `<a/>` arrives as Start and End.
            Event::Empty(_) | Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(unclosed) = open.last() {
        return Err(malformed(format!("the body ends inside <{}>", unclosed.name)));
    }
    let node = done.ok_or_else(|| malformed("the body holds no element".to_string()))?;
    node.container()?;
    Ok(node)
}

fn push_text(open: &mut [Node], text: &str, malformed: &dyn Fn(String) -> S3Error) -> Result<(), S3Error> {
    match open.last_mut() {
        Some(node) => {
            node.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(malformed("the body has text outside the root element".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn page() -> ListPage {
        ListPage {
            bucket: "photos".into(),
            prefix: String::new(),
            delimiter: None,
            max_keys: 1000,
            start_after: None,
            continuation_token: None,
            next_continuation_token: None,
            marker: None,
            next_marker: None,
            encoding_url: false,
            truncated: false,
            contents: Vec::new(),
            common_prefixes: Vec::new(),
            owner: None,
        }
    }

    /// The text of every `<name>` in `doc`, in order, read back with
    /// quick-xml as a client would.
    fn texts(doc: &str, name: &str) -> Vec<String> {
        let mut reader = Reader::from_str(doc);
        let (mut inside, mut found, mut current) = (0, Vec::new(), String::new());
        loop {
            match reader.read_event().unwrap() {
                Event::Start(e) if e.local_name().as_ref() == name.as_bytes() => {
                    inside += 1;
                    current.clear();
                }
                Event::End(e) if e.local_name().as_ref() == name.as_bytes() => {
                    inside -= 1;
                    found.push(current.clone());
                }
                Event::Text(t) if inside > 0 => current.push_str(&t.xml10_content().unwrap()),
                Event::GeneralRef(r) if inside > 0 => {
                    let c = match r.decode().unwrap().as_ref() {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        _ => r.resolve_char_ref().unwrap().unwrap(),
                    };
                    current.push(c);
                }
                Event::Eof => return found,
                _ => {}
            }
        }
    }

    #[test]
    fn escape_encodes_markup_and_control_characters() {
        assert!(matches!(escape("plain text/ü"), Cow::Borrowed(_)));
        assert_eq!(escape(r#"a&b<c>d"e'f"#), "a&amp;b&lt;c&gt;d&quot;e&apos;f");
        assert_eq!(
            escape("tab\tlf\ncr\rnul\0del\u{7f}\u{fffe}"),
            "tab\tlf\ncr&#xD;nul&#x0;del&#x7F;&#xFFFE;"
        );
        assert_eq!(printable("a\u{1}b\tc"), "a\\u{1}b\\u{9}c");
        assert!(matches!(printable("fine"), Cow::Borrowed(_)));
        let mut out = String::new();
        element(&mut out, "Key", "<&>");
        assert_eq!(out, "<Key>&lt;&amp;&gt;</Key>");
    }

    #[test]
    fn url_encoding_matches_s3_tests_expectations() {
        assert_eq!(url_encode("foo+1/"), "foo%2B1/");
        assert_eq!(url_encode("quux ab/"), "quux%20ab/");
        assert_eq!(url_encode("test_file(3).png"), "test_file%283%29.png");
        assert_eq!(url_encode("한글/x~y"), "%ED%95%9C%EA%B8%80/x~y");
        assert_eq!(url_encode("\u{1}"), "%01");
    }

    #[test]
    fn list_v2_renders_the_page_with_namespace_and_key_count() {
        let mut p = page();
        p.prefix = "a/".into();
        p.delimiter = Some("/".into());
        p.max_keys = 2;
        p.continuation_token = Some("t<1>".into());
        p.next_continuation_token = Some("t2".into());
        p.start_after = Some("a/0".into());
        p.truncated = true;
        p.contents = vec![ObjectSummary::new(
            r#"a/x&<>"'.txt"#,
            at("2025-01-02T03:04:05.678Z"),
            "abc",
            5,
        )];
        p.common_prefixes = vec!["a/b/".into()];
        let doc = list_objects_v2(&p);
        assert!(doc.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        ));
        assert!(doc.contains("<Key>a/x&amp;&lt;&gt;&quot;&apos;.txt</Key>"), "{doc}");
        assert!(doc.contains("<LastModified>2025-01-02T03:04:05.000Z</LastModified>"));
        assert!(doc.contains("<ETag>&quot;abc&quot;</ETag><Size>5</Size><StorageClass>STANDARD</StorageClass>"));
        assert!(!doc.contains("<Owner>"));
        assert_eq!(texts(&doc, "KeyCount"), ["2"]);
        assert_eq!(texts(&doc, "Key"), [r#"a/x&<>"'.txt"#]);
        assert_eq!(texts(&doc, "ContinuationToken"), ["t<1>"]);
        assert_eq!(texts(&doc, "NextContinuationToken"), ["t2"]);
        assert_eq!(texts(&doc, "StartAfter"), ["a/0"]);
        assert_eq!(texts(&doc, "IsTruncated"), ["true"]);
        assert_eq!(texts(&doc, "Prefix"), ["a/", "a/b/"]);
        assert_eq!(texts(&doc, "Delimiter"), ["/"]);
        assert!(texts(&doc, "EncodingType").is_empty());
        assert!(doc.ends_with("</ListBucketResult>"));
    }

    #[test]
    fn list_v2_with_encoding_url_encodes_keys_prefixes_and_start_after() {
        let mut p = page();
        p.encoding_url = true;
        p.prefix = "foo+1/".into();
        p.delimiter = Some("/".into());
        p.start_after = Some("a b".into());
        p.continuation_token = Some("to ken".into());
        p.contents = vec![ObjectSummary::new("asdf+b", at("2025-01-01T00:00:00Z"), "e", 0)];
        p.common_prefixes = vec!["quux ab/".into()];
        let doc = list_objects_v2(&p);
        assert_eq!(texts(&doc, "EncodingType"), ["url"]);
        assert_eq!(texts(&doc, "Key"), ["asdf%2Bb"]);
        assert_eq!(texts(&doc, "Prefix"), ["foo%2B1/", "quux%20ab/"]);
        assert_eq!(texts(&doc, "Delimiter"), ["/"]);
        assert_eq!(texts(&doc, "StartAfter"), ["a%20b"]);
        assert_eq!(texts(&doc, "ContinuationToken"), ["to ken"]);
    }

    #[test]
    fn list_v1_renders_markers_and_owners() {
        let mut p = page();
        p.marker = Some("m 1".into());
        p.next_marker = Some("n 2".into());
        p.encoding_url = true;
        p.owner = Some("weft".into());
        p.contents = vec![ObjectSummary::new("k 1", at("2025-01-01T00:00:00Z"), "e", 1)];
        let doc = list_objects_v1(&p);
        assert_eq!(texts(&doc, "Marker"), ["m%201"]);
        assert_eq!(texts(&doc, "NextMarker"), ["n%202"]);
        assert_eq!(texts(&doc, "Key"), ["k%201"]);
        assert_eq!(texts(&doc, "ID"), ["weft"]);
        assert!(texts(&doc, "KeyCount").is_empty());
        assert_eq!(texts(&list_objects_v1(&page()), "Marker"), [""]);
    }

    #[test]
    fn other_answers_carry_their_elements() {
        let t = at("2025-01-02T03:04:05Z");
        let buckets = list_buckets(&[("a&b".into(), t)], "owner");
        assert!(buckets.contains("<ListAllMyBucketsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"));
        assert_eq!(texts(&buckets, "Name"), ["a&b"]);
        assert_eq!(texts(&buckets, "CreationDate"), ["2025-01-02T03:04:05.000Z"]);
        assert_eq!(texts(&buckets, "ID"), ["owner"]);

        let copy = copy_object_result("e1", t);
        assert_eq!(
            (texts(&copy, "ETag"), texts(&copy, "LastModified")),
            (vec!["\"e1\"".to_string()], vec!["2025-01-02T03:04:05.000Z".to_string()])
        );

        let init = initiate_multipart_upload("b", "k<", "u1");
        assert_eq!(
            [texts(&init, "Bucket"), texts(&init, "Key"), texts(&init, "UploadId")],
            [["b"], ["k<"], ["u1"]]
        );

        let done = complete_multipart_upload("http://b.s3/k", "b", "k", "e-2");
        assert_eq!(texts(&done, "Location"), ["http://b.s3/k"]);
        assert_eq!(texts(&done, "ETag"), ["\"e-2\""]);

        let parts = [PartSummary {
            number: 2,
            last_modified: t,
            etag: "p2".into(),
            size: 5,
        }];
        let listed = list_parts("b", "k", "u1", &parts, 1, 2, 1000, false);
        assert_eq!(texts(&listed, "PartNumber"), ["2"]);
        assert_eq!(texts(&listed, "PartNumberMarker"), ["1"]);
        assert_eq!(texts(&listed, "NextPartNumberMarker"), ["2"]);
        assert_eq!(texts(&listed, "ETag"), ["\"p2\""]);

        let uploads = list_multipart_uploads("b", &[("k".into(), "u1".into(), t)]);
        assert_eq!(texts(&uploads, "UploadId"), ["u1"]);
        assert_eq!(texts(&uploads, "UploadIdMarker"), [""]);
        assert_eq!(texts(&uploads, "Initiated"), ["2025-01-02T03:04:05.000Z"]);

        assert_eq!(
            location_constraint("eu-west-1"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">eu-west-1</LocationConstraint>"
        );
        assert_eq!(texts(&location_constraint("us-east-1"), "LocationConstraint"), [""]);
    }

    #[test]
    fn delete_results_list_deletions_unless_quiet() {
        let deleted = ["a".to_string(), "b&c".to_string()];
        let errors = [("d".to_string(), "AccessDenied", "no".to_string())];
        let loud = delete_result(&deleted, &errors, false);
        assert_eq!(texts(&loud, "Key"), ["a", "b&c", "d"]);
        assert_eq!(texts(&loud, "Code"), ["AccessDenied"]);
        let quiet = delete_result(&deleted, &errors, true);
        assert_eq!(texts(&quiet, "Key"), ["d"]);
        assert!(quiet.contains("<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"));
    }

    #[test]
    fn delete_requests_round_trip_keys_exactly() {
        let keys = [" lead", "a&b<c>\"'", "trail ", "dir/", "ü"];
        let mut doc = format!("<?xml version=\"1.0\"?>\n<Delete xmlns=\"{NAMESPACE}\">\n  <Quiet>true</Quiet>\n");
        for key in keys {
            doc.push_str("  <Object><Key>");
            doc.push_str(&escape(key));
            doc.push_str("</Key></Object>\n");
        }
        doc.push_str("</Delete>");
        assert_eq!(
            parse_delete(doc.as_bytes()),
            Ok(DeleteRequest {
                quiet: true,
                keys: keys.map(String::from).to_vec()
            })
        );
        let bare =
            b"<Delete><Object><Key><![CDATA[x<y]]></Key></Object><Object><Key>&#x41;&#66;</Key></Object></Delete>";
        assert_eq!(
            parse_delete(bare),
            Ok(DeleteRequest {
                quiet: false,
                keys: vec!["x<y".into(), "AB".into()]
            })
        );
        let prefixed =
            format!("<s3:Delete xmlns:s3=\"{NAMESPACE}\"><s3:Object><s3:Key>k</s3:Key></s3:Object></s3:Delete>");
        assert_eq!(parse_delete(prefixed.as_bytes()).unwrap().keys, ["k"]);
    }

    fn malformed(result: Result<impl std::fmt::Debug, S3Error>, says: &str) {
        let e = result.unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "MalformedXML"), "{}", e.message);
        assert!(e.message.contains(says), "expected `{says}` in: {}", e.message);
    }

    #[test]
    fn delete_requests_that_break_the_shape_are_malformed() {
        malformed(parse_delete(b""), "holds no element");
        malformed(parse_delete(b"<Delete>"), "ends inside <Delete>");
        malformed(
            parse_delete(b"<Remove><Object><Key>k</Key></Object></Remove>"),
            "root element is <Remove>",
        );
        malformed(parse_delete(b"<Delete></Delete>"), "names no objects");
        malformed(parse_delete(b"<Delete><Object></Object></Delete>"), "has no <Key>");
        malformed(
            parse_delete(b"<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>"),
            "two <Key>s",
        );
        malformed(
            parse_delete(b"<Delete><Quiet>yes</Quiet><Object><Key>k</Key></Object></Delete>"),
            "`yes`",
        );
        malformed(
            parse_delete(b"<Delete><Bogus/><Object><Key>k</Key></Object></Delete>"),
            "<Bogus>",
        );
        malformed(
            parse_delete(b"<Delete><Object><Key>k</Key></Object></Delete><Delete/>"),
            "follows the root",
        );
        malformed(
            parse_delete(b"<Delete><Object><Key><b>k</b></Key></Object></Delete>"),
            "holds only text",
        );
        malformed(
            parse_delete(b"<Delete><Object><Key>k</Key></Object><Oops></Delete>"),
            "not well-formed",
        );
        malformed(
            parse_delete(b"<Delete><Object><Key>&bogus;</Key></Object></Delete>"),
            "`&bogus;`",
        );
        malformed(
            parse_delete(b"<Delete><a><b><c><d><e/></d></c></b></a></Delete>"),
            "nested deeper",
        );
        let version = parse_delete(b"<Delete><Object><Key>k</Key><VersionId>v</VersionId></Object></Delete>");
        assert_eq!(version.unwrap_err().code, "NotImplemented");
        let conditional = parse_delete(b"<Delete><Object><Key>k</Key><ETag>e</ETag></Object></Delete>");
        assert_eq!(conditional.unwrap_err().status.as_u16(), 501);
    }

    #[test]
    fn doctypes_and_entities_are_refused() {
        let xxe = br#"<?xml version="1.0"?>
<!DOCTYPE Delete [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Delete><Object><Key>&xxe;</Key></Object></Delete>"#;
        malformed(parse_delete(xxe), "DOCTYPE");
        let billion = br#"<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>
<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&lol2;</ETag></Part></CompleteMultipartUpload>"#;
        malformed(parse_complete(billion), "DOCTYPE");
    }

    #[test]
    fn delete_requests_hold_at_most_1000_keys() {
        let doc = |n: usize| {
            let objects: String = (0..n).map(|i| format!("<Object><Key>k{i}</Key></Object>")).collect();
            format!("<Delete><Quiet>false</Quiet>{objects}</Delete>")
        };
        assert_eq!(parse_delete(doc(1000).as_bytes()).unwrap().keys.len(), 1000);
        malformed(parse_delete(doc(1001).as_bytes()), "more than 1000");
        malformed(parse_delete(doc(100_000).as_bytes()), "more than 1000");
        let no_quiet: String = (0..1001).map(|i| format!("<Object><Key>k{i}</Key></Object>")).collect();
        malformed(
            parse_delete(format!("<Delete>{no_quiet}</Delete>").as_bytes()),
            "more than 1000",
        );
    }

    #[test]
    fn complete_requests_read_parts_with_or_without_namespace_and_checksums() {
        let doc = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUpload xmlns="{NAMESPACE}">
  <Part><ETag>"a1"</ETag><PartNumber>1</PartNumber><ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part>
  <Part><PartNumber> 3 </PartNumber><ETag>&quot;b3&quot;</ETag><ChecksumSHA256>x</ChecksumSHA256></Part>
  <Part><PartNumber>10000</PartNumber><ETag>c-2</ETag></Part>
</CompleteMultipartUpload>"#
        );
        assert_eq!(
            parse_complete(doc.as_bytes()),
            Ok(vec![(1, "a1".into()), (3, "b3".into()), (10000, "c-2".into())])
        );
        let bare =
            b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>e</ETag></Part></CompleteMultipartUpload>";
        assert_eq!(parse_complete(bare), Ok(vec![(1, "e".into())]));
    }

    #[test]
    fn complete_requests_that_break_the_rules_are_refused() {
        let doc = |parts: &str| format!("<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>");
        let part = |n: &str| format!("<Part><PartNumber>{n}</PartNumber><ETag>e{n}</ETag></Part>");
        malformed(parse_complete(doc("").as_bytes()), "must contain at least one part");
        malformed(
            parse_complete(b"<CompleteMultipartUpload/>"),
            "must contain at least one part",
        );
        malformed(parse_complete(doc(&part("x")).as_bytes()), "`x`");
        malformed(
            parse_complete(doc("<Part><PartNumber>1</PartNumber></Part>").as_bytes()),
            "no <ETag>",
        );
        malformed(
            parse_complete(doc("<Part><ETag>e</ETag></Part>").as_bytes()),
            "no <PartNumber>",
        );
        malformed(parse_complete(doc("<Upload/>").as_bytes()), "<Upload>");
        malformed(
            parse_complete(format!("<Delete>{}</Delete>", part("1")).as_bytes()),
            "root element is <Delete>",
        );
        for out_of_order in [part("2") + &part("1"), part("1") + &part("1")] {
            let e = parse_complete(doc(&out_of_order).as_bytes()).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (400, "InvalidPartOrder"));
        }
        for out_of_range in ["0", "10001"] {
            let e = parse_complete(doc(&part(out_of_range)).as_bytes()).unwrap_err();
            assert_eq!(
                e.message,
                "Part number must be an integer between 1 and 10000, inclusive"
            );
        }
        let all: String = (1..=10_000).map(|n| part(&n.to_string())).collect();
        assert_eq!(parse_complete(doc(&all).as_bytes()).unwrap().len(), 10_000);
        let over = all + &part("10001");
        malformed(parse_complete(doc(&over).as_bytes()), "more than 10000 parts");
    }
}
