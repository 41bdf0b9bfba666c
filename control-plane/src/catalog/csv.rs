//! CSV manifests for `flexphoto import`: a header row naming a `file` column (the photo's
//! path relative to the imported folder, or its file name) and one column per field; each
//! row gives a photo's values. RFC 4180 quoting (`"a, b"`, `""` for a quote) and CRLF or LF.

use std::collections::{BTreeMap, HashMap};

/// Most rows a manifest may have.
pub const MAX_ROWS: usize = 1_000_000;

/// Parses CSV text into rows of cells.
pub fn parse(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.trim_start_matches('\u{feff}').chars().peekable();
    let mut line = 1;
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    cell.push(c);
                }
                _ => cell.push(c),
            }
            continue;
        }
        match c {
            '"' if cell.is_empty() => quoted = true,
            ',' => row.push(std::mem::take(&mut cell)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
                line += 1;
                any = false;
                if rows.len() > MAX_ROWS {
                    return Err(format!("more than {MAX_ROWS} rows"));
                }
            }
            _ => cell.push(c),
        }
    }
    if quoted {
        return Err(format!("line {line}: a quoted cell is not closed"));
    }
    if any {
        row.push(cell);
        rows.push(row);
    }
    Ok(rows
        .into_iter()
        .filter(|r| !(r.len() == 1 && r[0].trim().is_empty()))
        .collect())
}

/// A manifest: each photo's values by field name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    rows: HashMap<String, BTreeMap<String, String>>,
}

/// The column naming the photo.
const FILE_COLUMNS: &[&str] = &["file", "filename", "path"];

impl Manifest {
    /// Reads a manifest; empty cells are left out.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let rows = parse(text)?;
        let Some((header, body)) = rows.split_first() else {
            return Err("the manifest is empty".into());
        };
        let header: Vec<String> = header.iter().map(|h| h.trim().to_owned()).collect();
        let file_col = header
            .iter()
            .position(|h| FILE_COLUMNS.contains(&h.to_ascii_lowercase().as_str()))
            .ok_or("the manifest needs a file column (file, filename or path)")?;
        let mut out = HashMap::new();
        for (i, r) in body.iter().enumerate() {
            if r.len() > header.len() {
                return Err(format!(
                    "row {} has {} cells; the header has {}",
                    i + 2,
                    r.len(),
                    header.len()
                ));
            }
            let Some(file) = r.get(file_col).map(|f| f.trim()).filter(|f| !f.is_empty()) else {
                return Err(format!("row {} has no file", i + 2));
            };
            let mut vals = BTreeMap::new();
            for (j, cell) in r.iter().enumerate() {
                if j != file_col && !cell.trim().is_empty() {
                    vals.insert(header[j].clone(), cell.trim().to_owned());
                }
            }
            out.insert(file.trim_start_matches("./").to_owned(), vals);
        }
        Ok(Manifest { rows: out })
    }

    /// The values for a photo at `relative` path (or with that file name).
    pub fn values_for(&self, relative: &str) -> Option<&BTreeMap<String, String>> {
        self.rows.get(relative).or_else(|| {
            let name = relative.rsplit('/').next()?;
            self.rows.get(name)
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_cells_and_lookup() {
        let m = Manifest::parse(
            "file,title,keywords\r\nsub/a.jpg,\"Dune, at dusk\",\"sand; \"\"sea\"\"\"\nb.jpg,,x\n",
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        let a = m.values_for("sub/a.jpg").unwrap();
        assert_eq!(a["title"], "Dune, at dusk");
        assert_eq!(a["keywords"], "sand; \"sea\"");
        let b = m.values_for("other/b.jpg").unwrap();
        assert!(!b.contains_key("title"));
        assert!(Manifest::parse("title\nx\n").is_err());
        assert!(parse("\"open").is_err());
    }
}
