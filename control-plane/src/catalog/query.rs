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

/// Most images a condition may match for a listing to start from that condition's index
/// (and sort what it finds) instead of walking the images in listing order and checking each.
/// Walking checks about `limit / selectivity` images; starting from the index reads every
/// match, so the index wins while its matches stay under about `sqrt(limit × images)`.
pub const DRIVE_MAX: i64 = 1000;

/// Most withheld or superseded images for the default "usable, current" check to be one set
/// read up front (then a lookup in memory per image) instead of a probe per image.
pub const EXCLUDED_SET_MAX: i64 = 5000;

/// A catalog condition a listing can start from: its index yields the matching images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKey {
    /// `CatalogFilter::fields[i]` (an equality or range on a value).
    Field(usize),
    /// `CatalogFilter::terms[i]`.
    Term(usize),
    /// The review reason.
    Reason,
    /// Withheld images (`RightsFilter::Withheld`).
    Withheld,
}

/// A query returning the ids of the images one condition matches, from its index.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Which condition.
    pub key: DriverKey,
    /// `SELECT image_id FROM …` with `?` placeholders.
    pub select: String,
    /// Its values.
    pub binds: Vec<Bind>,
}

/// How a listing's catalog conditions run, decided from what the indexes say
/// ([`estimate_sql`], then [`plan`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    /// Start from this condition's index (`None`: walk the images in listing order).
    pub driver: Option<DriverKey>,
    /// Without a driver, walk the rows of this text equality (`CatalogFilter::fields[i]`) in
    /// upload order from its (field, value, owner, upload time) index instead of all of the
    /// owner's images: fewer images visited, each an index entry. Only for listings of one
    /// owner in upload order ([`walk_field`]).
    pub walk: Option<usize>,
    /// Read the withheld and superseded images as one set up front.
    pub excluded_as_set: bool,
    /// Keep every check a subquery run per image (`OFFSET 0`): Postgres otherwise turns them
    /// into joins, misjudges how many images a field value matches (it assumes field and
    /// value independent) and reads every match to sort it instead of walking in order.
    pub per_image: bool,
}

/// The driver candidates of `f`: positive field conditions with an index-friendly comparison,
/// terms, the review reason and the withheld set. Field kinds must be resolved.
pub fn candidates(f: &CatalogFilter) -> Result<Vec<Candidate>, String> {
    let mut out = Vec::new();
    for (i, c) in f.fields.iter().enumerate() {
        let kind = c
            .kind
            .ok_or_else(|| format!("field {} is not in any schema in scope", c.field))?;
        let (select, binds) = match c.op {
            Op::Ne | Op::Contains => continue,
            op if kind.is_numeric() => (
                format!(
                    "SELECT image_id FROM image_fields WHERE field = ? AND num_value {} ?",
                    op.sql()
                ),
                vec![Bind::Text(c.field.clone()), Bind::Num(c.number()?)],
            ),
            op => (
                format!(
                    "SELECT image_id FROM image_fields WHERE field = ? AND text_value {} ?",
                    op.sql()
                ),
                vec![Bind::Text(c.field.clone()), Bind::Text(c.value.clone())],
            ),
        };
        out.push(Candidate {
            key: DriverKey::Field(i),
            select,
            binds,
        });
    }
    for (i, t) in f.terms.iter().enumerate() {
        out.push(Candidate {
            key: DriverKey::Term(i),
            select: "SELECT image_id FROM image_terms WHERE term = ?".into(),
            binds: vec![Bind::Text(super::vocab::normalise(t))],
        });
    }
    if let Some(r) = f.reason {
        out.push(Candidate {
            key: DriverKey::Reason,
            select: "SELECT image_id FROM review_reasons WHERE resolved_at IS NULL AND kind = ?"
                .into(),
            binds: vec![Bind::Text(r.as_str().to_owned())],
        });
    }
    if f.rights == RightsFilter::Withheld {
        let now = f.now();
        let current = if f.versions == VersionFilter::Current {
            " AND is_current = TRUE"
        } else {
            ""
        };
        out.push(Candidate {
            key: DriverKey::Withheld,
            select: format!(
                "SELECT image_id FROM image_catalog WHERE rights_from > ?{current} UNION \
                 SELECT image_id FROM image_catalog WHERE rights_until <= ?{current}"
            ),
            binds: vec![Bind::Time(now), Bind::Time(now)],
        });
    }
    Ok(out)
}

