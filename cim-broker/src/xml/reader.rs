//! Decodes CIM-XML (DSP0201) request messages, leniently: KEYVALUE `TYPE` and
//! PARAMVALUE `PARAMTYPE` are optional, embedded instances may be escaped text,
//! CDATA or (as wbemcli sends them) unescaped markup inside VALUE, whitespace
//! between elements is ignored.

use super::dom::{self, Element, Limits, XmlError};
use crate::cim::{CimType, Instance, InstancePath, KeyBinding, KeyValue, Property, Qualifier, Value};

/// Why a request could not be decoded; maps to HTTP 400 `CIMError` values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not well-formed XML (`request-not-well-formed`).
    NotWellFormed(String),
    /// Well-formed but not a valid CIM-XML request (`request-not-valid`).
    NotValid(String),
    /// Over a size/depth limit (HTTP 413 when it is the body size, else 400).
    TooLarge(String),
    /// CIMVERSION/DTDVERSION/PROTOCOLVERSION we do not speak (HTTP 501).
    UnsupportedVersion(&'static str, String),
    /// MULTIREQ (HTTP 501 `multiple-requests-unsupported`).
    MultipleRequests,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::NotWellFormed(s) => write!(f, "request not well-formed: {s}"),
            DecodeError::NotValid(s) => write!(f, "request not valid: {s}"),
            DecodeError::TooLarge(s) => write!(f, "request too large: {s}"),
            DecodeError::UnsupportedVersion(what, v) => write!(f, "unsupported {what} {v}"),
            DecodeError::MultipleRequests => write!(f, "multiple requests are not supported"),
        }
    }
}

impl From<XmlError> for DecodeError {
    fn from(e: XmlError) -> DecodeError {
        match e {
            XmlError::NotWellFormed(s) => DecodeError::NotWellFormed(s),
            XmlError::Refused(s) => DecodeError::NotValid(s),
            XmlError::TooLarge(s) => DecodeError::TooLarge(s),
        }
    }
}

fn invalid(s: impl Into<String>) -> DecodeError {
    DecodeError::NotValid(s.into())
}

/// A decoded request message.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub id: String,
    pub protocol_version: String,
    pub call: Call,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Intrinsic(IMethodCall),
    Extrinsic(MethodCall),
}

impl Call {
    pub fn name(&self) -> &str {
        match self {
            Call::Intrinsic(c) => &c.name,
            Call::Extrinsic(c) => &c.name,
        }
    }
    pub fn namespace(&self) -> &str {
        match self {
            Call::Intrinsic(c) => &c.namespace,
            Call::Extrinsic(c) => &c.namespace,
        }
    }
}

/// An intrinsic (IMETHODCALL) operation.
#[derive(Clone, Debug, PartialEq)]
pub struct IMethodCall {
    pub name: String,
    pub namespace: String,
    pub params: Vec<(String, ParamValue)>,
}

impl IMethodCall {
    pub fn param(&self, name: &str) -> Option<&ParamValue> {
        self.params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }
}

/// The target of an extrinsic method call.
#[derive(Clone, Debug, PartialEq)]
pub enum MethodTarget {
    Instance(InstancePath),
    Class(String),
}

impl MethodTarget {
    pub fn class_name(&self) -> &str {
        match self {
            MethodTarget::Instance(p) => &p.class_name,
            MethodTarget::Class(c) => c,
        }
    }
}

/// An extrinsic (METHODCALL) operation.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodCall {
    pub name: String,
    pub namespace: String,
    pub target: MethodTarget,
    pub params: Vec<MethodParam>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MethodParam {
    pub name: String,
    pub param_type: Option<String>,
    pub embedded_object: Option<String>,
    pub value: ParamValue,
}

impl MethodCall {
    pub fn param(&self, name: &str) -> Option<&MethodParam> {
        self.params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }
}

/// The value of an IPARAMVALUE or PARAMVALUE.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Null,
    Value(String),
    ValueArray(Vec<Option<String>>),
    ClassName(String),
    InstanceName(InstancePath),
    Instance(Instance),
    NamedInstance(InstancePath, Instance),
    Reference(InstancePath),
    ReferenceArray(Vec<InstancePath>),
    /// Embedded instances sent as XML inside VALUE.ARRAY's VALUEs, unescaped (wbemcli).
    InstanceArray(Vec<Instance>),
    /// A CLASS element (CreateClass/ModifyClass, which we do not support).
    Class(String),
}

