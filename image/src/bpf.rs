//! Classic BPF as seccomp runs it (kernel/seccomp.c, seccomp_check_filter):
//! what a chain of filters decides for one system call. Capture runs the
//! program's filters on the calls a restore makes after it has installed
//! them again, and refuses a process whose filters would stop one; the
//! shim runs them on the finishing chain's calls with their real
//! arguments (addresses capture cannot know), and finishes another way
//! where they would stop one. No allocation: the shim uses it as it is.

/// `AUDIT_ARCH_X86_64`, what `seccomp_data.arch` holds here.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// The action part of a filter's return value.
pub const ACTION_FULL: u32 = 0xffff_0000;
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_KILL_THREAD: u32 = 0x0000_0000;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const RET_TRACE: u32 = 0x7ff0_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;

const BPF_LD: u16 = 0x00;
const BPF_LDX: u16 = 0x01;
const BPF_ST: u16 = 0x02;
const BPF_STX: u16 = 0x03;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_MISC: u16 = 0x07;
const BPF_K: u16 = 0x00;
const BPF_X: u16 = 0x08;
const BPF_A: u16 = 0x10;

/// One `struct sock_filter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// `struct seccomp_data`: what a filter reads.
pub struct Data([u8; 64]);

impl Data {
    /// System call `nr` from the instruction before `ip` (a filter sees
    /// the address after the `syscall`), with `args` (rdi, rsi, rdx, r10,
    /// r8, r9).
    pub fn new(nr: i32, ip: u64, args: [u64; 6]) -> Data {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&nr.to_le_bytes());
        b[4..8].copy_from_slice(&AUDIT_ARCH_X86_64.to_le_bytes());
        b[8..16].copy_from_slice(&ip.to_le_bytes());
        let mut i = 0;
        while i < 6 {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&args[i].to_le_bytes());
            i += 1;
        }
        Data(b)
    }

    fn word(&self, k: u32) -> Option<u32> {
        let k = k as usize;
        if !k.is_multiple_of(4) || k + 4 > 64 {
            return None;
        }
        Some(u32::from_le_bytes([
            self.0[k],
            self.0[k + 1],
            self.0[k + 2],
            self.0[k + 3],
        ]))
    }
}

