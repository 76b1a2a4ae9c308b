//! The exit codes every command shares.

/// A configuration (or the file holding it) was refused.
pub const REFUSED: u8 = 1;
/// Wrong usage (clap's code for bad arguments).
pub const USAGE: u8 = 2;
