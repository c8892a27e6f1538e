//! WML (WAP-191-WML, 1.1 to 1.3) to HTML5, for browsers reaching a
//! WML-only application.
//!
//! The deck is read with quick-xml into a small tree, then written as one
//! HTML page: each card becomes a `<section id>` (so `#card` links work),
//! paragraphs `<div>`s, `input`/`select` the matching form controls, and
//! every `go` task with postfields (in a `do` or an `anchor`) a `<form>`
//! whose controls are the card's fields, tied to it with the `form`
//! attribute and renamed to the postfield names the application expects.
//! The first card's timer or `onenterforward` becomes a meta refresh.
//! Variables are substituted from the request's query string; unknown ones
//! stay visible as written. `template`, `setvar` and WMLScript are not
//! carried over.

use std::collections::HashMap;

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Reader;
use quick_xml::Writer;
use url::Url;

use super::{is_xml_char, parse_page_url, ConvertError};

/// Elements nested deeper than this make the deck fail (WML decks are
/// shallow; the limit keeps the recursive writer's stack bounded).
const MAX_DEPTH: usize = 64;

/// Converts a WML deck to an HTML5 page.
///
/// `page_url` is the absolute URL the deck was requested with: its query
/// string gives the values of the deck's variables, and relative image
/// sources are resolved against it. A deck that is not well-formed XML, has
/// another root element than `wml`, or nests too deep is refused.
pub fn wml_to_html(wml: &[u8], page_url: &str) -> Result<String, ConvertError> {
    let page_url = parse_page_url(page_url)?;
    let root = parse(wml)?;
    let vars: HashMap<String, String> = page_url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut html = Html {
        w: Writer::new(Vec::new()),
        vars,
        page_url,
        go_ids: HashMap::new(),
        bindings: HashMap::new(),
        forms: 0,
    };
    html.document(&root)?;
    String::from_utf8(html.w.into_inner())
        .map_err(|e| ConvertError::Write(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// A node of the parsed deck.
#[derive(Debug)]
enum Node {
    Element(Element),
    Text(String),
}

#[derive(Debug)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|c| match c {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// All elements under this one (itself excluded), in document order.
    fn descendants(&self) -> Vec<&Element> {
        let mut out = Vec::new();
        let mut stack: Vec<&Element> = self.elements().collect();
        stack.reverse();
        while let Some(e) = stack.pop() {
            out.push(e);
            let mut children: Vec<&Element> = e.elements().collect();
            children.reverse();
            stack.extend(children);
        }
        out
    }

    /// The text under this element, whitespace collapsed.
    fn text(&self) -> String {
        let mut out = String::new();
        let mut stack: Vec<&Node> = self.children.iter().rev().collect();
        while let Some(n) = stack.pop() {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Element(e) => stack.extend(e.children.iter().rev()),
            }
        }
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Reads the deck into a tree (ISO-8859-1 decks are transcoded first).
fn parse(wml: &[u8]) -> Result<Element, ConvertError> {
    let text: String = if declares_latin1(wml) {
        wml.iter().map(|&b| char::from(b)).collect()
    } else {
        String::from_utf8_lossy(wml).into_owned()
    };
    let mut reader = Reader::from_str(&text);
    reader.config_mut().expand_empty_elements = true;
    let malformed = |reader: &Reader<&[u8]>, reason: String| ConvertError::MalformedWml {
        position: reader.error_position(),
        reason,
    };
    let mut stack: Vec<Element> = vec![Element {
        name: String::new(),
        attrs: Vec::new(),
        children: Vec::new(),
    }];
    loop {
        let event = reader
            .read_event()
            .map_err(|e| malformed(&reader, e.to_string()))?;
        match event {
            Event::Start(start) => {
                if stack.len() > MAX_DEPTH {
                    return Err(ConvertError::TooDeep { limit: MAX_DEPTH });
                }
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                let mut attrs = Vec::new();
                for attr in start.attributes() {
                    let attr = attr.map_err(|e| malformed(&reader, e.to_string()))?;
                    let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
                    let value = attr
                        .unescape_value_with(wml_entity)
                        .map_err(|e| malformed(&reader, e.to_string()))?;
                    attrs.push((key, value.into_owned()));
                }
                stack.push(Element {
                    name,
                    attrs,
                    children: Vec::new(),
                });
            }
            Event::End(_) => {
                let element = stack.pop();
                match (element, stack.last_mut()) {
                    (Some(element), Some(parent)) => parent.children.push(Node::Element(element)),
                    _ => return Err(malformed(&reader, "unbalanced end tag".to_owned())),
                }
            }
            Event::Text(t) => {
                let t = t.decode().map_err(|e| malformed(&reader, e.to_string()))?;
                push_text(&mut stack, &t);
            }
            Event::CData(t) => {
                let t = t.decode().map_err(|e| malformed(&reader, e.to_string()))?;
                push_text(&mut stack, &t);
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => {
                        let name = r.decode().map_err(|e| malformed(&reader, e.to_string()))?;
                        wml_entity(&name)
                            .map(str::to_owned)
                            .unwrap_or_else(|| format!("&{name};"))
                    }
                };
                push_text(&mut stack, &resolved);
            }
            Event::Eof => break,
            Event::Empty(_)
            | Event::Comment(_)
            | Event::Decl(_)
            | Event::PI(_)
            | Event::DocType(_) => {}
        }
    }
    let document = match (stack.pop(), stack.is_empty()) {
        (Some(document), true) => document,
        _ => {
            return Err(ConvertError::MalformedWml {
                position: text.len() as u64,
                reason: "unclosed elements at the end".to_owned(),
            })
        }
    };
    let mut roots = document.children.into_iter().filter_map(|n| match n {
        Node::Element(e) => Some(e),
        Node::Text(_) => None,
    });
    match roots.next() {
        Some(root) if root.name == "wml" => Ok(root),
        Some(root) => Err(ConvertError::NotWml { found: root.name }),
        None => Err(ConvertError::NotWml {
            found: String::new(),
        }),
    }
}

fn push_text(stack: &mut [Element], text: &str) {
    if let Some(parent) = stack.last_mut() {
        let text: String = text.chars().filter(|c| is_xml_char(*c)).collect();
        match parent.children.last_mut() {
            Some(Node::Text(t)) => t.push_str(&text),
            _ => parent.children.push(Node::Text(text)),
        }
    }
}

/// The entities of the WML DTD beyond XML's own.
fn wml_entity(name: &str) -> Option<&'static str> {
    match name {
        "nbsp" => Some("\u{a0}"),
        "shy" => Some("\u{ad}"),
        other => quick_xml::escape::resolve_predefined_entity(other),
    }
}

fn declares_latin1(wml: &[u8]) -> bool {
    let head = wml.get(..wml.len().min(200)).unwrap_or(wml);
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    head.starts_with("<?xml")
        && head
            .split("?>")
            .next()
            .is_some_and(|decl| decl.contains("iso-8859-1") || decl.contains("latin1"))
}

/// A piece of WML text: literal, or a variable reference (`$name`,
/// `$(name)`, `$(name:conv)`) with the text it was written as.
#[derive(Debug, PartialEq, Eq)]
enum Segment<'a> {
    Literal(&'a str),
    Var {
        name: &'a str,
        escape: bool,
        written: &'a str,
    },
}

/// Splits `s` into literal text and variable references; `$$` is a
/// literal `$`.
fn segments(s: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        let (before, from) = rest.split_at(at);
        out.push(Segment::Literal(before));
        let after = from.get(1..).unwrap_or("");
        if let Some(tail) = after.strip_prefix('$') {
            out.push(Segment::Literal("$"));
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let body = inner.get(..end).unwrap_or("");
                    let (name, conv) = body.split_once(':').unwrap_or((body, ""));
                    out.push(Segment::Var {
                        name: name.trim(),
                        escape: matches!(conv.trim(), "e" | "E" | "escape"),
                        written: from.get(..end + 3).unwrap_or(from),
                    });
                    rest = inner.get(end + 1..).unwrap_or("");
                }
                None => {
                    out.push(Segment::Literal(from));
                    rest = "";
                }
            }
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                out.push(Segment::Literal("$"));
                rest = after;
            } else {
                out.push(Segment::Var {
                    name: after.get(..len).unwrap_or(""),
                    escape: false,
                    written: from.get(..len + 1).unwrap_or(from),
                });
                rest = after.get(len..).unwrap_or("");
            }
        }
    }
    out.push(Segment::Literal(rest));
    out.retain(|seg| *seg != Segment::Literal(""));
    out
}

