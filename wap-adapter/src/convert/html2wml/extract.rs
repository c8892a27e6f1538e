//! Reading an html5ever DOM into the page model: paragraphs of text, links
//! and form controls, with whitespace collapsed as a browser would, scripts,
//! styles and comments dropped, links resolved, forms mapped to WML
//! variables and postfields.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use markup5ever_rcdom::{Handle, Node, NodeData};
use url::Url;

use super::model::{
    Block, Choice, Inline, Input, Page, PostField, PostValue, Refresh, Select, Style, Submit,
};
use crate::convert::{is_xml_char, LinkStyle};

/// Elements nested deeper than this are read as plain text (iteratively), so
/// a hostile page cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

/// Longest card title kept (characters).
const MAX_TITLE_CHARS: usize = 64;

/// Longest WML variable name written (characters, before the uniqueness
/// suffix).
const MAX_VAR_CHARS: usize = 32;

/// Reads the document under `root` into a page.
pub(super) fn extract(root: &Handle, page_url: &Url, link_style: LinkStyle) -> Page {
    let mut x = Extractor::new(page_url.clone(), link_style);
    x.prepare(root);
    x.walk(root, 0);
    x.finish()
}

/// The state of one walk over a document.
struct Extractor {
    page_url: Url,
    base: Url,
    link_style: LinkStyle,
    title: String,
    refresh: Option<Refresh>,
    blocks: Vec<Block>,
    current: Vec<Inline>,
    style: Style,
    /// Open lists: ordered?, items seen.
    lists: Vec<(bool, u32)>,
    /// Open table rows: has a cell been written yet?
    rows: Vec<bool>,
    forms: Vec<Form>,
    selects: Vec<Select>,
    vars: VarNames,
    pre: u32,
    /// Forms submitted so far.
    submits: usize,
    /// Text nodes already used as a radio/checkbox label.
    consumed: HashSet<*const Node>,
    /// `label for=ID` texts, by ID.
    label_for: HashMap<String, String>,
    /// IDs of radio buttons and checkboxes.
    choice_ids: HashSet<String>,
}

/// A form being read.
#[derive(Default)]
struct Form {
    /// The action, resolved; `None` when it cannot be followed
    /// (`javascript:`).
    action: Option<String>,
    post: bool,
    fields: Vec<PostField>,
    /// Radio groups and checkbox groups already placed: (is checkbox, HTML
    /// name) to the choice list's index.
    groups: HashMap<(bool, String), usize>,
    submit_label: Option<String>,
    submit_field: Option<PostField>,
    /// The form element had no controls inside (see [`Extractor::form`]).
    detached: bool,
}

impl Extractor {
    fn new(page_url: Url, link_style: LinkStyle) -> Self {
        Self {
            base: page_url.clone(),
            page_url,
            link_style,
            title: String::new(),
            refresh: None,
            blocks: Vec::new(),
            current: Vec::new(),
            style: Style::default(),
            lists: Vec::new(),
            rows: Vec::new(),
            forms: Vec::new(),
            selects: Vec::new(),
            vars: VarNames::default(),
            pre: 0,
            submits: 0,
            consumed: HashSet::new(),
            label_for: HashMap::new(),
            choice_ids: HashSet::new(),
        }
    }

    /// A first pass over the whole document: the title, `<base>`, meta
    /// refresh, and the labels of radio buttons and checkboxes.
    fn prepare(&mut self, root: &Handle) {
        for node in descendants(root) {
            let NodeData::Element { name, .. } = &node.data else {
                continue;
            };
            match &*name.local {
                "title" if self.title.is_empty() => {
                    self.title = truncate_chars(&text_of(&node), MAX_TITLE_CHARS);
                }
                "base" => {
                    if let Some(href) = attr(&node, "href") {
                        if let Ok(base) = self.page_url.join(href.trim()) {
                            self.base = base;
                        }
                    }
                }
                "meta" if self.refresh.is_none() => {
                    let refresh = attr(&node, "http-equiv")
                        .is_some_and(|v| v.trim().eq_ignore_ascii_case("refresh"));
                    if let (true, Some(content)) = (refresh, attr(&node, "content")) {
                        self.refresh = self.parse_refresh(&content);
                    }
                }
                "label" => {
                    if let Some(target) = attr(&node, "for") {
                        self.label_for.insert(target, text_of(&node));
                    }
                }
                "input" if is_choice(&node) => {
                    if let Some(id) = attr(&node, "id") {
                        self.choice_ids.insert(id);
                    }
                }
                _ => {}
            }
        }
    }

