//! Rust std target for cryo's tests: builds a HashMap, a Vec and a String,
//! writes through a BufWriter, then "READY <pid>" and (mode stop) raises
//! SIGSTOP or (mode read) blocks reading stdin; after continuing it checks
//! its state and prints "PASS <checksum>".
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
    if mode == "stop" {
        // SAFETY-free: raise is async-signal-safe and takes an int.
        unsafe { raise(19) };
    } else {
        let mut b = [0u8; 1];
        std::io::stdin().read_exact(&mut b).expect("read stdin");
    }
    let mut sum = 0u64;
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
