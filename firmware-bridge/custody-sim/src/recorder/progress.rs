//! Telling the user how far generation is: a progress bar on a terminal, one plain line per step when
//! stderr is a file or pipe (CI logs would otherwise fill with bar redraws), nothing when asked to be
//! quiet (tests and benchmarks calling the library).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub(crate) enum Progress {
    Bar(ProgressBar),
    Lines { total: u64, done: AtomicU64 },
    Quiet,
}

impl Progress {
    pub fn new(total_files: u64, quiet: bool) -> Self {
        if quiet {
            return Self::Quiet;
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total_files);
            let style = ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {pos}/{len} files, eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            Self::Bar(bar)
        } else {
            Self::Lines {
                total: total_files,
                done: AtomicU64::new(0),
            }
        }
    }

    /// A step that is not a file (encoding a seed clip).
    pub fn step(&self, what: &str) {
        match self {
            Self::Bar(bar) => bar.set_message(what.to_string()),
            Self::Lines { .. } => eprintln!("custody-sim: {what}"),
            Self::Quiet => {}
        }
    }

    /// One more file is written.
    pub fn file_done(&self, path: &str, size: u64) {
        match self {
            Self::Bar(bar) => {
                bar.set_message(path.to_string());
                bar.inc(1);
            }
            Self::Lines { total, done } => {
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                eprintln!(
                    "custody-sim: [{n}/{total}] {path} ({})",
                    bytesize::ByteSize(size)
                );
            }
            Self::Quiet => {}
        }
    }

    pub fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
