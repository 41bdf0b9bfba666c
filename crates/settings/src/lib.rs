//! Configuration loading shared by every FlexPhotoDB binary, so that each finds its file and
//! reads the environment the same way.
//!
//! Two stages, as each binary uses them: this crate turns a TOML file plus environment
//! overrides into the binary's raw config type (what was written, with serde defaults), naming
//! the key of any malformed or unknown value; the binary then validates the raw values into its
//! own config type, naming the key of any value out of range ([`invalid`]).
//!
//! # Where the file is
//! [`locate`]: the `--config` flag when given; else the file named by `{PREFIX}_CONFIG`; else
//! `config/{name}.toml` under the working directory when it exists; else no file (built-in
//! defaults).
//!
//! # Environment
//! Any key can be overridden as `{PREFIX}__{SECTION}__{KEY}=value`: the binary's prefix, then
//! the key's path in the TOML file, upper case, each step joined by a double underscore (for
//! example `FLEXPHOTO__DATABASE__URL` for the control plane's `database.url`, and
//! `FLEXPHOTO_EDGE__CACHE__MEMORY_MB` for the edge's `cache.memory_mb`). The value is read as
//! TOML when it parses as a TOML value (numbers, booleans, `[arrays]`), else as a string.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration was refused; every variant names the file or the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML does not parse.
    #[error("{path}: {message}")]
    Syntax {
        /// The file (or `environment`).
        path: String,
        /// The parser's message, with the line.
        message: String,
    },
    /// A value has the wrong type, or a key is unknown.
    #[error("config key `{key}`: {reason}")]
    Parse {
        /// Dotted key path.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// Dotted key path.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    /// The dotted key a key error names, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Parse { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// A value refused at validation: `key` is its dotted path.
pub fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// How one binary reads its configuration.
#[derive(Debug, Clone, Copy)]
pub struct Loader {
    /// Environment prefix, e.g. `FLEXPHOTO` or `FLEXPHOTO_EDGE`.
    pub prefix: &'static str,
    /// Name of the default file under `config/`, e.g. `control-plane`.
    pub name: &'static str,
}

impl Loader {
    /// Where the config file is (see the crate docs), or `None` for built-in defaults.
    pub fn locate(&self, flag: Option<&Path>) -> Option<PathBuf> {
        self.locate_with(flag, |k| std::env::var(k).ok(), Path::new("config"))
    }

    fn locate_with(
        &self,
        flag: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        config_dir: &Path,
    ) -> Option<PathBuf> {
        if let Some(p) = flag {
            return Some(p.to_owned());
        }
        if let Some(p) = env(&format!("{}_CONFIG", self.prefix)).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let default = config_dir.join(format!("{}.toml", self.name));
        default.is_file().then_some(default)
    }

    /// Reads `file` (or nothing), applies this process's environment, and deserializes.
    pub fn load<T: DeserializeOwned>(&self, file: Option<&Path>) -> Result<T, ConfigError> {
        let text = match file {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        let name = file.map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        );
        self.from_text(&name, &text, std::env::vars())
    }

    /// Parses `text` (named `source` in errors), applies the given environment, and
    /// deserializes.
    pub fn from_text<T: DeserializeOwned>(
        &self,
        source: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<T, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: source.to_owned(),
                    message: e.to_string().trim().to_owned(),
                })?;
        self.apply_env(&mut table, env)?;
        deserialize(table)
    }

    /// Applies `{PREFIX}__…` overrides to `table`.
    pub fn apply_env(
        &self,
        table: &mut toml::Table,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let prefix = format!("{}__", self.prefix);
        for (name, value) in env {
            let Some(path) = name.strip_prefix(&prefix) else {
                continue;
            };
            let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
            if parts.iter().any(|p| p.is_empty()) {
                return Err(invalid(&name, "empty key in an environment override"));
            }
            set_path(table, &parts, parse_value(&value), &name)?;
        }
        Ok(())
    }
}

/// Reads an environment value as a TOML value when it is one, else as a string.
fn parse_value(value: &str) -> toml::Value {
    format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()))
}

fn set_path(
    table: &mut toml::Table,
    parts: &[String],
    value: toml::Value,
    var: &str,
) -> Result<(), ConfigError> {
    let (last, sections) = parts.split_last().ok_or_else(|| invalid(var, "no key"))?;
    let mut cur = table;
    for (i, p) in sections.iter().enumerate() {
        let next = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        cur = match next {
            toml::Value::Table(t) => t,
            _ => {
                return Err(invalid(
                    &parts[..=i].join("."),
                    format!("{var} treats a value as a section"),
                ))
            }
        };
    }
    cur.insert(last.clone(), value);
    Ok(())
}

/// Deserializes a table into a raw config type, naming the key of the first bad value.
pub fn deserialize<T: DeserializeOwned>(table: toml::Table) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Parse {
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            reason: e.into_inner().to_string().trim().to_owned(),
        }
    })
}

