//! Shared helpers for cryo's end-to-end tests: building the target programs
//! in `tests/programs/`, running them, and waiting for their states.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn cryo() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cryo"))
}

/// Mark every inherited fd above 2 close-on-exec, once: the programs the
/// tests start must not inherit whatever the test runner was given (a
/// stray pipe at fd 251 would be captured as part of the target).
pub fn sanitize_fds() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        for fd in fds.into_iter().filter(|&fd| fd > 2) {
            // SAFETY: F_SETFD on an fd number; harmless if it is not open.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    });
}

/// Whether a test of this binary has failed (set by the panic hook
/// [`scratch_root`] installs).
static FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// This test binary's scratch root's name: `cryo-tests-NS-PID`, NS the
/// inode of its PID namespace (a PID means nothing in another one).
fn root_name() -> String {
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("pid:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .unwrap_or_default();
    format!("cryo-tests-{ns}-{}", std::process::id())
}

/// The directory every scratch directory of this test binary is made in,
/// `$TMPDIR/cryo-tests-NS-PID` (0700), also the `TMPDIR` of the programs
/// the tests start. It is removed when the binary exits with every test
/// passed, and kept (with a line saying where) when one failed. Made the
/// first time it is asked for, which also removes what test binaries of
/// this PID namespace that are no longer running left (killed, or
/// failed). (Not those of another namespace: a run there removed a
/// running suite's directories, whose PIDs it could not see.)
pub fn scratch_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        let own = root_name();
        let ns_prefix = own
            .rsplit_once('-')
            .map_or(own.clone(), |(n, _)| n.to_owned())
            + "-";
        if let Ok(dir) = std::fs::read_dir(&tmp) {
            for e in dir.flatten() {
                let name = e.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix(&ns_prefix))
                    .and_then(|p| p.parse::<u32>().ok())
                else {
                    continue;
                };
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let root = tmp.join(own);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create the scratch root");
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700));
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            FAILED.store(true, std::sync::atomic::Ordering::SeqCst);
            previous(info)
        }));
        extern "C" fn remove_root() {
            let root = std::env::temp_dir().join(root_name());
            if FAILED.load(std::sync::atomic::Ordering::SeqCst) {
                eprintln!("cryo tests: scratch directories kept in {}", root.display());
            } else {
                let _ = std::fs::remove_dir_all(&root);
            }
        }
        // SAFETY: atexit registers a function without arguments that
        // exit() calls once (libtest's main returns, or calls exit(101)
        // after a failure); it only touches the file system.
        unsafe { libc::atexit(remove_root) };
        root
    })
}

/// [`scratch_root`] as a string, for a program's arguments.
pub fn tmp() -> &'static str {
    scratch_root()
        .to_str()
        .expect("a UTF-8 temporary directory")
}

