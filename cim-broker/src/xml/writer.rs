//! Encodes CIM-XML (DSP0201) responses conservatively, so that both pywbem (strict on
//! PROTOCOLVERSION and the response NAME) and wbemcli (a fragile parser) accept them:
//! every element has an explicit end tag (no `<PROPERTY/>` or `<VALUE/>`), text and
//! attributes are escaped with the predefined entities only (no CDATA, no numeric
//! character references), attributes are double-quoted.

use crate::cim::{
    CimError, Class, Instance, InstancePath, KeyValue, Method, Parameter, Property, Qualifier, Value,
};
use std::fmt::Write;

/// Escapes text and attribute values: `& < > " '`.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// Options for instance/class output (GetInstance/EnumerateInstances flags).
#[derive(Clone, Copy, Debug, Default)]
pub struct ObjectOptions {
    pub include_qualifiers: bool,
    pub include_class_origin: bool,
}

/// A growing XML document.
pub struct XmlOut {
    pub buf: String,
    /// The host name written into references nested in key bindings.
    pub host: String,
}

impl Default for XmlOut {
    fn default() -> XmlOut {
        XmlOut::new()
    }
}

impl XmlOut {
    pub fn new() -> XmlOut {
        XmlOut { buf: String::with_capacity(4096), host: "localhost".into() }
    }

    pub fn with_host(host: &str) -> XmlOut {
        XmlOut { buf: String::with_capacity(4096), host: host.into() }
    }

    fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.buf.push('<');
        self.buf.push_str(name);
        for (k, v) in attrs {
            let _ = write!(self.buf, " {k}=\"{}\"", escape(v));
        }
        self.buf.push('>');
    }

    fn close(&mut self, name: &str) {
        let _ = write!(self.buf, "</{name}>");
    }

    /// An element with attributes and no content, written with an explicit end tag.
    fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.open(name, attrs);
        self.close(name);
    }

    fn text_el(&mut self, name: &str, text: &str) {
        self.open(name, &[]);
        self.buf.push_str(&escape(text));
        self.close(name);
    }

    pub fn value(&mut self, text: &str) {
        self.text_el("VALUE", text);
    }

    pub fn value_array(&mut self, items: &[Option<String>]) {
        self.open("VALUE.ARRAY", &[]);
        for item in items {
            match item {
                Some(v) => self.value(v),
                None => self.empty("VALUE.NULL", &[]),
            }
        }
        self.close("VALUE.ARRAY");
    }

    pub fn localnamespacepath(&mut self, ns: &str) {
        self.open("LOCALNAMESPACEPATH", &[]);
        for part in ns.split('/').filter(|p| !p.is_empty()) {
            self.empty("NAMESPACE", &[("NAME", part)]);
        }
        self.close("LOCALNAMESPACEPATH");
    }

    pub fn namespacepath(&mut self, host: &str, ns: &str) {
        self.open("NAMESPACEPATH", &[]);
        self.text_el("HOST", host);
        self.localnamespacepath(ns);
        self.close("NAMESPACEPATH");
    }

    pub fn classname(&mut self, name: &str) {
        self.empty("CLASSNAME", &[("NAME", name)]);
    }

    pub fn instancename(&mut self, path: &InstancePath) {
        self.open("INSTANCENAME", &[("CLASSNAME", &path.class_name)]);
        for kb in &path.keys {
            self.open("KEYBINDING", &[("NAME", &kb.name)]);
            match &kb.value {
                KeyValue::Text { value_type, cim_type, text } => {
                    let mut attrs = vec![("VALUETYPE", value_type.as_str())];
                    if let Some(t) = cim_type {
                        attrs.push(("TYPE", t.as_str()));
                    }
                    self.open("KEYVALUE", &attrs);
                    self.buf.push_str(&escape(text));
                    self.close("KEYVALUE");
                }
                KeyValue::Reference(p) => {
                    let host = self.host.clone();
                    self.value_reference(p, &host)
                }
            }
            self.close("KEYBINDING");
        }
        self.close("INSTANCENAME");
    }

    /// An INSTANCEPATH when the path has a namespace, else an INSTANCENAME.
    pub fn instancepath(&mut self, path: &InstancePath, host: &str) {
        match &path.namespace {
            Some(ns) => {
                self.open("INSTANCEPATH", &[]);
                self.namespacepath(path.host.as_deref().unwrap_or(host), ns);
                self.instancename(path);
                self.close("INSTANCEPATH");
            }
            None => self.instancename(path),
        }
    }

    pub fn value_reference(&mut self, path: &InstancePath, host: &str) {
        self.open("VALUE.REFERENCE", &[]);
        self.instancepath(path, host);
        self.close("VALUE.REFERENCE");
    }

    pub fn qualifier(&mut self, q: &Qualifier) {
        let ty = q.ty.as_str();
        self.open("QUALIFIER", &[("NAME", &q.name), ("TYPE", ty)]);
        match &q.value {
            Some(Value::Scalar(s)) => self.value(s),
            Some(Value::Array(items)) => self.value_array(items),
            _ => {}
        }
        self.close("QUALIFIER");
    }

    fn property_attrs<'a>(p: &'a Property, opts: &ObjectOptions, attrs: &mut Vec<(&'static str, &'a str)>) {
        if opts.include_class_origin
            && let Some(origin) = &p.class_origin
        {
            attrs.push(("CLASSORIGIN", origin));
        }
        if opts.include_class_origin && p.propagated {
            attrs.push(("PROPAGATED", "true"));
        }
        if let Some(e) = &p.embedded_object {
            attrs.push(("EmbeddedObject", e));
        }
    }

    pub fn property(&mut self, p: &Property, opts: &ObjectOptions, host: &str) {
        let quals = |out: &mut XmlOut| {
            if opts.include_qualifiers {
                for q in &p.qualifiers {
                    out.qualifier(q);
                }
            }
        };
        if p.ty == crate::cim::CimType::Reference && !p.is_array {
            let mut attrs = vec![("NAME", p.name.as_str())];
            if let Some(rc) = &p.reference_class {
                attrs.push(("REFERENCECLASS", rc));
            }
            Self::property_attrs(p, opts, &mut attrs);
            self.open("PROPERTY.REFERENCE", &attrs);
            quals(self);
            if let Some(Value::Reference(path)) = &p.value {
                self.value_reference(path, host);
            }
            self.close("PROPERTY.REFERENCE");
        } else if p.is_array {
            let mut attrs = vec![("NAME", p.name.as_str()), ("TYPE", p.ty.as_str())];
            Self::property_attrs(p, opts, &mut attrs);
            self.open("PROPERTY.ARRAY", &attrs);
            quals(self);
            if let Some(Value::Array(items)) = &p.value {
                self.value_array(items);
            }
            self.close("PROPERTY.ARRAY");
        } else {
            let mut attrs = vec![("NAME", p.name.as_str()), ("TYPE", p.ty.as_str())];
            Self::property_attrs(p, opts, &mut attrs);
            self.open("PROPERTY", &attrs);
            quals(self);
            if let Some(Value::Scalar(s)) = &p.value {
                self.value(s);
            }
            self.close("PROPERTY");
        }
    }

    pub fn instance(&mut self, inst: &Instance, opts: &ObjectOptions, host: &str) {
        self.open("INSTANCE", &[("CLASSNAME", &inst.class_name)]);
        if opts.include_qualifiers {
            for q in &inst.qualifiers {
                self.qualifier(q);
            }
        }
        for p in &inst.properties {
            self.property(p, opts, host);
        }
        self.close("INSTANCE");
    }

    fn parameter(&mut self, p: &Parameter, opts: &ObjectOptions) {
        let ty = p.ty.as_str();
        let (name, mut attrs): (&str, Vec<(&str, &str)>) =
            match (p.ty == crate::cim::CimType::Reference, p.is_array) {
                (true, false) => ("PARAMETER.REFERENCE", vec![("NAME", &p.name)]),
                (true, true) => ("PARAMETER.REFARRAY", vec![("NAME", &p.name)]),
                (false, true) => ("PARAMETER.ARRAY", vec![("NAME", &p.name), ("TYPE", ty)]),
                (false, false) => ("PARAMETER", vec![("NAME", &p.name), ("TYPE", ty)]),
            };
        if let Some(rc) = &p.reference_class {
            attrs.push(("REFERENCECLASS", rc));
        }
        self.open(name, &attrs);
        if opts.include_qualifiers {
            for q in &p.qualifiers {
                self.qualifier(q);
            }
        }
        self.close(name);
    }

    fn method(&mut self, m: &Method, opts: &ObjectOptions) {
        let mut attrs = vec![("NAME", m.name.as_str()), ("TYPE", m.return_type.as_str())];
        if opts.include_class_origin
            && let Some(o) = &m.class_origin
        {
            attrs.push(("CLASSORIGIN", o));
        }
        if opts.include_class_origin && m.propagated {
            attrs.push(("PROPAGATED", "true"));
        }
        self.open("METHOD", &attrs);
        if opts.include_qualifiers {
            for q in &m.qualifiers {
                self.qualifier(q);
            }
        }
        for p in &m.parameters {
            self.parameter(p, opts);
        }
        self.close("METHOD");
    }

    pub fn class(&mut self, c: &Class, opts: &ObjectOptions) {
        let mut attrs = vec![("NAME", c.name.as_str())];
        if let Some(s) = &c.superclass {
            attrs.push(("SUPERCLASS", s));
        }
        self.open("CLASS", &attrs);
        if opts.include_qualifiers {
            for q in &c.qualifiers {
                self.qualifier(q);
            }
        }
        for p in &c.properties {
            let host = self.host.clone();
            self.property(p, opts, &host);
        }
        for m in &c.methods {
            self.method(m, opts);
        }
        self.close("CLASS");
    }

    pub fn value_namedinstance(&mut self, path: &InstancePath, inst: &Instance, opts: &ObjectOptions) {
        self.open("VALUE.NAMEDINSTANCE", &[]);
        let mut local = path.clone();
        local.namespace = None;
        self.instancename(&local);
        let host = self.host.clone();
        self.instance(inst, opts, &host);
        self.close("VALUE.NAMEDINSTANCE");
    }

    pub fn value_objectwithpath(&mut self, path: &InstancePath, inst: &Instance, opts: &ObjectOptions, host: &str) {
        self.open("VALUE.OBJECTWITHPATH", &[]);
        self.instancepath(path, host);
        self.instance(inst, opts, host);
        self.close("VALUE.OBJECTWITHPATH");
    }

    pub fn value_instancewithpath(&mut self, path: &InstancePath, inst: &Instance, opts: &ObjectOptions, host: &str) {
        self.open("VALUE.INSTANCEWITHPATH", &[]);
        self.instancepath(path, host);
        self.instance(inst, opts, host);
        self.close("VALUE.INSTANCEWITHPATH");
    }

    pub fn objectpath(&mut self, path: &InstancePath, host: &str) {
        self.open("OBJECTPATH", &[]);
        self.instancepath(path, host);
        self.close("OBJECTPATH");
    }

    pub fn error(&mut self, e: &CimError) {
        let code = (e.code as u32).to_string();
        self.empty("ERROR", &[("CODE", &code), ("DESCRIPTION", &e.description)]);
    }

    pub fn raw(&mut self, s: &str) {
        self.buf.push_str(s);
    }

    /// A PARAMVALUE for an output parameter or pull result.
    pub fn paramvalue(&mut self, name: &str, param_type: &str, value: &Value, host: &str) {
        self.open("PARAMVALUE", &[("NAME", name), ("PARAMTYPE", param_type)]);
        match value {
            Value::Scalar(s) => self.value(s),
            Value::Array(items) => self.value_array(items),
            Value::Reference(p) => self.value_reference(p, host),
            Value::ReferenceArray(ps) => {
                self.open("VALUE.REFARRAY", &[]);
                for p in ps {
                    self.value_reference(p, host);
                }
                self.close("VALUE.REFARRAY");
            }
        }
        self.close("PARAMVALUE");
    }
}

