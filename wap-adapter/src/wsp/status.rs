//! HTTP ↔ WSP status codes (WAP-230-WSP §8.2.2.3, Table 36).
//!
//! The assigned codes map one to one. Codes without an assignment map to
//! the nearest meaning in their class:
//! - HTTP → WSP: 307 → 0x32 (302 Found), 308 → 0x31 (301 Moved
//!   Permanently), 418–499 and other unassigned 4xx → 0x40 (Bad Request),
//!   506–599 → 0x60 (Internal Server Error), unassigned 1xx → 0x10
//!   (Continue), 2xx → 0x20 (OK), 3xx → 0x30 (Multiple Choices); anything
//!   outside 100–599 → 0x60.
//! - WSP → HTTP: an unassigned code maps to the first code of its class by
//!   its high nibble (0x1_ → 100, 0x2_ → 200, 0x3_ → 300, 0x4_ and 0x5_ →
//!   400, 0x6_ and 0x7_ → 500); 0x00–0x0F and 0x80 and above → 500.

/// The WSP status for `http` (see the module documentation for codes
/// without an assignment).
pub fn http_to_wsp(http: u16) -> u8 {
    match http {
        100..=101 => 0x10 + (http - 100) as u8,
        200..=206 => 0x20 + (http - 200) as u8,
        300..=305 => 0x30 + (http - 300) as u8,
        307 => 0x32,
        308 => 0x31,
        400..=417 => 0x40 + (http - 400) as u8,
        500..=505 => 0x60 + (http - 500) as u8,
        102..=199 => 0x10,
        207..=299 => 0x20,
        306..=399 => 0x30,
        418..=499 => 0x40,
        _ => 0x60,
    }
}

/// The HTTP status for WSP status `wsp` (see the module documentation for
/// codes without an assignment).
pub fn wsp_to_http(wsp: u8) -> u16 {
    let low = u16::from(wsp & 0x0f);
    match wsp {
        0x10..=0x11 => 100 + low,
        0x20..=0x26 => 200 + low,
        0x30..=0x35 => 300 + low,
        0x40..=0x4f => 400 + low,
        0x50..=0x51 => 416 + u16::from(wsp - 0x50),
        0x60..=0x65 => 500 + low,
        0x12..=0x1f => 100,
        0x27..=0x2f => 200,
        0x36..=0x3f => 300,
        0x52..=0x5f => 400,
        0x66..=0x7f => 500,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table 36, written out.
    const TABLE: &[(u16, u8)] = &[
        (100, 0x10),
        (101, 0x11),
        (200, 0x20),
        (201, 0x21),
        (202, 0x22),
        (203, 0x23),
        (204, 0x24),
        (205, 0x25),
        (206, 0x26),
        (300, 0x30),
        (301, 0x31),
        (302, 0x32),
        (303, 0x33),
        (304, 0x34),
        (305, 0x35),
        (400, 0x40),
        (401, 0x41),
        (402, 0x42),
        (403, 0x43),
        (404, 0x44),
        (405, 0x45),
        (406, 0x46),
        (407, 0x47),
        (408, 0x48),
        (409, 0x49),
        (410, 0x4a),
        (411, 0x4b),
        (412, 0x4c),
        (413, 0x4d),
        (414, 0x4e),
        (415, 0x4f),
        (416, 0x50),
        (417, 0x51),
        (500, 0x60),
        (501, 0x61),
        (502, 0x62),
        (503, 0x63),
        (504, 0x64),
        (505, 0x65),
    ];

    #[test]
    fn table_36_both_ways() {
        for &(http, wsp) in TABLE {
            assert_eq!(http_to_wsp(http), wsp, "{http}");
            assert_eq!(wsp_to_http(wsp), http, "{wsp:#x}");
        }
    }

    #[test]
    fn unassigned_codes() {
        assert_eq!(http_to_wsp(307), 0x32);
        assert_eq!(http_to_wsp(308), 0x31);
        assert_eq!(http_to_wsp(429), 0x40);
        assert_eq!(http_to_wsp(511), 0x60);
        assert_eq!(http_to_wsp(226), 0x20);
        assert_eq!(http_to_wsp(0), 0x60);
        assert_eq!(http_to_wsp(999), 0x60);
        assert_eq!(wsp_to_http(0x27), 200);
        assert_eq!(wsp_to_http(0x52), 400);
        assert_eq!(wsp_to_http(0x70), 500);
        assert_eq!(wsp_to_http(0x00), 500);
        assert_eq!(wsp_to_http(0xff), 500);
        // Every code maps to a valid HTTP status and back into its class.
        for wsp in 0..=255u8 {
            let http = wsp_to_http(wsp);
            assert!((100..600).contains(&http));
            assert_eq!(wsp_to_http(http_to_wsp(http)) / 100, http / 100);
        }
    }
}
