//! User worlds: ring-3 programs shipped in the Mantle image.
//!
//! - `init` (PID 1): the inittab parser, restart back-off policy and supervisor live
//!   in [`init`]; `src/bin/init.rs` is a thin entry point.
//! - `conformance`: a system-call conformance program (`src/bin/conformance/`).

pub mod init;
pub mod vmk;
