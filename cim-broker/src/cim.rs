//! The CIM object model the broker works with: values, properties, instances,
//! instance paths, classes, methods and qualifiers (DSP0004 concepts, in the shape
//! DSP0201 puts them on the wire).

use std::fmt;

/// A CIM intrinsic data type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CimType {
    Boolean,
    String,
    Char16,
    Uint8,
    Sint8,
    Uint16,
    Sint16,
    Uint32,
    Sint32,
    Uint64,
    Sint64,
    Real32,
    Real64,
    Datetime,
    Reference,
}

impl CimType {
    /// Parses a type name as it appears in MOF and in CIM-XML `TYPE`/`PARAMTYPE`.
    pub fn parse(s: &str) -> Option<CimType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "boolean" => CimType::Boolean,
            "string" => CimType::String,
            "char16" => CimType::Char16,
            "uint8" => CimType::Uint8,
            "sint8" => CimType::Sint8,
            "uint16" => CimType::Uint16,
            "sint16" => CimType::Sint16,
            "uint32" => CimType::Uint32,
            "sint32" => CimType::Sint32,
            "uint64" => CimType::Uint64,
            "sint64" => CimType::Sint64,
            "real32" => CimType::Real32,
            "real64" => CimType::Real64,
            "datetime" => CimType::Datetime,
            "reference" | "ref" => CimType::Reference,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CimType::Boolean => "boolean",
            CimType::String => "string",
            CimType::Char16 => "char16",
            CimType::Uint8 => "uint8",
            CimType::Sint8 => "sint8",
            CimType::Uint16 => "uint16",
            CimType::Sint16 => "sint16",
            CimType::Uint32 => "uint32",
            CimType::Sint32 => "sint32",
            CimType::Uint64 => "uint64",
            CimType::Sint64 => "sint64",
            CimType::Real32 => "real32",
            CimType::Real64 => "real64",
            CimType::Datetime => "datetime",
            CimType::Reference => "reference",
        }
    }

    /// The KEYVALUE VALUETYPE for a key of this type.
    pub fn key_value_type(self) -> &'static str {
        match self {
            CimType::Boolean => "boolean",
            CimType::String | CimType::Char16 | CimType::Datetime | CimType::Reference => {
                "string"
            }
            _ => "numeric",
        }
    }
}

/// A property, parameter or qualifier value. Scalars travel as their CIM-XML text.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(String),
    Array(Vec<Option<String>>),
    Reference(InstancePath),
    ReferenceArray(Vec<InstancePath>),
}

impl Value {
    pub fn str(s: impl Into<String>) -> Value {
        Value::Scalar(s.into())
    }
    pub fn num(n: impl fmt::Display) -> Value {
        Value::Scalar(n.to_string())
    }
    pub fn bool(b: bool) -> Value {
        Value::Scalar(if b { "TRUE" } else { "FALSE" }.to_string())
    }
    pub fn str_array<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Value {
        Value::Array(items.into_iter().map(|s| Some(s.into())).collect())
    }
    pub fn as_scalar(&self) -> Option<&str> {
        match self {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }
}

/// A qualifier attached to a class element.
#[derive(Clone, Debug, PartialEq)]
pub struct Qualifier {
    pub name: String,
    pub ty: CimType,
    pub value: Option<Value>,
    pub is_array: bool,
}

impl Qualifier {
    pub fn value_str(&self) -> Option<&str> {
        self.value.as_ref().and_then(Value::as_scalar)
    }
}

/// A property of an instance or a class.
#[derive(Clone, Debug, PartialEq)]
pub struct Property {
    pub name: String,
    pub ty: CimType,
    pub is_array: bool,
    /// For reference properties: the class the reference points to.
    pub reference_class: Option<String>,
    pub value: Option<Value>,
    pub class_origin: Option<String>,
    pub propagated: bool,
    /// `EmbeddedObject="instance"` / `"object"` on string properties.
    pub embedded_object: Option<String>,
    pub qualifiers: Vec<Qualifier>,
}

impl Property {
    pub fn new(name: impl Into<String>, ty: CimType, value: Option<Value>) -> Property {
        let is_array = matches!(value, Some(Value::Array(_)) | Some(Value::ReferenceArray(_)));
        Property {
            name: name.into(),
            ty,
            is_array,
            reference_class: None,
            value,
            class_origin: None,
            propagated: false,
            embedded_object: None,
            qualifiers: Vec::new(),
        }
    }

