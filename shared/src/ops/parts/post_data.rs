//! Which post-data entries of a parallel backup can be restored while other parts still load.
//!
//! An index or a constraint needs only its own tables' rows: once the data parts holding them
//! have been loaded, it can be built while the other parts' COPYs still run, as `pg_restore
//! -j` itself does with a directory archive. Only index builds and key constraints go early
//! (`INDEX`, `CONSTRAINT`, `FK CONSTRAINT`); everything else in post-data (triggers, rules,
//! policies, event triggers, index attachments, materialized view data, comments) waits for
//! the last step, where it ran before. A table without a data part (a partitioned table, or
//! one dumped without data) counts as loaded only at the end: a constraint on a partitioned
//! table reaches into partitions that may still be loading.

use std::collections::{HashMap, HashSet};

use crate::model::qualified_name;
use crate::pipeline::archive_format::SECTION_POST_DATA;
use crate::pipeline::archive_scan::TocEntry;

/// Kinds of post-data entries that may run before every part is loaded.
const EARLY_KINDS: &[&str] = &["INDEX", "CONSTRAINT", "FK CONSTRAINT"];

/// The post-data entries of one restore, and which of them have gone early.
#[derive(Debug)]
pub(crate) struct PostDataPlan {
    /// Every entry's dump ID, in TOC order.
    order: Vec<i64>,
    /// TABLE entries' dump IDs: the part their data is in, or `None` without a part.
    tables: HashMap<i64, Option<usize>>,
    /// Post-data entries of [`EARLY_KINDS`], in TOC order, with their dependencies.
    candidates: Vec<(i64, Vec<i64>)>,
    /// Every post-data entry's dump ID.
    post_data: HashSet<i64>,
    /// Entries handed out early.
    early: HashSet<i64>,
    loaded: Vec<bool>,
}

impl PostDataPlan {
    /// A plan for the schema object's TOC `toc`, with `parts[i]` the tables whose data part
    /// `i` holds (qualified names, as a backup record lists them).
    pub(crate) fn new(toc: &[TocEntry], parts: &[&[String]]) -> Self {
        let part_of: HashMap<&str, usize> = parts
            .iter()
            .enumerate()
            .flat_map(|(i, tables)| tables.iter().map(move |t| (t.as_str(), i)))
            .collect();
        let tables = toc
            .iter()
            .filter(|e| e.kind == "TABLE")
            .map(|e| {
                let name = qualified_name(&e.schema, &e.name);
                (e.dump_id, part_of.get(name.as_str()).copied())
            })
            .collect();
        let post_data = toc.iter().filter(|e| e.section == SECTION_POST_DATA);
        Self {
            order: toc.iter().map(|e| e.dump_id).collect(),
            tables,
            candidates: post_data
                .clone()
                .filter(|e| EARLY_KINDS.contains(&e.kind.as_str()))
                .map(|e| (e.dump_id, e.deps.clone()))
                .collect(),
            post_data: post_data.map(|e| e.dump_id).collect(),
            early: HashSet::new(),
            loaded: vec![false; parts.len()],
        }
    }

    /// Part `part` has been loaded: the entries that can now be restored, in TOC order
    /// (dependencies first), from now on counted as restored.
    pub(crate) fn part_loaded(&mut self, part: usize) -> Vec<i64> {
        if let Some(loaded) = self.loaded.get_mut(part) {
            *loaded = true;
        }
        let mut ready = Vec::new();
        for (id, deps) in &self.candidates {
            if self.early.contains(id) {
                continue;
            }
            let met = deps.iter().all(|dep| match self.tables.get(dep) {
                Some(Some(part)) => self.loaded[*part],
                Some(None) => false,
                None => !self.post_data.contains(dep) || self.early.contains(dep),
            });
            if met {
                self.early.insert(*id);
                ready.push(*id);
            }
        }
        ready
    }

    /// Takes back entries handed out but never restored: the last step restores them.
    pub(crate) fn unclaim(&mut self, ids: &[i64]) {
        for id in ids {
            self.early.remove(id);
        }
    }

