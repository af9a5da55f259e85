//! The Mantle CIM broker: a WBEM server speaking CIM-XML (DSP0201) over HTTP(S)
//! (DSP0200), serving the DMTF profile-registration and system-virtualization
//! profiles over a virtualization back end (hostd's VM inventory).
#![deny(unsafe_code)]

pub mod auth;
pub mod backend;
pub mod cim;
pub mod hostd;
pub mod http;
pub mod model;
pub mod mof;
pub mod ops;
pub mod repository;
pub mod xml;
