//! image-builder: builds Mantle and boots it.
pub mod kernel;
