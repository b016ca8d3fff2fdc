//! This process's own state: its clocks.

use std::io;

/// clock_gettime(clock): (seconds, nanoseconds).
pub fn clock_gettime(clock: i32) -> io::Result<(i64, i64)> {
    let t = nix::time::clock_gettime(nix::time::ClockId::from_raw(clock))?;
    Ok((t.tv_sec(), t.tv_nsec()))
}
