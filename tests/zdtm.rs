//! CRIU's own ZDTM static tests under cryo: `scripts/zdtm.py` builds the
//! tests listed in `tests/zdtm-expected.txt` from the CRIU source that
//! `scripts/build-criu.sh` fetched (target/criu/criu-*), and runs each one
//! plain, captured (`--kill`) and restored eagerly, lazily and mapped
//! (`--map`), where it must print PASS after SIGTERM (a test that checks
//! what a mapped restore is documented to do differently is listed `pass
//! except map`), or, for those cryo cannot capture faithfully,
//! checks that capture refuses by name and leaves the original passing.
//!
//! Without the CRIU source this test fails (run scripts/build-criu.sh, as
//! scripts/test.sh does); CRYO_SKIP_ZDTM=1 skips it explicitly.

mod support;

use std::process::Command;

#[test]
fn criu_zdtm_static_tests_pass_or_are_refused_by_name() {
    if std::env::var("CRYO_SKIP_ZDTM").as_deref() == Ok("1") {
        eprintln!("CRYO_SKIP_ZDTM=1: CRIU's zdtm tests skipped");
        return;
    }
    let root = support::root();
    let src = std::fs::read_dir(root.join("target/criu"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.join("test/zdtm/static/Makefile").is_file());
    assert!(
        src.is_some(),
        "CRIU's source is not in target/criu/criu-*/ (scripts/build-criu.sh fetches it; \
         scripts/test.sh runs it first): the zdtm tests cannot be built. \
         Set CRYO_SKIP_ZDTM=1 to skip them explicitly."
    );
    support::sanitize_fds();
    let out = Command::new("python3")
        .arg(root.join("scripts/zdtm.py"))
        .arg("--cryo")
        .arg(support::cryo())
        .arg("--expect")
        .arg(root.join("tests/zdtm-expected.txt"))
        .current_dir(&root)
        .output()
        .expect("run python3 scripts/zdtm.py");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(
        out.status.success(),
        "scripts/zdtm.py: {} (report above)\n{}",
        out.status,
        report
            .lines()
            .skip_while(|l| !l.starts_with("zdtm: ") || l.contains("built in"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
