//! WSP codec round trips and malformed input: for every well-known header
//! (Table 39 up to 1.4), content type (Table 40), charset, language,
//! cache directive and method, encoding then decoding gives the input
//! back; every PDU type round-trips; malformed PDUs give the typed error
//! they should; a bad header value loses only itself; arbitrary octets
//! never panic the decoders.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use wap_adapter::wsp::capabilities::Capabilities;
use wap_adapter::wsp::pdu::{self, Method, Mode, Pdu, RedirectAddress};
use wap_adapter::wsp::tables::{self, EncodingVersion, FieldKind};
use wap_adapter::wsp::{decode_headers, encode_headers, Headers, WspError};

const VERSIONS: [EncodingVersion; 4] = [
    EncodingVersion::V1_1,
    EncodingVersion::V1_2,
    EncodingVersion::V1_3,
    EncodingVersion::V1_4,
];

/// Encode then decode; the decoding must be clean.
fn round_trip(headers: &Headers, version: EncodingVersion) -> Headers {
    let bytes = encode_headers(headers, version).unwrap();
    let decoded = decode_headers(&bytes, version);
    assert!(
        decoded.errors.is_empty(),
        "{headers:?} -> {bytes:02x?}: {:?}",
        decoded.errors
    );
    decoded.headers
}

fn one(name: &str, value: &str) -> Headers {
    [(name, value)].into_iter().collect()
}

/// Values in canonical form (as the decoder renders them) for each kind.
fn samples(kind: FieldKind) -> &'static [&'static str] {
    match kind {
        FieldKind::Accept => &[
            "*/*",
            "text/vnd.wap.wml",
            "application/x-foo; q=0.5",
            "text/html; level=1; q=0.8",
        ],
        FieldKind::AcceptCharset => &[
            "utf-8",
            "*",
            "big5; q=0.9",
            "x-private; q=0.1",
            "iso-8859-1; q=0.003",
        ],
        FieldKind::AcceptEncoding => &["gzip", "deflate", "identity"],
        FieldKind::AcceptLanguage => &["en", "vo", "*; q=0.0", "x-klingon; q=0.6"],
        FieldKind::AcceptRanges => &["bytes", "none", "pages"],
        FieldKind::Integer => &["0", "127", "128", "4294967296"],
        FieldKind::Method => &["GET", "PUT", "PATCH"],
        FieldKind::CacheControl => &[
            "no-cache",
            "max-age=3600",
            "private=\"Accept, X-Thing\"",
            "s-maxage=5",
            "community=\"UCI\"",
            "foo",
        ],
        FieldKind::Connection => &["close", "keep-alive"],
        FieldKind::ContentEncoding => &["gzip", "br"],
        FieldKind::ContentLanguage => &["fi", "ia", "x-elvish"],
        FieldKind::Md5 => &["IgVS2+4DTgdCvoq1jRif1w=="],
        FieldKind::ContentType => &[
            "text/vnd.wap.wml; charset=utf-8",
            "application/vnd.wap.wmlc",
            "multipart/form-data; boundary=\"a b\"",
            "text/plain; name=\"a.txt\"",
        ],
        FieldKind::Date => &[
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "Sat, 21 Nov 2026 10:52:00 GMT",
        ],
        FieldKind::Text => &[
            "http://example.com/a?b=c",
            "Nokia7110/1.0 (04.94)",
            "\u{e9}t\u{e9}",
            "\"quoted\" text",
        ],
        FieldKind::EntityTag => &["\"floop\"", "W/\"xyzzy\"", "*"],
        FieldKind::IfRange => &["\"floop\"", "Tue, 15 Nov 1994 08:12:31 GMT"],
        FieldKind::Pragma => &["no-cache", "foo=bar", "gnu=\"a; b\""],
        FieldKind::RetryAfter => &["120", "Tue, 15 Nov 1994 08:12:31 GMT"],
        FieldKind::TransferEncoding => &["chunked", "gzip"],
        FieldKind::FieldName => &["Content-Type", "X-Custom", "*"],
        FieldKind::ContentDisposition => &[
            "attachment; filename=\"foo.jpg\"",
            "form-data; name=\"x\"",
            "inline",
        ],
        FieldKind::ApplicationId => &[
            "x-wap-application:wml.ua",
            "x-wap-application:mms.ua",
            "urn:example:app",
            "4660",
        ],
        FieldKind::ShortInteger => &["1", "127"],
        FieldKind::EncodingVersion => &["1.3", "1", "2.0a"],
        FieldKind::Credentials => &[
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
            "Digest username=\"frank\", uri=\"/x\"",
        ],
        FieldKind::Challenge => &[
            "Basic realm=\"WallyWorld\"",
            "Digest realm=\"r\", nonce=\"abc\"",
        ],
        FieldKind::Range => &["bytes=0-10", "bytes=-500", "bytes=50-"],
        FieldKind::Warning => &[
            "110 www.example.org \"Response is stale\"",
            "214 proxy \"Transformation applied\"",
        ],
        FieldKind::Cookie => &["a=b", "sid=abc; lang=fi"],
        FieldKind::SetCookie => &["sid=abc; Path=/; HttpOnly"],
        FieldKind::Opaque => &["some opaque text", "a=b; c=d"],
    }
}

