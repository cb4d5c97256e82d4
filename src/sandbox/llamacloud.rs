//! The llamacloud API sandbox. (Being written.)
