//! The llamacloud adapter against its sandbox. (Being written.)
