//! Signature Version 4 as S3 checks it, in the `Authorization` header and
//! in presigned URLs.
//!
//! [`verify`] rebuilds the request's canonical form from its head, signs it
//! with the secret that [`Keys`] holds for the access key id, and compares
//! in constant time. It does not read the body: it says what the body must
//! still be checked against ([`Payload`]), and for `aws-chunked` bodies
//! hands over the [`ChunkSigner`] that [`crate::chunked::Decoder`] checks
//! each chunk with. It knows no credential store and no listener.
//!
//! The canonical form follows S3 rather than generic SigV4: the path is
//! percent-decoded once and re-encoded (S3 neither double-encodes nor
//! normalizes `.` and `..`), a `+` in the path or query is a plus, not a
//! space, and every `x-amz-*` header the request carries must be signed.
//! Any region is accepted (the scope's is used); the service must be `s3`.
//!
//! ```
//! use weft_s3::sigv4::{self, Keys, Payload, Secret};
//!
//! struct One;
//! impl Keys for One {
//!     fn secret(&self, id: &str) -> Option<Secret> {
//!         (id == "AKIAIOSFODNN7EXAMPLE")
//!             .then(|| Secret("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()))
//!     }
//! }
//!
//! // The presigned URL from AWS's documentation, used an hour later.
//! let uri: http::Uri = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
//!     &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
//!     &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
//!     &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
//!     .parse()?;
//! let mut headers = http::HeaderMap::new();
//! headers.insert("host", "examplebucket.s3.amazonaws.com".parse()?);
//! let now: jiff::Timestamp = "2013-05-24T01:00:00Z".parse()?;
//!
//! let verified = sigv4::verify(&http::Method::GET, &uri, &headers, &One, now)?;
//! assert_eq!(verified.access_key_id, "AKIAIOSFODNN7EXAMPLE");
//! assert_eq!(verified.payload, Payload::Unsigned);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use hmac::{Hmac, Mac};
use http::header::{AUTHORIZATION, DATE, HOST};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use jiff::Timestamp;
use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};

use crate::S3Error;

type HmacSha256 = Hmac<Sha256>;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's time may be from ours, as S3 allows.
const MAX_SKEW_SECONDS: i64 = 15 * 60;
/// The longest a presigned URL may live: seven days, as S3 allows.
const MAX_EXPIRES_SECONDS: i64 = 604_800;

const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
/// SHA-256 of nothing, in hex; every chunk's string to sign carries it.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const NO_AUTH: &str = "requests to the S3 listener must be signed with Signature Version 4; \
                       see `weft s3 credentials` for an access key and its secret";
const SIGV4_ONLY: &str = "weft accepts only Signature Version 4 (AWS4-HMAC-SHA256); configure \
                          the client for it (for the AWS CLI: `aws configure set \
                          default.s3.signature_version s3v4`)";

/// A secret access key. `Debug` prints `***`, so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where [`verify`] finds the secret for an access key id.
pub trait Keys {
    fn secret(&self, access_key_id: &str) -> Option<Secret>;
}

/// What the body must still be checked against, from `x-amz-content-sha256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// `UNSIGNED-PAYLOAD`, and presigned URLs that name no hash: the body
    /// is taken as it comes.
    Unsigned,
    /// A hex SHA-256 of the body. The caller hashes the body and, if it
    /// differs, answers `XAmzContentSHA256Mismatch` (400).
    Sha256([u8; 32]),
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: an `aws-chunked` body with a
    /// trailing checksum; decode it with `Decoder::new(None, ..)`.
    StreamingUnsignedTrailer,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` (and `-TRAILER`): an
    /// `aws-chunked` body whose every chunk is signed, chained from this
    /// request's signature; decode it with `Decoder::new(Some(signer), ..)`.
    StreamingSigned(ChunkSigner),
}

/// A request whose signature matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    /// The region the client signed for; weft accepts any.
    pub region: String,
    pub payload: Payload,
}

/// What checking an `aws-chunked` body's signatures takes: the request's
/// signing key, time and scope, and its signature, the seed the first
/// chunk's signature chains from.
#[derive(Clone, PartialEq, Eq)]
pub struct ChunkSigner {
    key: [u8; 32],
    amz_date: String,
    scope: String,
    seed: [u8; 32],
    trailer: bool,
}

impl ChunkSigner {
    /// Whether the body ends with signed trailers
    /// (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`).
    pub fn signs_trailer(&self) -> bool {
        self.trailer
    }

    /// The request's own signature, which the first chunk chains from.
    pub(crate) fn seed(&self) -> [u8; 32] {
        self.seed
    }

    /// Whether `provided` signs a chunk whose data hashes to `data_sha256`,
    /// `previous` being the seed or the signature of the chunk before.
    pub(crate) fn chunk_matches(&self, previous: &[u8; 32], data_sha256: &[u8; 32], provided: &[u8; 32]) -> bool {
        let to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{}",
            self.amz_date,
            self.scope,
            hex(previous),
            hex(data_sha256)
        );
        mac(&self.key, to_sign.as_bytes()).verify_slice(provided).is_ok()
    }

    /// Whether `provided` signs trailers whose canonical form (each
    /// `name:value\n`) hashes to `trailer_sha256`, `previous` being the
    /// signature of the last, empty chunk.
    pub(crate) fn trailer_matches(&self, previous: &[u8; 32], trailer_sha256: &[u8; 32], provided: &[u8; 32]) -> bool {
        let to_sign = format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
            self.amz_date,
            self.scope,
            hex(previous),
            hex(trailer_sha256)
        );
        mac(&self.key, to_sign.as_bytes()).verify_slice(provided).is_ok()
    }
}

impl fmt::Debug for ChunkSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkSigner")
            .field("key", &"***")
            .field("amz_date", &self.amz_date)
            .field("scope", &self.scope)
            .field("seed", &hex(&self.seed))
            .field("trailer", &self.trailer)
            .finish()
    }
}

