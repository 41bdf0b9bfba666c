//! Controlled vocabularies: hierarchical terms with synonyms, per collection. Free keywords
//! that match a term (its id, label or a synonym, compared case- and space-insensitively) are
//! normalised to the term's id; an image carrying a term also carries its ancestors, so a
//! filter on `animals` finds images tagged `dogs`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most terms a vocabulary may hold.
pub const MAX_TERMS: usize = 20_000;
/// Deepest hierarchy.
pub const MAX_DEPTH: usize = 32;

/// A term as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TermDef {
    /// The term's id (normalised to lower case), e.g. `dogs`.
    pub id: String,
    /// For people (default: the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The broader term's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Other words for it; keywords matching them become this term.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synonyms: Vec<String>,
}

/// How a keyword matched a term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TermMatch {
    /// The term's id.
    pub term: String,
    /// The term's label.
    pub label: String,
    /// The text that matched.
    pub matched: String,
    /// `id`, `label` or `synonym`.
    pub via: &'static str,
}

#[derive(Debug, Clone)]
struct Term {
    label: String,
    parent: Option<String>,
}

/// A checked vocabulary.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    terms: BTreeMap<String, Term>,
    /// Normalised id, label or synonym → (term id, via).
    lookup: HashMap<String, (String, &'static str)>,
    /// Longest entry in words (for finding terms in query text).
    max_words: usize,
    defs: Vec<TermDef>,
}

/// Lower case, trimmed, inner whitespace collapsed to one space.
pub fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

impl Vocabulary {
    /// Checks and indexes terms: ids unique, parents known, no cycles, no word meaning two
    /// terms.
    pub fn build(defs: Vec<TermDef>) -> Result<Vocabulary, String> {
        if defs.len() > MAX_TERMS {
            return Err(format!("a vocabulary has at most {MAX_TERMS} terms"));
        }
        let mut terms = BTreeMap::new();
        let mut clean = Vec::with_capacity(defs.len());
        for d in defs {
            let id = normalise(&d.id);
            if id.is_empty() || id.chars().count() > 100 || id.chars().any(char::is_control) {
                return Err(format!(
                    "term id {:?} must be 1 to 100 characters without control characters",
                    d.id
                ));
            }
            let label = d.label.clone().unwrap_or_else(|| d.id.trim().to_owned());
            let parent = d.parent.as_deref().map(normalise);
            if terms
                .insert(
                    id.clone(),
                    Term {
                        label: label.clone(),
                        parent: parent.clone(),
                    },
                )
                .is_some()
            {
                return Err(format!("term {id} is defined twice"));
            }
            clean.push(TermDef {
                id,
                label: Some(label),
                parent,
                synonyms: d.synonyms,
            });
        }
        for (id, t) in &terms {
            let mut seen = vec![id.as_str()];
            let mut cur = t.parent.as_deref();
            while let Some(p) = cur {
                let pt = terms
                    .get(p)
                    .ok_or_else(|| format!("term {id}: parent {p} is not a term"))?;
                if seen.contains(&p) {
                    return Err(format!("term {id}: its parents form a cycle"));
                }
                seen.push(p);
                if seen.len() > MAX_DEPTH {
                    return Err(format!("term {id}: deeper than {MAX_DEPTH} levels"));
                }
                cur = pt.parent.as_deref();
            }
        }
        let mut lookup: HashMap<String, (String, &'static str)> = HashMap::new();
        let mut max_words = 1;
        let mut add = |word: &str, id: &str, via: &'static str| -> Result<(), String> {
            let w = normalise(word);
            if w.is_empty() {
                return Ok(());
            }
            max_words = max_words.max(w.split(' ').count());
            match lookup.get(&w) {
                Some((other, _)) if other != id => Err(format!(
                    "{w:?} would mean both {other} and {id}; a word may name one term"
                )),
                Some(_) => Ok(()),
                None => {
                    lookup.insert(w, (id.to_owned(), via));
                    Ok(())
                }
            }
        };
        for d in &clean {
            add(&d.id, &d.id, "id")?;
        }
        for d in &clean {
            if let Some(l) = &d.label {
                add(l, &d.id, "label")?;
            }
            for s in &d.synonyms {
                add(s, &d.id, "synonym")?;
            }
        }
        Ok(Vocabulary {
            terms,
            lookup,
            max_words: max_words.min(6),
            defs: clean,
        })
    }

    /// Number of terms.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Whether it has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The terms as written (normalised ids).
    pub fn defs(&self) -> &[TermDef] {
        &self.defs
    }

    /// Whether `id` is a term.
    pub fn contains(&self, id: &str) -> bool {
        self.terms.contains_key(id)
    }