    /// `content="5; url=/next"` into a refresh (no URL: the page itself).
    fn parse_refresh(&self, content: &str) -> Option<Refresh> {
        let (delay, rest) = match content.find([';', ',']) {
            Some(at) => (content.get(..at)?, content.get(at + 1..).unwrap_or("")),
            None => (content, ""),
        };
        let digits: String = delay
            .trim()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let seconds: u32 = if digits.is_empty() {
            0
        } else {
            digits.parse().unwrap_or(u32::MAX)
        };
        let mut target = rest.trim();
        if target.len() >= 4
            && target
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("url="))
        {
            target = target.get(4..).unwrap_or("").trim();
        }
        let target = target.trim_matches(|c| c == '\'' || c == '"').trim();
        let href = if target.is_empty() {
            Some(self.link(self.page_url.as_str()).unwrap_or_default())
        } else {
            self.link(target)
        }?;
        Some(Refresh {
            tenths: seconds.saturating_mul(10).max(1),
            href,
        })
    }

    /// The page read so far, with choice lists moved into place.
    fn finish(mut self) -> Page {
        self.end_block();
        self.close_detached_forms();
        let selects = std::mem::take(&mut self.selects);
        for block in &mut self.blocks {
            for item in &mut block.items {
                if let Inline::SelectSlot(index) = item {
                    if let Some(select) = selects.get(*index) {
                        *item = Inline::Select(select.clone());
                    }
                }
            }
            block.items.retain(|item| match item {
                Inline::Select(s) => !s.options.is_empty(),
                Inline::SelectSlot(_) => false,
                _ => true,
            });
        }
        self.blocks.retain(|b| !b.items.is_empty());
        Page {
            title: self.title,
            refresh: self.refresh,
            blocks: self.blocks,
        }
    }

    fn walk(&mut self, node: &Handle, depth: usize) {
        match &node.data {
            NodeData::Document => self.walk_children(node, depth),
            NodeData::Text { contents } => {
                if self.consumed.contains(&Rc::as_ptr(node)) {
                    return;
                }
                let text = contents.borrow().to_string();
                if self.pre > 0 {
                    self.push_pre_text(&text);
                } else {
                    self.push_text(&text);
                }
            }
            NodeData::Element { name, .. } => {
                if depth >= MAX_DEPTH {
                    let text = text_of(node);
                    self.push_text(&text);
                    self.push_text(" ");
                    return;
                }
                let local = name.local.to_string();
                self.element(node, &local, depth);
            }
            NodeData::Doctype { .. }
            | NodeData::Comment { .. }
            | NodeData::ProcessingInstruction { .. } => {}
        }
    }

    fn walk_children(&mut self, node: &Handle, depth: usize) {
        let children: Vec<Handle> = node.children.borrow().clone();
        for (i, child) in children.iter().enumerate() {
            if is_choice(child) {
                // A radio button or checkbox labelled by the text after it.
                let next = children.get(i + 1);
                let label = next.and_then(|n| match &n.data {
                    NodeData::Text { contents } => {
                        let t = collapse(&contents.borrow());
                        (!t.trim().is_empty()).then(|| (Rc::as_ptr(n), t.trim().to_owned()))
                    }
                    _ => None,
                });
                let explicit = attr(child, "id").and_then(|id| self.label_for.get(&id).cloned());
                match (explicit, label) {
                    (Some(text), _) => self.choice(child, Some(text)),
                    (None, Some((ptr, text))) => {
                        self.consumed.insert(ptr);
                        self.choice(child, Some(text));
                    }
                    (None, None) => self.choice(child, None),
                }
                continue;
            }
            self.walk(child, depth + 1);
        }
    }

    fn element(&mut self, node: &Handle, local: &str, depth: usize) {
        match local {
            "script" | "style" | "template" | "head" | "title" | "iframe" | "object" | "embed"
            | "svg" | "math" | "canvas" | "video" | "audio" | "map" | "datalist" => {}
            "br" => self.push_break(),
            "hr" => {
                self.end_block();
                self.push_text("----------");
                self.end_block();
            }
            "img" | "area" => {
                if let Some(alt) = attr(node, "alt") {
                    let alt = collapse(&alt);
                    if !alt.trim().is_empty() {
                        self.push_text(&format!("[{}]", alt.trim()));
                    }
                }
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                let bits = if matches!(local, "h1" | "h2") {
                    Style::BIG | Style::B
                } else {
                    Style::B
                };
                self.end_block();
                self.styled(node, bits, depth);
                self.end_block();
            }
            "b" => self.styled(node, Style::B, depth),
            "strong" | "mark" => self.styled(node, Style::STRONG, depth),
            "i" | "cite" | "dfn" | "var" => self.styled(node, Style::I, depth),
            "em" => self.styled(node, Style::EM, depth),
            "u" | "ins" => self.styled(node, Style::U, depth),
            "big" => self.styled(node, Style::BIG, depth),
            "small" | "sub" | "sup" => self.styled(node, Style::SMALL, depth),
            "a" => self.anchor(node, depth),
            "ul" | "ol" | "menu" | "dir" => {
                self.end_block();
                self.lists.push((local == "ol", 0));
                self.walk_children(node, depth);
                self.lists.pop();
                self.end_block();
            }
            "li" => self.list_item(node, depth),
            "table" | "tbody" | "thead" | "tfoot" | "caption" => {
                self.end_block();
                self.walk_children(node, depth);
                self.end_block();
            }
            "tr" => {
                self.end_block();
                self.rows.push(false);
                self.walk_children(node, depth);
                self.rows.pop();
                self.end_block();
            }
            "td" | "th" => self.cell(node, local == "th", depth),
            "pre" | "listing" | "xmp" | "plaintext" => {
                self.end_block();
                self.pre += 1;
                self.walk_children(node, depth);
                self.pre -= 1;
                self.end_block();
            }
            "form" => self.form(node, depth),
            "input" => self.input(node),
            "select" => self.select(node),
            "textarea" => self.textarea(node),
            "button" => self.button(node),
            "label" => self.label(node, depth),
            "p" | "div" | "section" | "article" | "header" | "footer" | "nav" | "main"
            | "aside" | "blockquote" | "address" | "figure" | "figcaption" | "center" | "dl"
            | "dt" | "dd" | "fieldset" | "legend" | "details" | "summary" | "body" | "html"
            | "noscript" | "hgroup" | "search" | "dialog" => {
                self.end_block();
                self.walk_children(node, depth);
                self.end_block();
            }
            _ => self.walk_children(node, depth),
        }
    }

    fn styled(&mut self, node: &Handle, bits: u8, depth: usize) {
        let saved = self.style;
        self.style = Style(self.style.0 | bits);
        self.walk_children(node, depth);
        self.style = saved;
    }

    /// A table cell: after the row's first cell, a ` | ` separator, taken
    /// back if the cell turns out empty.
    fn cell(&mut self, node: &Handle, header: bool, depth: usize) {
        let later_cell = self.rows.last().copied().unwrap_or(false);
        if let Some(seen) = self.rows.last_mut() {
            *seen = true;
        }
        let before = self.mark();
        if later_cell {
            self.push_text(" | ");
        }
        let separated = self.mark();
        if header {
            self.styled(node, Style::B, depth);
        } else {
            self.walk_children(node, depth);
        }
        if later_cell && self.mark() == separated {
            self.current.truncate(before.0);
            if let Some(Inline::Text { text, .. }) = self.current.last_mut() {
                text.truncate(before.1);
            }
        }
    }

    /// Where the current paragraph ends: its item count and the length of
    /// its last text run.
    fn mark(&self) -> (usize, usize) {
        let text = match self.current.last() {
            Some(Inline::Text { text, .. }) => text.len(),
            _ => 0,
        };
        (self.current.len(), text)
    }

    fn list_item(&mut self, node: &Handle, depth: usize) {
        self.end_block();
        let level = self.lists.len().max(1);
        let marker = match self.lists.last_mut() {
            Some((true, n)) => {
                *n = n.saturating_add(1);
                format!("{n}. ")
            }
            _ => "* ".to_owned(),
        };
        let indent = "\u{a0}\u{a0}".repeat(level - 1);
        self.current.push(Inline::Text {
            text: format!("{indent}{marker}"),
            style: Style::default(),
        });
        self.walk_children(node, depth);
        self.end_block();
    }

    fn anchor(&mut self, node: &Handle, depth: usize) {
        let href = attr(node, "href").and_then(|h| self.link(&h));
        let Some(href) = href else {
            self.walk_children(node, depth);
            return;
        };
        let raw = text_of_raw(node);
        let mut text = collapse(&raw).trim().to_owned();
        if text.is_empty() {
            text = "[link]".to_owned();
        }
        if raw.starts_with(char::is_whitespace) {
            self.push_text(" ");
        }
        self.trim_leading_if_block_start();
        self.current.push(Inline::Link { href, text });
        if raw.ends_with(char::is_whitespace) {
            self.push_text(" ");
        }
    }

    /// A followable link target, written per the link style; `None` for
    /// script URLs and targets that do not resolve.
    fn link(&self, href: &str) -> Option<String> {
        let href = href.trim();
        let url = self.base.join(href).ok()?;
        if matches!(url.scheme(), "javascript" | "vbscript" | "data" | "about") {
            return None;
        }
        let text = format_link(&url, &self.page_url, self.link_style);
        Some(text.chars().filter(|c| is_xml_char(*c)).collect())
    }

    fn form(&mut self, node: &Handle, depth: usize) {
        self.end_block();
        self.close_detached_forms();
        let action = attr(node, "action").unwrap_or_default();
        let action = if action.trim().is_empty() {
            self.link(self.page_url.as_str())
        } else {
            self.link(&action)
        };
        let post = attr(node, "method").is_some_and(|m| m.trim().eq_ignore_ascii_case("post"));
        // A form opened inside a table (between rows) is left empty by the
        // HTML parser, its controls following it as siblings: it stays
        // open for them until the next form or the end of the page.
        let detached = !descendants(node).skip(1).any(|n| {
            matches!(
                element_name(&n).as_deref(),
                Some("input" | "select" | "textarea" | "button")
            )
        });
        self.forms.push(Form {
            action,
            post,
            detached,
            ..Form::default()
        });
        self.walk_children(node, depth);
        if !detached {
            self.close_form();
        }
    }

    /// Ends the innermost form: its submission goes where the form ends.
    fn close_form(&mut self) {
        let Some(form) = self.forms.pop() else {
            return;
        };
        if let Some(href) = form.action {
            let mut fields = form.fields;
            fields.extend(form.submit_field);
            self.submits += 1;
            self.current.push(Inline::Submit(Submit {
                number: self.submits,
                label: form.submit_label.unwrap_or_else(|| "Submit".to_owned()),
                href,
                post: form.post,
                fields,
            }));
        }
        self.end_block();
    }

    fn close_detached_forms(&mut self) {
        while self.forms.last().is_some_and(|f| f.detached) {
            self.close_form();
        }
    }

    fn input(&mut self, node: &Handle) {
        let kind = attr(node, "type")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let name = attr(node, "name").unwrap_or_default();
        let value = attr(node, "value").unwrap_or_default();
        match kind.as_str() {
            "hidden" => {
                if let (Some(form), false) = (self.forms.last_mut(), name.is_empty()) {
                    form.fields.push(PostField {
                        name: clean(&name),
                        value: PostValue::Literal(clean(&value)),
                    });
                }
            }
            "submit" | "image" => {
                let label = if !value.trim().is_empty() {
                    value.clone()
                } else {
                    attr(node, "alt").unwrap_or_else(|| "Submit".to_owned())
                };
                self.submit(&name, &value, &label);
            }
            "reset" | "button" | "file" => {}
            "radio" | "checkbox" => self.choice(node, None),
            _ => {
                let title = attr(node, "placeholder")
                    .or_else(|| attr(node, "title"))
                    .or_else(|| attr(node, "id").and_then(|id| self.label_for.get(&id).cloned()))
                    .unwrap_or_default();
                let input = Input {
                    var: self.vars.fresh(&name),
                    password: kind == "password",
                    value: clean(&collapse(&value)),
                    title: clean(&collapse(&title)).trim().to_owned(),
                    size: attr(node, "size").and_then(|s| s.trim().parse().ok()),
                    maxlength: attr(node, "maxlength").and_then(|s| s.trim().parse().ok()),
                };
                self.field(&name, &input.var);
                self.push_inline(Inline::Input(input));
            }
        }
    }

    fn textarea(&mut self, node: &Handle) {
        let name = attr(node, "name").unwrap_or_default();
        let input = Input {
            var: self.vars.fresh(&name),
            value: clean(&collapse(&text_of_raw(node))).trim().to_owned(),
            title: clean(&attr(node, "placeholder").unwrap_or_default()),
            ..Input::default()
        };
        self.field(&name, &input.var);
        self.push_inline(Inline::Input(input));
    }

    fn button(&mut self, node: &Handle) {
        let kind = attr(node, "type")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if kind.is_empty() || kind == "submit" {
            let name = attr(node, "name").unwrap_or_default();
            let value = attr(node, "value").unwrap_or_default();
            let label = text_of(node);
            self.submit(&name, &value, &label);
        }
    }

    fn submit(&mut self, name: &str, value: &str, label: &str) {
        let Some(form) = self.forms.last_mut() else {
            return;
        };
        let label = clean(label.trim());
        if form.submit_label.is_none() && !label.is_empty() {
            form.submit_label = Some(truncate_chars(&label, 24));
        }
        if form.submit_field.is_none() && !name.is_empty() {
            form.submit_field = Some(PostField {
                name: clean(name),
                value: PostValue::Literal(clean(value)),
            });
        }
    }

    /// A radio button or checkbox: an option of its group's choice list.
    fn choice(&mut self, node: &Handle, label: Option<String>) {
        let checkbox =
            attr(node, "type").is_some_and(|t| t.trim().eq_ignore_ascii_case("checkbox"));
        let name = attr(node, "name").unwrap_or_default();
        let value = attr(node, "value").unwrap_or_else(|| "on".to_owned());
        let choice = Choice {
            label: clean(&label.unwrap_or_else(|| value.clone())),
            value: clean(&value),
            selected: attr(node, "checked").is_some(),
        };
        let key = (checkbox, name.clone());
        let existing = self
            .forms
            .last()
            .and_then(|f| f.groups.get(&key).copied())
            .filter(|_| !name.is_empty());
        if let Some(select) = existing.and_then(|i| self.selects.get_mut(i)) {
            select.options.push(choice);
            return;
        }
        let select = Select {
            var: self.vars.fresh(&name),
            multiple: checkbox,
            options: vec![choice],
            ..Select::default()
        };
        self.field(&name, &select.var);
        let index = self.selects.len();
        self.selects.push(select);
        if let Some(form) = self.forms.last_mut() {
            form.groups.insert(key, index);
        }
        self.push_inline(Inline::SelectSlot(index));
    }

    fn select(&mut self, node: &Handle) {
        let name = attr(node, "name").unwrap_or_default();
        let mut options = Vec::new();
        for option in descendants(node) {
            if element_name(&option).as_deref() != Some("option") {
                continue;
            }
            let label = clean(collapse(&text_of_raw(&option)).trim());
            let value = attr(&option, "value")
                .map(|v| clean(&v))
                .unwrap_or_else(|| label.clone());
            options.push(Choice {
                value,
                label,
                selected: attr(&option, "selected").is_some(),
            });
        }
        if options.is_empty() {
            return;
        }
        let select = Select {
            var: self.vars.fresh(&name),
            multiple: attr(node, "multiple").is_some(),
            title: clean(&attr(node, "title").unwrap_or_default()),
            options,
            omitted: 0,
        };
        self.field(&name, &select.var);
        self.push_inline(Inline::Select(select));
    }

    /// A `<label>`: wrapping a radio button or checkbox, it is that option's
    /// text; pointing (`for`) at one, it was read in [`Self::prepare`].
    fn label(&mut self, node: &Handle, depth: usize) {
        if attr(node, "for").is_some_and(|id| self.choice_ids.contains(&id)) {
            return;
        }
        let choices: Vec<Handle> = descendants(node).filter(is_choice).collect();
        if choices.is_empty() {
            self.walk_children(node, depth);
            return;
        }
        let text = text_of(node);
        for choice in &choices {
            let label = if text.trim().is_empty() {
                None
            } else {
                Some(text.clone())
            };
            self.choice(choice, label);
        }
    }

    /// Records that the current form sends variable `var` as field `name`.
    fn field(&mut self, name: &str, var: &str) {
        if let (Some(form), false) = (self.forms.last_mut(), name.is_empty()) {
            form.fields.push(PostField {
                name: clean(name),
                value: PostValue::Var(var.to_owned()),
            });
        }
    }

    fn push_inline(&mut self, item: Inline) {
        self.trim_leading_if_block_start();
        self.current.push(item);
    }

    /// Appends text, collapsing whitespace as HTML rendering does.
    fn push_text(&mut self, text: &str) {
        let text = clean(&collapse(text));
        if text.is_empty() {
            return;
        }
        let at_line_start = matches!(self.current.last(), None | Some(Inline::Break));
        let after_space = match self.current.last() {
            Some(Inline::Text { text, .. }) => text.ends_with(' '),
            _ => false,
        };
        let text = if at_line_start || after_space {
            text.trim_start_matches(' ')
        } else {
            &text
        };
        if text.is_empty() {
            return;
        }
        self.append_run(text);
    }

    /// Appends preformatted text: line breaks kept, spaces made
    /// non-breaking.
    fn push_pre_text(&mut self, text: &str) {
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                self.current.push(Inline::Break);
            }
            let line: String = line
                .trim_end_matches('\r')
                .chars()
                .map(|c| match c {
                    ' ' => '\u{a0}',
                    '\t' => '\u{a0}',
                    c => c,
                })
                .filter(|c| is_xml_char(*c) && *c != '\r')
                .collect();
            if !line.is_empty() {
                self.append_run(&line);
            }
        }
    }

    fn append_run(&mut self, text: &str) {
        let style = self.style;
        if let Some(Inline::Text {
            text: last,
            style: s,
        }) = self.current.last_mut()
        {
            if *s == style {
                last.push_str(text);
                return;
            }
        }
        self.current.push(Inline::Text {
            text: text.to_owned(),
            style,
        });
    }

    fn push_break(&mut self) {
        self.trim_trailing();
        if !self.current.is_empty() {
            self.current.push(Inline::Break);
        }
    }

    fn trim_leading_if_block_start(&mut self) {
        if let [Inline::Text { text, .. }] = self.current.as_mut_slice() {
            if text.trim().is_empty() && !text.contains('\u{a0}') {
                self.current.clear();
            }
        }
    }

    fn trim_trailing(&mut self) {
        while let Some(last) = self.current.last_mut() {
            match last {
                Inline::Text { text, .. } => {
                    let trimmed = text.trim_end_matches(' ').len();
                    text.truncate(trimmed);
                    if text.is_empty() {
                        self.current.pop();
                    } else {
                        break;
                    }
                }
                Inline::Break => {
                    self.current.pop();
                }
                _ => break,
            }
        }
    }

    /// Closes the current paragraph (if it has content).
    fn end_block(&mut self) {
        self.trim_trailing();
        let meaningful = self.current.iter().any(|item| match item {
            Inline::Text { text, .. } => !text.trim().is_empty(),
            _ => true,
        });
        let items = std::mem::take(&mut self.current);
        if meaningful {
            self.blocks.push(Block { items });
        }
    }
}

