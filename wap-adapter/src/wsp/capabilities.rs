//! Session capabilities of the Connect and ConnectReply PDUs
//! (WAP-230-WSP §8.3, Table 37), their encoding, and the server side of
//! their negotiation (§8.3.2).

use super::codec::{self, Reader};
use super::error::{Result, WspError};
use super::uintvar;

/// Capability identifiers (Table 37).
pub mod id {
    /// Client-SDU-Size (uintvar).
    pub const CLIENT_SDU_SIZE: u8 = 0x00;
    /// Server-SDU-Size (uintvar).
    pub const SERVER_SDU_SIZE: u8 = 0x01;
    /// Protocol Options (flag octets).
    pub const PROTOCOL_OPTIONS: u8 = 0x02;
    /// Method-MOR (uint8).
    pub const METHOD_MOR: u8 = 0x03;
    /// Push-MOR (uint8).
    pub const PUSH_MOR: u8 = 0x04;
    /// Extended Methods (PDU type, name pairs).
    pub const EXTENDED_METHODS: u8 = 0x05;
    /// Header Code Pages (page code, name pairs).
    pub const HEADER_CODE_PAGES: u8 = 0x06;
    /// Aliases (redirect addresses).
    pub const ALIASES: u8 = 0x07;
    /// Client-Message-Size (uintvar).
    pub const CLIENT_MESSAGE_SIZE: u8 = 0x08;
    /// Server-Message-Size (uintvar).
    pub const SERVER_MESSAGE_SIZE: u8 = 0x09;
}

/// Protocol Options flags (first octet, §8.3.2.2).
pub mod options {
    /// Push facility.
    pub const PUSH: u8 = 0x80;
    /// Confirmed push facility.
    pub const CONFIRMED_PUSH: u8 = 0x40;
    /// Session resume facility.
    pub const SESSION_RESUME: u8 = 0x20;
    /// Acknowledgement headers.
    pub const ACK_HEADERS: u8 = 0x10;
    /// Large data transfer.
    pub const LARGE_DATA_TRANSFER: u8 = 0x08;
}

/// Default SDU size (octets) when a capability is not negotiated.
pub const DEFAULT_SDU_SIZE: u32 = 1400;

