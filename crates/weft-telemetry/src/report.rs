//! What one invocation is billed, and its `REPORT` log line in the shape
//! Lambda writes, so that tools which read Lambda logs read weft's.

/// Billed duration: the duration rounded up to the next millisecond (at
/// least 1 ms), as Lambda bills.
pub fn billed_ms(duration_us: u64) -> u64 {
    duration_us.div_ceil(1000).max(1)
}

/// Bytes as whole megabytes (MiB) rounded up, as Lambda reports memory.
pub fn megabytes(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// The figures of one `REPORT` line.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    pub request_id: &'a str,
    pub duration_us: u64,
    /// The configured memory limit.
    pub memory_bytes: u64,
    /// The measured peak.
    pub peak_memory_bytes: u64,
    /// Set on a cold start.
    pub init_us: Option<u64>,
}

impl Report<'_> {
    /// `REPORT RequestId: ID\tDuration: 1.23 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 3 MB`,
    /// with `\tInit Duration: 0.45 ms` on a cold start: Lambda's fields,
    /// names and tab separators.
    pub fn line(&self) -> String {
        let mut line = format!(
            "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
            self.request_id,
            self.duration_us as f64 / 1000.0,
            billed_ms(self.duration_us),
            self.memory_bytes >> 20,
            megabytes(self.peak_memory_bytes),
        );
        if let Some(init) = self.init_us {
            line.push_str(&format!("\tInit Duration: {:.2} ms", init as f64 / 1000.0));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_rounds_up_to_the_millisecond() {
        assert_eq!(billed_ms(0), 1);
        assert_eq!(billed_ms(1), 1);
        assert_eq!(billed_ms(1000), 1);
        assert_eq!(billed_ms(1001), 2);
        assert_eq!(megabytes(0), 0);
        assert_eq!(megabytes(1), 1);
        assert_eq!(megabytes(1 << 20), 1);
        assert_eq!(megabytes((1 << 20) + 1), 2);
    }

    #[test]
    fn the_line_has_lambda_s_shape() {
        let mut r = Report {
            request_id: "r-1",
            duration_us: 12_345,
            memory_bytes: 128 << 20,
            peak_memory_bytes: (3 << 20) + 5,
            init_us: None,
        };
        assert_eq!(
            r.line(),
            "REPORT RequestId: r-1\tDuration: 12.35 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 4 MB"
        );
        r.init_us = Some(450);
        assert!(r.line().ends_with("\tMax Memory Used: 4 MB\tInit Duration: 0.45 ms"));
    }
}
