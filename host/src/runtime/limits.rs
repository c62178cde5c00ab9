//! Per-attempt limits and the memory limiter that enforces them.

use std::time::Duration;

/// Limits on one attempt. The operator's ceiling bounds them: a plugin or a
/// step may lower a limit, never raise it past the ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory a guest may grow to, across all its memories.
    pub memory_bytes: u64,
    /// Wall time of one attempt, host calls included.
    pub timeout: Duration,
    /// Size of the JSON output the attempt may return.
    pub output_bytes: usize,
    /// Bytes of log lines (and stdout/stderr) kept per attempt; the rest are
    /// dropped and counted.
    pub log_bytes: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        memory_bytes: 64 << 20,
        timeout: Duration::from_secs(30),
        output_bytes: 1 << 20,
        log_bytes: 64 << 10,
    };

    /// The operator's default ceiling: what no plugin or step can exceed.
    pub const CEILING: Limits = Limits {
        memory_bytes: 512 << 20,
        timeout: Duration::from_secs(15 * 60),
        output_bytes: 16 << 20,
        log_bytes: 1 << 20,
    };

    /// Each limit lowered to `ceiling`'s where it is higher.
    pub fn within(self, ceiling: &Limits) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes.min(ceiling.memory_bytes),
            timeout: self.timeout.min(ceiling.timeout),
            output_bytes: self.output_bytes.min(ceiling.output_bytes),
            log_bytes: self.log_bytes.min(ceiling.log_bytes),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Caps linear memory and remembers whether the cap was what stopped the
/// guest, so a failed attempt can say "memory limit" rather than "trap".
pub(crate) struct MemoryLimiter {
    pub(crate) limit: usize,
    pub(crate) hit: bool,
}

/// Tables hold function references; a legitimate guest needs far fewer.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes exceeded (asked for {desired})",
                self.limit
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_lowers_only_what_exceeds_the_ceiling() {
        let ceiling = Limits {
            memory_bytes: 100,
            timeout: Duration::from_secs(5),
            output_bytes: 10,
            log_bytes: 10,
        };
        let asked = Limits {
            memory_bytes: 1000,
            timeout: Duration::from_secs(1),
            output_bytes: 20,
            log_bytes: 5,
        };
        assert_eq!(
            asked.within(&ceiling),
            Limits {
                memory_bytes: 100,
                timeout: Duration::from_secs(1),
                output_bytes: 10,
                log_bytes: 5,
            }
        );
    }
}