/// The images the default check leaves out, as one query over partial indexes: superseded
/// versions (when only current ones are shown) and images outside their rights window (when
/// only usable ones are). `None` when the filter leaves out neither.
fn excluded_select(f: &CatalogFilter) -> Option<(String, Vec<Bind>)> {
    let mut parts = Vec::new();
    let mut binds = Vec::new();
    if f.versions == VersionFilter::Current && f.rights != RightsFilter::Withheld {
        parts.push("SELECT image_id FROM image_catalog WHERE is_current = FALSE");
    }
    if f.rights == RightsFilter::Usable {
        let now = f.now();
        parts.push("SELECT image_id FROM image_catalog WHERE rights_from > ?");
        parts.push("SELECT image_id FROM image_catalog WHERE rights_until <= ?");
        binds = vec![Bind::Time(now), Bind::Time(now)];
    }
    (!parts.is_empty()).then(|| (parts.join(" UNION ALL "), binds))
}

/// One query counting, up to a cap, the images each candidate matches and the images the
/// default check leaves out: one row, a column per candidate in order, then (when there is
/// one) the excluded set's. Placeholders are numbered from 1.
pub fn estimate_sql(f: &CatalogFilter) -> Result<Sql, String> {
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    let mut cols = Vec::new();
    let mut sql = Sql::default();
    for c in candidates(f)? {
        cols.push((c.select, c.binds, DRIVE_MAX + 1));
    }
    if let Some((select, binds)) = excluded_select(f) {
        cols.push((select, binds, EXCLUDED_SET_MAX + 1));
    }
    if cols.is_empty() {
        return Ok(sql);
    }
    sql.text.push_str("SELECT ");
    for (i, (select, binds, cap)) in cols.into_iter().enumerate() {
        if i > 0 {
            sql.text.push_str(", ");
        }
        sql.push(
            &format!("(SELECT COUNT(*) FROM ({select} LIMIT {cap}) x{i})"),
            binds,
            &mut next,
        );
    }
    Ok(sql)
}

/// Chooses how to run `f` from the counts [`estimate_sql`] returned (in its column order):
/// start from the condition matching fewest images when that is at most [`DRIVE_MAX`]; read
/// the excluded set up front when it is at most [`EXCLUDED_SET_MAX`].
pub fn plan(f: &CatalogFilter, counts: &[i64]) -> Result<Plan, String> {
    let cands = candidates(f)?;
    let driver = cands
        .iter()
        .zip(counts)
        .filter(|(_, n)| **n <= DRIVE_MAX)
        .min_by_key(|(_, n)| **n)
        .map(|(c, _)| c.key);
    let excluded_as_set = excluded_select(f).is_some()
        && counts
            .get(cands.len())
            .is_some_and(|n| *n <= EXCLUDED_SET_MAX);
    Ok(Plan {
        driver,
        walk: None,
        excluded_as_set,
        per_image: false,
    })
}

impl Plan {
    /// The field condition walked: [`Plan::walk`] unless a driver starts the listing.
    pub fn walked(&self) -> Option<usize> {
        self.walk.filter(|_| self.driver.is_none())
    }
}

/// The field condition a listing of one owner in upload order can walk when no driver was
/// chosen: an equality on a single-valued text field (one index row per image; the first such
/// condition: each is a subset of the owner's images in the same order).
pub fn walk_field(f: &CatalogFilter) -> Option<usize> {
    f.fields.iter().position(|c| {
        c.op == Op::Eq
            && matches!(
                c.kind,
                Some(FieldType::Text | FieldType::Enum | FieldType::Url | FieldType::Term)
            )
    })
}

/// A listing's catalog part: where it starts (`from`, put before `images` in the FROM clause:
/// empty, `(SELECT DISTINCT image_id …) drv CROSS JOIN ` or `image_fields wk CROSS JOIN `,
/// joined by a condition in `text`),
/// and the conditions (`text`, each starting with ` AND`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogSql {
    /// The start of the FROM clause.
    pub from: String,
    /// Conditions.
    pub text: String,
    /// Values of `from` then `text`, in placeholder order.
    pub binds: Vec<Bind>,
}

