//! List paging: `limit` (default 100, at most 1000) and opaque cursors.

use crate::extract::QueryMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cairn_store::PageRequest;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
const CURSOR_PREFIX: &str = "cairn1:";

/// A requested page: `limit` rows after the cursor's position.
pub struct Page {
    pub limit: u32,
    pub after: Option<String>,
}

impl Page {
    /// `limit` and `cursor` as GraphQL arguments (`max` is the configured
    /// cap on list sizes), one message per bad argument, worded as REST's.
    pub fn from_args(
        limit: Option<i64>,
        cursor: Option<&str>,
        max: u32,
        errors: &mut Vec<String>,
    ) -> Self {
        let limit = match limit {
            None => DEFAULT_LIMIT.min(max),
            Some(n) => match u32::try_from(n) {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => {
                    errors.push(format!(
                        "limit: must be an integer from 1 to {max}, got {n}"
                    ));
                    DEFAULT_LIMIT.min(max)
                }
            },
        };
        Self {
            limit,
            after: Self::cursor(cursor, errors),
        }
    }

    fn cursor(cursor: Option<&str>, errors: &mut Vec<String>) -> Option<String> {
        match cursor {
            None => None,
            Some(c) => match decode(c) {
                Some(id) => Some(id),
                None => {
                    errors.push("cursor: is not a cursor this server issued".to_owned());
                    None
                }
            },
        }
    }

    /// Parse `limit` and `cursor`, pushing one message per bad parameter.
    pub fn parse(q: &QueryMap, errors: &mut Vec<String>) -> Self {
        let limit = match q.get("limit") {
            None => DEFAULT_LIMIT,
            Some(s) => match s.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    errors.push(format!(
                        "limit: must be an integer from 1 to {MAX_LIMIT}, got {s:?}"
                    ));
                    DEFAULT_LIMIT
                }
            },
        };
        let after = Self::cursor(q.get("cursor"), errors);
        Self { limit, after }
    }

    /// [`Page::parse`] as a result: 400 naming each bad parameter.
    pub fn from_query(q: &QueryMap) -> Result<Self, crate::error::ApiError> {
        let mut errors = Vec::new();
        let page = Self::parse(q, &mut errors);
        if errors.is_empty() {
            Ok(page)
        } else {
            Err(crate::error::ApiError::Invalid(errors))
        }
    }

    /// [`Page::parse_named`] as a result: 400 naming each bad parameter.
    pub fn named_from_query(q: &QueryMap) -> Result<Self, crate::error::ApiError> {
        let mut errors = Vec::new();
        let page = Self::parse_named(q, &mut errors);
        if errors.is_empty() {
            Ok(page)
        } else {
            Err(crate::error::ApiError::Invalid(errors))
        }
    }

    /// As [`Page::parse`] for lists keyed by names rather than ULIDs
    /// (users, roles, keys).
    pub fn parse_named(q: &QueryMap, errors: &mut Vec<String>) -> Self {
        let mut only_limit = q.0.clone();
        only_limit.remove("cursor");
        let limit = Self::parse(&QueryMap(only_limit), errors).limit;
        let after = match q.get("cursor") {
            None => None,
            Some(c) => match decode_named(c) {
                Some(key) => Some(key),
                None => {
                    errors.push("cursor: is not a cursor this server issued".to_owned());
                    None
                }
            },
        };
        Self { limit, after }
    }

    /// As [`Page::finish`], for lists parsed with [`Page::parse_named`].
    pub fn finish_named<T>(
        &self,
        rows: &mut Vec<T>,
        key_of: impl Fn(&T) -> String,
    ) -> Option<String> {
        if rows.len() > self.limit as usize {
            rows.truncate(self.limit as usize);
            rows.last()
                .map(|r| URL_SAFE_NO_PAD.encode(format!("{NAMED_PREFIX}{}", key_of(r))))
        } else {
            None
        }
    }

    /// Ask the store for one row more than the page, to learn if more exist.
    pub fn request(&self) -> PageRequest {
        PageRequest {
            limit: self.limit + 1,
            after: self.after.clone(),
        }
    }

    /// Trim the extra row; the cursor for the next page if there is one.
    pub fn finish<T>(&self, rows: &mut Vec<T>, id_of: impl Fn(&T) -> String) -> Option<String> {
        if rows.len() > self.limit as usize {
            rows.truncate(self.limit as usize);
            rows.last().map(|r| encode(&id_of(r)))
        } else {
            None
        }
    }
}

const NAMED_PREFIX: &str = "cairn1n:";

fn decode_named(cursor: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix(NAMED_PREFIX).map(str::to_owned)
}

fn encode(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{id}"))
}

fn decode(cursor: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let id = text.strip_prefix(CURSOR_PREFIX)?;
    // Every id is a ULID; anything else was not issued here.
    cairn_domain::EventId::parse(id).map(|_| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = "01HZX3J8J4M7Q9V6T2B5N1C0DE";
        assert_eq!(decode(&encode(id)).as_deref(), Some(id));
        assert_eq!(decode("garbage"), None);
        assert_eq!(decode(&URL_SAFE_NO_PAD.encode("cairn1:nope")), None);
    }
}