/// The name of the variable if `s` is exactly one reference.
fn sole_var(s: &str) -> Option<&str> {
    match segments(s).as_slice() {
        [Segment::Var { name, .. }] => Some(name),
        _ => None,
    }
}

/// Where a card's field is submitted: the form's id and the field name.
type Binding = (String, String);

struct Html {
    w: Writer<Vec<u8>>,
    vars: HashMap<String, String>,
    page_url: Url,
    /// Form ids of the `go` elements that become forms, by address.
    go_ids: HashMap<*const Element, String>,
    /// The current card's variables bound to forms.
    bindings: HashMap<String, Binding>,
    forms: usize,
}

impl Html {
    /// `s` with known variables substituted and `$$` unescaped; unknown
    /// variables stay as written.
    fn subst(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for seg in segments(s) {
            match seg {
                Segment::Literal(l) => out.push_str(l),
                Segment::Var {
                    name,
                    escape,
                    written,
                } => match self.vars.get(name) {
                    Some(value) if escape => {
                        out.extend(url::form_urlencoded::byte_serialize(value.as_bytes()))
                    }
                    Some(value) => out.push_str(value),
                    None => out.push_str(written),
                },
            }
        }
        out
    }

    fn document(&mut self, wml: &Element) -> Result<(), ConvertError> {
        let cards: Vec<&Element> = wml.elements().filter(|e| e.name == "card").collect();
        self.w
            .write_event(Event::DocType(BytesText::from_escaped("html")))?;
        self.raw("\n");
        self.start("html", &[])?;
        self.start("head", &[])?;
        self.empty("meta", &[("charset", "utf-8")])?;
        self.empty(
            "meta",
            &[("name", "viewport"), ("content", "width=device-width")],
        )?;
        let title = cards
            .first()
            .and_then(|c| c.attr("title"))
            .map(|t| self.subst(t))
            .unwrap_or_default();
        self.start("title", &[])?;
        self.text(&title)?;
        self.end("title")?;
        if let Some(refresh) = cards.first().and_then(|c| self.refresh(c)) {
            self.empty("meta", &[("http-equiv", "refresh"), ("content", &refresh)])?;
        }
        self.end("head")?;
        self.raw("\n");
        self.start("body", &[])?;
        for (i, card) in cards.iter().enumerate() {
            self.card(card, i + 1)?;
        }
        self.end("body")?;
        self.end("html")?;
        self.raw("\n");
        Ok(())
    }

