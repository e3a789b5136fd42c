//! The first bytes of a connection to `router.sock`. A frame session opens
//! with the polis preamble, `POLIS` 0x00 and a `u16` big-endian version
//! (eight bytes, the length of the start of HTTP/2's client preface,
//! `PRI * HT`); the router answers with its own before any frame. Anything
//! else is taken for HTTP/2, that is gRPC.

/// The preamble's length in bytes.
pub const LEN: usize = 8;

/// The magic that starts the preamble.
pub const MAGIC: &[u8; 6] = b"POLIS\0";

/// The frame-session version this build speaks: the framing (this
/// preamble, then `u32`-length-prefixed protobuf frames), not what the
/// frames mean. It changes only if those bytes change; the meaning of a
/// session is the session protocol, negotiated in `SessionHello` (see
/// [`crate::versions`]). A router refuses another version before any frame.
pub const VERSION: u16 = 1;

/// The preamble announcing `version`.
pub fn encode(version: u16) -> [u8; LEN] {
    let mut bytes = [0; LEN];
    bytes[..MAGIC.len()].copy_from_slice(MAGIC);
    bytes[MAGIC.len()..].copy_from_slice(&version.to_be_bytes());
    bytes
}

/// The version a preamble announces, or `None` when `bytes` is not one.
pub fn decode(bytes: &[u8; LEN]) -> Option<u16> {
    let (magic, version) = bytes.split_at(MAGIC.len());
    (magic == MAGIC).then(|| u16::from_be_bytes([version[0], version[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preamble_round_trips() {
        assert_eq!(decode(&encode(VERSION)), Some(VERSION));
        assert_eq!(&encode(1)[..], b"POLIS\0\0\x01");
    }

    #[test]
    fn the_http2_preface_is_not_a_preamble() {
        let preface: &[u8; LEN] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..LEN].try_into().unwrap();
        assert_eq!(decode(preface), None);
    }
}