impl ParamValue {
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            ParamValue::Value(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ParamValue::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// Decodes one request message (the HTTP body).
pub fn decode_request(body: &[u8], limits: &Limits) -> Result<Request, DecodeError> {
    let root = dom::parse(body, limits)?;
    if root.name != "CIM" {
        return Err(invalid(format!("root element is <{}>, not <CIM>", root.name)));
    }
    check_version(&root, "CIMVERSION", "cim-version")?;
    check_version(&root, "DTDVERSION", "dtd-version")?;
    let message = only_child(&root, "MESSAGE")?;
    let id = message.attr("ID").ok_or_else(|| invalid("MESSAGE without ID"))?.to_string();
    let protocol_version = message
        .attr("PROTOCOLVERSION")
        .ok_or_else(|| invalid("MESSAGE without PROTOCOLVERSION"))?
        .to_string();
    if !protocol_version.starts_with("1.") {
        return Err(DecodeError::UnsupportedVersion("protocol-version", protocol_version));
    }
    if message.child("MULTIREQ").is_some() {
        return Err(DecodeError::MultipleRequests);
    }
    let simple = only_child(message, "SIMPLEREQ")?;
    let call = if let Some(im) = simple.child("IMETHODCALL") {
        Call::Intrinsic(decode_imethodcall(im)?)
    } else if let Some(m) = simple.child("METHODCALL") {
        Call::Extrinsic(decode_methodcall(m)?)
    } else {
        return Err(invalid("SIMPLEREQ holds neither IMETHODCALL nor METHODCALL"));
    };
    Ok(Request { id, protocol_version, call })
}

fn check_version(el: &Element, attr: &str, what: &'static str) -> Result<(), DecodeError> {
    let v = el.attr(attr).ok_or_else(|| invalid(format!("CIM without {attr}")))?;
    if v.starts_with("2.") { Ok(()) } else { Err(DecodeError::UnsupportedVersion(what, v.to_string())) }
}

fn only_child<'a>(el: &'a Element, name: &str) -> Result<&'a Element, DecodeError> {
    el.child(name).ok_or_else(|| invalid(format!("<{}> without <{name}>", el.name)))
}

fn name_attr(el: &Element) -> Result<String, DecodeError> {
    el.attr("NAME").map(str::to_string).ok_or_else(|| invalid(format!("<{}> without NAME", el.name)))
}

fn decode_imethodcall(el: &Element) -> Result<IMethodCall, DecodeError> {
    let name = name_attr(el)?;
    let namespace = decode_localnamespacepath(only_child(el, "LOCALNAMESPACEPATH")?)?;
    let mut params = Vec::new();
    for p in el.children_named("IPARAMVALUE") {
        let pname = name_attr(p)?;
        let value = decode_iparam_value(p)?;
        params.push((pname, value));
    }
    Ok(IMethodCall { name, namespace, params })
}

fn decode_localnamespacepath(el: &Element) -> Result<String, DecodeError> {
    let parts: Vec<String> =
        el.children_named("NAMESPACE").map(name_attr).collect::<Result<_, _>>()?;
    if parts.is_empty() {
        return Err(invalid("LOCALNAMESPACEPATH without NAMESPACE"));
    }
    Ok(parts.join("/"))
}

fn decode_iparam_value(p: &Element) -> Result<ParamValue, DecodeError> {
    let Some(child) = p.children.first() else { return Ok(ParamValue::Null) };
    decode_value_element(child)
}

/// An embedded instance that wbemcli sends as markup inside VALUE rather than as
/// escaped text (`<VALUE><INSTANCE ...>...</INSTANCE></VALUE>`).
fn unescaped_instance(value: &Element) -> Option<&Element> {
    match value.children.as_slice() {
        [only] if only.name == "INSTANCE" && value.text.trim().is_empty() => Some(only),
        _ => None,
    }
}