/// The SQL for `f` walked in listing order with every check per image (no estimates).
pub fn conditions(f: &CatalogFilter, next: &mut dyn FnMut() -> usize) -> Result<Sql, String> {
    let c = planned(f, &Plan::default(), next)?;
    Ok(Sql {
        text: c.text,
        binds: c.binds,
    })
}

/// The SQL for `f` run as `plan` says, on an outer query over `images`. `next` hands out
/// placeholder numbers after the caller's own. Field conditions must have their kinds
/// resolved. Cheap, selective checks come first; the catalog row's check comes last.
pub fn planned(
    f: &CatalogFilter,
    plan: &Plan,
    next: &mut dyn FnMut() -> usize,
) -> Result<CatalogSql, String> {
    let mut from = Sql::default();
    let mut sql = Sql::default();
    // The image the checks are about: the walked index entry's when walking a field (so the
    // checks run on the index entries, before any image row is read).
    let walk = plan.walked();
    let me = if walk.is_some() {
        "wk.image_id"
    } else {
        "images.id"
    };
    if let Some(i) = walk {
        let c = f
            .fields
            .get(i)
            .filter(|c| c.op == Op::Eq)
            .ok_or_else(|| "the plan's walk is not an equality of the filter".to_owned())?;
        from.text.push_str("image_fields wk CROSS JOIN ");
        sql.push(
            " AND wk.field = ? AND wk.text_value = ? AND wk.img_owner = images.owner \
             AND images.id = wk.image_id",
            vec![Bind::Text(c.field.clone()), Bind::Text(c.value.clone())],
            next,
        );
    } else if let Some(key) = plan.driver {
        let c = candidates(f)?
            .into_iter()
            .find(|c| c.key == key)
            .ok_or_else(|| "the plan's driver is not a condition of the filter".to_owned())?;
        from.push(
            &format!(
                "(SELECT DISTINCT image_id FROM ({}) dv) drv CROSS JOIN ",
                c.select
            ),
            c.binds,
            next,
        );
        sql.text.push_str(" AND images.id = drv.image_id");
    }
    let now = f.now();
    let close = if plan.per_image { " OFFSET 0)" } else { ")" };
    // Equalities and ranges on fields (index probes), then terms and the review reason,
    // then negations and substrings (which read the values), then the catalog row.
    for (i, c) in f.fields.iter().enumerate() {
        if plan.driver == Some(DriverKey::Field(i))
            || walk == Some(i)
            || matches!(c.op, Op::Ne | Op::Contains)
        {
            continue;
        }
        field_check(&mut sql, c, me, close, next)?;
    }
    for (i, t) in f.terms.iter().enumerate() {
        if plan.driver == Some(DriverKey::Term(i)) {
            continue;
        }
        sql.push(
            &format!(
                " AND EXISTS (SELECT 1 FROM image_terms t WHERE t.image_id = {me} AND t.term = ?{close}"
            ),
            vec![Bind::Text(super::vocab::normalise(t))],
            next,
        );
    }
    if let (Some(r), false) = (f.reason, plan.driver == Some(DriverKey::Reason)) {
        sql.push(
            &format!(
                " AND EXISTS (SELECT 1 FROM review_reasons r WHERE r.image_id = {me} \
                 AND r.resolved_at IS NULL AND r.kind = ?{close}"
            ),
            vec![Bind::Text(r.as_str().to_owned())],
            next,
        );
    }
    for c in f
        .fields
        .iter()
        .filter(|c| matches!(c.op, Op::Ne | Op::Contains))
    {
        field_check(&mut sql, c, me, close, next)?;
    }
    // The catalog row: collection, workflow, rights window and versions in one check.
    let mut row: Vec<(String, Vec<Bind>)> = Vec::new();
    if let Some(c) = f.collection {
        row.push(("c.collection_id = ?".into(), vec![Bind::Uuid(c)]));
    }
    if let Some(w) = f.workflow_state {
        row.push((
            "c.workflow_state = ?".into(),
            vec![Bind::Text(w.as_str().to_owned())],
        ));
    }
    let current = f.versions == VersionFilter::Current;
    match f.rights {
        RightsFilter::Withheld => {
            if plan.driver != Some(DriverKey::Withheld) {
                if current {
                    row.push(("c.is_current = TRUE".into(), vec![]));
                }
                row.push((
                    "(c.rights_from > ? OR c.rights_until <= ?)".into(),
                    vec![Bind::Time(now), Bind::Time(now)],
                ));
            }
        }
        RightsFilter::Usable | RightsFilter::Any => {
            // Images without a catalog row pass these, so they are a NOT EXISTS (or NOT IN
            // the excluded set) of their own, unless the row is required anyway.
            let excluded = excluded_select(f);
            match (excluded, row.is_empty()) {
                (None, _) => {}
                (Some(_), false) if !plan.excluded_as_set => {
                    if current {
                        row.push(("c.is_current = TRUE".into(), vec![]));
                    }
                    if f.rights == RightsFilter::Usable {
                        row.push((
                            "(c.rights_from IS NULL OR c.rights_from <= ?) \
                             AND (c.rights_until IS NULL OR c.rights_until > ?)"
                                .into(),
                            vec![Bind::Time(now), Bind::Time(now)],
                        ));
                    }
                }
                (Some((select, binds)), _) if plan.excluded_as_set => {
                    sql.push(&format!(" AND {me} NOT IN ({select})"), binds, next);
                }
                (Some(_), _) => {
                    let mut w = Vec::new();
                    let mut binds = Vec::new();
                    if current {
                        w.push("c.is_current = FALSE");
                    }
                    if f.rights == RightsFilter::Usable {
                        w.push("c.rights_from > ? OR c.rights_until <= ?");
                        binds = vec![Bind::Time(now), Bind::Time(now)];
                    }
                    sql.push(
                        &format!(
                            " AND NOT EXISTS (SELECT 1 FROM image_catalog c WHERE c.image_id = {me} \
                             AND ({}){close}",
                            w.join(" OR ")
                        ),
                        binds,
                        next,
                    );
                }
            }
        }
    }
    if !row.is_empty() {
        let mut text =
            format!(" AND EXISTS (SELECT 1 FROM image_catalog c WHERE c.image_id = {me}");
        let mut binds = Vec::new();
        for (t, b) in row {
            text += " AND ";
            text += &t;
            binds.extend(b);
        }
        text += close;
        sql.push(&text, binds, next);
    }
    Ok(CatalogSql {
        from: from.text,
        text: sql.text,
        binds: from.binds.into_iter().chain(sql.binds).collect(),
    })
}

