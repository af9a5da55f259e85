//! A reader for the subset of MOF (DSP0004) that the broker's class data uses:
//! class declarations with qualifiers, properties (scalar, array, reference) and
//! methods with parameters. The data is the DMTF schema's own declarations, with
//! the Description qualifiers left out to keep the binary small.

use crate::cim::{CimType, Class, Method, Parameter, Property, Qualifier, Value};

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Punct(char),
}

fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, String> {
    let mut toks = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            i += 1;
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => return Err(format!("line {line}: unterminated string")),
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let e = chars.get(i + 1).copied().ok_or(format!("line {line}: bad escape"))?;
                        s.push(match e {
                            'n' => '\n',
                            'r' => '\r',
                            't' => '\t',
                            other => other,
                        });
                        i += 2;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            toks.push((Tok::Str(s), line));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push((Tok::Ident(chars[start..i].iter().collect()), line));
        } else if c.is_ascii_digit() || c == '-' || c == '+' {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            toks.push((Tok::Num(chars[start..i].iter().collect()), line));
        } else if "[](){},;:=".contains(c) {
            toks.push((Tok::Punct(c), line));
            i += 1;
        } else {
            return Err(format!("line {line}: unexpected character {c:?}"));
        }
    }
    Ok(toks)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }
    fn line(&self) -> usize {
        self.toks.get(self.pos).or(self.toks.last()).map_or(0, |(_, l)| *l)
    }
    fn next(&mut self) -> Result<Tok, String> {
        let t = self.toks.get(self.pos).map(|(t, _)| t.clone()).ok_or("unexpected end of MOF")?;
        self.pos += 1;
        Ok(t)
    }
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("line {}: {what} (found {:?})", self.line(), self.peek()))
    }
    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }
    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.is_punct(c) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(&format!("expected {c:?}"))
        }
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.next()? {
            Tok::Ident(s) => Ok(s),
            _ => {
                self.pos -= 1;
                self.err("expected an identifier")
            }
        }
    }

    /// A literal: concatenated strings, a number, TRUE/FALSE or NULL.
    fn literal(&mut self) -> Result<(CimType, Option<String>), String> {
        match self.next()? {
            Tok::Str(mut s) => {
                while let Some(Tok::Str(more)) = self.peek() {
                    s.push_str(more);
                    self.pos += 1;
                }
                Ok((CimType::String, Some(s)))
            }
            Tok::Num(n) => Ok((if n.starts_with('-') { CimType::Sint32 } else { CimType::Uint32 }, Some(n))),
            Tok::Ident(i) if i.eq_ignore_ascii_case("true") => Ok((CimType::Boolean, Some("TRUE".into()))),
            Tok::Ident(i) if i.eq_ignore_ascii_case("false") => Ok((CimType::Boolean, Some("FALSE".into()))),
            Tok::Ident(i) if i.eq_ignore_ascii_case("null") => Ok((CimType::String, None)),
            _ => {
                self.pos -= 1;
                self.err("expected a literal")
            }
        }
    }

    fn qualifiers(&mut self) -> Result<Vec<Qualifier>, String> {
        let mut out = Vec::new();
        if !self.is_punct('[') {
            return Ok(out);
        }
        self.pos += 1;
        loop {
            let name = self.ident()?;
            let q = if self.is_punct('(') {
                self.pos += 1;
                let (ty, v) = self.literal()?;
                self.expect(')')?;
                Qualifier { name, ty, value: v.map(Value::Scalar), is_array: false }
            } else if self.is_punct('{') {
                self.pos += 1;
                let mut items = Vec::new();
                let mut types = Vec::new();
                loop {
                    let (t, v) = self.literal()?;
                    types.push(t);
                    items.push(v);
                    if self.is_punct(',') {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                self.expect('}')?;
                let ty = types.last().copied().unwrap_or(CimType::String);
                Qualifier { name, ty, value: Some(Value::Array(items)), is_array: true }
            } else {
                Qualifier { name, ty: CimType::Boolean, value: Some(Value::Scalar("TRUE".into())), is_array: false }
            };
            out.push(q);
            if self.is_punct(',') {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.expect(']')?;
        Ok(out)
    }

    /// `type name`, `type name[]` or `Class REF name`; returns
    /// (type, reference class, name, is_array).
    fn typed_name(&mut self) -> Result<(CimType, Option<String>, String, bool), String> {
        let first = self.ident()?;
        let second = self.ident()?;
        let (ty, refclass, name) = if second.eq_ignore_ascii_case("REF") {
            (CimType::Reference, Some(first), self.ident()?)
        } else {
            let ty = CimType::parse(&first).ok_or_else(|| format!("line {}: unknown type {first}", self.line()))?;
            (ty, None, second)
        };
        let mut is_array = false;
        if self.is_punct('[') {
            self.pos += 1;
            if let Some(Tok::Num(_)) = self.peek() {
                self.pos += 1;
            }
            self.expect(']')?;
            is_array = true;
        }
        Ok((ty, refclass, name, is_array))
    }

    fn class(&mut self) -> Result<Class, String> {
        let qualifiers = self.qualifiers()?;
        let kw = self.ident()?;
        if !kw.eq_ignore_ascii_case("class") {
            return self.err("expected `class`");
        }
        let name = self.ident()?;
        let superclass = if self.is_punct(':') {
            self.pos += 1;
            Some(self.ident()?)
        } else {
            None
        };
        self.expect('{')?;
        let mut class = Class { name, superclass, qualifiers, properties: Vec::new(), methods: Vec::new() };
        while !self.is_punct('}') {
            let quals = self.qualifiers()?;
            let (ty, refclass, fname, is_array) = self.typed_name()?;
            if self.is_punct('(') {
                self.pos += 1;
                let mut parameters = Vec::new();
                while !self.is_punct(')') {
                    let pq = self.qualifiers()?;
                    let (pty, prc, pname, parr) = self.typed_name()?;
                    parameters.push(Parameter { name: pname, ty: pty, is_array: parr, reference_class: prc, qualifiers: pq });
                    if self.is_punct(',') {
                        self.pos += 1;
                    }
                }
                self.expect(')')?;
                self.expect(';')?;
                class.methods.push(Method {
                    name: fname,
                    return_type: ty,
                    parameters,
                    qualifiers: quals,
                    class_origin: None,
                    propagated: false,
                });
            } else {
                let mut value = None;
                if self.is_punct('=') {
                    self.pos += 1;
                    if self.is_punct('{') {
                        self.pos += 1;
                        let mut items = Vec::new();
                        while !self.is_punct('}') {
                            items.push(self.literal()?.1);
                            if self.is_punct(',') {
                                self.pos += 1;
                            }
                        }
                        self.expect('}')?;
                        value = Some(Value::Array(items));
                    } else {
                        value = self.literal()?.1.map(Value::Scalar);
                    }
                }
                self.expect(';')?;
                let embedded = quals
                    .iter()
                    .any(|q| q.name.eq_ignore_ascii_case("EmbeddedInstance"))
                    .then(|| "instance".to_string());
                class.properties.push(Property {
                    name: fname,
                    ty,
                    is_array,
                    reference_class: refclass,
                    value,
                    class_origin: None,
                    propagated: false,
                    embedded_object: embedded,
                    qualifiers: quals,
                });
            }
        }
        self.expect('}')?;
        self.expect(';')?;
        Ok(class)
    }
}

/// Parses MOF text holding class declarations.
pub fn parse_classes(src: &str) -> Result<Vec<Class>, String> {
    let mut p = Parser { toks: tokenize(src)?, pos: 0 };
    let mut out = Vec::new();
    while p.peek().is_some() {
        out.push(p.class()?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_properties_methods_and_qualifiers() {
        let src = r#"
            // comment
            [Abstract, Version ( "2.41.0" )]
            class CIM_X : CIM_Y {
              [Key, MaxLen ( 256 )] string Name;
              [ValueMap { "0", "2" }, Values { "Unknown", "Enabled" }] uint16 EnabledState = 2;
              string Dedicated[];
              CIM_Y REF Other;
              uint32 Go([IN, ValueMap {"2"}] uint16 RequestedState, [IN ( false ), OUT] CIM_ConcreteJob REF Job, [IN] string Items[]);
            };"#;
        let classes = parse_classes(src).unwrap();
        let c = &classes[0];
        assert_eq!(c.name, "CIM_X");
        assert_eq!(c.superclass.as_deref(), Some("CIM_Y"));
        assert!(c.property("Name").unwrap().is_key());
        assert_eq!(c.property("EnabledState").unwrap().value, Some(Value::Scalar("2".into())));
        assert!(c.property("Dedicated").unwrap().is_array);
        assert_eq!(c.property("Other").unwrap().reference_class.as_deref(), Some("CIM_Y"));
        let m = c.method("Go").unwrap();
        assert_eq!(m.parameters.len(), 3);
        assert_eq!(m.parameters[1].ty, CimType::Reference);
        assert_eq!(m.parameters[1].qualifier("IN").unwrap().value_str(), Some("FALSE"));
        assert!(m.parameters[2].is_array);
    }

    #[test]
    fn reports_errors_with_lines() {
        let e = parse_classes("class A {\n  bogus x;\n};").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }
}
