//! The framing every Runnel listener speaks (design §6), as a pure codec.
//!
//! All integers are big-endian, as in Kafka. A frame is a `u32` length
//! (not counting itself), then a header, then the body:
//!
//! ```text
//! request:  length u32 | api_key u16 | api_version u16 | correlation_id u32
//!           | client_id_len u16 | client_id (UTF-8) | body
//! response: length u32 | correlation_id u32 | kind u8 | body
//! ```
//!
//! The length is checked against the receiver's maximum before anything is
//! allocated for the frame. Two api keys are reserved for the transport's
//! own control frames on a streaming exchange: [`API_CREDIT`] (body: `u32`
//! more responses the receiver will accept) and [`API_CANCEL`] (empty body).

use crate::WireError;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;
/// Fixed part of a request header, before the client id's bytes.
pub const REQUEST_HEADER_FIXED_LEN: usize = 10;
/// A response header.
pub const RESPONSE_HEADER_LEN: usize = 5;
/// Longest client id: it is a label for logs, not data.
pub const CLIENT_ID_MAX_LEN: usize = 255;

/// Grants the server more responses on a stream (body: `u32` count).
pub const API_CREDIT: u16 = 0xFFFE;
/// Ends a stream early from the requesting side (empty body).
pub const API_CANCEL: u16 = 0xFFFF;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: u16,
    pub api_version: u16,
    pub correlation_id: u32,
    pub client_id: String,
}

/// What a response frame is to its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// The one response to a unary request; it ends the exchange.
    Reply = 0,
    /// One response of a stream; more may follow.
    Item = 1,
    /// The stream is over; the body says why (an empty success or an error).
    End = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    pub correlation_id: u32,
    pub kind: ResponseKind,
}

/// Reads a frame's length prefix and checks it: at least `min_len` (the
/// shortest header) and at most `max_len`. Call this before allocating.
pub fn frame_length(
    prefix: [u8; LENGTH_PREFIX_LEN],
    min_len: usize,
    max_len: usize,
) -> Result<usize, WireError> {
    let length = u32::from_be_bytes(prefix) as usize;
    if length < min_len || length > max_len {
        return Err(WireError::FrameLength {
            length: length as u64,
            min: min_len,
            max: max_len,
        });
    }
    Ok(length)
}

impl RequestHeader {
    pub fn encoded_len(&self) -> usize {
        REQUEST_HEADER_FIXED_LEN + self.client_id.len()
    }

    /// Appends the header; the caller writes the length prefix.
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(
            self.client_id.len() <= CLIENT_ID_MAX_LEN,
            "client id is bounded by its constructor"
        );
        out.extend_from_slice(&self.api_key.to_be_bytes());
        out.extend_from_slice(&self.api_version.to_be_bytes());
        out.extend_from_slice(&self.correlation_id.to_be_bytes());
        out.extend_from_slice(&(self.client_id.len() as u16).to_be_bytes());
        out.extend_from_slice(self.client_id.as_bytes());
    }

    /// Decodes the header at the start of a frame (after its length
    /// prefix); returns it and where the body starts.
    pub fn decode(frame: &[u8]) -> Result<(RequestHeader, usize), WireError> {
        let fixed = take(frame, 0, REQUEST_HEADER_FIXED_LEN)?;
        let client_id_len = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        if client_id_len > CLIENT_ID_MAX_LEN {
            return Err(WireError::ClientIdTooLong(client_id_len));
        }
        let client_id = take(frame, REQUEST_HEADER_FIXED_LEN, client_id_len)?;
        let client_id = std::str::from_utf8(client_id)
            .map_err(|_| WireError::ClientIdNotUtf8)?
            .to_string();
        let header = RequestHeader {
            api_key: u16::from_be_bytes([fixed[0], fixed[1]]),
            api_version: u16::from_be_bytes([fixed[2], fixed[3]]),
            correlation_id: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
            client_id,
        };
        Ok((header, REQUEST_HEADER_FIXED_LEN + client_id_len))
    }
}

