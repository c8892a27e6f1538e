//! Writing the page model as a WML 1.3 deck with quick-xml's writer, and
//! splitting it into cards whose compiled size each fits the bound.
//!
//! A card is measured as a complete one-card deck (prolog, DOCTYPE, `<wml>`,
//! the card with its navigation paragraph written with the longest ids and
//! counters it could have), so whatever the deck around it, the card alone
//! never needs more than the bound. Paragraphs are packed greedily; a
//! paragraph too big for an empty card is cut at word boundaries (a word
//! longer than a card at character boundaries); a choice list too long for
//! a card keeps the options that fit and says how many were left out.

use std::collections::VecDeque;

use quick_xml::escape::partial_escape;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

use super::model::{Block, Inline, Page, PostValue, Refresh, Select, Style};
use crate::convert::{escape_dollar, CompiledSize, ConvertError, WML13_PUBLIC_ID, WML13_SYSTEM_ID};

/// The widest card number the measurement assumes (cards past it are still
/// written, measured again at the end).
const PLACEHOLDER_NUMBER: usize = 999_999;

/// How much plain text (bytes) a paragraph prefix may hold before it is
/// certainly too big for a card: each compiled byte is at least one byte of
/// text, so a prefix with more text than four cards' worth never fits. It
/// bounds the work spent cutting a huge paragraph.
const TEXT_PER_CARD_FACTOR: usize = 4;

/// Where the previous/next links between cards point.
#[derive(Debug, Clone)]
pub(super) enum CardLinks {
    /// `#cN`: the cards travel together in one deck.
    Fragment,
    /// `{prefix}N`: each card is served alone, the adapter picking it by a
    /// query parameter (the prefix ends with `param=`).
    Query { prefix: String },
}

impl CardLinks {
    fn href(&self, number: usize) -> String {
        match self {
            Self::Fragment => format!("#{}", card_id(number)),
            Self::Query { prefix } => format!("{prefix}{number}"),
        }
    }
}

/// The page's paragraphs packed into cards, each within `bound` compiled
/// bytes as a one-card deck.
pub(super) fn split(
    page: &Page,
    bound: usize,
    sizer: &dyn CompiledSize,
    links: &CardLinks,
) -> Result<Vec<Vec<Block>>, ConvertError> {
    let splitter = Splitter {
        page,
        bound,
        sizer,
        links,
    };
    let cards = splitter.split()?;
    // Every card measured again as it is finally written.
    for number in 1..=cards.len() {
        let size = sizer.compiled_len(&single_card_deck(page, &cards, number, links)?);
        if size > bound {
            return Err(ConvertError::CardTooLarge {
                card: number,
                size,
                bound,
            });
        }
    }
    Ok(cards)
}

/// All cards in one deck.
pub(super) fn whole_deck(
    page: &Page,
    cards: &[Vec<Block>],
    links: &CardLinks,
) -> Result<String, ConvertError> {
    let total = cards.len();
    let mut w = deck_start()?;
    for (i, blocks) in cards.iter().enumerate() {
        let nav = Nav {
            number: i + 1,
            total,
            links,
        };
        write_card(&mut w, page, blocks, &nav, i == 0)?;
    }
    deck_end(w)
}

/// Card `number` (1-based) alone in a deck.
pub(super) fn single_card_deck(
    page: &Page,
    cards: &[Vec<Block>],
    number: usize,
    links: &CardLinks,
) -> Result<String, ConvertError> {
    let nav = Nav {
        number,
        total: cards.len(),
        links,
    };
    let blocks = cards
        .get(number.saturating_sub(1))
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut w = deck_start()?;
    write_card(&mut w, page, blocks, &nav, number == 1)?;
    deck_end(w)
}

/// A card's position, for its id and navigation links.
struct Nav<'a> {
    number: usize,
    total: usize,
    links: &'a CardLinks,
}

struct Splitter<'a> {
    page: &'a Page,
    bound: usize,
    sizer: &'a dyn CompiledSize,
    links: &'a CardLinks,
}

