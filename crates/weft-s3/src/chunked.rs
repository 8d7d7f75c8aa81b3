//! `aws-chunked` bodies: the framing S3 clients stream an upload in when
//! they sign every chunk or send a checksum after the data.
//!
//! On the wire: `SIZE-IN-HEX[;chunk-signature=SIG]\r\n`, the data, `\r\n`,
//! repeated; a last chunk of size 0; trailer lines `name:value\r\n` (with
//! signed trailers, `x-amz-trailer-signature:SIG\r\n` last); an empty line.
//!
//! [`Decoder`] takes the wire body in whatever slices the connection
//! yields and returns the data; [`Decoder::finish`] returns the trailers
//! once the body is complete. Memory stays bounded: a line is at most
//! 4 KiB and a chunk at most `max_chunk`. Unsigned data passes through as
//! it arrives; a signed chunk is held until its signature is checked, so
//! no unverified byte reaches the caller. Comparing a trailing checksum
//! with the data is the caller's job ([`checksum_matches`] does CRC32).
//!
//! ```
//! use weft_s3::chunked::Decoder;
//!
//! let mut decoder = Decoder::new(None, 16 << 20);
//! let mut data = Vec::new();
//! for piece in ["5\r\nhel", "lo\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n", "\r\n"] {
//!     data.extend(decoder.feed(piece.into())?);
//! }
//! assert_eq!(data.concat(), b"hello");
//! assert_eq!(decoder.finish()?, [("x-amz-checksum-crc32".to_owned(), "NhCmhg==".to_owned())]);
//! # Ok::<(), weft_s3::S3Error>(())
//! ```

use std::fmt;

use base64::Engine;
use bytes::{Buf, Bytes};
use http::StatusCode;
use sha2::{Digest, Sha256};

use crate::S3Error;
use crate::sigv4::{ChunkSigner, unhex32};

/// The longest chunk-size or trailer line taken, `\r\n` included.
const MAX_LINE: usize = 4096;
/// The most trailers taken; S3 clients send one checksum.
const MAX_TRAILERS: usize = 16;

/// Decodes one `aws-chunked` body, fed in arbitrary slices.
pub struct Decoder {
    state: State,
    signer: Option<ChunkSigner>,
    max_chunk: usize,
    /// The line being read, until its `\r\n`.
    line: Vec<u8>,
    /// Chunks begun so far; errors name the chunk by it.
    chunk: u64,
    /// Data bytes returned so far.
    decoded: u64,
    /// Signed bodies: the current chunk's data, held until it is verified.
    held: Vec<Bytes>,
    /// Signed bodies: hash of the current chunk's data.
    hash: Sha256,
    /// Signed bodies: the signature the current chunk claims.
    claimed: [u8; 32],
    /// Signed bodies: the seed, then the last verified chunk's signature.
    previous: [u8; 32],
    /// Signed trailers: hash of the trailer lines, each `name:value\n`.
    trailer_hash: Sha256,
    trailer_verified: bool,
    trailers: Vec<(String, String)>,
}

#[derive(Debug)]
enum State {
    /// Reading a chunk's size line.
    Size,
    /// Inside a chunk's data, `left` bytes to go.
    Data { left: u64 },
    /// After a chunk's data, `seen` bytes of its `\r\n` read.
    DataEnd { seen: usize },
    /// After the last, empty chunk: trailer lines until an empty one.
    Trailers,
    /// Complete; nothing may follow.
    Done,
    /// Rejected; every later call answers the same error.
    Failed(S3Error),
}

impl Decoder {
    /// A decoder for a body signed chunk by chunk (`signer` from
    /// [`crate::sigv4::Payload::StreamingSigned`]) or not (`None`), taking
    /// chunks of at most `max_chunk` bytes.
    pub fn new(signer: Option<ChunkSigner>, max_chunk: usize) -> Decoder {
        let previous = signer.as_ref().map(ChunkSigner::seed).unwrap_or_default();
        Decoder {
            state: State::Size,
            signer,
            max_chunk,
            line: Vec::new(),
            chunk: 0,
            decoded: 0,
            held: Vec::new(),
            hash: Sha256::new(),
            claimed: [0; 32],
            previous,
            trailer_hash: Sha256::new(),
            trailer_verified: false,
            trailers: Vec::new(),
        }
    }

