#!/usr/bin/env python3
"""CRIU's ZDTM "static" tests as a regression test of cryo.

CRIU's test suite (test/zdtm/static in CRIU's source) is a set of small
self-checking programs: each one sets up some kernel state (a mapping, a
pipe with data, an unlinked file, a signal handler...), daemonizes, and
when it gets SIGTERM checks that the state is still exactly what it made
and prints PASS or FAIL. CRIU's zdtm.py dumps and restores them between
the start and the SIGTERM; this script does the same with cryo:

  plain   start the test, SIGTERM, PASS?               (the test works here)
  eager   start, `cryo capture --kill`, `cryo restore`, SIGTERM, PASS?
  lazy    the same with `cryo restore --lazy`
  map     the same with `cryo restore --map` (memory mapped from pages.img)
  cgroups the same with `cryo restore --cgroups captured` (each process
          back in the cgroups it was captured in; only for tests that name
          it: a single process stays in the restorer's cgroups by default)
  pidns   the same with `cryo restore --pidns` (every PID as captured, the
          root's too, in a PID namespace of its own); only for tests that
          name it: a child that stored its parent's PID (zdtm's task_waiter
          waits for a message from getppid() as it was) needs the root's
          own PID back, which a plain restore does not give
  refused start, `cryo capture --kill` must fail and name the obstacle;
          the original must be running as before and still PASS
          (cryo must never harm its target)

What each test must do is in an expectations file (tests/zdtm-expected.txt):

  NAME pass                 # plain, eager, lazy and map must all PASS
  NAME pass except map      # ... in every mode but map (a documented difference)
  NAME pass in pidns        # plain, and restored in these modes only
  NAME pass with OPTIONS    # every mode, captured with these options (comma-separated,
                            # e.g. --tcp-established); run one at a time, after the
                            # others (such tests bind fixed ports)
  NAME refused SUBSTRING    # capture must refuse, its message contain SUBSTRING

Nothing of CRIU's is in this repository: the tests are built at run time
from the CRIU source that scripts/build-criu.sh fetches (target/criu/
criu-*). test/zdtm's lib/, static/ and Makefile.inc are copied into
target/zdtm/<criu-version>/ (the fetched tree is never modified) and only
the tests named in the expectations file are built there. Each test's start
command comes from static/Makefile (its NAME.pid rule, printed by make -n).

The restored test gets a new pid (the `cryo restore` command's, as for any
user of cryo) and fds 0-2 of the restore command; a zdtm test's stdout and
stderr are its log, so its PASS line is read from the restorer's output
(work/<mode>/<test>/restore.log). (zdtm's test_fini renames NAME.out.inprogress
to NAME.out only in the pid that started; that does not matter here.)

Process bookkeeping: zdtm tests daemonize (the start command exits once the
test is ready), so this script makes itself a child subreaper to adopt
them, and one thread reaps every child (os.waitpid(-1)) and records its
exit status; processes are started with os.posix_spawn and waited for
through that record, never through subprocess (which would race with it).

Usage:
  scripts/zdtm.py --cryo PATH/cryo --expect tests/zdtm-expected.txt
  scripts/zdtm.py --cryo PATH/cryo --expect FILE --only fifo,pipe01 --keep
  scripts/zdtm.py --cryo PATH/cryo --survey all   # try every host test, print
                                                  # expectation lines for them
  scripts/zdtm.py --cryo PATH/cryo --with-criu target/criu/criu-4.1.1/criu/criu \
      --survey a,b          # the same tests through CRIU itself (as root), to compare
Exit status: 0 every expectation met, 1 some not, 2 cannot run (no CRIU
source, build failure of the zdtm library, bad arguments).
"""
import argparse
import ast
import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTLE = 0.1          # seconds between a step and the next (zdtm.py waits 0 for static tests)
STOP_TIMEOUT = 20     # SIGTERM to exit (a test checks its state then; ghost files take a while)
RESTORE_TIMEOUT = 60  # restore command to a running program
CAPTURE_TIMEOUT = 120

# ---------------------------------------------------------------------------
# Children: spawned with posix_spawn, reaped by one thread.

