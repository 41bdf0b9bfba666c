//! Deterministic retrieval over the catalog: filters on any schema field, vocabulary terms
//! (descendants included), rights state, workflow state, collection, review reasons and
//! versions; sorting by any schema field with stable keyset pagination; and what the vector
//! index can filter on itself. Listing and search share these (`ImageFilter::catalog`).
//!
//! Defaults: withheld images (outside their rights window) and superseded versions are left
//! out unless a filter asks for them.
//!
//! Field conditions are written `name=value`, `name!=value`, `name>=5`, `name<2026-06-01`,
//! `name~text` (contains, case-insensitive), separated by `;` in a query string.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::fields::{self, FieldType};
use crate::domain::{ReasonKind, WorkflowState};

/// Which rights states a listing shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RightsFilter {
    /// Inside their rights window (the default).
    #[default]
    Usable,
    /// Only withheld images (admins).
    Withheld,
    /// Both (admins).
    Any,
}

impl RightsFilter {
    /// Parses `usable`, `withheld` or `any`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "usable" => Ok(RightsFilter::Usable),
            "withheld" => Ok(RightsFilter::Withheld),
            "any" => Ok(RightsFilter::Any),
            other => Err(format!(
                "rights must be usable, withheld or any, not {other:?}"
            )),
        }
    }
}

/// Which versions a listing shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VersionFilter {
    /// Current versions only (the default).
    #[default]
    Current,
    /// Every version.
    All,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `~`: contains, case-insensitive.
    Contains,
}

impl Op {
    fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Contains => "LIKE",
        }
    }

    /// As written in a condition.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Contains => "~",
        }
    }
}

/// One condition on a descriptive field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldCondition {
    /// The field.
    pub field: String,
    /// The comparison.
    pub op: Op,
    /// The value as written.
    pub value: String,
    /// The field's type, resolved from the schemas in scope before the query runs.
    pub kind: Option<FieldType>,
}

impl FieldCondition {
    /// Parses `name<op>value`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let at = text.find(['=', '!', '<', '>', '~']).ok_or_else(|| {
            format!("field condition {text:?} has no operator (= != < <= > >= ~)")
        })?;
        let field = text[..at].trim();
        fields::check_name(field)?;
        let rest = &text[at..];
        let (op, len) = if rest.starts_with("!=") {
            (Op::Ne, 2)
        } else if rest.starts_with("<=") {
            (Op::Le, 2)
        } else if rest.starts_with(">=") {
            (Op::Ge, 2)
        } else if rest.starts_with('<') {
            (Op::Lt, 1)
        } else if rest.starts_with('>') {
            (Op::Gt, 1)
        } else if rest.starts_with('~') {
            (Op::Contains, 1)
        } else if rest.starts_with('=') {
            (Op::Eq, 1)
        } else {
            return Err(format!("field condition {text:?}: unknown operator"));
        };
        let value = rest[len..].trim().to_owned();
        if value.is_empty() || value.chars().count() > 500 {
            return Err(format!(
                "field condition {text:?}: the value must be 1 to 500 characters"
            ));
        }
        Ok(Self {
            field: field.to_owned(),
            op,
            value,
            kind: None,
        })
    }

    /// Parses `;`-separated conditions.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        let v: Vec<Self> = text
            .split(';')
            .filter(|c| !c.trim().is_empty())
            .map(Self::parse)
            .collect::<Result<_, _>>()?;
        if v.len() > 20 {
            return Err("at most 20 field conditions".into());
        }
        Ok(v)
    }

    /// The condition in words.
    pub fn describe(&self) -> String {
        format!("{} {} {}", self.field, self.op.symbol(), self.value)
    }

    /// The numeric value of the condition for number and date fields.
    fn number(&self) -> Result<f64, String> {
        match self.kind {
            Some(FieldType::Date) => {
                fields::parse_date(&self.value)
                    .map(|(_, s)| s)
                    .ok_or_else(|| {
                        format!(
                            "{}: {} is a date field; {:?} is not a date",
                            self.describe(),
                            self.field,
                            self.value
                        )
                    })
            }
            _ => self
                .value
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .ok_or_else(|| {
                    format!(
                        "{}: {} is a number field; {:?} is not a number",
                        self.describe(),
                        self.field,
                        self.value
                    )
                }),
        }
    }

    /// Whether a stored value (as the field index keeps it) meets the condition.
    pub fn matches(&self, value: &serde_json::Value) -> bool {
        let kind = self.kind.unwrap_or(FieldType::Text);
        let rows = fields::index_rows(kind, value);
        let hit = |text: &str, num: Option<f64>| -> bool {
            if kind.is_numeric() && self.op != Op::Contains {
                if let (Ok(want), Some(n)) = (self.number(), num) {
                    return match self.op {
                        Op::Eq => n == want,
                        Op::Ne => n != want,
                        Op::Lt => n < want,
                        Op::Le => n <= want,
                        Op::Gt => n > want,
                        Op::Ge => n >= want,
                        Op::Contains => false,
                    };
                }
            }
            let v = self.value.as_str();
            match self.op {
                Op::Eq => text == v,
                Op::Ne => text != v,
                Op::Lt => text < v,
                Op::Le => text <= v,
                Op::Gt => text > v,
                Op::Ge => text >= v,
                Op::Contains => text.to_lowercase().contains(&v.to_lowercase()),
            }
        };
        if self.op == Op::Ne {
            return rows.iter().all(|(t, n)| hit(t, *n));
        }
        rows.iter().any(|(t, n)| hit(t, *n))
    }
}