/// Checks the request's Signature Version 4, from its `Authorization`
/// header or its presigned query, against `keys` at time `now`.
///
/// Errors are S3's: `AccessDenied` when unsigned or expired,
/// `InvalidAccessKeyId`, `SignatureDoesNotMatch`, `RequestTimeTooSkewed`,
/// `AuthorizationHeaderMalformed` / `AuthorizationQueryParametersError`
/// saying what is wrong.
pub fn verify(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    keys: &dyn Keys,
    now: Timestamp,
) -> Result<Verified, S3Error> {
    let query = uri.query().unwrap_or("");
    let presigned = query_pairs(query)
        .any(|(name, _)| matches!(&name[..], b"X-Amz-Algorithm" | b"X-Amz-Credential" | b"X-Amz-Signature"));
    let mut authorization = headers.get_all(AUTHORIZATION).iter();
    let claim = match (authorization.next(), presigned) {
        (Some(_), true) => {
            return Err(S3Error::invalid_argument(
                "only one auth mechanism allowed: the request has both an Authorization header \
                 and X-Amz-* signature query parameters; send one of them",
            ));
        }
        (None, false) => {
            let v2 = query_pairs(query).any(|(name, _)| name == b"AWSAccessKeyId");
            return Err(if v2 {
                S3Error::invalid_request(SIGV4_ONLY)
            } else {
                S3Error::access_denied(NO_AUTH)
            });
        }
        (Some(value), false) => {
            if authorization.next().is_some() {
                return Err(Via::Header.malformed("the request has more than one Authorization header"));
            }
            header_claim(value, headers)?
        }
        (None, true) => query_claim(query)?,
    };

    let token = headers.contains_key("x-amz-security-token")
        || query_pairs(query).any(|(name, _)| name == b"X-Amz-Security-Token");
    if token {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "InvalidToken",
            "weft has no session tokens: drop X-Amz-Security-Token and sign with a long-term \
             access key from `weft s3 credentials`",
        ));
    }

    claim.check_time(now)?;
    let (payload_hash, declared) = declared_payload(&claim, uri, headers)?;

    let secret = keys.secret(&claim.access_key_id).ok_or_else(|| {
        S3Error::new(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            format!(
                "The AWS Access Key Id you provided does not exist in our records: weft has no \
                 key `{}`; list keys with `weft s3 credentials`",
                claim.access_key_id
            ),
        )
        .with("AWSAccessKeyId", claim.access_key_id.as_str())
    })?;

    let canonical = canonical_request(method, uri, headers, &claim, &payload_hash);
    let scope = format!("{}/{}/s3/aws4_request", claim.date, claim.region);
    let to_sign = format!(
        "{ALGORITHM}\n{}\n{scope}\n{}",
        claim.amz_date,
        hex(&Sha256::digest(&canonical))
    );
    let key = signing_key(&secret, &claim.date, &claim.region);
    if mac(&key, to_sign.as_bytes()).verify_slice(&claim.signature).is_err() {
        return Err(S3Error::new(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check the secret access key for this access key id and the client's signing \
             method (Signature Version 4, service `s3`, the path and query exactly as sent).",
        )
        .with("AWSAccessKeyId", claim.access_key_id.as_str())
        .with("StringToSign", to_sign)
        .with("SignatureProvided", hex(&claim.signature))
        .with("CanonicalRequest", String::from_utf8_lossy(&canonical)));
    }

    let unsigned = unsigned_amz_headers(headers, &claim.signed_headers);
    if !unsigned.is_empty() {
        return Err(S3Error::access_denied(
            "There were headers present in the request which were not signed; sign every \
             x-amz-* header the request carries",
        )
        .with("HeadersNotSigned", unsigned.join(", ")));
    }

    let payload = match declared {
        Declared::Unsigned => Payload::Unsigned,
        Declared::Sha256(hash) => Payload::Sha256(hash),
        Declared::UnsignedTrailer => Payload::StreamingUnsignedTrailer,
        Declared::Signed { trailer } => Payload::StreamingSigned(ChunkSigner {
            key,
            amz_date: claim.amz_date,
            scope,
            seed: claim.signature,
            trailer,
        }),
    };
    Ok(Verified {
        access_key_id: claim.access_key_id,
        region: claim.region,
        payload,
    })
}

/// Signs a request the way an S3 client does, for weft's own clients
/// (benchmarks, tools): sets `x-amz-date`, `x-amz-content-sha256`
/// (`UNSIGNED-PAYLOAD`) and `Authorization`, signing `host` and those two.
/// The request must carry its `host` header or an authority in `uri`.
pub fn sign(
    method: &Method,
    uri: &Uri,
    headers: &mut HeaderMap,
    access_key_id: &str,
    secret: &Secret,
    region: &str,
    now: Timestamp,
) {
    let amz_date = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let date = amz_date[..8].to_string();
    for (name, value) in [
        ("x-amz-date", amz_date.as_str()),
        ("x-amz-content-sha256", UNSIGNED_PAYLOAD),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    let claim = Claim {
        via: Via::Header,
        access_key_id: access_key_id.to_string(),
        date: date.clone(),
        region: region.to_string(),
        signed_headers: vec!["host".into(), "x-amz-content-sha256".into(), "x-amz-date".into()],
        signature: [0; 32],
        amz_date: amz_date.clone(),
        time: now,
        expires: None,
    };
    let canonical = canonical_request(method, uri, headers, &claim, UNSIGNED_PAYLOAD);
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", hex(&Sha256::digest(&canonical)));
    let signature = hmac(&signing_key(secret, &date, region), to_sign.as_bytes());
    let authorization = format!(
        "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={}",
        claim.signed_headers.join(";"),
        hex(&signature)
    );
    if let Ok(v) = HeaderValue::from_str(&authorization) {
        headers.insert(AUTHORIZATION, v);
    }
}

/// Where the request carried its signature; malformed ones are reported
/// with the code S3 uses for that place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Header,
    Query,
}

impl Via {
    fn malformed(self, message: impl Into<String>) -> S3Error {
        let code = match self {
            Via::Header => "AuthorizationHeaderMalformed",
            Via::Query => "AuthorizationQueryParametersError",
        };
        S3Error::new(StatusCode::BAD_REQUEST, code, message)
    }
}

/// A request's claim to be signed, from its header or query.
#[derive(Debug)]
struct Claim {
    via: Via,
    access_key_id: String,
    /// The scope's date, `YYYYMMDD`.
    date: String,
    region: String,
    signed_headers: Vec<String>,
    signature: [u8; 32],
    /// The request time as the string to sign carries it, `YYYYMMDD'T'HHMMSS'Z'`.
    amz_date: String,
    time: Timestamp,
    /// `X-Amz-Expires` of a presigned URL, in seconds.
    expires: Option<i64>,
}

impl Claim {
    fn check_time(&self, now: Timestamp) -> Result<(), S3Error> {
        let age = now.as_second() - self.time.as_second();
        let Some(expires) = self.expires else {
            if age.abs() <= MAX_SKEW_SECONDS {
                return Ok(());
            }
            return Err(S3Error::new(
                StatusCode::FORBIDDEN,
                "RequestTimeTooSkewed",
                "The difference between the request time and the server's time is too large \
                 (more than 15 minutes); check the client's clock",
            )
            .with("RequestTime", self.amz_date.as_str())
            .with("ServerTime", now.to_string())
            .with("MaxAllowedSkewMilliseconds", "900000"));
        };
        if -age > MAX_SKEW_SECONDS {
            return Err(S3Error::access_denied(format!(
                "Request is not valid yet: X-Amz-Date {} is more than 15 minutes ahead of the \
                 server's time {now}; check the clock where the URL was signed",
                self.amz_date
            )));
        }
        if age > expires {
            let end = Timestamp::from_second(self.time.as_second() + expires)
                .map(|t| t.to_string())
                .unwrap_or_default();
            return Err(S3Error::access_denied(
                "Request has expired; presign the URL again (X-Amz-Expires is at most 604800 \
                 seconds)",
            )
            .with("X-Amz-Expires", expires.to_string())
            .with("Expires", end)
            .with("ServerTime", now.to_string()));
        }
        Ok(())
    }
}

