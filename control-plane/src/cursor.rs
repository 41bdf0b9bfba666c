//! The one codec for page cursors. Every paged answer is `{items, next_cursor}`; a client
//! passes `next_cursor` back as `cursor` and never looks inside it.
//!
//! Each kind starts with its own letter: a keyset position in time order (`t{micros}_{uuid}`:
//! the time and id of the last item, stable while rows are added), the same for pairs of
//! images (`p…`), an offset (`s{n}`, for similarity rankings, which have no stable key), a
//! position in a listing sorted by a field (`v…`), in the review queue (`qo…` oldest first,
//! `qp…` by priority), among an owner's named items (`n…`), among owners (`o…`) and among
//! jobs (`j{id}`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::catalog::query::{SortPosition, SortValue};

/// Largest offset a similarity cursor may carry.
const MAX_OFFSET: usize = 100_000;

/// A position in a paged answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Cursor {
    /// After the item with this time and id.
    After(DateTime<Utc>, Uuid),
    /// After this many ranked results.
    Offset(usize),
    /// After the pair with this time and these two ids.
    Pair(DateTime<Utc>, Uuid, Uuid),
    /// After this item of a listing sorted by a field.
    Field(SortPosition),
    /// After the queued item with this time and id; `priority` in priority order.
    Queue {
        /// Its priority (priority order only).
        priority: Option<i32>,
        /// When it was queued.
        at: DateTime<Utc>,
        /// Its id.
        id: Uuid,
    },
    /// After this owner's item of this name.
    Name {
        /// The owner.
        owner: String,
        /// The item's name.
        name: String,
    },
    /// Before the job with this id (jobs go newest first).
    Job(i64),
    /// After this owner (owners go by name).
    Owner(String),
}

/// A cursor the API did not hand out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this API returned")]
pub struct BadCursor;

fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(s: &str) -> Result<DateTime<Utc>, BadCursor> {
    DateTime::from_timestamp_micros(s.parse().map_err(|_| BadCursor)?).ok_or(BadCursor)
}

fn uuid(s: &str) -> Result<Uuid, BadCursor> {
    Uuid::parse_str(s).map_err(|_| BadCursor)
}

fn text(hex_text: &str) -> Result<String, BadCursor> {
    String::from_utf8(hex::decode(hex_text).map_err(|_| BadCursor)?).map_err(|_| BadCursor)
}

impl Cursor {
    /// The text handed to clients.
    pub fn encode(&self) -> String {
        match self {
            Cursor::After(t, id) => format!("t{}_{}", micros(t), id.simple()),
            Cursor::Offset(n) => format!("s{n}"),
            Cursor::Pair(t, a, b) => format!("p{}_{}_{}", micros(t), a.simple(), b.simple()),
            Cursor::Field(SortPosition { value, id }) => match value {
                None => format!("vm_{}", id.simple()),
                Some(SortValue::Num(n)) => format!("vn{:016x}_{}", n.to_bits(), id.simple()),
                Some(SortValue::Text(t)) => format!("vt{}_{}", hex::encode(t), id.simple()),
            },
            Cursor::Queue {
                priority: None,
                at,
                id,
            } => format!("qo{}_{}", micros(at), id.simple()),
            Cursor::Queue {
                priority: Some(p),
                at,
                id,
            } => format!("qp{p}_{}_{}", micros(at), id.simple()),
            Cursor::Name { owner, name } => {
                format!("n{}_{}", hex::encode(owner), hex::encode(name))
            }
            Cursor::Job(id) => format!("j{id}"),
            Cursor::Owner(owner) => format!("o{}", hex::encode(owner)),
        }
    }