#[test]
fn every_well_known_header_round_trips() {
    let mut checked = 0;
    for version in VERSIONS {
        for field in tables::FIELDS {
            for value in samples(field.kind) {
                let headers = one(field.name, value);
                let back = round_trip(&headers, version);
                assert_eq!(back, headers, "{} at {version}", field.name);
                checked += 1;
            }
        }
    }
    assert!(checked > 800, "{checked}");
}

#[test]
fn well_known_names_use_their_codes() {
    for field in tables::FIELDS {
        let bytes = encode_headers(
            &one(field.name, samples(field.kind)[0]),
            EncodingVersion::V1_4,
        )
        .unwrap();
        let first = tables::field_by_name(field.name, EncodingVersion::V1_4).unwrap();
        if matches!(
            field.kind,
            FieldKind::Opaque | FieldKind::Cookie | FieldKind::SetCookie
        ) {
            // No structured encoding: an application header (by name).
            assert_eq!(&bytes[..field.name.len()], field.name.as_bytes());
        } else {
            assert_eq!(bytes[0], 0x80 | first.code, "{}", field.name);
        }
    }
    // A name newer than the version goes out as an application header.
    let bytes = encode_headers(
        &one("X-Wap-Tod", "Thu, 01 Jan 1970 00:00:00 GMT"),
        EncodingVersion::V1_2,
    )
    .unwrap();
    assert!(bytes.starts_with(b"X-Wap-Tod\0"));
    let bytes = encode_headers(
        &one("X-Wap-Tod", "Thu, 01 Jan 1970 00:00:00 GMT"),
        EncodingVersion::V1_3,
    )
    .unwrap();
    assert_eq!(bytes, [0xbf, 0x01, 0x00]);
}

#[test]
fn every_content_type_round_trips() {
    for version in VERSIONS {
        for (code, (name, since)) in tables::CONTENT_TYPES.iter().enumerate() {
            for value in [
                name.to_string(),
                format!("{name}; charset=utf-8"),
                format!("{name}; q=0.5; x=y"),
            ] {
                for field in ["Content-Type", "Accept"] {
                    let headers = one(field, &value);
                    assert_eq!(
                        round_trip(&headers, version),
                        headers,
                        "{value} at {version}"
                    );
                }
            }
            let bytes = encode_headers(&one("Content-Type", name), version).unwrap();
            if *since <= version {
                assert_eq!(bytes, [0x91, 0x80 | code as u8], "{name}");
            } else {
                assert_eq!(
                    bytes[1..bytes.len() - 1],
                    *name.as_bytes(),
                    "{name} as text at {version}"
                );
            }
        }
    }
}

