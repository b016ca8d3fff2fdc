//! POSIX timers (ids and signals from /proc/PID/timers, settings asked
//! inside the task) and interval timers.

use crate::procinfo::TimerInfo;
use crate::remote::{InjectError, Remote};
use cryo_image::write::ImageBuilder;
use cryo_image::{Itimer, PosixTimer};

/// Timers whose CPU-time clock cannot be made again for process `pid`
/// (threads `tids`, its own first): `cryo_image::timer_clock_obstacle`.
pub fn clock_obstacles(
    pid: i32,
    tids: &[i32],
    timers: &[TimerInfo],
    obs: &mut crate::obstacles::Obstacles,
) {
    for t in timers {
        if let Some(why) = cryo_image::timer_clock_obstacle(t.clock, pid, tids) {
            obs.push(format!("POSIX timer {} {why}", t.id));
        }
    }
}

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
