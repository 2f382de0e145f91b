//! The standard `process_*` metrics (as Prometheus's Go and Python clients
//! name them), read from `/proc/self` at scrape time. Linux only; by hand,
//! because prometheus's own `process` feature pulls in `procfs` and more.
//!
//! - `process_resident_memory_bytes`, `process_virtual_memory_bytes`:
//!   `/proc/self/statm` (pages) times the page size;
//! - `process_cpu_seconds_total`: user plus system time, `/proc/self/stat`;
//! - `process_open_fds`: the entries of `/proc/self/fd`;
//! - `process_max_fds`: the soft `Max open files` of `/proc/self/limits`;
//! - `process_start_time_seconds`: the boot time of `/proc/stat` plus the
//!   process's start in `/proc/self/stat`.

use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, IntGauge};

/// Clock ticks per second in `/proc` (`USER_HZ`): 100 on every Linux
/// architecture popgate builds for; the Go client assumes the same.
const USER_HZ: f64 = 100.0;

/// What one scrape reads.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Sample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time: Option<f64>,
}

/// `/proc/self/stat`: (utime + stime, starttime), in clock ticks. The
/// second field (the command name) is in parentheses and may hold spaces
/// and parentheses itself: the fields are counted after the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<(u64, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    // rest starts at field 3 (state): utime is field 14, stime 15,
    // starttime 22, that is indexes 11, 12 and 19 here.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((field(11)? + field(12)?, field(19)?))
}

/// `/proc/self/statm`: (size, resident), in pages.
pub(crate) fn parse_statm(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

/// `/proc/self/limits`: the soft limit of open files; `u64::MAX` when
/// unlimited.
pub(crate) fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// `/proc/stat`: the boot time, in seconds since the epoch.
pub(crate) fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Reads this process's figures from `/proc`; what cannot be read is `None`.
pub(crate) fn sample() -> Sample {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let stat = read("/proc/self/stat").and_then(|t| parse_stat(&t));
    let statm = read("/proc/self/statm").and_then(|t| parse_statm(&t));
    let page = rustix::param::page_size() as u64;
    let btime = read("/proc/stat").and_then(|t| parse_btime(&t));
    Sample {
        cpu_seconds: stat.map(|(ticks, _)| ticks as f64 / USER_HZ),
        resident_bytes: statm.map(|(_, rss)| rss * page),
        virtual_bytes: statm.map(|(size, _)| size * page),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
        max_fds: read("/proc/self/limits").and_then(|t| parse_max_fds(&t)),
        start_time: stat
            .zip(btime)
            .map(|((_, start), boot)| boot as f64 + start as f64 / USER_HZ),
    }
}

/// The `process_*` families, filled in at each scrape.
pub(crate) struct ProcessCollector {
    cpu: Counter,
    resident: IntGauge,
    virtual_memory: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: Gauge,
    /// One scrape at a time moves the counter to its new total.
    scrape: Mutex<()>,
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}

impl ProcessCollector {
    pub(crate) fn new() -> Self {
        ProcessCollector {
            cpu: Counter::new(
                "process_cpu_seconds_total",
                "User and system CPU time spent, in seconds.",
            )
            .expect("valid metric"),
            resident: gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            ),
            virtual_memory: gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            ),
            open_fds: gauge("process_open_fds", "Open file descriptors."),
            max_fds: gauge(
                "process_max_fds",
                "The soft limit of open file descriptors.",
            ),
            start_time: Gauge::new(
                "process_start_time_seconds",
                "When the process started, in seconds since the Unix epoch.",
            )
            .expect("valid metric"),
            scrape: Mutex::new(()),
        }
    }

    fn update(&self, s: &Sample) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if let Some(total) = s.cpu_seconds {
            let delta = total - self.cpu.get();
            if delta > 0.0 {
                self.cpu.inc_by(delta);
            }
        }
        if let Some(v) = s.resident_bytes {
            self.resident.set(clamp(v));
        }
        if let Some(v) = s.virtual_bytes {
            self.virtual_memory.set(clamp(v));
        }
        if let Some(v) = s.open_fds {
            self.open_fds.set(clamp(v));
        }
        if let Some(v) = s.max_fds {
            self.max_fds.set(clamp(v));
        }
        if let Some(v) = s.start_time {
            self.start_time.set(v);
        }
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.cpu.desc();
        d.extend(self.resident.desc());
        d.extend(self.virtual_memory.desc());
        d.extend(self.open_fds.desc());
        d.extend(self.max_fds.desc());
        d.extend(self.start_time.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.update(&sample());
        let mut families = self.cpu.collect();
        families.extend(self.resident.collect());
        families.extend(self.virtual_memory.collect());
        families.extend(self.open_fds.collect());
        families.extend(self.max_fds.collect());
        families.extend(self.start_time.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and parentheses, as a process may set.
        let stat = "4242 (pop gate) (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 987654321 2048 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 17991 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(stat), Some((325, 123456)));
        assert_eq!(parse_stat("1 (short) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn statm_limits_and_btime() {
        assert_eq!(
            parse_statm("25000 1200 800 300 0 5000 0\n"),
            Some((25000, 1200))
        );
        assert_eq!(parse_statm("12"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            65536                1048576              files     \n";
        assert_eq!(parse_max_fds(limits), Some(65536));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files\n"
            ),
            Some(u64::MAX)
        );
        assert_eq!(parse_max_fds("Max processes 10 10 processes\n"), None);
        let stat = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1700000000\nprocesses 7\n";
        assert_eq!(parse_btime(stat), Some(1_700_000_000));
        assert_eq!(parse_btime("cpu 1 2\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_sane_values() {
        let s = sample();
        let rss = s.resident_bytes.expect("rss");
        assert!(rss > 1 << 20 && rss < 1 << 40, "{rss}");
        assert!(s.virtual_bytes.unwrap() >= rss);
        let fds = s.open_fds.expect("fds");
        assert!(fds >= 3, "stdin, stdout, stderr at least: {fds}");
        assert!(s.max_fds.expect("max fds") >= fds);
        assert!(s.cpu_seconds.expect("cpu") >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = s.start_time.expect("start time");
        assert!(
            start <= now + 1.0 && start > now - 86400.0 * 365.0,
            "{start} vs {now}"
        );
    }

    #[test]
    fn the_cpu_counter_follows_the_total_and_never_goes_back() {
        let c = ProcessCollector::new();
        c.update(&Sample {
            cpu_seconds: Some(1.5),
            ..Sample::default()
        });
        c.update(&Sample {
            cpu_seconds: Some(1.25),
            ..Sample::default()
        });
        assert_eq!(c.cpu.get(), 1.5);
        c.update(&Sample {
            cpu_seconds: Some(2.0),
            ..Sample::default()
        });
        assert_eq!(c.cpu.get(), 2.0);
    }
}