fn decode_value_element(child: &Element) -> Result<ParamValue, DecodeError> {
    Ok(match child.name.as_str() {
        "VALUE" => match unescaped_instance(child) {
            Some(inst) => ParamValue::Instance(decode_instance(inst)?),
            None => ParamValue::Value(child.text.clone()),
        },
        "VALUE.ARRAY" if child.children.iter().any(|v| unescaped_instance(v).is_some()) => ParamValue::InstanceArray(
            child
                .children
                .iter()
                .map(|v| unescaped_instance(v).ok_or_else(|| invalid("VALUE.ARRAY mixes embedded instances and other values")))
                .map(|i| i.and_then(decode_instance))
                .collect::<Result<_, _>>()?,
        ),
        "VALUE.ARRAY" => ParamValue::ValueArray(decode_value_array(child)),
        "CLASSNAME" => ParamValue::ClassName(name_attr(child)?),
        "INSTANCENAME" => ParamValue::InstanceName(decode_instancename(child)?),
        "INSTANCE" => ParamValue::Instance(decode_instance(child)?),
        "VALUE.NAMEDINSTANCE" => {
            let path = decode_instancename(only_child(child, "INSTANCENAME")?)?;
            let inst = decode_instance(only_child(child, "INSTANCE")?)?;
            ParamValue::NamedInstance(path, inst)
        }
        "VALUE.REFERENCE" => ParamValue::Reference(decode_value_reference(child)?),
        "VALUE.REFARRAY" => ParamValue::ReferenceArray(
            child.children_named("VALUE.REFERENCE").map(decode_value_reference).collect::<Result<_, _>>()?,
        ),
        "VALUE.NULL" => ParamValue::Null,
        "CLASS" => ParamValue::Class(name_attr(child)?),
        // OBJECTNAME-like wrappers some clients use for class paths.
        "LOCALCLASSPATH" | "CLASSPATH" => {
            ParamValue::ClassName(name_attr(only_child(child, "CLASSNAME")?)?)
        }
        "INSTANCEPATH" | "LOCALINSTANCEPATH" => ParamValue::Reference(decode_any_instance_path(child)?),
        other => return Err(invalid(format!("unexpected <{other}> in a parameter value"))),
    })
}

fn decode_value_array(el: &Element) -> Vec<Option<String>> {
    el.children
        .iter()
        .filter_map(|c| match c.name.as_str() {
            "VALUE" => Some(Some(c.text.clone())),
            "VALUE.NULL" => Some(None),
            _ => None,
        })
        .collect()
}

fn decode_value_reference(el: &Element) -> Result<InstancePath, DecodeError> {
    let inner = el.children.first().ok_or_else(|| invalid("empty VALUE.REFERENCE"))?;
    decode_any_instance_path(inner)
}

/// INSTANCEPATH, LOCALINSTANCEPATH or INSTANCENAME (also class paths, as a path without keys).
fn decode_any_instance_path(el: &Element) -> Result<InstancePath, DecodeError> {
    match el.name.as_str() {
        "INSTANCEPATH" => {
            let nsp = only_child(el, "NAMESPACEPATH")?;
            let host = nsp.child("HOST").map(|h| h.text.trim().to_string());
            let ns = decode_localnamespacepath(only_child(nsp, "LOCALNAMESPACEPATH")?)?;
            let mut p = decode_instancename(only_child(el, "INSTANCENAME")?)?;
            p.host = host;
            p.namespace = Some(ns);
            Ok(p)
        }
        "LOCALINSTANCEPATH" => {
            let ns = decode_localnamespacepath(only_child(el, "LOCALNAMESPACEPATH")?)?;
            let mut p = decode_instancename(only_child(el, "INSTANCENAME")?)?;
            p.namespace = Some(ns);
            Ok(p)
        }
        "INSTANCENAME" => decode_instancename(el),
        "CLASSPATH" | "LOCALCLASSPATH" => {
            Ok(InstancePath::new(name_attr(only_child(el, "CLASSNAME")?)?))
        }
        "CLASSNAME" => Ok(InstancePath::new(name_attr(el)?)),
        other => Err(invalid(format!("<{other}> is not an instance path"))),
    }
}

