use super::write::ImageBuilder;
use super::*;
use proptest::prelude::*;

/// A small but complete image: two mappings, a file, data and zero runs.
/// Returns meta.img and pages.img; [`sample_sums`] gives sums.img.
pub(crate) fn sample() -> (Vec<u8>, Vec<u8>) {
    let mut b = ImageBuilder::default();
    let path = b.strings.add("/usr/bin/true");
    b.files.push(FileId {
        path,
        dev: 0x801,
        ino: 42,
        size: 8192,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 5,
        mode: 0o100755,
        ..Default::default()
    });
    b.process.pid = 1234;
    b.process.exe = path;
    b.process.exe_file = 0;
    b.process.cwd = b.strings.add("/tmp");
    b.process.kernel = b.strings.add("6.18");
    b.process.comm[..4].copy_from_slice(b"true");
    b.process.xsave_size = 1024;
    // A memory layout PR_SET_MM_MAP takes (validate checks it).
    b.process.mm = crate::MmFields {
        start_code: 0x40_0000,
        end_code: 0x40_1000,
        start_data: 0x60_0000,
        end_data: 0x60_1000,
        start_brk: 0x70_0000,
        brk: 0x70_0000,
        start_stack: 0x7ffd_0000_0000,
        arg_start: 0x7ffd_0000_1000,
        arg_end: 0x7ffd_0000_1010,
        env_start: 0x7ffd_0000_1010,
        env_end: 0x7ffd_0000_1100,
    };
    b.xsave = vec![7u8; 1024];
    let page: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    b.vmas.push(Vma {
        start: 0x400000,
        end: 0x402000,
        prot: prot::READ | prot::EXEC,
        kind: vma_kind::FILE_PRIVATE,
        file: 0,
        name: path,
        first_run: 0,
        run_count: 1,
        ..Default::default()
    });
    b.page_runs.push(PageRun {
        vaddr: 0x401000,
        npages: 1,
        kind: run_kind::DATA,
        offset: 0,
        flags: 0,
    });
    b.vmas.push(Vma {
        start: 0x7f0000000000,
        end: 0x7f0000004000,
        prot: prot::READ | prot::WRITE,
        kind: vma_kind::ANON_PRIVATE,
        file: NO_INDEX,
        name: StrRef::NONE,
        first_run: 1,
        run_count: 1,
        ..Default::default()
    });
    b.page_runs.push(PageRun {
        vaddr: 0x7f0000001000,
        npages: 2,
        kind: run_kind::ZERO,
        offset: 0,
        flags: 0,
    });
    b.sigactions.push(SigAction {
        signo: 10,
        handler: 0x401100,
        flags: 0x04000000,
        ..Default::default()
    });
    b.page_sums = super::write::sum_block_table(&sample_sums(&page));
    (b.encode(page.len() as u64), page)
}

/// sums.img for pages.img `pages`.
pub(crate) fn sample_sums(pages: &[u8]) -> Vec<u8> {
    let sums: Vec<u64> = pages.chunks(4096).map(checksum).collect();
    super::write::sums_bytes(&sums)
}

/// The sample with every format-3 section too: fds sharing a description,
/// a pipe with bytes in pages.img, an unlinked file with an extent, locks,
/// credentials, groups, task state and queued signals. pages.img is two
/// pages: the memory page, then the pipe's bytes.
pub(crate) fn sample_full() -> (Vec<u8>, Vec<u8>) {
    sample_full_with(|_| {})
}

