//! POSIX timers (ids and signals from /proc/PID/timers, settings asked
//! inside the task) and interval timers.

use crate::procinfo::TimerInfo;
use crate::remote::{InjectError, Remote};
use cryo_image::write::ImageBuilder;
use cryo_image::{Itimer, PosixTimer};

pub fn inject(
    rem: &mut Remote,
    timers: &[TimerInfo],
    b: &mut ImageBuilder,
) -> Result<(), InjectError> {
    for ti in timers {
        let v = rem.timer_gettime(ti.id)?;
        b.timers.push(PosixTimer {
            id: ti.id,
            clock: ti.clock,
            signo: ti.signo,
            notify: ti.notify,
            notify_tid: ti.notify_tid,
            _pad: 0,
            sigev_value: ti.sigev_value,
            interval_sec: v[0],
            interval_nsec: v[1],
            value_sec: v[2],
            value_nsec: v[3],
        });
    }
    for which in 0..3 {
        let v = rem.getitimer(which)?;
        b.itimers.push(Itimer {
            which,
            _pad: 0,
            interval_sec: v[0],
            interval_usec: v[1],
            value_sec: v[2],
            value_usec: v[3],
        });
    }
    Ok(())
}
