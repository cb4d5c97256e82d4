//! Seeded generation, shared by the four sandboxes: the [`SplitMix`] generator every generated
//! account and result body draws from, [`hash_ids`] (stable ids and seeds from a batch and item
//! id), and the small pieces of "a plausible account" all four generated mixes use: result sizes
//! that vary by ±5 % ([`SplitMix::jitter`]) and the part each generated batch plays
//! ([`batch_role`]: one expired, one still running, the rest completed over the last day).
//!
//! It owns no provider's shapes; a seed keeps meaning the same data across versions.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// Seconds in a day.
pub(crate) const DAY: u64 = 24 * 3600;

/// A stable 64-bit digest of `(tag, batch id, item id)`; lengths are included so that
/// ("ab", "c") and ("a", "bc") differ.
pub(crate) fn hash_ids(tag: u64, batch: &str, item: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(tag.to_le_bytes());
    h.update((batch.len() as u64).to_le_bytes());
    h.update(batch.as_bytes());
    h.update(item.as_bytes());
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("sha256 has 32 bytes"))
}

/// SplitMix64: tiny, fast and, unlike library generators, guaranteed never to change between
/// versions, so a seed keeps meaning the same data.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl SplitMix {
    /// `bytes` ±5 %, so clients cannot assume every result has the same size.
    pub(crate) fn jitter(&mut self, bytes: usize) -> usize {
        let spread = (bytes / 20) as u64;
        if spread == 0 {
            return bytes;
        }
        (bytes as u64 - spread + self.below(2 * spread + 1)) as usize
    }
}

/// The part a generated batch plays in its account's mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Completed within the last day.
    Completed,
    /// Completed longer than the retention ago (with 3 batches or more, the oldest).
    Expired,
    /// Still running (with 2 batches or more, the newest).
    Running,
}

/// The role of batch `k` (oldest first) of `n`, and how many simulated seconds ago it was
/// created: the expired one 2 h past `retention`, the running one `running_ago`, the completed
/// ones spread over the last day, oldest first, never less than an hour ago.
pub(crate) fn batch_role(
    rng: &mut SplitMix,
    k: usize,
    n: usize,
    retention: Duration,
    running_ago: f64,
) -> (f64, Role) {
    let has_running = n >= 2;
    let has_expired = n >= 3;
    if has_expired && k == 0 {
        return (retention.as_secs_f64() + 2.0 * 3600.0, Role::Expired);
    }
    if has_running && k == n - 1 {
        return (running_ago, Role::Running);
    }
    let regular = n - usize::from(has_running) - usize::from(has_expired);
    let slot = k - usize::from(has_expired);
    let step = (DAY - 3600) as f64 / regular.max(1) as f64;
    let ago = (DAY as f64 - 600.0) - step * slot as f64 - rng.unit() * step * 0.5;
    (ago.max(3600.0), Role::Completed)
}