    /// Every entry not handed out early, in TOC order: the last step's list.
    pub(crate) fn rest(&self) -> Vec<i64> {
        self.order
            .iter()
            .copied()
            .filter(|id| !self.early.contains(id))
            .collect()
    }
}

/// A `pg_restore --use-list` file naming `ids`, one per line.
pub(crate) fn use_list(ids: &[i64]) -> String {
    ids.iter().map(|id| format!("{id};\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, kind: &str, section: i64, name: &str, deps: &[i64]) -> TocEntry {
        TocEntry {
            dump_id: id,
            kind: kind.into(),
            section,
            schema: "public".into(),
            name: name.into(),
            deps: deps.to_vec(),
        }
    }

    fn tables(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| qualified_name("public", n)).collect()
    }

    /// a and b in part 0, c in part 1; p a partitioned table with no part.
    fn toc() -> Vec<TocEntry> {
        vec![
            entry(1, "TABLE", 2, "a", &[]),
            entry(2, "TABLE", 2, "b", &[]),
            entry(3, "TABLE", 2, "c", &[]),
            entry(4, "TABLE", 2, "p", &[]),
            entry(10, "TABLE DATA", 3, "a", &[1]),
            entry(11, "TABLE DATA", 3, "b", &[2]),
            entry(12, "TABLE DATA", 3, "c", &[3]),
            entry(20, "CONSTRAINT", 4, "a a_pkey", &[1]),
            entry(21, "INDEX", 4, "b_idx", &[2]),
            entry(22, "CONSTRAINT", 4, "c c_pkey", &[3]),
            entry(23, "FK CONSTRAINT", 4, "b b_a_fk", &[2, 20]),
            entry(24, "FK CONSTRAINT", 4, "a a_c_fk", &[1, 22]),
            entry(25, "TRIGGER", 4, "a a_trg", &[1]),
            entry(26, "CONSTRAINT", 4, "p p_pkey", &[4]),
            entry(27, "COMMENT", 1, "INDEX b_idx", &[21]),
        ]
    }

    #[test]
    fn indexes_and_keys_go_as_soon_as_their_tables_are_loaded() {
        let (ab, c) = (tables(&["a", "b"]), tables(&["c"]));
        let mut plan = PostDataPlan::new(&toc(), &[&ab, &c]);
        // a and b loaded: their keys and index, and the foreign key between them (after the
        // key it references); not the key pointing into c, nor the trigger, nor p's key.
        assert_eq!(plan.part_loaded(0), vec![20, 21, 23]);
        assert_eq!(plan.part_loaded(1), vec![22, 24]);
        assert_eq!(plan.rest(), vec![1, 2, 3, 4, 10, 11, 12, 25, 26, 27]);
    }

    #[test]
    fn a_foreign_key_waits_for_the_table_it_references() {
        let (ab, c) = (tables(&["a", "b"]), tables(&["c"]));
        let mut plan = PostDataPlan::new(&toc(), &[&c, &ab]);
        assert_eq!(plan.part_loaded(0), vec![22]);
        assert_eq!(plan.part_loaded(1), vec![20, 21, 23, 24]);
    }

    #[test]
    fn a_dependency_outside_the_archive_does_not_hold_an_entry_back() {
        let mut toc = toc();
        toc.push(entry(28, "INDEX", 4, "c_idx", &[3, 999]));
        let (ab, c) = (tables(&["a", "b"]), tables(&["c"]));
        let mut plan = PostDataPlan::new(&toc, &[&ab, &c]);
        assert_eq!(plan.part_loaded(1), vec![22, 28]);
        plan.unclaim(&[28]);
        assert!(plan.rest().contains(&28) && !plan.rest().contains(&22));
    }

    #[test]
    fn nothing_goes_early_when_nothing_is_loaded_and_the_list_has_every_line() {
        let (ab, c) = (tables(&["a", "b"]), tables(&["c"]));
        let plan = PostDataPlan::new(&toc(), &[&ab, &c]);
        assert_eq!(plan.rest().len(), toc().len());
        assert_eq!(use_list(&[3, 20]), "3;\n20;\n");
    }
}
