//! `pgkeep --help` groups its options under headings (Repository, Database, AWS, Behaviour),
//! and `pgkeep prune --help` its retention flags, with the variables they read.

use pgkeep_tests::cli::Pgkeep;

#[test]
fn help_groups_the_options_under_headings() {
    let pgkeep = Pgkeep::new();
    let help = pgkeep.run_ok(&["--help"]);
    let mut at = 0;
    for heading in ["Repository:", "Database:", "AWS:", "Behaviour:"] {
        let found = help[at..]
            .find(heading)
            .unwrap_or_else(|| panic!("{heading} missing or out of order in:\n{help}"));
        at += found + heading.len();
    }
    for flag in [
        "--repo <URL>",
        "--key-file <PATH>",
        "--database-iam-auth",
        "--aws-endpoint <URL>",
        "--abandon-after <DURATION>",
        "[env: PGKEEP_S3_PART_SIZE_MIB=]",
    ] {
        assert!(help.contains(flag), "{flag} missing in:\n{help}");
    }
    let prune = pgkeep.run_ok(&["prune", "--help"]);
    assert!(prune.contains("Retention:"), "{prune}");
    assert!(
        prune.contains("[env: PGKEEP_PRE_RESTORE_KEEP_WITHIN=]"),
        "{prune}"
    );
    assert!(prune.contains("--actor <ACTOR>"), "{prune}");
}