/// Appends the check of one field condition on `images` to `sql`.
fn field_check(
    sql: &mut Sql,
    c: &FieldCondition,
    me: &str,
    close: &str,
    next: &mut dyn FnMut() -> usize,
) -> Result<(), String> {
    let kind = c
        .kind
        .ok_or_else(|| format!("field {} is not in any schema in scope", c.field))?;
    let (neg, op) = match c.op {
        Op::Ne => (true, Op::Eq),
        other => (false, other),
    };
    let exists = if neg { "NOT EXISTS" } else { "EXISTS" };
    let head = format!(
        " AND {exists} (SELECT 1 FROM image_fields f WHERE f.image_id = {me} AND f.field = ?"
    );
    if op == Op::Contains {
        sql.push(
            &format!("{head} AND LOWER(f.text_value) LIKE ? ESCAPE '\\'{close}"),
            vec![
                Bind::Text(c.field.clone()),
                Bind::Text(format!("%{}%", like_escape(&c.value.to_lowercase()))),
            ],
            next,
        );
    } else if kind.is_numeric() {
        sql.push(
            &format!("{head} AND f.num_value {} ?{close}", op.sql()),
            vec![Bind::Text(c.field.clone()), Bind::Num(c.number()?)],
            next,
        );
    } else {
        sql.push(
            &format!("{head} AND f.text_value {} ?{close}", op.sql()),
            vec![Bind::Text(c.field.clone()), Bind::Text(c.value.clone())],
            next,
        );
    }
    Ok(())
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
        // Terms (normalised) are checked before negations.
        assert_eq!(sql.binds[0], Bind::Text("animals".into()));
    }

    #[test]
    fn plans_start_from_the_fewest_matches_and_keep_checks_per_image() {
        let f = CatalogFilter {
            collection: Some(Uuid::nil()),
            terms: vec!["animals".into()],
            fields: vec![
                FieldCondition {
                    field: "usage".into(),
                    op: Op::Eq,
                    value: "editorial".into(),
                    kind: Some(FieldType::Enum),
                },
                FieldCondition {
                    field: "title".into(),
                    op: Op::Contains,
                    value: "dune".into(),
                    kind: Some(FieldType::Text),
                },
            ],
            ..Default::default()
        };
        // Candidates: usage= and the term (a substring has no index); then the excluded set.
        assert_eq!(candidates(&f).unwrap().len(), 2);
        let est = estimate_sql(&f).unwrap();
        assert_eq!(est.text.matches("COUNT(*)").count(), 3);
        assert_eq!(est.binds.len(), 2 + 1 + 2);
        let p = plan(&f, &[40_000, 900, 12]).unwrap();
        assert_eq!(p.driver, Some(DriverKey::Term(0)));
        assert!(p.excluded_as_set);
        let p = plan(&f, &[DRIVE_MAX + 1, DRIVE_MAX + 1, EXCLUDED_SET_MAX + 1]).unwrap();
        assert_eq!(p, Plan::default());
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        let plan = Plan {
            driver: Some(DriverKey::Field(0)),
            walk: None,
            excluded_as_set: true,
            per_image: true,
        };
        let sql = planned(&f, &plan, &mut next).unwrap();
        assert!(sql
            .from
            .starts_with("(SELECT DISTINCT image_id FROM (SELECT image_id FROM image_fields"));
        assert!(sql.text.starts_with(" AND images.id = drv.image_id"));
        // The driver's condition is not checked again; the others are, each kept per image:
        // the term, then the substring, then the catalog row.
        assert_eq!(sql.text.matches("EXISTS (").count(), 3);
        assert_eq!(sql.text.matches(" OFFSET 0)").count(), 3);
        let (term, like, row) = (
            sql.text.find("image_terms").unwrap(),
            sql.text.find("LIKE").unwrap(),
            sql.text.find("c.collection_id").unwrap(),
        );
        assert!(term < like && like < row, "{}", sql.text);
        assert!(sql.text.contains(
            "images.id NOT IN (SELECT image_id FROM image_catalog WHERE is_current = FALSE"
        ));
        let placeholders = (sql.from.clone() + &sql.text).matches('$').count();
        assert_eq!(placeholders, sql.binds.len());

        // Without a driver, a walk of the equality's index rows in upload order: the checks
        // are about the walked row's image, and the walked condition is not checked again.
        assert_eq!(walk_field(&f), Some(0));
        let plan = Plan {
            walk: Some(0),
            per_image: true,
            ..Plan::default()
        };
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        let sql = planned(&f, &plan, &mut next).unwrap();
        assert_eq!(sql.from, "image_fields wk CROSS JOIN ");
        assert!(sql.text.starts_with(
            " AND wk.field = $1 AND wk.text_value = $2 AND wk.img_owner = images.owner \
             AND images.id = wk.image_id"
        ));
        assert_eq!(
            &sql.binds[..2],
            &[Bind::Text("usage".into()), Bind::Text("editorial".into())]
        );
        assert_eq!(sql.text.matches("images.id").count(), 1, "{}", sql.text);
        assert_eq!(
            sql.text.matches("f.field = ").count(),
            1,
            "only the substring: {}",
            sql.text
        );
        assert_eq!(sql.text.matches('$').count(), sql.binds.len());
        // Only single-valued text fields are walked (a list has a row per item).
        let mut list = f.clone();
        list.fields[0].kind = Some(FieldType::List);
        assert_eq!(walk_field(&list), None);
        list.fields[0].kind = Some(FieldType::Number);
        assert_eq!(walk_field(&list), None);
    }

    #[test]
    fn sort_positions_round_trip() {
        assert_eq!(
            FieldSort::parse("field:shots:desc").unwrap(),
            Some(("shots".into(), true))
        );
        assert_eq!(FieldSort::parse("newest").unwrap(), None);
    }
}
