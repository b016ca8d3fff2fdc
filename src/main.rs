//! cryo — process-level checkpoint/restore for Linux x86_64.
// (The `cryo inspect --json` document is one json! literal deeper than
// the default limit of 128 allows.)
#![recursion_limit = "256"]

mod cmd;

use clap::{Parser, Subcommand};

/// Capture a live process once, restore it many times.
///
/// Typical use: a program initialises, stops itself (raise(SIGSTOP)), and
/// `cryo run --capture-on-stop DIR -- PROG` snapshots it; or capture any
/// running process (every thread) by PID with `cryo capture PID DIR`. `cryo inspect
/// DIR` shows what an image holds; `cryo restore DIR` brings it back (`--map`:
/// straight from the page cache); `cryo pack DIR -o FILE` writes a restorer
/// of its own (one exec); `cryo check` tells whether this machine has what
/// cryo needs.
#[derive(Parser, Debug)]
#[command(name = "cryo", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    // (help: the doc comment of its Args struct)
    Capture(cmd::capture::CaptureArgs),
    // (help: the doc comment of its Args struct)
    Dump(cmd::capture::DumpArgs),
    // (about and long help: the doc comment of RunArgs)
    Run(cmd::run::RunArgs),
    // (about and long help: the doc comment of RestoreArgs)
    Restore(cmd::restore::RestoreArgs),
    // (about and long help: the doc comment of PackArgs)
    Pack(cmd::pack::PackArgs),
    // (help: the doc comment of its Args struct)
    Inspect(cmd::inspect::InspectArgs),
    // (help: the doc comment of its Args struct)
    Check(cmd::check::CheckArgs),
    // (about and long help: the doc comment of CompareArgs)
    Compare(cmd::compare::CompareArgs),
}

fn main() {
    let cli = Cli::parse();
    // A script that asked for JSON gets JSON on an error too (a sweep of
    // stop 52: stdout was empty, the one line on stderr only).
    let json = match &cli.cmd {
        Cmd::Capture(a) => a.json,
        Cmd::Run(a) => a.json,
        Cmd::Restore(a) => a.json,
        Cmd::Pack(a) => a.json,
        Cmd::Inspect(a) => a.json,
        Cmd::Check(a) => a.json,
        Cmd::Compare(a) => a.json,
        Cmd::Dump(_) => false,
    };
    let r = match cli.cmd {
        Cmd::Capture(a) => cmd::capture::run(a),
        Cmd::Dump(a) => cmd::capture::run_dump(a),
        Cmd::Run(a) => cmd::run::run(a),
        Cmd::Restore(a) => cmd::restore::run(a),
        Cmd::Pack(a) => cmd::pack::run(a),
        Cmd::Inspect(a) => cmd::inspect::run(a),
        Cmd::Check(a) => cmd::check::run(a),
        Cmd::Compare(a) => cmd::compare::run(a),
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "error": one_line(&e) })
                );
            }
            // Several obstacles to a capture: one per line, then the rest.
            let refused = e.chain().find_map(|c| match c.downcast_ref() {
                Some(cryo_capture::CaptureError::Refused { pid, obstacles })
                    if obstacles.len() > 1 =>
                {
                    Some(cmd::capture::obstacle_list(*pid, obstacles))
                }
                _ => None,
            });
            match refused {
                Some(list) => {
                    let outer = one_line(&e);
                    // Context added around the refusal (cryo run's note).
                    let note = outer.split("cannot capture pid").next().unwrap_or("");
                    eprintln!("cryo: {note}{list}");
                }
                None => eprintln!("cryo: {}", one_line(&e)),
            }
            std::process::exit(1);
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the
/// message already carries (typed errors embed their io::Error's text).
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for c in e.chain() {
        let s = c.to_string();
        if msg.contains(&s) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&s);
    }
    msg.replace('\n', " ")
}
