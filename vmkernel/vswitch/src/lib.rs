//! The virtual switch (placeholder, filled in by a later step).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