    /// Feeds wire bytes; returns decoded data bytes available so far (may be empty).
    ///
    /// After an error the body is rejected and every later call fails the same way.
    pub fn feed(&mut self, mut input: Bytes) -> Result<Vec<Bytes>, S3Error> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        let mut out = Vec::new();
        while !input.is_empty() {
            if let Err(e) = self.step(&mut input, &mut out) {
                self.state = State::Failed(e.clone());
                return Err(e);
            }
        }
        Ok(out)
    }

    /// At the end of the wire body: Ok(trailers) if the body was complete, else IncompleteBody 400.
    ///
    /// Trailer names are lowercased, values trimmed.
    pub fn finish(self) -> Result<Vec<(String, String)>, S3Error> {
        let incomplete = |what: String| {
            S3Error::new(
                StatusCode::BAD_REQUEST,
                "IncompleteBody",
                format!("the aws-chunked body {what}; the client sent less than it framed"),
            )
        };
        match self.state {
            State::Done => Ok(self.trailers),
            State::Failed(e) => Err(e),
            State::Size if self.chunk == 0 && self.line.is_empty() => Err(incomplete(
                "is empty: it must end with a chunk of size 0 and an empty line".into(),
            )),
            State::Size | State::DataEnd { .. } => Err(incomplete(format!(
                "ended after chunk {}, without the last chunk of size 0",
                self.chunk
            ))),
            State::Data { left } => Err(incomplete(format!(
                "ended inside chunk {}, {left} bytes short",
                self.chunk
            ))),
            State::Trailers => Err(incomplete(
                "ended in its trailers, before the empty line that closes it".into(),
            )),
        }
    }

    /// Data bytes returned so far, to compare with `x-amz-decoded-content-length`.
    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    fn step(&mut self, input: &mut Bytes, out: &mut Vec<Bytes>) -> Result<(), S3Error> {
        match self.state {
            State::Size => {
                if let Some(line) = self.take_line(input)? {
                    self.start_chunk(&line, out)?;
                }
            }
            State::Data { left } => {
                let n = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let piece = input.split_to(n);
                let left = left - n as u64;
                if self.signer.is_some() {
                    self.hash.update(&piece);
                    self.held.push(piece);
                } else {
                    self.decoded += n as u64;
                    out.push(piece);
                }
                self.state = State::Data { left };
                if left == 0 {
                    self.end_chunk(out)?;
                    self.state = State::DataEnd { seen: 0 };
                }
            }
            State::DataEnd { seen } => {
                if input[0] != b"\r\n"[seen] {
                    return Err(S3Error::invalid_argument(format!(
                        "chunk {} holds more data than its size line says: the data is not \
                         followed by CRLF",
                        self.chunk
                    )));
                }
                input.advance(1);
                self.state = match seen {
                    0 => State::DataEnd { seen: 1 },
                    _ => State::Size,
                };
            }
            State::Trailers => {
                if let Some(line) = self.take_line(input)? {
                    self.trailer(&line)?;
                }
            }
            State::Done => {
                return Err(S3Error::invalid_argument(
                    "bytes follow the end of the aws-chunked body (the empty line after the last \
                     chunk); the body must end there",
                ));
            }
            State::Failed(ref e) => return Err(e.clone()),
        }
        Ok(())
    }

    /// Reads up to and including `\r\n`; the line without it once complete.
    fn take_line(&mut self, input: &mut Bytes) -> Result<Option<Vec<u8>>, S3Error> {
        let end = input.iter().position(|&b| b == b'\n');
        let take = end.map_or(input.len(), |i| i + 1);
        if self.line.len() + take > MAX_LINE {
            let what = match self.state {
                State::Trailers => "a trailer line".to_owned(),
                _ => format!("the size line of chunk {}", self.chunk + 1),
            };
            return Err(S3Error::invalid_argument(format!(
                "{what} is longer than {MAX_LINE} bytes; aws-chunked lines are short, so the body \
                 is not aws-chunked or is corrupt"
            )));
        }
        self.line.extend_from_slice(&input[..take]);
        input.advance(take);
        if end.is_none() {
            return Ok(None);
        }
        let mut line = std::mem::take(&mut self.line);
        line.pop();
        if line.pop() != Some(b'\r') {
            return Err(S3Error::invalid_argument(
                "an aws-chunked line ends in a bare LF; lines end in CRLF",
            ));
        }
        Ok(Some(line))
    }

    /// Reads `SIZE-IN-HEX[;chunk-signature=SIG]`.
    fn start_chunk(&mut self, line: &[u8], out: &mut Vec<Bytes>) -> Result<(), S3Error> {
        self.chunk += 1;
        let n = self.chunk;
        let text = std::str::from_utf8(line)
            .map_err(|_| S3Error::invalid_argument(format!("the size line of chunk {n} is not ASCII")))?;
        let mut parts = text.split(';');
        let size = parts.next().unwrap_or_default();
        let size = Some(size)
            .filter(|s| (1..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| {
                S3Error::invalid_argument(format!(
                    "the size line of chunk {n}, `{}`, does not start with a hexadecimal size",
                    shown(text)
                ))
            })?;
        if size > self.max_chunk as u64 {
            return Err(S3Error::new(
                StatusCode::BAD_REQUEST,
                "InvalidChunkSizeError",
                format!(
                    "chunk {n} is {size} bytes; weft takes aws-chunked chunks of at most {} bytes",
                    self.max_chunk
                ),
            ));
        }
        let mut signature = None;
        for extension in parts {
            let (name, value) = extension.split_once('=').unwrap_or((extension, ""));
            if name.trim() == "chunk-signature" {
                signature = Some(unhex32(value.trim()).ok_or_else(|| {
                    S3Error::invalid_argument(format!(
                        "the chunk-signature of chunk {n}, `{}`, is not 64 hexadecimal digits",
                        shown(value)
                    ))
                })?);
            }
        }
        if self.signer.is_some() {
            self.claimed = signature.ok_or_else(|| {
                signature_mismatch(format!(
                    "chunk {n} has no chunk-signature, but the request was signed as a \
                     STREAMING-AWS4-HMAC-SHA256-PAYLOAD body, where every chunk is"
                ))
            })?;
        }
        if size == 0 {
            self.end_chunk(out)?;
            self.state = State::Trailers;
        } else {
            self.state = State::Data { left: size };
        }
        Ok(())
    }

    /// Verifies a signed chunk and releases its data.
    fn end_chunk(&mut self, out: &mut Vec<Bytes>) -> Result<(), S3Error> {
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        let data: [u8; 32] = std::mem::take(&mut self.hash).finalize().into();
        if !signer.chunk_matches(&self.previous, &data, &self.claimed) {
            return Err(signature_mismatch(format!(
                "the signature of chunk {} does not match its data: the body was changed on the \
                 way, or signed with another key",
                self.chunk
            )));
        }
        self.previous = self.claimed;
        for piece in self.held.drain(..) {
            self.decoded += piece.len() as u64;
            out.push(piece);
        }
        Ok(())
    }

    /// Reads one line after the last chunk: a trailer, the trailer
    /// signature, or the empty line that ends the body.
    fn trailer(&mut self, line: &[u8]) -> Result<(), S3Error> {
        let signs_trailer = self.signer.as_ref().map(ChunkSigner::signs_trailer);
        if line.is_empty() {
            if signs_trailer == Some(true) && !self.trailer_verified {
                return Err(signature_mismatch(
                    "the body ends without x-amz-trailer-signature, but the request was signed \
                     as STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
                ));
            }
            self.state = State::Done;
            return Ok(());
        }
        if signs_trailer == Some(false) {
            return Err(S3Error::invalid_argument(
                "trailers follow the last chunk, but the request was signed as \
                 STREAMING-AWS4-HMAC-SHA256-PAYLOAD, which has none; sign it as \
                 STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            ));
        }
        if self.trailer_verified {
            return Err(S3Error::invalid_argument(
                "a trailer follows x-amz-trailer-signature, which must be the last",
            ));
        }
        let text = std::str::from_utf8(line).map_err(|_| S3Error::invalid_argument("a trailer line is not UTF-8"))?;
        let (name, value) = text.split_once(':').ok_or_else(|| {
            S3Error::invalid_argument(format!("the trailer line `{}` is not name:value", shown(text)))
        })?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "x-amz-trailer-signature" {
            let Some(signer) = &self.signer else {
                return Err(S3Error::invalid_argument(
                    "x-amz-trailer-signature ends a body whose trailers are unsigned \
                     (STREAMING-UNSIGNED-PAYLOAD-TRAILER); drop it or sign the request as \
                     STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
                ));
            };
            let provided = unhex32(value).ok_or_else(|| {
                S3Error::invalid_argument(format!(
                    "x-amz-trailer-signature `{}` is not 64 hexadecimal digits",
                    shown(value)
                ))
            })?;
            let trailers: [u8; 32] = std::mem::take(&mut self.trailer_hash).finalize().into();
            if !signer.trailer_matches(&self.previous, &trailers, &provided) {
                return Err(signature_mismatch(
                    "x-amz-trailer-signature does not match the trailers: they were changed on \
                     the way, or signed with another key",
                ));
            }
            self.trailer_verified = true;
            return Ok(());
        }
        if self.trailers.len() == MAX_TRAILERS {
            return Err(S3Error::invalid_argument(format!(
                "the body has more than {MAX_TRAILERS} trailers"
            )));
        }
        // Signed as sent: each line, then `\n`.
        self.trailer_hash.update(line);
        self.trailer_hash.update(b"\n");
        self.trailers.push((name, value.to_owned()));
        Ok(())
    }
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("state", &self.state)
            .field("signed", &self.signer.is_some())
            .field("chunk", &self.chunk)
            .field("decoded", &self.decoded)
            .finish_non_exhaustive()
    }
}

/// Whether an `x-amz-checksum-crc32` trailer (base64 of the big-endian
/// CRC32) matches `crc32`, the CRC32 of the decoded data. `None` for other
/// names: `crc32c`, `sha1`, `sha256` ... need other hashes, which the
/// caller checks itself.
pub fn checksum_matches(name: &str, value_b64: &str, crc32: u32) -> Option<bool> {
    if !name.eq_ignore_ascii_case("x-amz-checksum-crc32") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(value_b64.trim());
    Some(decoded.is_ok_and(|bytes| bytes == crc32.to_be_bytes()))
}

fn signature_mismatch(message: impl Into<String>) -> S3Error {
    S3Error::new(StatusCode::FORBIDDEN, "SignatureDoesNotMatch", message)
}

/// The start of `text`, short enough to quote in an error.
fn shown(text: &str) -> &str {
    text.char_indices().nth(64).map_or(text, |(i, _)| &text[..i])
}

#[cfg(test)]
mod tests {
    use hmac::{Hmac, Mac};

    use super::*;
    use crate::sigv4::tests::{SECRET, streaming_example};
    use crate::sigv4::{Payload, hex};

    const MAX: usize = 16 << 20;
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    // "Signature Calculations for the Authorization Header: Transferring
    // Payload in Multiple Chunks" (sigv4-streaming), and its sequel with
    // trailing headers (sigv4-streaming-trailers): 65536 + 1024 bytes of `a`.
    const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
    const CHUNKS: [&str; 3] = [
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ];
    const TRAILER_SEED: &str = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e";
    const TRAILER_CHUNKS: [&str; 3] = [
        "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
        "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
        "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
    ];
    const TRAILER_SIGNATURE: &str = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435";

    /// The example's seed request, verified by `sigv4::verify`.
    fn aws_signer() -> ChunkSigner {
        let signed = "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;\
                      x-amz-decoded-content-length;x-amz-storage-class";
        let verified = streaming_example(
            SEED,
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            signed,
            &[("content-length", "66824")],
        );
        match verified.expect("the AWS seed request verifies").payload {
            Payload::StreamingSigned(signer) => signer,
            other => panic!("not a signed stream: {other:?}"),
        }
    }

    /// The trailer example's seed request. AWS prints its SignedHeaders with
    /// `content-length` and without `x-amz-trailer`, but the published seed
    /// signature is over this list (and no Content-Length header).
    fn aws_trailer_signer() -> ChunkSigner {
        let signed = "content-encoding;host;x-amz-content-sha256;x-amz-date;\
                      x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer";
        let verified = streaming_example(
            TRAILER_SEED,
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            signed,
            &[("x-amz-trailer", "x-amz-checksum-crc32c")],
        );
        match verified.expect("the AWS trailer seed request verifies").payload {
            Payload::StreamingSigned(signer) => signer,
            other => panic!("not a signed stream: {other:?}"),
        }
    }

    fn aws_body(signatures: [&str; 3], tail: &str) -> Vec<u8> {
        let mut body = format!("10000;chunk-signature={}\r\n", signatures[0]).into_bytes();
        body.extend([b'a'; 65536]);
        body.extend(format!("\r\n400;chunk-signature={}\r\n", signatures[1]).as_bytes());
        body.extend([b'a'; 1024]);
        body.extend(format!("\r\n0;chunk-signature={}\r\n{tail}\r\n", signatures[2]).as_bytes());
        body
    }

    /// Frames and signs chunks apart from `ChunkSigner`: the key derived
    /// here, the string to sign written out.
    fn frames(seed: &str, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let hmac = |key: &[u8], data: &[u8]| {
            let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        };
        let mut key = format!("AWS4{SECRET}").into_bytes();
        for part in ["20130524", "us-east-1", "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let mut previous = seed.to_owned();
        let mut frames = Vec::new();
        for data in chunks {
            let to_sign = format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
                 {previous}\n{EMPTY}\n{}",
                hex(&Sha256::digest(data))
            );
            previous = hex(&hmac(&key, to_sign.as_bytes()));
            let mut frame = format!("{:x};chunk-signature={previous}\r\n", data.len()).into_bytes();
            frame.extend_from_slice(data);
            if !data.is_empty() {
                frame.extend(b"\r\n");
            }
            frames.push(frame);
        }
        frames
    }

    /// A whole signed body: `chunks`, then an empty one and the closing empty line.
    fn sign_chunks(seed: &str, chunks: &[&[u8]]) -> Vec<u8> {
        let mut all = chunks.to_vec();
        all.push(b"");
        let mut body = frames(seed, &all).concat();
        body.extend(b"\r\n");
        body
    }

    /// The data and trailers of a decoded body.
    type Decoded = (Vec<u8>, Vec<(String, String)>);

    /// Decodes `wire` fed in pieces of the given sizes (the rest in one piece).
    fn decode(
        signer: Option<ChunkSigner>,
        wire: &[u8],
        sizes: impl IntoIterator<Item = usize>,
    ) -> Result<Decoded, S3Error> {
        let mut decoder = Decoder::new(signer, MAX);
        let wire = Bytes::copy_from_slice(wire);
        let mut at = 0;
        let mut data = Vec::new();
        for size in sizes.into_iter().chain([wire.len()]) {
            let end = (at + size).min(wire.len());
            for piece in decoder.feed(wire.slice(at..end))? {
                data.extend_from_slice(&piece);
            }
            at = end;
        }
        Ok((data, decoder.finish()?))
    }

    /// Piece sizes from 1 to `max`, reproducible from `seed`.
    fn random_sizes(mut seed: u64, max: u64) -> impl Iterator<Item = usize> {
        std::iter::from_fn(move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            Some((seed % max + 1) as usize)
        })
        .take(100_000)
    }

    #[test]
    fn the_aws_signed_example_decodes_however_it_is_split() {
        let wire = aws_body(CHUNKS, "");
        assert_eq!(wire.len(), 66824, "the example's Content-Length");
        let expected = (vec![b'a'; 66560], vec![]);
        assert_eq!(decode(Some(aws_signer()), &wire, []).expect("whole"), expected);
        assert_eq!(
            decode(Some(aws_signer()), &wire, std::iter::repeat_n(1, wire.len())).expect("bytewise"),
            expected
        );
        for seed in 1..=8 {
            let sizes = random_sizes(seed, 9000);
            assert_eq!(
                decode(Some(aws_signer()), &wire, sizes).expect("random"),
                expected,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn the_independent_test_signer_reproduces_the_aws_chunk_signatures() {
        let a = [b'a'; 65536];
        let wire = sign_chunks(SEED, &[&a, &a[..1024]]);
        assert_eq!(wire, aws_body(CHUNKS, ""));
    }

    #[test]
    fn signed_data_is_released_only_whole_verified_chunks_at_a_time() {
        let wire = aws_body(CHUNKS, "");
        let mut decoder = Decoder::new(Some(aws_signer()), MAX);
        let mut released = Vec::new();
        for i in 0..wire.len() {
            let out: usize = decoder
                .feed(Bytes::copy_from_slice(&wire[i..=i]))
                .expect("valid")
                .iter()
                .map(Bytes::len)
                .sum();
            if out > 0 {
                released.push(out);
            }
        }
        assert_eq!(released, [65536, 1024]);
        assert_eq!(decoder.decoded_len(), 66560);
        assert_eq!(decoder.finish().expect("complete"), []);
    }

    #[test]
    fn a_tampered_chunk_is_refused_and_none_of_it_released() {
        let mut wire = aws_body(CHUNKS, "");
        let in_second_chunk = wire.len() - 200;
        wire[in_second_chunk] = b'b';
        let mut decoder = Decoder::new(Some(aws_signer()), MAX);
        let mut released = 0;
        let mut error = None;
        for piece in wire.chunks(1000) {
            match decoder.feed(Bytes::copy_from_slice(piece)) {
                Ok(out) => released += out.iter().map(Bytes::len).sum::<usize>(),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let e = error.expect("refused");
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "SignatureDoesNotMatch"));
        assert!(e.message.contains("chunk 2"), "{}", e.message);
        assert_eq!(released, 65536, "only the first, verified chunk");
        assert_eq!(decoder.feed(Bytes::new()).unwrap_err(), e, "stays rejected");
        assert_eq!(decoder.finish().unwrap_err(), e);
    }

    #[test]
    fn chunks_reordered_replayed_or_from_another_seed_are_refused() {
        let signed = frames(SEED, &[b"first", b"second", b""]);
        let whole = [&signed[0][..], &signed[1], &signed[2], b"\r\n"].concat();
        assert_eq!(
            decode(Some(aws_signer()), &whole, []).expect("in order").0,
            b"firstsecond"
        );
        for (wire, chunk) in [
            ([&signed[1][..], &signed[0], &signed[2], b"\r\n"].concat(), "chunk 1"),
            ([&signed[0][..], &signed[0], &signed[2], b"\r\n"].concat(), "chunk 2"),
            ([&signed[0][..], &signed[2], b"\r\n"].concat(), "chunk 2"),
            (sign_chunks(TRAILER_SEED, &[b"first"]), "chunk 1"),
        ] {
            let e = decode(Some(aws_signer()), &wire, []).unwrap_err();
            assert_eq!(e.code, "SignatureDoesNotMatch");
            assert!(e.message.contains(chunk), "{}", e.message);
        }
    }

    #[test]
    fn a_small_signed_body_decodes_split_at_every_boundary_and_fails_at_every_truncation() {
        let wire = sign_chunks(SEED, &[b"hello ", b"world"]);
        for at in 0..=wire.len() {
            let (data, trailers) = decode(Some(aws_signer()), &wire, [at]).expect("split");
            assert_eq!(
                (data.as_slice(), trailers.len()),
                (&b"hello world"[..], 0),
                "split at {at}"
            );
        }
        for end in 0..wire.len() {
            let e = decode(Some(aws_signer()), &wire[..end], []).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::BAD_REQUEST, "IncompleteBody"),
                "cut at {end}"
            );
        }
    }

    #[test]
    fn the_aws_trailer_example_verifies_its_trailer_signature() {
        let tail = format!("x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:{TRAILER_SIGNATURE}\r\n");
        let wire = aws_body(TRAILER_CHUNKS, &tail);
        for sizes in [vec![], vec![1; wire.len()]] {
            let (data, trailers) = decode(Some(aws_trailer_signer()), &wire, sizes).expect("verifies");
            assert_eq!(data.len(), 66560);
            assert_eq!(trailers, [("x-amz-checksum-crc32c".to_owned(), "sOO8/Q==".to_owned())]);
        }

        let changed = aws_body(TRAILER_CHUNKS, &tail.replace("sOO8/Q==", "AAAAAA=="));
        let e = decode(Some(aws_trailer_signer()), &changed, []).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
        assert!(e.message.contains("x-amz-trailer-signature"), "{}", e.message);

        let unsigned = aws_body(TRAILER_CHUNKS, "x-amz-checksum-crc32c:sOO8/Q==\r\n");
        let e = decode(Some(aws_trailer_signer()), &unsigned, []).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");

        let extra = aws_body(TRAILER_CHUNKS, &format!("{tail}x-amz-meta-a:b\r\n"));
        let e = decode(Some(aws_trailer_signer()), &extra, []).unwrap_err();
        assert!(e.message.contains("must be the last"), "{}", e.message);
    }

    #[test]
    fn trailers_are_refused_when_the_request_signed_none() {
        let e = decode(
            Some(aws_signer()),
            &aws_body(CHUNKS, "x-amz-checksum-crc32:AAAAAA==\r\n"),
            [],
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidArgument");
        assert!(e.message.contains("-TRAILER"), "{}", e.message);
    }

    #[test]
    fn an_unsigned_body_with_a_checksum_trailer_decodes_at_every_split() {
        let crc = crc32fast::hash(b"hello world");
        let checksum = base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes());
        let wire = format!("6\r\nhello \r\n5\r\nworld\r\n0\r\nx-amz-checksum-crc32:{checksum}\r\n\r\n").into_bytes();
        for at in 0..=wire.len() {
            for then in [1, 3, 7] {
                let (data, trailers) = decode(None, &wire, [at, then]).expect("split");
                assert_eq!(data, b"hello world");
                assert_eq!(trailers, [("x-amz-checksum-crc32".to_owned(), checksum.clone())]);
            }
        }
        for end in 0..wire.len() {
            let e = decode(None, &wire[..end], []).unwrap_err();
            assert_eq!(e.code, "IncompleteBody", "cut at {end}: {e}");
        }
        assert_eq!(checksum_matches("x-amz-checksum-crc32", &checksum, crc), Some(true));
        assert_eq!(
            checksum_matches("X-Amz-Checksum-CRC32", &checksum, crc ^ 1),
            Some(false)
        );
        assert_eq!(
            checksum_matches("x-amz-checksum-crc32", "not base64!", crc),
            Some(false)
        );
        assert_eq!(checksum_matches("x-amz-checksum-crc32c", &checksum, crc), None);
    }

    #[test]
    fn unsigned_data_passes_through_before_its_chunk_ends() {
        let mut decoder = Decoder::new(None, MAX);
        let out = decoder.feed(Bytes::from_static(b"10\r\n01234567")).expect("valid");
        assert_eq!(out.concat(), b"01234567");
        let out = decoder
            .feed(Bytes::from_static(b"89abcdef\r\n0\r\n\r\n"))
            .expect("valid");
        assert_eq!(out.concat(), b"89abcdef");
        assert_eq!(decoder.finish().expect("complete"), []);
    }

    #[test]
    fn malformed_and_oversized_framing_is_refused_with_what_is_wrong() {
        let long = vec![b'1'; 5000];
        let cases: [(&[u8], &str, &str); 11] = [
            (&long, "InvalidArgument", "longer than 4096"),
            (b"401\r\n", "InvalidChunkSizeError", "at most 1024 bytes"),
            (b"zz\r\n", "InvalidArgument", "hexadecimal size"),
            (b"\r\n", "InvalidArgument", "hexadecimal size"),
            (b"+5\r\nhello", "InvalidArgument", "hexadecimal size"),
            (b"11111111111111111\r\n", "InvalidArgument", "hexadecimal size"),
            (b"5\nhello", "InvalidArgument", "bare LF"),
            (b"5\r\nhelloX", "InvalidArgument", "more data than its size line says"),
            (b"0\r\n\r\nX", "InvalidArgument", "bytes follow the end"),
            (b"0\r\nnot a trailer\r\n\r\n", "InvalidArgument", "not name:value"),
            (
                b"0\r\nx-amz-trailer-signature:00\r\n\r\n",
                "InvalidArgument",
                "unsigned",
            ),
        ];
        for (wire, code, says) in cases {
            let mut decoder = Decoder::new(None, 1024);
            let e = decoder.feed(Bytes::copy_from_slice(wire)).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::BAD_REQUEST, code),
                "{}",
                String::from_utf8_lossy(wire)
            );
            assert!(e.message.contains(says), "{}", e.message);
        }
        let mut long_trailer = b"0\r\nx-amz-meta-a:".to_vec();
        long_trailer.extend([b'b'; 5000]);
        let e = Decoder::new(None, 1024).feed(long_trailer.into()).unwrap_err();
        assert!(e.message.contains("a trailer line is longer"), "{}", e.message);

        let e = Decoder::new(Some(aws_signer()), 1024)
            .feed(Bytes::from_static(b"5\r\nhello\r\n"))
            .unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "SignatureDoesNotMatch"));
        assert!(e.message.contains("no chunk-signature"), "{}", e.message);
    }

    #[test]
    fn an_empty_body_is_incomplete() {
        let e = Decoder::new(None, MAX).finish().unwrap_err();
        assert_eq!(e.code, "IncompleteBody");
        assert!(e.message.contains("is empty"), "{}", e.message);
    }
}