/// A resolved link written per the link style: an absolute path on the
/// page's own origin (adapter-relative), else the absolute URL.
pub(super) fn format_link(url: &Url, page_url: &Url, style: LinkStyle) -> String {
    let same_origin = url.origin() == page_url.origin();
    match style {
        LinkStyle::AdapterRelative if same_origin => {
            let mut s = url.path().to_owned();
            if let Some(q) = url.query() {
                s.push('?');
                s.push_str(q);
            }
            if let Some(f) = url.fragment() {
                s.push('#');
                s.push_str(f);
            }
            s
        }
        _ => url.to_string(),
    }
}

/// Legal, unique WML variable names (WAP-191-WML §10.3: a letter or `_`,
/// then letters, digits and `_`).
#[derive(Default)]
struct VarNames {
    used: HashSet<String>,
}

impl VarNames {
    /// A fresh variable name derived from an HTML field name.
    fn fresh(&mut self, html_name: &str) -> String {
        let mut base: String = html_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(MAX_VAR_CHARS)
            .collect();
        if !base.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            base.insert(0, 'f');
        }
        let mut name = base.clone();
        let mut n = 2u32;
        while self.used.contains(&name) {
            name = format!("{base}_{n}");
            n = n.saturating_add(1);
        }
        self.used.insert(name.clone());
        name
    }
}

