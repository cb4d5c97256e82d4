//! [`ProviderKind`]: the provider APIs batchmirror can mirror, and what each one documents
//! (page sizes, rate limits, whether it takes submissions).
//!
//! A leaf of its own because two sections read it: `[[provider]]` validates its `kind` into it,
//! and `[dropfolder]` checks that the provider it names can take submissions.

/// The provider APIs batchmirror can mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    ExtractPage,
    LlamaCloud,
    Talonic,
    PerfectParser,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] = [
        Self::ExtractPage,
        Self::LlamaCloud,
        Self::Talonic,
        Self::PerfectParser,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExtractPage => "extract_page",
            Self::LlamaCloud => "llamacloud",
            Self::Talonic => "talonic",
            Self::PerfectParser => "perfectparser",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The largest page the API's listing accepts (documented, or the SDK's bound).
    pub fn max_page_size(self) -> u32 {
        match self {
            Self::ExtractPage => 200,
            Self::LlamaCloud => 1000,
            Self::Talonic | Self::PerfectParser => 100,
        }
    }

    /// The provider's published overall request limit, the adaptive pacer's starting cap and
    /// ceiling: PerfectParser documents 150/min per key; the others document none, so they are
    /// not capped until they throttle.
    pub fn documented_requests_per_minute(self) -> Option<u32> {
        match self {
            Self::PerfectParser => Some(150),
            _ => None,
        }
    }

    /// True for the kinds whose adapter can submit files (the drop folder).
    pub fn can_submit(self) -> bool {
        matches!(self, Self::ExtractPage | Self::PerfectParser)
    }

    /// The documented cap on job submissions, apart from the overall rate: PerfectParser allows
    /// 20 `POST /v1/extractions` a minute; the others name none.
    pub fn default_submits_per_minute(self) -> Option<u32> {
        match self {
            Self::PerfectParser => Some(20),
            _ => None,
        }
    }
}