/// The capabilities a Connect proposes or a ConnectReply grants. `None`
/// (or empty) means "not present": the default applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Largest transaction SDU the client can receive (0: no limit).
    pub client_sdu_size: Option<u32>,
    /// Largest transaction SDU the server can receive (0: no limit).
    pub server_sdu_size: Option<u32>,
    /// Protocol Options flags ([`options`]).
    pub protocol_options: Option<u8>,
    /// Maximum outstanding method requests.
    pub method_mor: Option<u8>,
    /// Maximum outstanding push requests.
    pub push_mor: Option<u8>,
    /// Extended methods: PDU type and method name.
    pub extended_methods: Vec<(u8, String)>,
    /// Extra header code pages: page code and name.
    pub header_code_pages: Vec<(u8, String)>,
    /// Aliases: the encoded redirect addresses, kept as octets.
    pub aliases: Option<Vec<u8>>,
    /// Largest message the client can receive (0: no limit).
    pub client_message_size: Option<u32>,
    /// Largest message the server can receive (0: no limit).
    pub server_message_size: Option<u32>,
    /// Capabilities with identifiers this codec does not know: the
    /// encoded identifier and the parameter octets, kept so they can be
    /// counted (a server must not echo them).
    pub unknown: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Capabilities {
    /// Decode a capabilities block (the Capabilities field of Connect,
    /// ConnectReply or Resume). `base` is its offset in the PDU.
    pub fn decode(bytes: &[u8], base: usize) -> Result<Capabilities> {
        let mut caps = Capabilities::default();
        let mut reader = Reader::new(bytes, base);
        while !reader.is_empty() {
            let len_offset = reader.offset();
            let len = reader.uintvar_length()?;
            let mut cap = reader.sub(len, len_offset)?;
            let id_offset = cap.offset();
            let first = cap.peek("capability identifier")?;
            if first & 0x80 == 0 {
                // A Token-text identifier (or a malformed long integer):
                // not one of Table 37.
                let id_octets = if first >= 0x20 {
                    let mut id = cap.nul_terminated()?.to_vec();
                    id.push(0);
                    id
                } else {
                    return Err(WspError::BadValue {
                        offset: id_offset,
                        what: "capability identifier",
                    });
                };
                caps.unknown.push((id_octets, cap.take_rest().to_vec()));
                continue;
            }
            let id = cap.short_integer()?;
            caps.decode_one(id, &mut cap)?;
        }
        Ok(caps)
    }

    /// Decode the parameters of capability `id`.
    fn decode_one(&mut self, id: u8, cap: &mut Reader<'_>) -> Result<()> {
        match id {
            id::CLIENT_SDU_SIZE => self.client_sdu_size = Some(cap.uintvar()?),
            id::SERVER_SDU_SIZE => self.server_sdu_size = Some(cap.uintvar()?),
            id::PROTOCOL_OPTIONS => {
                // Octets past the first are reserved.
                let first = cap.take_rest().first().copied().unwrap_or(0);
                self.protocol_options = Some(first);
            }
            id::METHOD_MOR => self.method_mor = Some(cap.u8("Method-MOR")?),
            id::PUSH_MOR => self.push_mor = Some(cap.u8("Push-MOR")?),
            id::EXTENDED_METHODS => {
                while !cap.is_empty() {
                    let pdu_type = cap.u8("extended method PDU type")?;
                    let name = cap.text_string()?;
                    self.extended_methods.push((pdu_type, name));
                }
            }
            id::HEADER_CODE_PAGES => {
                while !cap.is_empty() {
                    let page = cap.u8("header code page")?;
                    let name = cap.text_string()?;
                    self.header_code_pages.push((page, name));
                }
            }
            id::ALIASES => self.aliases = Some(cap.take_rest().to_vec()),
            id::CLIENT_MESSAGE_SIZE => self.client_message_size = Some(cap.uintvar()?),
            id::SERVER_MESSAGE_SIZE => self.server_message_size = Some(cap.uintvar()?),
            _ => self
                .unknown
                .push((vec![id | 0x80], cap.take_rest().to_vec())),
        }
        Ok(())
    }

    /// Encode the capabilities present, in Table 37 order (unknown ones
    /// last), each as length, Short-integer identifier, parameters.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut put = |id: u8, params: &[u8]| {
            let mut cap = vec![id | 0x80];
            cap.extend_from_slice(params);
            put_capability(&cap, &mut out);
        };
        let uint = |value: u32| {
            let mut v = Vec::new();
            uintvar::encode(value, &mut v);
            v
        };
        if let Some(size) = self.client_sdu_size {
            put(id::CLIENT_SDU_SIZE, &uint(size));
        }
        if let Some(size) = self.server_sdu_size {
            put(id::SERVER_SDU_SIZE, &uint(size));
        }
        if let Some(flags) = self.protocol_options {
            put(id::PROTOCOL_OPTIONS, &[flags]);
        }
        if let Some(mor) = self.method_mor {
            put(id::METHOD_MOR, &[mor]);
        }
        if let Some(mor) = self.push_mor {
            put(id::PUSH_MOR, &[mor]);
        }
        if !self.extended_methods.is_empty() {
            let mut params = Vec::new();
            for (pdu_type, name) in &self.extended_methods {
                params.push(*pdu_type);
                codec::put_text_string(name, &mut params)?;
            }
            put(id::EXTENDED_METHODS, &params);
        }
        if !self.header_code_pages.is_empty() {
            let mut params = Vec::new();
            for (page, name) in &self.header_code_pages {
                params.push(*page);
                codec::put_text_string(name, &mut params)?;
            }
            put(id::HEADER_CODE_PAGES, &params);
        }
        if let Some(aliases) = &self.aliases {
            put(id::ALIASES, aliases);
        }
        if let Some(size) = self.client_message_size {
            put(id::CLIENT_MESSAGE_SIZE, &uint(size));
        }
        if let Some(size) = self.server_message_size {
            put(id::SERVER_MESSAGE_SIZE, &uint(size));
        }
        for (id, params) in &self.unknown {
            let mut cap = id.clone();
            cap.extend_from_slice(params);
            put_capability(&cap, &mut out);
        }
        Ok(out)
    }

    /// The Client-SDU-Size in force: the negotiated value or the default.
    pub fn effective_client_sdu_size(&self) -> u32 {
        self.client_sdu_size.unwrap_or(DEFAULT_SDU_SIZE)
    }

    /// The Server-SDU-Size in force: the negotiated value or the default.
    pub fn effective_server_sdu_size(&self) -> u32 {
        self.server_sdu_size.unwrap_or(DEFAULT_SDU_SIZE)
    }
}

