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

fn parse_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
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
    fn hwm_in_bytes() {
        assert_eq!(
            parse_hwm("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t 1 kB\n"),
            Some(2048 * 1024)
        );
    }

    #[test]
    fn own_process_is_readable() {
        assert!(cpu_time("self").is_some());
        assert!(peak_rss("self").unwrap() > 0);
    }
}
