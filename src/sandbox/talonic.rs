//! The talonic API sandbox. (Being written.)