#[test]
fn every_charset_and_language_round_trips() {
    for (charset, _) in tables::CHARSETS {
        for value in [charset.to_string(), format!("{charset}; q=0.5")] {
            let headers = one("Accept-Charset", &value);
            assert_eq!(round_trip(&headers, EncodingVersion::V1_2), headers);
        }
        let headers = one("Content-Type", &format!("text/plain; charset={charset}"));
        assert_eq!(round_trip(&headers, EncodingVersion::V1_2), headers);
    }
    for (language, _) in tables::LANGUAGES {
        for value in [language.to_string(), format!("{language}; q=0.25")] {
            let headers = one("Accept-Language", &value);
            assert_eq!(round_trip(&headers, EncodingVersion::V1_2), headers);
        }
        let headers = one("Content-Language", language);
        assert_eq!(round_trip(&headers, EncodingVersion::V1_2), headers);
    }
    for directive in tables::CACHE_CONTROL {
        let headers = one("Cache-Control", directive);
        assert_eq!(round_trip(&headers, EncodingVersion::V1_4), headers);
    }
    for (method, _) in tables::METHODS {
        let headers = one("Allow", method);
        assert_eq!(round_trip(&headers, EncodingVersion::V1_4), headers);
    }
}

#[test]
fn lists_split_into_one_header_per_element() {
    let headers = one(
        "Accept",
        "text/vnd.wap.wml, application/vnd.wap.wmlc;q=0.9, */*;q=0.1",
    );
    let back = round_trip(&headers, EncodingVersion::V1_2);
    let values: Vec<&str> = back.get_all("accept").collect();
    assert_eq!(
        values,
        [
            "text/vnd.wap.wml",
            "application/vnd.wap.wmlc; q=0.9",
            "*/*; q=0.1"
        ]
    );
    // Accept-Encoding with q: the 1.3 code and general form; an
    // application header before 1.3.
    let headers = one("Accept-Encoding", "gzip;q=0.5");
    assert_eq!(
        encode_headers(&headers, EncodingVersion::V1_3).unwrap(),
        [0xbc, 0x02, 0x80, 0x33]
    );
    assert_eq!(
        round_trip(&headers, EncodingVersion::V1_3).get("Accept-Encoding"),
        Some("gzip; q=0.5")
    );
    assert_eq!(
        round_trip(&headers, EncodingVersion::V1_2).get("Accept-Encoding"),
        Some("gzip;q=0.5")
    );
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn text(&mut self) -> String {
        if self.below(50) == 0 {
            // A leading DEL or control octet (quoted by the encoder).
            return format!("{}x", ['\u{7f}', '\u{1}', '\u{1f}'][self.below(3)]);
        }
        let alphabet: Vec<char> = " !\"#$%&'()*+,-./0123456789:;<=>?@AZaz[\\]^_`{|}~\u{e9}\u{20ac}"
            .chars()
            .collect();
        let len = 1 + self.below(20);
        let text: String = (0..len)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect();
        let text = text.trim().to_owned();
        if text.is_empty() {
            "x".into()
        } else {
            text
        }
    }
}

#[test]
fn arbitrary_text_survives_application_and_text_headers() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let text_fields: Vec<&str> = tables::FIELDS
        .iter()
        .filter(|f| f.kind == FieldKind::Text && f.name != "Via")
        .map(|f| f.name)
        .collect();
    for _ in 0..5000 {
        let value = rng.text();
        let name = if rng.below(2) == 0 {
            format!("X-Test-{}", rng.below(1000))
        } else {
            text_fields[rng.below(text_fields.len())].to_owned()
        };
        let headers = one(&name, &value);
        assert_eq!(
            round_trip(&headers, EncodingVersion::V1_2),
            headers,
            "{name}: {value:?}"
        );
    }
}

