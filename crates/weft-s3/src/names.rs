//! S3's rules for bucket names and object keys.
//!
//! Bucket names follow S3's rules for general-purpose buckets, so a name weft
//! accepts is also a DNS label for virtual-hosted requests
//! (`BUCKET.s3.weft.internal`) and a name AWS itself would take. Keys are
//! nearly free text; the one thing weft adds to S3's rules is refusing
//! control characters.

use http::StatusCode;

use crate::S3Error;
use crate::xml::printable;

/// The longest object key S3 accepts, in bytes of UTF-8.
pub const MAX_KEY: usize = 1024;

/// Prefixes S3 reserves: `xn--` for punycode labels, the others for AWS's own
/// buckets and documentation examples.
const RESERVED_PREFIXES: [&str; 3] = ["xn--", "sthree-", "amzn-s3-demo-"];

/// Suffixes S3 reserves for other kinds of bucket-shaped names.
const RESERVED_SUFFIXES: [(&str, &str); 5] = [
    ("-s3alias", "access point aliases"),
    ("--ol-s3", "Object Lambda access point aliases"),
    (".mrap", "Multi-Region Access Points"),
    ("--x-s3", "directory buckets"),
    ("--table-s3", "table buckets"),
];

/// Checks `name` against S3's naming rules for general-purpose buckets.
///
/// The error says what is wrong and how to fix it, for a person; callers
/// wrap it in the error their context needs (`InvalidBucketName` for a
/// request, a manifest diagnostic for `weft.toml`).
pub fn check_bucket(name: &str) -> Result<(), String> {
    if let Some((at, c)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'))
    {
        let fix = if c.is_ascii_uppercase() {
            format!("use `{}`", name.to_ascii_lowercase())
        } else {
            "remove it".to_string()
        };
        // Only here can the name hold a control character; `printable` keeps the message readable XML.
        return Err(format!(
            "bucket name `{}` has `{}` at byte {at}; bucket names use only lowercase letters, digits, `.` \
             and `-`, so {fix}",
            printable(name),
            printable(c.encode_utf8(&mut [0; 4])),
        ));
    }
    if !(3..=63).contains(&name.len()) {
        return Err(format!(
            "bucket name `{name}` is {} characters long; bucket names are 3 to 63 characters",
            name.len()
        ));
    }
    let bytes = name.as_bytes();
    for end in [bytes[0], bytes[bytes.len() - 1]] {
        if !end.is_ascii_alphanumeric() {
            return Err(format!(
                "bucket name `{name}` begins or ends with `{}`; bucket names begin and end with a \
                 letter or digit",
                end as char
            ));
        }
    }
    if let Some(at) = name.find("..") {
        return Err(format!(
            "bucket name `{name}` has two adjacent periods at byte {at}; put a letter or digit \
             between them"
        ));
    }
    if looks_like_ipv4(name) {
        return Err(format!(
            "bucket name `{name}` is formatted as an IP address; S3 refuses such names, so add a \
             letter to it"
        ));
    }
    if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| name.starts_with(*p)) {
        return Err(format!(
            "bucket name `{name}` begins with `{prefix}`, which S3 reserves; choose a name without it"
        ));
    }
    if let Some((suffix, what)) = RESERVED_SUFFIXES.iter().find(|(s, _)| name.ends_with(s)) {
        return Err(format!(
            "bucket name `{name}` ends with `{suffix}`, which S3 reserves for {what}; choose a name \
             without it"
        ));
    }
    Ok(())
}

