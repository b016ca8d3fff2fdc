//! The contract between `cryo restore` and the shim it execs: one type for
//! the shim's arguments, the flag bits, the magic word of the final trap,
//! the page server's go byte and the userfaultfd ABI both sides speak.
//! Both sides use this module; nothing here is written twice.
//!
//! ```text
//! cryo-shim META_FD PAGES_FD TID_OFFSET FLAGS EXEC_NS SOCK_FD ALIAS_FD FILES_FD BARRIER_FD
//! ```
//!
//! Every argument is a decimal number; [`NONE`] (written as `-`) stands
//! for "absent". `FILES_FD` is the first of the fds holding the files
//! `cryo restore` recreated (unlinked files, memfds), one per such entry
//! of the files table, in table order and at consecutive numbers.

/// Value of an absent argument.
pub const NONE: u64 = u64::MAX;

/// Number of arguments after argv[0].
pub const ARGC: usize = 11;

/// FLAGS bits.
pub mod flags {
    /// Print phase times (CLOCK_MONOTONIC) on stderr before the hand-off
    /// (`cryo restore --phases`; EXEC_NS is cryo's stamp before the exec).
    pub const PHASES: u64 = 1 << 1;
    /// Lazy restore: private anonymous mappings (see `crate::lazy`) are
    /// registered with a userfaultfd that goes to the page server over the
    /// unix socket SOCK_FD; the shim waits for [`super::GO`] before the
    /// hand-off.
    pub const LAZY: u64 = 1 << 2;
    /// No tracer: the shim queues the captured pending signals itself and
    /// finishes through the image's gadgets (`crate::gadget`).
    pub const SELF_UNMAP: u64 = 1 << 3;
    /// `cryo restore` found its own credentials (which the exec of the
    /// shim keeps) equal to the image's: the shim need not compare them.
    pub const SAME_CREDS: u64 = 1 << 4;
    /// Mapped restore: private anonymous memory is mapped from pages.img
    /// (`crate::mapped`) instead of copied.
    pub const MAP: u64 = 1 << 5;
    /// The restore of a tree: BARRIER_FD is a seqpacket socket, and no
    /// process goes past its point of no return before every one has its
    /// files open (a process that resumed could remove a file another
    /// still has to open). Every process but the root sends one byte once
    /// its files are open (`x` instead if it fails before that) and waits
    /// for one back; the root's shim, its own files open, takes one from
    /// each live process of the tree (the image's tree section), then
    /// sends one to each. A [`STAND_IN`] sends `s` and waits for nothing;
    /// with stand-ins in the tree the byte back is `h`, and a second round
    /// follows before any program runs (shim `round_two`).
    pub const BARRIER: u64 = 1 << 6;
    /// A stand-in (eager restore of a tree): this process only holds a
    /// child's place (its PID, its fds and working directory as `cryo
    /// restore` set them up) until its parent's shim, its memory in, forks
    /// the child itself, so that the pages they shared copy-on-write are
    /// shared again. Its shim checks the image and opens the files as any
    /// does, sends `s` at the tree's barrier instead of `o`, closes what it
    /// opened, and waits to be killed; the parent takes its fds (pidfd_getfd),
    /// working directory and these arguments (/proc/PID/cmdline).
    pub const STAND_IN: u64 = 1 << 7;
    /// This process's children that are [`STAND_IN`]s are forked by its
    /// shim once its memory is in (`docs/design.md`, "Process trees").
    pub const FORKS: u64 = 1 << 8;
    /// With [`STAND_IN`]: the child shared its parent's fd table (clone
    /// with CLONE_FILES), and its parent's shim forks it so: the child
    /// takes none of the stand-in's fds but the shim's own, and keeps
    /// them at the numbers the parent's shim took them at.
    pub const SHARES_FDS: u64 = 1 << 9;
    /// The restore runs in the foreground of the terminal at the fd the
    /// image's `Terminal` names: its shim sets the captured modes on it
    /// (the root's only).
    pub const TERMINAL: u64 = 1 << 10;
    /// Another process of the tree, in its root's process group (the
    /// terminal's foreground), whose terminal has another size than at
    /// capture: its shim queues itself a SIGWINCH, as a resize would
    /// have sent the group.
    pub const WINCH: u64 = 1 << 11;
    /// A tree's root: some process of the tree held POSIX locks, which
    /// each shim takes again only once its own files are closed (past
    /// the first barrier): a second round (as for stand-ins) keeps every
    /// program from running before all are taken. Without it a child
    /// restored with `--map` or `--lazy` took its parent's lock first.
    pub const LOCKS: u64 = 1 << 12;
    /// A packed restorer restores an image captured in another boot (or
    /// whose CLOCK_MONOTONIC is behind here) anyway (`cryo pack
    /// --clock-jump`): `task::clock_jump`.
    pub const CLOCK_JUMP: u64 = 1 << 13;
    /// Every bit this version knows.
    pub const ALL: u64 = PHASES
        | LAZY
        | SELF_UNMAP
        | SAME_CREDS
        | MAP
        | BARRIER
        | STAND_IN
        | FORKS
        | SHARES_FDS
        | TERMINAL
        | WINCH
        | LOCKS
        | CLOCK_JUMP;
}

