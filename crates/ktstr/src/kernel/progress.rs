//! Progress output for long kernel operations: a spinner or byte bar per stage on a
//! terminal, one plain line per stage otherwise (CI logs), or nothing.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where stage progress goes (always stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Quiet,
    Lines,
    Bars,
}

impl Progress {
    /// Bars on a terminal, plain lines otherwise.
    pub fn auto() -> Progress {
        let mode = if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        };
        Progress { mode }
    }

    /// One line per stage.
    pub fn lines() -> Progress {
        Progress { mode: Mode::Lines }
    }

    /// No output.
    pub fn quiet() -> Progress {
        Progress { mode: Mode::Quiet }
    }

    /// True when progress draws live bars (a terminal), false for plain lines or quiet.
    pub fn is_interactive(&self) -> bool {
        self.mode == Mode::Bars
    }

    /// A one-off message.
    pub fn note(&self, msg: &str) {
        if self.mode != Mode::Quiet {
            eprintln!("{msg}");
        }
    }

    /// A stage of unknown length.
    pub(crate) fn stage(&self, msg: String) -> Stage {
        let bar = match self.mode {
            Mode::Bars => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                        .expect("static template"),
                );
                bar.set_message(msg.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                Some(bar)
            }
            Mode::Lines => {
                eprintln!("{msg} ...");
                None
            }
            Mode::Quiet => None,
        };
        Stage {
            bar,
            msg,
            mode: self.mode,
        }
    }
}

/// One stage in flight; say [`Stage::done`] when it ends (dropping it abandons the bar).
pub(crate) struct Stage {
    bar: Option<ProgressBar>,
    msg: String,
    mode: Mode,
}

impl Stage {
    /// Replaces the live message (a bar only; plain lines print stages, not updates).
    pub(crate) fn update(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        }
    }

    pub(crate) fn done(self, detail: &str) {
        match (&self.bar, self.mode) {
            (Some(b), _) => {
                b.set_style(ProgressStyle::with_template("✓ {msg}").expect("static template"));
                b.finish_with_message(format!("{}: {detail}", self.msg));
            }
            (None, Mode::Lines) => eprintln!("  {detail}"),
            _ => {}
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            if !b.is_finished() {
                b.abandon();
            }
        }
    }
}

/// `13.7 MB` style sizes (decimal units, like apt).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(13_717_736), "13.7 MB");
        assert_eq!(human_bytes(2_000_000_000), "2.0 GB");
    }
}
