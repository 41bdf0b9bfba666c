//! Versions and lineage. An image can be a new version of another (the versions of one work
//! form a chain: numbered from 1, exactly one is current, and listings and search return the
//! current one by default) or a derivative of another (a crop, an edit: its own work, linked
//! to its source). Exact duplicates are refused at upload with the existing image named;
//! near-duplicates are linked both ways and can be made versions of one another.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How an image relates to the one it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// A new version of the same work: it becomes the chain's current version.
    Version,
    /// A new work made from the other (a crop, an edit, a composite).
    Derivative,
}

impl Relation {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Version => "version",
            Relation::Derivative => "derivative",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "version" => Ok(Relation::Version),
            "derivative" => Ok(Relation::Derivative),
            other => Err(format!(
                "relation must be version or derivative, not {other:?}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Relation::parse("version"), Ok(Relation::Version));
        assert!(Relation::parse("copy").is_err());
        assert_eq!(Relation::Derivative.as_str(), "derivative");
    }
}
