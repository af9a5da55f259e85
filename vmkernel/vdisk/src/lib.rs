//! Virtual disk images (placeholder, filled in by the next step).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
