//! What part of a database a backup holds: schemas and tables to include or exclude, and
//! tables whose data is left out (their definition is kept: "schema only").
//!
//! Each list holds `pg_dump` patterns, which are psql patterns: `*` matches any characters,
//! `?` one character, `.` separates schema and table, double quotes keep case and special
//! characters (`"Sales"."Order Lines"`); an unquoted name is folded to lower case. Each pattern
//! is given to `pg_dump` as one argument in `--option=PATTERN` form, never through a shell, so
//! no pattern can become another option or a command.
//!
//! The selection is part of the backup request and is recorded in the record and the manifest;
//! a record without one holds everything. `pg_dump` decides what matches (pgkeep does not
//! interpret patterns); include patterns are passed with `--strict-names`, so an include
//! pattern that matches nothing fails the backup instead of producing an empty one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest pattern accepted, in bytes (a quoted schema and table name take at most 261).
pub const MAX_PATTERN_BYTES: usize = 512;
/// Most patterns one selection may hold, all lists together.
pub const MAX_PATTERNS: usize = 256;

/// Why a selection is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    /// A pattern breaks the pattern rules.
    #[error("{list} pattern {pattern:?} {why}: patterns are 1-512 bytes without control characters (psql patterns, e.g. public, audit_*, \"Sales\".\"Order Lines\")")]
    Pattern {
        /// Which list (`exclude_schemas`, ...).
        list: &'static str,
        /// The pattern, as given.
        pattern: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Too many patterns.
    #[error("{0} patterns given; a selection holds at most 256")]
    TooMany(usize),
}

/// The schemas and tables a backup holds; empty lists select everything (see the module
/// documentation for the pattern rules).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Only these schemas (`pg_dump --schema`); empty: every schema.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_schemas: Vec<String>,
    /// Not these schemas (`--exclude-schema`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_schemas: Vec<String>,
    /// Only these tables (`--table`); when given, schema patterns do not widen the backup and
    /// objects other than the tables (functions, types) are left out, as in pg_dump.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_tables: Vec<String>,
    /// Not these tables (`--exclude-table`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_tables: Vec<String>,
    /// These tables' definitions but not their rows (`--exclude-table-data`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_table_data: Vec<String>,
}

impl Selection {
    /// Everything (no pattern at all).
    pub fn everything() -> Self {
        Selection::default()
    }

    /// Whether this selects the whole database.
    pub fn is_everything(&self) -> bool {
        self.lists()
            .iter()
            .all(|(_, _, patterns)| patterns.is_empty())
    }

    /// `(list name, pg_dump option, patterns)` of every list, in pg_dump's option order.
    fn lists(&self) -> [(&'static str, &'static str, &[String]); 5] {
        [
            ("include_schemas", "--schema", &self.include_schemas),
            ("exclude_schemas", "--exclude-schema", &self.exclude_schemas),
            ("include_tables", "--table", &self.include_tables),
            ("exclude_tables", "--exclude-table", &self.exclude_tables),
            (
                "exclude_table_data",
                "--exclude-table-data",
                &self.exclude_table_data,
            ),
        ]
    }

    /// Checks every pattern: non-empty, at most [`MAX_PATTERN_BYTES`], no control character
    /// (NUL, newline, ...), and at most [`MAX_PATTERNS`] in all.
    pub fn validate(&self) -> Result<(), SelectionError> {
        let mut total = 0;
        for (list, _, patterns) in self.lists() {
            total += patterns.len();
            for pattern in patterns {
                let bad = |why| {
                    Err(SelectionError::Pattern {
                        list,
                        pattern: pattern.clone(),
                        why,
                    })
                };
                if pattern.trim().is_empty() {
                    return bad("is empty");
                }
                if pattern.len() > MAX_PATTERN_BYTES {
                    return bad("is longer than 512 bytes");
                }
                if pattern.chars().any(char::is_control) {
                    return bad("has a control character");
                }
            }
        }
        if total > MAX_PATTERNS {
            return Err(SelectionError::TooMany(total));
        }
        Ok(())
    }

    /// The pg_dump arguments that make this selection: one `--option=PATTERN` element per
    /// pattern (so a pattern is always an option's value, whatever it starts with), and
    /// `--strict-names` when there are include patterns. Empty for everything.
    pub fn pg_dump_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if !self.include_schemas.is_empty() || !self.include_tables.is_empty() {
            args.push("--strict-names".to_owned());
        }
        for (_, option, patterns) in self.lists() {
            args.extend(patterns.iter().map(|p| format!("{option}={p}")));
        }
        args
    }
}