/// A fresh scratch directory for one test (in [`scratch_root`]).
pub fn scratch(tag: &str) -> PathBuf {
    let d = scratch_root().join(tag);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

fn newer(src: &Path, out: &Path) -> bool {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (m(src), m(out)) {
        (Some(s), Some(o)) => s > o,
        _ => true,
    }
}

fn run_build(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("building {what}: {e}; run scripts/install-test-deps.sh"));
    assert!(
        out.status.success(),
        "building {what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Build a target program (once per test binary) and return its path.
/// Names: `c-zdtm`, `c-zdtm-static`, `c-threads`, `c-socket`, `c-bigheap`, `c-lazy`, `c-fidelity`, `c-tree`, `c-mapped`, `c-altstack`, `c-exewatch`,
/// `rust-target`, `hs-datamap`, `hs-datamap-v0`, `hs-datamap-threaded`, `go-threads`,
/// `py-threads`, `py-seccomp`, `py-chroot`.
pub fn program(name: &str) -> PathBuf {
    sanitize_fds();
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let out_dir = root().join("target/test-programs");
    std::fs::create_dir_all(&out_dir).expect("create target/test-programs");
    let progs = root().join("tests/programs");
    // Build under a per-process name, then rename: test binaries run in parallel.
    let out = out_dir.join(name);
    let tmp = out_dir.join(format!(".{name}.{}", std::process::id()));
    let (src, mut cmd) = match name {
        "c-zdtm" | "c-zdtm-static" | "c-threads" | "c-socket" | "c-bigheap" | "c-lazy"
        | "c-fidelity" | "c-tree" | "c-mapped" | "c-altstack" | "c-exewatch" => {
            let base = name.trim_start_matches("c-").trim_end_matches("-static");
            let src = progs.join(format!("{base}.c"));
            let mut c = Command::new("cc");
            c.args(["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread"]);
            if name.ends_with("-static") {
                c.arg("-static");
            }
            c.arg("-o").arg(&tmp).arg(&src);
            (src, c)
        }
        "rust-target" => {
            let src = progs.join("rust_target.rs");
            let mut c = Command::new("rustc");
            c.args(["-O", "--edition", "2021", "-o"])
                .arg(&tmp)
                .arg(&src);
            (src, c)
        }
        "hs-datamap" | "hs-datamap-v0" | "hs-datamap-threaded" => {
            let src = progs.join("DataMap.hs");
            let odir = out_dir.join(format!("ghc-{name}-{}", std::process::id()));
            let mut c = Command::new("ghc");
            c.args(["-O2", "-v0", "-outputdir"]).arg(&odir);
            if name.ends_with("-v0") {
                c.args(["-rtsopts", "-with-rtsopts=-V0"]);
            }
            if name.ends_with("-threaded") {
                // The threaded RTS on two capabilities: worker threads,
                // the IO manager (epoll, eventfds, pipes) and the ticker
                // thread (a timerfd).
                c.args(["-threaded", "-rtsopts", "-with-rtsopts=-N2"]);
            }
            c.arg("-o").arg(&tmp).arg(&src);
            (src, c)
        }
        "go-threads" => {
            let src = progs.join("gothreads.go");
            let mut c = Command::new("go");
            c.args(["build", "-o"])
                .arg(&tmp)
                .arg(&src)
                .env("GOCACHE", out_dir.join("go-cache"))
                .env("GOPATH", out_dir.join("go-path"))
                .env("GO111MODULE", "off");
            (src, c)
        }
        "py-threads" | "py-seccomp" | "py-chroot" => {
            // A script: run by the system's Python (its #! line).
            let src = progs.join(format!("{}.py", name.replace('-', "_")));
            built.insert(name.to_owned(), src.clone());
            return src;
        }
        _ => panic!("unknown test program {name}"),
    };
    if newer(&src, &out) {
        run_build(&mut cmd, name);
        std::fs::rename(&tmp, &out).expect("rename built program");
        let _ = std::fs::remove_dir_all(out_dir.join(format!("ghc-{name}-{}", std::process::id())));
    }
    built.insert(name.to_owned(), out.clone());
    out
}

/// The path of `prog` from PATH; a test that needs a program from apt
/// says how to install it.
pub fn which(prog: &str) -> String {
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

/// Process state letter from /proc/PID/stat.
pub fn state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(") ")?.1.chars().next()
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A running target program.
pub struct Target {
    pub child: Child,
    pub pid: i32,
    pub stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
    /// stdout lines after READY.
    pub lines: Vec<String>,
}

impl Target {
    /// Start `program(name)` with args and wait for its READY line.
    pub fn start(name: &str, args: &[&str]) -> Target {
        let mut cmd = Command::new(program(name));
        cmd.args(args);
        Target::spawn(cmd, name)
    }

    /// Start a prepared command (a program of `program()`, maybe copied or
    /// with extra environment) and wait for its READY line.
    pub fn spawn(mut cmd: Command, name: &str) -> Target {
        sanitize_fds();
        // What the program makes in the temporary directory goes with
        // the tests' scratch directories.
        if !cmd.get_envs().any(|(k, _)| k == "TMPDIR") {
            cmd.env("TMPDIR", scratch_root());
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A program copied just now may still be open for writing in a
        // child another test thread is forking (until its exec closes
        // it): ETXTBSY for a moment. Try again.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 200 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => break r.unwrap_or_else(|e| panic!("starting {name}: {e}")),
            }
        };
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let stdin = child.stdin.take();
        let mut t = Target {
            pid: child.id() as i32,
            child,
            stdin,
            stdout: rx,
            stderr,
            lines: vec![],
        };
        let l = t.line(Duration::from_secs(60)).expect("READY line");
        assert_eq!(l, format!("READY {}", t.pid), "first line of {name}");
        t
    }

    /// Next stdout line.
    pub fn line(&mut self, timeout: Duration) -> Option<String> {
        self.stdout.recv_timeout(timeout).ok()
    }

    pub fn wait_stopped(&self) {
        wait_for("the target to stop", Duration::from_secs(30), || {
            state(self.pid) == Some('T')
        });
    }

    pub fn wait_sleeping(&self) {
        wait_for("the target to block", Duration::from_secs(30), || {
            state(self.pid) == Some('S')
        });
    }

    pub fn cont(&self) {
        // SAFETY: kill takes no pointers.
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
    }

    pub fn poke_stdin(&mut self) {
        if let Some(s) = self.stdin.as_mut() {
            s.write_all(b"x").expect("write to target stdin");
            s.flush().ok();
        }
    }

    /// Wait for exit; returns (exit code, last stdout line, stderr).
    pub fn finish(mut self) -> (i32, String, String) {
        let mut last = String::new();
        while let Some(l) = self.line(Duration::from_secs(60)) {
            last = l;
        }
        let st = self.child.wait().expect("wait target");
        let err = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new))
            .join()
            .unwrap_or_default();
        (st.code().unwrap_or(-1), last, err)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a program to completion with no capture: its PASS line.
pub fn plain_run(name: &str, args: &[&str], how: &str) -> String {
    let mut t = Target::start(name, args);
    match how {
        "stop" => {
            t.wait_stopped();
            t.cont();
        }
        "read" => t.poke_stdin(),
        _ => {}
    }
    let (code, last, err) = t.finish();
    assert_eq!(code, 0, "plain run of {name} failed: {last}\n{err}");
    assert!(last.starts_with("PASS "), "plain run of {name}: {last}");
    last
}

/// Write a packed restorer of `img` at `exe` (`cryo pack`).
pub fn pack_to(img: &Path, exe: &Path) {
    let (code, _, err) = cryo_cmd(&["pack", img.to_str().unwrap(), "-o", exe.to_str().unwrap()]);
    assert_eq!(code, 0, "pack: {err}");
}

/// Run a packed restorer to its end, stdin from /dev/null, with no stray
/// fd of the test's.
pub fn run_packed(exe: &Path) -> std::process::Output {
    sanitize_fds();
    Command::new(exe)
        .stdin(Stdio::null())
        .output()
        .expect("run the packed restorer")
}

/// Run cryo with args; returns (status code, stdout, stderr).
pub fn cryo_cmd(args: &[&str]) -> (i32, String, String) {
    sanitize_fds();
    outcome(Command::new(cryo()).args(args).output().expect("run cryo"))
}

/// A finished command's (status code, stdout, stderr).
pub fn outcome(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `cryo restore IMG` started under `strace STRACE...` (to delay one of
/// its calls), stdout and stderr piped.
pub fn restore_under_strace(strace: &[&str], img: &Path) -> Child {
    sanitize_fds();
    Command::new("strace")
        .args(strace)
        .arg(cryo())
        .arg("restore")
        .arg(img)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace (apt-get install strace; scripts/install-test-deps.sh)")
}

/// `cryo capture --kill [OPTIONS] PID IMG`, which must succeed.
pub fn capture_killed(pid: i32, img: &Path, options: &[&str]) {
    let pid = pid.to_string();
    let mut args = vec!["capture", "--kill"];
    args.extend_from_slice(options);
    args.extend([pid.as_str(), img.to_str().unwrap()]);
    let (code, _, err) = cryo_cmd(&args);
    assert_eq!(code, 0, "capture of {pid}: {err}");
}

/// Every PID of a captured tree (from `cryo inspect --json`).
pub fn tree_pids(img: &Path) -> Vec<i32> {
    let (code, out, err) = cryo_cmd(&["inspect", "--json", "--no-verify", img.to_str().unwrap()]);
    assert_eq!(code, 0, "inspect: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
    v["tree"]["processes"]
        .as_array()
        .expect("a tree")
        .iter()
        .map(|p| p["pid"].as_i64().unwrap() as i32)
        .collect()
}

/// Become the reaper of orphans: a killed tree's children are then ours to
/// wait for, not init's (which may never reap them: under `unshare
/// --pid`, PID 1 is whatever the command was).
pub fn adopt_orphans() {
    // SAFETY: integers only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Whether capture's search for a kept PID looks for `pid` (it skips
/// those below 1000 and round ones, multiples of 100 or 256).
pub fn pid_searched(pid: i32) -> bool {
    pid >= 1000 && pid % 100 != 0 && pid % 256 != 0
}

/// Make the next PID of this PID namespace one that capture's search for
/// a kept PID looks for ([`pid_searched`]), by raising `ns_last_pid`
/// (root only) when needed. A fresh machine or PID namespace starts low:
/// CI's nginx master once was PID 724. Other tests may take PIDs
/// meanwhile: check the PID you get.
pub fn next_pid_searched() {
    let path = "/proc/sys/kernel/ns_last_pid";
    let last: i32 = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut next = last.max(999) + 1;
    while !pid_searched(next) {
        next += 1;
    }
    if next != last + 1 {
        std::fs::write(path, (next - 1).to_string())
            .unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
}

/// Wait until the captured (and killed) tree is gone: its PIDs are free
/// (reaping those that became ours).
pub fn wait_gone(pids: &[i32]) {
    wait_for(
        "the killed tree to be reaped",
        Duration::from_secs(30),
        || {
            pids.iter().all(|&p| {
                let mut st = 0;
                // SAFETY: waitpid writes one int we own; a PID that is not our
                // child fails with ECHILD and changes nothing.
                unsafe { libc::waitpid(p, &mut st, libc::WNOHANG) };
                state(p).is_none()
            })
        },
    );
}

/// `sh -c SCRIPT` leading a process group of its own, as a script a
/// job-control shell runs (what it starts stays in that group), stdin
/// /dev/null: its status and output.
pub fn sh_in_own_group(script: &str) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    sanitize_fds();
    Command::new("sh")
        .args(["-c", script])
        .process_group(0)
        .stdin(Stdio::null())
        .output()
        .expect("sh")
}

/// A pids cgroup of the test's own (under v1's pids hierarchy, or v2's
/// root with the pids controller enabled for its children), removed
/// however the test ends.
pub struct PidsCgroup {
    /// The hierarchy's mount it is made under.
    pub root: &'static str,
    pub dir: PathBuf,
}

impl PidsCgroup {
    pub fn new(tag: &str) -> PidsCgroup {
        let root = if Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists() {
            "/sys/fs/cgroup/pids"
        } else {
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+pids");
            "/sys/fs/cgroup"
        };
        let dir = Path::new(root).join(format!("cryo-test-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("a pids cgroup of our own (root)");
        PidsCgroup { root, dir }
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}
