//! A small, bounded element tree built with quick-xml. CIM-XML messages are small
//! and deeply regular, so the reader first builds this tree (refusing DTDs, unknown
//! entities, excessive depth and element counts) and then maps it to CIM types.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// Limits applied while parsing untrusted XML.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Maximum element nesting depth. DSP0201 messages need fewer than 20 levels.
    pub max_depth: usize,
    /// Maximum number of elements in one document.
    pub max_elements: usize,
    /// Maximum input size in bytes.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_depth: 64, max_elements: 200_000, max_bytes: 4 * 1024 * 1024 }
    }
}

/// Why a document was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XmlError {
    /// Not well-formed XML (or not UTF-8, or an unknown entity).
    NotWellFormed(String),
    /// Well-formed but a DTD or processing we refuse (entity expansion is never done).
    Refused(String),
    /// Depth, element count or size limit exceeded.
    TooLarge(String),
}

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XmlError::NotWellFormed(s) => write!(f, "not well-formed XML: {s}"),
            XmlError::Refused(s) => write!(f, "refused XML: {s}"),
            XmlError::TooLarge(s) => write!(f, "XML over limits: {s}"),
        }
    }
}

/// One element: name, attributes (unescaped), child elements and its text content
/// (character data and CDATA concatenated, unescaped).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

fn start_element(e: &BytesStart<'_>) -> Result<Element, XmlError> {
    let name = std::str::from_utf8(e.name().as_ref())
        .map_err(|_| XmlError::NotWellFormed("element name is not UTF-8".into()))?
        .to_string();
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| XmlError::NotWellFormed(format!("attribute in <{name}>: {err}")))?;
        let key = std::str::from_utf8(a.key.as_ref())
            .map_err(|_| XmlError::NotWellFormed("attribute name is not UTF-8".into()))?
            .to_string();
        let raw = std::str::from_utf8(&a.value)
            .map_err(|_| XmlError::NotWellFormed("attribute value is not UTF-8".into()))?;
        let value = quick_xml::escape::unescape(raw)
            .map_err(|err| XmlError::NotWellFormed(format!("attribute {key}: {err}")))?
            .into_owned();
        if attrs.iter().any(|(k, _): &(String, String)| *k == key) {
            return Err(XmlError::NotWellFormed(format!("duplicate attribute {key} in <{name}>")));
        }
        attrs.push((key, value));
    }
    Ok(Element { name, attrs, children: Vec::new(), text: String::new() })
}

/// Parses a document (or fragment with a single root element) into a tree.
pub fn parse(input: &[u8], limits: &Limits) -> Result<Element, XmlError> {
    if input.len() > limits.max_bytes {
        return Err(XmlError::TooLarge(format!("{} bytes (limit {})", input.len(), limits.max_bytes)));
    }
    let text = std::str::from_utf8(input)
        .map_err(|e| XmlError::NotWellFormed(format!("not UTF-8: {e}")))?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    reader.config_mut().expand_empty_elements = false;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError::NotWellFormed(format!("at byte {}: {e}", reader.buffer_position())))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_empty = matches!(event, Event::Empty(_));
                if root.is_some() {
                    return Err(XmlError::NotWellFormed("content after the root element".into()));
                }
                count += 1;
                if count > limits.max_elements {
                    return Err(XmlError::TooLarge(format!("more than {} elements", limits.max_elements)));
                }
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::TooLarge(format!("nesting deeper than {}", limits.max_depth)));
                }
                let el = start_element(e)?;
                if is_empty {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => root = Some(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| XmlError::NotWellFormed("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let raw = std::str::from_utf8(&t)
                    .map_err(|_| XmlError::NotWellFormed("text is not UTF-8".into()))?;
                match stack.last_mut() {
                    Some(el) => {
                        let s = quick_xml::escape::unescape(raw)
                            .map_err(|e| XmlError::NotWellFormed(format!("text: {e}")))?;
                        el.text.push_str(&s);
                    }
                    None if raw.trim().is_empty() => {}
                    None => return Err(XmlError::NotWellFormed("text outside the root element".into())),
                }
            }
            Event::GeneralRef(r) => {
                // quick-xml reports entity references separately from text: resolve
                // only the predefined entities and character references.
                let name = std::str::from_utf8(&r)
                    .map_err(|_| XmlError::NotWellFormed("entity name is not UTF-8".into()))?;
                let resolved = match name {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "apos" => '\'',
                    "quot" => '"',
                    _ => {
                        let code = if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                            u32::from_str_radix(hex, 16).ok()
                        } else if let Some(dec) = name.strip_prefix('#') {
                            dec.parse::<u32>().ok()
                        } else {
                            return Err(XmlError::Refused(format!("entity &{name}; is not defined (no DTD entities)")));
                        };
                        code.and_then(char::from_u32).ok_or_else(|| {
                            XmlError::NotWellFormed(format!("bad character reference &{name};"))
                        })?
                    }
                };
                match stack.last_mut() {
                    Some(el) => el.text.push(resolved),
                    None => return Err(XmlError::NotWellFormed("reference outside the root element".into())),
                }
            }
            Event::CData(c) => {
                let s = std::str::from_utf8(&c)
                    .map_err(|_| XmlError::NotWellFormed("CDATA is not UTF-8".into()))?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(s),
                    None => return Err(XmlError::NotWellFormed("CDATA outside the root element".into())),
                }
            }
            Event::DocType(_) => {
                return Err(XmlError::Refused("DTDs are not accepted (no entity expansion)".into()));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::NotWellFormed("document ends inside an element".into()));
    }
    root.ok_or_else(|| XmlError::NotWellFormed("no root element".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_cdata_and_entities() {
        let el = parse(b"<A x='1 &amp; 2'><B>a&lt;b<![CDATA[<c>]]>&#233;</B></A>", &Limits::default()).unwrap();
        assert_eq!(el.attr("x"), Some("1 & 2"));
        assert_eq!(el.child("B").unwrap().text, "a<b<c>\u{e9}");
    }

    #[test]
    fn refuses_dtd_and_unknown_entities() {
        let bomb = b"<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><CIM>&lol2;</CIM>";
        assert!(matches!(parse(bomb, &Limits::default()), Err(XmlError::Refused(_))));
        assert!(matches!(parse(b"<CIM>&lol;</CIM>", &Limits::default()), Err(XmlError::Refused(_))));
    }

    #[test]
    fn refuses_deep_nesting_and_big_input() {
        let deep = "<a>".repeat(10_000) + &"</a>".repeat(10_000);
        assert!(matches!(parse(deep.as_bytes(), &Limits::default()), Err(XmlError::TooLarge(_))));
        let limits = Limits { max_bytes: 10, ..Limits::default() };
        assert!(matches!(parse(b"<a>0123456789</a>", &limits), Err(XmlError::TooLarge(_))));
    }

    #[test]
    fn refuses_malformed() {
        for bad in [&b"<a><b></a>"[..], b"<a>", b"", b"<a/><b/>", b"<a x='1' x='2'/>", b"\xff\xfe"] {
            assert!(matches!(parse(bad, &Limits::default()), Err(XmlError::NotWellFormed(_))), "{bad:?}");
        }
    }
}
