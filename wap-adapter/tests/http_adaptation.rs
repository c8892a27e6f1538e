//! Content adaptation through the real HTTP front, in process, on
//! loopback: a fake tunneld control socket (as in tests/http_front.rs), a
//! test backend serving HTML pages, WML decks and other bodies from the
//! corpus, and a raw HTTP client that reads bodies as bytes (WMLC is
//! binary). The WAP front's `WapClient` is exercised by calling
//! `Adapter::handle` directly.
//!
//! Every card served is checked the way a WAP client depends on it:
//! compiled by `wbxml::compile_wml` within the SDU size, and valid against
//! the WML 1.3 DTD when xmllint is installed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

mod http_common;
mod wml_dtd_common;

use http_common::{FakeTunneld, Leases};

use wap_adapter::adapter::conversion::{WbxmlSize, CARD_PARAM, WSP_REPLY_MARGIN};
use wap_adapter::adapter::{Adapter, Front, Origin, WapClient};
use wap_adapter::config::Config;
use wap_adapter::convert::{html_to_wml_cards, wml_to_html, Html2WmlOptions};
use wap_adapter::identity::Resolver;
use wap_adapter::server::http::HttpServer;
use wap_adapter::server::ServerCounters;
use wap_adapter::wbxml::{compile_wml, decode, decompile, Charset, CompileOptions};

/// The test user's overlay address.
const ALICE: &str = "2002:b16:212c:1::1234";
/// The application's address.
const APP: &str = "2002:b16:212c:2::10";
const XMLLINT: &str = "/usr/bin/xmllint";
const WML_ACCEPT: &str = "Accept: text/vnd.wap.wml\r\n";
const WMLC_ACCEPT: &str = "Accept: application/vnd.wap.wmlc, text/vnd.wap.wml;q=0.8\r\n";
const BROWSER_ACCEPT: &str = "Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n";

fn corpus(dir: &str, name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join(dir)
            .join(name),
    )
    .unwrap()
}

/// Alice, in group `staff`, holds [`ALICE`] and `::1` (direct loopback
/// connections); the fake tunneld knows no one else.
fn leases() -> Leases {
    [ALICE, "::1"]
        .into_iter()
        .map(|a| (a.parse().unwrap(), ("alice", vec!["staff"])))
        .collect()
}

type Routes = HashMap<&'static str, (&'static str, Option<(&'static str, &'static str)>, Vec<u8>)>;

fn routes() -> Routes {
    let mut routes: Routes = HashMap::new();
    routes.insert(
        "/news",
        (
            "text/html; charset=utf-8",
            None,
            corpus("html", "news.html"),
        ),
    );
    routes.insert(
        "/article",
        ("text/html", None, corpus("html", "article.html")),
    );
    let mut broken = corpus("html", "broken.html");
    broken.extend_from_slice(
        b"<table><tr><td><b>unclosed<p><a href='x?y=1&z'>&bogus; \xff\xfe $HOME",
    );
    routes.insert("/broken", ("text/html", None, broken));
    routes.insert(
        "/xhtml",
        (
            "application/xhtml+xml",
            Some(("etag", "\"v1\"")),
            b"<?xml version=\"1.0\"?><html xmlns=\"http://www.w3.org/1999/xhtml\"><head><title>X</title></head><body><p>xhtml page</p></body></html>".to_vec(),
        ),
    );
    routes.insert(
        "/deck",
        ("text/vnd.wap.wml", None, corpus("wml", "forms.wml")),
    );
    routes.insert(
        "/bad-deck",
        (
            "text/vnd.wap.wml",
            None,
            b"<?xml version=\"1.0\"?><wml><card><p>unclosed</card></wml>".to_vec(),
        ),
    );
    routes.insert(
        "/gzip",
        (
            "text/html",
            Some(("content-encoding", "gzip")),
            b"\x1f\x8b\x08\x00not really".to_vec(),
        ),
    );
    routes.insert(
        "/image",
        (
            "image/png",
            None,
            b"\x89PNG\r\n\x1a\n\x00\xff<html>".to_vec(),
        ),
    );
    routes.insert(
        "/json",
        ("application/json", None, b"{\"html\":\"<p>\"}".to_vec()),
    );
    routes
}

/// An HTTP backend on loopback serving fixed bodies by path (content type,
/// extra header, body); 404 otherwise. Records every request.
type ContentBackend = http_common::Backend;

