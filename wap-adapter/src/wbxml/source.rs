//! Reading a WML source deck (XML 1.0) into a small tree for the compiler:
//! quick-xml does the parsing; this module decodes the input charset (UTF-8,
//! US-ASCII or ISO-8859-1 per the XML declaration), resolves the entities
//! WML defines (the XML five plus `nbsp` and `shy`, WAP-191-WML §10.1) and
//! character references, normalises attribute-value whitespace (XML 1.0
//! §3.3.3) and line ends (§2.11), and bounds the nesting depth.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::compile::CompileError;

/// A node of the source tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Element(Element),
    /// Character data with entities resolved (adjacent pieces merged).
    Text(String),
    /// A CDATA section, verbatim.
    CData(String),
    /// A comment or processing instruction (kept as a sibling for the
    /// whitespace rules, otherwise ignored).
    Other,
}

/// An element of the source tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub children: Vec<Node>,
}

/// A parsed deck: the DOCTYPE's public identifier, if any, and the root.
#[derive(Debug)]
pub(crate) struct SourceDeck {
    pub public_id: Option<String>,
    pub root: Element,
}

/// Parses `wml`, with elements nested at most `max_depth` deep.
pub(crate) fn parse(wml: &[u8], max_depth: usize) -> Result<SourceDeck, CompileError> {
    let text = decode_input(wml)?;
    let mut reader = Reader::from_str(&text);
    reader.config_mut().check_end_names = true;
    let mut public_id = None;
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    loop {
        let position = reader.buffer_position();
        let event = reader.read_event().map_err(|e| CompileError::Xml {
            position: reader.error_position(),
            message: e.to_string(),
        })?;
        match event {
            Event::Decl(_) => {}
            Event::DocType(d) => {
                let d = d.decode().map_err(|e| xml_error(position, &e))?;
                public_id = doctype_public_id(&d);
            }
            Event::Start(s) => {
                if stack.len() >= max_depth {
                    return Err(CompileError::TooDeep { limit: max_depth });
                }
                if root.is_some() && stack.is_empty() {
                    return Err(CompileError::Xml {
                        position,
                        message: "content after the root element".into(),
                    });
                }
                stack.push(element(&s, position)?);
            }
            Event::Empty(s) => {
                let e = element(&s, position)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(e)),
                    None if root.is_none() => root = Some(e),
                    None => {
                        return Err(CompileError::Xml {
                            position,
                            message: "content after the root element".into(),
                        })
                    }
                }
            }
            Event::End(_) => {
                let done = stack.pop().ok_or(CompileError::Xml {
                    position,
                    message: "unmatched end tag".into(),
                })?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(done)),
                    None => root = Some(done),
                }
            }
            Event::Text(t) => {
                let t = t.decode().map_err(|e| xml_error(position, &e))?;
                push_text(&mut stack, &normalise_line_ends(&t), position)?;
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|e| xml_error(position, &e))? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| xml_error(position, &e))?;
                        resolve_entity(&name)
                            .ok_or_else(|| CompileError::UnknownEntity(name.to_string()))?
                            .to_string()
                    }
                };
                push_text(&mut stack, &resolved, position)?;
            }
            Event::CData(c) => {
                let c = c.decode().map_err(|e| xml_error(position, &e))?;
                if let Some(parent) = stack.last_mut() {
                    parent
                        .children
                        .push(Node::CData(normalise_line_ends(&c).into_owned()));
                }
            }
            Event::Comment(_) | Event::PI(_) => {
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(Node::Other);
                }
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(CompileError::Xml {
            position: reader.buffer_position(),
            message: "unclosed element at end of input".into(),
        });
    }
    let root = root.ok_or(CompileError::NoRootElement)?;
    Ok(SourceDeck { public_id, root })
}

/// The replacement text of a named entity WML defines.
pub(crate) fn resolve_entity(name: &str) -> Option<&'static str> {
    Some(match name {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        "nbsp" => "\u{A0}",
        "shy" => "\u{AD}",
        _ => return None,
    })
}

fn xml_error(position: u64, e: &dyn std::fmt::Display) -> CompileError {
    CompileError::Xml {
        position,
        message: e.to_string(),
    }
}

