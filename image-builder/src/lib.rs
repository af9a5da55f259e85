//! image-builder: builds Mantle and boots it.
pub mod kernel;
pub mod bench;
pub mod debian;