impl fmt::Display for Selection {
    /// `everything`, or the lists that are set: `exclude_schemas: audit; exclude_table_data:
    /// public.sessions`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_everything() {
            return f.write_str("everything");
        }
        let parts: Vec<String> = self
            .lists()
            .iter()
            .filter(|(_, _, patterns)| !patterns.is_empty())
            .map(|(list, _, patterns)| format!("{list}: {}", patterns.join(", ")))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn everything_adds_no_argument() {
        let s = Selection::everything();
        assert!(s.is_everything());
        assert!(s.pg_dump_args().is_empty());
        assert_eq!(s.to_string(), "everything");
        assert_eq!(serde_json::to_value(&s).unwrap(), serde_json::json!({}));
    }

    #[test]
    fn every_pattern_is_one_option_argument_in_order() {
        let s = Selection {
            include_schemas: strings(&["public", "app_*"]),
            exclude_schemas: strings(&["audit"]),
            include_tables: strings(&["public.orders"]),
            exclude_tables: strings(&["public.tmp_*"]),
            exclude_table_data: strings(&["\"Sales\".\"Order Lines\"", "public.sessions"]),
        };
        s.validate().unwrap();
        assert_eq!(
            s.pg_dump_args(),
            strings(&[
                "--strict-names",
                "--schema=public",
                "--schema=app_*",
                "--exclude-schema=audit",
                "--table=public.orders",
                "--exclude-table=public.tmp_*",
                "--exclude-table-data=\"Sales\".\"Order Lines\"",
                "--exclude-table-data=public.sessions",
            ])
        );
        let only_excludes = Selection {
            exclude_schemas: strings(&["audit"]),
            ..Selection::default()
        };
        assert_eq!(
            only_excludes.pg_dump_args(),
            strings(&["--exclude-schema=audit"]),
            "--strict-names only with include patterns"
        );
    }

    #[test]
    fn hostile_patterns_stay_one_argument_and_an_option_value() {
        let hostile = [
            "a b",
            "x'; DROP TABLE users; --",
            "\"q\"\"uoted\".\"t;\"",
            "-f/tmp/owned",
            "--file=/tmp/owned",
            "$(touch /tmp/owned)",
            "`id`",
            "*",
        ];
        let s = Selection {
            exclude_schemas: strings(&hostile),
            exclude_table_data: strings(&hostile),
            ..Selection::default()
        };
        s.validate().unwrap();
        let args = s.pg_dump_args();
        assert_eq!(args.len(), 2 * hostile.len(), "one element per pattern");
        for (arg, pattern) in args.iter().zip(hostile.iter().chain(hostile.iter())) {
            // Each element is exactly `--option=PATTERN`: getopt_long reads everything after
            // the first '=' as the option's value, so nothing in it is parsed as an option.
            let (option, value) = arg.split_once('=').unwrap();
            assert!(
                option == "--exclude-schema" || option == "--exclude-table-data",
                "{arg}"
            );
            assert_eq!(value, *pattern);
        }
        assert!(args.iter().all(|a| a.starts_with("--exclude-")));
    }

    #[test]
    fn bad_patterns_are_refused_naming_the_list() {
        let cases = [
            (
                Selection {
                    include_schemas: strings(&[""]),
                    ..Selection::default()
                },
                "include_schemas pattern \"\" is empty",
            ),
            (
                Selection {
                    exclude_tables: strings(&["  "]),
                    ..Selection::default()
                },
                "exclude_tables pattern \"  \" is empty",
            ),
            (
                Selection {
                    exclude_table_data: strings(&["a\0b"]),
                    ..Selection::default()
                },
                "control character",
            ),
            (
                Selection {
                    include_tables: strings(&["a\nb"]),
                    ..Selection::default()
                },
                "control character",
            ),
            (
                Selection {
                    exclude_schemas: vec!["x".repeat(513)],
                    ..Selection::default()
                },
                "longer than 512 bytes",
            ),
            (
                Selection {
                    exclude_schemas: vec!["s".to_owned(); 257],
                    ..Selection::default()
                },
                "257 patterns",
            ),
        ];
        for (s, needle) in cases {
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn selections_read_from_json_and_refuse_unknown_fields() {
        let s: Selection = serde_json::from_str(
            r#"{"exclude_schemas": ["audit"], "exclude_table_data": ["public.sessions"]}"#,
        )
        .unwrap();
        assert_eq!(s.exclude_schemas, ["audit"]);
        assert_eq!(
            s.to_string(),
            "exclude_schemas: audit; exclude_table_data: public.sessions"
        );
        assert!(serde_json::from_str::<Selection>(r#"{"schemas": ["x"]}"#).is_err());
        assert!(serde_json::from_str::<Selection>(r#"{"exclude_schemas": "x"}"#).is_err());
    }
}