/// Appends character data to the open element, merging it with a directly
/// preceding text node (as entity references split text into events).
fn push_text(stack: &mut [Element], text: &str, position: u64) -> Result<(), CompileError> {
    let Some(parent) = stack.last_mut() else {
        if text.chars().all(is_xml_space) {
            return Ok(());
        }
        return Err(CompileError::Xml {
            position,
            message: "text outside the root element".into(),
        });
    };
    if let Some(Node::Text(previous)) = parent.children.last_mut() {
        previous.push_str(text);
    } else {
        parent.children.push(Node::Text(text.to_string()));
    }
    Ok(())
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn element(start: &BytesStart<'_>, position: u64) -> Result<Element, CompileError> {
    let name = std::str::from_utf8(start.name().as_ref())
        .map_err(|e| xml_error(position, &e))?
        .to_string();
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| xml_error(position, &e))?;
        let key = std::str::from_utf8(attribute.key.as_ref())
            .map_err(|e| xml_error(position, &e))?
            .to_string();
        let raw = std::str::from_utf8(&attribute.value).map_err(|e| xml_error(position, &e))?;
        // XML 1.0 §3.3.3: literal white space characters become spaces
        // before references are expanded.
        let raw: String = raw
            .chars()
            .map(|c| {
                if matches!(c, '\t' | '\n' | '\r') {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        let value =
            quick_xml::escape::unescape_with(&raw, resolve_entity).map_err(|e| match e {
                quick_xml::escape::EscapeError::UnrecognizedEntity(_, name) => {
                    CompileError::UnknownEntity(name)
                }
                other => xml_error(position, &other),
            })?;
        attributes.push((key, value.into_owned()));
    }
    Ok(Element {
        name,
        attributes,
        children: Vec::new(),
    })
}

/// XML 1.0 §2.11: CR LF and lone CR become LF.
fn normalise_line_ends(text: &str) -> Cow<'_, str> {
    if text.contains('\r') {
        Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The input as UTF-8 text, decoded per the XML declaration's encoding.
fn decode_input(wml: &[u8]) -> Result<String, CompileError> {
    let wml = wml.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(wml);
    match declared_encoding(wml).map(|e| e.to_ascii_uppercase()) {
        None => utf8(wml),
        Some(e) if e == "UTF-8" || e == "US-ASCII" || e == "ASCII" => utf8(wml),
        Some(e) if e == "ISO-8859-1" || e == "LATIN1" || e == "ISO_8859-1" => {
            Ok(wml.iter().map(|&b| char::from(b)).collect())
        }
        Some(e) => Err(CompileError::UnsupportedEncoding(e)),
    }
}

fn utf8(wml: &[u8]) -> Result<String, CompileError> {
    String::from_utf8(wml.to_vec()).map_err(|e| CompileError::Xml {
        position: e.utf8_error().valid_up_to() as u64,
        message: "input is not valid UTF-8".into(),
    })
}

/// The `encoding` pseudo-attribute of a leading XML declaration.
fn declared_encoding(wml: &[u8]) -> Option<String> {
    let head = wml.strip_prefix(b"<?xml")?;
    let end = head.windows(2).position(|w| w == b"?>")?;
    let decl = String::from_utf8_lossy(head.get(..end)?);
    let at = decl.find("encoding")?;
    let rest = decl.get(at + "encoding".len()..)?.trim_start();
    let rest = rest.strip_prefix('=')?.trim_start();
    let quote = rest.chars().next()?;
    if quote != '"' && quote != '\'' {
        return None;
    }
    let rest = rest.get(1..)?;
    Some(rest.get(..rest.find(quote)?)?.to_string())
}

/// The public identifier of a DOCTYPE body (`wml PUBLIC "fpi" "uri"`).
fn doctype_public_id(doctype: &str) -> Option<String> {
    let at = doctype.find("PUBLIC")?;
    let rest = doctype.get(at + "PUBLIC".len()..)?.trim_start();
    let quote = rest.chars().next()?;
    if quote != '"' && quote != '\'' {
        return None;
    }
    let rest = rest.get(1..)?;
    Some(rest.get(..rest.find(quote)?)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_and_references_resolve_and_merge() {
        let deck = parse(
            b"<wml><p a=\"x&amp;&#65;\ny\">a&nbsp;b&shy;&#x41;&lt;</p></wml>",
            8,
        )
        .unwrap();
        let Node::Element(p) = &deck.root.children[0] else {
            panic!("no p")
        };
        assert_eq!(p.attributes, vec![("a".into(), "x&A y".into())]);
        assert_eq!(p.children, vec![Node::Text("a\u{A0}b\u{AD}A<".into())]);
    }

    #[test]
    fn unknown_entity_is_an_error() {
        assert!(matches!(
            parse(b"<wml>&eacute;</wml>", 8),
            Err(CompileError::UnknownEntity(n)) if n == "eacute"
        ));
    }

    #[test]
    fn latin1_input_and_doctype() {
        let deck = parse(
            b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<!DOCTYPE wml PUBLIC \"-//WAPFORUM//DTD WML 1.3//EN\" \"x\"><wml>\xE9</wml>",
            8,
        )
        .unwrap();
        assert_eq!(
            deck.public_id.as_deref(),
            Some("-//WAPFORUM//DTD WML 1.3//EN")
        );
        assert_eq!(deck.root.children, vec![Node::Text("\u{E9}".into())]);
    }

    #[test]
    fn depth_is_bounded_and_malformed_input_rejected() {
        let deep = "<a>".repeat(10) + &"</a>".repeat(10);
        assert!(matches!(
            parse(deep.as_bytes(), 5),
            Err(CompileError::TooDeep { limit: 5 })
        ));
        assert!(parse(b"<wml><p></wml>", 8).is_err());
        assert!(parse(b"<wml>", 8).is_err());
        assert!(matches!(parse(b"", 8), Err(CompileError::NoRootElement)));
    }
}
