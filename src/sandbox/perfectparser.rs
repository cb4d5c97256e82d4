//! The perfectparser API sandbox. (Being written.)
