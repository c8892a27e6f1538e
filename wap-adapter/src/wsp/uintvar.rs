//! The variable-length unsigned integer of WAP-230-WSP §8.1.2 ("uintvar"):
//! seven bits per octet, most significant first, the high bit set on every
//! octet but the last; at most five octets for a 32-bit value.

use super::error::{Result, WspError};

/// The longest legal uintvar, in octets.
pub const MAX_LEN: usize = 5;

/// Decode a uintvar at the start of `bytes`: the value and the number of
/// octets it took. `offset` is only used in errors (where `bytes` starts in
/// the enclosing PDU).
pub fn decode(bytes: &[u8], offset: usize) -> Result<(u32, usize)> {
    let mut value: u64 = 0;
    for (i, &octet) in bytes.iter().enumerate() {
        if i == MAX_LEN {
            return Err(WspError::UintvarTooLong { offset });
        }
        value = (value << 7) | u64::from(octet & 0x7f);
        if octet & 0x80 == 0 {
            let value = u32::try_from(value).map_err(|_| WspError::UintvarOverflow { offset })?;
            return Ok((value, i + 1));
        }
    }
    if bytes.len() >= MAX_LEN {
        return Err(WspError::UintvarTooLong { offset });
    }
    Err(WspError::Truncated {
        offset: offset + bytes.len(),
        what: "uintvar",
    })
}

/// Append the uintvar encoding of `value` to `out` (shortest form).
pub fn encode(value: u32, out: &mut Vec<u8>) {
    let len = encoded_len(value);
    for i in (0..len).rev() {
        let septet = ((value >> (7 * i)) & 0x7f) as u8;
        out.push(if i == 0 { septet } else { septet | 0x80 });
    }
}

/// How many octets [`encode`] writes for `value` (1 to 5).
pub fn encoded_len(value: u32) -> usize {
    let bits = 32 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (0x7f, &[0x7f]),
            (0x80, &[0x81, 0x00]),
            (0x3fff, &[0xff, 0x7f]),
            (0x4000, &[0x81, 0x80, 0x00]),
            (1_048_576, &[0xc0, 0x80, 0x00]),
            (u32::MAX, &[0x8f, 0xff, 0xff, 0xff, 0x7f]),
        ];
        for &(value, bytes) in cases {
            let mut out = Vec::new();
            encode(value, &mut out);
            assert_eq!(out, bytes, "{value}");
            assert_eq!(encoded_len(value), bytes.len());
            assert_eq!(decode(bytes, 0), Ok((value, bytes.len())));
        }
    }

    #[test]
    fn malformed() {
        assert_eq!(
            decode(&[0x81, 0x80, 0x80, 0x80, 0x80, 0x00], 3),
            Err(WspError::UintvarTooLong { offset: 3 })
        );
        assert_eq!(
            decode(&[0x90, 0x80, 0x80, 0x80, 0x00], 0),
            Err(WspError::UintvarOverflow { offset: 0 })
        );
        assert_eq!(
            decode(&[0x81, 0x80], 0),
            Err(WspError::Truncated {
                offset: 2,
                what: "uintvar"
            })
        );
        assert!(matches!(decode(&[], 0), Err(WspError::Truncated { .. })));
        // Non-minimal (leading 0x80) is accepted: the spec does not forbid it.
        assert_eq!(decode(&[0x80, 0x05], 0), Ok((5, 2)));
    }

    #[test]
    fn round_trip_every_length() {
        for shift in 0..32 {
            for value in [
                1u32 << shift,
                (1u32 << shift).wrapping_sub(1),
                (1u32 << shift) | 1,
            ] {
                let mut out = Vec::new();
                encode(value, &mut out);
                assert_eq!(decode(&out, 0), Ok((value, out.len())));
            }
        }
    }
}
