//! Builds `cryo-shim` (its own cargo workspace, see shim/Cargo.toml) in
//! release mode and puts it next to the `cryo` binary, where `cryo restore`
//! looks for it. A separate workspace keeps cryo-image's `std` feature, which
//! the rest of cryo enables, out of the no_std shim.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The one target everything is built for (the default one, named).
const TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));
    for p in [
        "shim/src",
        "shim/Cargo.toml",
        "shim/build.rs",
        "shim/link.x",
        "image/src",
        "image/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    // OUT_DIR is <target-dir>/<triple>/<profile>/build/cryo-<hash>/out
    // (or <target-dir>/<profile>/... without an explicit target).
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let profile_dir = out.ancestors().nth(3).expect("target/<profile>").to_owned();
    let mut target_root = profile_dir.parent().expect("target dir");
    if target_root.file_name().is_some_and(|n| n == TARGET) {
        target_root = target_root.parent().expect("target dir");
    }
    let target_dir = target_root.join("shim");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root.join("shim"))
        .args(["build", "--release", "--offline", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    // Nothing of the outer build's configuration applies to the shim: not
    // the environment, and not the rustflags of .cargo/config.toml (which
    // the shim's directory inherits; an empty CARGO_ENCODED_RUSTFLAGS takes
    // precedence over any configured rustflags). The shim sets its own link
    // arguments in shim/build.rs.
    for var in [
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "");
    let status = cmd.status().expect("running cargo for cryo-shim");
    if !status.success() {
        panic!("building cryo-shim failed ({status})");
    }
    let shim = profile_dir.join("cryo-shim");
    install(&target_dir.join(TARGET).join("release/cryo-shim"), &shim);
    // What cryo checks the shim beside it by (`cmd::check::built_shim`):
    // another file there (a truncated copy, another build) would be
    // exec'd at the point of no return.
    let bytes = std::fs::read(&shim).expect("reading cryo-shim");
    println!("cargo:rustc-env=CRYO_SHIM_LEN={}", bytes.len());
    println!(
        "cargo:rustc-env=CRYO_SHIM_XXH3={:016x}",
        xxhash_rust::xxh3::xxh3_64(&bytes)
    );
}

fn install(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).expect("copying cryo-shim");
    std::fs::rename(&tmp, to).expect("installing cryo-shim");
    // The same file under a second name, from which the shim maps itself
    // again before it replaces the executable (see remap_self in the shim).
    let alias = to.with_extension("text");
    let tmp = to.with_extension("text.tmp");
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(to, &tmp).is_err() {
        std::fs::copy(to, &tmp).expect("copying cryo-shim.text");
    }
    std::fs::rename(&tmp, alias).expect("installing cryo-shim.text");
}