    pub fn qualifier(&self, name: &str) -> Option<&Qualifier> {
        self.qualifiers.iter().find(|q| q.name.eq_ignore_ascii_case(name))
    }

    pub fn is_key(&self) -> bool {
        self.qualifier("Key").is_some_and(|q| q.value_str() != Some("FALSE"))
    }
}

/// A key binding of an instance path.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyBinding {
    pub name: String,
    pub value: KeyValue,
}

#[derive(Clone, Debug, PartialEq)]
pub enum KeyValue {
    /// `value_type` is the KEYVALUE VALUETYPE: "string", "boolean" or "numeric".
    Text { value_type: String, cim_type: Option<CimType>, text: String },
    Reference(Box<InstancePath>),
}

impl KeyValue {
    pub fn string(s: impl Into<String>) -> KeyValue {
        KeyValue::Text { value_type: "string".into(), cim_type: Some(CimType::String), text: s.into() }
    }

    /// Compares two key values the way CIM does: strings exactly, numbers by value,
    /// booleans case-insensitively, references recursively.
    pub fn matches(&self, other: &KeyValue) -> bool {
        match (self, other) {
            (KeyValue::Reference(a), KeyValue::Reference(b)) => a.same_instance(b),
            (
                KeyValue::Text { value_type: ta, text: a, .. },
                KeyValue::Text { value_type: tb, text: b, .. },
            ) => {
                if ta == "numeric" || tb == "numeric" {
                    match (a.trim().parse::<i128>(), b.trim().parse::<i128>()) {
                        (Ok(x), Ok(y)) => x == y,
                        _ => a.trim() == b.trim(),
                    }
                } else if ta == "boolean" || tb == "boolean" {
                    a.trim().eq_ignore_ascii_case(b.trim())
                } else {
                    a == b
                }
            }
            _ => false,
        }
    }
}

/// An instance path (INSTANCENAME with optional namespace and host).
#[derive(Clone, Debug, PartialEq)]
pub struct InstancePath {
    pub host: Option<String>,
    pub namespace: Option<String>,
    pub class_name: String,
    pub keys: Vec<KeyBinding>,
}

impl InstancePath {
    pub fn new(class_name: impl Into<String>) -> InstancePath {
        InstancePath { host: None, namespace: None, class_name: class_name.into(), keys: Vec::new() }
    }

    pub fn key(mut self, name: &str, value: KeyValue) -> InstancePath {
        self.keys.push(KeyBinding { name: name.into(), value });
        self
    }

    pub fn key_str(self, name: &str, value: impl Into<String>) -> InstancePath {
        self.key(name, KeyValue::string(value))
    }

    pub fn key_text(&self, name: &str) -> Option<&str> {
        self.keys.iter().find(|k| k.name.eq_ignore_ascii_case(name)).and_then(|k| match &k.value {
            KeyValue::Text { text, .. } => Some(text.as_str()),
            KeyValue::Reference(_) => None,
        })
    }

    /// True when both name the same instance: same class (case-insensitive) and the
    /// same key bindings in any order. Namespace and host are compared only when both
    /// sides carry them.
    pub fn same_instance(&self, other: &InstancePath) -> bool {
        if !self.class_name.eq_ignore_ascii_case(&other.class_name) {
            return false;
        }
        if let (Some(a), Some(b)) = (&self.namespace, &other.namespace)
            && !crate::cim::namespace_eq(a, b)
        {
            return false;
        }
        self.keys.len() == other.keys.len()
            && self.keys.iter().all(|k| {
                other
                    .keys
                    .iter()
                    .any(|o| o.name.eq_ignore_ascii_case(&k.name) && o.value.matches(&k.value))
            })
    }

    pub fn with_namespace(mut self, ns: &str) -> InstancePath {
        self.namespace = Some(ns.to_string());
        self
    }
}