/// [`sample_full`], with `edit` applied to the tables before encoding.
pub(crate) fn sample_full_with(edit: impl FnOnce(&mut ImageBuilder)) -> (Vec<u8>, Vec<u8>) {
    use crate::fds::*;
    use crate::signals::QueuedSignal;
    use crate::task::*;
    let (meta, page) = sample();
    let img = Image::parse(&meta).unwrap();
    let mut b = ImageBuilder::default();
    // Rebuild the sample's tables, then add the rest.
    let path = b.strings.add("/usr/bin/true");
    b.files = img.files().iter().collect();
    b.files[0].path = path;
    b.process = img.process();
    b.process.exe = path;
    b.process.cwd = b.strings.add("/tmp");
    b.process.kernel = b.strings.add("6.18");
    b.xsave = img.xsave().to_vec();
    b.vmas = img.vmas().iter().collect();
    b.vmas[0].name = path;
    b.page_runs = img.page_runs().iter().collect();
    b.sigactions = img.sigactions().iter().collect();
    let del = b.strings.add("/tmp/gone");
    b.files.push(FileId {
        path: del,
        size: 100,
        flags: file_flags::DELETED,
        first_extent: 0,
        extent_count: 1,
        ..Default::default()
    });
    b.extents.push(Extent {
        file_off: 0,
        data: Blob { off: 4096, len: 27 },
    });
    b.pipes.push(Pipe {
        ino: 77,
        size: 65536,
        flags: pipe_flags::INSIDE,
        data: Blob { off: 4096, len: 27 },
    });
    let t = b.strings.add("pipe:[77]");
    for (i, fd) in [3, 4, 5].into_iter().enumerate() {
        b.fds.push(Fd {
            fd,
            kind: fd_kind::PIPE,
            flags: if fd == 4 { 1 } else { 0 },
            target: t,
            file: NO_INDEX,
            desc: if fd == 5 { 0 } else { i as u32 },
            object: 0,
            ..Default::default()
        });
    }
    let gone = b.strings.add("/tmp/gone (deleted)");
    b.fds.push(Fd {
        fd: 6,
        kind: fd_kind::REGULAR,
        target: gone,
        file: 1,
        desc: 3,
        object: NO_INDEX,
        ..Default::default()
    });
    // (11.5) An inotify instance watching a directory, with its handle.
    let inotify = b.strings.add("anon_inode:inotify");
    b.fds.push(Fd {
        fd: 7,
        kind: fd_kind::INOTIFY,
        target: inotify,
        file: NO_INDEX,
        desc: 4,
        object: NO_INDEX,
        ..Default::default()
    });
    let mut w = InotifyWatch {
        desc: 4,
        wd: 1,
        mask: 0x100,
        dev: 8,
        ino: 1234,
        path: b.strings.add("/tmp/watched"),
        ..Default::default()
    };
    w.set_handle(1, &[0xd2, 4, 0, 0, 7, 0, 0, 0]);
    b.inotify.push(w);
    b.locks.push(Lock {
        fd: 6,
        kind: lock_kind::FLOCK,
        write: 1,
        start: 0,
        end: u64::MAX,
        ..Default::default()
    });
    b.creds = Some(Creds {
        uid: [1000; 4],
        gid: [1000; 4],
        ngroups: 2,
        ..Default::default()
    });
    b.groups = vec![Group { gid: 5 }, Group { gid: 6 }];
    b.task = Some(TaskState {
        nice: 5,
        ..Default::default()
    });
    b.signals.push(QueuedSignal {
        shared: 1,
        signo: 35,
        info: [35, 0xffff_ffff, 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        thread: 1,
        _pad: 0,
    });
    b.threads.push(crate::threads::Thread {
        tid: 1235,
        ..Default::default()
    });
    // (11.0) The thread has credentials of its own.
    b.thread_creds.push(Creds {
        uid: [2000; 4],
        gid: [2000; 4],
        ngroups: 2,
        ..Default::default()
    });
    // (9.0) A UDP socket with a two-instruction filter, locked.
    b.sockets.push(Socket {
        family: 2,
        sock_type: 2,
        pair: NO_INDEX,
        ..Default::default()
    });
    for (code, k) in [(0x30, 8), (0x06, 0xffff_ffff)] {
        b.sock_filters.push(SockFilterInsn {
            sock: 0,
            flags: filter_flags::LOCKED,
            code,
            k,
            ..Default::default()
        });
    }
    // (11.0) Two seccomp filters: one instruction, then two (logged).
    for (filter, flags, code, k) in [
        (0, 0, 0x06, 0x7fff_0000),
        (1, crate::task::seccomp_flags::LOG, 0x20, 0),
        (1, crate::task::seccomp_flags::LOG, 0x06, 0x7fff_0000),
    ] {
        b.seccomp.push(crate::task::SeccompInsn {
            thread: crate::task::EVERY_THREAD,
            filter,
            flags,
            code,
            k,
            ..Default::default()
        });
    }
    // (9.0) A TCP connection captured with TCP repair.
    b.sockets.push(Socket {
        family: 2,
        sock_type: 1,
        state: socket_state::REPAIRED,
        pair: NO_INDEX,
        ..Default::default()
    });
    b.tcp_conns.push(TcpConn {
        sock: 1,
        options: tcp_opts::TIMESTAMPS | tcp_opts::WSCALE,
        snd_seq: 1000,
        rcv_seq: 2000,
        mss: 1460,
        snd_wscale: 7,
        rcv_wscale: 7,
        ..Default::default()
    });
    // (9.1) Where the process kept its PID; a file reopened by handle.
    b.pid_refs.push(PidRef {
        addr: 0x1000,
        kind: 0,
        owner: 0,
    });
    // (11.5) A mutex the first thread holds.
    b.pid_refs.push(PidRef {
        addr: 0x2008,
        kind: task::pid_ref::MUTEX_OWNER,
        owner: 1,
    });
    let handled = b.files.len() as u32;
    b.files.push(FileId {
        path: b.strings.add(""),
        dev: 8,
        ino: 99,
        flags: file_flags::HANDLE,
        ..Default::default()
    });
    b.file_handles
        .push(FileHandle::new(handled, 1, &[1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap());
    // (11.6) A semaphore set of two (its values in the blob page) and an
    // empty message queue.
    b.sysv_sem.push(SysvSem {
        id: 32768,
        key: 0x1234,
        mode: 0o600,
        nsems: 2,
        values: Blob { off: 4096, len: 4 },
        ..Default::default()
    });
    b.sysv_msq.push(SysvMsq {
        id: 5,
        mode: 0o640,
        qbytes: 16384,
        ..Default::default()
    });
    // (11.9) A stopped child whose stop report the process had taken.
    b.taken_stops.push(crate::tree::TakenStop { pid: 4321 });
    // (11.10) The terminal at fd 0: non-canonical, no echo, 30x100.
    b.terminal = Some(crate::fds::Terminal {
        lflag: 0o1,
        rows: 30,
        cols: 100,
        ..Default::default()
    });
    // (11.11) An AIO context: a one-page ring, two events unreaped.
    b.vmas.push(Vma {
        start: 0x7f0000010000,
        end: 0x7f0000011000,
        prot: prot::READ | prot::WRITE,
        kind: vma_kind::AIO,
        file: NO_INDEX,
        first_run: b.page_runs.len() as u32,
        ..Default::default()
    });
    b.aio_rings.push(AioRing {
        start: 0x7f0000010000,
        len: 4096,
        nr: 127,
        head: 3,
        tail: 5,
        flags: 0,
        events: Blob {
            off: 8192,
            len: 4096 - 32,
        },
    });
    let x = b.xsave.clone();
    b.xsave.extend_from_slice(&x);
    let mut pages = page.clone();
    let mut blob = b"twenty-seven bytes buffered".to_vec();
    blob.resize(4096, 0);
    pages.extend_from_slice(&blob);
    pages.extend((0..4096u32).map(|i| (i * 3) as u8));
    b.page_sums = super::write::sum_block_table(&sample_sums(&pages));
    edit(&mut b);
    (b.encode(pages.len() as u64), pages)
}

#[test]
fn format_3_sections_round_trip() {
    let (meta, pages) = sample_full();
    let img = Image::parse(&meta).expect("parse");
    img.validate().expect("validate");
    img.verify_pages(&pages, &sample_sums(&pages))
        .expect("pages and blobs");
    assert_eq!(img.fds().len(), 5);
    assert_eq!(img.fds().get(2).unwrap().desc, 0);
    assert_eq!(img.pipes().get(0).unwrap().data.len, 27);
    assert_eq!(img.blobs().count(), 4);
    assert_eq!(img.aio_rings().get(0).unwrap().unreaped(), 2);
    assert_eq!(img.sysv_sem().get(0).unwrap().nsems, 2);
    assert_eq!(img.sysv_msq().get(0).unwrap().qbytes, 16384);
    assert_eq!(img.taken_stops().get(0).unwrap().pid, 4321);
    assert_eq!(img.terminal().map(|t| (t.rows, t.cols)), Some((30, 100)));
    assert_eq!(img.creds().unwrap().uid, [1000; 4]);
    assert_eq!(img.groups().len(), 2);
    assert_eq!(img.task().unwrap().nice, 5);
    assert_eq!(img.signals().get(0).unwrap().info[3], 11);
    // A corrupt blob page is caught, by its offset.
    let mut bad = pages.clone();
    bad[4096 + 3] ^= 1;
    assert_eq!(
        img.verify_pages(&bad, &sample_sums(&pages)),
        Err(ImageError::BlobChecksum { offset: 4096 })
    );
    // Broken references are refused by validate.
    let refused = |edit: fn(&mut ImageBuilder)| {
        let (m, _) = sample_full_with(edit);
        Image::parse(&m).unwrap().validate().is_err()
    };
    assert!(refused(|b| b.fds[0].desc = 2), "description after the fd");
    // Values the kernel would refuse the shim past its point of no return
    // (stop 52's sweep recomputed the checksums over each).
    assert!(!refused(|_| {}), "the sample itself");
    assert!(
        refused(|b| b.process.mm.end_code = b.process.mm.start_code),
        "code range out of order"
    );
    assert!(
        refused(|b| b.process.mm.arg_end = 0),
        "arguments out of order"
    );
    assert!(
        refused(|b| b.process.mm.brk = 1 << 60),
        "brk outside the address space"
    );
    assert!(
        refused(|b| b.creds.as_mut().unwrap().securebits = 0x2900),
        "unknown securebits"
    );
    assert!(
        refused(|b| {
            b.process.rseq_addr = 0x1000;
            b.process.rseq_size = 32;
        }),
        "rseq outside the image's memory"
    );
    assert!(
        refused(|b| b.itimers.push(crate::Itimer {
            which: 1,
            _pad: 0,
            interval_sec: 0,
            interval_usec: 0,
            value_sec: 0,
            value_usec: 1_000_000,
        })),
        "an interval timer's microseconds"
    );
    assert!(refused(|b| b.fds[0].object = 9), "pipe index");
    assert!(
        refused(|b| b.pipes[0].data.off = 12288),
        "blob outside pages.img"
    );
    assert!(refused(|b| b.files[1].extent_count = 2), "extent range");
    assert!(refused(|b| b.locks[0].fd = 42), "lock on no fd");
    assert!(
        refused(|b| b.inotify[0].handle_len = 129),
        "inotify handle too long"
    );
    assert!(
        refused(|b| b.task.as_mut().unwrap().frame_xsave = 100),
        "frame xsave below the legacy area"
    );
    assert!(
        refused(|b| b.sysv_sem[0].nsems = 3),
        "values of another size"
    );
    assert!(
        refused(|b| b.sysv_sem.push(b.sysv_sem[0])),
        "a semaphore set twice"
    );
    assert!(refused(|b| b.sysv_msq[0].count = 1), "messages not stored");
    assert!(
        refused(|b| b.taken_stops.push(b.taken_stops[0])),
        "a taken stop twice"
    );
    assert!(
        refused(|b| b.taken_stops[0].pid = b.process.pid),
        "the process's own stop"
    );
    assert!(refused(|b| b.taken_stops[0].pid = 0), "no PID");
    assert!(
        refused(|b| b.aio_rings[0].nr = 126),
        "a ring of another size"
    );
    assert!(
        refused(|b| b.vmas.last_mut().unwrap().kind = 13),
        "a kind of mapping of a newer version"
    );
    assert!(
        refused(|b| b.aio_rings[0].tail = 127),
        "a tail past the ring"
    );
    assert!(
        refused(|b| b.aio_rings[0].events.len = 32),
        "events not all stored"
    );
    assert!(
        refused(|b| b.aio_rings.clear()),
        "an AIO mapping without its context"
    );
    assert!(
        refused(|b| b.aio_rings[0].start = 0x7f0000000000),
        "a context at a mapping of another kind"
    );
    assert!(
        refused(|b| b.vmas.last_mut().unwrap().run_count = 1),
        "pages for an AIO ring"
    );
    assert!(
        refused(|b| b.terminal.as_mut().map_or((), |t| t.fd = 3)),
        "a terminal past fd 2"
    );
    assert!(refused(|b| b.groups.pop().map_or((), drop)), "group count");
    assert!(
        refused(|b| b.thread_creds[0].ngroups = 1),
        "a thread's groups are the main thread's"
    );
    assert!(
        refused(|b| b.thread_creds.push(crate::task::Creds::default())),
        "one credentials record per thread"
    );
    assert!(refused(|b| b.signals[0].signo = 65), "signal number");
    assert!(refused(|b| b.signals[0].thread = 2), "queue of no thread");
    assert!(
        refused(|b| b.xsave.truncate(1500)),
        "one xsave area per thread"
    );
    assert_eq!(img.threads().get(0).unwrap().tid, 1235);
    assert_eq!(img.xsave().len(), 1024);
    assert_eq!(img.xsave_of(1).len(), 1024);
}

#[test]
fn parse_verified_reads_what_parse_read() {
    let (meta, _) = sample();
    let a = Image::parse(&meta).unwrap();
    let b = Image::parse_verified(&meta).unwrap();
    assert_eq!(a.process(), b.process());
    assert_eq!(a.vmas().len(), b.vmas().len());
    assert_eq!(a.page_runs().len(), b.page_runs().len());
}

#[test]
fn roundtrip() {
    let (meta, pages) = sample();
    let img = Image::parse(&meta).expect("parse");
    img.validate().expect("validate");
    img.verify_pages(&pages, &sample_sums(&pages))
        .expect("pages");
    assert_eq!(img.process().pid, 1234);
    assert_eq!(img.str(img.process().exe), Some("/usr/bin/true"));
    assert_eq!(img.vmas().len(), 2);
    assert_eq!(img.vmas().get(1).unwrap().kind, vma_kind::ANON_PRIVATE);
    assert_eq!(img.page_runs().get(1).unwrap().npages, 2);
    assert_eq!(img.sigactions().get(0).unwrap().handler, 0x401100);
    assert_eq!(img.xsave().len(), 1024);
}

#[test]
fn every_byte_flip_is_detected() {
    let (meta, _) = sample();
    for i in 0..meta.len() {
        let mut m = meta.clone();
        m[i] ^= 0x40;
        let r = Image::parse(&m).and_then(|img| img.validate());
        assert!(r.is_err(), "flip at byte {i} went unnoticed");
    }
}

#[test]
fn every_truncation_is_detected() {
    let (meta, _) = sample();
    for n in 0..meta.len() {
        assert!(
            Image::parse(&meta[..n]).is_err(),
            "truncation to {n} accepted"
        );
    }
}

#[test]
fn corrupted_and_short_pages_are_detected() {
    let (meta, mut pages) = sample();
    let mut sums = sample_sums(&pages);
    let img = Image::parse(&meta).unwrap();
    assert!(matches!(
        img.verify_pages(&pages[..4095], &sums),
        Err(ImageError::PagesLength { .. })
    ));
    assert!(matches!(
        img.verify_pages(&pages, &sums[..7]),
        Err(ImageError::SumsLength {
            expected: 8,
            actual: 7
        })
    ));
    pages[100] ^= 1;
    assert_eq!(
        img.verify_pages(&pages, &sums),
        Err(ImageError::PageChecksum { vaddr: 0x401000 })
    );
    // A page and its checksum changed together: the block's checksum in
    // meta.img still catches it.
    sums.copy_from_slice(&sample_sums(&pages));
    assert_eq!(
        img.verify_pages(&pages, &sums),
        Err(ImageError::SumsChecksum { block: 0 })
    );
}

/// One block of sums.img covers 512 pages; page_sums must have one entry
/// per block, no more, no less.
#[test]
fn sum_blocks_cover_pages_img() {
    assert_eq!(sum_blocks(0), 0);
    assert_eq!(sum_blocks(4096), 1);
    assert_eq!(sum_blocks(512 * 4096), 1);
    assert_eq!(sum_blocks(513 * 4096), 2);
    let pages = vec![9u8; 513 * 4096];
    let sums = sample_sums(&pages);
    let t = super::write::sum_block_table(&sums);
    assert_eq!(t.len(), 2);
    assert_eq!(t[1].checksum, checksum(&sums[4096..]));
    assert_eq!(sums_block(&sums, 1), &sums[4096..]);
    assert_eq!(page_sum(&sums, 512), Some(checksum(&pages[..4096])));
    // An image whose page_sums is short is refused by validate.
    let (meta, _) = sample();
    let img = Image::parse(&meta).unwrap();
    let mut b = super::write::ImageBuilder {
        process: img.process(),
        xsave: img.xsave().to_vec(),
        ..Default::default()
    };
    b.process.exe = StrRef::NONE;
    b.process.cwd = StrRef::NONE;
    b.process.kernel = StrRef::NONE;
    b.process.exe_file = NO_INDEX;
    let m = b.encode(4096);
    assert!(matches!(
        Image::parse(&m).unwrap().validate(),
        Err(ImageError::Invalid(_))
    ));
}

#[test]
fn foreign_and_future_images_are_refused() {
    let (mut meta, _) = sample();
    assert_eq!(
        Image::parse(&[0x7fu8; 200]).err(),
        Some(ImageError::BadMagic)
    );
    let future = crate::VERSION_MAJOR as u8 + 1;
    meta[8] = future;
    assert!(matches!(
        Image::parse(&meta),
        Err(ImageError::UnsupportedVersion { major, .. }) if major == future as u16
    ));
    // The major before: 3.x has no process trees (a tree's children would
    // be lost).
    let old = crate::VERSION_MAJOR as u8 - 1;
    meta[8] = old;
    let e = Image::parse(&meta).err().unwrap();
    assert_eq!(
        e,
        ImageError::UnsupportedVersion {
            major: old as u16,
            minor: crate::VERSION_MINOR
        }
    );
    assert!(e.to_string().contains("capture again"), "{e}");
}

#[test]
fn messages_are_one_line() {
    let (meta, _) = sample();
    for n in [0, 10, 70, meta.len() - 1] {
        let e = Image::parse(&meta[..n]).err().unwrap();
        let s = e.to_string();
        assert!(!s.contains('\n') && !s.is_empty(), "{s:?}");
    }
}

#[test]
fn overlapping_vmas_are_refused() {
    let (meta, _) = sample();
    let img = Image::parse(&meta).unwrap();
    let mut b = ImageBuilder {
        process: img.process(),
        ..Default::default()
    };
    b.process.exe = StrRef::NONE;
    b.process.cwd = StrRef::NONE;
    b.process.kernel = StrRef::NONE;
    b.process.exe_file = NO_INDEX;
    b.xsave = img.xsave().to_vec();
    b.vmas.push(Vma {
        start: 0x1000,
        end: 0x3000,
        kind: vma_kind::ANON_PRIVATE,
        file: NO_INDEX,
        name: StrRef::NONE,
        ..Default::default()
    });
    b.vmas.push(Vma {
        start: 0x2000,
        end: 0x4000,
        kind: vma_kind::ANON_PRIVATE,
        file: NO_INDEX,
        name: StrRef::NONE,
        ..Default::default()
    });
    let m = b.encode(0);
    let img = Image::parse(&m).unwrap();
    assert!(matches!(
        img.validate(),
        Err(ImageError::BadVma { index: 1, .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(img) = Image::parse(&bytes) {
            let _ = img.validate();
            let _ = img.verify_pages(&[], &[]);
        }
        // Without checksums the structural checks alone must hold.
        if let Ok(img) = Image::parse_verified(&bytes) {
            let _ = img.validate();
            for v in img.vmas().iter() { let _ = img.str(v.name); }
        }
    }

    /// Mutations without resealing: parse refuses them, parse_verified
    /// (which skips the checksums) never panics on them.
    #[test]
    fn unsealed_mutations_never_panic_unchecked_parsing(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let (mut meta, _) = sample();
        let orig = meta.clone();
        for (pos, val) in edits {
            let p = pos % meta.len();
            meta[p] = val;
        }
        if meta != orig {
            prop_assert!(Image::parse(&meta).is_err());
        }
        if let Ok(img) = Image::parse_verified(&meta) {
            let _ = img.validate();
            let _ = img.process();
            for r in img.page_runs().iter() { let _ = r.len(); }
        }
    }

    /// Mutations of a valid image (with fixed-up checksums, so the decoder's
    /// structural checks are what is exercised) never panic it.
    #[test]
    fn mutated_images_never_panic(full in any::<bool>(), edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let (mut meta, pages) = if full { sample_full() } else { sample() };
        for (pos, val) in edits {
            let p = pos % meta.len();
            meta[p] = val;
        }
        super::write::reseal(&mut meta);
        if let Ok(img) = Image::parse(&meta) {
            let _ = img.validate();
            let _ = img.verify_pages(&pages, &sample_sums(&pages));
            for v in img.vmas().iter() { let _ = img.str(v.name); }
            for b in img.blobs() { let _ = b.pages(); }
            let _ = (img.creds(), img.task(), img.groups().len(), img.signals().len());
        }
    }
}

#[test]
fn pty_index_and_replay_rules() {
    use crate::fds::{pty_replay, Pty};
    // glibc's makedev(136, 5), (136, 300), (137, 2); (4, 1) is not a pty.
    let dev = |maj: u64, min: u64| ((maj & 0xfff) << 8) | (min & 0xff) | ((min & !0xff) << 12);
    assert_eq!(Pty::index_of_rdev(dev(136, 5)), Some(5));
    assert_eq!(Pty::index_of_rdev(dev(136, 300)), Some(300));
    assert_eq!(Pty::index_of_rdev(dev(137, 2)), Some(258));
    assert_eq!(Pty::index_of_rdev(dev(4, 1)), None);
    let mut cc = [0u8; 32];
    cc[2] = 0x7f; // VERASE
    cc[3] = 0x15; // VKILL
    cc[4] = 0x04; // VEOF
    cc[15] = 0x16; // VLNEXT
    cc[16] = 0x17; // VEOL2
    let canon = pty_replay::ICANON;
    let iexten = 0o100000;
    let r = pty_replay::input(0, canon, &cc, b"a line\nhalf");
    assert_eq!((r.bytes.as_slice(), r.exact), (&b"a line\nhalf"[..], true));
    // Typed quoted, written back quoted: exact.
    let r = pty_replay::input(0, canon, &cc, b"ab\x7f\x15");
    assert_eq!(r.bytes, b"ab\x16\x7f\x16\x15");
    assert!(r.exact && r.iexten);
    // An end-of-file mark (NUL) as the end-of-file character: not sure.
    let r = pty_replay::input(0, canon, &cc, b"x\0");
    assert_eq!((r.bytes.as_slice(), r.exact), (&b"x\x04"[..], false));
    // The second end of line: a terminator under IEXTEN, data without.
    assert_eq!(
        pty_replay::input(0, canon | iexten, &cc, b"a\x17").bytes,
        b"a\x17"
    );
    assert_eq!(pty_replay::input(0, canon, &cc, b"a\x17").bytes, b"a\x17");
    // ... and quoted when IEXTEN is on for the write (to quote another).
    assert_eq!(
        pty_replay::input(0, canon, &cc, b"a\x7f\x17").bytes,
        b"a\x16\x7f\x16\x17"
    );
    // No literal-next character: cannot quote.
    let mut plain = cc;
    plain[15] = 0;
    assert!(!pty_replay::input(0, canon, &plain, b"ab\x7f").exact);
    // Raw mode: data as it is.
    let r = pty_replay::input(0, 0, &cc, b"\0\x7f\x04\x16");
    assert_eq!(
        (r.bytes.as_slice(), r.exact, r.iexten),
        (&b"\0\x7f\x04\x16"[..], true, false)
    );
    // The replay keeps canonical mode and flow control, drops echo,
    // signals, translation.
    let (i, l) = pty_replay::input_flags(0o2400 | 0o40000, canon | 0o10 | 0o1 | iexten, false);
    assert_eq!((i, l), (0o42000, canon));
    assert_eq!(pty_replay::output_flags(0o5), 0o4);
}

#[test]
fn socket_filters_round_trip_and_are_checked() {
    let (meta, _) = sample_full();
    let img = Image::parse(&meta).expect("parse");
    img.validate().expect("validate");
    let f: Vec<_> = img.sock_filters().iter().collect();
    assert_eq!(f.len(), 2);
    assert_eq!((f[0].code, f[0].k, f[1].code), (0x30, 8, 0x06));
    // Refused: a filter of a socket that is not there, two flags values
    // in one filter, a code wider than 16 bits, and one too long.
    let bad: [&dyn Fn(&mut ImageBuilder); 4] = [
        &|b| b.sock_filters[1].sock = 7,
        &|b| b.sock_filters[1].flags = 0,
        &|b| b.sock_filters[0].code = 0x1_0000,
        &|b| {
            let i = b.sock_filters[0];
            b.sock_filters = vec![i; crate::fds::MAX_FILTER_INSNS + 1];
        },
    ];
    for (n, edit) in bad.iter().enumerate() {
        let (meta, _) = sample_full_with(|b| edit(b));
        let img = Image::parse(&meta).expect("parse");
        assert!(img.validate().is_err(), "case {n} must be refused");
    }
}

#[test]
fn seccomp_filters_round_trip_and_are_checked() {
    let (meta, _) = sample_full();
    let img = Image::parse(&meta).expect("parse");
    img.validate().expect("validate");
    let f: Vec<_> = img.seccomp().iter().map(|i| (i.filter, i.code)).collect();
    assert_eq!(f, [(0, 0x06), (1, 0x20), (1, 0x06)]);
    // Refused: a filter skipped, not starting at 0, two flags values in
    // one filter, an unknown flag, a code wider than 16 bits, a filter
    // too long.
    let bad: [&dyn Fn(&mut ImageBuilder); 8] = [
        &|b| b.seccomp[1].thread = 0,
        &|b| {
            for i in b.seccomp.iter_mut() {
                i.thread = 2;
            }
        },
        &|b| b.seccomp[1].filter = 2,
        &|b| b.seccomp[0].filter = 1,
        &|b| b.seccomp[2].flags = 0,
        &|b| b.seccomp[0].flags = 1,
        &|b| b.seccomp[0].code = 0x1_0000,
        &|b| {
            let i = b.seccomp[0];
            b.seccomp = vec![i; crate::task::MAX_SECCOMP_FILTER_INSNS + 1];
        },
    ];
    for (n, edit) in bad.iter().enumerate() {
        let (meta, _) = sample_full_with(|b| edit(b));
        let img = Image::parse(&meta).expect("parse");
        assert!(img.validate().is_err(), "case {n} must be refused");
    }
    // Chains of their own: the main thread's filter, then the thread's.
    let (meta, _) = sample_full_with(|b| {
        b.seccomp[0].thread = 0;
        for i in &mut b.seccomp[1..] {
            i.thread = 1;
            i.filter = 0;
        }
    });
    Image::parse(&meta)
        .expect("parse")
        .validate()
        .expect("a chain per thread");
}

#[test]
fn tcp_repair_state_is_checked() {
    let (meta, _) = sample_full();
    let img = Image::parse(&meta).expect("parse");
    img.validate().expect("validate");
    assert_eq!(img.tcp_conns().get(0).map(|t| t.rcv_seq), Some(2000));
    // Refused: unknown options, a scale above 14, more unsent bytes than
    // queued, the state of a socket that is not REPAIRED, a REPAIRED
    // socket without it.
    let bad: [&dyn Fn(&mut ImageBuilder); 5] = [
        &|b| b.tcp_conns[0].options = 8,
        &|b| b.tcp_conns[0].snd_wscale = 15,
        &|b| b.tcp_conns[0].unsent = 1,
        &|b| b.tcp_conns[0].sock = 0,
        &|b| b.tcp_conns.clear(),
    ];
    for (n, edit) in bad.iter().enumerate() {
        let (meta, _) = sample_full_with(|b| edit(b));
        let img = Image::parse(&meta).expect("parse");
        assert!(img.validate().is_err(), "case {n} must be refused");
    }
}

#[test]
fn format_9_1_sections_round_trip_and_are_checked() {
    let (meta, _) = sample_full();
    let img = Image::parse(&meta).expect("parse");
    img.validate().expect("validate");
    assert_eq!(img.pid_refs().get(0).map(|r| r.addr), Some(0x1000));
    assert_eq!(
        img.pid_refs().get(1).map(|r| (r.addr, r.kind, r.owner)),
        Some((0x2008, task::pid_ref::MUTEX_OWNER, 1))
    );
    let h = img.file_handles().get(0).expect("a handle");
    assert_eq!((h.kind, h.len), (1, 9));
    assert_eq!(&h.bytes()[..10], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 0]);
    assert!(crate::fds::FileHandle::new(0, 1, &[0; 129]).is_none());
    // Refused: a handle longer than MAX_HANDLE_SZ, one of a file without
    // the flag, two for one file, a HANDLE file without one.
    let bad: [&dyn Fn(&mut ImageBuilder); 4] = [
        &|b| b.file_handles[0].len = 129,
        &|b| b.file_handles[0].file = 0,
        &|b| {
            let h = b.file_handles[0];
            b.file_handles.push(h)
        },
        &|b| b.file_handles.clear(),
    ];
    for (n, edit) in bad.iter().enumerate() {
        let (meta, _) = sample_full_with(|b| edit(b));
        let img = Image::parse(&meta).expect("parse");
        assert!(img.validate().is_err(), "case {n} must be refused");
    }
}

#[test]
fn older_minor_records_read_with_zero_tails() {
    use crate::record::Record;
    // Only small records may be shorter (they are padded on the stack).
    for k in SectionKind::ALL {
        if k.min_record_size() < k.known_record_size() {
            assert!(
                k.known_record_size() <= crate::image::MAX_PADDED_RECORD,
                "{}",
                k.name()
            );
        }
    }
    // An 11.4 image: `inotify` records without the file handle (40
    // bytes), read with none.
    let (meta, _) = sample_full();
    let w = Image::parse(&meta).unwrap().inotify().get(0).unwrap();
    assert_eq!((w.handle_kind, w.handle_len), (1, 8));
    assert_eq!(&w.handle_bytes()[..8], &[0xd2, 4, 0, 0, 7, 0, 0, 0]);
    let old = with_record_size(&meta, SectionKind::Inotify, 40);
    let img = Image::parse(&old).expect("an 11.4 inotify section is read");
    img.validate().expect("validate");
    let o = img.inotify().get(0).unwrap();
    assert_eq!((o.wd, o.ino, o.handle_len), (1, 1234, 0));
    // An 11.4 image: `fanotify_marks` records without the handle (56
    // bytes; 64 was required until stop 34, and every image older than
    // 11.5 was refused, fanotify or not: the section is always there).
    let (meta, _) = sample_full();
    let old = with_record_size(&meta, SectionKind::FanotifyMarks, 56);
    let img = Image::parse(&old).expect("an 11.4 fanotify_marks section is read");
    img.validate().expect("validate");
    assert_eq!(
        <crate::fds::FanotifyMark as Record>::SIZE,
        56 + 8 + crate::fds::MAX_HANDLE
    );
    // An 11.5 image: `sysv_shm` records without the creator (56 bytes).
    let (meta, _) = sample_full_with(|b| {
        b.sysv_shm.push(crate::fds::SysvShm {
            cuid: 5,
            cgid: 6,
            ..Default::default()
        })
    });
    let full = Image::parse(&meta).unwrap();
    assert_eq!(
        full.sysv_shm().get(0).map(|s| (s.cuid, s.cgid)),
        Some((5, 6))
    );
    let old = with_record_size(&meta, SectionKind::SysvShm, 56);
    let img = Image::parse(&old).expect("an 11.5 sysv_shm section is read");
    assert_eq!(
        img.sysv_shm().get(0).map(|s| (s.cuid, s.cgid)),
        Some((0, 0))
    );
    assert_eq!(<crate::fds::SysvShm as Record>::SIZE, 64);
    // A 9.0 image: `files` records without the birth time (72 bytes).
    let (meta, _) = sample_full_with(|b| {
        b.files[0].btime_sec = 0;
    });
    let img = Image::parse(&meta).expect("parse");
    let want: Vec<FileId> = img.files().iter().collect();
    let old = with_record_size(&meta, SectionKind::Files, 72);
    let img = Image::parse(&old).expect("a 9.0 files section is read");
    img.validate().expect("validate");
    let got: Vec<FileId> = img.files().iter().collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (g.path, g.dev, g.ino, g.uid, g.gid),
            (w.path, w.dev, w.ino, w.uid, w.gid)
        );
        assert_eq!((g.btime_sec, g.btime_nsec), (0, 0));
    }
    assert_eq!(<FileId as Record>::SIZE, 88);
    // Shorter than 9.0's: refused.
    let short = with_record_size(&meta, SectionKind::Files, 64);
    assert!(Image::parse(&short).is_err());
    // An 11.2 image: `task` without `xcomp_perm` (nor 11.5's
    // `frame_xsave`), which read as 0; an 11.4 one without `frame_xsave`.
    use crate::task::TaskState;
    let (meta, _) = sample_full_with(|b| {
        if let Some(t) = b.task.as_mut() {
            t.xcomp_perm = crate::task::XCOMP_TILEDATA;
            t.frame_xsave = 2688;
            t.mlock_future = crate::task::MCL_FUTURE;
        }
    });
    let want = Image::parse(&meta).unwrap().task().expect("task");
    assert_eq!(want.xcomp_perm, crate::task::XCOMP_TILEDATA);
    // An 11.15 image: without 11.16's `boot_id`, `monotonic_ns` and
    // `boottime_ns` (32 bytes; read 0: never refused for its clocks).
    let m1115 = with_record_size(
        &meta,
        SectionKind::Task,
        <TaskState as Record>::SIZE as u32 - 32,
    );
    let img = Image::parse(&m1115).expect("an 11.15 task section is read");
    let got = img.task().expect("task");
    assert_eq!(
        (got.boot_id, got.monotonic_ns, got.mlock_future),
        ([0; 16], 0, crate::task::MCL_FUTURE)
    );
    // An 11.11 image: without `coredump_filter` (reads 0: not read).
    let size = <TaskState as Record>::SIZE as u32 - 32 - 8;
    let m1111 = with_record_size(&meta, SectionKind::Task, size);
    let img = Image::parse(&m1111).expect("an 11.11 task section is read");
    let got = img.task().expect("task");
    assert_eq!(
        (got.mlock_future, got.coredump_filter),
        (crate::task::MCL_FUTURE, 0)
    );
    // An 11.6 image: without `mlock_future` (reads 0).
    let size = <TaskState as Record>::SIZE as u32 - 32 - 16;
    let m116 = with_record_size(&meta, SectionKind::Task, size);
    let img = Image::parse(&m116).expect("an 11.6 task section is read");
    let got = img.task().expect("task");
    assert_eq!((got.frame_xsave, got.mlock_future), (2688, 0));
    let size = <TaskState as Record>::SIZE as u32 - 32 - 24;
    let m114 = with_record_size(&meta, SectionKind::Task, size);
    let img = Image::parse(&m114).expect("an 11.4 task section is read");
    img.validate().expect("validate");
    let got = img.task().expect("task");
    assert_eq!(
        (got.xcomp_perm, got.frame_xsave),
        (crate::task::XCOMP_TILEDATA, 0)
    );
    let size = size - 8;
    let old = with_record_size(&meta, SectionKind::Task, size);
    let img = Image::parse(&old).expect("an 11.2 task section is read");
    img.validate().expect("validate");
    let got = img.task().expect("task");
    assert_eq!(
        (got.xcomp_perm, got.frame_xsave, got.seccomp_strict),
        (0, 0, want.seccomp_strict)
    );
    assert_eq!(
        (got.affinity, got.oom_score_adj),
        (want.affinity, want.oom_score_adj)
    );
    assert!(Image::parse(&with_record_size(&meta, SectionKind::Task, size - 8)).is_err());
}

/// `meta` with the records of section `kind` cut to `size` bytes each (as
/// an older writer that knew fewer fields wrote them), resealed.
fn with_record_size(meta: &[u8], kind: SectionKind, size: u32) -> Vec<u8> {
    use crate::record::Field;
    use crate::{DirEntry, DIR_ENTRY_SIZE, HEADER_SIZE};
    let mut m = meta.to_vec();
    let n = u32::get(&m[16..]) as usize;
    for i in 0..n {
        let at = HEADER_SIZE + i * DIR_ENTRY_SIZE;
        let mut e = DirEntry::decode(&m[at..]);
        if e.kind != kind as u32 {
            continue;
        }
        let (old, off) = (e.record_size as usize, e.offset as usize);
        for r in 0..e.count as usize {
            let rec = m[off + r * old..off + r * old + size as usize].to_vec();
            m[off + r * size as usize..off + (r + 1) * size as usize].copy_from_slice(&rec);
        }
        e.record_size = size;
        e.encode(&mut m[at..]);
    }
    crate::write::reseal(&mut m);
    m
}

#[test]
fn sysv_messages_round_trip_and_refuse_what_is_not_them() {
    use crate::fds::{sysv_messages, sysv_messages_blob};
    let msgs: [(i64, &[u8]); 3] = [(3, b"first"), (1, b""), (7, b"eight by")];
    let blob = sysv_messages_blob(msgs);
    assert_eq!(blob.len(), 24 + 16 + 24);
    assert_eq!(sysv_messages(&blob, 3).unwrap(), msgs.to_vec());
    assert_eq!(sysv_messages(&[], 0), Some(vec![]));
    assert!(sysv_messages(&blob, 2).is_none(), "more than counted");
    assert!(sysv_messages(&blob, 4).is_none(), "fewer than counted");
    assert!(sysv_messages(&blob[..20], 1).is_none(), "cut short");
    let mut bad = blob.clone();
    bad[8] = 200; // a length past the end
    assert!(sysv_messages(&bad, 3).is_none());
    let mut bad = blob;
    bad[..8].copy_from_slice(&0i64.to_le_bytes()); // type 0
    assert!(sysv_messages(&bad, 3).is_none());
}

#[test]
fn boot_ids_and_clock_jumps() {
    use crate::task::{clock_jump, parse_boot_id, ClockJump, TaskState};
    let id = parse_boot_id(b"409b72f8-0ec4-4e15-bad0-376d982ba6bd\n").expect("a boot id");
    assert_eq!(id[0], 0x40);
    assert_eq!(id[15], 0xbd);
    assert_eq!(
        parse_boot_id(b"409b72f8-0ec4-4e15-bad0-376d982ba6b\n"),
        None
    );
    assert_eq!(
        parse_boot_id(b"409b72f8-0ec4-4e15-bad0-376d982ba6bdaa"),
        None
    );
    assert_eq!(parse_boot_id(b"x09b72f8-0ec4-4e15-bad0-376d982ba6bd"), None);
    let t = TaskState {
        boot_id: id,
        monotonic_ns: 5_000_000_000,
        ..Default::default()
    };
    assert_eq!(clock_jump(&t, &id, 6_000_000_000), None);
    assert_eq!(
        clock_jump(&t, &id, 1_000_000_000),
        Some(ClockJump::Behind(4_000_000_000))
    );
    let mut other = id;
    other[3] ^= 1;
    assert_eq!(
        clock_jump(&t, &other, 9_000_000_000),
        Some(ClockJump::OtherBoot)
    );
    // An older image, which recorded none: never refused for it.
    assert_eq!(clock_jump(&TaskState::default(), &other, 0), None);
    assert!(ClockJump::Behind(4_000_000_000)
        .to_string()
        .contains("4.000 s behind"));
}

#[test]
fn numa_policies_as_numa_maps_words_them() {
    use crate::parse_mempolicy as p;
    assert_eq!(p("default"), Some((0, 0)));
    assert_eq!(p("local"), Some((4, 0)));
    assert_eq!(p("bind:0-1"), Some((2, 0b11)));
    assert_eq!(p("prefer:2"), Some((1, 0b100)));
    assert_eq!(p("interleave=static:0,3-4"), Some((3 | 1 << 15, 0b11001)));
    assert_eq!(
        p("bind=relative|balancing:1"),
        Some((2 | 1 << 14 | 1 << 13, 0b10))
    );
    assert_eq!(p("prefer (many):0-2"), Some((5, 0b111)));
    assert_eq!(p("weighted interleave:1"), Some((6, 0b10)));
    // What cryo cannot make again, or what numa_maps never says.
    assert_eq!(p("bind:64"), None);
    assert_eq!(p("bind"), None);
    assert_eq!(p("local:0"), None);
    assert_eq!(p("bind=sometimes:0"), None);
    assert_eq!(p("whatever:0"), None);
}
