//! The control plane's domain values, parsed once at the edge of the system (HTTP, config,
//! database rows) so the rest of the code can trust them: image ids, owners, workflow states,
//! job kinds and roles. Each stores as text (or a UUID) in both databases.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a domain value did not parse; the text says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DomainError(pub String);

/// Implements `sqlx` encoding and decoding through the value's text form, for both backends.
macro_rules! sql_as_text {
    ($t:ty) => {
        impl<DB: sqlx::Database> sqlx::Type<DB> for $t
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $t
        where
            String: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, DB>>::encode(self.as_str().to_owned(), buf)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $t
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <String as sqlx::Decode<'r, DB>>::decode(value)?;
                Ok(s.parse::<$t>()?)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Defines a closed set of names stored as text.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored and wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Every name, for error messages and documentation.
            pub fn names() -> String {
                [$($text),+].join(", ")
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, DomainError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(DomainError(format!(
                        "{} must be one of {}, got {other:?}",
                        $what,
                        $name::names()
                    ))),
                }
            }
        }

        sql_as_text!($name);
    };
}

text_enum! {
    /// Where an image is in its life.
    ImageStatus, "status" {
        /// Created; the bytes are not in storage yet.
        Uploading = "uploading",
        /// The bytes are safe; a job will process them.
        Processing = "processing",
        /// Variants and metadata are in place.
        Ready = "ready",
        /// Processing gave up; the image's `error` says why.
        Failed = "failed",
    }
}

text_enum! {
    /// Where an image is in human review.
    ReviewState, "review_state" {
        /// Nobody has looked at it and nothing routed it to review.
        Unreviewed = "unreviewed",
        /// Routed to review (e.g. a near-duplicate); the review reason says why.
        NeedsReview = "needs_review",
        /// A reviewer accepted it.
        Approved = "approved",
        /// A reviewer rejected it.
        Rejected = "rejected",
    }
}

text_enum! {
    /// Where an image is in the catalog's review workflow (`catalog::workflow` says which
    /// transitions are allowed and who may make them).
    WorkflowState, "workflow_state" {
        /// New; nobody submitted it for review.
        Draft = "draft",
        /// Waiting for a reviewer's decision.
        InReview = "in_review",
        /// A reviewer accepted it.
        Approved = "approved",
        /// Released for use.
        Published = "published",
        /// A reviewer turned it down.
        Rejected = "rejected",
        /// A reviewer asked for corrections before deciding.
        ChangesRequested = "changes_requested",
        /// Taken out of use by its owner or a reviewer.
        Withdrawn = "withdrawn",
    }
}

text_enum! {
    /// Why an image is in the review queue.
    ReasonKind, "reason" {
        /// Its metadata failed the collection's rules.
        Validation = "validation",
        /// It looks like another image of the owner.
        NearDuplicate = "near_duplicate",
        /// The classifier was unsure what it shows.
        LowConfidence = "low_confidence",
        /// Its rights window ends soon.
        RightsEnding = "rights_ending",
        /// The model suggested tags awaiting confirmation.
        SuggestedTags = "suggested_tags",
        /// Someone submitted it for review.
        Submitted = "submitted",
        /// Routed to review before the catalog kept reasons.
        Legacy = "legacy",
    }
}

text_enum! {
    /// The kinds of work on the durable queue; each has one handler in `jobs/`.
    JobKind, "job kind" {
        /// Process a new original: metadata, variants, fingerprints, vectors.
        Process = "process",
        /// (Re-)embed a ready image and write its vectors.
        Embed = "embed",
        /// Look for a ready image's near-duplicates among its owner's images.
        Duplicates = "duplicates",
        /// Copy an image's filter fields (tags, review state) to its index point.
        SyncPayload = "sync_payload",
        /// Remove a deleted image's vectors, objects and edge caches, then its row.
        Delete = "delete",
        /// Move an image's large objects to cold storage (copy, verify, switch, delete).
        TierCold = "tier_cold",
        /// Move an image's cold objects back to hot storage.
        TierHot = "tier_hot",
        /// Purge an image that became private from every edge and the CDN (what they cached
        /// of it while it was public).
        PurgePrivate = "purge_private",
    }
}

text_enum! {
    /// What an API key may do; each role from `viewer` on includes the ones before it.
    Role, "role" {
        /// An edge's service key: pushes access statistics and nothing else (not even reads).
        Edge = "edge",
        /// Read images.
        Viewer = "viewer",
        /// Read, upload, edit and delete images.
        Uploader = "uploader",
        /// An uploader who may also approve and reject images (but never their own uploads).
        Reviewer = "reviewer",
        /// Everything, including keys and queue statistics.
        Admin = "admin",
    }
}

/// An image's id.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct ImageId(pub Uuid);

impl ImageId {
    /// A fresh random id.
    pub fn new() -> Self {
        ImageId(Uuid::new_v4())
    }
}

impl Default for ImageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ImageId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, DomainError> {
        Uuid::parse_str(s)
            .map(ImageId)
            .map_err(|_| DomainError(format!("{s:?} is not an image id")))
    }
}

impl utoipa::PartialSchema for ImageId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Uuid,
            )))
            .into()
    }
}

impl utoipa::ToSchema for ImageId {}

impl From<Uuid> for ImageId {
    fn from(u: Uuid) -> Self {
        ImageId(u)
    }
}

/// Who an image belongs to: 1 to 128 characters, no control characters, no `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(String);

impl Owner {
    /// Parses an owner id.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        if s.is_empty() || s.chars().count() > 128 || s.chars().any(|c| c.is_control() || c == '/')
        {
            return Err(DomainError(
                "owner must be 1 to 128 characters without control characters or '/'".into(),
            ));
        }
        Ok(Owner(s.to_owned()))
    }

    /// The owner id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Owner {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, DomainError> {
        Owner::parse(s)
    }
}

impl PartialEq<str> for Owner {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

sql_as_text!(Owner);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in ImageStatus::ALL {
            assert_eq!(s.as_str().parse::<ImageStatus>(), Ok(*s));
        }
        for s in ReviewState::ALL {
            assert_eq!(s.as_str().parse::<ReviewState>(), Ok(*s));
        }
        for k in JobKind::ALL {
            assert_eq!(k.as_str().parse::<JobKind>(), Ok(*k));
        }
        assert!(Role::Admin > Role::Reviewer && Role::Reviewer > Role::Uploader);
        assert!(Role::Uploader > Role::Viewer);
        let e = "shipped".parse::<ImageStatus>().unwrap_err();
        assert!(e.0.contains("uploading, processing, ready, failed"), "{e}");
        assert!("unknown".parse::<JobKind>().is_err());
    }

    #[test]
    fn owners_are_checked_once() {
        assert!(Owner::parse("alice").is_ok());
        assert!(Owner::parse("ünï cødé").is_ok());
        for bad in ["", "a/b", "a\nb", &"x".repeat(129)] {
            assert!(Owner::parse(bad).is_err(), "{bad:?}");
        }
        let o: Owner = serde_json::from_str("\"bob\"").unwrap();
        assert_eq!(o.as_str(), "bob");
        assert!(serde_json::from_str::<Owner>("\"a/b\"").is_err());
    }
}