/// Namespaces compare case-insensitively and without leading/trailing slashes.
pub fn namespace_eq(a: &str, b: &str) -> bool {
    a.trim_matches('/').eq_ignore_ascii_case(b.trim_matches('/'))
}

/// An instance: a class name and its properties.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub class_name: String,
    pub properties: Vec<Property>,
    /// Instance-level qualifiers (rare; accepted on input only).
    pub qualifiers: Vec<Qualifier>,
}

impl Instance {
    pub fn new(class_name: impl Into<String>) -> Instance {
        Instance { class_name: class_name.into(), properties: Vec::new(), qualifiers: Vec::new() }
    }

    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    pub fn scalar(&self, name: &str) -> Option<&str> {
        self.property(name).and_then(|p| p.value.as_ref()).and_then(Value::as_scalar)
    }

    /// Sets (or adds) a property.
    pub fn set(&mut self, name: &str, ty: CimType, value: Option<Value>) {
        let prop = Property::new(name, ty, value);
        if let Some(p) = self.properties.iter_mut().find(|p| p.name.eq_ignore_ascii_case(name)) {
            *p = prop;
        } else {
            self.properties.push(prop);
        }
    }
}

/// A method parameter declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub ty: CimType,
    pub is_array: bool,
    pub reference_class: Option<String>,
    pub qualifiers: Vec<Qualifier>,
}

impl Parameter {
    pub fn qualifier(&self, name: &str) -> Option<&Qualifier> {
        self.qualifiers.iter().find(|q| q.name.eq_ignore_ascii_case(name))
    }
}

/// A method declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct Method {
    pub name: String,
    pub return_type: CimType,
    pub parameters: Vec<Parameter>,
    pub qualifiers: Vec<Qualifier>,
    pub class_origin: Option<String>,
    pub propagated: bool,
}

/// A class declaration (resolved: inherited elements included when it comes from the
/// repository).
#[derive(Clone, Debug, PartialEq)]
pub struct Class {
    pub name: String,
    pub superclass: Option<String>,
    pub qualifiers: Vec<Qualifier>,
    pub properties: Vec<Property>,
    pub methods: Vec<Method>,
}

impl Class {
    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }
    pub fn method(&self, name: &str) -> Option<&Method> {
        self.methods.iter().find(|m| m.name.eq_ignore_ascii_case(name))
    }
    pub fn qualifier(&self, name: &str) -> Option<&Qualifier> {
        self.qualifiers.iter().find(|q| q.name.eq_ignore_ascii_case(name))
    }
    pub fn is_association(&self) -> bool {
        self.qualifier("Association").is_some()
    }
}

/// CIM status codes (DSP0200 / DSP0201 ERROR CODE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum StatusCode {
    Failed = 1,
    AccessDenied = 2,
    InvalidNamespace = 3,
    InvalidParameter = 4,
    InvalidClass = 5,
    NotFound = 6,
    NotSupported = 7,
    AlreadyExists = 11,
    NoSuchProperty = 12,
    TypeMismatch = 13,
    QueryLanguageNotSupported = 14,
    InvalidQuery = 15,
    MethodNotAvailable = 16,
    MethodNotFound = 17,
    InvalidEnumerationContext = 21,
    InvalidOperationTimeout = 22,
    PullHasBeenAbandoned = 23,
    PullCannotBeAbandoned = 24,
    FilteredEnumerationNotSupported = 25,
    ContinuationOnErrorNotSupported = 26,
    ServerLimitsExceeded = 27,
    ServerIsShuttingDown = 28,
}

/// A CIM error: returned as `<ERROR CODE DESCRIPTION>` in a 200 response.
#[derive(Clone, Debug, PartialEq)]
pub struct CimError {
    pub code: StatusCode,
    pub description: String,
}

impl CimError {
    pub fn new(code: StatusCode, description: impl Into<String>) -> CimError {
        CimError { code, description: description.into() }
    }
}

impl fmt::Display for CimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CIM error {} ({:?}): {}", self.code as u32, self.code, self.description)
    }
}

impl std::error::Error for CimError {}
