//! Pay-per-use: requests and GB-seconds, counted twice (by configured
//! memory, as Lambda bills, and by measured peak memory, which weft can
//! measure and Lambda cannot), and a price for them.

use serde::{Deserialize, Serialize};

/// What requests and compute cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prices {
    /// Where the prices come from.
    pub label: String,
    pub currency: String,
    pub per_request: f64,
    pub per_gb_second: f64,
}

impl Prices {
    /// AWS Lambda's public on-demand prices for x86 functions in
    /// us-east-1, first tier: USD 0.20 per million requests and
    /// USD 0.0000166667 per GB-second.
    pub fn lambda_x86() -> Prices {
        Prices {
            label: "AWS Lambda public x86 on-demand prices (us-east-1, first tier)".into(),
            currency: "USD".into(),
            per_request: 0.20 / 1_000_000.0,
            per_gb_second: 0.000_016_666_7,
        }
    }
}

/// Use summed over some invocations. Memory-time is kept in whole
/// KiB-milliseconds, so sums are exact and two nodes' figures add up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub requests: u64,
    pub billed_ms: u64,
    /// Σ billed ms × configured memory in KiB.
    pub configured_kib_ms: u64,
    /// Σ billed ms × measured peak memory in KiB (rounded up).
    pub measured_kib_ms: u64,
}

/// KiB-milliseconds in one GB-second.
const KIB_MS_PER_GB_SECOND: f64 = 1024.0 * 1024.0 * 1000.0;

impl Usage {
    /// The use of one invocation.
    pub fn of(billed_ms: u64, memory_bytes: u64, peak_memory_bytes: u64) -> Usage {
        Usage {
            requests: 1,
            billed_ms,
            configured_kib_ms: billed_ms.saturating_mul(memory_bytes.div_ceil(1024)),
            measured_kib_ms: billed_ms.saturating_mul(peak_memory_bytes.div_ceil(1024)),
        }
    }

    pub fn add(&mut self, other: &Usage) {
        self.requests += other.requests;
        self.billed_ms += other.billed_ms;
        self.configured_kib_ms = self.configured_kib_ms.saturating_add(other.configured_kib_ms);
        self.measured_kib_ms = self.measured_kib_ms.saturating_add(other.measured_kib_ms);
    }

    pub fn configured_gb_seconds(&self) -> f64 {
        self.configured_kib_ms as f64 / KIB_MS_PER_GB_SECOND
    }

    pub fn measured_gb_seconds(&self) -> f64 {
        self.measured_kib_ms as f64 / KIB_MS_PER_GB_SECOND
    }

    /// The price by configured memory, and by measured memory.
    pub fn price(&self, prices: &Prices) -> (f64, f64) {
        let requests = self.requests as f64 * prices.per_request;
        (
            requests + self.configured_gb_seconds() * prices.per_gb_second,
            requests + self.measured_gb_seconds() * prices.per_gb_second,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gigabyte_for_a_second_is_one_gb_second() {
        let u = Usage::of(1000, 1 << 30, 512 << 20);
        assert_eq!(u.configured_gb_seconds(), 1.0);
        assert_eq!(u.measured_gb_seconds(), 0.5);
        let p = Prices::lambda_x86();
        let (configured, measured) = u.price(&p);
        assert!((configured - (0.000_000_2 + 0.000_016_666_7)).abs() < 1e-15);
        assert!(measured < configured);
    }

    #[test]
    fn usage_adds_up() {
        let mut total = Usage::default();
        total.add(&Usage::of(3, 128 << 20, 1 << 20));
        total.add(&Usage::of(2, 128 << 20, 1));
        assert_eq!(total.requests, 2);
        assert_eq!(total.billed_ms, 5);
        assert_eq!(total.configured_kib_ms, 5 * 128 * 1024);
        assert_eq!(total.measured_kib_ms, 3 * 1024 + 2);
    }
}