/// Conditions on the catalog that listing and search add to the image filters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogFilter {
    /// Only this collection.
    pub collection: Option<Uuid>,
    /// Every one of these terms (or a descendant).
    pub terms: Vec<String>,
    /// Only this workflow state.
    pub workflow_state: Option<WorkflowState>,
    /// Rights states shown.
    pub rights: RightsFilter,
    /// Versions shown.
    pub versions: VersionFilter,
    /// Conditions on descriptive fields.
    pub fields: Vec<FieldCondition>,
    /// Only images with an open review reason of this kind.
    pub reason: Option<ReasonKind>,
    /// When rights windows are evaluated (the request's time; `None`: now).
    pub at: Option<DateTime<Utc>>,
}

impl CatalogFilter {
    /// The filters in words.
    pub fn describe(&self) -> Vec<String> {
        let mut d = Vec::new();
        if let Some(c) = self.collection {
            d.push(format!("collection = {c}"));
        }
        for t in &self.terms {
            d.push(format!("term {t} (or narrower)"));
        }
        if let Some(w) = self.workflow_state {
            d.push(format!("workflow_state = {w}"));
        }
        match self.rights {
            RightsFilter::Usable => d.push("rights: inside the rights window".into()),
            RightsFilter::Withheld => d.push("rights: withheld".into()),
            RightsFilter::Any => {}
        }
        if self.versions == VersionFilter::Current {
            d.push("current versions".into());
        }
        for f in &self.fields {
            d.push(format!("field {}", f.describe()));
        }
        if let Some(r) = self.reason {
            d.push(format!("in review for {r}"));
        }
        d
    }

    /// Whether a condition needs SQL (the vector index does not hold it): field conditions
    /// and review reasons.
    pub fn needs_sql(&self) -> bool {
        !self.fields.is_empty() || self.reason.is_some()
    }

    /// The evaluation time.
    pub fn now(&self) -> DateTime<Utc> {
        self.at.unwrap_or_else(crate::store::now)
    }
}

/// A value bound to a query placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    /// Text.
    Text(String),
    /// A float.
    Num(f64),
    /// A time.
    Time(DateTime<Utc>),
    /// A UUID.
    Uuid(Uuid),
    /// An integer.
    Int(i64),
}

/// SQL text with its binds, in placeholder order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sql {
    /// The text (conditions start with ` AND`).
    pub text: String,
    /// The values.
    pub binds: Vec<Bind>,
}

