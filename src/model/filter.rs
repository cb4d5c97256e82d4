//! Which items a listing takes (`status --items --state …`): every item, one ledger state, or
//! one of the two conditions `status` counts beside the states (deferred, at risk).

use super::ItemState;

/// The items `status --items` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ItemFilter {
    /// Every item, in any state.
    #[default]
    All,
    /// The items in one ledger state.
    State(ItemState),
    /// Ready items whose last attempt failed and whose next attempt is still to come.
    Deferred,
    /// Not mirrored yet (pending, ready or downloading) with the deadline within the alert
    /// margin, or past: what `status` counts as at risk.
    AtRisk,
}

impl ItemFilter {
    /// The words `--state` takes: every ledger state, then `deferred` and `at-risk`.
    pub const WORDS: [&'static str; 9] = [
        "pending",
        "ready",
        "downloading",
        "mirrored",
        "failed",
        "lost",
        "skipped",
        "deferred",
        "at-risk",
    ];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "deferred" => Some(Self::Deferred),
            "at-risk" => Some(Self::AtRisk),
            other => ItemState::parse(other).map(Self::State),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_parses_and_every_state_has_its_word() {
        for w in ItemFilter::WORDS {
            assert!(ItemFilter::parse(w).is_some(), "{w}");
        }
        for s in ItemState::ALL {
            assert_eq!(ItemFilter::parse(s.as_str()), Some(ItemFilter::State(s)));
        }
        assert_eq!(ItemFilter::parse("at_risk"), None);
    }
}
