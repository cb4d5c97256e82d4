//! The talonic adapter against its sandbox. (Being written.)
