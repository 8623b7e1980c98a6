//! The documentation site against the code: every status reason the controller can set has its
//! row, with what to do, in docs/reference/status.md (the troubleshooting table).

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The reasons as the controller writes them: the arms of `Reason::as_str`.
fn reasons() -> Vec<String> {
    let code = std::fs::read_to_string(Path::new(ROOT).join("src/controller/decision/verdict.rs"))
        .unwrap();
    let body = code
        .split_once("impl Reason {")
        .expect("decision/verdict.rs has impl Reason")
        .1
        .split_once("\n}\n")
        .unwrap()
        .0;
    body.lines()
        .filter_map(|line| line.trim().strip_prefix("Reason::"))
        .filter_map(|arm| arm.split_once("=> \"")?.1.strip_suffix("\","))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_status_reason_has_its_row_with_what_to_do() {
    let reasons = reasons();
    assert!(
        reasons.len() >= 20,
        "reasons not found in the code: {reasons:?}"
    );
    let page = std::fs::read_to_string(Path::new(ROOT).join("docs/reference/status.md")).unwrap();
    let rows: Vec<&str> = page
        .split_once("| reason | meaning | next |")
        .expect("status.md has the reason table")
        .1
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .collect();
    for reason in reasons {
        let quoted = format!("`{reason}`");
        let row = rows
            .iter()
            .find(|row| {
                row.split('|')
                    .nth(1)
                    .is_some_and(|first| first.contains(&quoted))
            })
            .unwrap_or_else(|| panic!("docs/reference/status.md has no row for {reason}"));
        let next = row.split('|').nth(3).unwrap_or("").trim();
        assert!(
            !next.is_empty(),
            "the row of {reason} says nothing of what to do"
        );
    }
}