    /// Parses a cursor a client sent back.
    pub fn decode(text_in: &str) -> Result<Cursor, BadCursor> {
        let mut chars = text_in.chars();
        let kind = chars.next().ok_or(BadCursor)?;
        let rest = chars.as_str();
        match kind {
            't' => {
                let (t, id) = rest.split_once('_').ok_or(BadCursor)?;
                Ok(Cursor::After(time(t)?, uuid(id)?))
            }
            'p' => {
                let mut parts = rest.splitn(3, '_');
                let mut next = || parts.next().ok_or(BadCursor);
                let (t, a, b) = (next()?, next()?, next()?);
                Ok(Cursor::Pair(time(t)?, uuid(a)?, uuid(b)?))
            }
            's' => {
                let n: usize = rest.parse().map_err(|_| BadCursor)?;
                (n <= MAX_OFFSET)
                    .then_some(Cursor::Offset(n))
                    .ok_or(BadCursor)
            }
            'v' => {
                let (head, id) = rest.rsplit_once('_').ok_or(BadCursor)?;
                let value = if head == "m" {
                    None
                } else if let Some(h) = head.strip_prefix('n') {
                    let bits = u64::from_str_radix(h, 16).map_err(|_| BadCursor)?;
                    let n = f64::from_bits(bits);
                    Some(SortValue::Num(n.is_finite().then_some(n).ok_or(BadCursor)?))
                } else if let Some(h) = head.strip_prefix('t') {
                    Some(SortValue::Text(text(h)?))
                } else {
                    return Err(BadCursor);
                };
                Ok(Cursor::Field(SortPosition {
                    value,
                    id: uuid(id)?,
                }))
            }
            'q' => {
                if let Some(r) = rest.strip_prefix('o') {
                    let (t, id) = r.split_once('_').ok_or(BadCursor)?;
                    return Ok(Cursor::Queue {
                        priority: None,
                        at: time(t)?,
                        id: uuid(id)?,
                    });
                }
                let r = rest.strip_prefix('p').ok_or(BadCursor)?;
                let mut parts = r.splitn(3, '_');
                let mut next = || parts.next().ok_or(BadCursor);
                let (p, t, id) = (next()?, next()?, next()?);
                Ok(Cursor::Queue {
                    priority: Some(p.parse().map_err(|_| BadCursor)?),
                    at: time(t)?,
                    id: uuid(id)?,
                })
            }
            'n' => {
                let (o, n) = rest.split_once('_').ok_or(BadCursor)?;
                Ok(Cursor::Name {
                    owner: text(o)?,
                    name: text(n)?,
                })
            }
            'j' => Ok(Cursor::Job(rest.parse().map_err(|_| BadCursor)?)),
            'o' => Ok(Cursor::Owner(text(rest)?)),
            _ => Err(BadCursor),
        }
    }

    /// A field-sort position, or an error for other cursors.
    pub fn decode_field(text: &str) -> Result<SortPosition, BadCursor> {
        match Cursor::decode(text)? {
            Cursor::Field(p) => Ok(p),
            _ => Err(BadCursor),
        }
    }

    /// A review-queue position `(priority, queued at, id)`, or an error for other cursors and
    /// for a position of the other order (`by_priority` says which order is paged).
    pub fn decode_queue(
        text: &str,
        by_priority: bool,
    ) -> Result<(i32, DateTime<Utc>, Uuid), BadCursor> {
        match Cursor::decode(text)? {
            Cursor::Queue { priority, at, id } if priority.is_some() == by_priority => {
                Ok((priority.unwrap_or(0), at, id))
            }
            _ => Err(BadCursor),
        }
    }

    /// An owner-and-name position, or an error for other cursors.
    pub fn decode_name(text: &str) -> Result<(String, String), BadCursor> {
        match Cursor::decode(text)? {
            Cursor::Name { owner, name } => Ok((owner, name)),
            _ => Err(BadCursor),
        }
    }

    /// A job position, or an error for other cursors.
    pub fn decode_job(text: &str) -> Result<i64, BadCursor> {
        match Cursor::decode(text)? {
            Cursor::Job(id) => Ok(id),
            _ => Err(BadCursor),
        }
    }

    /// An owner position, or an error for other cursors.
    pub fn decode_owner(text: &str) -> Result<String, BadCursor> {
        match Cursor::decode(text)? {
            Cursor::Owner(o) => Ok(o),
            _ => Err(BadCursor),
        }
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
        let field = |value| {
            Cursor::Field(SortPosition {
                value,
                id: Uuid::new_v4(),
            })
        };
        for c in [
            Cursor::After(t, id),
            Cursor::Offset(40),
            Cursor::Pair(t, id, Uuid::nil()),
            field(None),
            field(Some(SortValue::Num(-2.5))),
            field(Some(SortValue::Text("é_x".into()))),
            Cursor::Queue {
                priority: None,
                at: t,
                id,
            },
            Cursor::Queue {
                priority: Some(-3),
                at: t,
                id,
            },
            Cursor::Name {
                owner: "ann_b".into(),
                name: "Summer 2026 \n_x".into(),
            },
            Cursor::Job(1234),
            Cursor::Owner("ann_b é".into()),
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Ok(c.clone()), "{}", c.encode());
        }
        for bad in [
            "",
            "x",
            "t12",
            "tabc_def",
            "s-1",
            "s100001",
            "s4x",
            "vz_1",
            "vn7ff0000000000000_1",
            "qx1_2",
            "qp_1_2",
            "nzz_00",
            "j",
            "j1.5",
            "oz",
            "o0",
            "é",
        ] {
            assert_eq!(Cursor::decode(bad), Err(BadCursor), "{bad}");
        }
        assert!(Cursor::decode_offset(&Cursor::After(t, id).encode()).is_err());
        let queued = Cursor::Queue {
            priority: Some(2),
            at: t,
            id,
        }
        .encode();
        assert_eq!(Cursor::decode_queue(&queued, true), Ok((2, t, id)));
        assert!(Cursor::decode_queue(&queued, false).is_err());
        assert!(Cursor::decode_job(&queued).is_err());
    }
}
