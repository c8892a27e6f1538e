//! The page model between the HTML reader and the WML writer: a title, an
//! optional refresh, and a list of paragraphs of inline items. Strings are
//! plain text (no XML escaping, no `$` escaping): the writer does both.

/// A page reduced to what a WML deck can show.
#[derive(Debug, Default)]
pub(super) struct Page {
    /// The page's `<title>`, whitespace collapsed.
    pub title: String,
    /// The first `<meta http-equiv="refresh">`.
    pub refresh: Option<Refresh>,
    /// The paragraphs, in document order.
    pub blocks: Vec<Block>,
}

/// A meta refresh: after `tenths` tenths of a second, go to `href`.
#[derive(Debug, Clone)]
pub(super) struct Refresh {
    /// The delay in tenths of a second (WML timer units), at least 1.
    pub tenths: u32,
    /// The target, already resolved.
    pub href: String,
}

/// One paragraph (`<p>`) of inline items; never empty once built.
#[derive(Debug, Clone, Default)]
pub(super) struct Block {
    /// The items, in order.
    pub items: Vec<Inline>,
}

/// Emphasis flags of a text run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Style(pub u8);

impl Style {
    pub const BIG: u8 = 1;
    pub const SMALL: u8 = 2;
    pub const B: u8 = 4;
    pub const STRONG: u8 = 8;
    pub const I: u8 = 16;
    pub const EM: u8 = 32;
    pub const U: u8 = 64;

    /// The WML elements of this style, outermost first.
    pub fn elements(self) -> impl Iterator<Item = &'static str> {
        [
            (Self::BIG, "big"),
            (Self::SMALL, "small"),
            (Self::B, "b"),
            (Self::STRONG, "strong"),
            (Self::I, "i"),
            (Self::EM, "em"),
            (Self::U, "u"),
        ]
        .into_iter()
        .filter(move |(bit, _)| self.0 & bit != 0)
        .map(|(_, name)| name)
    }
}

/// One inline item of a paragraph.
#[derive(Debug, Clone)]
pub(super) enum Inline {
    /// A run of text in one style.
    Text { text: String, style: Style },
    /// A link (`<a href>`); its text is plain.
    Link { href: String, text: String },
    /// A line break.
    Break,
    /// A text entry field.
    Input(Input),
    /// A choice list (HTML select, radio group or checkboxes).
    Select(Select),
    /// A form's submission (`do`/`go`/`postfield`).
    Submit(Submit),
    /// Where a choice list still being collected goes (index into the
    /// extractor's list); replaced by `Select` before the page is returned.
    SelectSlot(usize),
}

/// A WML `input`.
#[derive(Debug, Clone, Default)]
pub(super) struct Input {
    /// The WML variable it sets (a legal, unique name).
    pub var: String,
    /// `type="password"`.
    pub password: bool,
    /// The initial value.
    pub value: String,
    /// The title (label, placeholder).
    pub title: String,
    /// `size`.
    pub size: Option<u32>,
    /// `maxlength`.
    pub maxlength: Option<u32>,
}

/// A WML `select`.
#[derive(Debug, Clone, Default)]
pub(super) struct Select {
    /// The WML variable it sets.
    pub var: String,
    /// `multiple="true"` (checkboxes, `<select multiple>`).
    pub multiple: bool,
    /// The title.
    pub title: String,
    /// The options.
    pub options: Vec<Choice>,
    /// Options left out because the list did not fit a card.
    pub omitted: usize,
}

/// One `option`.
#[derive(Debug, Clone, Default)]
pub(super) struct Choice {
    /// The value the variable takes.
    pub value: String,
    /// What the user sees.
    pub label: String,
    /// Selected initially.
    pub selected: bool,
}

/// A form submission: `<do type="accept"><go href method><postfield/>…`.
#[derive(Debug, Clone, Default)]
pub(super) struct Submit {
    /// The form's number in the page (1-based): the `do` element's name,
    /// unique in its card.
    pub number: usize,
    /// The button's label.
    pub label: String,
    /// The form's action, resolved.
    pub href: String,
    /// `method="post"`.
    pub post: bool,
    /// The fields sent, in form order.
    pub fields: Vec<PostField>,
}

/// One `postfield`.
#[derive(Debug, Clone)]
pub(super) struct PostField {
    /// The HTML field name the backend expects.
    pub name: String,
    /// What is sent.
    pub value: PostValue,
}

/// A postfield's value.
#[derive(Debug, Clone)]
pub(super) enum PostValue {
    /// A fixed value (hidden field, submit button).
    Literal(String),
    /// The value of a WML variable, `$(var)`.
    Var(String),
}