impl ContentBackend {
    async fn start() -> ContentBackend {
        let routes = routes();
        ContentBackend::serve(Duration::ZERO, move |seen| {
            let path = seen.uri.parse::<hyper::Uri>().unwrap();
            let mut response = match routes.get(path.path()).cloned() {
                Some((content_type, extra, body)) => {
                    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                    r.headers_mut()
                        .insert("content-type", content_type.parse().unwrap());
                    if let Some((n, v)) = extra {
                        r.headers_mut().insert(n, v.parse().unwrap());
                    }
                    r
                }
                None => {
                    let mut r =
                        hyper::Response::new(Full::new(Bytes::from_static(b"no such page")));
                    *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                    r
                }
            };
            response
                .headers_mut()
                .insert("accept-ranges", "bytes".parse().unwrap());
            response
        })
        .await
    }
}

/// The adapter and its HTTP front on `[::1]:0` (direct: the source is
/// `::1`, alice), in front of `backend`, with `extra` application keys.
struct Served {
    address: SocketAddr,
    adapter: Arc<Adapter>,
    stop: watch::Sender<bool>,
    served: tokio::task::JoinHandle<()>,
    _tunneld: FakeTunneld,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start(backend: &ContentBackend, extra: &str) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let tunneld = FakeTunneld::start(dir.path(), leases());
        let text = format!(
            "[identity]\ntunneld-socket = \"tunneld.sock\"\ntimeout = 2\n\
             [[applications]]\nname = \"app\"\naddress = \"{APP}\"\n\
             backend = {{ url = \"http://{}/\" }}\n{extra}\n",
            backend.address
        );
        let config = Config::parse(&text, &dir.path().join("wap-adapter.toml")).unwrap();
        let resolver = Arc::new(Resolver::new(&config.identity));
        let adapter = Arc::new(Adapter::new(
            &config.applications[0],
            config.limits,
            resolver,
        ));
        let server = HttpServer::bind(
            "[::1]:0".parse().unwrap(),
            false,
            Arc::clone(&adapter),
            config.limits,
            Arc::new(ServerCounters::default()),
        )
        .await
        .unwrap();
        let address = server.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let served = tokio::spawn(server.serve(stopped));
        Served {
            address,
            adapter,
            stop,
            served,
            _tunneld: tunneld,
            _dir: dir,
        }
    }

    fn counter(&self, name: &str) -> u64 {
        counter(&self.adapter, name)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        self.served.abort();
    }
}

fn counter(adapter: &Adapter, name: &str) -> u64 {
    adapter
        .counters()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no counter {name}"))
        .value
}

/// A response as the raw client read it; the body as bytes.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn vary(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("vary"))
            .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_owned()))
            .collect()
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    /// The status is 200, `Content-Length` is the body's and the type is
    /// `content_type`.
    fn expect(&self, content_type: &str) {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.header("content-type"), Some(content_type), "{self:?}");
        assert_eq!(
            self.header("content-length"),
            Some(self.body.len().to_string().as_str())
        );
    }
}

/// GETs `path` with `Host: app.example` and `headers`; reads until the
/// server closes.
async fn get(address: SocketAddr, path: &str, headers: &str) -> Answer {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: app.example\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("answer within 30 s")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_owned(), v.trim().to_owned())
        })
        .collect();
    Answer {
        status,
        headers,
        body,
    }
}

