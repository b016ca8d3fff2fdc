//! What the page server counts, written as JSON at exit (`--lazy-stats`).

#[derive(Default)]
pub(super) struct Stats {
    pub(super) faults: u64,
    pub(super) zero_faults: u64,
    /// Faults whose page was there when they were read (the stream's copy
    /// answered them, or another thread's fault on the same page).
    pub(super) answered_faults: u64,
    pub(super) fault_pages: u64,
    pub(super) background_pages: u64,
    /// Pages the second streamer copied (`super::second`).
    pub(super) second_pages: u64,
    pub(super) prefetch_pages: u64,
    pub(super) prefetch_copies: u64,
    /// Pages copied ahead of a walk with a fixed stride.
    pub(super) stride_pages: u64,
    /// Pages copied ahead of a dense walk (the rest of a fault's window).
    pub(super) ahead_pages: u64,
    /// Pages zeroed around a zero fault (`Server::zero_around`).
    pub(super) zero_pages: u64,
    pub(super) forks: u64,
    /// Pages checksummed (and sums.img blocks), and the time spent on it.
    pub(super) verified_pages: u64,
    pub(super) verified_blocks: u64,
    pub(super) verify_ns: u64,
    pub(super) removes: u64,
    pub(super) remaps: u64,
    pub(super) unmaps: u64,
    /// Service time of each data fault (ns), from reading it to its copy.
    pub(super) service_ns: Vec<u32>,
}

/// Write `text` to `path` whole or not at all: a temporary name of this
/// process's, then renamed (the page server may finish after the program
/// and `cryo restore` are gone, while a script already reads the file).
pub fn write_stats_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    super::write_renamed(path, text.as_bytes(), 0o666, false)
}

/// The statistics as one JSON object; `filled_eagerly` false.
pub(super) fn stats_json(st: &mut Stats) -> String {
    json_with(st, "\"filled_eagerly\":false")
}

/// What `--lazy-stats` writes for a lazy restore that filled memory
/// eagerly instead (`crate::EagerFill`): no page server, every count 0.
pub fn eager_fill_json(lazy_pages: u64, min_pages: u64, shared_pages: u64) -> String {
    json_with(
        &mut Stats::default(),
        &format!(
            "\"filled_eagerly\":true,\"lazy_pages\":{lazy_pages},\"lazy_min_pages\":{min_pages},\"shared_pages\":{shared_pages}"
        ),
    )
}

fn json_with(st: &mut Stats, extra: &str) -> String {
    st.service_ns.sort_unstable();
    let q = |f: f64| -> u64 {
        if st.service_ns.is_empty() {
            0
        } else {
            st.service_ns[((st.service_ns.len() - 1) as f64 * f) as usize] as u64
        }
    };
    format!(
        "{{\"faults\":{},\"zero_faults\":{},\"answered_faults\":{},\"fault_pages\":{},\"background_pages\":{},\"second_pages\":{},\"prefetch_pages\":{},\"prefetch_copies\":{},\"stride_pages\":{},\"ahead_pages\":{},\"zero_pages\":{},\"forks\":{},\"removes\":{},\"unmaps\":{},\"remaps\":{},\"verified_pages\":{},\"verified_blocks\":{},\"verify_ns\":{},\"fault_service_ns_p10\":{},\"fault_service_ns_median\":{},\"fault_service_ns_p90\":{},{}}}\n",
        st.faults,
        st.zero_faults,
        st.answered_faults,
        st.fault_pages,
        st.background_pages,
        st.second_pages,
        st.prefetch_pages,
        st.prefetch_copies,
        st.stride_pages,
        st.ahead_pages,
        st.zero_pages,
        st.forks,
        st.removes,
        st.unmaps,
        st.remaps,
        st.verified_pages,
        st.verified_blocks,
        st.verify_ns,
        q(0.1),
        q(0.5),
        q(0.9),
        extra
    )
}
