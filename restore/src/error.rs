//! Why a restore cannot go ahead: [`RestoreError`] for the image as a
//! whole, [`Why`] for one fd or stored file. Every message is one line.

use cryo_image::load::LoadError;
use cryo_image::{SHIM_WINDOW, SHIM_WINDOW_LEN};
use std::path::PathBuf;

/// Why an image cannot be restored here (nothing has been changed yet).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{path} changed since capture ({what}); restore needs the very same file")]
    FileChanged { path: String, what: String },
    #[error("{path} is gone ({source}); restore needs the file that was mapped")]
    FileMissing {
        path: String,
        source: std::io::Error,
    },
    #[error("this kernel's vDSO differs from the captured one ({what}); restore on the kernel that captured the image ({kernel})")]
    VdsoDiffers { what: String, kernel: String },
    #[error("this CPU's xsave layout differs from the captured one ({what}); restore on the same kind of CPU")]
    XsaveDiffers { what: String },
    #[error("mapping {start:#x}-{end:#x} ({name}) overlaps cryo-shim's window {SHIM_WINDOW:#x}-{:#x}; this image cannot be restored", SHIM_WINDOW + SHIM_WINDOW_LEN)]
    WindowOverlap { start: u64, end: u64, name: String },
    #[error("the restore shim {} is missing or not executable (install cryo-shim and cryo-shim.text beside cryo, from the same build: `cargo build` puts them there)", .0.display())]
    NoShim(PathBuf),
    #[error("the restore shim {} is not the one this cryo was built with ({len} bytes, not {want}): install cryo and cryo-shim (and cryo-shim.text) together, from one build", .path.display())]
    WrongShim { path: PathBuf, len: u64, want: u64 },
    #[error("fd {fd} ({what}) cannot be restored: {why}")]
    Fd { fd: i32, what: String, why: Why },
    #[error("{path} (unlinked or memfd) cannot be made again: {why}")]
    Stored { path: String, why: Why },
    #[error("{0}")]
    Task(String),
    #[error("cannot set {name} to {cur}/{max} (ours: {our_cur}/{our_max}): raising a hard limit needs CAP_SYS_RESOURCE; restore from a shell with the captured limits")]
    Rlimit {
        name: &'static str,
        cur: String,
        max: String,
        our_cur: String,
        our_max: String,
    },
    #[error("the image has POSIX timers but this kernel cannot create timers with given ids (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.16+)")]
    NoTimerIds,
    #[error("the image has {0} threads but its `syscall; ret` and `rt_sigreturn` code is not where capture found it; the threads wait there while the shim is removed")]
    NoThreadGadgets(usize),
    #[error("lazy restore is not possible here: {0}")]
    NoLazy(String),
    #[error("{0}")]
    WorkingSet(String),
    #[error("--map is not safe for this image: {0}")]
    NotMappable(String),
    /// A process tree cannot be (or could not be) made.
    #[error("{0}")]
    Tree(String),
    /// System V shared memory the image attaches cannot be had again.
    #[error("System V shared memory: {0}")]
    Sysv(String),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
    /// A signal that ends a command (SIGINT, SIGTERM, SIGHUP, SIGQUIT)
    /// came while the restore waited, before any process was made: the
    /// restore stops there ([`crate::hold_signals`]).
    #[error("interrupted ({}) before the restored program was made: nothing was restored", crate::signal_name(*.0))]
    Interrupted(i32),
    /// Every obstacle found, at once (files changed, fds that cannot be
    /// had, timers), so that a user fixing one does not meet the next.
    #[error("{} obstacles: {}", .0.len(), joined(.0))]
    Several(Vec<RestoreError>),
}

fn joined(v: &[RestoreError]) -> String {
    v.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl RestoreError {
    /// The obstacles this error says ([`RestoreError::Several`]'s each).
    pub fn into_list(self) -> Vec<RestoreError> {
        match self {
            RestoreError::Several(v) => v,
            e => vec![e],
        }
    }

    /// Several obstacles as one error: the only one, or
    /// [`RestoreError::Several`].
    pub fn from_list(mut errs: Vec<RestoreError>) -> RestoreError {
        if errs.len() == 1 {
            errs.remove(0)
        } else {
            RestoreError::Several(errs)
        }
    }

    /// [`RestoreError::from_list`] unless there is none.
    pub fn all(errs: Vec<RestoreError>) -> Result<(), RestoreError> {
        if errs.is_empty() {
            Ok(())
        } else {
            Err(RestoreError::from_list(errs))
        }
    }
}

/// Why one fd or one stored file cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum Why {
    /// A refusal, said in full.
    #[error("{0}")]
    Said(String),
    /// A system call failed: what was being done, and the error.
    #[error("{doing}: {source}")]
    Sys {
        doing: String,
        source: std::io::Error,
    },
    /// Opening or reading failed; the error says it.
    #[error("{0}")]
    Io(std::io::Error),
}

impl Why {
    pub(crate) fn sys(doing: impl Into<String>, source: std::io::Error) -> Why {
        Why::Sys {
            doing: doing.into(),
            source,
        }
    }
}

impl From<String> for Why {
    fn from(s: String) -> Why {
        Why::Said(s)
    }
}

impl From<&str> for Why {
    fn from(s: &str) -> Why {
        Why::Said(s.to_owned())
    }
}

impl From<std::io::Error> for Why {
    fn from(e: std::io::Error) -> Why {
        Why::Io(e)
    }
}

pub(crate) trait IntoSys {
    fn into_sys(self, what: impl Into<String>) -> RestoreError;
}
impl IntoSys for std::io::Error {
    fn into_sys(self, what: impl Into<String>) -> RestoreError {
        RestoreError::Sys {
            what: what.into(),
            source: self,
        }
    }
}