/// What one filter of `len` instructions (`insn(i)`, the i-th) returns for
/// `d` (the kernel checked the program when it was installed; anything it
/// would not have run reads as KILL_THREAD).
pub fn run(len: usize, insn: impl Fn(usize) -> Insn, d: &Data) -> u32 {
    const KILL: u32 = RET_KILL_THREAD;
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    while pc < len {
        let i = insn(pc);
        pc += 1;
        let k = i.k;
        let src = if i.code & BPF_X != 0 { x } else { k };
        match i.code & 0x07 {
            BPF_LD | BPF_LDX => {
                let v = match i.code & 0xe0 {
                    0x00 => k, // IMM
                    0x20 if i.code & 0x18 == 0 => match d.word(k) {
                        // ABS, W
                        Some(v) => v,
                        None => return KILL,
                    },
                    0x60 => match mem.get(k as usize) {
                        // MEM
                        Some(v) => *v,
                        None => return KILL,
                    },
                    0x80 => 64, // LEN
                    _ => return KILL,
                };
                if i.code & 0x07 == BPF_LD {
                    a = v
                } else {
                    x = v
                }
            }
            BPF_ST | BPF_STX => match mem.get_mut(k as usize) {
                Some(m) => *m = if i.code & 0x07 == BPF_ST { a } else { x },
                None => return KILL,
            },
            BPF_ALU => {
                a = match i.code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 if src != 0 => a / src,
                    0x40 => a | src,
                    0x50 => a & src,
                    // The kernel shifts by the count's low 5 bits.
                    0x60 => a << (src & 31),
                    0x70 => a >> (src & 31),
                    0x80 => a.wrapping_neg(),
                    0x90 if src != 0 => a % src,
                    0xa0 => a ^ src,
                    _ => return KILL,
                }
            }
            BPF_JMP => {
                let taken = match i.code & 0xf0 {
                    0x00 => {
                        pc += k as usize;
                        continue;
                    }
                    0x10 => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    0x40 => a & src != 0,
                    _ => return KILL,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            BPF_RET => {
                return match i.code & 0x18 {
                    BPF_K => k,
                    BPF_A => a,
                    _ => KILL,
                }
            }
            BPF_MISC => match i.code & 0xf8 {
                0x00 => x = a, // TAX
                0x80 => a = x, // TXA
                _ => return KILL,
            },
            _ => return KILL,
        }
    }
    KILL
}

/// Of two filters' results, the one the kernel takes: the action of
/// highest precedence, lowest as a signed action (KILL_PROCESS first).
pub fn strictest(a: u32, b: u32) -> u32 {
    if ((b & ACTION_FULL) as i32) < ((a & ACTION_FULL) as i32) {
        b
    } else {
        a
    }
}

/// Whether a chain's result lets the call run.
pub fn allows(r: u32) -> bool {
    matches!(r & ACTION_FULL, RET_ALLOW | RET_LOG)
}

/// What the filters of one thread decide for `d`: those in the image's
/// seccomp table (`task::SeccompInsn`, consecutive records of one
/// filter) that the thread has once the restore installed them, its own
/// chain (`thread`: 0 the main thread, k + 1 the k-th other) or the one
/// every thread shares. RET_ALLOW for none.
pub fn run_thread_chain(
    insns: crate::Table<'_, crate::task::SeccompInsn>,
    thread: u32,
    d: &Data,
) -> u32 {
    use crate::task::EVERY_THREAD;
    let mut best = RET_ALLOW;
    let mut i = 0;
    while let Some(first) = insns.get(i) {
        let mut end = i + 1;
        while insns
            .get(end)
            .is_some_and(|x| x.thread == first.thread && x.filter == first.filter)
        {
            end += 1;
        }
        if first.thread == thread || first.thread == EVERY_THREAD {
            let at = |k: usize| {
                let r = insns.get(i + k).unwrap_or_default();
                Insn {
                    code: r.code as u16,
                    jt: r.jt as u8,
                    jf: r.jf as u8,
                    k: r.k,
                }
            };
            best = strictest(best, run(end - i, at, d));
        }
        i = end;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ins(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn { code, jt, jf, k }
    }

    fn run_slice(p: &[Insn], d: &Data) -> u32 {
        run(p.len(), |i| p[i], d)
    }

    #[test]
    fn arguments_arithmetic_and_scratch_memory() {
        // A = args[1] low word; A += 1; M[3] = A; X = M[3]; A = X;
        // if A & 0x80 then ERRNO(2) else ALLOW.
        let p = [
            ins(0x20, 0, 0, 24),
            ins(0x04, 0, 0, 1),
            ins(0x02, 0, 0, 3),
            ins(0x61, 0, 0, 3),
            ins(0x87, 0, 0, 0),
            ins(0x45, 0, 1, 0x80),
            ins(0x06, 0, 0, 0x0005_0002),
            ins(0x06, 0, 0, RET_ALLOW),
        ];
        assert_eq!(
            run_slice(&p, &Data::new(0, 0, [0, 0x7f, 0, 0, 0, 0])),
            0x0005_0002
        );
        assert_eq!(
            run_slice(&p, &Data::new(0, 0, [0, 0x7e, 0, 0, 0, 0])),
            RET_ALLOW
        );
        // Shifts by X take its low 5 bits, as the kernel's (a review's
        // differential test: checked_shl gave 0 for 33).
        let shl = [
            ins(0x20, 0, 0, 16), // A = args[0]
            ins(0x07, 0, 0, 0),  // X = A
            ins(0x00, 0, 0, 1),  // A = 1
            ins(0x6c, 0, 0, 0),  // A <<= X
            ins(0x16, 0, 0, 0),  // ret A
        ];
        assert_eq!(run_slice(&shl, &Data::new(0, 0, [33, 0, 0, 0, 0, 0])), 2);
        // A load outside seccomp_data, or falling off the end, kills.
        assert_eq!(
            run_slice(&[ins(0x20, 0, 0, 64)], &Data::new(0, 0, [0; 6])),
            0
        );
        assert_eq!(
            run_slice(&[ins(0x20, 0, 0, 0)], &Data::new(0, 0, [0; 6])),
            0
        );
    }

    #[test]
    fn the_strictest_action_wins() {
        assert_eq!(strictest(RET_ALLOW, 0x0005_0001), 0x0005_0001);
        assert_eq!(strictest(0x0005_0001, RET_KILL_PROCESS), RET_KILL_PROCESS);
        assert_eq!(strictest(RET_LOG, RET_ALLOW), RET_LOG);
        assert!(allows(RET_LOG) && allows(RET_ALLOW) && !allows(RET_TRACE));
    }
}
