//! PCI enumeration (filled below).
#![cfg_attr(not(test), no_std)]
