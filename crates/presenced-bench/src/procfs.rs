//! CPU time and peak RSS of a process, from `/proc` (Linux).

use std::sync::OnceLock;
use std::time::Duration;

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ).
fn ticks_per_second() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&hz| hz > 0)
            .unwrap_or(100)
    })
}

/// User plus system CPU time of all threads of `pid` (`"self"` works too).
pub(crate) fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu(&stat, ticks_per_second())
}

/// CPU time of a process and all its children, living and reaped: what a
/// PostgreSQL postmaster's cluster spent (backends come and go; a reaped
/// one's time is in the postmaster's `cutime`/`cstime`).
pub(crate) fn tree_cpu_time(pid: &str) -> Option<Duration> {
    let hz = ticks_per_second();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut total = parse_cpu(&stat, hz)? + parse_children_cpu(&stat, hz)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(child) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        if parent_of(&stat).is_some_and(|ppid| ppid == pid) {
            total += parse_cpu(&stat, hz).unwrap_or_default()
                + parse_children_cpu(&stat, hz).unwrap_or_default();
        }
    }
    Some(total)
}

fn fields_after_name(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

/// Field 4 (ppid).
fn parent_of(stat: &str) -> Option<&str> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)
}

/// Fields 16 and 17: `cutime` + `cstime`, the reaped children's CPU.
fn parse_children_cpu(stat: &str, hz: u64) -> Option<Duration> {
    let fields = fields_after_name(stat)?;
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some(Duration::from_micros((cutime + cstime) * 1_000_000 / hz))
}

fn parse_cpu(stat: &str, hz: u64) -> Option<Duration> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_micros((utime + stime) * 1_000_000 / hz))
}

/// Peak resident set size (`VmHWM`) in bytes.
pub(crate) fn peak_rss(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_hwm(&status)
}

/// Resident set size now (`VmRSS`) in bytes (presenced-longpoll-bench's
/// figure; the load tool reports the peak).
#[allow(dead_code)]
pub(crate) fn rss(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&status, "VmRSS:")
}

fn parse_hwm(status: &str) -> Option<u64> {
    status_field(status, "VmHWM:")
}

/// A `kB` line of `/proc/PID/status`, in bytes.
fn status_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The 1-minute load average of the machine.
pub(crate) fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_command_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 0 0";
        assert_eq!(parse_cpu(stat, 100), Some(Duration::from_secs(3)));
    }

    #[test]
    fn children_fields_and_parent() {
        let stat = "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 100 200 20 0 3 0 1 0 0";
        assert_eq!(parse_children_cpu(stat, 100), Some(Duration::from_secs(3)));
        assert_eq!(parent_of(stat), Some("7"));
    }

    #[test]
    fn own_tree_counts_at_least_itself() {
        let me = std::process::id().to_string();
        // Own time first: the tree, read after it, has had as long to grow
        // (the other way round, a busy test process failed it by a tick).
        let own = cpu_time(&me).unwrap();
        assert!(tree_cpu_time(&me).unwrap() >= own);
    }

    #[test]
    fn hwm_in_bytes() {
        assert_eq!(
            parse_hwm("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t 1 kB\n"),
            Some(2048 * 1024)
        );
    }

    #[test]
    fn rss_in_bytes() {
        assert_eq!(
            status_field("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t 1 kB\n", "VmRSS:"),
            Some(1024)
        );
    }

    #[test]
    fn own_process_is_readable() {
        assert!(cpu_time("self").is_some());
        assert!(peak_rss("self").unwrap() > 0);
        assert!(rss("self").unwrap() > 0);
    }
}
