//! Everyday interpreters from apt, kept mid-session: what cryo is for (an
//! interpreter that has imported and built what it needs starts at once).
//! Each reads its commands from a pipe: the first part builds state and
//! prints READY, the program blocks reading the rest, and is captured
//! there (`--kill`). Each restore (eager, `--lazy`, `--map`, a packed
//! restorer) is given the rest of the commands on its stdin and must print
//! exactly what an uninterrupted run with the whole input prints, and exit
//! as it does.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

/// Installed, or the test says how to install it.
fn which(prog: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .expect("sh");
    let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !p.is_empty(),
        "{prog} is not installed: run scripts/install-test-deps.sh"
    );
    p
}

/// `argv` fed `input` whole on stdin: (status, stdout).
fn uninterrupted(argv: &[&str], input: &str) -> (i32, String) {
    sanitize_fds();
    let mut c = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Every thread of `pid` asleep, three looks in a row 20 ms apart: the
/// program has read all it was given and waits for more.
fn settled(pid: i32) {
    let mut calm = 0;
    wait_for(
        "the program to wait for input",
        Duration::from_secs(60),
        || {
            let asleep = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| {
                    d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                        .all(|t| {
                            std::fs::read_to_string(format!("/proc/{pid}/task/{t}/stat"))
                                .ok()
                                .and_then(|s| s.rsplit_once(") ").map(|x| x.1.starts_with('S')))
                                .unwrap_or(true)
                        })
                })
                .unwrap_or(false);
            calm = if asleep { calm + 1 } else { 0 };
            if calm < 3 {
                std::thread::sleep(Duration::from_millis(20));
            }
            calm >= 3
        },
    );
}

/// Run `cmd` (a restore) with `input` on stdin: (status, stdout, stderr).
fn fed(mut cmd: Command, input: &str) -> (i32, String, String) {
    sanitize_fds();
    let mut c = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the restore");
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    outcome(c.wait_with_output().unwrap())
}

/// The round trip described at the top, for `argv` with its input in two
/// parts; the second part must not be needed before READY.
fn session(tag: &str, argv: &[&str], before: &str, after: &str) {
    let prog = which(argv[0]);
    let mut argv: Vec<&str> = argv.to_vec();
    argv[0] = &prog;
    let want = uninterrupted(&argv, &format!("{before}{after}"));

    sanitize_fds();
    let mut c = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = c.id() as i32;
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(before.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut first = String::new();
    while !first.lines().any(|l| l.trim_end() == "READY") {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "{tag} ended before READY: {first}"
        );
        first.push_str(&line);
    }
    settled(pid);
    let img = scratch(&format!("interp-{tag}")).join("img");
    capture_killed(pid, &img, &[]);
    let _ = c.wait();
    drop(stdin);

    let check = |how: &str, got: (i32, String, String)| {
        assert_eq!(
            (got.0, format!("{first}{}", got.1)),
            want,
            "{tag} restored {how} (stderr: {})",
            got.2
        );
    };
    for mode in [&[][..], &["--lazy"], &["--map"]] {
        let mut cmd = Command::new(cryo());
        cmd.arg("restore").args(mode).arg(&img);
        check(&format!("{mode:?}"), fed(cmd, after));
    }
    let exe = img.with_file_name(format!("{tag}.restored"));
    pack_to(&img, &exe);
    check("by a packed restorer", fed(Command::new(&exe), after));
}

/// GHCi with Data.Map imported and a map of 20 000 entries bound (GHC's
/// threaded RTS, its IO manager waiting on the pipe): the binding is there
/// after every restore.
#[test]
fn ghci_keeps_its_bindings_and_imports() {
    session(
        "ghci",
        &["ghci", "-v0", "-ignore-dot-ghci"],
        "import qualified Data.Map as M\n\
         let m = M.fromList [(i, i * 2) | i <- [1 .. 20000 :: Int]]\n\
         M.size m `seq` putStrLn \"READY\"\n",
        "print (M.foldr (+) 0 m, M.lookup 777 m)\n:q\n",
    );
}

/// bash reading a script from a pipe: an associative array, a function,
/// and its exit status.
#[test]
fn bash_keeps_its_variables_and_functions() {
    session(
        "bash",
        &["bash", "--norc", "--noprofile", "-s"],
        "declare -A h; for i in $(seq 1 2000); do h[$i]=$((i * 3)); done\n\
         f() { echo \"f $1 ${#h[@]}\"; }\n\
         echo READY\n",
        "f go; s=0; for v in \"${h[@]}\"; do s=$((s + v)); done; echo $s\nexit 5\n",
    );
}

/// sqlite3's shell with an in-memory table and an index.
#[test]
fn sqlite3_keeps_its_in_memory_database() {
    session(
        "sqlite3",
        &["sqlite3", "-batch"],
        "create table t(a integer, b text); create index ta on t(a);\n\
         with recursive n(i) as (select 1 union all select i + 1 from n where i < 5000)\n\
         insert into t select i, printf('row %d', i) from n;\n\
         .print READY\n",
        "select count(*), sum(a), max(b) from t where a % 7 = 3;\n",
    );
}

/// perl with a hash of 5 000 entries, reading the rest of its input.
#[test]
fn perl_keeps_its_hash() {
    session(
        "perl",
        &[
            "perl",
            "-e",
            "$| = 1; my %h = map { $_ => $_ * 2 } 1 .. 5000; print \"READY\\n\"; \
             my $l = <STDIN>; my $s = 0; $s += $_ for values %h; print \"$s $l\"; exit 3;",
        ],
        "",
        "go\n",
    );
}
