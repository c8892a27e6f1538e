//! The demo's own clients: HTTP through the tunnel client's SOCKS5 proxy
//! (by overlay name), and a WSP connectionless Get through its UDP port
//! forward.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use wap_adapter::wsp::pdu::{self, Method, Mode, Pdu};
use wap_adapter::wsp::{EncodingVersion, Headers};

/// Largest answer read.
const MAX_ANSWER: u64 = 1024 * 1024;

/// What came back: status, content type, body.
#[derive(Debug)]
pub struct Answer {
    /// "HTTP/1.1 200 OK", or "WSP 0x20 (HTTP 200)".
    pub status: String,
    /// The HTTP-style status code.
    pub code: u16,
    pub content_type: String,
    pub body: String,
}

/// The SOCKS5 reply codes (RFC 1928 §6).
fn socks_reply(code: u8) -> &'static str {
    match code {
        1 => "general failure",
        2 => "not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable (unknown overlay name?)",
        5 => "connection refused",
        6 => "TTL expired (timeout)",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown reply",
    }
}

/// `GET path` from `host:80` through the SOCKS5 proxy at `socks`, the name
/// resolved by the proxy (as `curl --socks5-hostname` does).
pub fn http_get_via_socks(
    socks: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let mut conn = TcpStream::connect_timeout(&socks, timeout)
        .with_context(|| format!("connecting to the SOCKS5 proxy {socks}"))?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    conn.write_all(&[5, 1, 0])?;
    let mut method = [0u8; 2];
    conn.read_exact(&mut method)
        .context("reading the SOCKS5 method")?;
    if method != [5, 0] {
        bail!("the SOCKS5 proxy refused the greeting: {method:?}");
    }
    let name = u8::try_from(host.len()).map_err(|_| anyhow!("host name too long"))?;
    let mut request = vec![5, 1, 0, 3, name];
    request.extend_from_slice(host.as_bytes());
    request.extend_from_slice(&80u16.to_be_bytes());
    conn.write_all(&request)?;
    let mut reply = [0u8; 4];
    conn.read_exact(&mut reply)
        .context("reading the SOCKS5 reply")?;
    if reply[1] != 0 {
        bail!(
            "SOCKS5 CONNECT to {host}:80 failed: {} (reply {})",
            socks_reply(reply[1]),
            reply[1]
        );
    }
    let bound = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            conn.read_exact(&mut len)?;
            usize::from(len[0]) + 2
        }
        other => bail!("SOCKS5 reply with address type {other}"),
    };
    let mut skip = vec![0u8; bound];
    conn.read_exact(&mut skip)?;
    conn.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: permanet-demo\r\n\
             Accept: text/html\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let mut raw = Vec::new();
    conn.take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .context("reading the HTTP answer")?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP head in {} bytes", raw.len()))?;
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().to_owned();
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP status line: {status:?}"))?;
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    Ok(Answer {
        status,
        code,
        content_type,
        body: body.to_owned(),
    })
}

/// A connectionless WSP Get of `uri` (WML text accepted) sent to `to`
/// (the UDP port forward), resent every second until the Reply with its
/// TID comes back or `timeout` passes.
pub fn wsp_get(to: SocketAddr, uri: &str, timeout: Duration) -> anyhow::Result<Answer> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("binding a UDP socket")?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let tid = 0x2a;
    let mut headers = Headers::new();
    headers.push("Accept", "text/vnd.wap.wml");
    headers.push("User-Agent", "permanet-demo");
    let get = Pdu::Get {
        method: Method::Get,
        uri: uri.to_owned(),
        headers,
    };
    let request = pdu::encode(&get, Some(tid), EncodingVersion::V1_2)
        .map_err(|e| anyhow!("encoding the WSP Get: {e}"))?;
    let end = Instant::now() + timeout;
    let mut buf = vec![0u8; 65_536];
    let mut last_error = None;
    while Instant::now() < end {
        if crate::interrupted() {
            bail!("interrupted (Ctrl-C or SIGTERM)");
        }
        socket
            .send_to(&request, to)
            .with_context(|| format!("sending to {to}"))?;
        let len = match socket.recv_from(&mut buf) {
            Ok((len, _)) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e).context("receiving the WSP Reply"),
        };
        let decoded = match pdu::decode(buf.get(..len).unwrap_or_default(), Mode::Connectionless) {
            Ok(decoded) => decoded,
            Err(e) => {
                last_error = Some(anyhow!("an undecodable WSP datagram: {e}"));
                continue;
            }
        };
        if decoded.tid != Some(tid) {
            continue;
        }
        return match decoded.pdu {
            Pdu::Reply {
                status,
                content_type,
                data,
                ..
            } => {
                let code = wap_adapter::wsp::status::wsp_to_http(status);
                Ok(Answer {
                    status: format!("WSP Reply, status 0x{status:02x} (HTTP {code})"),
                    code,
                    content_type,
                    body: String::from_utf8_lossy(&data).into_owned(),
                })
            }
            other => Err(anyhow!(
                "not a WSP Reply: PDU type 0x{:02x}",
                other.pdu_type()
            )),
        };
    }
    Err(last_error.unwrap_or_else(|| {
        anyhow!(
            "no WSP Reply within {} s (datagrams to {to} resent every second)",
            timeout.as_secs()
        )
    }))
}
