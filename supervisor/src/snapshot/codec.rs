//! The on-disk frame of a snapshot: a fixed header, then the bincode payload.
//!
//! ```text
//! offset  size  field
//! 0       4     magic            b"AIOS"
//! 4       1     format version   FORMAT_VERSION (this header's layout)
//! 5       1     flags            FLAG_QUARANTINED: the payload names a quarantine record
//! 6       2     reserved         zero
//! 8       4     schema version   the actor state's own version, little endian
//! 12      4     payload length   little endian
//! 16      4     crc32            of bytes 0..16 and of the payload, little endian
//! 20      ..    payload
//! ```
//!
//! Every frame is verified when it is read (magic, version, length, checksum) and when it is
//! written (the encoder decodes what it produced before handing it to the store).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The four bytes every snapshot frame starts with.
pub const MAGIC: [u8; 4] = *b"AIOS";
/// The version of the frame layout itself (not of the state inside it).
pub const FORMAT_VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 20;
/// Flag: this frame is a marker left where a corrupt snapshot was quarantined.
pub const FLAG_QUARANTINED: u8 = 0b0000_0001;
/// Upper bound on a payload, so a corrupt length field can never make us allocate gigabytes.
pub const PAYLOAD_LEN_MAX: usize = 256 * 1024 * 1024;

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes than a header.
    #[error("frame is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    Truncated {
        /// The length found.
        len: usize,
    },
    /// The first four bytes are not [`MAGIC`].
    #[error("bad magic {found:?}, expected {MAGIC:?}")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// The header layout is newer than this build understands.
    #[error("frame format version {found} is not supported (this build reads {FORMAT_VERSION})")]
    UnknownFormat {
        /// The version found.
        found: u8,
    },
    /// The length field disagrees with the bytes present.
    #[error("payload length field says {declared} bytes but {present} are present")]
    LengthMismatch {
        /// What the header declares.
        declared: usize,
        /// What is there.
        present: usize,
    },
    /// The checksum does not match: the bytes were changed after they were written.
    #[error("crc32 mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the bytes present.
        computed: u32,
    },
}

/// A verified frame, borrowed from the stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The state's schema version.
    pub schema_version: u32,
    /// Header flags.
    pub flags: u8,
    /// The encoded state (or, with [`FLAG_QUARANTINED`], the quarantine id).
    pub payload: &'a [u8],
}

/// Frames `payload` with a header.
///
/// # Panics
/// If the payload exceeds [`PAYLOAD_LEN_MAX`]: a state that large is a bug in the actor.
pub fn frame(schema_version: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    assert!(
        payload.len() <= PAYLOAD_LEN_MAX,
        "snapshot payload of {} bytes exceeds PAYLOAD_LEN_MAX",
        payload.len()
    );
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(flags);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&schema_version.to_le_bytes());
    // The assert above bounds the length well below u32::MAX.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = checksum(&out[..16], payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    debug_assert!(unframe(&out).is_ok(), "a frame we just wrote must verify");
    out
}

/// Verifies and splits a frame.
///
/// # Errors
/// A [`FrameError`] naming what is wrong; the bytes are never partially trusted.
pub fn unframe(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    if bytes.len() < HEADER_LEN {
        return Err(FrameError::Truncated { len: bytes.len() });
    }
    let magic: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic { found: magic });
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(FrameError::UnknownFormat { found: bytes[4] });
    }
    let flags = bytes[5];
    let schema_version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let declared = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    let stored = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let payload = &bytes[HEADER_LEN..];
    if declared != payload.len() {
        return Err(FrameError::LengthMismatch {
            declared,
            present: payload.len(),
        });
    }
    let computed = checksum(&bytes[..16], payload);
    if computed != stored {
        return Err(FrameError::Checksum { stored, computed });
    }
    Ok(Frame {
        schema_version,
        flags,
        payload,
    })
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(payload);
    h.finalize()
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value with the snapshot encoding (bincode 2, standard configuration).
///
/// Use it in migrations to write the new state.
///
/// # Errors
/// The serializer's error as text (for example a map with non-string keys is fine, but a type
/// whose `Serialize` impl fails is not).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, bincode_config()).map_err(|e| e.to_string())
}

/// Decodes a value written by [`encode`]; trailing bytes are an error.
///
/// Use it in migrations to read the old state.
///
/// # Errors
/// The decoder's error as text.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, read) =
        bincode::serde::decode_from_slice(bytes, bincode_config()).map_err(|e| e.to_string())?;
    if read != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the encoded value",
            bytes.len() - read
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let f = frame(7, 0, b"hello");
        let got = unframe(&f).unwrap();
        assert_eq!(got.schema_version, 7);
        assert_eq!(got.flags, 0);
        assert_eq!(got.payload, b"hello");
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let f = frame(3, 0, b"some state bytes");
        for i in 0..f.len() {
            for bit in 0..8 {
                let mut g = f.clone();
                g[i] ^= 1 << bit;
                assert!(
                    unframe(&g).is_err(),
                    "flip of bit {bit} in byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn truncation_and_extension_are_detected() {
        let f = frame(1, 0, b"abc");
        assert_eq!(unframe(&f[..10]), Err(FrameError::Truncated { len: 10 }));
        assert!(matches!(
            unframe(&f[..f.len() - 1]),
            Err(FrameError::LengthMismatch { .. })
        ));
        let mut g = f.clone();
        g.push(0);
        assert!(matches!(
            unframe(&g),
            Err(FrameError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn bincode_round_trip_and_trailing_bytes() {
        let v = (1u32, String::from("x"), vec![1u8, 2, 3]);
        let mut bytes = encode(&v).unwrap();
        assert_eq!(decode::<(u32, String, Vec<u8>)>(&bytes).unwrap(), v);
        bytes.push(9);
        assert!(decode::<(u32, String, Vec<u8>)>(&bytes).is_err());
    }
}