/// Append one capability (`cap` = identifier and parameters) with its
/// uintvar length.
fn put_capability(cap: &[u8], out: &mut Vec<u8>) {
    uintvar::encode(cap.len() as u32, out);
    out.extend_from_slice(cap);
}

/// What this server is willing to grant; the input of [`negotiate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest SDU we are willing to send (caps the Client-SDU-Size;
    /// 0: no limit of ours).
    pub max_client_sdu_size: u32,
    /// Largest SDU we can receive (caps the Server-SDU-Size; 0: none).
    pub max_server_sdu_size: u32,
    /// Protocol Options we support ([`options`] flags).
    pub protocol_options: u8,
    /// Most outstanding methods we accept.
    pub method_mor: u8,
    /// Most outstanding pushes we can have.
    pub push_mor: u8,
    /// Extended methods we implement (by name).
    pub extended_methods: Vec<String>,
    /// Header code pages we understand (by page code).
    pub header_code_pages: Vec<u8>,
}

impl Default for ServerLimits {
    /// No options, no extended methods or code pages, one outstanding
    /// method and push, no SDU limit of our own.
    fn default() -> Self {
        ServerLimits {
            max_client_sdu_size: 0,
            max_server_sdu_size: 0,
            protocol_options: 0,
            method_mor: 1,
            push_mor: 1,
            extended_methods: Vec::new(),
            header_code_pages: Vec::new(),
        }
    }
}

/// The smaller of two sizes where 0 means "no limit".
fn min_size(a: u32, b: u32) -> u32 {
    match (a, b) {
        (0, b) => b,
        (a, 0) => a,
        (a, b) => a.min(b),
    }
}