fn check_algorithm(via: Via, algorithm: &str) -> Result<(), S3Error> {
    match algorithm {
        ALGORITHM => Ok(()),
        "AWS" | "AWS4-ECDSA-P256-SHA256" => Err(S3Error::invalid_request(SIGV4_ONLY)),
        other => Err(via.malformed(format!(
            "the signing algorithm is `{other}`; weft accepts only {ALGORITHM}"
        ))),
    }
}

/// Reads `AWS4-HMAC-SHA256 Credential=.., SignedHeaders=.., Signature=..`.
fn header_claim(value: &HeaderValue, headers: &HeaderMap) -> Result<Claim, S3Error> {
    let via = Via::Header;
    let value = value
        .to_str()
        .map_err(|_| via.malformed("the Authorization header has bytes that are not visible ASCII"))?
        .trim();
    let (algorithm, fields) = value.split_once(' ').unwrap_or((value, ""));
    check_algorithm(via, algorithm)?;

    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for field in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (name, value) = field
            .split_once('=')
            .ok_or_else(|| via.malformed(format!("`{field}` in the Authorization header is not NAME=VALUE")))?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => {
                return Err(via.malformed(format!(
                    "unknown field `{name}` in the Authorization header; it takes Credential, \
                     SignedHeaders and Signature"
                )));
            }
        };
        if slot.replace(value).is_some() {
            return Err(via.malformed(format!("`{name}` appears twice in the Authorization header")));
        }
    }
    let missing = |name: &str| {
        via.malformed(format!(
            "the Authorization header has no {name}=; it must read `{ALGORITHM} \
             Credential=KEY/YYYYMMDD/REGION/s3/aws4_request, SignedHeaders=a;b, Signature=HEX`"
        ))
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let (access_key_id, date, region) = credential_scope(via, credential)?;
    let signed_headers = signed_header_names(via, signed_headers)?;
    let signature = signature_hex(via, signature)?;

    let invalid_date = |what: &str| {
        S3Error::access_denied(format!(
            "AWS authentication requires a valid Date or x-amz-date header: {what}"
        ))
    };
    let (amz_date, time) = match headers.get("x-amz-date") {
        Some(value) => {
            let text = value.to_str().unwrap_or("");
            let time = parse_amz_date(text).ok_or_else(|| {
                invalid_date(&format!(
                    "x-amz-date `{}` is not YYYYMMDD'T'HHMMSS'Z'",
                    String::from_utf8_lossy(value.as_bytes())
                ))
            })?;
            (text.to_owned(), time)
        }
        None => {
            let value = headers
                .get(DATE)
                .ok_or_else(|| invalid_date("the request has neither"))?;
            let time = jiff::fmt::rfc2822::DateTimeParser::new()
                .parse_timestamp(value.as_bytes())
                .map_err(|_| {
                    invalid_date(&format!(
                        "Date `{}` is not an HTTP date",
                        String::from_utf8_lossy(value.as_bytes())
                    ))
                })?;
            (time.strftime("%Y%m%dT%H%M%SZ").to_string(), time)
        }
    };
    check_scope_date(via, &date, &amz_date)?;
    Ok(Claim {
        via,
        access_key_id,
        date,
        region,
        signed_headers,
        signature,
        amz_date,
        time,
        expires: None,
    })
}

/// Reads a presigned URL's `X-Amz-*` parameters.
fn query_claim(query: &str) -> Result<Claim, S3Error> {
    let via = Via::Query;
    const NAMES: [&str; 6] = [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
    ];
    let mut values: [Option<String>; 6] = Default::default();
    for (name, value) in query_pairs(query) {
        let Some(i) = NAMES.iter().position(|n| n.as_bytes() == name) else {
            continue;
        };
        let value = String::from_utf8(value).map_err(|_| via.malformed(format!("{} is not UTF-8", NAMES[i])))?;
        if values[i].replace(value).is_some() {
            return Err(via.malformed(format!("{} appears twice in the query", NAMES[i])));
        }
    }
    let [algorithm, credential, amz_date, expires, signed_headers, signature] = values.map(|v| v.unwrap_or_default());
    for (name, value) in NAMES.iter().zip([
        &algorithm,
        &credential,
        &amz_date,
        &expires,
        &signed_headers,
        &signature,
    ]) {
        if value.is_empty() {
            return Err(via.malformed(format!(
                "the presigned URL has no {name}; it needs X-Amz-Algorithm, X-Amz-Credential, \
                 X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders and X-Amz-Signature"
            )));
        }
    }
    check_algorithm(via, &algorithm)?;
    let (access_key_id, date, region) = credential_scope(via, &credential)?;
    let signed_headers = signed_header_names(via, &signed_headers)?;
    let signature = signature_hex(via, &signature)?;
    let time = parse_amz_date(&amz_date)
        .ok_or_else(|| via.malformed(format!("X-Amz-Date `{amz_date}` is not YYYYMMDD'T'HHMMSS'Z'")))?;
    let expires = expires
        .parse::<i64>()
        .ok()
        .filter(|s| (1..=MAX_EXPIRES_SECONDS).contains(s))
        .ok_or_else(|| {
            via.malformed(format!(
                "X-Amz-Expires `{expires}` must be a number of seconds from 1 to 604800 \
                 (seven days)"
            ))
        })?;
    check_scope_date(via, &date, &amz_date)?;
    Ok(Claim {
        via,
        access_key_id,
        date,
        region,
        signed_headers,
        signature,
        amz_date,
        time,
        expires: Some(expires),
    })
}

/// Splits `KEY/YYYYMMDD/REGION/s3/aws4_request` into key, date and region.
fn credential_scope(via: Via, credential: &str) -> Result<(String, String, String), S3Error> {
    let form = "it must be ACCESS_KEY_ID/YYYYMMDD/REGION/s3/aws4_request";
    let parts: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, terminator] = parts[..] else {
        return Err(via.malformed(format!("the credential `{credential}` is malformed; {form}")));
    };
    if key.is_empty() || region.is_empty() {
        return Err(via.malformed(format!(
            "the credential `{credential}` has an empty access key id or region; {form}"
        )));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(via.malformed(format!("the credential date `{date}` is not YYYYMMDD; {form}")));
    }
    if service != "s3" {
        return Err(via.malformed(format!(
            "the credential names service `{service}`; this endpoint is `s3`"
        )));
    }
    if terminator != "aws4_request" {
        return Err(via.malformed(format!(
            "the credential ends in `{terminator}`, not `aws4_request`; {form}"
        )));
    }
    Ok((key.to_owned(), date.to_owned(), region.to_owned()))
}