pub(crate) fn decode_instancename(el: &Element) -> Result<InstancePath, DecodeError> {
    let class_name = el
        .attr("CLASSNAME")
        .ok_or_else(|| invalid("INSTANCENAME without CLASSNAME"))?
        .to_string();
    let mut keys = Vec::new();
    for kb in el.children_named("KEYBINDING") {
        let name = name_attr(kb)?;
        let value = if let Some(kv) = kb.child("KEYVALUE") {
            decode_keyvalue(kv)
        } else if let Some(r) = kb.child("VALUE.REFERENCE") {
            KeyValue::Reference(Box::new(decode_value_reference(r)?))
        } else {
            return Err(invalid(format!("KEYBINDING {name} without a value")));
        };
        keys.push(KeyBinding { name, value });
    }
    // A keyless INSTANCENAME may carry one unnamed KEYVALUE (singleton form).
    if keys.is_empty()
        && let Some(kv) = el.child("KEYVALUE")
    {
        keys.push(KeyBinding { name: String::new(), value: decode_keyvalue(kv) });
    }
    Ok(InstancePath { host: None, namespace: None, class_name, keys })
}

fn decode_keyvalue(kv: &Element) -> KeyValue {
    let cim_type = kv.attr("TYPE").and_then(CimType::parse);
    let value_type = kv
        .attr("VALUETYPE")
        .map(str::to_ascii_lowercase)
        .or_else(|| cim_type.map(|t| t.key_value_type().to_string()))
        .unwrap_or_else(|| "string".to_string());
    KeyValue::Text { value_type, cim_type, text: kv.text.clone() }
}

fn decode_qualifier(el: &Element) -> Result<Qualifier, DecodeError> {
    let name = name_attr(el)?;
    let ty = el.attr("TYPE").and_then(CimType::parse).unwrap_or(CimType::String);
    let (value, is_array) = if let Some(v) = el.child("VALUE") {
        (Some(Value::Scalar(v.text.clone())), false)
    } else if let Some(a) = el.child("VALUE.ARRAY") {
        (Some(Value::Array(decode_value_array(a))), true)
    } else {
        (None, false)
    };
    Ok(Qualifier { name, ty, value, is_array })
}

/// Decodes an INSTANCE element.
pub fn decode_instance(el: &Element) -> Result<Instance, DecodeError> {
    let class_name =
        el.attr("CLASSNAME").ok_or_else(|| invalid("INSTANCE without CLASSNAME"))?.to_string();
    let mut inst = Instance::new(class_name);
    for c in &el.children {
        match c.name.as_str() {
            "QUALIFIER" => inst.qualifiers.push(decode_qualifier(c)?),
            "PROPERTY" | "PROPERTY.ARRAY" | "PROPERTY.REFERENCE" => {
                inst.properties.push(decode_property(c)?)
            }
            other => return Err(invalid(format!("unexpected <{other}> in INSTANCE"))),
        }
    }
    Ok(inst)
}

fn decode_property(el: &Element) -> Result<Property, DecodeError> {
    let name = name_attr(el)?;
    let qualifiers = el.children_named("QUALIFIER").map(decode_qualifier).collect::<Result<_, _>>()?;
    let embedded = el.attr("EmbeddedObject").or_else(|| el.attr("EMBEDDEDOBJECT")).map(str::to_string);
    let mut p = match el.name.as_str() {
        "PROPERTY.REFERENCE" => {
            let value = match el.child("VALUE.REFERENCE") {
                Some(r) => Some(Value::Reference(decode_value_reference(r)?)),
                None => None,
            };
            let mut p = Property::new(name, CimType::Reference, value);
            p.reference_class = el.attr("REFERENCECLASS").map(str::to_string);
            p
        }
        "PROPERTY.ARRAY" => {
            let ty = el.attr("TYPE").and_then(CimType::parse).unwrap_or(CimType::String);
            let value = el.child("VALUE.ARRAY").map(|a| Value::Array(decode_value_array(a)));
            let mut p = Property::new(name, ty, value);
            p.is_array = true;
            p
        }
        _ => {
            let ty = el.attr("TYPE").and_then(CimType::parse).unwrap_or(CimType::String);
            let value = el.child("VALUE").map(|v| Value::Scalar(v.text.clone()));
            Property::new(name, ty, value)
        }
    };
    p.qualifiers = qualifiers;
    p.embedded_object = embedded;
    p.class_origin = el.attr("CLASSORIGIN").map(str::to_string);
    Ok(p)
}

