//! `cryo inspect`: what an image holds, for a human or (`--json`) a script.
//!
//! `text.rs` renders the listing, `json.rs` the JSON document, `names.rs`
//! the names both use (permissions, flags, signals).

mod json;
mod names;
mod text;

use anyhow::Result;
use cryo_image::load::LoadedImage;
use cryo_image::{run_kind, Image, StrRef, Vma};
use json::to_json;
use std::path::PathBuf;
use text::to_text;

/// Show what an image holds.
///
/// Checks the whole image first (header, tables and, unless --no-verify,
/// every page run's checksum), then prints mappings like pmap, page counts,
/// registers, TLS words, signals, fds, timers and sizes.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Image directory written by `cryo capture`.
    pub dir: PathBuf,
    /// Print one JSON document instead of text.
    /// On an error: `{"ok": false, "error": MESSAGE}` on stdout, status 1.
    #[arg(long)]
    pub json: bool,
    /// Skip checking the page data's checksums (faster on large images).
    #[arg(long)]
    pub no_verify: bool,
}

pub fn run(a: InspectArgs) -> Result<i32> {
    let loaded = LoadedImage::open(&a.dir)?;
    if !a.no_verify {
        loaded.verify_pages(|_| {})?;
    }
    let img = loaded.image()?;
    let text = if a.json {
        serde_json::to_string_pretty(&to_json(&img, &loaded))? + "\n"
    } else {
        to_text(&img, &loaded)
    };
    write_out(&text)?;
    Ok(0)
}

/// `text` to stdout; a reader that went away early (`cryo inspect DIR |
/// head`) is not an error (print! panicked there).
fn write_out(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// A tree member's state for people: running, or a zombie with how it
/// ended.
pub(super) fn tree_state(t: &cryo_image::tree::TreeProc) -> String {
    if t.state != cryo_image::tree::proc_state::ZOMBIE {
        return "live".into();
    }
    let st = t.exit_status as i32;
    if libc::WIFSIGNALED(st) {
        format!("zombie, killed by signal {}", libc::WTERMSIG(st))
    } else {
        format!("zombie, exited {}", libc::WEXITSTATUS(st))
    }
}

pub(super) fn s<'a>(img: &Image<'a>, r: StrRef) -> &'a str {
    img.str(r).unwrap_or("")
}

pub(super) fn comm(img: &Image) -> String {
    let c = img.process().comm;
    let n = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..n]).into_owned()
}

/// Pages stored as data and recorded as zero for one mapping.
pub(super) fn vma_pages(img: &Image, v: &Vma) -> (u64, u64) {
    let runs = img.page_runs();
    let (mut data, mut zero) = (0, 0);
    for i in v.first_run..v.first_run + v.run_count {
        if let Some(r) = runs.get(i as usize) {
            match r.kind {
                run_kind::DATA => data += r.npages as u64,
                _ => zero += r.npages as u64,
            }
        }
    }
    (data, zero)
}
