//! The trace context a write was made in, carried to the messages it
//! causes (the CloudEvents distributed-tracing extension's `traceparent`).

use std::fmt;

/// A W3C Trace Context `traceparent` of version `00`:
/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, lower case, with
/// neither id all zeros. Only such values can be held.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent([u8; 55]);

impl TraceParent {
    /// The value naming span `span_id` of trace `trace_id`; `None` when
    /// either id is zero (W3C: invalid).
    pub fn new(trace_id: u128, span_id: u64, sampled: bool) -> Option<Self> {
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        hex_into(&mut out[3..35], &trace_id.to_be_bytes());
        hex_into(&mut out[36..52], &span_id.to_be_bytes());
        hex_into(&mut out[53..55], &[u8::from(sampled)]);
        Some(Self(out))
    }

    /// Parse a stored or received value; `None` unless it is exactly a
    /// valid version-`00` `traceparent`.
    pub fn parse(text: &str) -> Option<Self> {
        let b: &[u8; 55] = text.as_bytes().try_into().ok()?;
        let shaped = b[..3] == *b"00-"
            && b[35] == b'-'
            && b[52] == b'-'
            && [&b[3..35], &b[36..52], &b[53..55]]
                .iter()
                .all(|part| part.iter().all(|&c| LOWER_HEX[usize::from(c)]));
        let zero = b[3..35] == [b'0'; 32] || b[36..52] == [b'0'; 16];
        (shaped && !zero).then_some(Self(*b))
    }

    /// The value's bytes (ASCII), without the UTF-8 check of [`Self::as_str`].
    pub fn as_bytes(&self) -> &[u8; 55] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and dashes are ever written into it.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The 32 hex digits of the trace id.
    pub fn trace_id(&self) -> &str {
        &self.as_str()[3..35]
    }

    /// The 16 hex digits of the span id.
    pub fn span_id(&self) -> &str {
        &self.as_str()[36..52]
    }

    /// The `sampled` flag.
    pub fn sampled(&self) -> bool {
        self.0[54] & 1 == 1
    }
}

/// Which bytes are lower-case hex digits.
static LOWER_HEX: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = matches!(c as u8, b'0'..=b'9' | b'a'..=b'f');
        c += 1;
    }
    t
};

/// Lower-case hex of `bytes` into `out` (twice as long).
pub fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({})", self.as_str())
    }
}

impl serde::Serialize for TraceParent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_from_ids_and_parsed_back() {
        let tp =
            TraceParent::new(0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, true).unwrap();
        assert_eq!(
            tp.as_str(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(TraceParent::parse(tp.as_str()), Some(tp));
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id(), "00f067aa0ba902b7");
        assert!(tp.sampled());
        let unsampled = TraceParent::new(1, 2, false).unwrap();
        assert!(unsampled.as_str().ends_with("-0000000000000002-00"));
        assert!(!unsampled.sampled());
    }

    #[test]
    fn only_valid_values_are_held() {
        assert_eq!(TraceParent::new(0, 1, true), None);
        assert_eq!(TraceParent::new(1, 0, true), None);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