impl ResponseHeader {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.correlation_id.to_be_bytes());
        out.push(self.kind as u8);
    }

    /// Decodes the header at the start of a frame (after its length
    /// prefix); the body starts at [`RESPONSE_HEADER_LEN`].
    pub fn decode(frame: &[u8]) -> Result<ResponseHeader, WireError> {
        let fixed = take(frame, 0, RESPONSE_HEADER_LEN)?;
        let kind = match fixed[4] {
            0 => ResponseKind::Reply,
            1 => ResponseKind::Item,
            2 => ResponseKind::End,
            other => return Err(WireError::UnknownResponseKind(other)),
        };
        Ok(ResponseHeader {
            correlation_id: u32::from_be_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]),
            kind,
        })
    }
}

/// Writes a complete frame: length prefix, `header`, `body`, `tail_len`
/// bytes that the caller sends after it (zero-copy from a file).
pub fn encode_frame(header: &[u8], body: &[u8], tail_len: usize, out: &mut Vec<u8>) {
    let length = header.len() + body.len() + tail_len;
    let length = u32::try_from(length).expect("frames are bounded far below 4 GiB");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(body);
}

fn take(bytes: &[u8], at: usize, len: usize) -> Result<&[u8], WireError> {
    bytes.get(at..at + len).ok_or(WireError::Truncated {
        needed: at + len,
        available: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_header_round_trips() {
        let header = RequestHeader {
            api_key: 51,
            api_version: 0,
            correlation_id: 0xDEAD_BEEF,
            client_id: "consumer-1".to_string(),
        };
        let mut bytes = Vec::new();
        header.encode(&mut bytes);
        bytes.extend_from_slice(b"body");
        assert_eq!(bytes.len(), header.encoded_len() + 4);
        let (decoded, body_at) = RequestHeader::decode(&bytes).unwrap();
        assert_eq!(decoded, header);
        assert_eq!(&bytes[body_at..], b"body");
    }

    #[test]
    fn response_header_round_trips() {
        for kind in [ResponseKind::Reply, ResponseKind::Item, ResponseKind::End] {
            let header = ResponseHeader {
                correlation_id: 7,
                kind,
            };
            let mut bytes = Vec::new();
            header.encode(&mut bytes);
            assert_eq!(bytes.len(), RESPONSE_HEADER_LEN);
            assert_eq!(ResponseHeader::decode(&bytes).unwrap(), header);
        }
    }

    #[test]
    fn bad_headers_are_errors() {
        assert!(matches!(
            RequestHeader::decode(&[0; 9]),
            Err(WireError::Truncated { .. })
        ));
        let mut long_id = vec![0; 8];
        long_id.extend_from_slice(&1000u16.to_be_bytes());
        assert_eq!(
            RequestHeader::decode(&long_id),
            Err(WireError::ClientIdTooLong(1000))
        );
        let mut bad_utf8 = vec![0; 8];
        bad_utf8.extend_from_slice(&[0, 1, 0xFF]);
        assert_eq!(
            RequestHeader::decode(&bad_utf8),
            Err(WireError::ClientIdNotUtf8)
        );
        assert_eq!(
            ResponseHeader::decode(&[0, 0, 0, 1, 9]),
            Err(WireError::UnknownResponseKind(9))
        );
    }

    #[test]
    fn frame_length_is_bounded_before_allocation() {
        assert_eq!(frame_length(10u32.to_be_bytes(), 5, 100), Ok(10));
        assert!(frame_length(4u32.to_be_bytes(), 5, 100).is_err());
        assert!(frame_length(101u32.to_be_bytes(), 5, 100).is_err());
        // "GET " from an HTTP client is a 1.2 GB length: refused, not read.
        assert!(frame_length(*b"GET ", 5, 64 << 20).is_err());
    }
}
