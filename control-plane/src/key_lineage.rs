//! Which keys count as the same actor for the four-eyes rule. Any key may mint keys of its
//! own role, so a second key is no second person: the key that uploaded an image, the keys
//! in its creation chain, and every key minted from its lineage are all "the uploader".
//!
//! Lineages are cut at admin keys: an admin minting a key is how keys are handed out to
//! people, whereas a reviewer or uploader minting a key is presumed to mint it for itself.
//! A key's *lineage root* is the highest key reached from it through non-admin creators
//! only. An approver counts as the uploader when it is the uploading key or one of that
//! key's creators (admins included), or when both have the same lineage root. Keys an admin
//! minted are separate people from that admin and from one another: the rule does not hold
//! against an admin, who can always hand a key to itself (SECURITY.md says so).

use uuid::Uuid;

use crate::domain::Role;

/// How many creators up a chain is followed; a longer chain is treated as the same actor
/// (fail closed) rather than walked further.
pub const MAX_DEPTH: usize = 64;

/// One key of a creation chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The key.
    pub id: Uuid,
    /// Its role.
    pub role: Role,
    /// The key that created it, if any.
    pub created_by: Option<Uuid>,
}

/// A key and its creators, nearest first (the key itself at index 0), as the store reads it:
/// at most [`MAX_DEPTH`] + 1 links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain(pub Vec<Link>);

impl Chain {
    /// Whether `id` is this key or one of its creators.
    fn contains(&self, id: Uuid) -> bool {
        self.0.iter().any(|l| l.id == id)
    }

    /// Whether the chain was cut before reaching a key nobody created.
    fn truncated(&self) -> bool {
        self.0.len() > MAX_DEPTH || self.0.last().is_some_and(|l| l.created_by.is_some())
    }

    /// The highest key reached from the first through non-admin creators only.
    fn lineage_root(&self) -> Option<Uuid> {
        let mut root = self.0.first()?;
        for parent in &self.0[1..] {
            if parent.role == Role::Admin {
                break;
            }
            root = parent;
        }
        Some(root.id)
    }
}

/// Whether a key with chain `approver` counts as the uploader, whose chain is `uploader`.
/// A chain cut short (too deep, or a creator row missing) counts as the same actor.
pub fn same_actor(uploader: &Chain, approver: &Chain) -> bool {
    let (Some(a), Some(up_root), Some(a_root)) = (
        approver.0.first(),
        uploader.lineage_root(),
        approver.lineage_root(),
    ) else {
        // A key row is missing: refuse rather than guess.
        return true;
    };
    if uploader.truncated() || approver.truncated() {
        return true;
    }
    uploader.contains(a.id) || up_root == a_root
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forest of keys by name: (name, role, creator).
    struct Keys(Vec<(&'static str, Role, Option<&'static str>, Uuid)>);

    impl Keys {
        fn new(spec: &[(&'static str, Role, Option<&'static str>)]) -> Self {
            Keys(
                spec.iter()
                    .map(|(n, r, p)| (*n, *r, *p, Uuid::new_v4()))
                    .collect(),
            )
        }
        fn id(&self, name: &str) -> Uuid {
            self.0.iter().find(|k| k.0 == name).map(|k| k.3).unwrap()
        }
        fn chain(&self, name: &str) -> Chain {
            let mut out = Vec::new();
            let mut at = Some(name);
            while let Some(n) = at {
                let k = self.0.iter().find(|k| k.0 == n).unwrap();
                out.push(Link {
                    id: k.3,
                    role: k.1,
                    created_by: k.2.map(|p| self.id(p)),
                });
                at = k.2;
            }
            Chain(out)
        }
        fn same(&self, uploader: &str, approver: &str) -> bool {
            same_actor(&self.chain(uploader), &self.chain(approver))
        }
    }

    #[test]
    fn minted_keys_and_creators_are_the_uploader_but_keys_an_admin_handed_out_are_not() {
        use Role::*;
        let k = Keys::new(&[
            ("root", Admin, None),
            ("alice", Admin, Some("root")),
            ("rita", Reviewer, Some("root")),
            ("rita2", Reviewer, Some("rita")),
            ("rita3", Reviewer, Some("rita")),
            ("rita2b", Reviewer, Some("rita2")),
            ("ulla", Uploader, Some("alice")),
            ("rob", Reviewer, Some("alice")),
        ]);
        // The key itself, keys it minted, keys minted below them.
        assert!(k.same("rita", "rita"));
        assert!(k.same("rita", "rita2"));
        assert!(k.same("rita", "rita2b"));
        // Its creators, admins included.
        assert!(k.same("rita2", "rita"));
        assert!(k.same("rita2", "root"));
        assert!(k.same("ulla", "alice"));
        assert!(k.same("ulla", "root"));
        // Keys minted by the same non-admin key, at any depth.
        assert!(k.same("rita2", "rita3"));
        assert!(k.same("rita2b", "rita3"));
        // Keys an admin minted from one another, and an admin's own uploads.
        assert!(!k.same("ulla", "rob"));
        assert!(!k.same("ulla", "rita"));
        assert!(!k.same("rita", "rob"));
        assert!(!k.same("alice", "rob"));
        assert!(!k.same("alice", "rita"));
        assert!(!k.same("root", "rita2"));
    }

    #[test]
    fn chains_cut_short_count_as_the_same_actor() {
        let a = Link {
            id: Uuid::new_v4(),
            role: Role::Reviewer,
            created_by: None,
        };
        let orphan = Link {
            id: Uuid::new_v4(),
            role: Role::Reviewer,
            created_by: Some(Uuid::new_v4()),
        };
        assert!(!same_actor(
            &Chain(vec![a]),
            &Chain(vec![Link {
                id: Uuid::new_v4(),
                ..a
            }])
        ));
        assert!(same_actor(&Chain(vec![orphan]), &Chain(vec![a])));
        assert!(same_actor(&Chain(vec![a]), &Chain(vec![orphan])));
        assert!(same_actor(&Chain::default(), &Chain(vec![a])));
        let deep: Vec<Link> = (0..=MAX_DEPTH).map(|_| a).collect();
        assert!(same_actor(&Chain(deep), &Chain(vec![orphan])));
    }
}
