fn main() {
    // A static, libc-free executable at a fixed address window.
    println!("cargo:rustc-link-arg-bins=-nostartfiles");
    println!("cargo:rustc-link-arg-bins=-nostdlib");
    println!("cargo:rustc-link-arg-bins=-static");
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rustc-link-arg-bins=-Wl,--image-base=0x3f0000000000");
    println!("cargo:rustc-link-arg-bins=-Wl,--build-id=none");
}
