//! `cryo restore --map`: private anonymous memory mapped from pages.img
//! instead of copied. A self-checking C program (tests/programs/mapped.c)
//! reads and writes its whole heap (brk heap, a glibc-mmapped block, a
//! mapping with never-touched and zeroed holes), forks, and reports what
//! MADV_DONTNEED gives back; a mapped restore is captured again and the
//! new image restored after the old one is gone; two clones of one image
//! write different values to the same pages; pages are verified once and
//! a changed pages.img is caught; a program using jemalloc is refused.
//! Real programs (C, Rust, GHC, Python, Go) run with --map in the round
//! trips of tests/restore.rs.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

/// Capture `c-mapped MODE` (stopped at its READY, killed after).
fn capture(mode: &str, tag: &str, env: &[(&str, &str)]) -> PathBuf {
    let mut cmd = Command::new(program("c-mapped"));
    cmd.arg(mode).envs(env.iter().copied());
    let t = Target::spawn(cmd, "c-mapped");
    t.wait_stopped();
    let img = scratch(tag).join("img");
    let (code, _, err) = cryo_cmd(&[
        "capture",
        "--kill",
        &t.pid.to_string(),
        img.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "capture: {err}");
    t.finish();
    img
}

fn restore(img: &Path, extra: &[&str]) -> Child {
    sanitize_fds();
    Command::new(cryo())
        .arg("restore")
        .args(extra)
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cryo restore")
}

/// Wait for the restored program; (exit code, stdout, stderr).
fn finish(mut c: Child) -> (i32, String, String) {
    drop(c.stdin.take());
    let mut err = String::new();
    let mut se = c.stderr.take().expect("stderr");
    let t = std::thread::spawn(move || {
        let _ = se.read_to_string(&mut err);
        err
    });
    let mut out = String::new();
    let _ = c.stdout.take().expect("stdout").read_to_string(&mut out);
    let st = c.wait().expect("wait");
    (st.code().unwrap_or(-1), out, t.join().unwrap_or_default())
}

/// How many mappings of a pages.img the restored program reported.
fn maps_line(out: &str) -> usize {
    out.lines()
        .find_map(|l| l.strip_prefix("MAPS "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no MAPS line: {out}"))
}

#[test]
fn mapped_restore_reads_writes_forks_and_keeps_dontneed_documented() {
    let img = capture("check", "map-check", &[]);
    // Eager first: anonymous memory, MADV_DONTNEED gives zeros.
    let (code, out, err) = finish(restore(&img, &[]));
    assert_eq!(code, 0, "eager: {out}\n{err}");
    assert_eq!(maps_line(&out), 0, "{out}");
    assert!(
        out.contains("DONTNEED zero\nREALLOC kept\nPASS check"),
        "{out}"
    );
    // Mapped: the same program passes, its memory is mapped from
    // pages.img, and MADV_DONTNEED gives back the captured bytes (the
    // documented difference). Its 24 MiB malloc'd block, mapped but for
    // its first page, grown by realloc kept its bytes and took 256 MiB of
    // writes (glibc's mremap fails on it, and glibc copies it; grown in
    // place by mremap, it died of SIGBUS past pages.img's end).
    let (code, out, err) = finish(restore(&img, &["--map"]));
    assert_eq!(code, 0, "map: {out}\n{err}");
    assert!(maps_line(&out) > 0, "{out}");
    assert!(
        out.contains("DONTNEED captured\nREALLOC kept\nPASS check"),
        "{out}"
    );
    let (code, out, _) = cryo_cmd(&["restore", "--map", "--dry-run", img.to_str().unwrap()]);
    assert_eq!(code, 0);
    let mapped: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("map: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("dry run says what is mapped: {out}"));
    // 24 MiB block + most of the 4 MiB mapping and of the brk heap; the
    // first page of each of the two malloc'd blocks is copied, and said so.
    assert!(mapped > 6000, "{out}");
    assert!(
        out.contains("; 2 blocks glibc's malloc mmapped for itself copied at the first page"),
        "{out}"
    );
}

#[test]
fn pages_verified_once_and_a_change_is_caught() {
    let img = capture("check", "map-verify", &[]);
    let stamp = img.join("verified");
    // Capture stamps the pages it wrote as checked, with the line a full
    // check records: without it, the first restore checks and writes it.
    let md = std::fs::metadata(&stamp).expect("capture stamps its image");
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let first = std::fs::read_to_string(&stamp).unwrap();
    std::fs::remove_file(&stamp).unwrap();
    let (code, out, err) = finish(restore(&img, &["--map"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let md = std::fs::metadata(&stamp).expect("the first restore records its check");
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&stamp).unwrap(), first);
    // Unchanged: the stamp stands.
    let (code, _, _) = finish(restore(&img, &["--map"]));
    assert_eq!(code, 0);
    assert_eq!(std::fs::read_to_string(&stamp).unwrap(), first);
    // One byte of pages.img changed in place (same inode, same size):
    // the stamp no longer matches, the pages are checked again and the
    // restore refused before anything is torn down.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(img.join(cryo_image::PAGES_FILE))
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 5 * 4096 + 7).unwrap();
        b[0] ^= 0x10;
        f.write_all_at(&b, 5 * 4096 + 7).unwrap();
    }
    for mode in [&["--map"][..], &[]] {
        let (code, out, err) = finish(restore(&img, mode));
        assert_eq!(code, 1, "{mode:?}: {out}\n{err}");
        assert!(err.contains("checksum"), "{mode:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(out.is_empty(), "nothing ran: {out}");
    }
}

#[test]
fn mapped_restore_captured_again_stands_alone() {
    let img = capture("again", "map-again", &[]);
    let mut r = restore(&img, &["--map"]);
    let pid = r.id() as i32;
    wait_for(
        "the mapped restore to stop again",
        Duration::from_secs(20),
        || state(pid) == Some('T'),
    );
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(maps.contains("/pages.img"), "mapped: {maps}");
    let img2 = scratch("map-again2").join("img");
    let (code, _, err) = cryo_cmd(&[
        "capture",
        "--kill",
        &pid.to_string(),
        img2.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "capture of a mapped restore: {err}");
    let _ = r.wait();
    let mut first = String::new();
    let _ = r.stdout.take().unwrap().read_to_string(&mut first);
    assert!(maps_line(&first) > 0, "{first}");
    // The new image holds every page itself: the old one can go.
    std::fs::remove_dir_all(&img).unwrap();
    let l = cryo_image::load::LoadedImage::open(&img2).unwrap();
    let im = l.image().unwrap();
    for v in im.vmas().iter() {
        let name = im.str(v.name).unwrap_or("");
        assert!(
            !name.contains("pages.img"),
            "a mapping of the old image: {name}"
        );
    }
    for mode in [&[][..], &["--map"], &["--lazy", "--lazy-min-mib=0"]] {
        let (code, out, err) = finish(restore(&img2, mode));
        assert_eq!(code, 0, "{mode:?}: {out}\n{err}");
        assert!(out.ends_with("PASS again\n"), "{mode:?}: {out}");
        assert_eq!(maps_line(&out) > 0, mode == ["--map"], "{out}");
    }
}

#[test]
fn mapped_clones_keep_their_own_writes() {
    let img = capture("clone", "map-clone", &[]);
    let mut clones: Vec<(Child, BufReader<std::process::ChildStdout>)> = (0..3)
        .map(|_| {
            let mut c = restore(&img, &["--map"]);
            let out = BufReader::new(c.stdout.take().unwrap());
            (c, out)
        })
        .collect();
    // Every clone writes its own value into every page, and only then
    // does any of them check.
    for (i, (c, out)) in clones.iter_mut().enumerate() {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("MAPS ") && line.trim() != "MAPS 0",
            "{line}"
        );
        writeln!(c.stdin.as_mut().unwrap(), "{}", i + 7).unwrap();
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), format!("WROTE {}", i + 7));
    }
    for (mut c, mut out) in clones {
        writeln!(c.stdin.as_mut().unwrap(), "check").unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let st = c.wait().unwrap();
        assert!(st.success() && rest == "PASS clone\n", "{st:?} {rest}");
    }
}

#[test]
fn map_refuses_a_program_using_jemalloc() {
    let lib = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
    assert!(
        Path::new(lib).exists(),
        "libjemalloc2 (installed with redis-server by scripts/install-test-deps.sh)"
    );
    let img = capture("check", "map-jemalloc", &[("LD_PRELOAD", lib)]);
    let (code, out, err) = finish(restore(&img, &["--map"]));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("--map is not safe") && err.contains("libjemalloc.so.2"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Copied, jemalloc's memory is right.
    let (code, out, err) = finish(restore(&img, &[]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.ends_with("PASS check\n"), "{out}");
}
