//! Identifiers: ULIDs (26 characters, Crockford base32).

use std::fmt;
use std::str::FromStr;
use ulid::Ulid;

macro_rules! ulid_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The id of ", $what, ".")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Ulid);

        impl $name {
            pub fn new(ulid: Ulid) -> Self {
                Self(ulid)
            }

            pub fn ulid(self) -> Ulid {
                self.0
            }

            /// Parse the canonical 26-character form.
            pub fn parse(s: &str) -> Option<Self> {
                // A first character above '7' would overflow 128 bits.
                if s.len() != 26 || !matches!(s.as_bytes()[0], b'0'..=b'7') {
                    return None;
                }
                Ulid::from_str(s).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

ulid_id!(EventId, "an event");
ulid_id!(ReceiverId, "an event receiver");
ulid_id!(GroupId, "an event receiver group");
ulid_id!(MessageId, "an outbox message");
ulid_id!(CompletionId, "a recorded group completion");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_canonical_ulids() {
        let id = EventId::new(Ulid::new());
        assert_eq!(EventId::parse(&id.to_string()), Some(id));
        assert_eq!(EventId::parse("not-a-ulid"), None);
        assert_eq!(EventId::parse(""), None);
        // 26 chars but overflowing the 128-bit range.
        assert_eq!(EventId::parse("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"), None);
    }
}
