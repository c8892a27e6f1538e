//! WSP header codec against Kannel's (tests/vectors/wsp/headers.txt, made
//! by Kannel's own `test_headers`, see make_header_vectors.py there):
//! our decoder must read every octet string Kannel's encoder wrote into
//! the headers Kannel decodes from it, and our encoder (at encoding version
//! 1.2, Kannel's) must write Kannel's octets for the same input, except
//! for the deliberate differences listed below, each with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use wap_adapter::wsp::{decode_headers, encode_headers, EncodingVersion, Headers};

struct Case {
    input: String,
    hex: String,
    outputs: Vec<String>,
}

/// Where our decoding of Kannel's octets deliberately differs from
/// Kannel's own text: (input line, our output lines).
const DECODE_DIFFERENCES: &[(&str, &[&str])] = &[
    // Untyped parameter values that are tokens are rendered bare; Kannel
    // quotes them. Same value in HTTP.
    (
        "Accept: */*; q=0.5, text/html; level =1; q=0.8 ;foo=bar",
        &[
            "Accept: */*; q=0.5",
            "Accept: text/html; level=1; q=0.8; foo=bar",
        ],
    ),
    (
        r#"Pragma: gnu="nasty; string, \"tester", bar=foo"#,
        &[
            r#"Pragma: gnu="nasty; string, \"tester""#,
            "Pragma: bar=foo",
        ],
    ),
    (
        "Content-Type: multipart/form-data; boundary=abc",
        &["Content-Type: multipart/form-data; boundary=abc"],
    ),
    // Ranges in the HTTP form (RFC 7233 has no spaces around `=`).
    (
        "Range: bytes=15-100, 23-42",
        &["Range: bytes=15-100", "Range: bytes=23-42"],
    ),
    (
        "Range: bytes = -500, -20,-1,0-10",
        &[
            "Range: bytes=-500",
            "Range: bytes=-20",
            "Range: bytes=-1",
            "Range: bytes=0-10",
        ],
    ),
    ("Range: bytes = 50-", &["Range: bytes=50-"]),
    (
        "Range: bytes = 50-,10-20",
        &["Range: bytes=50-", "Range: bytes=10-20"],
    ),
    // Warn-codes as HTTP's three digits; Kannel prints WSP's two.
    (
        r#"Warning: 110 www.kannel.org "Response is stale" "Tue, 15 Nov 1994 08:12:31 GMT""#,
        &[r#"Warning: 110 www.kannel.org "Response is stale""#],
    ),
    (
        r#"Warning: 112 www.kannel.org "Disconnected operation", 299 www.kannel.org "something else""#,
        &[
            r#"Warning: 112 www.kannel.org "Disconnected operation""#,
            r#"Warning: 299 www.kannel.org "something else""#,
        ],
    ),
    // Kannel does not decode these (it prints nothing); we do. (Its
    // encoder wrote 0x80, the `*` application, for wml.ua.)
    (
        "X-Wap-Application-Id: x-wap-application:wml.ua",
        &["X-Wap-Application-Id: x-wap-application:*"],
    ),
    (
        "X-Wap-Application-Id: 4",
        &["X-Wap-Application-Id: x-wap-application:mms.ua"],
    ),
    ("Push-Flag: 1", &["Push-Flag: 1"]),
];

/// Where our encoding deliberately differs from Kannel's: (input line, our
/// octets in hex).
const ENCODE_DIFFERENCES: &[(&str, &str)] = &[
    // Kannel drops q-values of Accept-Encoding. Before 1.3 (no general
    // form) we keep them in an application header; q=1 is the default.
    (
        "Accept-encoding: compress;q=0.5, gzip;q=1.0",
        "4163636570742d456e636f64696e6700636f6d70726573733b713d302e35008280",
    ),
    (
        "Accept-Encoding: gzip;q=1.0, identity; q=0.5, *;q=0",
        "82804163636570742d456e636f64696e67006964656e746974793b20713d302e3500\
         4163636570742d456e636f64696e67002a3b713d3000",
    ),
    // A warn-date has no WSP encoding: Kannel drops it, we keep the
    // warning whole as an application header.
    (
        r#"Warning: 110 www.kannel.org "Response is stale" "Tue, 15 Nov 1994 08:12:31 GMT""#,
        "5761726e696e6700313130207777772e6b616e6e656c2e6f72672022526573706f6e73652069732073\
         74616c652220225475652c203135204e6f7620313939342030383a31323a333120474d542200",
    ),
    // Any-charset is the octet 0x80 (§8.4.2.8); Kannel writes the text `*`.
    ("Accept-Charset: *", "8180"),
    // wml.ua is application id 2; Kannel writes 0 (`*`).
    ("X-Wap-Application-Id: x-wap-application:wml.ua", "af82"),
];

fn cases() -> Vec<Case> {
    let text = include_str!("vectors/wsp/headers.txt");
    let mut cases = Vec::new();
    for block in text.split("\n\n") {
        let mut case = Case {
            input: String::new(),
            hex: String::new(),
            outputs: Vec::new(),
        };
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("in ") {
                case.input = v.to_owned();
            } else if let Some(v) = line.strip_prefix("hex") {
                case.hex = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("out ") {
                case.outputs.push(v.to_owned());
            }
        }
        if !case.input.is_empty() {
            cases.push(case);
        }
    }
    cases
}

fn one_header(line: &str) -> Headers {
    let (name, value) = line.split_once(':').expect("header line");
    [(name.trim(), value.trim())].into_iter().collect()
}

fn render(headers: &Headers) -> Vec<String> {
    headers.iter().map(|(n, v)| format!("{n}: {v}")).collect()
}

#[test]
fn decoder_reads_kannel_encodings() {
    let all = cases();
    assert!(all.len() > 150, "only {} cases", all.len());
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in all.iter().filter(|c| !c.hex.is_empty()) {
        let bytes = hex::decode(&case.hex).unwrap();
        let decoded = decode_headers(&bytes, EncodingVersion::V1_2);
        let got = render(&decoded.headers);
        let expected: Vec<String> = match DECODE_DIFFERENCES.iter().find(|(i, _)| *i == case.input)
        {
            Some((_, ours)) => ours.iter().map(|s| s.to_string()).collect(),
            None => case.outputs.clone(),
        };
        if got != expected || !decoded.errors.is_empty() {
            failures.push(format!(
                "in {}\n  expected {expected:?}\n  got      {got:?} errors {:?}",
                case.input, decoded.errors
            ));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 150, "{checked}");
}

#[test]
fn encoder_writes_kannel_octets() {
    let mut failures = Vec::new();
    let mut same = 0;
    for case in cases() {
        let ours = encode_headers(&one_header(&case.input), EncodingVersion::V1_2)
            .map(hex::encode)
            .unwrap_or_else(|e| format!("error {e}"));
        let expected = match ENCODE_DIFFERENCES.iter().find(|(i, _)| *i == case.input) {
            Some((_, hex)) => hex.replace(char::is_whitespace, ""),
            None if case.hex.is_empty() => {
                // Kannel wrote nothing (an empty value, or a header it
                // cannot encode at 1.2): ours must decode back to the input.
                let decoded = decode_headers(&hex::decode(&ours).unwrap(), EncodingVersion::V1_2);
                assert!(
                    decoded.errors.is_empty(),
                    "{}: {:?}",
                    case.input,
                    decoded.errors
                );
                continue;
            }
            None => {
                same += 1;
                case.hex.clone()
            }
        };
        if ours != expected {
            failures.push(format!(
                "in {}\n  expected {expected}\n  ours     {ours}",
                case.input
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(same > 150, "{same}");
}
