//! Names and short forms for the text and JSON output: permissions,
//! mapping flags, signals and their sets, handlers, XCR0 components.

use cryo_image::{vma_flags, vma_kind, Vma};

pub(super) fn perms(v: &Vma) -> String {
    use cryo_image::prot::*;
    let f = |b, c| if v.prot & b != 0 { c } else { '-' };
    let shared = matches!(
        v.kind,
        vma_kind::ANON_SHARED | vma_kind::FILE_SHARED | vma_kind::SYSV
    );
    format!(
        "{}{}{}{}",
        f(READ, 'r'),
        f(WRITE, 'w'),
        f(EXEC, 'x'),
        if shared { 's' } else { 'p' }
    )
}

pub(super) fn vmflags(v: &Vma) -> Vec<&'static str> {
    cryo_image::VMFLAG_NAMES
        .iter()
        .enumerate()
        .filter(|(i, n)| !n.is_empty() && v.vmflags & (1u64 << i) != 0)
        .map(|(_, n)| *n)
        .collect()
}

pub(super) fn flag_names(v: &Vma) -> Vec<&'static str> {
    let all = [
        (vma_flags::DELETED, "deleted"),
        (vma_flags::GUARD, "guard"),
        (vma_flags::GROWSDOWN, "growsdown"),
        (vma_flags::LOCKED, "locked"),
        (vma_flags::DONTFORK, "dontfork"),
        (vma_flags::DONTDUMP, "dontdump"),
        (vma_flags::WIPEONFORK, "wipeonfork"),
        (vma_flags::HUGEPAGE, "hugepage"),
        (vma_flags::NOHUGEPAGE, "nohugepage"),
    ];
    all.iter()
        .filter(|(b, _)| v.flags & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

pub(super) fn signame(n: u32) -> String {
    const NAMES: [&str; 32] = [
        "", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV",
        "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU",
        "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    ];
    match n {
        1..=31 => format!("SIG{}", NAMES[n as usize]),
        _ => format!("SIGRT{}", n.saturating_sub(32)),
    }
}

pub(super) fn sigset(m: u64) -> String {
    if m == 0 {
        return "-".into();
    }
    (1..=64)
        .filter(|i| m & (1u64 << (i - 1)) != 0)
        .map(signame)
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn handler(h: u64) -> String {
    match h {
        0 => "SIG_DFL".into(),
        1 => "SIG_IGN".into(),
        h => format!("{h:#x}"),
    }
}

pub(super) fn xcr0_names(x: u64) -> String {
    let names = [
        "x87",
        "sse",
        "avx",
        "bndreg",
        "bndcsr",
        "opmask",
        "zmm_hi256",
        "hi16_zmm",
        "pt",
        "pkru",
    ];
    // (and AMX: XTILECFG 17, XTILEDATA 18)
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| x & (1 << i) != 0)
        .map(|(_, n)| *n)
        .chain((x & 1 << 17 != 0).then_some("tilecfg"))
        .chain((x & 1 << 18 != 0).then_some("tiledata"))
        .collect::<Vec<_>>()
        .join(" ")
}