    /// A term's label.
    pub fn label(&self, id: &str) -> Option<&str> {
        self.terms.get(id).map(|t| t.label.as_str())
    }

    /// The term a keyword names, if any.
    pub fn lookup(&self, keyword: &str) -> Option<TermMatch> {
        let (id, via) = self.lookup.get(&normalise(keyword))?;
        Some(TermMatch {
            term: id.clone(),
            label: self.label(id).unwrap_or(id).to_owned(),
            matched: keyword.trim().to_owned(),
            via,
        })
    }

    /// `id` and its ancestors, nearest first.
    pub fn with_ancestors(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = Some(id);
        while let Some(t) = cur {
            if out.iter().any(|o: &String| o == t) || out.len() > MAX_DEPTH {
                break;
            }
            out.push(t.to_owned());
            cur = self.terms.get(t).and_then(|x| x.parent.as_deref());
        }
        out
    }

    /// Whether `term` is `ancestor` or below it.
    pub fn is_under(&self, term: &str, ancestor: &str) -> bool {
        self.with_ancestors(term).iter().any(|a| a == ancestor)
    }

    /// Keywords normalised: those naming a term become the term's id; the others stay as
    /// they are. Returns the keywords and the matches.
    pub fn normalise_keywords(&self, keywords: &[String]) -> (Vec<String>, Vec<TermMatch>) {
        let mut out: Vec<String> = Vec::with_capacity(keywords.len());
        let mut matches = Vec::new();
        for k in keywords {
            let v = match self.lookup(k) {
                Some(m) => {
                    let id = m.term.clone();
                    matches.push(m);
                    id
                }
                None => k.trim().to_owned(),
            };
            if !v.is_empty() && !out.contains(&v) {
                out.push(v);
            }
        }
        (out, matches)
    }

    /// Terms named in free text (a search query): word sequences of up to the longest entry,
    /// longest match first, left to right.
    pub fn find_in_text(&self, text: &str) -> Vec<TermMatch> {
        let words: Vec<String> = text
            .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '\''))
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let mut out: Vec<TermMatch> = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let mut hit = None;
            for n in (1..=self.max_words.min(words.len() - i)).rev() {
                let phrase = words[i..i + n].join(" ");
                if let Some(m) = self.lookup(&phrase) {
                    hit = Some((n, m));
                    break;
                }
            }
            match hit {
                Some((n, m)) => {
                    if !out.iter().any(|o| o.term == m.term) {
                        out.push(m);
                    }
                    i += n;
                }
                None => i += 1,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocabulary {
        let t = |id: &str, parent: Option<&str>, syn: &[&str]| TermDef {
            id: id.into(),
            label: None,
            parent: parent.map(Into::into),
            synonyms: syn.iter().map(|s| s.to_string()).collect(),
        };
        Vocabulary::build(vec![
            t("animals", None, &["fauna"]),
            t("dogs", Some("animals"), &["dog", "puppy", "Hunde"]),
            t("golden retriever", Some("dogs"), &[]),
            t("sea", None, &["ocean"]),
        ])
        .unwrap()
    }

    #[test]
    fn keywords_normalise_to_terms() {
        let v = vocab();
        let (k, m) = v.normalise_keywords(&[
            "Puppy".into(),
            " beach ".into(),
            "DOGS".into(),
            "Ocean".into(),
        ]);
        assert_eq!(k, ["dogs", "beach", "sea"]);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].via, "synonym");
        assert_eq!(
            v.with_ancestors("golden retriever"),
            ["golden retriever", "dogs", "animals"]
        );
        assert!(v.is_under("dogs", "animals") && !v.is_under("animals", "dogs"));
    }

    #[test]
    fn terms_found_in_text_longest_first() {
        let v = vocab();
        let m = v.find_in_text("a Golden Retriever puppy by the ocean");
        let ids: Vec<&str> = m.iter().map(|m| m.term.as_str()).collect();
        assert_eq!(ids, ["golden retriever", "dogs", "sea"]);
    }

    #[test]
    fn bad_vocabularies_are_refused() {
        let t = |id: &str, parent: Option<&str>, syn: &[&str]| TermDef {
            id: id.into(),
            label: None,
            parent: parent.map(Into::into),
            synonyms: syn.iter().map(|s| s.to_string()).collect(),
        };
        assert!(
            Vocabulary::build(vec![t("a", Some("b"), &[]), t("b", Some("a"), &[])])
                .unwrap_err()
                .contains("cycle")
        );
        assert!(Vocabulary::build(vec![t("a", Some("zz"), &[])])
            .unwrap_err()
            .contains("not a term"));
        assert!(
            Vocabulary::build(vec![t("a", None, &["x"]), t("b", None, &["x"])])
                .unwrap_err()
                .contains("both")
        );
    }
}