/// Four dot-separated groups of digits, such as `192.168.5.4`. S3 refuses
/// these whether or not each group fits in a byte.
fn looks_like_ipv4(name: &str) -> bool {
    let groups: Vec<&str> = name.split('.').collect();
    groups.len() == 4
        && groups
            .iter()
            .all(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks an object key: 1 to [`MAX_KEY`] bytes of UTF-8 without control
/// characters.
///
/// S3 allows control characters, but XML 1.0 cannot carry most of them, so a
/// listing that contains one breaks clients that do not ask for
/// `encoding-type=url`; weft refuses U+0000–U+001F and U+007F instead.
///
/// `..` segments, a leading `/` and repeated `/` are ordinary key text, as in
/// S3: storage never turns a key into a file path, so they cannot escape
/// anything.
pub fn check_key(key: &str) -> Result<(), S3Error> {
    if key.is_empty() {
        return Err(S3Error::invalid_argument(
            "the object key is empty; keys are 1 to 1024 bytes of UTF-8",
        ));
    }
    if key.len() > MAX_KEY {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "KeyTooLongError",
            format!(
                "the object key is {} bytes of UTF-8; keys are at most {MAX_KEY} bytes, so shorten it",
                key.len()
            ),
        ));
    }
    // Bytes below 0x80 are whole characters in UTF-8, so the byte is the character.
    if let Some(at) = key.bytes().position(|b| b < 0x20 || b == 0x7f) {
        return Err(S3Error::invalid_argument(format!(
            "the object key has control character U+{:04X} at byte {at}; weft refuses U+0000–U+001F \
             and U+007F in keys because S3's XML listings cannot carry them, so rename the object \
             without it",
            key.as_bytes()[at]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_s3_accepts_are_accepted() {
        for name in [
            "abc",
            "docs",
            "my-bucket.example.com",
            "a1b2c3",
            "123",
            "1.2.3",
            "1.2.3.4a",
            &"a".repeat(63),
            "xn-not-punycode",
            "bucket-s3alias-not-at-end",
        ] {
            assert_eq!(check_bucket(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn buckets_breaking_a_rule_are_refused_with_the_rule() {
        let cases: &[(&str, &str)] = &[
            ("ab", "3 to 63"),
            ("", "3 to 63"),
            (&"a".repeat(64), "3 to 63"),
            ("MyBucket", "use `mybucket`"),
            ("my_bucket", "`_` at byte 2"),
            ("café", "`é`"),
            ("a\u{1}b", "`a\\u{1}b` has `\\u{1}` at byte 1"),
            ("-abc", "begin and end"),
            ("abc.", "begin and end"),
            ("a..b", "adjacent periods at byte 1"),
            ("192.168.5.4", "IP address"),
            ("999.1.1.1", "IP address"),
            ("xn--abc", "`xn--`"),
            ("sthree-abc", "`sthree-`"),
            ("sthree-configurator-x", "`sthree-`"),
            ("amzn-s3-demo-bucket", "`amzn-s3-demo-`"),
            ("photos-s3alias", "access point aliases"),
            ("photos--ol-s3", "Object Lambda"),
            ("photos.mrap", "Multi-Region"),
            ("photos--x-s3", "directory buckets"),
            ("photos--table-s3", "table buckets"),
        ];
        for (name, says) in cases {
            let message = check_bucket(name).expect_err(name);
            assert!(message.contains(says), "{name}: {message}");
        }
    }

    #[test]
    fn keys_are_utf8_text_up_to_1024_bytes() {
        for key in [
            "a",
            "photos/2025/01/cat.jpg",
            "../../etc/passwd",
            "/leading",
            "dir/",
            "a//b",
            "ключ 🔑",
        ] {
            assert_eq!(check_key(key), Ok(()), "{key}");
        }
        assert_eq!(check_key(&"é".repeat(512)), Ok(()));
        let long = check_key(&"a".repeat(1025)).unwrap_err();
        assert_eq!((long.status, long.code), (StatusCode::BAD_REQUEST, "KeyTooLongError"));
        assert!(long.message.contains("1025 bytes"));
        assert_eq!(check_key("").unwrap_err().code, "InvalidArgument");
    }

    #[test]
    fn keys_with_control_characters_are_refused_at_their_offset() {
        for (key, says) in [
            ("ab\ncd", "U+000A at byte 2"),
            ("\0", "U+0000 at byte 0"),
            ("é\x7f", "U+007F at byte 2"),
        ] {
            let e = check_key(key).unwrap_err();
            assert_eq!(e.code, "InvalidArgument");
            assert!(e.message.contains(says), "{key:?}: {}", e.message);
        }
    }
}