    /// The meta refresh of a card: its timer with the `ontimer` task, or
    /// its `onenterforward` task.
    fn refresh(&self, card: &Element) -> Option<String> {
        let task_href = |event: &str| -> Option<String> {
            card.attr(event).map(|h| self.subst(h)).or_else(|| {
                card.elements()
                    .filter(|e| e.name == "onevent" && e.attr("type") == Some(event))
                    .flat_map(|e| e.elements())
                    .find(|t| t.name == "go")
                    .and_then(|go| go.attr("href"))
                    .map(|h| self.subst(h))
            })
        };
        if let Some(href) = task_href("onenterforward") {
            return Some(format!("0; url={href}"));
        }
        let timer = card.elements().find(|e| e.name == "timer")?;
        let tenths: u64 = self
            .subst(timer.attr("value").unwrap_or("0"))
            .trim()
            .parse()
            .ok()?;
        let href = task_href("ontimer")?;
        Some(format!("{}; url={href}", tenths.div_ceil(10)))
    }

    fn card(&mut self, card: &Element, number: usize) -> Result<(), ConvertError> {
        self.bind_forms(card);
        let id = card
            .attr("id")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("card{number}"));
        self.raw("\n");
        self.start("section", &[("id", &id)])?;
        if let Some(title) = card.attr("title") {
            let title = self.subst(title);
            self.start("h1", &[])?;
            self.text(&title)?;
            self.end("h1")?;
        }
        for child in &card.children {
            self.node(child, 1)?;
        }
        self.end("section")?;
        Ok(())
    }

    /// Numbers the card's `go` tasks that need a form and ties each of the
    /// card's variables to the first form that sends it.
    fn bind_forms(&mut self, card: &Element) {
        self.bindings.clear();
        for go in card.descendants().into_iter().filter(|e| e.name == "go") {
            let post = go.attr("method") == Some("post");
            let fields: Vec<(&str, &str)> = go
                .elements()
                .filter(|e| e.name == "postfield")
                .map(|p| (p.attr("name").unwrap_or(""), p.attr("value").unwrap_or("")))
                .collect();
            let href = go.attr("href").unwrap_or("");
            let query_vars = !post && href.contains('$') && href.contains('?');
            if fields.is_empty() && !post && !query_vars {
                continue;
            }
            self.forms += 1;
            let id = format!("f{}", self.forms);
            self.go_ids.insert(go as *const Element, id.clone());
            let mut pairs: Vec<(String, String)> = fields
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect();
            if !post {
                pairs.extend(query_pairs(href));
            }
            for (name, value) in pairs {
                if let Some(var) = sole_var(&value) {
                    if !self.vars.contains_key(var) && !self.bindings.contains_key(var) {
                        let name = self.subst(&name);
                        self.bindings.insert(var.to_owned(), (id.clone(), name));
                    }
                }
            }
        }
    }

    fn node(&mut self, node: &Node, depth: usize) -> Result<(), ConvertError> {
        match node {
            Node::Text(t) => {
                let t = self.subst(t);
                self.text(&t)
            }
            Node::Element(e) => self.element(e, depth),
        }
    }

    fn children(&mut self, e: &Element, depth: usize) -> Result<(), ConvertError> {
        for child in &e.children {
            self.node(child, depth + 1)?;
        }
        Ok(())
    }

    fn element(&mut self, e: &Element, depth: usize) -> Result<(), ConvertError> {
        match e.name.as_str() {
            "p" => {
                let style = match e.attr("align") {
                    Some(a @ ("center" | "right")) => format!("text-align:{a}"),
                    _ => String::new(),
                };
                let attrs: Vec<(&str, &str)> = if style.is_empty() {
                    Vec::new()
                } else {
                    vec![("style", style.as_str())]
                };
                self.wrap("div", &attrs, e, depth)
            }
            "b" | "i" | "u" | "em" | "strong" | "small" | "pre" | "table" | "tr" | "td" => {
                self.wrap(&e.name.clone(), &[], e, depth)
            }
            "big" => self.wrap("span", &[("style", "font-size:larger")], e, depth),
            "br" => self.empty("br", &[]),
            "a" => {
                let href = self.link(e.attr("href").unwrap_or(""));
                self.wrap("a", &[("href", &href)], e, depth)
            }
            "img" => {
                let src = self.subst(e.attr("src").unwrap_or(""));
                let src = self
                    .page_url
                    .join(&src)
                    .map(|u| u.to_string())
                    .unwrap_or(src);
                let alt = self.subst(e.attr("alt").unwrap_or(""));
                self.empty("img", &[("src", &src), ("alt", &alt)])
            }
            "fieldset" => {
                self.start("fieldset", &[])?;
                if let Some(title) = e.attr("title") {
                    let title = self.subst(title);
                    self.start("legend", &[])?;
                    self.text(&title)?;
                    self.end("legend")?;
                }
                self.children(e, depth)?;
                self.end("fieldset")
            }
            "input" => self.input(e),
            "select" => self.select(e, depth),
            "do" => {
                let label = e
                    .attr("label")
                    .map(|l| self.subst(l))
                    .unwrap_or_else(|| e.attr("type").unwrap_or("OK").to_owned());
                match e.elements().next() {
                    Some(task) => self.task(task, &label),
                    None => Ok(()),
                }
            }
            "anchor" => {
                let label = e.text();
                let label = self.subst(&label);
                match e
                    .elements()
                    .find(|t| matches!(t.name.as_str(), "go" | "prev" | "refresh"))
                {
                    Some(task) => self.task(task, &label),
                    None => self.text(&label),
                }
            }
            // Card-level events, timers, variables and deck declarations
            // have no HTML body counterpart (timers: see `refresh`).
            "onevent" | "timer" | "setvar" | "postfield" | "go" | "prev" | "noop" | "refresh"
            | "head" | "template" | "access" | "meta" | "option" | "optgroup" => Ok(()),
            _ => self.children(e, depth),
        }
    }

    fn wrap(
        &mut self,
        name: &str,
        attrs: &[(&str, &str)],
        e: &Element,
        depth: usize,
    ) -> Result<(), ConvertError> {
        self.start(name, attrs)?;
        self.children(e, depth)?;
        self.end(name)
    }

    /// A link target, variables substituted; script URLs are dropped.
    fn link(&self, href: &str) -> String {
        let href = self.subst(href);
        let lower = href.trim().to_ascii_lowercase();
        if lower.starts_with("javascript:") || lower.starts_with("vbscript:") {
            return "#".to_owned();
        }
        href
    }

    fn input(&mut self, e: &Element) -> Result<(), ConvertError> {
        let var = e.attr("name").unwrap_or("");
        let kind = if e.attr("type") == Some("password") {
            "password"
        } else {
            "text"
        };
        let (form, name) = self.binding(var);
        let value = self
            .vars
            .get(var)
            .cloned()
            .unwrap_or_else(|| self.subst(e.attr("value").unwrap_or("")));
        let mut attrs: Vec<(&str, String)> =
            vec![("type", kind.to_owned()), ("name", name), ("value", value)];
        if let Some(form) = form {
            attrs.push(("form", form));
        }
        for key in ["size", "maxlength", "title"] {
            if let Some(v) = e.attr(key) {
                attrs.push((key, self.subst(v)));
            }
        }
        let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.empty("input", &attrs)
    }

    /// The form a variable's control belongs to, and the name it is sent as.
    fn binding(&self, var: &str) -> (Option<String>, String) {
        match self.bindings.get(var) {
            Some((form, name)) => (Some(form.clone()), name.clone()),
            None => (None, var.to_owned()),
        }
    }

    fn select(&mut self, e: &Element, depth: usize) -> Result<(), ConvertError> {
        let var = e.attr("name").unwrap_or("");
        let (form, name) = self.binding(var);
        let multiple = e.attr("multiple") == Some("true");
        let current = self
            .vars
            .get(var)
            .cloned()
            .or_else(|| e.attr("value").map(|v| self.subst(v)))
            .unwrap_or_default();
        let selected: Vec<&str> = current.split(';').collect();
        let mut attrs = vec![("name", name.as_str())];
        if let Some(form) = &form {
            attrs.push(("form", form.as_str()));
        }
        if multiple {
            attrs.push(("multiple", "multiple"));
        }
        self.start("select", &attrs)?;
        self.options(e, &selected, depth)?;
        self.end("select")
    }

    fn options(
        &mut self,
        e: &Element,
        selected: &[&str],
        depth: usize,
    ) -> Result<(), ConvertError> {
        if depth > MAX_DEPTH {
            return Err(ConvertError::TooDeep { limit: MAX_DEPTH });
        }
        for child in e.elements() {
            match child.name.as_str() {
                "option" => {
                    let value = self.subst(child.attr("value").unwrap_or(""));
                    let label = self.subst(&child.text());
                    let mut attrs = vec![("value", value.as_str())];
                    if selected.contains(&value.as_str()) && !value.is_empty() {
                        attrs.push(("selected", "selected"));
                    }
                    self.start("option", &attrs)?;
                    self.text(&label)?;
                    self.end("option")?;
                }
                "optgroup" => {
                    let label = self.subst(child.attr("title").unwrap_or(""));
                    self.start("optgroup", &[("label", &label)])?;
                    self.options(child, selected, depth + 1)?;
                    self.end("optgroup")?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A task (`go`, `prev`, `refresh`, `noop`) as a link or a form.
    fn task(&mut self, task: &Element, label: &str) -> Result<(), ConvertError> {
        match task.name.as_str() {
            "go" => {
                let href = self.link(task.attr("href").unwrap_or(""));
                match self.go_ids.get(&(task as *const Element)).cloned() {
                    Some(id) => self.form(task, &id, &href, label),
                    None => self.link_element(&href, label),
                }
            }
            "prev" => self.link_element("javascript:history.back()", label),
            "refresh" => {
                let here = self.page_url.to_string();
                self.link_element(&here, label)
            }
            _ => Ok(()),
        }
    }

    fn link_element(&mut self, href: &str, label: &str) -> Result<(), ConvertError> {
        self.start("a", &[("href", href)])?;
        self.text(label)?;
        self.end("a")
    }

    /// A `go` with postfields (or a GET with variables in its query): a form
    /// with the literal fields hidden and a submit button.
    fn form(
        &mut self,
        go: &Element,
        id: &str,
        href: &str,
        label: &str,
    ) -> Result<(), ConvertError> {
        let post = go.attr("method") == Some("post");
        let mut hidden: Vec<(String, String)> = Vec::new();
        let mut action = href.to_owned();
        if !post {
            // A GET form replaces the action's query: its pairs become fields.
            let raw = go.attr("href").unwrap_or("");
            if let Some((base, _)) = raw.split_once('?') {
                action = self.subst(base);
                for (name, value) in query_pairs(raw) {
                    if !self.is_bound_here(&value, id) {
                        hidden.push((self.subst(&name), self.subst(&value)));
                    }
                }
            }
        }
        for p in go.elements().filter(|e| e.name == "postfield") {
            let value = p.attr("value").unwrap_or("");
            if !self.is_bound_here(value, id) {
                hidden.push((self.subst(p.attr("name").unwrap_or("")), self.subst(value)));
            }
        }
        let method = if post { "post" } else { "get" };
        self.start(
            "form",
            &[
                ("id", id),
                ("action", &action),
                ("method", method),
                ("style", "display:inline"),
            ],
        )?;
        for (name, value) in &hidden {
            self.empty(
                "input",
                &[("type", "hidden"), ("name", name), ("value", value)],
            )?;
        }
        self.start("button", &[("type", "submit")])?;
        self.text(label)?;
        self.end("button")?;
        self.end("form")
    }

    /// Whether `value` is a variable whose control is tied to form `id`.
    fn is_bound_here(&self, value: &str, id: &str) -> bool {
        sole_var(value)
            .and_then(|v| self.bindings.get(v))
            .is_some_and(|(form, _)| form == id)
    }

    fn start(&mut self, name: &str, attrs: &[(&str, &str)]) -> Result<(), ConvertError> {
        let mut e = BytesStart::new(name);
        for (k, v) in attrs {
            e.push_attribute((*k, html_chars(v).as_str()));
        }
        self.w.write_event(Event::Start(e))?;
        Ok(())
    }

    /// A void element (`br`, `input`, `img`, `meta`).
    fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> Result<(), ConvertError> {
        let mut e = BytesStart::new(name);
        for (k, v) in attrs {
            e.push_attribute((*k, html_chars(v).as_str()));
        }
        self.w.write_event(Event::Empty(e))?;
        Ok(())
    }

    fn end(&mut self, name: &str) -> Result<(), ConvertError> {
        self.w.write_event(Event::End(BytesEnd::new(name)))?;
        Ok(())
    }

    fn text(&mut self, text: &str) -> Result<(), ConvertError> {
        self.w
            .write_event(Event::Text(BytesText::new(&html_chars(text))))?;
        Ok(())
    }

    fn raw(&mut self, s: &str) {
        self.w.get_mut().extend_from_slice(s.as_bytes());
    }
}

/// `text` without the characters an HTML5 page may not contain (controls
/// other than whitespace, noncharacters); variables from the query string
/// can carry any of them.
fn html_chars(text: &str) -> String {
    text.chars()
        .filter(|c| is_xml_char(*c) && !('\u{7f}'..='\u{9f}').contains(c))
        .collect()
}

/// The `name=value` pairs of a URL's query, percent-decoded, variables
/// kept as written.
fn query_pairs(href: &str) -> Vec<(String, String)> {
    let Some((_, query)) = href.split_once('?') else {
        return Vec::new();
    };
    let query = query.split('#').next().unwrap_or("");
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(s: &str) -> Vec<String> {
        segments(s)
            .into_iter()
            .map(|seg| match seg {
                Segment::Literal(l) => format!("L{l}"),
                Segment::Var {
                    name,
                    escape,
                    written,
                } => format!("V{name}:{escape}:{written}"),
            })
            .collect()
    }

    #[test]
    fn variable_references_are_found_in_all_three_forms() {
        assert_eq!(vars("a $x b"), ["La ", "Vx:false:$x", "L b"]);
        assert_eq!(vars("$(q:e)!"), ["Vq:true:$(q:e)", "L!"]);
        assert_eq!(vars("$$5"), ["L$", "L5"]);
        assert_eq!(vars("$ (x"), ["L$", "L (x"]);
        assert_eq!(vars("$(open"), ["L$(open"]);
        assert_eq!(sole_var("$(user)"), Some("user"));
        assert_eq!(sole_var("x$(user)"), None);
    }

    #[test]
    fn latin1_decks_are_transcoded() {
        assert!(declares_latin1(
            b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><wml/>"
        ));
        assert!(!declares_latin1(b"<?xml version=\"1.0\"?><wml/>"));
    }
}
