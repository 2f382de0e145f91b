//! Progress: a bar on a terminal (mailboxes, messages, bytes, rate, ETA),
//! plain lines on standard error otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    /// Set by SIGINT: finish the message at hand, start no other.
    pub stopping: AtomicBool,
    bar: Option<ProgressBar>,
    started: Instant,
    messages_total: AtomicU64,
    messages_done: AtomicU64,
    bytes: AtomicU64,
}

impl Progress {
    pub fn new(mailboxes: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(mailboxes),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} mailboxes, {msg} (ETA {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Progress {
            stopping: AtomicBool::new(false),
            bar,
            started: Instant::now(),
            messages_total: AtomicU64::new(0),
            messages_done: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    pub fn add_messages(&self, n: u64) {
        self.messages_total.fetch_add(n, Ordering::Relaxed);
        self.refresh();
    }

    pub fn message_done(&self, bytes: u64) {
        self.messages_done.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.refresh();
    }

    /// The rate so far: (messages/s, MB/s).
    pub fn rates(&self) -> (f64, f64) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        (
            self.messages_done.load(Ordering::Relaxed) as f64 / secs,
            self.bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
        )
    }

    fn refresh(&self) {
        if let Some(bar) = &self.bar {
            let (mps, mbps) = self.rates();
            bar.set_message(format!(
                "{}/{} messages, {:.1} MB copied, {mps:.0} msg/s, {mbps:.1} MB/s",
                self.messages_done.load(Ordering::Relaxed),
                self.messages_total.load(Ordering::Relaxed),
                self.bytes.load(Ordering::Relaxed) as f64 / 1e6,
            ));
        }
    }

    /// One mailbox finished (one way or another): a line either way.
    pub fn mailbox_done(&self, line: &str) {
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                bar.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// A line that is no mailbox's end (a retry round, an interruption).
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}