_exits = {}                   # pid -> (monotonic time of reaping, exit code or 128+signal)
_cond = threading.Condition()
_WALL = 0x40000000            # __WALL: children whatever their exit signal
_started = []                 # (pid, since) of every test and restore started: killed at the end


def _reaper():
    while True:
        try:
            pid, status = os.waitpid(-1, _WALL)
        except ChildProcessError:
            time.sleep(0.05)  # no children right now
            continue
        except InterruptedError:
            continue
        code = os.waitstatus_to_exitcode(status)
        with _cond:
            _exits[pid] = (time.monotonic(), code if code >= 0 else 128 - code)
            _cond.notify_all()


def start_reaper():
    # PR_SET_CHILD_SUBREAPER: daemonized tests (and cryo's lazy page server)
    # are adopted by this process instead of pid 1, so they are reaped here
    # and their exit statuses seen, in a pid namespace too.
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:
        sys.exit('zdtm: prctl(PR_SET_CHILD_SUBREAPER) failed')
    threading.Thread(target=_reaper, daemon=True).start()


def exited(pid, since):
    """Exit code of pid if it exited after `since` (monotonic), else None."""
    with _cond:
        e = _exits.get(pid)
    return e[1] if e and e[0] >= since else None


def wait_exit(pid, since, timeout):
    """Wait for pid (started after `since`) to exit; its code, or None on timeout."""
    with _cond:
        ok = _cond.wait_for(lambda: pid in _exits and _exits[pid][0] >= since, timeout)
        return _exits[pid][1] if ok else None


def spawn(argv, cwd, env, log, setsid=False):
    """Start argv in cwd with stdin /dev/null and stdout+stderr appended to log.
    `env -C` changes directory (posix_spawn has no cwd argument)."""
    acts = [(os.POSIX_SPAWN_OPEN, 0, '/dev/null', os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2)]
    full = ['/usr/bin/env', '-C', cwd] + argv
    return os.posix_spawn(full[0], full, env, file_actions=acts, setsid=setsid)


def run(argv, cwd, env, log, timeout):
    """spawn() and wait: exit code, or None after killing it on timeout."""
    t0 = time.monotonic()
    pid = spawn(argv, cwd, env, log)
    rc = wait_exit(pid, t0, timeout)
    if rc is None:
        kill(pid, t0, signal.SIGKILL)
        wait_exit(pid, t0, 10)
    return rc


def kill_leftovers():
    for pid, since in _started:
        kill(pid, since, signal.SIGKILL)
    # And every process left under this one (a subreaper): a restored
    # tree's children outlive a killed `cryo restore` (a survey of stop 40
    # left restored caps00 and fifo-rowo-pair spinning for an hour).
    for p in descendants(os.getpid()):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill(pid, since, sig):
    if exited(pid, since) is None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def running_test(pid, binary, below):
    """Whether pid (below: a process under pid) runs binary, untraced."""
    pids = descendants(pid) if below else [pid]
    for p in pids:
        try:
            exe = os.readlink('/proc/%d/exe' % p)
            with open('/proc/%d/status' % p) as f:
                tracer = [ln.split()[1] for ln in f if ln.startswith('TracerPid:')][0]
            if exe == binary and tracer == '0':
                return True
        except (OSError, IndexError):
            pass
    return False


