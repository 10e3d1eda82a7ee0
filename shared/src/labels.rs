//! Free-form `key=value` labels on backups (`release=2026.11`, `ticket=OPS-123`), set when a
//! backup is asked for and kept on its record, so people can find backups again
//! (`pgkeep list --label`, `GET /backups?label=`) and retention can keep them (`--keep-label`).
//!
//! Labels arrive from command lines, HTTP bodies and events, and are printed in tables and
//! logs, so they are validated where they enter:
//!
//! - a key is 1 to 63 characters of `a-z`, `0-9`, `_`, `.` and `-`, starting with a letter or
//!   a digit (the same for every edge, so a label set through the API can be typed on the
//!   command line);
//! - a value is at most 255 characters, may be empty, has no control characters and no
//!   invisible formatting characters (bidirectional overrides, zero-width spaces), and does
//!   not start or end with white space;
//! - a backup has at most 16 labels, and a key at most once.
//!
//! Stored records keep their labels as a plain map (`BackupRecord::labels`): what was valid
//! when it was written stays readable whatever these rules become.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most labels one backup may carry.
pub const MAX_LABELS: usize = 16;
/// Longest label key, in characters.
pub const MAX_KEY_CHARS: usize = 63;
/// Longest label value, in characters.
pub const MAX_VALUE_CHARS: usize = 255;

/// Why a label, a set of labels or a label selector is refused; each message names the label
/// and says what the rule is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// A `key=value` argument without `=`.
    #[error("label {0:?} has no '=': write labels as key=value")]
    NoEquals(String),
    /// The key breaks the key rules.
    #[error("label key {key:?} {why}: keys are 1-63 characters of a-z, 0-9, '_', '.' and '-', starting with a letter or digit")]
    Key {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The value breaks the value rules.
    #[error("the value of label {key:?} {why}: values are at most 255 characters, without control or invisible formatting characters or surrounding white space")]
    Value {
        /// The label's key.
        key: String,
        /// What is wrong with the value.
        why: &'static str,
    },
    /// The same key twice.
    #[error("label key {0:?} is given more than once; give each key once")]
    Duplicate(String),
    /// Too many labels.
    #[error("{0} labels given; a backup carries at most 16")]
    TooMany(usize),
}

/// Checks a label key against the key rules.
pub fn check_key(key: &str) -> Result<(), LabelError> {
    let bad = |why| {
        Err(LabelError::Key {
            key: key.to_owned(),
            why,
        })
    };
    if key.is_empty() {
        return bad("is empty");
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return bad("is longer than 63 characters");
    }
    if key.chars().any(|c| c.is_ascii_uppercase()) {
        return bad("has upper-case letters (keys are lower-case)");
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c);
    if !key.chars().all(allowed) {
        return bad("has a character other than a-z, 0-9, '_', '.' and '-'");
    }
    if !key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return bad("does not start with a letter or digit");
    }
    Ok(())
}

/// Characters that print nothing but change how text around them reads: bidirectional
/// overrides and isolates, zero-width characters, line and paragraph separators, the BOM.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{061C}'
        | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}')
}

/// Checks the value of label `key` against the value rules.
pub fn check_value(key: &str, value: &str) -> Result<(), LabelError> {
    let bad = |why| {
        Err(LabelError::Value {
            key: key.to_owned(),
            why,
        })
    };
    if value.chars().count() > MAX_VALUE_CHARS {
        return bad("is longer than 255 characters");
    }
    if value.chars().any(char::is_control) {
        return bad("has a control character");
    }
    if value.chars().any(invisible) {
        return bad("has an invisible formatting character");
    }
    if value.trim() != value {
        return bad("starts or ends with white space");
    }
    Ok(())
}

