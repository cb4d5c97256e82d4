//! The perfectparser adapter against its sandbox. (Being written.)
