//! The sample events in `events/<function>/`, for the tests that run each one through its
//! function's handler. A test names what it expects of every file; a file without an entry (or
//! an entry without a file) fails it, so a new sample event cannot go untested.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

/// The directory of `function`'s sample events.
pub fn dir(function: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(function)
}

/// The sample event `events/<function>/<name>.json`.
pub fn load(function: &str, name: &str) -> Value {
    let path = dir(function).join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every sample event of `function` with what the test expects of it, in the order of
/// `expected` (a test may run them in one fixture, each after the one before). Panics unless
/// `expected` names exactly the files of the directory.
pub fn each<'a, T>(function: &str, expected: &'a [(&'a str, T)]) -> Vec<(&'a str, Value, &'a T)> {
    let dir = dir(function);
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let named: BTreeSet<String> = expected.iter().map(|(n, _)| (*n).to_owned()).collect();
    let untested: Vec<&String> = files.difference(&named).collect();
    assert!(
        untested.is_empty(),
        "events/{function}/: no expectation for {untested:?}; add one to the test"
    );
    let missing: Vec<&String> = named.difference(&files).collect();
    assert!(
        missing.is_empty(),
        "events/{function}/: expectations for missing files {missing:?}"
    );
    assert_eq!(named.len(), expected.len(), "a sample event named twice");
    expected
        .iter()
        .map(|(name, expect)| (*name, load(function, name), expect))
        .collect()
}
