/work/main/shim/target/x86_64-unknown-linux-gnu/release/deps/cryo_image-e916acc20fd6109f.d: /work/main/image/src/lib.rs /work/main/image/src/error.rs /work/main/image/src/fds.rs /work/main/image/src/gadget.rs /work/main/image/src/handoff.rs /work/main/image/src/header.rs /work/main/image/src/image.rs /work/main/image/src/record.rs /work/main/image/src/signals.rs /work/main/image/src/task.rs /work/main/image/src/threads.rs /work/main/image/src/tree.rs /work/main/image/src/types/mod.rs /work/main/image/src/types/files.rs /work/main/image/src/types/lazy.rs /work/main/image/src/types/process.rs /work/main/image/src/types/section.rs /work/main/image/src/types/vma.rs /work/main/image/src/validate.rs

/work/main/shim/target/x86_64-unknown-linux-gnu/release/deps/libcryo_image-e916acc20fd6109f.rmeta: /work/main/image/src/lib.rs /work/main/image/src/error.rs /work/main/image/src/fds.rs /work/main/image/src/gadget.rs /work/main/image/src/handoff.rs /work/main/image/src/header.rs /work/main/image/src/image.rs /work/main/image/src/record.rs /work/main/image/src/signals.rs /work/main/image/src/task.rs /work/main/image/src/threads.rs /work/main/image/src/tree.rs /work/main/image/src/types/mod.rs /work/main/image/src/types/files.rs /work/main/image/src/types/lazy.rs /work/main/image/src/types/process.rs /work/main/image/src/types/section.rs /work/main/image/src/types/vma.rs /work/main/image/src/validate.rs

/work/main/image/src/lib.rs:
/work/main/image/src/error.rs:
/work/main/image/src/fds.rs:
/work/main/image/src/gadget.rs:
/work/main/image/src/handoff.rs:
/work/main/image/src/header.rs:
/work/main/image/src/image.rs:
/work/main/image/src/record.rs:
/work/main/image/src/signals.rs:
/work/main/image/src/task.rs:
/work/main/image/src/threads.rs:
/work/main/image/src/tree.rs:
/work/main/image/src/types/mod.rs:
/work/main/image/src/types/files.rs:
/work/main/image/src/types/lazy.rs:
/work/main/image/src/types/process.rs:
/work/main/image/src/types/section.rs:
/work/main/image/src/types/vma.rs:
/work/main/image/src/validate.rs:
