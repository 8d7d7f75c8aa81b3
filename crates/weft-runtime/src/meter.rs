//! Per-instance memory limit and peak-memory accounting.

use wasmtime::ResourceLimiter;

/// Enforces one invocation's `memory` limit across all of its linear
/// memories, and remembers the peak for the invocation record.
pub(crate) struct MemoryMeter {
    limit: u64,
    total: u64,
    peak: u64,
    /// Set when a growth was refused; the invocation's error names the limit.
    pub(crate) exceeded: Option<u64>,
}

/// Table growth cap: generous for real programs, bounded for runaway ones.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl MemoryMeter {
    pub(crate) fn new(limit: u64) -> Self {
        MemoryMeter {
            limit,
            total: 0,
            peak: 0,
            exceeded: None,
        }
    }

    pub(crate) fn peak(&self) -> u64 {
        self.peak
    }
}

impl ResourceLimiter for MemoryMeter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let grow = (desired as u64).saturating_sub(current as u64);
        let wanted = self.total.saturating_add(grow);
        if wanted > self.limit {
            self.exceeded = Some(wanted);
            // An error (not `Ok(false)`) traps at once, instead of letting the
            // guest see a failed `memory.grow` and abort with a vaguer message.
            wasmtime::bail!(
                "memory limit of {} bytes exceeded: the function asked for {wanted} bytes",
                self.limit
            );
        }
        self.total = wanted;
        self.peak = self.peak.max(wanted);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