impl Sql {
    /// Appends `text` where each `?` becomes the next placeholder.
    pub fn push(&mut self, text: &str, binds: Vec<Bind>, next: &mut dyn FnMut() -> usize) {
        let mut it = binds.into_iter();
        for (i, part) in text.split('?').enumerate() {
            if i > 0 {
                self.text += &format!("${}", next());
                if let Some(b) = it.next() {
                    self.binds.push(b);
                }
            }
            self.text += part;
        }
    }
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The SQL conditions for `f` on an outer query over `images`. `next` hands out placeholder
/// numbers after the caller's own. Field conditions must have their kinds resolved.
pub fn conditions(f: &CatalogFilter, next: &mut dyn FnMut() -> usize) -> Result<Sql, String> {
    let mut sql = Sql::default();
    let now = f.now();
    match (f.rights, f.versions) {
        (RightsFilter::Any, VersionFilter::All) => {}
        (RightsFilter::Any, VersionFilter::Current) => sql.push(
            " AND NOT EXISTS (SELECT 1 FROM image_catalog c WHERE c.image_id = images.id \
             AND c.is_current = FALSE)",
            vec![],
            next,
        ),
        (RightsFilter::Usable, versions) => {
            let current = if versions == VersionFilter::Current {
                "c.is_current = FALSE OR "
            } else {
                ""
            };
            sql.push(
                &format!(
                    " AND NOT EXISTS (SELECT 1 FROM image_catalog c WHERE c.image_id = images.id \
                     AND ({current}c.rights_from > ? OR c.rights_until <= ?))"
                ),
                vec![Bind::Time(now), Bind::Time(now)],
                next,
            );
        }
        (RightsFilter::Withheld, versions) => {
            let current = if versions == VersionFilter::Current {
                " AND c.is_current = TRUE"
            } else {
                ""
            };
            sql.push(
                &format!(
                    " AND EXISTS (SELECT 1 FROM image_catalog c WHERE c.image_id = images.id{current} \
                     AND (c.rights_from > ? OR c.rights_until <= ?))"
                ),
                vec![Bind::Time(now), Bind::Time(now)],
                next,
            );
        }
    }
    if let Some(c) = f.collection {
        sql.push(
            " AND EXISTS (SELECT 1 FROM image_catalog c WHERE c.image_id = images.id AND c.collection_id = ?)",
            vec![Bind::Uuid(c)],
            next,
        );
    }
    if let Some(w) = f.workflow_state {
        sql.push(
            " AND EXISTS (SELECT 1 FROM image_catalog c WHERE c.image_id = images.id AND c.workflow_state = ?)",
            vec![Bind::Text(w.as_str().to_owned())],
            next,
        );
    }
    for t in &f.terms {
        sql.push(
            " AND EXISTS (SELECT 1 FROM image_terms t WHERE t.image_id = images.id AND t.term = ?)",
            vec![Bind::Text(super::vocab::normalise(t))],
            next,
        );
    }
    if let Some(r) = f.reason {
        sql.push(
            " AND EXISTS (SELECT 1 FROM review_reasons r WHERE r.image_id = images.id \
             AND r.resolved_at IS NULL AND r.kind = ?)",
            vec![Bind::Text(r.as_str().to_owned())],
            next,
        );
    }
    for c in &f.fields {
        let kind = c
            .kind
            .ok_or_else(|| format!("field {} is not in any schema in scope", c.field))?;
        let (neg, op) = match c.op {
            Op::Ne => (true, Op::Eq),
            other => (false, other),
        };
        let exists = if neg { "NOT EXISTS" } else { "EXISTS" };
        let head = format!(
            " AND {exists} (SELECT 1 FROM image_fields f WHERE f.image_id = images.id AND f.field = ?"
        );
        if op == Op::Contains {
            sql.push(
                &format!("{head} AND LOWER(f.text_value) LIKE ? ESCAPE '\\')"),
                vec![
                    Bind::Text(c.field.clone()),
                    Bind::Text(format!("%{}%", like_escape(&c.value.to_lowercase()))),
                ],
                next,
            );
        } else if kind.is_numeric() {
            sql.push(
                &format!("{head} AND f.num_value {} ?)", op.sql()),
                vec![Bind::Text(c.field.clone()), Bind::Num(c.number()?)],
                next,
            );
        } else {
            sql.push(
                &format!("{head} AND f.text_value {} ?)", op.sql()),
                vec![Bind::Text(c.field.clone()), Bind::Text(c.value.clone())],
                next,
            );
        }
    }
    Ok(sql)
}

/// Binds `binds` in order to a `query_as`.
#[macro_export]
#[doc(hidden)]
macro_rules! bind_catalog {
    ($q:expr, $binds:expr) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                $crate::catalog::query::Bind::Text(s) => q.bind(s.clone()),
                $crate::catalog::query::Bind::Num(n) => q.bind(*n),
                $crate::catalog::query::Bind::Time(t) => q.bind(*t),
                $crate::catalog::query::Bind::Uuid(u) => q.bind(*u),
                $crate::catalog::query::Bind::Int(i) => q.bind(*i),
            };
        }
        q
    }};
}

/// Sorting by a descriptive field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSort {
    /// The field.
    pub field: String,
    /// Its type (resolved from the schemas in scope).
    pub kind: FieldType,
    /// Largest first.
    pub descending: bool,
}

