/work/main/shim/target/x86_64-unknown-linux-gnu/release/deps/cryo_shim-7a5b133e432844fa.d: src/main.rs src/fds.rs src/files.rs src/frame.rs src/load.rs src/mem.rs src/mm.rs src/rseq.rs src/selfmap.rs src/signals.rs src/sys.rs src/task.rs src/threads.rs src/timers.rs src/tls.rs src/uffd.rs src/vma.rs Cargo.toml

/work/main/shim/target/x86_64-unknown-linux-gnu/release/deps/libcryo_shim-7a5b133e432844fa.rmeta: src/main.rs src/fds.rs src/files.rs src/frame.rs src/load.rs src/mem.rs src/mm.rs src/rseq.rs src/selfmap.rs src/signals.rs src/sys.rs src/task.rs src/threads.rs src/timers.rs src/tls.rs src/uffd.rs src/vma.rs Cargo.toml

src/main.rs:
src/fds.rs:
src/files.rs:
src/frame.rs:
src/load.rs:
src/mem.rs:
src/mm.rs:
src/rseq.rs:
src/selfmap.rs:
src/signals.rs:
src/sys.rs:
src/task.rs:
src/threads.rs:
src/timers.rs:
src/tls.rs:
src/uffd.rs:
src/vma.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR
