//! The S3 REST protocol, as weft's object buckets speak it.
//!
//! This crate knows no storage, no node and no HTTP server: it turns a
//! request's head into an [`Operation`], checks its Signature Version 4
//! ([`sigv4`]), decodes `aws-chunked` bodies ([`chunked`]), and renders
//! and reads S3's XML ([`xml`]). Every failure is an [`S3Error`] with S3's
//! code, so existing clients (the AWS CLI, boto3, the Rust SDK) read it.
//!
//! - [`error`]: `S3Error`, its status, code and XML.
//! - [`names`]: S3's rules for bucket names and object keys.
//! - [`request`]: method, path and query into an [`Operation`]; `Range`
//!   and the conditional headers.
//! - [`sigv4`]: Signature Version 4, in the `Authorization` header and in
//!   presigned URLs.
//! - [`chunked`]: `aws-chunked` bodies, signed or with trailing checksums.
//! - [`xml`]: the XML bodies S3 answers and the ones it reads.

pub mod chunked;
pub mod error;
pub mod names;
pub mod request;
pub mod sigv4;
pub mod xml;

pub use error::S3Error;
pub use request::Operation;
pub use sigv4::hex;

/// S3's XML namespace.
pub const NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
