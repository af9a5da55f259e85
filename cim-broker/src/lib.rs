//! The CIM broker. Nothing lives here yet.
