//! `compile_wml` against the independent compilers and decompilers:
//!
//! - kannel's WML compiler (`/usr/lib/kannel/test/wml_tester -b`): every
//!   corpus deck (tests/wml/) and kannel's own sample decks compile to the
//!   same bytes, except the decks listed with a [`Difference`]; for those,
//!   the bytes must differ, the string tables must agree (but for the
//!   documented extra entry), and both outputs decoded must be the same
//!   tree once exactly that difference is undone on ours.
//! - kannel's decompiler (`/usr/lib/kannel/test/decompile`) and libwbxml's
//!   `wbxml2xml` must read our output.
//!
//! Each test skips (`permanet-test-skipped:`) when its oracle is absent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod wbxml_common;

use std::path::Path;
use std::process::Command;

use wap_adapter::wbxml::{compile_wml, Charset, CompileOptions};
use wbxml_common::{compare, decoded, path, read, Deck, DECKS};

const WML_TESTER: &str = "/usr/lib/kannel/test/wml_tester";
const KANNEL_DECOMPILE: &str = "/usr/lib/kannel/test/decompile";
const WBXML2XML: &str = "/usr/bin/wbxml2xml";
const KANNEL_SAMPLES: &[&str] = &[
    "/usr/lib/kannel/test/hello.wml",
    "/usr/lib/kannel/test/testcase.wml",
];

fn oracle_present(test: &str, binary: &str) -> bool {
    if Path::new(binary).exists() {
        return true;
    }
    netns_tests::skip(test, &format!("{binary} is not installed"));
    false
}

fn options(charset: Charset) -> CompileOptions {
    CompileOptions {
        charset,
        string_table: true,
    }
}

/// kannel's compiler output for a file.
fn kannel_compile(file: &Path, charset: Charset) -> Vec<u8> {
    let mut cmd = Command::new(WML_TESTER);
    cmd.arg("-b");
    if charset == Charset::Iso8859_1 {
        cmd.args(["-c", "ISO-8859-1"]);
    }
    let out = cmd.arg(file).output().expect("run wml_tester");
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "wml_tester failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn corpus_matches_kannel_wml_tester() {
    if !oracle_present("corpus_matches_kannel_wml_tester", WML_TESTER) {
        return;
    }
    // Every deck is compared before the test fails, so one run lists all.
    let failed: Vec<&str> = DECKS
        .iter()
        .filter(|deck| {
            let Deck {
                file,
                charset,
                differences,
            } = deck;
            std::panic::catch_unwind(|| {
                let ours = compile_wml(&read(file), &options(*charset))
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                let kannel = kannel_compile(&path(file), *charset);
                compare(file, &ours, &kannel, differences);
            })
            .is_err()
        })
        .map(|deck| deck.file)
        .collect();
    assert!(
        failed.is_empty(),
        "decks that differ from wml_tester: {failed:?}"
    );
}

#[test]
fn kannel_sample_decks_match_wml_tester() {
    if !oracle_present("kannel_sample_decks_match_wml_tester", WML_TESTER) {
        return;
    }
    for sample in KANNEL_SAMPLES {
        let Ok(wml) = std::fs::read(sample) else {
            netns_tests::skip(
                "kannel_sample_decks_match_wml_tester",
                &format!("{sample} absent"),
            );
            continue;
        };
        let ours = compile_wml(&wml, &CompileOptions::default())
            .unwrap_or_else(|e| panic!("{sample}: {e}"));
        let kannel = kannel_compile(Path::new(sample), Charset::Utf8);
        compare(sample, &ours, &kannel, &[]);
    }
}

/// Runs a decompiler oracle on our output (written to a temporary file,
/// removed on drop) and returns its stdout.
fn run_on_output(binary: &str, args: &[&str], wbxml: &[u8], name: &str) -> String {
    struct TempFile(std::path::PathBuf);
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let file = TempFile(std::env::temp_dir().join(format!(
        "permanet-wbxml-{}-{}.wmlc",
        std::process::id(),
        name.replace('/', "_")
    )));
    std::fs::write(&file.0, wbxml).expect("write temp file");
    let out = Command::new(binary)
        .args(args)
        .arg(&file.0)
        .output()
        .expect("run decompiler");
    assert!(
        out.status.success(),
        "{binary} failed on our {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Text content of an XML document, white space collapsed and references
/// resolved (what a reader sees), for comparing decompiler outputs that
/// indent differently. Variables are compared as `$(name)` plus any
/// non-default mode (libwbxml writes `$(v:noesc)` for `$(v)`); libwbxml
/// writes a literal `$` undoubled, so for its output `doubled_dollar` is
/// false and ours is undoubled before comparing.
fn words(xml: &str, doubled_dollar: bool) -> Vec<String> {
    let mut xml = xml.replace(":noesc)", ")");
    if doubled_dollar {
        xml = xml.replace("$$", "$");
    }
    let mut text = String::new();
    let mut in_tag = false;
    for c in xml.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = quick_xml::escape::unescape(&text)
        .map(|t| t.into_owned())
        .unwrap_or(text);
    text.split_whitespace().map(str::to_string).collect()
}

#[test]
fn kannel_decompiler_reads_our_output() {
    if !oracle_present("kannel_decompiler_reads_our_output", KANNEL_DECOMPILE) {
        return;
    }
    // kannel's decompiler cannot read variables (extension tokens),
    // string-table references or LITERAL tags and attributes, not even in
    // wml_tester's own output, and it writes each byte of a UTF-8 character
    // as its own character reference: it reads ASCII decks without
    // variables compiled without a string table.
    let readable = ["events.wml", "longtext.wml", "tables.wml"];
    for deck in DECKS.iter().filter(|d| readable.contains(&d.file)) {
        let inline = CompileOptions {
            charset: deck.charset,
            string_table: false,
        };
        let ours = compile_wml(&read(deck.file), &inline).expect("compile");
        let theirs = run_on_output(KANNEL_DECOMPILE, &[], &ours, deck.file);
        let mine = decoded(&ours, deck.file).to_wml();
        assert_eq!(
            words(&theirs, false),
            words(&mine, false),
            "{}: kannel's decompiler reads different text",
            deck.file
        );
    }
}

#[test]
fn libwbxml_reads_our_output() {
    if !oracle_present("libwbxml_reads_our_output", WBXML2XML) {
        return;
    }
    // Debian's libwbxml is built without iconv: it reads UTF-8 only.
    for deck in DECKS.iter().filter(|d| d.charset == Charset::Utf8) {
        let ours = compile_wml(&read(deck.file), &options(deck.charset)).expect("compile");
        let theirs = run_on_output(WBXML2XML, &["-o", "-"], &ours, deck.file);
        let mine = decoded(&ours, deck.file).to_wml();
        assert_eq!(
            words(&theirs, false),
            words(&mine, true),
            "{}: libwbxml reads different text",
            deck.file
        );
    }
}
