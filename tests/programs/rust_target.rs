//! Rust std target for cryo's tests: builds a HashMap, a Vec and a String,
//! writes through a BufWriter, then "READY <pid>" and (mode stop) raises
//! SIGSTOP or (mode read) blocks reading stdin; after continuing it checks
//! its state and prints "PASS <checksum>". Mode threads: a pool of worker
//! threads waits on a channel, one more on a Mutex + Condvar, one sleeps
//! (all across the capture, at the SIGSTOP); afterwards the pool does the
//! summing and each worker's thread-local count is checked.
use std::collections::HashMap;
use std::io::{Read, Write};

extern "C" {
    fn raise(sig: i32) -> i32;
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "stop".into());
    let mut map = HashMap::new();
    for i in 0..100_000u64 {
        map.insert(i, i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
    let v: Vec<u64> = (0..1_000_000).map(|i| i * 3).collect();
    let s: String = (0..10_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let out = std::io::stdout();
    println!("READY {}", std::process::id());
    out.lock().flush().expect("flush");
    let pool = (mode == "threads").then(Pool::start);
    if mode == "stop" || mode == "threads" {
        // SAFETY: raise is async-signal-safe and takes an int.
        unsafe { raise(19) };
    } else {
        let mut b = [0u8; 1];
        std::io::stdin().read_exact(&mut b).expect("read stdin");
    }
    let mut sum = 0u64;
    if let Some(pool) = pool {
        sum = pool.finish(&map);
    }
    for i in (0..100_000u64).step_by(7) {
        match map.get(&i) {
            Some(x) if *x == i.wrapping_mul(0x9e37_79b9_7f4a_7c15) => sum = sum.wrapping_add(*x),
            _ => {
                println!("FAIL map");
                std::process::exit(1);
            }
        }
    }
    if v.iter().enumerate().any(|(i, x)| *x != i as u64 * 3) || s.len() != 10_000 {
        println!("FAIL vec/string");
        std::process::exit(1);
    }
    // the allocator still works after restore
    let more: Vec<String> = (0..1000).map(|i| format!("{i}")).collect();
    sum = sum.wrapping_add(more.len() as u64);
    println!("PASS {sum:016x}");
}

use std::cell::Cell;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};

thread_local! {
    static DONE_HERE: Cell<u64> = const { Cell::new(0) };
}

/// Four workers waiting on one channel, a thread on a condition
/// variable, one asleep.
struct Pool {
    jobs: Sender<Option<u64>>,
    results: Receiver<(u64, u64)>,
    workers: Vec<std::thread::JoinHandle<u64>>,
    gate: Arc<(Mutex<bool>, Condvar)>,
    waiter: std::thread::JoinHandle<bool>,
    sleeper: std::thread::JoinHandle<()>,
}

impl Pool {
    fn start() -> Pool {
        let (jobs, rx) = channel::<Option<u64>>();
        let rx = Arc::new(Mutex::new(rx));
        let (tx, results) = channel();
        let workers = (0..4)
            .map(|_| {
                let rx = Arc::clone(&rx);
                let tx = tx.clone();
                std::thread::spawn(move || loop {
                    let job = rx.lock().expect("lock").recv().expect("recv");
                    match job {
                        Some(k) => {
                            DONE_HERE.with(|d| d.set(d.get() + 1));
                            tx.send((k, k.wrapping_mul(0x9e37_79b9_7f4a_7c15))).expect("send");
                        }
                        None => return DONE_HERE.with(|d| d.get()),
                    }
                })
            })
            .collect();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let g = Arc::clone(&gate);
        let waiter = std::thread::spawn(move || {
            let (m, cv) = &*g;
            let mut open = m.lock().expect("gate");
            while !*open {
                open = cv.wait(open).expect("wait");
            }
            *open
        });
        let sleeper = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(300)));
        // Every thread in its wait before the capture point.
        std::thread::sleep(std::time::Duration::from_millis(50));
        Pool {
            jobs,
            results,
            workers,
            gate,
            waiter,
            sleeper,
        }
    }

    /// The pool checks the map's every 7th entry; every worker took part
    /// or not, but the jobs done add up.
    fn finish(self, map: &HashMap<u64, u64>) -> u64 {
        let keys: Vec<u64> = (0..100_000u64).step_by(7).collect();
        for &k in &keys {
            self.jobs.send(Some(k)).expect("job");
        }
        let mut sum = 0u64;
        for _ in &keys {
            let (k, v) = self.results.recv().expect("result");
            if map.get(&k) != Some(&v) {
                println!("FAIL pool result for {k}");
                std::process::exit(1);
            }
        }
        for _ in &self.workers {
            self.jobs.send(None).expect("stop");
        }
        let done: u64 = self.workers.into_iter().map(|w| w.join().expect("join")).sum();
        if done != keys.len() as u64 {
            println!("FAIL thread-local counts add up to {done}");
            std::process::exit(1);
        }
        *self.gate.0.lock().expect("gate") = true;
        self.gate.1.notify_all();
        if !self.waiter.join().expect("join waiter") {
            println!("FAIL waiter");
            std::process::exit(1);
        }
        self.sleeper.join().expect("join sleeper");
        sum = sum.wrapping_add(done);
        sum.wrapping_sub(done)
    }
}