impl FieldSort {
    /// Parses `field:NAME` or `field:NAME:desc` (the kind is resolved later).
    pub fn parse(s: &str) -> Result<Option<(String, bool)>, String> {
        let Some(rest) = s.strip_prefix("field:") else {
            return Ok(None);
        };
        let (name, desc) = match rest.rsplit_once(':') {
            Some((n, "desc")) => (n, true),
            Some((n, "asc")) => (n, false),
            Some(_) => {
                return Err(format!(
                    "sort {s:?}: write field:NAME, field:NAME:asc or field:NAME:desc"
                ))
            }
            None => (rest, false),
        };
        fields::check_name(name)?;
        Ok(Some((name.to_owned(), desc)))
    }
}

/// A position in a listing sorted by a field: the last item's value (`None`: it had none,
/// so the page is among the images without a value, which come last) and id.
#[derive(Debug, Clone, PartialEq)]
pub struct SortPosition {
    /// Number or text of the last item; `None` past the items with a value.
    pub value: Option<SortValue>,
    /// The last item's id.
    pub id: Uuid,
}

/// A sort key value.
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    /// Numbers and dates.
    Num(f64),
    /// Text.
    Text(String),
}

impl SortPosition {
    /// The cursor text.
    pub fn encode(&self) -> String {
        match &self.value {
            None => format!("vm_{}", self.id.simple()),
            Some(SortValue::Num(n)) => format!("vn{:016x}_{}", n.to_bits(), self.id.simple()),
            Some(SortValue::Text(t)) => format!("vt{}_{}", hex::encode(t), self.id.simple()),
        }
    }

    /// Parses a cursor made by [`SortPosition::encode`].
    pub fn decode(s: &str) -> Option<SortPosition> {
        let rest = s.strip_prefix('v')?;
        let (head, id) = rest.rsplit_once('_')?;
        let id = Uuid::parse_str(id).ok()?;
        let value = if head == "m" {
            None
        } else if let Some(h) = head.strip_prefix('n') {
            let n = f64::from_bits(u64::from_str_radix(h, 16).ok()?);
            n.is_finite().then_some(SortValue::Num(n))?.into()
        } else if let Some(h) = head.strip_prefix('t') {
            Some(SortValue::Text(
                String::from_utf8(hex::decode(h).ok()?).ok()?,
            ))
        } else {
            return None;
        };
        Some(SortPosition { value, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_parse_and_match() {
        let v =
            FieldCondition::parse_list("usage=editorial; shots>=5;embargo<2026-06-01;title~dune")
                .unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[1].op, Op::Ge);
        assert_eq!(v[2].op, Op::Lt);
        let mut c = v[1].clone();
        c.kind = Some(FieldType::Number);
        assert!(c.matches(&json!(7)) && !c.matches(&json!(3)));
        let mut d = v[2].clone();
        d.kind = Some(FieldType::Date);
        assert!(d.matches(&json!("2026-01-01")) && !d.matches(&json!("2026-07-01")));
        let mut t = v[3].clone();
        t.kind = Some(FieldType::Text);
        assert!(t.matches(&json!("Dune at dusk")));
        assert!(FieldCondition::parse("nooperator").is_err());
        assert!(FieldCondition::parse("Bad=1").is_err());
    }

    #[test]
    fn sql_has_a_placeholder_per_bind() {
        let f = CatalogFilter {
            terms: vec!["Animals".into()],
            fields: vec![FieldCondition {
                field: "shots".into(),
                op: Op::Ne,
                value: "3".into(),
                kind: Some(FieldType::Number),
            }],
            ..Default::default()
        };
        let mut n = 2;
        let mut next = || {
            n += 1;
            n
        };
        let sql = conditions(&f, &mut next).unwrap();
        assert_eq!(sql.binds.len(), 5);
        assert!(sql.text.contains("$3") && sql.text.contains("$7") && !sql.text.contains('?'));
        assert!(sql.text.contains("NOT EXISTS (SELECT 1 FROM image_fields"));
        assert_eq!(sql.binds[2], Bind::Text("animals".into()));
    }

    #[test]
    fn sort_positions_round_trip() {
        for value in [
            None,
            Some(SortValue::Num(-2.5)),
            Some(SortValue::Text("é_x".into())),
        ] {
            let p = SortPosition {
                value,
                id: Uuid::new_v4(),
            };
            assert_eq!(SortPosition::decode(&p.encode()), Some(p));
        }
        assert_eq!(
            FieldSort::parse("field:shots:desc").unwrap(),
            Some(("shots".into(), true))
        );
        assert_eq!(FieldSort::parse("newest").unwrap(), None);
    }
}
