//! CIM-XML (DSP0201): a bounded XML tree reader, the request decoder and the
//! response encoder.
pub mod dom;
pub mod reader;
pub mod writer;
