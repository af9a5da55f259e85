//! hostd, the host agent: the single owner of the VM inventory on the
//! datastores, and the REST API (JSON over HTTPS) the web host client and
//! the CIM broker use. Runs on Linux and, as a static Linux-ABI user world,
//! on Mantle; VMs are run only by the VMkernel, through its narrow API.
#![deny(unsafe_code)]

pub mod auth;
pub mod config_store;
pub mod datastore;
pub mod qcow2;
pub mod host;
pub mod store;
pub mod vmkernel;
pub mod vmx;
pub mod api;
pub mod server;
pub mod fuzz;
