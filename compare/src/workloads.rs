//! The workloads: what each program computes, its name, and its argv in
//! each mode (cold, stop, save, thaw).

use crate::build::Built;
use std::ffi::OsString;
use std::path::Path;

/// What a workload program computes.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// GHC hello world: hs_init, putStrLn, hs_exit (with or without -V0).
    Hello { v0: bool },
    /// `bench STRUCTURE N ANSWER`: build a Data.Map ("map") or an array of
    /// Text ("text") from N entries, then answer by a few lookups or a
    /// full fold. `threaded`: built with GHC's threaded RTS and run on two
    /// capabilities (`-threaded -with-rtsopts=-N2`, otherwise the default
    /// RTS flags): worker threads, the IO manager and the timerfd ticker.
    Bench {
        structure: &'static str,
        n: u64,
        answer: &'static str,
        threaded: bool,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub name: String,
    pub kind: Kind,
}

/// "1e5" for powers of ten, the number otherwise.
fn short(n: u64) -> String {
    let mut e = 0;
    let mut m = n;
    while m >= 10 && m.is_multiple_of(10) {
        m /= 10;
        e += 1;
    }
    if m == 1 && e > 0 {
        format!("1e{e}")
    } else {
        n.to_string()
    }
}

impl Workload {
    fn bench(structure: &'static str, n: u64, answer: &'static str) -> Workload {
        Workload {
            name: format!("{structure}-{}-{answer}", short(n)),
            kind: Kind::Bench {
                structure,
                n,
                answer,
                threaded: false,
            },
        }
    }

    /// The same, on the threaded RTS with +RTS -N2.
    fn bench_threaded(structure: &'static str, n: u64, answer: &'static str) -> Workload {
        Workload {
            name: format!("{structure}-{}-{answer}-threaded", short(n)),
            kind: Kind::Bench {
                structure,
                n,
                answer,
                threaded: true,
            },
        }
    }

    /// argv of the workload in MODE (cold, stop, save, thaw).
    pub(crate) fn argv(&self, b: &Built, mode: &str, file: Option<&Path>) -> Vec<OsString> {
        let mut v: Vec<OsString> = match &self.kind {
            Kind::Hello { v0 } => {
                vec![if *v0 { &b.hello_v0 } else { &b.hello }.into(), mode.into()]
            }
            Kind::Bench {
                structure,
                n,
                answer,
                threaded,
            } => vec![
                if *threaded {
                    &b.bench_threaded
                } else {
                    &b.bench
                }
                .clone()
                .into(),
                (*structure).into(),
                n.to_string().into(),
                (*answer).into(),
                mode.into(),
            ],
        };
        if let Some(f) = file {
            v.push(f.into());
        }
        v
    }
}

/// The workload set: `--quick` keeps the heaps small (about 1 and 8 MB of
/// map, 14 MB of text); the full sweep takes the map from about 1 MB to
/// about 1 GB of heap and adds ghc-fastboot's 1M-entry vector of Text.
/// `sizes` replaces the map sizes.
pub fn workloads(quick: bool, sizes: Option<&[u64]>) -> Vec<Workload> {
    let mut v = vec![
        Workload {
            name: "hello".into(),
            kind: Kind::Hello { v0: false },
        },
        Workload {
            name: "hello-v0".into(),
            kind: Kind::Hello { v0: true },
        },
    ];
    let default: &[u64] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 1_000_000, 10_000_000]
    };
    for &n in sizes.unwrap_or(default) {
        for answer in ["lookups", "fold"] {
            v.push(Workload::bench("map", n, answer));
        }
        v.push(Workload::bench_threaded("map", n, "lookups"));
    }
    let text_n = if quick { 100_000 } else { 1_000_000 };
    for answer in ["lookups", "fold"] {
        v.push(Workload::bench("text", text_n, answer));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_and_sets() {
        let q = workloads(true, None);
        let names: Vec<&str> = q.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "hello",
                "hello-v0",
                "map-1e4-lookups",
                "map-1e4-fold",
                "map-1e4-lookups-threaded",
                "map-1e5-lookups",
                "map-1e5-fold",
                "map-1e5-lookups-threaded",
                "text-1e5-lookups",
                "text-1e5-fold"
            ]
        );
        let full = workloads(false, None);
        assert!(full.iter().any(|w| w.name == "map-1e7-fold"));
        assert!(full.iter().any(|w| w.name == "text-1e6-lookups"));
        let custom = workloads(true, Some(&[2500]));
        assert!(custom.iter().any(|w| w.name == "map-2500-lookups"));
        assert_eq!(short(1), "1");
        assert_eq!(short(3_000_000), "3000000");
    }
}