const PROLOG: &str = "<?xml version=\"1.0\" encoding=\"utf-8\" ?>\n<CIM CIMVERSION=\"2.0\" DTDVERSION=\"2.0\">";

/// Wraps an intrinsic method response: `body` is the content of IMETHODRESPONSE
/// (IRETURNVALUE and PARAMVALUEs, or ERROR).
pub fn imethod_response(id: &str, name: &str, body: &str) -> String {
    let mut out = XmlOut::new();
    out.raw(PROLOG);
    out.open("MESSAGE", &[("ID", id), ("PROTOCOLVERSION", "1.0")]);
    out.open("SIMPLERSP", &[]);
    out.open("IMETHODRESPONSE", &[("NAME", name)]);
    out.raw(body);
    out.close("IMETHODRESPONSE");
    out.close("SIMPLERSP");
    out.close("MESSAGE");
    out.close("CIM");
    out.buf
}

/// Wraps an extrinsic method response.
pub fn method_response(id: &str, name: &str, body: &str) -> String {
    let mut out = XmlOut::new();
    out.raw(PROLOG);
    out.open("MESSAGE", &[("ID", id), ("PROTOCOLVERSION", "1.0")]);
    out.open("SIMPLERSP", &[]);
    out.open("METHODRESPONSE", &[("NAME", name)]);
    out.raw(body);
    out.close("METHODRESPONSE");
    out.close("SIMPLERSP");
    out.close("MESSAGE");
    out.close("CIM");
    out.buf
}

/// IRETURNVALUE around `inner`.
pub fn ireturnvalue(inner: &str) -> String {
    format!("<IRETURNVALUE>{inner}</IRETURNVALUE>")
}

/// RETURNVALUE of an extrinsic method.
pub fn returnvalue(param_type: &str, value: &str) -> String {
    let mut out = XmlOut::new();
    out.open("RETURNVALUE", &[("PARAMTYPE", param_type)]);
    out.value(value);
    out.close("RETURNVALUE");
    out.buf
}
