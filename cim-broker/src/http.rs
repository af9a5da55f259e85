//! HTTP layer (DSP0200). Placeholder for the header checks used by the tests.
use crate::xml::reader::Call;

/// True when a `CIMObject` header (percent-encoded or raw) names what the body does:
/// the namespace for intrinsic calls, the namespace and object path for extrinsic ones.
pub fn cimobject_matches(header: &str, call: &Call) -> bool {
    let Some(decoded) = crate::xml::reader::percent_decode(header.trim()) else { return false };
    match call {
        Call::Intrinsic(c) => crate::cim::namespace_eq(&decoded, &c.namespace),
        Call::Extrinsic(c) => {
            let Some((ns, path)) = crate::xml::reader::parse_untyped_object_path(&decoded) else { return false };
            if !crate::cim::namespace_eq(&ns, &c.namespace) {
                return false;
            }
            match &c.target {
                crate::xml::reader::MethodTarget::Class(name) => path.class_name.eq_ignore_ascii_case(name) && path.keys.is_empty(),
                crate::xml::reader::MethodTarget::Instance(p) => {
                    let mut p = p.clone();
                    p.namespace = None;
                    path.same_instance(&p)
                }
            }
        }
    }
}
