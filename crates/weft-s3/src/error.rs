//! S3's errors: an HTTP status, a code clients match on, and a message.

use http::StatusCode;

/// One S3 error, rendered as S3's `<Error>` document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct S3Error {
    pub status: StatusCode,
    /// `NoSuchKey`, `SignatureDoesNotMatch`, ...
    pub code: &'static str,
    /// What went wrong and how to fix it, for a person.
    pub message: String,
    /// The bucket or key it is about (`<Resource>`), if any.
    pub resource: Option<String>,
    /// More elements of the document, in order (`<Key>`, `<BucketName>`,
    /// `<StringToSign>` ...).
    pub details: Vec<(&'static str, String)>,
}

impl S3Error {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> S3Error {
        S3Error {
            status,
            code,
            message: message.into(),
            resource: None,
            details: Vec::new(),
        }
    }

    /// Adds `<NAME>VALUE</NAME>` to the document.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> S3Error {
        self.details.push((name, value.into()));
        self
    }

    /// Sets `<Resource>`.
    pub fn on(mut self, resource: impl Into<String>) -> S3Error {
        self.resource = Some(resource.into());
        self
    }

    pub fn invalid_argument(message: impl Into<String>) -> S3Error {
        S3Error::new(StatusCode::BAD_REQUEST, "InvalidArgument", message)
    }

    pub fn invalid_request(message: impl Into<String>) -> S3Error {
        S3Error::new(StatusCode::BAD_REQUEST, "InvalidRequest", message)
    }

    pub fn malformed_xml(message: impl Into<String>) -> S3Error {
        S3Error::new(StatusCode::BAD_REQUEST, "MalformedXML", message)
    }

    pub fn no_such_bucket(bucket: &str) -> S3Error {
        S3Error::new(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            format!("no bucket named `{bucket}`; buckets are declared as [bucket.NAME] in weft.toml"),
        )
        .with("BucketName", bucket)
    }

    pub fn no_such_key(key: &str) -> S3Error {
        S3Error::new(StatusCode::NOT_FOUND, "NoSuchKey", "the specified key does not exist").with("Key", key)
    }

    pub fn no_such_upload(upload_id: &str) -> S3Error {
        S3Error::new(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "no such multipart upload; it may have been completed or aborted",
        )
        .with("UploadId", upload_id)
    }

    pub fn access_denied(message: impl Into<String>) -> S3Error {
        S3Error::new(StatusCode::FORBIDDEN, "AccessDenied", message)
    }

    pub fn not_implemented(what: &str) -> S3Error {
        S3Error::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            format!("{what} is not implemented by weft"),
        )
    }

    pub fn internal(message: impl Into<String>) -> S3Error {
        S3Error::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// S3's `<Error>` document (which has no namespace).
    pub fn to_xml(&self, request_id: &str) -> String {
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>");
        crate::xml::element(&mut x, "Code", self.code);
        crate::xml::element(&mut x, "Message", &self.message);
        for (name, value) in &self.details {
            crate::xml::element(&mut x, name, value);
        }
        if let Some(resource) = &self.resource {
            crate::xml::element(&mut x, "Resource", resource);
        }
        crate::xml::element(&mut x, "RequestId", request_id);
        x.push_str("</Error>");
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_as_s3_documents_with_escaped_text() {
        let e = S3Error::no_such_key("a<b>&c").on("/photos/a<b>&c");
        assert_eq!(
            e.to_xml("req-1"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>\
             <Message>the specified key does not exist</Message><Key>a&lt;b&gt;&amp;c</Key>\
             <Resource>/photos/a&lt;b&gt;&amp;c</Resource><RequestId>req-1</RequestId></Error>"
        );
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }
}
