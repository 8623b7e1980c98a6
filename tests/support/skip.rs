//! The one way a test may not run: a program it needs is missing here. It says so loudly on
//! stderr and appends a line to `target/tmp/skipped-tests.txt`, which `scripts/test.sh` prints
//! as a summary at the end of the run (and empties at its start). Under CI (`CI` set) nothing
//! may be missing: it panics instead. Any other failure to start (a CRD the API server refuses,
//! RBAC that does not apply, a download that fails) is a failure, never a skip.

use std::io::Write;
use std::path::PathBuf;

/// Where the skips of a run are listed, one line each.
pub fn skipped_list() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt")
}

/// `test` cannot run because `missing` (a program) is not here: panics under CI, else says so
/// and lists it.
pub fn missing_program(test: &str, missing: &str) {
    let line = format!("{test}: {missing}");
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have what every test needs: {line}"
    );
    eprintln!("SKIPPED (a program is missing) {line}");
    let list = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skipped_list());
    if let Ok(mut list) = list {
        let _ = writeln!(list, "{line}");
    }
}

/// The name of the running test (its thread's), or the test binary's.
pub fn current_test() -> String {
    let thread = std::thread::current();
    let binary = std::env::args()
        .next()
        .and_then(|path| {
            let name = PathBuf::from(path)
                .file_name()?
                .to_string_lossy()
                .into_owned();
            Some(
                name.rsplit_once('-')
                    .map_or(name.clone(), |(stem, _)| stem.to_owned()),
            )
        })
        .unwrap_or_default();
    match thread.name() {
        Some(name) if name != "main" => format!("{binary}::{name}"),
        _ => binary,
    }
}