/// The compiled size of `deck` (UTF-8, string table), which must compile.
fn compiled_len(deck: &str) -> usize {
    compile_wml(deck.as_bytes(), &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{e}: {deck}"))
        .len()
}

/// Checks `deck` against the WML 1.3 DTD when xmllint is installed.
fn assert_valid(dir: &Path, deck: &str) {
    if let Some(verdict) = wml_dtd_common::xmllint_valid(dir, deck) {
        verdict.unwrap_or_else(|e| panic!("{e}\n{deck}"));
    }
}

/// The adapter-relative link to the next card in `deck`, unescaped.
fn next_link(deck: &str) -> Option<String> {
    let end = deck.find("\">Next &gt;&gt;</a>")?;
    let start = deck[..end].rfind("href=\"")? + "href=\"".len();
    Some(deck[start..end].replace("&amp;", "&"))
}

/// The cards the library makes of `page`, served at `url`.
fn library_cards(page: &[u8], url: &str, sdu: usize, charset: Charset) -> Vec<String> {
    html_to_wml_cards(
        page,
        url,
        CARD_PARAM,
        &Html2WmlOptions::with_max_card_size(sdu),
        &WbxmlSize(CompileOptions {
            charset,
            string_table: true,
        }),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_to_a_wml_client_gives_cards_within_the_sdu_each_served_by_its_card_parameter() {
    if !Path::new(XMLLINT).exists() {
        netns_tests::skip(
            "html_to_a_wml_client_gives_cards_within_the_sdu_each_served_by_its_card_parameter",
            "xmllint is not installed: cards are checked compiled, not against the DTD",
        );
    }
    let backend = ContentBackend::start().await;
    let front = Served::start(&backend, "sdu-size = 600").await;
    let dir = tempfile::tempdir().unwrap();
    let expected = library_cards(
        &corpus("html", "news.html"),
        "http://app.example/news?lang=en",
        600,
        Charset::Utf8,
    );
    assert!(expected.len() >= 3, "news.html should need cards at 600");

    // Follow the Next links from the first card to the last, as a phone.
    let mut path = "/news?lang=en".to_owned();
    let mut served = Vec::new();
    loop {
        let answer = get(
            front.address,
            &path,
            &format!("{WML_ACCEPT}Accept-Encoding: gzip\r\n"),
        )
        .await;
        answer.expect("text/vnd.wap.wml; charset=utf-8");
        assert_eq!(answer.vary(), ["Accept"]);
        assert_eq!(
            answer.header("accept-ranges"),
            None,
            "stale: the backend's bytes"
        );
        let deck = answer.text();
        let size = compiled_len(&deck);
        assert!(size <= 600, "card {}: {size} bytes", served.len() + 1);
        assert_valid(dir.path(), &deck);
        let next = next_link(&deck);
        served.push(deck);
        match next {
            Some(next) => path = next,
            None => break,
        }
        assert!(
            served.len() <= expected.len(),
            "more cards than the library makes"
        );
    }
    assert_eq!(served, expected);
    assert!(path.contains(&format!("{CARD_PARAM}=")), "{path}");

    // The backend never saw the card parameter nor the Accept-Encoding.
    let seen = backend.seen();
    assert_eq!(seen.len(), expected.len());
    for request in &seen {
        assert_eq!(request.uri, "/news?lang=en");
        assert!(
            !request.headers.iter().any(|(n, _)| n == "accept-encoding"),
            "{request:?}"
        );
    }
    assert_eq!(
        front.counter("conversion_html2wml_done"),
        expected.len() as u64
    );

    // A card past the end is the last card; an unreadable number the first.
    let last = get(front.address, "/news?lang=en&_card=99", WML_ACCEPT).await;
    assert_eq!(last.text(), *expected.last().unwrap());
    let first = get(front.address, "/news?_card=x&lang=en", WML_ACCEPT).await;
    assert_eq!(first.text(), expected[0]);

    // A big page: a card from the middle.
    let article = library_cards(
        &corpus("html", "article.html"),
        "http://app.example/article",
        600,
        Charset::Utf8,
    );
    assert!(article.len() > 20, "{} cards", article.len());
    let middle = article.len() / 2;
    let answer = get(
        front.address,
        &format!("/article?_card={middle}"),
        WML_ACCEPT,
    )
    .await;
    answer.expect("text/vnd.wap.wml; charset=utf-8");
    assert_eq!(answer.text(), article[middle - 1]);
    assert!(compiled_len(&answer.text()) <= 600);

    // XHTML is HTML too; its ETag described the backend's bytes.
    let answer = get(front.address, "/xhtml", WML_ACCEPT).await;
    answer.expect("text/vnd.wap.wml; charset=utf-8");
    assert!(answer.text().contains("xhtml page"), "{}", answer.text());
    assert_eq!(answer.header("etag"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wmlc_client_gets_compiled_cards_in_the_charset_it_accepts() {
    let backend = ContentBackend::start().await;
    let front = Served::start(&backend, "").await;
    let page = corpus("html", "news.html");
    for (accept_charset, charset) in [
        ("", Charset::Utf8),
        ("Accept-Charset: utf-8, iso-8859-1;q=0.5\r\n", Charset::Utf8),
        ("Accept-Charset: iso-8859-1\r\n", Charset::Iso8859_1),
    ] {
        let answer = get(
            front.address,
            "/news?_card=2",
            &format!("{WMLC_ACCEPT}{accept_charset}"),
        )
        .await;
        answer.expect("application/vnd.wap.wmlc");
        assert_eq!(answer.vary(), ["Accept", "Accept-Charset"]);
        let document = decode(&answer.body).unwrap();
        assert_eq!(document.charset, charset, "{accept_charset:?}");
        assert!(answer.body.len() <= 1400, "{} bytes", answer.body.len());
        let cards = library_cards(&page, "http://app.example/news", 1400, charset);
        assert!(cards.len() >= 2);
        let options = CompileOptions {
            charset,
            string_table: true,
        };
        assert_eq!(
            answer.body,
            compile_wml(cards[1].as_bytes(), &options).unwrap(),
            "{accept_charset:?}"
        );
        let text = decompile(&answer.body).unwrap();
        assert!(text.contains("<card id=\"c2\""), "{text}");
    }
    assert_eq!(front.counter("conversion_wbxml_done"), 3);
    assert_eq!(front.counter("conversion_html2wml_done"), 3);

    // A WML application: compiled for a WMLC client, untouched for a WML
    // client.
    let deck = corpus("wml", "forms.wml");
    let answer = get(front.address, "/deck", WMLC_ACCEPT).await;
    answer.expect("application/vnd.wap.wmlc");
    assert_eq!(
        answer.body,
        compile_wml(&deck, &CompileOptions::default()).unwrap()
    );
    let answer = get(front.address, "/deck", WML_ACCEPT).await;
    answer.expect("text/vnd.wap.wml");
    assert_eq!(answer.body, deck);
    assert_eq!(answer.vary(), ["Accept"]);
    assert_eq!(front.counter("conversion_wbxml_done"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_reaching_a_wml_application_gets_html() {
    let backend = ContentBackend::start().await;
    let front = Served::start(&backend, "").await;
    let deck = corpus("wml", "forms.wml");
    for accept in [BROWSER_ACCEPT, "Accept: */*\r\n", ""] {
        let answer = get(front.address, "/deck?user=ann", accept).await;
        answer.expect("text/html; charset=utf-8");
        assert_eq!(
            answer.text(),
            wml_to_html(&deck, "http://app.example/deck?user=ann").unwrap(),
            "{accept:?}"
        );
        assert_eq!(answer.vary(), ["Accept"]);
    }
    assert_eq!(front.counter("conversion_wml2html_done"), 3);
    // A browser's HTML is the backend's.
    let answer = get(front.address, "/news", BROWSER_ACCEPT).await;
    answer.expect("text/html; charset=utf-8");
    assert_eq!(answer.body, corpus("html", "news.html"));
    assert_eq!(answer.vary(), ["Accept"]);
    assert_eq!(front.counter("conversion_html2wml_done"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversions_turned_off_pass_bodies_through_and_count() {
    let backend = ContentBackend::start().await;
    let front = Served::start(
        &backend,
        "[applications.conversions]\nhtml2wml = false\nwml2html = false\nwbxml = false\n",
    )
    .await;
    let answer = get(front.address, "/news?_card=2", WML_ACCEPT).await;
    answer.expect("text/html; charset=utf-8");
    assert_eq!(answer.body, corpus("html", "news.html"));
    assert_eq!(front.counter("conversion_html2wml_off"), 1);
    let answer = get(front.address, "/deck", BROWSER_ACCEPT).await;
    answer.expect("text/vnd.wap.wml");
    assert_eq!(answer.body, corpus("wml", "forms.wml"));
    assert_eq!(front.counter("conversion_wml2html_off"), 1);
    let answer = get(front.address, "/deck", WMLC_ACCEPT).await;
    answer.expect("text/vnd.wap.wml");
    assert_eq!(answer.body, corpus("wml", "forms.wml"));
    assert_eq!(front.counter("conversion_wbxml_off"), 1);
    for name in ["html2wml", "wml2html", "wbxml"] {
        assert_eq!(front.counter(&format!("conversion_{name}_done")), 0);
    }

    // html2wml on, wbxml off: a WMLC client gets WML text.
    let backend = ContentBackend::start().await;
    let front = Served::start(&backend, "[applications.conversions]\nwbxml = false\n").await;
    let answer = get(front.address, "/news", WMLC_ACCEPT).await;
    answer.expect("text/vnd.wap.wml; charset=utf-8");
    assert!(compiled_len(&answer.text()) <= 1400);
    assert_eq!(front.counter("conversion_wbxml_off"), 1);
    assert_eq!(front.counter("conversion_html2wml_done"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_html_still_gives_well_formed_valid_wml() {
    let backend = ContentBackend::start().await;
    let front = Served::start(&backend, "sdu-size = 576").await;
    let dir = tempfile::tempdir().unwrap();
    let mut path = "/broken".to_owned();
    let mut cards = 0;
    loop {
        let answer = get(front.address, &path, WML_ACCEPT).await;
        answer.expect("text/vnd.wap.wml; charset=utf-8");
        let deck = answer.text();
        assert!(compiled_len(&deck) <= 576);
        assert_valid(dir.path(), &deck);
        assert!(!deck.contains("\u{1}"), "{deck}");
        cards += 1;
        match next_link(&deck) {
            Some(next) => path = next,
            None => break,
        }
        assert!(cards < 20);
    }
    // And compiled, it decodes.
    let answer = get(front.address, "/broken", WMLC_ACCEPT).await;
    answer.expect("application/vnd.wap.wmlc");
    decode(&answer.body).unwrap();
    assert_eq!(front.counter("conversion_html2wml_failed"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_bodies_pass_untouched_and_failed_conversions_give_502() {
    let backend = ContentBackend::start().await;
    let front = Served::start(&backend, "").await;
    for (path, content_type) in [("/image", "image/png"), ("/json", "application/json")] {
        let expected = routes().get(path).unwrap().2.clone();
        for accept in [WML_ACCEPT, WMLC_ACCEPT, BROWSER_ACCEPT] {
            let answer = get(front.address, path, accept).await;
            answer.expect(content_type);
            assert_eq!(answer.body, expected, "{path} {accept:?}");
            assert!(answer.vary().is_empty(), "{path}: {answer:?}");
            assert_eq!(answer.header("accept-ranges"), Some("bytes"));
        }
    }
    // The backend's 404 page is plain text: untouched.
    let answer = get(front.address, "/nowhere", WML_ACCEPT).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.body, b"no such page");

    // Malformed WML cannot be compiled nor converted: 502, counted.
    let answer = get(front.address, "/bad-deck", WMLC_ACCEPT).await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert_eq!(front.counter("conversion_wbxml_failed"), 1);
    let answer = get(front.address, "/bad-deck", BROWSER_ACCEPT).await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert_eq!(front.counter("conversion_wml2html_failed"), 1);
    // Sent as is to a client that reads WML text.
    let answer = get(front.address, "/bad-deck", WML_ACCEPT).await;
    assert_eq!(answer.status, 200);
    // A compressed page cannot be converted.
    let answer = get(front.address, "/gzip", WML_ACCEPT).await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert_eq!(front.counter("conversion_html2wml_failed"), 1);
    // HEAD: nothing converted.
    let mut stream = TcpStream::connect(front.address).await.unwrap();
    stream
        .write_all(
            format!("HEAD /news HTTP/1.1\r\nHost: a\r\n{WML_ACCEPT}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("content-type: text/html"),
        "{raw}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wap_clients_sdu_size_bounds_its_cards() {
    let backend = ContentBackend::start().await;
    // The application's default SDU size is 1400.
    let front = Served::start(&backend, "").await;
    let origin = Origin {
        source: format!("[{ALICE}]:49152").parse().unwrap(),
        destination: format!("[{APP}]:9201").parse().unwrap(),
        front: Front::Wap,
    };
    let page = corpus("html", "news.html");
    let url = format!("http://[{APP}]:9201/news");
    for (client, bound) in [
        // A WAP client's SDU holds the whole WSP Reply: the card gets the
        // SDU less the Reply's margin.
        (Some(WapClient { sdu_size: 600 }), 600 - WSP_REPLY_MARGIN),
        (Some(WapClient { sdu_size: 0 }), 1400),
        (None, 1400),
    ] {
        let expected = library_cards(&page, &url, bound, Charset::Utf8);
        for card in 1..=expected.len() {
            let mut request = http::Request::builder()
                .uri(format!("/news?_card={card}"))
                .body(Bytes::new())
                .unwrap();
            if let Some(client) = client {
                request.extensions_mut().insert(client);
            }
            let response = front.adapter.handle(request, origin).await;
            assert_eq!(response.status(), 200, "{client:?} card {card}");
            assert_eq!(
                response.headers()["content-type"],
                "text/vnd.wap.wml; charset=utf-8"
            );
            let deck = std::str::from_utf8(response.body()).unwrap();
            assert!(compiled_len(deck) <= bound, "{client:?} card {card}");
            assert_eq!(deck, expected[card - 1], "{client:?} card {card}");
        }
        if bound < 1400 {
            let larger = library_cards(&page, &url, 1400, Charset::Utf8);
            assert!(expected.len() > larger.len(), "600 bytes needs more cards");
        }
    }
}