/// rsi at the shim's final `int3`, so the tracer knows the trap is ours.
pub const HANDOFF_MAGIC: u64 = 0x4352_594f_5348_494d; // "CRYOSHIM"

/// The byte the page server sends the shim once it is ready (after any
/// working-set prefetch).
pub const GO: u8 = b'G';

/// The shim's arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handoff {
    pub meta_fd: u64,
    pub pages_fd: u64,
    /// Offset of glibc's cached TID in the TCB, as found in cryo's own
    /// (0: unknown).
    pub tid_offset: u64,
    pub flags: u64,
    /// CLOCK_MONOTONIC ns just before the exec (phases), or 0.
    pub exec_ns: u64,
    /// The page server's socket (lazy), or NONE.
    pub sock_fd: u64,
    /// The shim's own binary under another path (a hard link), or NONE.
    pub alias_fd: u64,
    /// First fd of the recreated files, or NONE if there are none.
    pub files_fd: u64,
    /// The tree's barrier socket ([`flags::BARRIER`]), or NONE.
    pub barrier_fd: u64,
    /// The socket of the barrier's second round (children forked by
    /// their parents' shims), or NONE.
    pub round_fd: u64,
    /// A stand-in's ([`flags::STAND_IN`]) parent as captured: the
    /// process whose shim forks it (its stand-in is the child of the
    /// nearest ancestor that execs its own shim), or NONE.
    pub parent: u64,
}

/// Why the shim's arguments were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoffError {
    Count,
    NotANumber(usize),
    UnknownFlags(u64),
}

impl core::fmt::Display for HandoffError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HandoffError::Count => write!(
                f,
                "usage: cryo-shim META_FD PAGES_FD TID_OFFSET FLAGS EXEC_NS SOCK_FD ALIAS_FD FILES_FD BARRIER_FD ROUND_FD PARENT (run by `cryo restore`, not by hand)"
            ),
            HandoffError::NotANumber(i) => write!(f, "argument {i} is not a number"),
            HandoffError::UnknownFlags(v) => {
                write!(f, "flags {v:#x}: this shim is from another cryo version")
            }
        }
    }
}

/// One argument: decimal digits, or `-` for [`NONE`].
pub fn parse_arg(s: &[u8]) -> Option<u64> {
    if s == b"-" {
        return Some(NONE);
    }
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(v)
}

impl Handoff {
    /// The arguments in order.
    pub fn to_array(&self) -> [u64; ARGC] {
        [
            self.meta_fd,
            self.pages_fd,
            self.tid_offset,
            self.flags,
            self.exec_ns,
            self.sock_fd,
            self.alias_fd,
            self.files_fd,
            self.barrier_fd,
            self.round_fd,
            self.parent,
        ]
    }

    /// Decode argv[1..] (each argument's bytes, without the NUL).
    pub fn decode<'a>(
        args: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> Result<Handoff, HandoffError> {
        if args.len() != ARGC {
            return Err(HandoffError::Count);
        }
        let mut v = [0u64; ARGC];
        for (i, a) in args.enumerate() {
            v[i] = parse_arg(a).ok_or(HandoffError::NotANumber(i + 1))?;
        }
        let h = Handoff {
            meta_fd: v[0],
            pages_fd: v[1],
            tid_offset: v[2],
            flags: v[3],
            exec_ns: v[4],
            sock_fd: v[5],
            alias_fd: v[6],
            files_fd: v[7],
            barrier_fd: v[8],
            round_fd: v[9],
            parent: v[10],
        };
        if h.flags & !flags::ALL != 0 {
            return Err(HandoffError::UnknownFlags(h.flags));
        }
        Ok(h)
    }

