//! cryo-shim: the restore shim (placeholder until restore lands: exits 127).
#![no_std]
#![no_main]

fn exit(code: i32) -> ! {
    // SAFETY: exit_group takes one integer and never returns.
    unsafe {
        core::arch::asm!("syscall", in("rax") 231, in("rdi") code, options(noreturn, nostack));
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(127)
}

/// Entry point.
#[no_mangle]
pub extern "C" fn _start() -> ! {
    exit(127)
}