/// All nodes under `root` (itself included), in document order, without
/// recursion.
fn descendants(root: &Handle) -> impl Iterator<Item = Handle> {
    let mut stack = vec![root.clone()];
    std::iter::from_fn(move || {
        let node = stack.pop()?;
        let children = node.children.borrow();
        stack.extend(children.iter().rev().cloned());
        drop(children);
        Some(node)
    })
}

fn element_name(node: &Handle) -> Option<String> {
    match &node.data {
        NodeData::Element { name, .. } => Some(name.local.to_string()),
        _ => None,
    }
}

fn attr(node: &Node, name: &str) -> Option<String> {
    match &node.data {
        NodeData::Element { attrs, .. } => attrs
            .borrow()
            .iter()
            .find(|a| &*a.name.local == name)
            .map(|a| a.value.to_string()),
        _ => None,
    }
}

fn is_choice(node: &Handle) -> bool {
    element_name(node).as_deref() == Some("input")
        && attr(node, "type").is_some_and(|t| {
            let t = t.trim();
            t.eq_ignore_ascii_case("radio") || t.eq_ignore_ascii_case("checkbox")
        })
}

/// The visible text under `node` (image alt texts in brackets, scripts and
/// styles skipped), not collapsed.
fn text_of_raw(node: &Handle) -> String {
    let mut out = String::new();
    let mut stack = vec![node.clone()];
    while let Some(n) = stack.pop() {
        match &n.data {
            NodeData::Text { contents } => out.push_str(&contents.borrow()),
            NodeData::Element { name, .. } => match &*name.local {
                "script" | "style" | "template" => {}
                "img" => {
                    if let Some(alt) = attr(&n, "alt").filter(|a| !a.trim().is_empty()) {
                        out.push('[');
                        out.push_str(alt.trim());
                        out.push(']');
                    }
                }
                "br" => out.push(' '),
                _ => stack.extend(n.children.borrow().iter().rev().cloned()),
            },
            _ => stack.extend(n.children.borrow().iter().rev().cloned()),
        }
    }
    out
}