    /// Encode as argv[1..] strings.
    #[cfg(any(feature = "std", test))]
    pub fn encode(&self) -> Vec<String> {
        self.to_array()
            .iter()
            .map(|&v| {
                if v == NONE {
                    "-".to_owned()
                } else {
                    v.to_string()
                }
            })
            .collect()
    }
}

/// The userfaultfd ABI (linux/userfaultfd.h), for the shim (which
/// registers) and the page server (which serves).
pub mod uffd {
    pub const UFFD_API: u64 = 0xaa;
    pub const UFFDIO_API: u64 = 0xc018_aa3f;
    pub const UFFDIO_REGISTER: u64 = 0xc020_aa00;
    pub const UFFDIO_COPY: u64 = 0xc028_aa03;
    pub const UFFDIO_ZEROPAGE: u64 = 0xc020_aa04;
    pub const UFFDIO_WAKE: u64 = 0x8010_aa02;
    pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

    /// Feature bits, as the kernel numbers them.
    pub const FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
    pub const FEATURE_EVENT_FORK: u64 = 1 << 1;
    pub const FEATURE_EVENT_REMAP: u64 = 1 << 2;
    pub const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
    pub const FEATURE_MISSING_HUGETLBFS: u64 = 1 << 4;
    pub const FEATURE_MISSING_SHMEM: u64 = 1 << 5;
    pub const FEATURE_EVENT_UNMAP: u64 = 1 << 6;
    pub const FEATURE_SIGBUS: u64 = 1 << 7;
    pub const FEATURE_THREAD_ID: u64 = 1 << 8;
    pub const FEATURE_MINOR_HUGETLBFS: u64 = 1 << 9;
    pub const FEATURE_MINOR_SHMEM: u64 = 1 << 10;
    pub const FEATURE_EXACT_ADDRESS: u64 = 1 << 11;
    pub const FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
    pub const FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
    pub const FEATURE_POISON: u64 = 1 << 14;
    pub const FEATURE_WP_ASYNC: u64 = 1 << 15;
    pub const FEATURE_MOVE: u64 = 1 << 16;