/// Reads `a;b;c`: lowercase header names, `host` among them.
fn signed_header_names(via: Via, list: &str) -> Result<Vec<String>, S3Error> {
    let names: Vec<String> = list.split(';').map(str::to_owned).collect();
    let bad = names.iter().find(|n| {
        n.is_empty()
            || n.bytes()
                .any(|b| b.is_ascii_uppercase() || b.is_ascii_whitespace() || b == b':')
    });
    if let Some(bad) = bad {
        return Err(via.malformed(format!(
            "SignedHeaders `{list}` has `{bad}`; it must be lowercase header names joined by `;`"
        )));
    }
    if !names.iter().any(|n| n == "host") {
        return Err(via.malformed(format!(
            "SignedHeaders `{list}` does not include `host`, which must be signed"
        )));
    }
    Ok(names)
}

fn signature_hex(via: Via, signature: &str) -> Result<[u8; 32], S3Error> {
    unhex32(signature).ok_or_else(|| via.malformed(format!("the signature `{signature}` is not 64 hexadecimal digits")))
}

fn check_scope_date(via: Via, date: &str, amz_date: &str) -> Result<(), S3Error> {
    if amz_date.get(..8) == Some(date) {
        return Ok(());
    }
    Err(via.malformed(format!(
        "Invalid credential date: the credential's date {date} is not the date of the request \
         time {amz_date}; sign with the same date in both"
    )))
}

/// `YYYYMMDD'T'HHMMSS'Z'`, strictly.
fn parse_amz_date(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    // ASCII first, so the ranges below cut between characters.
    if !text.is_ascii() || b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i16> {
        let digits = &text[range];
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let time = jiff::civil::DateTime::new(
        number(0..4)?,
        number(4..6)? as i8,
        number(6..8)? as i8,
        number(9..11)? as i8,
        number(11..13)? as i8,
        number(13..15)? as i8,
        0,
    )
    .ok()?;
    time.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// What `x-amz-content-sha256` declared, before the seed signature is known.
#[derive(Debug)]
enum Declared {
    Unsigned,
    Sha256([u8; 32]),
    UnsignedTrailer,
    Signed { trailer: bool },
}

/// The payload hash as the canonical request carries it, and what it means.
fn declared_payload(claim: &Claim, uri: &Uri, headers: &HeaderMap) -> Result<(String, Declared), S3Error> {
    let mut sent = headers.get_all("x-amz-content-sha256").iter();
    let header = sent.next();
    if sent.next().is_some() {
        return Err(S3Error::invalid_argument(
            "the request has more than one x-amz-content-sha256 header; send one",
        ));
    }
    let header = header
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| S3Error::invalid_argument("x-amz-content-sha256 is not ASCII"))
        })
        .transpose()?;
    let value = match claim.via {
        Via::Header => header.ok_or_else(|| {
            S3Error::invalid_request(
                "missing x-amz-content-sha256: requests signed in the Authorization header must \
                 send the body's hex SHA-256, UNSIGNED-PAYLOAD or a STREAMING-* value",
            )
        })?,
        Via::Query => query_pairs(uri.query().unwrap_or(""))
            .find(|(name, _)| name == b"X-Amz-Content-Sha256")
            .map(|(_, value)| String::from_utf8_lossy(&value).into_owned())
            .or(header)
            .unwrap_or_else(|| UNSIGNED_PAYLOAD.to_owned()),
    };
    let declared = match value.as_str() {
        UNSIGNED_PAYLOAD => Declared::Unsigned,
        STREAMING_UNSIGNED_TRAILER => Declared::UnsignedTrailer,
        STREAMING_SIGNED | STREAMING_SIGNED_TRAILER if claim.via == Via::Query => {
            return Err(S3Error::invalid_request(
                "a presigned URL cannot carry a chunk-signed body: chunk signatures chain from \
                 an Authorization header's signature; sign the request in the header instead",
            ));
        }
        STREAMING_SIGNED => Declared::Signed { trailer: false },
        STREAMING_SIGNED_TRAILER => Declared::Signed { trailer: true },
        other => match unhex32(other) {
            Some(hash) => Declared::Sha256(hash),
            None => {
                return Err(S3Error::invalid_argument(format!(
                    "x-amz-content-sha256 `{other}` must be a hex SHA-256 of the body, \
                     {UNSIGNED_PAYLOAD}, {STREAMING_UNSIGNED_TRAILER}, {STREAMING_SIGNED} or \
                     {STREAMING_SIGNED_TRAILER}"
                )));
            }
        },
    };
    Ok((value, declared))
}

/// The request as SigV4 signs it: method, path, query, signed headers and
/// their list, payload hash, one per line.
fn canonical_request(method: &Method, uri: &Uri, headers: &HeaderMap, claim: &Claim, payload_hash: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b'\n');
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    // Segment by segment, so a `/` the client sent encoded (`%2F`, part of
    // a key) stays encoded, as the client signed it.
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        encode(&mut out, &percent_decode_str(segment).collect::<Vec<u8>>(), false);
    }
    out.push(b'\n');
    out.extend_from_slice(&canonical_query(uri.query().unwrap_or(""), claim.via == Via::Query));
    out.push(b'\n');
    for name in &claim.signed_headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        header_value(&mut out, headers, uri, name);
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(claim.signed_headers.join(";").as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

/// Each parameter decoded and re-encoded (`/` too), sorted by name then
/// value, `name=value` joined by `&`. A presigned URL's own signature is
/// left out: it cannot sign itself.
fn canonical_query(query: &str, presigned: bool) -> Vec<u8> {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = query_pairs(query)
        .filter(|(name, _)| !(presigned && name == b"X-Amz-Signature"))
        .map(|(name, value)| {
            let (mut n, mut v) = (Vec::new(), Vec::new());
            encode(&mut n, &name, false);
            encode(&mut v, &value, false);
            (n, v)
        })
        .collect();
    pairs.sort();
    let mut out = Vec::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(name);
        out.push(b'=');
        out.extend_from_slice(value);
    }
    out
}

/// The query's parameters, percent-decoded, with `+` a space as the
/// request's parser reads it (else `+` and `%2B` would sign alike but
/// mean different things); a parameter without `=` has an empty value.
fn query_pairs(query: &str) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
    let decode = |part: &str| -> Vec<u8> { percent_decode_str(&part.replace('+', " ")).collect() };
    query.split('&').filter(|p| !p.is_empty()).map(move |pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(name), decode(value))
    })
}