/// The visible text under `node`, whitespace collapsed and trimmed.
fn text_of(node: &Handle) -> String {
    clean(collapse(&text_of_raw(node)).trim())
}

/// Collapses runs of HTML whitespace into one space (non-breaking spaces
/// are kept).
fn collapse(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{c}') {
            space = true;
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    if space {
        out.push(' ');
    }
    out
}

/// Drops the characters XML cannot carry (C0 controls, U+FFFE, U+FFFF).
fn clean(text: &str) -> String {
    text.chars().filter(|c| is_xml_char(*c)).collect()
}

fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names_are_legal_and_unique() {
        let mut v = VarNames::default();
        assert_eq!(v.fresh("q"), "q");
        assert_eq!(v.fresh("q"), "q_2");
        assert_eq!(v.fresh("user[name]"), "user_name_");
        assert_eq!(v.fresh("1st"), "f1st");
        assert_eq!(v.fresh(""), "f");
        assert_eq!(v.fresh("é-mail"), "__mail");
        assert_eq!(v.fresh(&"x".repeat(100)).len(), MAX_VAR_CHARS);
    }

    #[test]
    fn whitespace_collapses() {
        assert_eq!(collapse(" a \n\t b  "), " a b ");
        assert_eq!(collapse("a\u{a0}\u{a0}b"), "a\u{a0}\u{a0}b");
    }
}