#[test]
fn arbitrary_octets_never_panic() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let seeds: Vec<Vec<u8>> = [
        "01401a687474703a2f2f3132372e302e302e312f68656c6c6f2e776d6c8080",
        "01100a0b0480c080000481c080008080a966616b6577617000",
        "8003808033800d82829f8051666f6f0062617200",
        "871580416c616464696e006f70656e20736573616d6500",
    ]
    .iter()
    .map(|h| hex::decode(h).unwrap())
    .collect();
    for round in 0..50_000 {
        let mut input = if round % 2 == 0 {
            seeds[rng.below(seeds.len())].clone()
        } else {
            (0..rng.below(64)).map(|_| rng.next() as u8).collect()
        };
        for _ in 0..rng.below(4) {
            if !input.is_empty() {
                let at = rng.below(input.len());
                input[at] = rng.next() as u8;
            }
        }
        if rng.below(4) == 0 && !input.is_empty() {
            input.truncate(rng.below(input.len()));
        }
        let _ = decode_headers(&input, EncodingVersion::V1_4);
        let _ = pdu::decode(&input, Mode::Connectionless);
        let _ = pdu::decode(&input, Mode::Connection);
        let _ = Capabilities::decode(&input, 0);
    }
}

#[test]
fn every_pdu_round_trips() {
    let headers: Headers = [("Accept", "text/vnd.wap.wml"), ("User-Agent", "test/1.0")]
        .into_iter()
        .collect();
    let caps = Capabilities {
        client_sdu_size: Some(3000),
        method_mor: Some(2),
        ..Capabilities::default()
    };
    let pdus = vec![
        Pdu::Connect {
            version: 0x10,
            capabilities: caps.clone(),
            headers: headers.clone(),
        },
        Pdu::ConnectReply {
            session_id: 0x1234_5678,
            capabilities: caps.clone(),
            headers: Headers::new(),
        },
        Pdu::Redirect {
            flags: 0x80,
            addresses: vec![
                RedirectAddress {
                    bearer_type: Some(0),
                    port: Some(9201),
                    address: vec![192, 0, 2, 1],
                },
                RedirectAddress {
                    bearer_type: None,
                    port: None,
                    address: vec![1; 16],
                },
            ],
        },
        Pdu::Disconnect { session_id: 300 },
        Pdu::Suspend { session_id: 7 },
        Pdu::Resume {
            session_id: 7,
            capabilities: caps,
            headers: headers.clone(),
        },
        Pdu::Get {
            method: Method::Get,
            uri: "http://a/b".into(),
            headers: headers.clone(),
        },
        Pdu::Get {
            method: Method::Options,
            uri: "*".into(),
            headers: Headers::new(),
        },
        Pdu::Get {
            method: Method::Head,
            uri: "/".into(),
            headers: Headers::new(),
        },
        Pdu::Get {
            method: Method::Delete,
            uri: "/x".into(),
            headers: Headers::new(),
        },
        Pdu::Get {
            method: Method::Trace,
            uri: "/x".into(),
            headers: Headers::new(),
        },
        Pdu::Get {
            method: Method::Other(0x50),
            uri: "/x".into(),
            headers: Headers::new(),
        },
        Pdu::Post {
            method: Method::Post,
            uri: "/form".into(),
            content_type: "application/x-www-form-urlencoded".into(),
            headers: headers.clone(),
            data: b"a=1&b=2".to_vec(),
        },
        Pdu::Post {
            method: Method::Put,
            uri: "/doc".into(),
            content_type: "application/x-unknown; charset=utf-8".into(),
            headers: Headers::new(),
            data: vec![0, 1, 2, 255],
        },
        Pdu::Reply {
            status: 0x20,
            content_type: "application/vnd.wap.wmlc; charset=utf-8".into(),
            headers: [("Content-Length", "3")].into_iter().collect(),
            data: vec![1, 2, 3],
        },
        Pdu::Reply {
            status: 0x44,
            content_type: String::new(),
            headers: Headers::new(),
            data: Vec::new(),
        },
        Pdu::Push {
            confirmed: false,
            content_type: "text/vnd.wap.si".into(),
            headers: Headers::new(),
            data: b"x".to_vec(),
        },
        Pdu::Push {
            confirmed: true,
            content_type: "text/vnd.wap.sl".into(),
            headers,
            data: Vec::new(),
        },
    ];
    for pdu in pdus {
        for tid in [None, Some(0x42)] {
            let bytes = pdu::encode(&pdu, tid, EncodingVersion::V1_4).unwrap();
            let mode = if tid.is_some() {
                Mode::Connectionless
            } else {
                Mode::Connection
            };
            let decoded = pdu::decode(&bytes, mode).unwrap();
            assert_eq!(decoded.pdu, pdu, "{bytes:02x?}");
            assert_eq!(decoded.tid, tid);
            assert!(decoded.header_errors.is_empty());
            // No strict prefix panics the decoder (some are valid PDUs
            // with a shorter data part).
            for cut in 0..bytes.len() {
                let _ = pdu::decode(&bytes[..cut], mode);
            }
        }
    }
}