/// Appends `bytes` with everything but `A-Za-z0-9-_.~` (and `/` when
/// `keep_slash`) as uppercase `%XX`.
fn encode(out: &mut Vec<u8>, bytes: &[u8], keep_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// Appends a signed header's values: each trimmed with runs of spaces
/// collapsed, joined by `,`. `host` falls back to the URI's authority,
/// where HTTP/2 carries it.
fn header_value(out: &mut Vec<u8>, headers: &HeaderMap, uri: &Uri, name: &str) {
    if name == HOST.as_str() && !headers.contains_key(HOST) {
        if let Some(authority) = uri.authority() {
            out.extend_from_slice(authority.as_str().as_bytes());
        }
        return;
    }
    for (i, value) in headers.get_all(name).iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let value = value.as_bytes().trim_ascii();
        let mut space = false;
        for &b in value {
            if b == b' ' {
                if !space {
                    out.push(b);
                }
                space = true;
            } else {
                out.push(b);
                space = false;
            }
        }
    }
}

/// `x-amz-*` headers the request carries but did not sign. S3 refuses
/// them: an unsigned `x-amz-copy-source` or `x-amz-acl` could be added by
/// anyone on the way. `x-amz-content-sha256` and `x-amz-date` are signed
/// through the string to sign whether listed or not.
fn unsigned_amz_headers(headers: &HeaderMap, signed: &[String]) -> Vec<String> {
    let mut unsigned: Vec<String> = headers
        .keys()
        .map(|name| name.as_str())
        .filter(|name| name.starts_with("x-amz-"))
        .filter(|name| !matches!(*name, "x-amz-content-sha256" | "x-amz-date"))
        .filter(|name| !signed.iter().any(|s| s == name))
        .map(str::to_owned)
        .collect();
    unsigned.sort();
    unsigned
}

/// HMAC("AWS4"+secret, date) → region → "s3" → "aws4_request".
fn signing_key(secret: &Secret, date: &str, region: &str) -> [u8; 32] {
    let key = hmac(format!("AWS4{}", secret.0).as_bytes(), date.as_bytes());
    let key = hmac(&key, region.as_bytes());
    let key = hmac(&key, b"s3");
    hmac(&key, b"aws4_request")
}

fn mac(key: &[u8], data: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    mac(key, data).finalize().into_bytes().into()
}

