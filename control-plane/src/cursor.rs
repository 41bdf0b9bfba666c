//! The one codec for page cursors. Every paged answer is `{items, next_cursor}`; a client
//! passes `next_cursor` back as `cursor` and never looks inside it.
//!
//! Three kinds: a keyset position (`t{micros}_{uuid}`: the time and id of the last item, for
//! lists in time order, which stay stable while rows are added), the same for pairs of images
//! (`p{micros}_{uuid}_{uuid}`), and an offset (`s{n}`, for similarity rankings, which have no
//! stable key).

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Largest offset a similarity cursor may carry.
const MAX_OFFSET: usize = 100_000;

/// A position in a paged answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// After the item with this time and id.
    After(DateTime<Utc>, Uuid),
    /// After this many ranked results.
    Offset(usize),
    /// After the pair with this time and these two ids.
    Pair(DateTime<Utc>, Uuid, Uuid),
}

/// A cursor the API did not hand out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this API returned")]
pub struct BadCursor;

impl Cursor {
    /// The text handed to clients.
    pub fn encode(&self) -> String {
        match self {
            Cursor::After(t, id) => format!("t{}_{}", t.timestamp_micros(), id.simple()),
            Cursor::Offset(n) => format!("s{n}"),
            Cursor::Pair(t, a, b) => {
                format!("p{}_{}_{}", t.timestamp_micros(), a.simple(), b.simple())
            }
        }
    }

    /// Parses a cursor a client sent back.
    pub fn decode(text: &str) -> Result<Cursor, BadCursor> {
        if let Some(rest) = text.strip_prefix('t') {
            let (t, id) = rest.split_once('_').ok_or(BadCursor)?;
            let t = DateTime::from_timestamp_micros(t.parse().map_err(|_| BadCursor)?)
                .ok_or(BadCursor)?;
            return Ok(Cursor::After(
                t,
                Uuid::parse_str(id).map_err(|_| BadCursor)?,
            ));
        }
        if let Some(rest) = text.strip_prefix('p') {
            let mut parts = rest.splitn(3, '_');
            let (t, a, b) = (
                parts.next().ok_or(BadCursor)?,
                parts.next().ok_or(BadCursor)?,
                parts.next().ok_or(BadCursor)?,
            );
            let t = DateTime::from_timestamp_micros(t.parse().map_err(|_| BadCursor)?)
                .ok_or(BadCursor)?;
            let id = |s: &str| Uuid::parse_str(s).map_err(|_| BadCursor);
            return Ok(Cursor::Pair(t, id(a)?, id(b)?));
        }
        if let Some(n) = text.strip_prefix('s') {
            let n: usize = n.parse().map_err(|_| BadCursor)?;
            return (n <= MAX_OFFSET)
                .then_some(Cursor::Offset(n))
                .ok_or(BadCursor);
        }
        Err(BadCursor)
    }

    /// A keyset position, or an error for an offset cursor.
    pub fn decode_after(text: &str) -> Result<(DateTime<Utc>, Uuid), BadCursor> {
        match Cursor::decode(text)? {
            Cursor::After(t, id) => Ok((t, id)),
            _ => Err(BadCursor),
        }
    }

    /// A pair position, or an error for other cursors.
    pub fn decode_pair(text: &str) -> Result<(DateTime<Utc>, Uuid, Uuid), BadCursor> {
        match Cursor::decode(text)? {
            Cursor::Pair(t, a, b) => Ok((t, a, b)),
            _ => Err(BadCursor),
        }
    }

    /// An offset, or an error for a keyset cursor.
    pub fn decode_offset(text: &str) -> Result<usize, BadCursor> {
        match Cursor::decode(text)? {
            Cursor::Offset(n) => Ok(n),
            _ => Err(BadCursor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_others() {
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = Uuid::new_v4();
        for c in [
            Cursor::After(t, id),
            Cursor::Offset(40),
            Cursor::Pair(t, id, Uuid::nil()),
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        }
        for bad in ["", "x", "t12", "tabc_def", "s-1", "s100001", "s4x"] {
            assert_eq!(Cursor::decode(bad), Err(BadCursor), "{bad}");
        }
        assert!(Cursor::decode_offset(&Cursor::After(t, id).encode()).is_err());
    }
}