fn decode_methodcall(el: &Element) -> Result<MethodCall, DecodeError> {
    let name = name_attr(el)?;
    let (namespace, target) = if let Some(lip) = el.child("LOCALINSTANCEPATH") {
        let ns = decode_localnamespacepath(only_child(lip, "LOCALNAMESPACEPATH")?)?;
        let mut path = decode_instancename(only_child(lip, "INSTANCENAME")?)?;
        path.namespace = Some(ns.clone());
        (ns, MethodTarget::Instance(path))
    } else if let Some(lcp) = el.child("LOCALCLASSPATH") {
        let ns = decode_localnamespacepath(only_child(lcp, "LOCALNAMESPACEPATH")?)?;
        (ns, MethodTarget::Class(name_attr(only_child(lcp, "CLASSNAME")?)?))
    } else {
        return Err(invalid("METHODCALL without LOCALINSTANCEPATH or LOCALCLASSPATH"));
    };
    let mut params = Vec::new();
    for p in el.children_named("PARAMVALUE") {
        let pname = name_attr(p)?;
        let param_type = p.attr("PARAMTYPE").map(str::to_string);
        let embedded_object =
            p.attr("EmbeddedObject").or_else(|| p.attr("EMBEDDEDOBJECT")).map(str::to_string);
        let value = match p.children.first() {
            None => ParamValue::Null,
            Some(c) => decode_value_element(c)?,
        };
        params.push(MethodParam { name: pname, param_type, embedded_object, value });
    }
    Ok(MethodCall { name, namespace, target, params })
}

/// Decodes an embedded instance carried as a string (escaped XML or CDATA, already
/// unescaped by the XML reader): `<INSTANCE ...>...</INSTANCE>`.
pub fn decode_embedded_instance(text: &str, limits: &Limits) -> Result<Instance, DecodeError> {
    let el = dom::parse(text.trim().as_bytes(), limits)?;
    if el.name != "INSTANCE" {
        return Err(invalid(format!("embedded object is <{}>, not <INSTANCE>", el.name)));
    }
    decode_instance(&el)
}

/// Percent-decodes a `CIMObject` header value (wbemcli encodes it, pywbem does not).
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Parses the object path syntax of the `CIMObject` header for extrinsic calls:
/// `namespace:Class.Key1="v",Key2=3` (or `namespace:Class` for static methods).
/// Returns the namespace and the path.
pub fn parse_untyped_object_path(s: &str) -> Option<(String, InstancePath)> {
    let (ns, rest) = s.split_once(':')?;
    let (class, keys) = match rest.split_once('.') {
        Some((c, k)) => (c, Some(k)),
        None => (rest, None),
    };
    let mut path = InstancePath::new(class.trim());
    if let Some(keys) = keys {
        let chars: Vec<char> = keys.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let start = i;
            while i < chars.len() && chars[i] != '=' {
                i += 1;
            }
            let name: String = chars.get(start..i)?.iter().collect();
            i += 1; // '='
            let (value_type, text) = if chars.get(i) == Some(&'"') {
                i += 1;
                let mut v = String::new();
                loop {
                    match chars.get(i)? {
                        '\\' => {
                            v.push(*chars.get(i + 1)?);
                            i += 2;
                        }
                        '"' => {
                            i += 1;
                            break;
                        }
                        c => {
                            v.push(*c);
                            i += 1;
                        }
                    }
                }
                ("string", v)
            } else {
                let start = i;
                while i < chars.len() && chars[i] != ',' {
                    i += 1;
                }
                let v: String = chars.get(start..i)?.iter().collect();
                let vt = if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") {
                    "boolean"
                } else {
                    "numeric"
                };
                (vt, v)
            };
            path.keys.push(KeyBinding {
                name: name.trim().to_string(),
                value: KeyValue::Text { value_type: value_type.into(), cim_type: None, text },
            });
            if i < chars.len() {
                if chars[i] != ',' {
                    return None;
                }
                i += 1;
            }
        }
    }
    Some((ns.to_string(), path))
}