/// Lowercase hex, as signatures and hashes are written.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// 64 hex digits into 32 bytes.
pub(crate) fn unhex32(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut out = [0; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;

    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    pub(crate) const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    /// 2013-05-24T00:00:00Z, the time of every AWS example.
    const AWS_TIME: i64 = 1_369_353_600;
    const EMPTY: &str = EMPTY_SHA256;

    struct Map(HashMap<String, String>);

    impl Keys for Map {
        fn secret(&self, access_key_id: &str) -> Option<Secret> {
            self.0.get(access_key_id).cloned().map(Secret)
        }
    }

    #[test]
    fn request_times_are_read_strictly() {
        assert_eq!(
            parse_amz_date("20130524T000000Z").map(|t| t.as_second()),
            Some(AWS_TIME)
        );
        // Sixteen bytes with the markers in place, but not ASCII: refused,
        // not cut inside a character.
        assert_eq!(parse_amz_date("201\u{e9}524T000000Z"), None);
        assert_eq!(parse_amz_date("2013052400000000"), None);
        assert_eq!(parse_amz_date("20131324T000000Z"), None);
    }

    fn aws_keys() -> Map {
        Map(HashMap::from([(AKID.to_owned(), SECRET.to_owned())]))
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("test times are in range")
    }

    fn head(uri: &str, headers: &[(&str, &str)]) -> (Uri, HeaderMap) {
        let uri: Uri = uri.parse().expect("test URIs parse");
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("test header names parse"),
                HeaderValue::from_str(value).expect("test header values parse"),
            );
        }
        (uri, map)
    }

    fn check(method: Method, uri: &str, headers: &[(&str, &str)], now: i64) -> Result<Verified, S3Error> {
        let (uri, headers) = head(uri, headers);
        verify(&method, &uri, &headers, &aws_keys(), at(now))
    }

    fn auth(signed_headers: &str, signature: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders={signed_headers},Signature={signature}"
        )
    }

    /// A signer written apart from the verifier: it takes the canonical
    /// path and query already written out by hand, so a test states the
    /// encoding it expects instead of reusing `encode`.
    fn sign(method: &str, path: &str, query: &str, headers: &[(&str, &str)], payload: &str, amz_date: &str) -> String {
        let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
        let mut canonical = format!("{method}\n{path}\n{query}\n");
        for (name, value) in headers {
            canonical.push_str(&format!("{name}:{value}\n"));
        }
        canonical.push_str(&format!("\n{}\n{payload}", names.join(";")));
        let digest = Sha256::digest(canonical.as_bytes());
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{}/us-east-1/s3/aws4_request\n{}",
            &amz_date[..8],
            hex(&digest)
        );
        let mut key = format!("AWS4{SECRET}").into_bytes();
        for part in [&amz_date[..8], "us-east-1", "s3", "aws4_request", to_sign.as_str()] {
            let mut m = HmacSha256::new_from_slice(&key).expect("any key length");
            m.update(part.as_bytes());
            key = m.finalize().into_bytes().to_vec();
        }
        hex(&key)
    }

    const GET_OBJECT_SIGNATURE: &str = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";

    fn get_object(signature: &str) -> Vec<(&'static str, String)> {
        vec![
            ("host", "examplebucket.s3.amazonaws.com".into()),
            ("range", "bytes=0-9".into()),
            ("x-amz-content-sha256", EMPTY.into()),
            ("x-amz-date", "20130524T000000Z".into()),
            (
                "authorization",
                auth("host;range;x-amz-content-sha256;x-amz-date", signature),
            ),
        ]
    }

    fn borrowed<'a>(headers: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
        headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
    }

    // The examples of "Signature Calculations for the Authorization Header:
    // Transferring Payload in a Single Chunk" (S3 API reference, sig-v4-header-based-auth).

    #[test]
    fn aws_example_get_object_verifies() {
        let headers = get_object(GET_OBJECT_SIGNATURE);
        let verified = check(Method::GET, "/test.txt", &borrowed(&headers), AWS_TIME).expect("verifies");
        assert_eq!(
            verified,
            Verified {
                access_key_id: AKID.into(),
                region: "us-east-1".into(),
                payload: Payload::Sha256(unhex32(EMPTY).expect("hex")),
            }
        );
    }

    #[test]
    fn aws_example_get_object_verifies_over_http2_without_a_host_header() {
        let mut headers = get_object(GET_OBJECT_SIGNATURE);
        headers.retain(|(n, _)| *n != "host");
        let uri = "https://examplebucket.s3.amazonaws.com/test.txt";
        check(Method::GET, uri, &borrowed(&headers), AWS_TIME).expect("authority stands for host");
    }

    #[test]
    fn aws_example_put_object_verifies_with_the_key_encoded_or_not() {
        let hash = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
        let authorization = auth(
            "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
        );
        let headers = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", hash),
            ("authorization", &authorization),
        ];
        for path in ["/test$file.text", "/test%24file.text"] {
            let verified = check(Method::PUT, path, &headers, AWS_TIME).expect(path);
            assert_eq!(verified.payload, Payload::Sha256(unhex32(hash).expect("hex")));
        }
    }

    #[test]
    fn aws_example_get_bucket_lifecycle_verifies_a_parameter_without_a_value() {
        let authorization = auth(
            "host;x-amz-content-sha256;x-amz-date",
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        );
        let headers = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", EMPTY),
            ("authorization", &authorization),
        ];
        check(Method::GET, "/?lifecycle", &headers, AWS_TIME).expect("verifies");
    }

    #[test]
    fn aws_example_list_objects_verifies_with_parameters_in_any_order() {
        let authorization = auth(
            "host;x-amz-content-sha256;x-amz-date",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        );
        let headers = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", EMPTY),
            ("authorization", &authorization),
        ];
        check(Method::GET, "/?max-keys=2&prefix=J", &headers, AWS_TIME).expect("as sent");
        check(Method::GET, "/?prefix=J&max-keys=2", &headers, AWS_TIME).expect("reordered");
    }

    // "Authenticating Requests: Using Query Parameters" (sigv4-query-string-auth).
    const PRESIGNED: &str = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
        &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
        &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
        &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
    const BUCKET_HOST: (&str, &str) = ("host", "examplebucket.s3.amazonaws.com");

    #[test]
    fn aws_example_presigned_url_verifies_until_it_expires() {
        for now in [AWS_TIME - 900, AWS_TIME, AWS_TIME + 86_400] {
            let verified = check(Method::GET, PRESIGNED, &[BUCKET_HOST], now).expect("valid");
            assert_eq!(verified.payload, Payload::Unsigned);
        }
        let e = check(Method::GET, PRESIGNED, &[BUCKET_HOST], AWS_TIME + 86_401).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "AccessDenied"));
        assert!(e.message.starts_with("Request has expired"), "{}", e.message);
        let e = check(Method::GET, PRESIGNED, &[BUCKET_HOST], AWS_TIME - 901).unwrap_err();
        assert!(e.message.starts_with("Request is not valid yet"), "{}", e.message);
    }

    #[test]
    fn presigned_urls_are_checked_for_tampering_and_limits() {
        let other_key = PRESIGNED.replace("/test.txt", "/other.txt");
        let e = check(Method::GET, &other_key, &[BUCKET_HOST], AWS_TIME).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
        let e = check(Method::PUT, PRESIGNED, &[BUCKET_HOST], AWS_TIME).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
        let added = format!("{PRESIGNED}&versionId=1");
        let e = check(Method::GET, &added, &[BUCKET_HOST], AWS_TIME).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");

        for expires in ["0", "604801", "-1", "soon"] {
            let uri = PRESIGNED.replace("X-Amz-Expires=86400", &format!("X-Amz-Expires={expires}"));
            let e = check(Method::GET, &uri, &[BUCKET_HOST], AWS_TIME).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::BAD_REQUEST, "AuthorizationQueryParametersError")
            );
            assert!(e.message.contains("604800"), "{}", e.message);
        }
        let uri = PRESIGNED.replace("&X-Amz-SignedHeaders=host", "");
        let e = check(Method::GET, &uri, &[BUCKET_HOST], AWS_TIME).unwrap_err();
        assert_eq!(e.code, "AuthorizationQueryParametersError");
        assert!(e.message.contains("no X-Amz-SignedHeaders"), "{}", e.message);

        let unsigned = [BUCKET_HOST, ("x-amz-acl", "public-read")];
        let e = check(Method::GET, PRESIGNED, &unsigned, AWS_TIME).unwrap_err();
        assert_eq!(e.code, "AccessDenied");
        assert_eq!(e.details.last(), Some(&("HeadersNotSigned", "x-amz-acl".to_owned())));
    }

    #[test]
    fn session_tokens_are_refused_with_the_reason() {
        let uri = format!("{PRESIGNED}&X-Amz-Security-Token=abc");
        let e = check(Method::GET, &uri, &[BUCKET_HOST], AWS_TIME).unwrap_err();
        assert_eq!(e.code, "InvalidToken");
        assert!(e.message.contains("no session tokens"), "{}", e.message);
    }

    #[test]
    fn a_tampered_header_does_not_match_and_the_error_never_shows_the_secret() {
        let mut headers = get_object(GET_OBJECT_SIGNATURE);
        headers[1].1 = "bytes=0-99".into();
        let e = check(Method::GET, "/test.txt", &borrowed(&headers), AWS_TIME).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "SignatureDoesNotMatch"));
        let canonical = &e
            .details
            .iter()
            .find(|(n, _)| *n == "CanonicalRequest")
            .expect("shown")
            .1;
        assert!(canonical.contains("\nrange:bytes=0-99\n"), "{canonical}");
        let document = e.to_xml("r");
        assert!(
            !document.contains(SECRET) && !document.contains("bPxRfiCY"),
            "{document}"
        );
        assert!(
            document.contains("<StringToSign>AWS4-HMAC-SHA256\n20130524T000000Z\n"),
            "{document}"
        );
    }

    #[test]
    fn a_wrong_secret_does_not_match() {
        let headers = get_object(GET_OBJECT_SIGNATURE);
        let (uri, map) = head("/test.txt", &borrowed(&headers));
        let keys = Map(HashMap::from([(AKID.to_owned(), "not the secret".to_owned())]));
        let e = verify(&Method::GET, &uri, &map, &keys, at(AWS_TIME)).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
    }

    #[test]
    fn an_unknown_key_is_named_in_the_error() {
        let headers = get_object(GET_OBJECT_SIGNATURE);
        let (uri, map) = head("/test.txt", &borrowed(&headers));
        let e = verify(&Method::GET, &uri, &map, &Map(HashMap::new()), at(AWS_TIME)).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "InvalidAccessKeyId"));
        assert!(e.message.contains("weft s3 credentials"), "{}", e.message);
        assert_eq!(e.details, vec![("AWSAccessKeyId", AKID.to_owned())]);
    }

    #[test]
    fn requests_more_than_15_minutes_off_are_too_skewed() {
        let headers = get_object(GET_OBJECT_SIGNATURE);
        for now in [AWS_TIME - 900, AWS_TIME + 900] {
            check(Method::GET, "/test.txt", &borrowed(&headers), now).expect("within skew");
        }
        for now in [AWS_TIME - 901, AWS_TIME + 901] {
            let e = check(Method::GET, "/test.txt", &borrowed(&headers), now).unwrap_err();
            assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "RequestTimeTooSkewed"));
            assert!(e.message.contains("clock"), "{}", e.message);
        }
    }

    #[test]
    fn keys_with_spaces_unicode_and_plus_verify_however_the_client_encoded_them() {
        let amz_date = "20130524T000000Z";
        // What S3 signs for key `my photos/ü+1.txt` and prefix `a b+c/`.
        let path = "/bucket/my%20photos/%C3%BC%2B1.txt";
        let query = "prefix=a%20b%2Bc%2F&x-id=GetObject";
        let base = [
            ("host", "localhost:9000"),
            ("x-amz-content-sha256", UNSIGNED_PAYLOAD),
            ("x-amz-date", amz_date),
        ];
        let signature = sign("GET", path, query, &base, UNSIGNED_PAYLOAD, amz_date);
        let authorization = auth("host;x-amz-content-sha256;x-amz-date", &signature);
        let mut headers = base.to_vec();
        headers.push(("authorization", &authorization));
        for uri in [
            "/bucket/my%20photos/%C3%BC%2B1.txt?prefix=a%20b%2Bc%2F&x-id=GetObject",
            // In the query, as S3 reads it, `+` is a space.
            "/bucket/my%20photos/%c3%bc+1.txt?x-id=GetObject&prefix=a+b%2Bc/",
            "/bucket/my%20photos/%C3%BC%2b1.txt?prefix=a%20b%2bc%2f&x-id=GetObject",
        ] {
            let verified = check(Method::GET, uri, &headers, AWS_TIME).expect(uri);
            assert_eq!(verified.payload, Payload::Unsigned);
        }
        // `+` is a plus, never a space: a client that meant a space signed another key.
        let e = check(
            Method::GET,
            "/bucket/my+photos/%C3%BC%2B1.txt?prefix=a%20b%2Bc%2F&x-id=GetObject",
            &headers,
            AWS_TIME,
        )
        .unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
        // Nor does a query whose `%2B` became `+`: it names another prefix.
        let e = check(
            Method::GET,
            "/bucket/my%20photos/%C3%BC%2B1.txt?prefix=a%20b+c%2F&x-id=GetObject",
            &headers,
            AWS_TIME,
        )
        .unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
    }

    #[test]
    fn dot_segments_and_empty_values_are_signed_as_sent() {
        let amz_date = "20130524T000000Z";
        let base = [("host", "h"), ("x-amz-content-sha256", EMPTY), ("x-amz-date", amz_date)];
        let signature = sign("GET", "/b/./a/../k", "acl=&uploads=", &base, EMPTY, amz_date);
        let authorization = auth("host;x-amz-content-sha256;x-amz-date", &signature);
        let mut headers = base.to_vec();
        headers.push(("authorization", &authorization));
        check(Method::GET, "/b/./a/../k?uploads&acl=", &headers, AWS_TIME).expect("verifies");
        let e = check(Method::GET, "/b/k?uploads&acl=", &headers, AWS_TIME).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
    }

    #[test]
    fn header_values_are_trimmed_collapsed_and_joined() {
        let amz_date = "20130524T000000Z";
        let signed = [
            ("host", "h"),
            ("x-amz-content-sha256", EMPTY),
            ("x-amz-date", amz_date),
            ("x-amz-meta-tags", "a b,c"),
        ];
        let signature = sign("GET", "/b/k", "", &signed, EMPTY, amz_date);
        let authorization = auth("host;x-amz-content-sha256;x-amz-date;x-amz-meta-tags", &signature);
        let headers = [
            ("host", "h"),
            ("x-amz-content-sha256", EMPTY),
            ("x-amz-date", amz_date),
            ("x-amz-meta-tags", "  a    b "),
            ("x-amz-meta-tags", "c"),
            ("authorization", &authorization),
        ];
        check(Method::GET, "/b/k", &headers, AWS_TIME).expect("verifies");
    }

    #[test]
    fn the_date_header_stands_in_for_x_amz_date() {
        let base = [
            ("date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("host", "h"),
            ("x-amz-content-sha256", EMPTY),
        ];
        let signature = sign("GET", "/b/k", "", &base, EMPTY, "20130524T000000Z");
        let authorization = auth("date;host;x-amz-content-sha256", &signature);
        let mut headers = base.to_vec();
        headers.push(("authorization", &authorization));
        check(Method::GET, "/b/k", &headers, AWS_TIME).expect("verifies");
        headers.retain(|(n, _)| *n != "date");
        let e = check(Method::GET, "/b/k", &headers, AWS_TIME).unwrap_err();
        assert_eq!(e.code, "AccessDenied");
        assert!(e.message.contains("Date or x-amz-date"), "{}", e.message);
    }

    #[test]
    fn unsigned_amz_headers_are_refused_but_unsigned_content_sha256_is_not() {
        let amz_date = "20130524T000000Z";
        let base = [("host", "h"), ("x-amz-date", amz_date)];
        let signature = sign("PUT", "/b/k", "", &base, UNSIGNED_PAYLOAD, amz_date);
        let authorization = auth("host;x-amz-date", &signature);
        let mut headers = vec![
            ("host", "h"),
            ("x-amz-date", amz_date),
            ("x-amz-content-sha256", UNSIGNED_PAYLOAD),
            ("authorization", &authorization),
        ];
        check(Method::PUT, "/b/k", &headers, AWS_TIME).expect("verifies");
        headers.push(("x-amz-copy-source", "/other/secret"));
        headers.push(("x-amz-acl", "public-read"));
        let e = check(Method::PUT, "/b/k", &headers, AWS_TIME).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "AccessDenied"));
        assert_eq!(
            e.details,
            vec![("HeadersNotSigned", "x-amz-acl, x-amz-copy-source".to_owned())]
        );
    }

    #[test]
    fn streaming_payloads_hand_over_a_chunk_signer_seeded_with_the_signature() {
        // "Transferring Payload in Multiple Chunks" (sigv4-streaming): the seed request.
        let seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
        let verified = streaming_example(seed, STREAMING_SIGNED, "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class", &[("content-length", "66824")]).expect("verifies");
        let Payload::StreamingSigned(signer) = verified.payload else {
            panic!("not streaming: {:?}", verified.payload);
        };
        assert_eq!(hex(&signer.seed()), seed);
        assert!(!signer.signs_trailer());
        assert!(!format!("{signer:?}").contains(&hex(&signer.key)));
    }

    /// The seed request of AWS's chunked-upload examples, signed as `signed_headers`.
    pub(crate) fn streaming_example(
        signature: &str,
        content_sha256: &str,
        signed_headers: &str,
        extra: &[(&str, &str)],
    ) -> Result<Verified, S3Error> {
        let authorization = auth(signed_headers, signature);
        let mut headers = vec![
            ("host", "s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", content_sha256),
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "66560"),
            ("authorization", &authorization),
        ];
        headers.extend_from_slice(extra);
        check(Method::PUT, "/examplebucket/chunkObject.txt", &headers, AWS_TIME)
    }

    #[test]
    fn a_wrong_content_sha256_is_refused_before_any_signature_work() {
        let mut headers = get_object(GET_OBJECT_SIGNATURE);
        headers[2].1 = "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD".into();
        let e = check(Method::GET, "/test.txt", &borrowed(&headers), AWS_TIME).unwrap_err();
        assert_eq!(e.code, "InvalidArgument");
        headers.remove(2);
        let e = check(Method::GET, "/test.txt", &borrowed(&headers), AWS_TIME).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "InvalidRequest"));
        assert!(e.message.contains("missing x-amz-content-sha256"), "{}", e.message);
    }

    #[test]
    fn malformed_authorization_headers_say_what_is_wrong() {
        let sig = GET_OBJECT_SIGNATURE;
        let scope = "20130524/us-east-1/s3/aws4_request";
        let cases = [
            (
                format!("AWS4-HMAC-SHA256 Credential={AKID}/{scope}, SignedHeaders=host"),
                "no Signature=",
            ),
            (
                format!("AWS4-HMAC-SHA256 SignedHeaders=host, Signature={sig}"),
                "no Credential=",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={AKID}/{scope}, Signature={sig}"),
                "no SignedHeaders=",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/s3, SignedHeaders=host, Signature={sig}"
                ),
                "is malformed",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/iam/aws4_request, SignedHeaders=host, Signature={sig}"
                ),
                "service `iam`",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/s3/aws5_request, SignedHeaders=host, Signature={sig}"
                ),
                "`aws5_request`",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential={AKID}/2013-05-24/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={sig}"
                ),
                "not YYYYMMDD",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential={AKID}/20130525/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={sig}"
                ),
                "Invalid credential date",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={AKID}/{scope}, SignedHeaders=range;x-amz-date, Signature={sig}"),
                "does not include `host`",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={AKID}/{scope}, SignedHeaders=Host;range, Signature={sig}"),
                "lowercase",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={AKID}/{scope}, SignedHeaders=host;;range, Signature={sig}"),
                "lowercase",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={AKID}/{scope}, SignedHeaders=host, Signature=abc"),
                "not 64 hexadecimal",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential={AKID}/{scope}, SignedHeaders=host, Signature={}",
                    "zz".repeat(32)
                ),
                "not 64 hexadecimal",
            ),
            (
                format!(
                    "AWS4-HMAC-SHA256 Credential={AKID}/{scope}, Credential={AKID}/{scope}, SignedHeaders=host, Signature={sig}"
                ),
                "appears twice",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={AKID}/{scope}, Region=x, SignedHeaders=host, Signature={sig}"),
                "unknown field `Region`",
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={AKID}/{scope} SignedHeaders=host, Signature={sig}"),
                "no SignedHeaders=",
            ),
            (
                format!("AWS4-HMAC-SHA1 Credential={AKID}/{scope}, SignedHeaders=host, Signature={sig}"),
                "`AWS4-HMAC-SHA1`",
            ),
            ("Bearer abc".to_owned(), "`Bearer`"),
        ];
        for (authorization, says) in cases {
            let mut headers = get_object(sig);
            headers[4].1 = authorization.clone();
            let e = check(Method::GET, "/test.txt", &borrowed(&headers), AWS_TIME).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::BAD_REQUEST, "AuthorizationHeaderMalformed"),
                "{authorization}: {e}"
            );
            assert!(e.message.contains(says), "{authorization}: {}", e.message);
        }
    }

    #[test]
    fn other_signature_versions_are_refused_with_how_to_switch() {
        for authorization in [
            "AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=",
            "AWS4-ECDSA-P256-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/s3/aws4_request, SignedHeaders=host, Signature=00",
        ] {
            let mut headers = get_object(GET_OBJECT_SIGNATURE);
            headers[4].1 = authorization.to_owned();
            let e = check(Method::GET, "/test.txt", &borrowed(&headers), AWS_TIME).unwrap_err();
            assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "InvalidRequest"));
            assert!(e.message.contains("s3v4"), "{}", e.message);
        }
        let e = check(
            Method::GET,
            "/k?AWSAccessKeyId=A&Expires=1&Signature=x",
            &[BUCKET_HOST],
            AWS_TIME,
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidRequest");
    }

    #[test]
    fn unsigned_requests_are_denied_with_where_to_get_a_key() {
        let e = check(Method::GET, "/test.txt", &[BUCKET_HOST], AWS_TIME).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "AccessDenied"));
        assert!(e.message.contains("Signature Version 4") && e.message.contains("weft s3 credentials"));
    }

    #[test]
    fn a_header_and_a_presigned_query_together_are_refused() {
        let headers = get_object(GET_OBJECT_SIGNATURE);
        let e = check(Method::GET, PRESIGNED, &borrowed(&headers), AWS_TIME).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "InvalidArgument"));
    }

    #[test]
    fn secrets_never_print() {
        assert_eq!(format!("{:?}", Secret(SECRET.into())), "***");
    }

    #[test]
    fn hex_round_trips() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(unhex32(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex32(&hex(&bytes).to_uppercase()), Some(bytes));
        assert_eq!(unhex32("+1"), None);
    }

    #[test]
    fn what_sign_signs_verifies_and_a_changed_path_does_not() {
        struct One;
        impl Keys for One {
            fn secret(&self, id: &str) -> Option<Secret> {
                (id == "WEFTKEY").then(|| Secret("s3cr3t/+".into()))
            }
        }
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let uri: Uri = "http://127.0.0.1:9000/bucket/a%20b/c+d?partNumber=1&uploadId=x"
            .parse()
            .unwrap();
        let mut headers = HeaderMap::new();
        super::sign(
            &Method::PUT,
            &uri,
            &mut headers,
            "WEFTKEY",
            &Secret("s3cr3t/+".into()),
            "local",
            now,
        );
        let verified = verify(&Method::PUT, &uri, &headers, &One, now).unwrap();
        assert_eq!(
            (verified.access_key_id.as_str(), verified.payload),
            ("WEFTKEY", Payload::Unsigned)
        );
        let other: Uri = "http://127.0.0.1:9000/bucket/a%20b/c+e?partNumber=1&uploadId=x"
            .parse()
            .unwrap();
        let e = verify(&Method::PUT, &other, &headers, &One, now).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
    }

    #[test]
    fn an_encoded_slash_in_a_key_is_signed_as_sent() {
        struct One;
        impl Keys for One {
            fn secret(&self, id: &str) -> Option<Secret> {
                (id == "WEFTKEY").then(|| Secret("s".into()))
            }
        }
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let uri: Uri = "http://h/uploads/..%2F..%2Fetc%2Fpasswd".parse().unwrap();
        let mut headers = HeaderMap::new();
        super::sign(
            &Method::GET,
            &uri,
            &mut headers,
            "WEFTKEY",
            &Secret("s".into()),
            "us-east-1",
            now,
        );
        assert!(verify(&Method::GET, &uri, &headers, &One, now).is_ok());
        // The same key with its slashes sent bare is another path.
        let bare: Uri = "http://h/uploads/../../etc/passwd".parse().unwrap();
        let e = verify(&Method::GET, &bare, &headers, &One, now).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
    }
}