/// The capabilities a server answers to the client's offer (§8.3.2): each
/// size is the smaller of the offer (or its default) and our limit; the
/// MORs are the smaller of offer (default 1) and limit; Protocol Options
/// are the intersection; extended methods and code pages are the offered
/// ones we support; Aliases and unknown capabilities are never granted.
/// Sizes and MORs are always stated in the reply, other capabilities only
/// when offered.
pub fn negotiate(offer: &Capabilities, limits: &ServerLimits) -> Capabilities {
    Capabilities {
        client_sdu_size: Some(min_size(
            offer.effective_client_sdu_size(),
            limits.max_client_sdu_size,
        )),
        server_sdu_size: Some(min_size(
            offer.effective_server_sdu_size(),
            limits.max_server_sdu_size,
        )),
        protocol_options: offer
            .protocol_options
            .map(|flags| flags & limits.protocol_options),
        method_mor: Some(offer.method_mor.unwrap_or(1).min(limits.method_mor)),
        push_mor: Some(offer.push_mor.unwrap_or(1).min(limits.push_mor)),
        extended_methods: offer
            .extended_methods
            .iter()
            .filter(|(_, name)| {
                limits
                    .extended_methods
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(name))
            })
            .cloned()
            .collect(),
        header_code_pages: offer
            .header_code_pages
            .iter()
            .filter(|(page, _)| limits.header_code_pages.contains(page))
            .cloned()
            .collect(),
        aliases: None,
        client_message_size: offer
            .client_message_size
            .map(|size| min_size(size, limits.max_client_sdu_size)),
        server_message_size: offer
            .server_message_size
            .map(|size| min_size(size, limits.max_server_sdu_size)),
        unknown: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fakewap_offer() {
        // The capabilities of Kannel fakewap's Connect.
        let bytes = [0x04, 0x80, 0xc0, 0x80, 0x00, 0x04, 0x81, 0xc0, 0x80, 0x00];
        let caps = Capabilities::decode(&bytes, 0).unwrap();
        assert_eq!(caps.client_sdu_size, Some(1 << 20));
        assert_eq!(caps.server_sdu_size, Some(1 << 20));
        assert_eq!(caps.encode().unwrap(), bytes);
    }

    #[test]
    fn every_capability_round_trips() {
        let caps = Capabilities {
            client_sdu_size: Some(3000),
            server_sdu_size: Some(0),
            protocol_options: Some(options::PUSH | options::SESSION_RESUME),
            method_mor: Some(2),
            push_mor: Some(3),
            extended_methods: vec![(0x50, "PROPFIND".into()), (0x70, "PROPPATCH".into())],
            header_code_pages: vec![(0x02, "x-test".into())],
            aliases: Some(vec![0x84, 1, 2, 3, 4]),
            client_message_size: Some(100_000),
            server_message_size: Some(200_000),
            unknown: vec![(vec![0x90], vec![1, 2]), (b"x-cap\0".to_vec(), vec![7])],
        };
        let bytes = caps.encode().unwrap();
        assert_eq!(Capabilities::decode(&bytes, 0).unwrap(), caps);
    }

    #[test]
    fn malformed_capabilities() {
        assert!(matches!(
            Capabilities::decode(&[0x05, 0x80, 0x01], 0),
            Err(WspError::LengthBeyondPdu { .. })
        ));
        assert!(Capabilities::decode(&[0x02, 0x80, 0x81], 0).is_err());
        assert!(Capabilities::decode(&[0x03, 0x85, 0x50, 0x41], 0).is_err());
        assert!(Capabilities::decode(&[0x00], 0).is_err());
    }

    #[test]
    fn negotiation() {
        let offer = Capabilities {
            client_sdu_size: Some(1 << 20),
            server_sdu_size: Some(0),
            protocol_options: Some(options::PUSH | options::ACK_HEADERS),
            method_mor: Some(4),
            extended_methods: vec![(0x50, "PROPFIND".into())],
            header_code_pages: vec![(0x02, "x-test".into())],
            aliases: Some(vec![1]),
            unknown: vec![(vec![0x90], vec![])],
            ..Capabilities::default()
        };
        let limits = ServerLimits {
            max_client_sdu_size: 64_000,
            max_server_sdu_size: 8_000,
            protocol_options: options::ACK_HEADERS,
            method_mor: 2,
            ..ServerLimits::default()
        };
        let reply = negotiate(&offer, &limits);
        assert_eq!(reply.client_sdu_size, Some(64_000));
        assert_eq!(reply.server_sdu_size, Some(8_000));
        assert_eq!(reply.protocol_options, Some(options::ACK_HEADERS));
        assert_eq!(reply.method_mor, Some(2));
        assert_eq!(reply.push_mor, Some(1));
        assert!(reply.extended_methods.is_empty());
        assert!(reply.header_code_pages.is_empty());
        assert_eq!(reply.aliases, None);
        assert!(reply.unknown.is_empty());
        // Nothing offered: the defaults, capped by our limits.
        let reply = negotiate(&Capabilities::default(), &ServerLimits::default());
        assert_eq!(reply.client_sdu_size, Some(DEFAULT_SDU_SIZE));
        assert_eq!(reply.server_sdu_size, Some(DEFAULT_SDU_SIZE));
        assert_eq!(reply.protocol_options, None);
    }
}