#[test]
fn malformed_pdus_are_typed_errors() {
    use Mode::Connection as C;
    assert!(matches!(
        pdu::decode(&[], C),
        Err(WspError::Truncated { .. })
    ));
    assert!(matches!(
        pdu::decode(&[0x01], Mode::Connectionless),
        Err(WspError::Truncated { .. })
    ));
    assert_eq!(pdu::decode(&[0x0a], C), Err(WspError::UnknownPduType(0x0a)));
    assert_eq!(
        pdu::decode(&[0x80, 0x00], C),
        Err(WspError::UnknownPduType(0x80))
    );
    assert!(matches!(
        pdu::decode(&[0x05, 0x81, 0x80, 0x80, 0x80, 0x80, 0x01], C),
        Err(WspError::UintvarTooLong { .. })
    ));
    assert!(matches!(
        pdu::decode(&[0x05, 0x9f, 0xff, 0xff, 0xff, 0x7f], C),
        Err(WspError::UintvarOverflow { .. })
    ));
    // URI length beyond the PDU.
    assert!(matches!(
        pdu::decode(&[0x40, 0x20, b'h', b't'], C),
        Err(WspError::LengthBeyondPdu {
            offset: 1,
            length: 32,
            available: 2
        })
    ));
    // Capabilities length beyond the PDU.
    assert!(matches!(
        pdu::decode(&[0x01, 0x10, 0x10, 0x00, 0x01], C),
        Err(WspError::LengthBeyondPdu { .. })
    ));
    // Reply whose headers length runs past the end.
    assert!(matches!(
        pdu::decode(&[0x04, 0x20, 0x05, 0x88], C),
        Err(WspError::LengthBeyondPdu { .. })
    ));
    // Disconnect with trailing octets.
    assert_eq!(
        pdu::decode(&[0x05, 0x05, 0x00], C),
        Err(WspError::TrailingData { count: 1 })
    );
}

