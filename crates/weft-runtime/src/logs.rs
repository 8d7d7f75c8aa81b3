//! Captures what a function writes to stdout and stderr, line by line.
//!
//! Each invocation gets its own pair of pipes. Output is capped per
//! invocation so a chatty or runaway function cannot exhaust the host's
//! memory; past the cap, output is dropped and one marker line says so.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of output kept per invocation.
const CAP: usize = 256 * 1024;
/// A line longer than this is cut.
const MAX_LINE: usize = 16 * 1024;

/// One line of function output.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputLine {
    pub stream: &'static str,
    pub time_us: i64,
    pub line: String,
}

#[derive(Default)]
struct Buffer {
    lines: Vec<OutputLine>,
    partial: [Vec<u8>; 2],
    kept: usize,
    dropped: usize,
}

/// The shared sink behind one invocation's stdout and stderr.
#[derive(Clone, Default)]
pub(crate) struct OutputCapture {
    inner: Arc<Mutex<Buffer>>,
}

const STREAMS: [&str; 2] = ["stdout", "stderr"];

pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl OutputCapture {
    pub(crate) fn stream(&self, index: usize) -> CaptureStream {
        CaptureStream {
            capture: self.clone(),
            index,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, index: usize, bytes: &[u8]) {
        let mut buf = self.lock();
        let room = CAP.saturating_sub(buf.kept);
        let take = bytes.len().min(room);
        buf.kept += take;
        buf.dropped += bytes.len() - take;
        let now = now_us();
        let mut rest = &bytes[..take];
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut buf.partial[index]);
            line.extend_from_slice(&rest[..nl]);
            push_line(&mut buf.lines, index, now, line);
            rest = &rest[nl + 1..];
        }
        let partial = &mut buf.partial[index];
        let keep = rest.len().min(MAX_LINE.saturating_sub(partial.len()));
        partial.extend_from_slice(&rest[..keep]);
    }

    /// Everything written, as lines; an unterminated last line counts.
    pub(crate) fn take_lines(&self) -> Vec<OutputLine> {
        let mut buf = self.lock();
        let now = now_us();
        for index in 0..2 {
            let partial = std::mem::take(&mut buf.partial[index]);
            if !partial.is_empty() {
                push_line(&mut buf.lines, index, now, partial);
            }
        }
        if buf.dropped > 0 {
            let line = format!(
                "[weft] {} bytes of output dropped: the limit is {CAP} bytes per invocation",
                buf.dropped
            );
            buf.lines.push(OutputLine {
                stream: "stderr",
                time_us: now,
                line,
            });
        }
        std::mem::take(&mut buf.lines)
    }
}

fn push_line(lines: &mut Vec<OutputLine>, index: usize, time_us: i64, mut line: Vec<u8>) {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    line.truncate(MAX_LINE);
    lines.push(OutputLine {
        stream: STREAMS[index],
        time_us,
        line: String::from_utf8_lossy(&line).into_owned(),
    });
}

/// One of the two streams, as WASI sees it.
#[derive(Clone)]
pub(crate) struct CaptureStream {
    capture: OutputCapture,
    index: usize,
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.capture.write(self.index, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept: past the cap, bytes are counted and dropped, so the
        // guest never blocks or fails on logging.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CaptureStream {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.capture.write(self.index, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_per_stream_and_caps_output() {
        let c = OutputCapture::default();
        c.write(0, b"one\ntw");
        c.write(1, b"err\n");
        c.write(0, b"o\r\nthree");
        let lines: Vec<_> = c.take_lines().into_iter().map(|l| (l.stream, l.line)).collect();
        assert_eq!(
            lines,
            [
                ("stdout", "one".into()),
                ("stderr", "err".into()),
                ("stdout", "two".into()),
                ("stdout", "three".into())
            ]
        );
        let c = OutputCapture::default();
        c.write(0, &vec![b'x'; CAP + 10]);
        let lines = c.take_lines();
        assert!(lines.last().unwrap().line.contains("10 bytes of output dropped"));
    }
}
