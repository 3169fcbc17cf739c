//! Zig-zag variable-length integers as Kafka's record format uses them.
//! Decoders reject encodings longer than the type allows, so a run of
//! continuation bytes cannot make us loop or overflow.

use crate::WireError;

const VARINT_MAX_BYTES: usize = 5;
const VARLONG_MAX_BYTES: usize = 10;

pub(crate) fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_unsigned(out, ((value << 1) ^ (value >> 31)) as u32 as u64);
}

pub(crate) fn put_varlong(out: &mut Vec<u8>, value: i64) {
    put_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_unsigned(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(crate) fn varint_len(value: i32) -> usize {
    unsigned_len(((value << 1) ^ (value >> 31)) as u32 as u64)
}

pub(crate) fn varlong_len(value: i64) -> usize {
    unsigned_len(((value << 1) ^ (value >> 63)) as u64)
}

fn unsigned_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads a zig-zag varint from the front of `input`, advancing it.
#[inline]
pub(crate) fn get_varint(input: &mut &[u8]) -> Result<i32, WireError> {
    let raw = get_unsigned(input, VARINT_MAX_BYTES)?;
    let raw = u32::try_from(raw).map_err(|_| WireError::VarintTooLong(VARINT_MAX_BYTES))?;
    Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

/// Reads a zig-zag varlong from the front of `input`, advancing it.
#[inline]
pub(crate) fn get_varlong(input: &mut &[u8]) -> Result<i64, WireError> {
    let raw = get_unsigned(input, VARLONG_MAX_BYTES)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

#[inline]
fn get_unsigned(input: &mut &[u8], max_bytes: usize) -> Result<u64, WireError> {
    let mut value: u64 = 0;
    for index in 0..max_bytes {
        let Some(&byte) = input.get(index) else {
            return Err(WireError::Truncated {
                needed: index + 1,
                available: input.len(),
            });
        };
        let shift = 7 * index as u32;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(WireError::VarintTooLong(max_bytes));
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            *input = &input[index + 1..];
            return Ok(value);
        }
    }
    Err(WireError::VarintTooLong(max_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let cases: [(i64, &[u8]); 6] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (-65, &[0x81, 0x01]),
            (300, &[0xd8, 0x04]),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            assert_eq!(out, bytes, "{value}");
        }
    }

    #[test]
    fn overlong_encodings_are_rejected() {
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(get_varint(&mut input), Err(WireError::VarintTooLong(5)));
        let mut input: &[u8] = &[0xff; 11];
        assert_eq!(get_varlong(&mut input), Err(WireError::VarintTooLong(10)));
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(get_varint(&mut input), Err(WireError::VarintTooLong(5)));
        let mut input: &[u8] = &[0x80];
        assert!(matches!(
            get_varint(&mut input),
            Err(WireError::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn varint_round_trip(value in any::<i32>()) {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            prop_assert_eq!(out.len(), varint_len(value));
            let mut input = out.as_slice();
            prop_assert_eq!(get_varint(&mut input), Ok(value));
            prop_assert!(input.is_empty());
        }

        #[test]
        fn varlong_round_trip(value in any::<i64>()) {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            prop_assert_eq!(out.len(), varlong_len(value));
            let mut input = out.as_slice();
            prop_assert_eq!(get_varlong(&mut input), Ok(value));
            prop_assert!(input.is_empty());
        }
    }
}