#[test]
fn a_bad_header_value_loses_only_itself() {
    let mut block = Vec::new();
    block.extend_from_slice(&[0x80, 0x88]); // Accept: text/vnd.wap.wml
    block.extend_from_slice(&[0x80, 0xff]); // Accept: content type code 0x7f (unassigned)
    block.extend_from_slice(&[0x8d, 0x09, 1, 2, 3, 4, 5, 6, 7, 8, 9]); // Content-Length wider than 64 bits
    block.extend_from_slice(&[0xc8, 0x80]); // well-known code 0x48 (not assigned up to 1.4)
    block.extend_from_slice(&[0x7f, 0x02, 0x85, 0x80]); // page 2: skipped
    block.extend_from_slice(&[0x7f, 0x01]); // back to page 1
    block.extend_from_slice(b"X-Thing\0value\0");
    block.extend_from_slice(&[0xa9]); // User-Agent
    block.extend_from_slice(b"ua\0");
    let decoded = decode_headers(&block, EncodingVersion::V1_4);
    let expected: Headers = [
        ("Accept", "text/vnd.wap.wml"),
        ("X-Thing", "value"),
        ("User-Agent", "ua"),
    ]
    .into_iter()
    .collect();
    assert_eq!(decoded.headers, expected);
    assert_eq!(decoded.errors.len(), 4, "{:?}", decoded.errors);
    assert!(
        matches!(&decoded.errors[0], WspError::HeaderValue { name, offset: 3, .. } if name == "Accept")
    );
    assert!(
        matches!(&decoded.errors[1], WspError::HeaderValue { name, .. } if name == "Content-Length")
    );
    assert!(
        matches!(&decoded.errors[2], WspError::HeaderValue { name, .. } if name == "code 0x48")
    );
    assert!(matches!(
        decoded.errors[3],
        WspError::UnknownCodePage {
            page: 2,
            code: 0x05,
            ..
        }
    ));

    // A broken extent ends decoding, with what came before kept.
    let decoded = decode_headers(&[0x80, 0x88, 0x91, 0x1e, 0x88], EncodingVersion::V1_4);
    assert_eq!(decoded.headers.len(), 1);
    assert!(matches!(
        decoded.errors[..],
        [WspError::LengthBeyondPdu { .. }]
    ));
    let decoded = decode_headers(b"X-Unterminated", EncodingVersion::V1_4);
    assert!(matches!(
        decoded.errors[..],
        [WspError::UnterminatedText { offset: 0 }]
    ));

    // In a PDU: the PDU decodes, the bad header is reported.
    let mut get = vec![0x40, 0x01, b'/'];
    get.extend_from_slice(&block);
    let decoded = pdu::decode(&get, Mode::Connection).unwrap();
    assert_eq!(decoded.header_errors.len(), 4);
    let Pdu::Get { headers, .. } = decoded.pdu else {
        panic!()
    };
    assert_eq!(headers, expected);
}

#[test]
fn unencodable_headers_are_errors() {
    assert!(matches!(
        encode_headers(&one("Bad Name", "x"), EncodingVersion::V1_2),
        Err(WspError::Unencodable { .. })
    ));
    assert!(matches!(
        encode_headers(&one("X-A", "nul\0inside"), EncodingVersion::V1_2),
        Err(WspError::Unencodable { .. })
    ));
    // An empty value keeps its header.
    let headers = one("X-Empty", "");
    assert_eq!(round_trip(&headers, EncodingVersion::V1_2), headers);
    let headers = one("Location", "");
    assert_eq!(round_trip(&headers, EncodingVersion::V1_2), headers);
}

#[test]
fn encoded_cookies_decode() {
    // Cookie (0x42): version 1, two cookies, the second with a path.
    let mut block = vec![0xc2, 0x16, 0x9f];
    block.extend_from_slice(&[0x08]);
    block.extend_from_slice(b"sid\0abc\0");
    block.extend_from_slice(&[0x0b]);
    block.extend_from_slice(b"lang\0fi\0/x\0");
    assert_eq!(block[1] as usize, block.len() - 2);
    // Set-Cookie (0x41): version 1, name, value, max-age, path, secure.
    let mut set = vec![0x9f];
    set.extend_from_slice(b"sid\0abc\0");
    set.extend_from_slice(&[0x8e, 0x02, 0x0e, 0x10]); // max-age=3600
    set.extend_from_slice(&[0x8f]);
    set.extend_from_slice(b"/app\0");
    set.extend_from_slice(&[0x90, 0x00]); // secure
    block.push(0xc1);
    block.push(set.len() as u8);
    block.extend_from_slice(&set);
    let decoded = decode_headers(&block, EncodingVersion::V1_4);
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    let expected: Headers = [
        ("Cookie", "sid=abc; lang=fi"),
        ("Set-Cookie", "sid=abc; max-age=3600; path=/app; secure"),
    ]
    .into_iter()
    .collect();
    assert_eq!(decoded.headers, expected);
    // Encoded by us as application headers, kept exactly.
    let headers = one("Set-Cookie", "sid=abc; Path=/app; HttpOnly");
    let bytes = encode_headers(&headers, EncodingVersion::V1_4).unwrap();
    assert!(bytes.starts_with(b"Set-Cookie\0"));
    assert_eq!(round_trip(&headers, EncodingVersion::V1_4), headers);
}
