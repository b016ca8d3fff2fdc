//! The two instruction sequences a restore finishes with when it has no
//! tracer (see [`crate::Gadgets`]).
//!
//! The shim cannot unmap its own window and then go on running, so its last
//! act is a jump into the program's own code: to a `syscall` that returns
//! (`syscall_ret`), with rax = munmap and the window's range in rdi/rsi, and
//! rsp pointing at the signal frame's return address slot, which holds the
//! address of a `rt_sigreturn` sequence (`sigreturn`). The `ret` after the
//! munmap pops that address, exactly as a signal handler returns into
//! glibc's `__restore_rt`, and the kernel loads every register from the
//! frame. Both sequences exist in every glibc: the syscall wrappers end in
//! `syscall; cmp $-4095, %rax; jae <error>; ret`, and `__restore_rt` is
//! `mov $15, %rax; syscall`.
//!
//! Matching is byte-exact on short fixed patterns (no decoding), so the
//! capture (which finds them) and the shim and `cryo restore` (which check
//! them again) agree on exactly what may be jumped to.

/// Longest `syscall_ret` pattern, in bytes.
pub const SYSCALL_RET_MAX: usize = 11;
/// Longest `sigreturn` pattern, in bytes.
pub const SIGRETURN_MAX: usize = 9;

/// `syscall; ret`.
const SYSCALL_RET: &[u8] = &[0x0f, 0x05, 0xc3];
/// `syscall; cmp $-4095, %rax; jae rel8; ret` (glibc's wrappers): with
/// rax = 0 (munmap succeeded) the branch is not taken.
const SYSCALL_CMP_JAE_RET: &[u8] = &[
    0x0f, 0x05, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, 0x73, 0x00, 0xc3,
];
/// `syscall; cmp $-4096, %rax; ja rel8; ret`.
const SYSCALL_CMP_JA_RET: &[u8] = &[
    0x0f, 0x05, 0x48, 0x3d, 0x00, 0xf0, 0xff, 0xff, 0x77, 0x00, 0xc3,
];
/// Index of the rel8 byte (any value) in the two patterns above.
const REL8_AT: usize = 9;

/// `mov $15, %rax; syscall` (glibc's `__restore_rt`).
const SIGRETURN_RAX: &[u8] = &[0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];
/// `mov $15, %eax; syscall`.
const SIGRETURN_EAX: &[u8] = &[0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];

fn matches(code: &[u8], pat: &[u8], wildcard: Option<usize>) -> bool {
    code.len() >= pat.len()
        && pat
            .iter()
            .zip(code)
            .enumerate()
            .all(|(i, (p, c))| Some(i) == wildcard || p == c)
}

/// Whether `code` starts with a `syscall_ret` sequence.
pub fn is_syscall_ret(code: &[u8]) -> bool {
    matches(code, SYSCALL_RET, None)
        || matches(code, SYSCALL_CMP_JAE_RET, Some(REL8_AT))
        || matches(code, SYSCALL_CMP_JA_RET, Some(REL8_AT))
}

/// Whether `code` starts with a `sigreturn` sequence.
pub fn is_sigreturn(code: &[u8]) -> bool {
    matches(code, SIGRETURN_RAX, None) || matches(code, SIGRETURN_EAX, None)
}

/// Length of the `sigreturn` sequence `code` starts with: the instruction
/// pointer a seccomp filter sees for its rt_sigreturn is the gadget's
/// address plus this.
pub fn sigreturn_len(code: &[u8]) -> usize {
    if matches(code, SIGRETURN_RAX, None) {
        SIGRETURN_RAX.len()
    } else {
        SIGRETURN_EAX.len()
    }
}

/// Offset of the first `syscall_ret` sequence in `code`.
pub fn find_syscall_ret(code: &[u8]) -> Option<usize> {
    find(code, 0x0f, is_syscall_ret)
}

/// Offset of the first plain `syscall; ret` in `code` (glibc's `getpid`
/// and others that cannot fail): the form to prefer, since the
/// wrappers' error path writes `errno` (a restored thread whose wait
/// restarts after a stop, on a word already set, returns EAGAIN there:
/// its errno changed, 2 stormed restores in 100).
pub fn find_plain_syscall_ret(code: &[u8]) -> Option<usize> {
    find(code, 0x0f, |c| matches(c, SYSCALL_RET, None))
}

/// Offset of the first `sigreturn` sequence in `code`.
pub fn find_sigreturn(code: &[u8]) -> Option<usize> {
    let a = find(code, 0x48, |c| matches(c, SIGRETURN_RAX, None));
    let b = find(code, 0xb8, |c| matches(c, SIGRETURN_EAX, None));
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn find(code: &[u8], first: u8, is: impl Fn(&[u8]) -> bool) -> Option<usize> {
    code.iter()
        .enumerate()
        .filter(|(_, b)| **b == first)
        .map(|(i, _)| i)
        .find(|&i| is(&code[i..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_sequences() {
        // glibc 2.36 munmap: mov $0xb,%eax; syscall; cmp $-4095,%rax; jae; ret
        let munmap = [
            0xb8, 0x0b, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, 0x73,
            0x01, 0xc3,
        ];
        assert_eq!(find_syscall_ret(&munmap), Some(5));
        assert!(is_syscall_ret(&munmap[5..]));
        // A different branch target is the same gadget.
        let mut other = munmap;
        other[14] = 0x7f;
        assert!(is_syscall_ret(&other[5..]));
        // Not a return after the branch: no gadget.
        let mut bad = munmap;
        bad[15] = 0x90;
        assert_eq!(find_syscall_ret(&bad), None);
        // __restore_rt, after some padding.
        let restore_rt = [
            0x90, 0x90, 0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05,
        ];
        assert_eq!(find_sigreturn(&restore_rt), Some(2));
        assert!(is_sigreturn(&[0xb8, 0x0f, 0, 0, 0, 0x0f, 0x05]));
        assert!(!is_sigreturn(&[0xb8, 0x0e, 0, 0, 0, 0x0f, 0x05]));
        // Truncated sequences never match.
        assert!(!is_syscall_ret(&[0x0f, 0x05]));
        assert!(!is_sigreturn(&restore_rt[2..10]));
        assert_eq!(find_syscall_ret(&[0x0f, 0x05, 0xc3]), Some(0));
    }
}