def descendants(pid):
    kids = {}
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                ppid = int(f.read().rsplit(') ', 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out += kids.get(p, [])
        todo += kids.get(p, [])
    return out


def pstate(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            st = f.read()
    except OSError:
        return None
    return st[st.rfind(')') + 2:].split()[0]


def cleanup(work):
    """Remove the work dir, unmounting first whatever a test mounted in it
    and left behind (zdtm's cgroup tests mount cgroupfs in their dir)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    with open('/proc/self/mountinfo') as f:
        mps = [ln.split()[4].encode().decode('unicode_escape') for ln in f]
    for mp in sorted((m for m in mps if m.startswith(work + '/')), key=len, reverse=True):
        libc.umount2(mp.encode(), 2)   # MNT_DETACH
    shutil.rmtree(work, ignore_errors=True)


def tail(path, n=1500):
    try:
        with open(path, 'rb') as f:
            b = f.read()
    except OSError:
        return ''
    return b[-n:].decode('utf-8', 'replace')


def has_pass(*paths):
    # zdtm logs "HH:MM:SS.mmm: PID: PASS" (sometimes without a final newline)
    return any(re.search(r'\bPASS\b', tail(p, 1 << 20)) for p in paths)


# ---------------------------------------------------------------------------
# Building the tests from CRIU's source.

def find_criu_src(arg):
    if arg:
        cands = [arg]
    else:
        cands = sorted(glob.glob(os.path.join(ROOT, 'target/criu/criu-*')), reverse=True)
    for c in cands:
        if os.path.isfile(os.path.join(c, 'test/zdtm/static/Makefile')):
            return os.path.abspath(c)
    return None


def make_env():
    env = dict(os.environ)
    # cargo's jobserver (MAKEFLAGS with fds this process no longer has) would
    # confuse make.
    for k in ('MAKEFLAGS', 'MFLAGS', 'MAKELEVEL', 'CARGO_MAKEFLAGS'):
        env.pop(k, None)
    return env


def prepare_build_dir(src, build):
    """Copy test/zdtm's lib, static and Makefile.inc into build (once)."""
    stamp = os.path.join(build, '.copied-from')
    if os.path.exists(stamp) and open(stamp).read() == src:
        return
    shutil.rmtree(build, ignore_errors=True)
    zdtm = os.path.join(src, 'test/zdtm')
    os.makedirs(build)
    for d in ('lib', 'static'):
        shutil.copytree(os.path.join(zdtm, d), os.path.join(build, d), symlinks=True)
    shutil.copy2(os.path.join(zdtm, 'Makefile.inc'), build)
    with open(stamp, 'w') as f:
        f.write(src)


def build(build_dir, names, jobs, log):
    """Build the zdtm library and the named tests (make -k: one test that
    fails to build is reported, not fatal). Returns the names not built."""
    static = os.path.join(build_dir, 'static')
    with open(log, 'wb') as f:
        # the library first: a failure there is fatal and reported as such
        r = subprocess.run(['make', '-C', os.path.join(build_dir, 'lib'), '-j%d' % jobs],
                           stdout=f, stderr=subprocess.STDOUT, env=make_env())
        if r.returncode != 0:
            sys.stdout.write(tail(log, 3000))
            sys.exit('zdtm: building the zdtm library failed (log: %s)' % log)
        subprocess.run(['make', '-C', static, '-k', '-j%d' % jobs, '--no-print-directory'] + names,
                       stdout=f, stderr=subprocess.STDOUT, env=make_env())
    return [n for n in names if not os.access(os.path.join(static, n), os.X_OK)]


def start_commands(static, names):
    """Each test's start command, from its NAME.pid rule in static/Makefile:
    `make -n -o NAME NAME.pid` prints `./NAME --pidfile=... --outfile=...`."""
    args = ['make', '-s', '-n', '--no-print-directory', '-C', static]
    for n in names:
        args += ['-o', n]
    out = subprocess.run(args + [n + '.pid' for n in names], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=make_env(), text=True)
    cmds = {}
    for line in out.stdout.splitlines():
        w = shlex.split(line)
        if w and w[0].startswith('./') and w[0][2:] in names:
            cmds[w[0][2:]] = w
    return cmds


def all_tests(static):
    """Every test the static Makefile knows (its TST list)."""
    out = subprocess.run(['make', '-s', '--no-print-directory', '-C', static, '-f', 'Makefile',
                          '-f', '/dev/stdin', 'zdtm-print-tests'],
                         input='zdtm-print-tests:\n\t@echo $(TST)\n', stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=make_env(), text=True)
    return out.stdout.split()


def load_desc(static, name):
    """NAME.desc: a Python dict literal (flavor, flags, timeout...)."""
    p = os.path.join(static, name + '.desc')
    try:
        return ast.literal_eval(open(p).read() or '{}')
    except (OSError, ValueError, SyntaxError):
        return {}


def flags(desc):
    return desc.get('flags', '').split()


def not_runnable(static, name, desc):
    """Why zdtm.py would not run this test on the host (flavor h), or None."""
    if 'h' not in desc.get('flavor', 'h ns uns').split():
        return 'not a host-flavor test (flavor %s)' % desc['flavor']
    if 'arch' in desc and 'x86_64' not in desc['arch'].split():
        return 'arch ' + desc['arch']
    for f in ('crfail', 'noauto'):
        if f in flags(desc):
            return 'flag ' + f
    cs = os.path.join(static, name + '.checkskip')
    if os.access(cs, os.X_OK) and subprocess.call([cs], cwd=static, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL) != 0:
        return 'its checkskip says this machine lacks what it needs'
    return None


# ---------------------------------------------------------------------------
# Running one test.

class Test:
    def __init__(self, name, argv, desc, static, work, cryo):
        self.name, self.argv, self.desc = name, argv, desc
        self.binary = os.path.realpath(os.path.join(static, name))   # as /proc/PID/exe shows it
        self.work, self.cryo = work, cryo
        self.timeout = float(desc.get('timeout', 30))
        # more `cryo capture` options (`NAME pass with OPTIONS`)
        self.capture_args = []
        # start it without dropping to ZDTM_UID (--with-criu)
        self.as_root = False

    def env(self):
        env = {'TMPDIR': '/tmp', 'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
               'ZDTM_THREAD_BOMB': '5'}
        if 'suid' not in flags(self.desc) and not self.as_root:
            # as zdtm.py: the test drops to these ids after its set-up
            env.update(ZDTM_UID='18943', ZDTM_GID='58467', ZDTM_GROUPS='27495 48244')
        return env

    def outs(self, wd):
        o = os.path.join(wd, self.name + '.out')
        return [o, o + '.inprogress']

    def start(self, wd):
        """Start the test in a fresh wd; (pid, since) or raise Failed."""
        shutil.rmtree(wd, ignore_errors=True)
        os.makedirs(wd)
        os.chmod(wd, 0o777)   # the test writes its files there after dropping to ZDTM_UID
        argv = [self.binary] + self.argv[1:]
        since = time.monotonic()
        rc = run(argv, wd, self.env(), os.path.join(wd, 'start.log'), self.timeout)
        pidfile = os.path.join(wd, self.name + '.pid')
        if rc != 0 or not os.path.exists(pidfile):
            raise Failed('did not start (%s): %s %s' % (
                'timeout' if rc is None else 'exit %d' % rc, tail(os.path.join(wd, 'start.log'), 400),
                tail(self.outs(wd)[1], 400)))
        pid = int(open(pidfile).read().strip())
        _started.append((pid, since))
        time.sleep(SETTLE)
        return pid, since

    def stop(self, pid, since):
        """SIGTERM, wait; its exit code, or raise Failed if it hangs."""
        kill(pid, since, signal.SIGTERM)
        rc = wait_exit(pid, since, STOP_TIMEOUT)
        if rc is None:
            kill(pid, since, signal.SIGKILL)
            wait_exit(pid, since, 10)
            raise Failed('still running %d s after SIGTERM (killed)' % STOP_TIMEOUT)
        return rc

    def check_original(self, wd, pid, since, what):
        self.stop(pid, since)
        if not has_pass(*self.outs(wd)):
            raise Failed('%s: no PASS: %s' % (what, (tail(self.outs(wd)[0], 600)
                                                     or tail(self.outs(wd)[1], 600)).strip()))

    def capture(self, wd, pid):
        img = os.path.join(wd, 'img')
        log = os.path.join(wd, 'capture.log')
        # (CRYO_ZDTM_CAPTURE_ARGS: more capture options for a survey, e.g.
        # --tcp-established for the TCP tests.)
        extra = self.capture_args + os.environ.get('CRYO_ZDTM_CAPTURE_ARGS', '').split()
        rc = run([self.cryo, 'capture', '-q', '--kill', *extra, str(pid), img], wd,
                 dict(os.environ), log, CAPTURE_TIMEOUT)
        if rc is None:
            raise Failed('cryo capture still running after %d s (killed)' % CAPTURE_TIMEOUT)
        with open(log, 'rb') as f:
            msg = f.read().decode('utf-8', 'replace').strip()
        return rc, msg, img

    def plain(self):
        wd = os.path.join(self.work, 'plain', self.name)
        pid, since = self.start(wd)
        self.check_original(wd, pid, since, 'plain run')
        return 'plain ok'

    def restored(self, mode):
        """eager, lazy or map: capture --kill, restore, SIGTERM, PASS."""
        wd = os.path.join(self.work, mode, self.name)
        pid, since = self.start(wd)
        rc, msg, img = self.capture(wd, pid)
        if rc != 0:
            self.stop(pid, since)
            raise Failed('%s: capture refused (exit %d): %s' % (mode, rc, msg))
        if wait_exit(pid, since, 10) is None:
            kill(pid, since, signal.SIGKILL)
            raise Failed('%s: the original still runs after capture --kill' % mode)
        log = os.path.join(wd, 'restore.log')
        args = [self.cryo, 'restore'] + MODE_ARGS[mode] + [img]
        t0 = time.monotonic()
        # a session of its own, as the daemonized original had
        rpid = spawn(args, wd, dict(os.environ), log, setsid=True)
        _started.append((rpid, t0))
        # The restored program runs once its exe is the test again and no
        # tracer is attached (lazy restores finish through ptrace).
        while True:
            rc = exited(rpid, t0)
            if rc is not None:
                raise Failed('%s: restore exited with %d before SIGTERM:\n%s' % (mode, rc, tail(log)))
            # (--pidns: `cryo restore` stays, as the parent of the
            # namespace's init, whose child is the test)
            if running_test(rpid, self.binary, mode == 'pidns'):
                break
            if time.monotonic() - t0 > RESTORE_TIMEOUT:
                kill(rpid, t0, signal.SIGKILL)
                wait_exit(rpid, t0, 10)
                raise Failed('%s: not running %d s after cryo restore:\n%s' % (mode, RESTORE_TIMEOUT, tail(log)))
            time.sleep(0.01)
        secs = time.monotonic() - t0
        time.sleep(SETTLE)
        try:
            rc = self.stop(rpid, t0)
        except Failed as e:
            raise Failed('%s: restored test %s:\n%s' % (mode, e, tail(log)))
        if rc != 0 or not has_pass(log):
            raise Failed('%s: restored test exited %d%s:\n%s' % (
                mode, rc, '' if has_pass(log) else ' without PASS', tail(log)))
        return '%s (running again %.2fs after cryo restore)' % (mode, secs)

    def with_criu(self, criu):
        """The same test through CRIU itself (`criu dump`, which kills it,
        then `criu restore -d`): 'criu pass', or raise Failed. For
        comparing what CRIU brings back on this machine with cryo."""
        # As root: CRIU reads the test's rlimits with prlimit, which
        # needs CAP_SYS_RESOURCE for another user's process (absent on
        # this machine: every test that drops to ZDTM_UID fails to dump).
        self.as_root = True
        wd = os.path.join(self.work, 'criu', self.name)
        pid, since = self.start(wd)
        img = os.path.join(wd, 'criu-img')
        os.makedirs(img)
        opts = ['--shell-job', '--file-locks', '--tcp-established', '--ext-unix-sk', '-v4']
        rc = run([criu, 'dump', '-t', str(pid), '-D', img, '-o', 'dump.log'] + opts, wd,
                 dict(os.environ), os.path.join(wd, 'criu-dump.out'), CAPTURE_TIMEOUT)
        if rc != 0:
            kill(pid, since, signal.SIGKILL)
            raise Failed('criu dump failed (%s): %s' % (rc, tail(os.path.join(img, 'dump.log'), 300)))
        if wait_exit(pid, since, 10) is None:
            kill(pid, since, signal.SIGKILL)
            raise Failed('the original still runs after criu dump')
        t0 = time.monotonic()
        rc = run([criu, 'restore', '-d', '-D', img, '-o', 'restore.log'] + opts, wd,
                 dict(os.environ), os.path.join(wd, 'criu-restore.out'), RESTORE_TIMEOUT)
        if rc != 0:
            raise Failed('criu restore failed (%s): %s' % (rc, tail(os.path.join(img, 'restore.log'), 300)))
        # Restored with its PID, detached (not our child): SIGTERM, then
        # poll until it is gone.
        time.sleep(SETTLE)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            raise Failed('criu restore: the test is not running')
        while pstate(pid) not in (None, 'Z', 'X'):
            if time.monotonic() - t0 > STOP_TIMEOUT:
                os.kill(pid, signal.SIGKILL)
                raise Failed('criu: still running %d s after SIGTERM' % STOP_TIMEOUT)
            time.sleep(0.02)
        if not has_pass(*self.outs(wd)):
            raise Failed('criu: restored test without PASS: %s' % tail(self.outs(wd)[0], 300).strip())
        return 'criu pass'

    def refused(self, want):
        wd = os.path.join(self.work, 'refused', self.name)
        pid, since = self.start(wd)
        rc, msg, img = self.capture(wd, pid)
        if rc == 0:
            # captured after all (and the original killed): restore it to say
            # whether the expectation can become `pass`
            if wait_exit(pid, since, 10) is None:
                kill(pid, since, signal.SIGKILL)
            try:
                self.restored('eager')
                verdict = 'and eager restore passes: expect `pass` if lazy does too'
            except Failed as e:
                verdict = 'and then failed: %s' % e
            raise Failed('expected a refusal (%r) but capture succeeded, %s' % (want, verdict))
        errs = []
        if want not in msg:
            errs.append('refusal without %r: %s' % (want, msg))
        if os.path.exists(img) and os.listdir(img):
            errs.append('a refused capture left files in %s' % img)
        st = pstate(pid)
        if exited(pid, since) is not None or st in (None, 'Z', 'X', 'T', 't'):
            errs.append('the target is %s after the refusal' % ('gone' if st in (None, 'Z', 'X') else 'stopped'))
            kill(pid, since, signal.SIGKILL)
        else:
            try:
                self.check_original(wd, pid, since, 'the original after the refusal')
            except Failed as e:
                errs.append(str(e))
        if errs:
            raise Failed('; '.join(errs))
        ls = msg.splitlines()
        first = ls[1].strip().lstrip('- ') if ls[0].endswith(':') and len(ls) > 1 else ls[0]
        return 'refused: ' + re.sub(r'^cryo: cannot capture pid \d+: ', '', first)[:160]


class Failed(Exception):
    pass


# ---------------------------------------------------------------------------

def parse_expect(path):
    exp = {}
    for i, line in enumerate(open(path), 1):
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        w = line.split(None, 2)
        if len(w) == 2 and w[1] == 'pass':
            exp[w[0]] = ('pass', None)
        elif len(w) == 3 and w[1] == 'pass' and w[2].startswith('except '):
            # modes the test is known to fail in, for a documented reason
            exp[w[0]] = ('pass', w[2].split()[1].split(','))
        elif len(w) == 3 and w[1] == 'pass' and w[2].startswith('in '):
            # restored in these modes only (a mode not run by default)
            exp[w[0]] = ('pass-in', w[2].split()[1].split(','))
        elif len(w) == 3 and w[1] == 'pass' and w[2].startswith('with '):
            # every mode, captured with these options
            exp[w[0]] = ('pass-with', w[2].split()[1].split(','))
        elif len(w) == 3 and w[1] == 'refused':
            exp[w[0]] = ('refused', w[2])
        else:
            sys.exit('zdtm: %s:%d: expected `NAME pass [except MODES | in MODES | with OPTIONS]` or '
                     '`NAME refused SUBSTRING`' % (path, i))
    return exp


# How each restore mode runs `cryo restore`.
MODE_ARGS = {'eager': [], 'lazy': ['--lazy'], 'map': ['--map'], 'pidns': ['--pidns'],
             'cgroups': ['--cgroups', 'captured']}
# The modes a `pass` test must pass in (--modes).
MODES = ['eager', 'lazy', 'map']


def check(t, kind, want):
    """Run a test against its expectation: list of step notes; raises Failed."""
    if kind == 'pass':
        return [t.plain()] + [t.restored(m) for m in MODES if m not in (want or [])]
    if kind == 'pass-in':
        return [t.plain()] + [t.restored(m) for m in want]
    if kind == 'pass-with':
        t.capture_args = want
        return [t.plain()] + [t.restored(m) for m in MODES] + ['captured with ' + ' '.join(want)]
    return [t.refused(want)]


def survey(t):
    """An expectation line for a test, from what it does now."""
    try:
        t.plain()
    except Failed as e:
        return '# %s fails on its own: %s' % (t.name, str(e).splitlines()[0][:150])
    try:
        # the first obstacle: a starting point for SUBSTRING
        msg = t.refused('').split(': ', 1)[1]
        return '%s refused %s' % (t.name, msg)
    except Failed as e:
        if 'capture succeeded' not in str(e):
            return '# %s harmed by a refused capture: %s' % (t.name, str(e).replace('\n', ' | ')[:200])
    try:
        for m in MODES:
            t.restored(m)
        return '%s pass' % t.name
    except Failed as e:
        first = '# %s captured, then: %s' % (t.name, str(e).replace('\n', ' | ')[:200])
    try:
        # every PID as captured (a child that stored its parent's PID)
        t.restored('pidns')
        return '%s pass in pidns  %s' % (t.name, first)
    except Failed:
        return first


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cryo', required=True, help='the cryo binary (cryo-shim next to it)')
    ap.add_argument('--expect', help='expectations file (NAME pass | NAME refused SUBSTRING)')
    ap.add_argument('--survey', help='instead: run these tests (a,b or all) and print expectation lines')
    ap.add_argument('--criu-src', help='CRIU source dir (default: target/criu/criu-*)')
    ap.add_argument('--with-criu', metavar='CRIU',
                    help='with --survey: run each test through this criu binary (dump, restore -d) '
                    'instead of cryo, to compare what CRIU brings back on this machine')
    ap.add_argument('--build-dir', help='where test/zdtm is copied and built (default: target/zdtm/<criu dir name>)')
    ap.add_argument('--only', help='run only these tests of the expectations (a,b,...)')
    ap.add_argument('-j', '--jobs', type=int, default=os.cpu_count() or 2)
    ap.add_argument('--keep', action='store_true', help='keep every work dir (failed ones are always kept)')
    ap.add_argument('--modes', default=','.join(MODES),
                    help='restore modes a `pass` test must pass in (default: eager,lazy,map; '
                    'also: pidns)')
    a = ap.parse_args()
    unknown = [m for m in a.modes.split(',') if m not in MODE_ARGS]
    if unknown:
        sys.exit('zdtm: unknown mode(s) %s (known: %s)' % (', '.join(unknown), ', '.join(MODE_ARGS)))
    MODES[:] = a.modes.split(',')
    if bool(a.expect) == bool(a.survey):
        ap.error('give --expect or --survey')
    t_all = time.monotonic()
    # fds inherited from whoever started us must not reach the tests (cryo
    # would see them as part of the target)
    for fd in os.listdir('/proc/self/fd'):
        if int(fd) > 2:
            try:
                os.set_inheritable(int(fd), False)
            except OSError:
                pass
    cryo = os.path.abspath(a.cryo)
    if not os.access(cryo, os.X_OK):
        print('zdtm: no cryo binary at %s' % cryo)
        return 2
    src = find_criu_src(a.criu_src)
    if not src:
        print('zdtm: CRIU source not found (%s): run scripts/build-criu.sh, which fetches it into '
              'target/criu/' % (a.criu_src or os.path.join(ROOT, 'target/criu/criu-*')))
        return 2
    build_dir = a.build_dir or os.path.join(ROOT, 'target/zdtm', os.path.basename(src))
    prepare_build_dir(src, build_dir)
    static = os.path.join(build_dir, 'static')
    known = all_tests(static)
    if not known:
        print('zdtm: no tests listed in %s/Makefile' % static)
        return 2
    if a.expect:
        exp = parse_expect(a.expect)
        if a.only:
            only = a.only.split(',')
            exp = {n: exp[n] for n in only if n in exp}
            if len(exp) != len(only):
                print('zdtm: not in %s: %s' % (a.expect, ' '.join(n for n in only if n not in exp)))
                return 2
    else:
        names = known if a.survey == 'all' else a.survey.split(',')
        exp = {n: ('survey', None) for n in names}
    unknown = [n for n in exp if n not in known]
    if unknown:
        print('zdtm: not tests of %s/Makefile: %s' % (static, ' '.join(unknown)))
        return 2
    failures = {}
    descs = {n: load_desc(static, n) for n in exp}
    for n in list(exp):
        why = not_runnable(static, n, descs[n])
        if why:
            if a.survey:
                print('# %s not run: %s' % (n, why))
                del exp[n]
            else:
                failures[n] = 'cannot run here: ' + why

    names = [n for n in exp if n not in failures]
    t0 = time.monotonic()
    log = os.path.join(build_dir, 'build.log')
    for n in build(build_dir, names, a.jobs, log):
        failures[n] = 'did not build (log: %s)' % log
    cmds = start_commands(static, [n for n in names if n not in failures])
    for n in names:
        if n not in failures and n not in cmds:
            failures[n] = 'no start command (NAME.pid rule) in static/Makefile'
    t_build = time.monotonic() - t0
    print('zdtm: %s: %d tests built in %.1f s (%s)' % (os.path.basename(src), len(names), t_build,
                                                      build_dir), flush=True)

    # Work dirs under TMPDIR, not target/: the tests drop to ZDTM_UID and
    # need every directory above their own to be searchable.
    work = tempfile.mkdtemp(prefix='cryo-zdtm-work-')
    os.chmod(work, 0o755)
    start_reaper()
    lock = threading.Lock()
    lines = []

    def job(n):
        t = Test(n, cmds[n], descs[n], static, work, cryo)
        s = time.monotonic()
        kind, want = exp[n]
        if kind == 'survey':
            try:
                if a.with_criu:
                    try:
                        t.plain()
                        line = '%s %s' % (n, t.with_criu(os.path.abspath(a.with_criu)))
                    except Failed as e:
                        line = '# %s %s' % (n, str(e).replace('\n', ' | ')[:200])
                else:
                    line = survey(t)
            except Exception as e:   # a bug here: reported, not fatal
                line = '# %s runner error: %r' % (n, e)
            with lock:
                lines.append(line)
                print(line, flush=True)
            return
        try:
            notes = check(t, kind, want)
            res = 'ok    %-28s %-7s %4.1fs  %s' % (n, kind, time.monotonic() - s, ', '.join(notes))
            if not a.keep:
                for m in ['plain', 'refused'] + list(MODE_ARGS):
                    shutil.rmtree(os.path.join(work, m, n), ignore_errors=True)
        except Exception as e:   # Failed, or a bug here: reported, not fatal
            why = str(e) if isinstance(e, Failed) else 'runner error: %r' % e
            with lock:
                failures[n] = why
            res = 'FAIL  %-28s %-7s %4.1fs  %s' % (n, kind, time.monotonic() - s,
                                                  why.replace('\n', '\n      '))
        with lock:
            print(res, flush=True)

    todo = [n for n in names if n not in failures]
    # zdtm runs these alone; and those captured with options (TCP tests on
    # fixed ports)
    excl = [n for n in todo if 'excl' in flags(descs[n]) or exp[n][0] == 'pass-with']
    try:
        with ThreadPoolExecutor(max(1, a.jobs)) as ex:
            list(ex.map(job, [n for n in todo if n not in excl]))
        for n in excl:
            job(n)
    finally:
        kill_leftovers()   # after a hang, a runner error or ^C

    total = time.monotonic() - t_all
    if a.survey:
        print('\n# survey of %d tests, %.0f s:' % (len(todo), total))
        print('\n'.join(sorted(lines, key=lambda l: (l.startswith('#'), l))))
        if not a.keep:
            cleanup(work)
        return 0
    npass = sum(1 for n in exp if exp[n][0] in ('pass', 'pass-in', 'pass-with') and n not in failures)
    nref = sum(1 for n in exp if exp[n][0] == 'refused' and n not in failures)
    nin = sum(1 for n in exp if exp[n][0] == 'pass-in' and n not in failures)
    nwith = sum(1 for n in exp if exp[n][0] == 'pass-with' and n not in failures)
    print('\nzdtm: %d tests: %d pass (%s; %d of them in named modes only, %d captured with options), '
          '%d refused as expected, %d failed; %.1f s (build %.1f s)'
          % (len(exp), npass, ', '.join(MODES), nin, nwith, nref, len(failures), total, t_build))
    if failures:
        print('zdtm: FAILED (work dirs kept in %s):' % work)
        for n in sorted(failures):
            print('  %-28s %s' % (n, failures[n].splitlines()[0][:200]))
        return 1
    if not a.keep:
        cleanup(work)
    return 0


if __name__ == '__main__':
    sys.exit(main())