    /// Every feature bit with its name, in bit order.
    pub const FEATURE_NAMES: [(u64, &str); 17] = [
        (FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP"),
        (FEATURE_EVENT_FORK, "EVENT_FORK"),
        (FEATURE_EVENT_REMAP, "EVENT_REMAP"),
        (FEATURE_EVENT_REMOVE, "EVENT_REMOVE"),
        (FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS"),
        (FEATURE_MISSING_SHMEM, "MISSING_SHMEM"),
        (FEATURE_EVENT_UNMAP, "EVENT_UNMAP"),
        (FEATURE_SIGBUS, "SIGBUS"),
        (FEATURE_THREAD_ID, "THREAD_ID"),
        (FEATURE_MINOR_HUGETLBFS, "MINOR_HUGETLBFS"),
        (FEATURE_MINOR_SHMEM, "MINOR_SHMEM"),
        (FEATURE_EXACT_ADDRESS, "EXACT_ADDRESS"),
        (FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM"),
        (FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED"),
        (FEATURE_POISON, "POISON"),
        (FEATURE_WP_ASYNC, "WP_ASYNC"),
        (FEATURE_MOVE, "MOVE"),
    ];

    /// What cryo asks for: every event by which the program can drop,
    /// move or copy lazy memory. Never "all supported": that includes
    /// SIGBUS mode, which turns missing faults into signals.
    pub const CRYO_FEATURES: u64 =
        FEATURE_EVENT_FORK | FEATURE_EVENT_REMAP | FEATURE_EVENT_REMOVE | FEATURE_EVENT_UNMAP;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = Handoff {
            meta_fd: 9,
            pages_fd: 10,
            tid_offset: 0x2d0,
            flags: flags::LAZY | flags::PHASES,
            exec_ns: 123_456_789_000,
            sock_fd: 11,
            alias_fd: NONE,
            files_fd: NONE,
            barrier_fd: 12,
            round_fd: 13,
            parent: 77,
        };
        let a = h.encode();
        assert_eq!(a[6], "-");
        let back = Handoff::decode(a.iter().map(|s| s.as_bytes())).unwrap();
        assert_eq!(back, h);
        assert_eq!(
            Handoff::decode(a[..3].iter().map(|s| s.as_bytes())),
            Err(HandoffError::Count)
        );
        let mut bad = a.clone();
        bad[3] = (1u64 << 40).to_string();
        assert!(matches!(
            Handoff::decode(bad.iter().map(|s| s.as_bytes())),
            Err(HandoffError::UnknownFlags(_))
        ));
        bad[3] = "x".into();
        assert_eq!(
            Handoff::decode(bad.iter().map(|s| s.as_bytes())),
            Err(HandoffError::NotANumber(4))
        );
    }

    /// The values the kernel header gives (linux/userfaultfd.h, 6.x).
    #[test]
    fn uffd_feature_bits_are_the_kernels() {
        use uffd::*;
        assert_eq!(FEATURE_EVENT_REMAP, 1 << 2);
        assert_eq!(FEATURE_EVENT_REMOVE, 1 << 3);
        assert_eq!(FEATURE_EVENT_UNMAP, 1 << 6);
        assert_eq!(FEATURE_SIGBUS, 1 << 7);
        for (i, (bit, _)) in FEATURE_NAMES.iter().enumerate() {
            assert_eq!(*bit, 1 << i);
        }
        assert_eq!(CRYO_FEATURES & FEATURE_SIGBUS, 0);
    }

    /// The userfaultfd ABI here is the kernel's: a C program compiled
    /// against the system's linux/userfaultfd.h prints every constant
    /// (ioctl numbers, API, each feature bit the header knows by name),
    /// and each must equal ours. (The first `cryo check` named feature
    /// bits off by one from 1 << 3 on.)
    #[test]
    fn uffd_abi_matches_the_kernel_header() {
        use std::process::Command;
        let dir = std::env::temp_dir().join(format!("cryo-uffd-abi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = String::from(
            "#include <stdio.h>\n#include <sys/ioctl.h>\n#include <linux/userfaultfd.h>\nint main(void){\n\
             printf(\"API %llu\\n\", (unsigned long long)UFFD_API);\n\
             printf(\"UFFDIO_API %llu\\n\", (unsigned long long)UFFDIO_API);\n\
             printf(\"UFFDIO_REGISTER %llu\\n\", (unsigned long long)UFFDIO_REGISTER);\n\
             printf(\"UFFDIO_COPY %llu\\n\", (unsigned long long)UFFDIO_COPY);\n\
             printf(\"UFFDIO_ZEROPAGE %llu\\n\", (unsigned long long)UFFDIO_ZEROPAGE);\n\
             printf(\"UFFDIO_WAKE %llu\\n\", (unsigned long long)UFFDIO_WAKE);\n\
             printf(\"MODE_MISSING %llu\\n\", (unsigned long long)UFFDIO_REGISTER_MODE_MISSING);\n",
        );
        for (_, name) in uffd::FEATURE_NAMES {
            c.push_str(&format!(
                "#ifdef UFFD_FEATURE_{name}\nprintf(\"{name} %llu\\n\", (unsigned long long)UFFD_FEATURE_{name});\n#endif\n"
            ));
        }
        c.push_str("return 0;}\n");
        std::fs::write(dir.join("abi.c"), c).unwrap();
        let out = Command::new("cc")
            .arg("-o")
            .arg(dir.join("abi"))
            .arg(dir.join("abi.c"))
            .output()
            .expect("cc (build-essential)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(dir.join("abi")).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let _ = std::fs::remove_dir_all(&dir);
        let mut seen = 0;
        for line in text.lines() {
            let (name, v) = line.split_once(' ').unwrap();
            let v: u64 = v.parse().unwrap();
            let ours = match name {
                "API" => uffd::UFFD_API,
                "UFFDIO_API" => uffd::UFFDIO_API,
                "UFFDIO_REGISTER" => uffd::UFFDIO_REGISTER,
                "UFFDIO_COPY" => uffd::UFFDIO_COPY,
                "UFFDIO_ZEROPAGE" => uffd::UFFDIO_ZEROPAGE,
                "UFFDIO_WAKE" => uffd::UFFDIO_WAKE,
                "MODE_MISSING" => uffd::UFFDIO_REGISTER_MODE_MISSING,
                feature => {
                    uffd::FEATURE_NAMES
                        .iter()
                        .find(|(_, n)| *n == feature)
                        .expect("a name we printed")
                        .0
                }
            };
            assert_eq!(ours, v, "{name}");
            seen += 1;
        }
        // The 7 ioctl/API values and at least the 13 features of 6.1.
        assert!(seen >= 20, "{text}");
    }
}