/// Where a shipped, commented config file and the built-in defaults disagree: keys the file
/// leaves out, keys the code does not know, and values that differ from the defaults. Tests
/// use it to keep `config/*.toml` a complete, truthful list of every key and its default.
pub fn drift_from_defaults<T: serde::Serialize>(text: &str, defaults: &T) -> Vec<String> {
    let file: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => return vec![format!("the file does not parse: {e}")],
    };
    let code = match toml::Table::try_from(defaults) {
        Ok(t) => t,
        Err(e) => return vec![format!("the defaults do not serialize: {e}")],
    };
    let mut out = Vec::new();
    drift(&mut out, "", &file, &code);
    out
}

/// Equal, with floats compared to single precision (defaults may be `f32`).
fn same_value(a: &toml::Value, b: &toml::Value) -> bool {
    match (a, b) {
        (toml::Value::Float(x), toml::Value::Float(y)) => (x - y).abs() <= 1e-6 * x.abs().max(1.0),
        _ => a == b,
    }
}

fn drift(out: &mut Vec<String>, prefix: &str, file: &toml::Table, code: &toml::Table) {
    for (k, v) in code {
        let key = format!("{prefix}{k}");
        match (file.get(k), v) {
            // An empty list of tables (`[[section.items]]`) is written as commented examples.
            (None, toml::Value::Array(a)) if a.is_empty() => {}
            (None, _) => out.push(format!("{key}: missing from the file")),
            (Some(toml::Value::Table(f)), toml::Value::Table(c)) => {
                drift(out, &format!("{key}."), f, c)
            }
            (Some(f), c) if !same_value(f, c) => {
                out.push(format!("{key}: the file says {f}, the code {c}"))
            }
            _ => {}
        }
    }
    for k in file.keys().filter(|k| !code.contains_key(*k)) {
        out.push(format!("{prefix}{k}: in the file, unknown to the code"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Raw {
        queue: Queue,
        name: String,
    }

    impl Default for Raw {
        fn default() -> Self {
            Raw {
                queue: Queue::default(),
                name: "x".into(),
            }
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Queue {
        workers: u32,
        kinds: Vec<String>,
    }

    impl Default for Queue {
        fn default() -> Self {
            Queue {
                workers: 4,
                kinds: vec![],
            }
        }
    }

    const L: Loader = Loader {
        prefix: "APP",
        name: "app",
    };

    fn env(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_the_file() {
        let raw: Raw = L
            .from_text(
                "f",
                "[queue]\nworkers = 2\n",
                env(&[
                    ("APP__QUEUE__KINDS", "[\"a\", \"b\"]"),
                    ("APP__NAME", "hello world"),
                    ("OTHER__NAME", "ignored"),
                    ("APP_EDGE__NAME", "ignored too"),
                ]),
            )
            .unwrap();
        assert_eq!(raw.queue.workers, 2);
        assert_eq!(raw.queue.kinds, vec!["a", "b"]);
        assert_eq!(raw.name, "hello world");
        let raw: Raw = L
            .from_text("f", "", env(&[("APP__QUEUE__WORKERS", "7")]))
            .unwrap();
        assert_eq!(raw.queue.workers, 7);
    }

    #[test]
    fn errors_name_the_key() {
        let e = L
            .from_text::<Raw>("f", "[queue]\nworkers = \"many\"\n", env(&[]))
            .unwrap_err();
        assert_eq!(e.key(), Some("queue.workers"), "{e}");
        let e = L
            .from_text::<Raw>("f", "", env(&[("APP__QUEUE__WORKRES", "1")]))
            .unwrap_err();
        assert!(e.to_string().contains("workres"), "{e}");
        let e = L
            .from_text::<Raw>("f", "", env(&[("APP__NAME__X", "1")]))
            .unwrap_err();
        assert_eq!(e.key(), Some("name"), "{e}");
        assert!(matches!(
            L.from_text::<Raw>("cfg.toml", "[queue", env(&[])),
            Err(ConfigError::Syntax { .. })
        ));
    }

    #[test]
    fn locates_files_in_order() {
        let dir = std::env::temp_dir().join(format!("settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let none = |_: &str| None;
        assert_eq!(L.locate_with(None, none, &dir), None);
        std::fs::write(dir.join("app.toml"), "").unwrap();
        assert_eq!(L.locate_with(None, none, &dir), Some(dir.join("app.toml")));
        let from_env = |k: &str| (k == "APP_CONFIG").then(|| "/etc/app.toml".to_owned());
        assert_eq!(
            L.locate_with(None, from_env, &dir),
            Some(PathBuf::from("/etc/app.toml"))
        );
        assert_eq!(
            L.locate_with(Some(Path::new("/x.toml")), from_env, &dir),
            Some(PathBuf::from("/x.toml"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
