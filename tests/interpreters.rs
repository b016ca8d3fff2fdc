//! Everyday interpreters from apt, kept mid-session: what cryo is for (an
//! interpreter that has imported and built what it needs starts at once).
//! Each reads its commands from a pipe: the first part builds state and
//! prints READY, the program blocks reading the rest, and is captured
//! there (`--kill`). Each restore (eager, `--lazy`, `--map`, a packed
//! restorer) is given the rest of the commands on its stdin and must print
//! exactly what an uninterrupted run with the whole input prints, and exit
//! as it does.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// How long any one run may take before the test kills it and fails.
const LIMIT: Duration = Duration::from_secs(120);

/// `cmd` with `input` written to its stdin (a write refused because it
/// already exited is left for the outcome to show), waited for at most
/// [`LIMIT`]: (status, stdout, stderr).
fn fed(mut cmd: Command, input: &str, what: &str) -> (i32, String, String) {
    sanitize_fds();
    let mut c = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut stdin = c.stdin.take().unwrap();
    let input = input.to_owned();
    // (Written from a thread: a program that does not read would block
    // the write, and the deadline below could not be kept.)
    std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = pipe(c.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>));
    let err = pipe(c.stderr.take().map(|e| Box::new(e) as Box<dyn Read + Send>));
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = c.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > LIMIT {
            let _ = c.kill();
            let _ = c.wait();
            panic!("{what}: still running after {LIMIT:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (
        status.code().unwrap_or(-1),
        out.join().unwrap(),
        err.join().unwrap(),
    )
}

/// Every thread of `pid` asleep, three looks in a row 20 ms apart. READY
/// was its last command, so the program has read all it was given; this
/// only lets it settle into its wait. (What the test relies on: nothing
/// is printed after READY before the capture, or it would be lost with
/// the first run's pipe: ghci -v0, bash, sqlite3 -batch and perl print no
/// prompt.)
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

/// The round trip described at the top, for `argv` with its input in two
/// parts; the second part must not be needed before READY.
fn session(tag: &str, argv: &[&str], before: &str, after: &str) {
    let prog = which(argv[0]);
    let mut argv: Vec<&str> = argv.to_vec();
    argv[0] = &prog;
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    let (code, out, _) = fed(
        cmd,
        &format!("{before}{after}"),
        &format!("{tag}, uninterrupted"),
    );
    let want = (code, out);

    let dir = scratch(&format!("interp-{tag}"));
    sanitize_fds();
    let mut c = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .expect("spawn");
    let pid = c.id() as i32;
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(before.as_bytes()).unwrap();
    stdin.flush().unwrap();
    // Lines until READY, from a thread, each waited for at most LIMIT.
    let (tx, rx) = std::sync::mpsc::channel();
    let out = c.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut first = String::new();
    while !first.lines().any(|l| l.trim_end() == "READY") {
        match rx.recv_timeout(LIMIT) {
            Ok(Ok(line)) => {
                first.push_str(&line);
                first.push('\n');
            }
            other => {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "{tag}: no READY ({other:?}); it printed {first:?}, stderr {:?}",
                    std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
                );
            }
        }
    }
    settled(pid);
    let img = dir.join("img");
    capture_killed(pid, &img, &[]);
    let _ = c.wait();
    drop(stdin);

    let check = |how: &str, got: (i32, String, String)| {
        assert_eq!(
            (got.0, format!("{first}{}", got.1)),
            want,
            "{how} (stderr: {})",
            got.2
        );
    };
    for mode in [&[][..], &["--lazy"], &["--map"]] {
        let mut cmd = Command::new(cryo());
        cmd.arg("restore").args(mode).arg(&img);
        let how = format!("{tag}, cryo restore {mode:?}");
        check(&how, fed(cmd, after, &how));
    }
    let exe = img.with_file_name(format!("{tag}.restored"));
    pack_to(&img, &exe);
    let how = format!("{tag}, its packed restorer");
    check(&how, fed(Command::new(&exe), after, &how));
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