impl Splitter<'_> {
    /// The page's paragraphs packed into cards.
    fn split(&self) -> Result<Vec<Vec<Block>>, ConvertError> {
        let empty = self.measure(&[], true)?;
        if empty > self.bound {
            return Err(ConvertError::CardSizeTooSmall {
                bound: self.bound,
                needed: empty,
            });
        }
        let mut cards: Vec<Vec<Block>> = Vec::new();
        let mut current: Vec<Block> = Vec::new();
        let mut queue: VecDeque<Block> = self.page.blocks.iter().cloned().collect();
        while let Some(block) = queue.pop_front() {
            let first = cards.is_empty();
            current.push(block);
            if self.fits(&current, first)? {
                continue;
            }
            let Some(block) = current.pop() else {
                continue;
            };
            if !current.is_empty() {
                cards.push(std::mem::take(&mut current));
                queue.push_front(block);
                continue;
            }
            let (head, tail) = self.cut(block, first)?;
            cards.push(vec![head]);
            if let Some(tail) = tail {
                queue.push_front(tail);
            }
        }
        if !current.is_empty() || cards.is_empty() {
            cards.push(current);
        }
        Ok(cards)
    }

    fn fits(&self, blocks: &[Block], first: bool) -> Result<bool, ConvertError> {
        Ok(self.measure(blocks, first)? <= self.bound)
    }

    /// The compiled size of a one-card deck holding `blocks`, with the
    /// widest navigation the card could get.
    fn measure(&self, blocks: &[Block], first: bool) -> Result<usize, ConvertError> {
        let nav = Nav {
            number: PLACEHOLDER_NUMBER,
            total: PLACEHOLDER_NUMBER + 1,
            links: self.links,
        };
        let mut w = deck_start()?;
        write_card(&mut w, self.page, blocks, &nav, first)?;
        let deck = deck_end(w)?;
        Ok(self.sizer.compiled_len(&deck))
    }

    /// Cuts a paragraph too big for an empty card into a head that fits
    /// and the rest.
    fn cut(&self, block: Block, first: bool) -> Result<(Block, Option<Block>), ConvertError> {
        let pieces = pieces(block.items);
        // Only a prefix with at most a few cards' worth of text can fit.
        let budget = self.bound.saturating_mul(TEXT_PER_CARD_FACTOR);
        let mut upper = 0;
        let mut text = 0usize;
        for piece in &pieces {
            text = text.saturating_add(piece_text_len(piece));
            if text > budget {
                break;
            }
            upper += 1;
        }
        // The largest k <= upper with pieces[..k] fitting (k = 0 fits).
        let (mut lo, mut hi) = (0usize, upper);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let candidate = assemble(pieces.iter().take(mid).cloned());
            if self.fits(&[candidate], first)? {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        if lo > 0 {
            let head = assemble(pieces.iter().take(lo).cloned());
            let rest: Vec<Inline> = pieces.into_iter().skip(lo).collect();
            return Ok((head, rest_block(rest)));
        }
        // Not even the first piece fits an empty card: shrink it.
        let mut rest = pieces.into_iter();
        let Some(piece) = rest.next() else {
            return Ok((Block::default(), None));
        };
        let (head, tail) = self.shrink(piece, first)?;
        let rest: Vec<Inline> = tail.into_iter().chain(rest).collect();
        Ok((assemble(std::iter::once(head)), rest_block(rest)))
    }

    /// Splits one piece (a word, a link, a control) too big for an empty
    /// card: text at a character boundary, a choice list by options.
    fn shrink(&self, piece: Inline, first: bool) -> Result<(Inline, Option<Inline>), ConvertError> {
        match piece {
            Inline::Text { text, style } => {
                let make = |t: &str| Inline::Text {
                    text: t.to_owned(),
                    style,
                };
                let at = self.longest_prefix(&text, &make, first)?;
                let (head, tail) = text.split_at(at);
                Ok((make(head), Some(make(tail)).filter(|_| !tail.is_empty())))
            }
            Inline::Link { href, text } => {
                let make = |t: &str| Inline::Link {
                    href: href.clone(),
                    text: t.to_owned(),
                };
                // The link target alone may not fit: then it is shown as text.
                if !self.fits(&[assemble(std::iter::once(make("x")))], first)? {
                    return self.shrink(
                        Inline::Text {
                            text: format!("{text} <{href}>"),
                            style: Style::default(),
                        },
                        first,
                    );
                }
                let at = self.longest_prefix(&text, &make, first)?;
                let (head, tail) = text.split_at(at);
                Ok((make(head), Some(make(tail)).filter(|_| !tail.is_empty())))
            }
            Inline::Select(select) => {
                let total = select.options.len();
                let make = |n: usize| {
                    Inline::Select(Select {
                        options: select.options.iter().take(n).cloned().collect(),
                        omitted: select.omitted + total - n,
                        ..select.clone()
                    })
                };
                let (mut lo, mut hi) = (0usize, total);
                while lo < hi {
                    let mid = lo + (hi - lo).div_ceil(2);
                    if self.fits(&[assemble(std::iter::once(make(mid)))], first)? {
                        lo = mid;
                    } else {
                        hi = mid - 1;
                    }
                }
                if lo == 0 {
                    return Ok((too_large_note(), None));
                }
                Ok((make(lo), None))
            }
            Inline::Input(mut input) => {
                // A huge initial value is cut; a field that still does not
                // fit is replaced by a note.
                input.value.clear();
                input.title.clear();
                let piece = Inline::Input(input);
                if self.fits(&[assemble(std::iter::once(piece.clone()))], first)? {
                    Ok((piece, None))
                } else {
                    Ok((too_large_note(), None))
                }
            }
            Inline::Submit(_) | Inline::Break | Inline::SelectSlot(_) => {
                Ok((too_large_note(), None))
            }
        }
    }

    /// The longest prefix of `text` (in bytes, at a character boundary, at
    /// least one character) whose piece fits an empty card.
    fn longest_prefix(
        &self,
        text: &str,
        make: &dyn Fn(&str) -> Inline,
        first: bool,
    ) -> Result<usize, ConvertError> {
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, c)| i + c.len_utf8())
            .take(self.bound.saturating_mul(TEXT_PER_CARD_FACTOR))
            .collect();
        let (mut lo, mut hi) = (0usize, bounds.len());
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let end = bounds.get(mid - 1).copied().unwrap_or(0);
            let prefix = text.get(..end).unwrap_or("");
            if self.fits(&[assemble(std::iter::once(make(prefix)))], first)? {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let chars = lo.max(1);
        let end = bounds.get(chars - 1).copied().unwrap_or(text.len());
        if lo == 0 {
            // One character with its markup does not fit an empty card.
            let needed = self.measure(
                &[assemble(std::iter::once(make(
                    text.get(..end).unwrap_or(""),
                )))],
                first,
            )?;
            return Err(ConvertError::CardSizeTooSmall {
                bound: self.bound,
                needed,
            });
        }
        Ok(end)
    }
}

