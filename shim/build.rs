fn main() {
    // A static, libc-free executable at a fixed address window.
    println!("cargo:rustc-link-arg-bins=-nostartfiles");
    println!("cargo:rustc-link-arg-bins=-nostdlib");
    println!("cargo:rustc-link-arg-bins=-static");
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rustc-link-arg-bins=-Wl,--image-base=0x3f0000000000");
    println!("cargo:rustc-link-arg-bins=-Wl,--build-id=none");
    // Two segments, not four: headers, read-only data and code in one
    // (lld's --no-rosegment), everything writable in one (no RELRO, which
    // a program without a loader never applies). A packed restorer's exec
    // maps each segment and its remapping from its second name maps each
    // again: 33 µs of a packed GHC hello's restore on the VM of
    // docs/benchmarks.md.
    println!("cargo:rustc-link-arg-bins=-Wl,--no-rosegment");
    println!("cargo:rustc-link-arg-bins=-Wl,-z,norelro");
    // The entry check before .rodata and no zero-filled tail (link.x).
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/link.x");
    println!("cargo:rerun-if-changed=link.x");
}
