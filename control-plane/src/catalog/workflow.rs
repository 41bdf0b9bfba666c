//! The review workflow: draft → in review → approved → published, plus rejected, changes
//! requested and withdrawn. Only the transitions below are allowed, each by a minimum role;
//! nobody decides on an image their own key (or a key in its lineage) uploaded, and a
//! collection may require approval before publishing. Every transition is recorded (actor,
//! time, reason) by the caller.

use crate::domain::{ReviewState, Role, WorkflowState};

use WorkflowState::*;

/// Who asks for a transition, as far as the rules care.
#[derive(Debug, Clone, Copy)]
pub struct Actor {
    /// The key's role.
    pub role: Role,
    /// Whether this key counts as the uploader: the uploading key or one in its lineage
    /// ([`crate::key_lineage`]).
    pub is_uploader: bool,
}

/// The allowed transitions and the least role each needs.
const TRANSITIONS: &[(WorkflowState, WorkflowState, Role)] = &[
    (Draft, InReview, Role::Uploader),
    (ChangesRequested, InReview, Role::Uploader),
    (InReview, Draft, Role::Uploader),
    (InReview, Approved, Role::Reviewer),
    (InReview, Rejected, Role::Reviewer),
    (InReview, ChangesRequested, Role::Reviewer),
    (Approved, Published, Role::Reviewer),
    (Approved, InReview, Role::Reviewer),
    (Published, InReview, Role::Reviewer),
    (Rejected, InReview, Role::Reviewer),
    (Draft, Withdrawn, Role::Uploader),
    (InReview, Withdrawn, Role::Uploader),
    (ChangesRequested, Withdrawn, Role::Uploader),
    (Approved, Withdrawn, Role::Uploader),
    (Published, Withdrawn, Role::Uploader),
    (Rejected, Withdrawn, Role::Uploader),
    (Withdrawn, Draft, Role::Uploader),
];

/// Publishing straight from these needs a collection that does not require approval.
const PUBLISH_WITHOUT_APPROVAL: &[WorkflowState] = &[Draft, InReview];

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not an allowed transition (the text lists the ones that are).
    NotAllowed(String),
    /// The role or the uploader rule forbids it.
    Forbidden(String),
}

/// The states reachable from `from` (for error messages and the API).
pub fn next_states(from: WorkflowState, publish_requires_approval: bool) -> Vec<WorkflowState> {
    let mut v: Vec<WorkflowState> = TRANSITIONS
        .iter()
        .filter(|(f, _, _)| *f == from)
        .map(|(_, t, _)| *t)
        .collect();
    if !publish_requires_approval && PUBLISH_WITHOUT_APPROVAL.contains(&from) {
        v.push(Published);
    }
    v
}

/// Whether `actor` may move an image from `from` to `to`.
pub fn check(
    from: WorkflowState,
    to: WorkflowState,
    actor: Actor,
    publish_requires_approval: bool,
) -> Result<(), Refusal> {
    let needed = TRANSITIONS
        .iter()
        .find(|(f, t, _)| *f == from && *t == to)
        .map(|(_, _, r)| *r)
        .or_else(|| {
            (to == Published
                && !publish_requires_approval
                && PUBLISH_WITHOUT_APPROVAL.contains(&from))
            .then_some(Role::Reviewer)
        });
    let Some(needed) = needed else {
        let allowed = next_states(from, publish_requires_approval);
        let why = if to == Published && publish_requires_approval {
            " (this collection publishes approved images only)"
        } else {
            ""
        };
        return Err(Refusal::NotAllowed(format!(
            "an image cannot go from {from} to {to}{why}; from {from} it may go to {}",
            if allowed.is_empty() {
                "nothing".to_owned()
            } else {
                allowed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )));
    };
    if actor.role < needed {
        return Err(Refusal::Forbidden(format!(
            "moving an image from {from} to {to} needs the {needed} role; this key is {}",
            actor.role
        )));
    }
    if actor.is_uploader && is_decision(to) {
        return Err(Refusal::Forbidden(UPLOADER_DECIDES.into()));
    }
    Ok(())
}

/// Why the uploader's lineage cannot decide on its image.
pub const UPLOADER_DECIDES: &str =
    "review decisions on an image need a key outside the uploader's lineage: \
     not the key that uploaded it, a key that created that key, or a key minted from them";

/// Whether moving to `to` is a reviewer's decision, which the key that uploaded the image
/// cannot make, whatever its role.
pub fn is_decision(to: WorkflowState) -> bool {
    matches!(to, Approved | Rejected | ChangesRequested)
}

/// The legacy review state a workflow state shows as (`review_state` in the API and the
/// index's filters).
pub fn review_state_of(s: WorkflowState) -> ReviewState {
    match s {
        Draft => ReviewState::Unreviewed,
        InReview | ChangesRequested => ReviewState::NeedsReview,
        Approved | Published => ReviewState::Approved,
        Rejected | Withdrawn => ReviewState::Rejected,
    }
}

/// The workflow state a legacy review-state change asks for (`PATCH review_state`).
pub fn from_review_state(r: ReviewState) -> WorkflowState {
    match r {
        ReviewState::Unreviewed => Draft,
        ReviewState::NeedsReview => InReview,
        ReviewState::Approved => Approved,
        ReviewState::Rejected => Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(role: Role, is_uploader: bool) -> Actor {
        Actor { role, is_uploader }
    }

    #[test]
    fn the_allowed_paths() {
        let rev = actor(Role::Reviewer, false);
        let up = actor(Role::Uploader, true);
        assert!(check(Draft, InReview, up, true).is_ok());
        assert!(check(InReview, Approved, rev, true).is_ok());
        assert!(check(Approved, Published, rev, true).is_ok());
        assert!(check(Published, Withdrawn, up, true).is_ok());
        assert!(check(Withdrawn, Draft, up, true).is_ok());
        // Skipping approval: only where the collection allows it.
        assert!(
            matches!(check(InReview, Published, rev, true), Err(Refusal::NotAllowed(m)) if m.contains("approved images only"))
        );
        assert!(check(InReview, Published, rev, false).is_ok());
        // Not a transition at all.
        let e = check(Draft, Approved, rev, true).unwrap_err();
        assert!(
            matches!(&e, Refusal::NotAllowed(m) if m.contains("in_review, withdrawn")),
            "{e:?}"
        );
    }

    #[test]
    fn roles_and_own_uploads() {
        // An uploader cannot approve anything, nor a reviewer their own upload.
        assert!(matches!(
            check(InReview, Approved, actor(Role::Uploader, false), true),
            Err(Refusal::Forbidden(_))
        ));
        assert!(matches!(
            check(InReview, Approved, actor(Role::Reviewer, true), true),
            Err(Refusal::Forbidden(m)) if m.contains("outside the uploader's lineage")
        ));
        assert!(matches!(
            check(InReview, Approved, actor(Role::Admin, true), true),
            Err(Refusal::Forbidden(_))
        ));
        assert!(check(InReview, Rejected, actor(Role::Reviewer, false), true).is_ok());
        assert_eq!(review_state_of(ChangesRequested), ReviewState::NeedsReview);
        assert_eq!(from_review_state(ReviewState::Approved), Approved);
    }
}