/// A backup's labels, valid by construction: at most [`MAX_LABELS`], every key and value
/// checked, no key twice. Serialized as a JSON object; deserializing checks the same rules
/// (duplicate keys in the JSON object included), so a body or event with a bad label is
/// refused with the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// No labels.
    pub fn none() -> Self {
        Labels::default()
    }

    /// Labels from `(key, value)` pairs, refusing a duplicate key or a broken rule.
    pub fn new<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self, LabelError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut map = BTreeMap::new();
        for (key, value) in pairs {
            let (key, value) = (key.into(), value.into());
            check_key(&key)?;
            check_value(&key, &value)?;
            if map.contains_key(&key) {
                return Err(LabelError::Duplicate(key));
            }
            map.insert(key, value);
            if map.len() > MAX_LABELS {
                return Err(LabelError::TooMany(map.len()));
            }
        }
        Ok(Labels(map))
    }

    /// Labels from `key=value` arguments (the command line's `--label`); the value is what
    /// follows the first `=` and may itself contain `=`.
    pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Self, LabelError> {
        let pairs = args
            .iter()
            .map(|arg| {
                let arg = arg.as_ref();
                arg.split_once('=')
                    .ok_or_else(|| LabelError::NoEquals(arg.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Labels::new(pairs)
    }

    /// The labels as a map (what a record stores).
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// The labels as a map, consuming them.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of label keys to string values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<Labels, A::Error> {
                // Pairs in order, duplicates kept, so Labels::new can refuse them.
                let mut pairs: Vec<(String, String)> = Vec::new();
                while let Some((key, value)) = access.next_entry::<String, String>()? {
                    pairs.push((key, value));
                }
                Labels::new(pairs).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// Picks backups by one label: `key` (any value) or `key=value` (exactly that value). Used by
/// listings (`--label`, `?label=`) and by retention (`--keep-label`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelSelector {
    /// The label key.
    pub key: String,
    /// The value it must have; `None`: any value.
    pub value: Option<String>,
}

impl LabelSelector {
    /// Whether a record's labels carry this label.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match (labels.get(&self.key), &self.value) {
            (Some(_), None) => true,
            (Some(found), Some(wanted)) => found == wanted,
            (None, _) => false,
        }
    }
}

impl FromStr for LabelSelector {
    type Err = LabelError;

    /// `key` or `key=value`, with the label rules.
    fn from_str(s: &str) -> Result<Self, LabelError> {
        let (key, value) = match s.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (s, None),
        };
        check_key(key)?;
        if let Some(v) = value {
            check_value(key, v)?;
        }
        Ok(LabelSelector {
            key: key.to_owned(),
            value: value.map(str::to_owned),
        })
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

impl Serialize for LabelSelector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LabelSelector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a list of selectors written as a JSON array of strings (`["pinned", "release=v2"]`)
/// or as a comma-separated list (`pinned,release=v2`; a value with a comma needs the JSON
/// form). Empty text is an empty list. For settings such as `PGKEEP_KEEP_LABELS`.
pub fn parse_selector_list(text: &str) -> Result<Vec<LabelSelector>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let items: Vec<String> = if text.starts_with('[') {
        serde_json::from_str(text).map_err(|e| format!("not a JSON array of strings: {e}"))?
    } else {
        text.split(',').map(|s| s.trim().to_owned()).collect()
    };
    items
        .iter()
        .map(|s| s.parse::<LabelSelector>().map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_labels_are_accepted_and_keep_their_order() {
        let l = Labels::parse_args(&[
            "release=2026.11.3",
            "ticket=OPS-123",
            "note=before the big migration; see #42",
            "empty=",
            "a=b=c",
            "9lives=yes",
        ])
        .unwrap();
        assert_eq!(l.as_map()["a"], "b=c");
        assert_eq!(l.as_map()["empty"], "");
        assert_eq!(
            l.as_map().keys().collect::<Vec<_>>(),
            ["9lives", "a", "empty", "note", "release", "ticket"]
        );
        let max_key = "k".repeat(63);
        let max_value = "é".repeat(255);
        Labels::new([(max_key.as_str(), max_value.as_str())]).unwrap();
    }

    #[test]
    fn bad_labels_are_refused_with_the_reason() {
        let cases: &[(&[&str], &str)] = &[
            (&["novalue"], "has no '='"),
            (&["=x"], "is empty"),
            (&["Release=1"], "upper-case"),
            (&["re lease=1"], "other than a-z"),
            (&["ключ=1"], "other than a-z"),
            (&["-x=1"], "does not start with a letter or digit"),
            (&["_x=1"], "does not start with a letter or digit"),
            (&[".x=1"], "does not start with a letter or digit"),
            (&["x=a\nb"], "control character"),
            (&["x=a\0b"], "control character"),
            (&["x=a\u{7f}"], "control character"),
            (&["x=abc\u{202e}cba"], "invisible formatting"),
            (&["x=a\u{200b}"], "invisible formatting"),
            (&["x= padded"], "white space"),
            (&["x=padded\t"], "control character"),
            (&["x=1", "x=2"], "more than once"),
        ];
        for (args, needle) in cases {
            let err = Labels::parse_args(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        let long_key = format!("{}=1", "k".repeat(64));
        assert!(Labels::parse_args(&[long_key])
            .unwrap_err()
            .to_string()
            .contains("longer than 63"));
        let long_value = format!("k={}", "v".repeat(256));
        assert!(Labels::parse_args(&[long_value])
            .unwrap_err()
            .to_string()
            .contains("longer than 255"));
        let many: Vec<String> = (0..17).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            Labels::parse_args(&many).unwrap_err(),
            LabelError::TooMany(17)
        );
        assert!(Labels::parse_args(&many[..16]).is_ok());
    }

    #[test]
    fn json_objects_are_checked_including_duplicate_keys() {
        let ok: Labels = serde_json::from_str(r#"{"release": "v2", "pinned": ""}"#).unwrap();
        assert_eq!(ok.as_map().len(), 2);
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            serde_json::json!({"pinned": "", "release": "v2"})
        );
        for (bad, needle) in [
            (r#"{"release": "v1", "release": "v2"}"#, "more than once"),
            (r#"{"Release": "v1"}"#, "upper-case"),
            (r#"{"release": 2}"#, "invalid type"),
            (r#"["release=v1"]"#, "an object of label keys"),
        ] {
            let err = serde_json::from_str::<Labels>(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn selectors_match_a_key_or_a_key_and_value() {
        let labels: BTreeMap<String, String> = [("release", "v2"), ("pinned", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let sel = |s: &str| s.parse::<LabelSelector>().unwrap();
        assert!(sel("release").matches(&labels));
        assert!(sel("release=v2").matches(&labels));
        assert!(!sel("release=v1").matches(&labels));
        assert!(!sel("release=").matches(&labels));
        assert!(sel("pinned=").matches(&labels));
        assert!(!sel("ticket").matches(&labels));
        assert_eq!(sel("release=v=2").value.as_deref(), Some("v=2"));
        assert_eq!(sel("release=v2").to_string(), "release=v2");
        assert_eq!(sel("pinned").to_string(), "pinned");
        assert!("Bad=x".parse::<LabelSelector>().is_err());
        assert!("x=\n".parse::<LabelSelector>().is_err());
        assert_eq!(
            serde_json::from_value::<LabelSelector>(serde_json::json!("a=b")).unwrap(),
            sel("a=b")
        );
    }

    #[test]
    fn selector_lists_read_json_or_commas() {
        let names = |v: Vec<LabelSelector>| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(parse_selector_list("pinned, release=v2").unwrap()),
            ["pinned", "release=v2"]
        );
        assert_eq!(
            names(parse_selector_list(r#"["note=a,b", "pinned"]"#).unwrap()),
            ["note=a,b", "pinned"]
        );
        assert!(parse_selector_list("").unwrap().is_empty());
        assert!(parse_selector_list("pinned,,x").is_err());
        assert!(parse_selector_list("[1]").is_err());
    }
}