fn too_large_note() -> Inline {
    Inline::Text {
        text: "[form field too large for this device]".to_owned(),
        style: Style::default(),
    }
}

/// A paragraph's items cut into the smallest pieces a card may end at: words
/// of text (with their trailing space) and of link texts, other items whole.
fn pieces(items: Vec<Inline>) -> Vec<Inline> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Inline::Text { text, style } => {
                for word in text.split_inclusive(' ') {
                    out.push(Inline::Text {
                        text: word.to_owned(),
                        style,
                    });
                }
            }
            Inline::Link { href, text } => {
                for word in text.split_inclusive(' ') {
                    out.push(Inline::Link {
                        href: href.clone(),
                        text: word.to_owned(),
                    });
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn piece_text_len(piece: &Inline) -> usize {
    match piece {
        Inline::Text { text, .. } => text.len(),
        Inline::Link { text, href } => text.len() + href.len(),
        Inline::Input(i) => i.value.len() + i.var.len(),
        Inline::Select(s) => s
            .options
            .iter()
            .map(|o| o.label.len() + o.value.len())
            .sum(),
        Inline::Submit(s) => s.href.len() + s.fields.len(),
        Inline::Break | Inline::SelectSlot(_) => 1,
    }
}

/// Pieces joined back into a paragraph: neighbouring runs of one style, and
/// neighbouring pieces of one link, merge.
fn assemble(pieces: impl Iterator<Item = Inline>) -> Block {
    let mut items: Vec<Inline> = Vec::new();
    for piece in pieces {
        match (items.last_mut(), piece) {
            (
                Some(Inline::Text { text, style }),
                Inline::Text {
                    text: more,
                    style: s,
                },
            ) if *style == s => text.push_str(&more),
            (
                Some(Inline::Link { href, text }),
                Inline::Link {
                    href: h,
                    text: more,
                },
            ) if *href == h => text.push_str(&more),
            (_, piece) => items.push(piece),
        }
    }
    // A card's paragraph does not start or end with a space.
    if let Some(Inline::Text { text, .. }) = items.first_mut() {
        *text = text.trim_start_matches(' ').to_owned();
    }
    if let Some(Inline::Text { text, .. }) = items.last_mut() {
        *text = text.trim_end_matches(' ').to_owned();
    }
    items.retain(|i| !matches!(i, Inline::Text { text, .. } if text.is_empty()));
    Block { items }
}

fn rest_block(rest: Vec<Inline>) -> Option<Block> {
    let block = assemble(rest.into_iter());
    (!block.items.is_empty()).then_some(block)
}

type W = Writer<Vec<u8>>;

fn deck_start() -> Result<W, ConvertError> {
    let mut w = Writer::new(Vec::new());
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.get_mut().push(b'\n');
    w.write_event(Event::DocType(BytesText::from_escaped(format!(
        "wml PUBLIC \"{WML13_PUBLIC_ID}\" \"{WML13_SYSTEM_ID}\""
    ))))?;
    w.get_mut().push(b'\n');
    w.write_event(Event::Start(BytesStart::new("wml")))?;
    Ok(w)
}

fn deck_end(mut w: W) -> Result<String, ConvertError> {
    w.write_event(Event::End(BytesEnd::new("wml")))?;
    w.get_mut().push(b'\n');
    // The writer only ever receives `str`s, so the bytes are UTF-8.
    String::from_utf8(w.into_inner())
        .map_err(|e| ConvertError::Write(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

fn card_id(number: usize) -> String {
    format!("c{number}")
}

fn write_card(
    w: &mut W,
    page: &Page,
    blocks: &[Block],
    nav: &Nav,
    first: bool,
) -> Result<(), ConvertError> {
    w.get_mut().push(b'\n');
    let mut card = BytesStart::new("card");
    card.push_attribute(("id", card_id(nav.number).as_str()));
    if !page.title.is_empty() {
        card.push_attribute(("title", escape_dollar(&page.title).as_str()));
    }
    w.write_event(Event::Start(card))?;
    if let (true, Some(refresh)) = (first, &page.refresh) {
        write_timer(w, refresh)?;
    }
    for block in blocks {
        w.get_mut().push(b'\n');
        w.write_event(Event::Start(BytesStart::new("p")))?;
        for item in &block.items {
            write_inline(w, item)?;
        }
        w.write_event(Event::End(BytesEnd::new("p")))?;
    }
    if nav.total > 1 {
        write_nav(w, nav)?;
    }
    w.write_event(Event::End(BytesEnd::new("card")))?;
    Ok(())
}

fn write_timer(w: &mut W, refresh: &Refresh) -> Result<(), ConvertError> {
    let mut onevent = BytesStart::new("onevent");
    onevent.push_attribute(("type", "ontimer"));
    w.write_event(Event::Start(onevent))?;
    let mut go = BytesStart::new("go");
    go.push_attribute(("href", escape_dollar(&refresh.href).as_str()));
    w.write_event(Event::Empty(go))?;
    w.write_event(Event::End(BytesEnd::new("onevent")))?;
    let mut timer = BytesStart::new("timer");
    timer.push_attribute(("value", refresh.tenths.to_string().as_str()));
    w.write_event(Event::Empty(timer))?;
    Ok(())
}

fn write_nav(w: &mut W, nav: &Nav) -> Result<(), ConvertError> {
    w.get_mut().push(b'\n');
    w.write_event(Event::Start(BytesStart::new("p")))?;
    if nav.number > 1 {
        write_link(w, &nav.links.href(nav.number - 1), "<< Prev")?;
        text(w, " ")?;
    }
    text(w, &format!("{}/{}", nav.number, nav.total))?;
    if nav.number < nav.total {
        text(w, " ")?;
        write_link(w, &nav.links.href(nav.number + 1), "Next >>")?;
    }
    w.write_event(Event::End(BytesEnd::new("p")))?;
    Ok(())
}

/// Writes literal text (XML-escaped, `$` doubled).
fn text(w: &mut W, s: &str) -> Result<(), ConvertError> {
    let s = escape_dollar(s);
    w.write_event(Event::Text(BytesText::from_escaped(partial_escape(
        s.as_str(),
    ))))?;
    Ok(())
}

fn write_link(w: &mut W, href: &str, label: &str) -> Result<(), ConvertError> {
    let mut a = BytesStart::new("a");
    a.push_attribute(("href", escape_dollar(href).as_str()));
    w.write_event(Event::Start(a))?;
    text(w, label)?;
    w.write_event(Event::End(BytesEnd::new("a")))?;
    Ok(())
}

fn write_inline(w: &mut W, item: &Inline) -> Result<(), ConvertError> {
    match item {
        Inline::Text { text: t, style } => {
            let names: Vec<&str> = style.elements().collect();
            for name in &names {
                w.write_event(Event::Start(BytesStart::new(*name)))?;
            }
            text(w, t)?;
            for name in names.iter().rev() {
                w.write_event(Event::End(BytesEnd::new(*name)))?;
            }
        }
        Inline::Link { href, text: t } => write_link(w, href, t)?,
        Inline::Break => w.write_event(Event::Empty(BytesStart::new("br")))?,
        Inline::Input(input) => {
            let mut e = BytesStart::new("input");
            e.push_attribute(("name", input.var.as_str()));
            if input.password {
                e.push_attribute(("type", "password"));
            }
            if !input.value.is_empty() {
                e.push_attribute(("value", escape_dollar(&input.value).as_str()));
            }
            if !input.title.is_empty() {
                e.push_attribute(("title", escape_dollar(&input.title).as_str()));
            }
            if let Some(size) = input.size {
                e.push_attribute(("size", size.to_string().as_str()));
            }
            if let Some(max) = input.maxlength {
                e.push_attribute(("maxlength", max.to_string().as_str()));
            }
            w.write_event(Event::Empty(e))?;
        }
        Inline::Select(select) => write_select(w, select)?,
        Inline::Submit(submit) => {
            let mut d = BytesStart::new("do");
            d.push_attribute(("type", "accept"));
            d.push_attribute(("name", format!("submit{}", submit.number).as_str()));
            d.push_attribute(("label", escape_dollar(&submit.label).as_str()));
            w.write_event(Event::Start(d))?;
            let mut go = BytesStart::new("go");
            go.push_attribute(("href", escape_dollar(&submit.href).as_str()));
            if submit.post {
                go.push_attribute(("method", "post"));
            }
            if submit.fields.is_empty() {
                w.write_event(Event::Empty(go))?;
            } else {
                w.write_event(Event::Start(go))?;
                for field in &submit.fields {
                    let value = match &field.value {
                        PostValue::Literal(v) => escape_dollar(v),
                        PostValue::Var(var) => format!("$({var})"),
                    };
                    let mut p = BytesStart::new("postfield");
                    p.push_attribute(("name", escape_dollar(&field.name).as_str()));
                    p.push_attribute(("value", value.as_str()));
                    w.write_event(Event::Empty(p))?;
                }
                w.write_event(Event::End(BytesEnd::new("go")))?;
            }
            w.write_event(Event::End(BytesEnd::new("do")))?;
        }
        Inline::SelectSlot(_) => {}
    }
    Ok(())
}

fn write_select(w: &mut W, select: &Select) -> Result<(), ConvertError> {
    let mut e = BytesStart::new("select");
    e.push_attribute(("name", select.var.as_str()));
    if select.multiple {
        e.push_attribute(("multiple", "true"));
    }
    let selected: Vec<&str> = select
        .options
        .iter()
        .filter(|o| o.selected)
        .map(|o| o.value.as_str())
        .collect();
    if !selected.is_empty() {
        let value = if select.multiple {
            selected.join(";")
        } else {
            selected.last().copied().unwrap_or_default().to_owned()
        };
        e.push_attribute(("value", escape_dollar(&value).as_str()));
    }
    if !select.title.is_empty() {
        e.push_attribute(("title", escape_dollar(&select.title).as_str()));
    }
    w.write_event(Event::Start(e))?;
    for option in &select.options {
        let mut o = BytesStart::new("option");
        o.push_attribute(("value", escape_dollar(&option.value).as_str()));
        w.write_event(Event::Start(o))?;
        text(w, &option.label)?;
        w.write_event(Event::End(BytesEnd::new("option")))?;
    }
    w.write_event(Event::End(BytesEnd::new("select")))?;
    if select.omitted > 0 {
        text(w, &format!(" [{} more choices not shown]", select.omitted))?;
    }
    Ok(())
}
