//! What the bench reads about a process from /proc: CPU time (all threads) and resident
//! memory.

use std::io;

/// User plus system CPU time of a process and all its threads, in seconds.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::other(format!("unreadable /proc/{pid}/stat")))?;
    Ok(ticks as f64 / clock_ticks_per_second()? as f64)
}

/// User plus system CPU time of the calling thread, in seconds (clock-tick resolution).
pub fn thread_cpu_seconds() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    let ticks = parse_stat_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::other("unreadable /proc/thread-self/stat"))?;
    Ok(ticks as f64 / clock_ticks_per_second()? as f64)
}

/// CPU time the whole machine spent busy (all cores, everything but idle and I/O wait),
/// in seconds, from the first line of /proc/stat.
pub fn machine_busy_seconds() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks = stat
        .lines()
        .next()
        .and_then(parse_machine_busy_ticks)
        .ok_or_else(|| io::Error::other("unreadable /proc/stat"))?;
    Ok(ticks as f64 / clock_ticks_per_second()? as f64)
}

/// `cpu  user nice system idle iowait irq softirq steal ...`: all but idle and iowait.
fn parse_machine_busy_ticks(line: &str) -> Option<u64> {
    let fields: Vec<u64> = line
        .strip_prefix("cpu ")?
        .split_ascii_whitespace()
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = fields.iter().sum();
    Some(total - fields.get(3)? - fields.get(4)?)
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_rss(&status)
        .ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// utime + stime (fields 14 and 15). The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last ')'.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace().skip(11); // field 3 is the first
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// USER_HZ, from the process's auxiliary vector (AT_CLKTCK), as sysconf would report it.
fn clock_ticks_per_second() -> io::Result<u64> {
    const AT_CLKTCK: u64 = 17;
    let auxv = std::fs::read("/proc/self/auxv")?;
    auxv.chunks_exact(16)
        .map(|pair| {
            let key = u64::from_ne_bytes(pair[..8].try_into().unwrap_or_default());
            let value = u64::from_ne_bytes(pair[8..].try_into().unwrap_or_default());
            (key, value)
        })
        .find(|&(key, value)| key == AT_CLKTCK && value > 0)
        .map(|(_, value)| value)
        .ok_or_else(|| io::Error::other("no AT_CLKTCK in /proc/self/auxv"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_a_command_name_with_spaces_and_parens() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 3035 0 0 0 731 269 0 0 20 0 9 0 123 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(1000));
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_io_wait() {
        let line = "cpu  100 5 50 1000 30 2 3 0 0 0";
        assert_eq!(parse_machine_busy_ticks(line), Some(160));
        assert_eq!(parse_machine_busy_ticks("cpu0 1 2 3 4 5 6 7 8"), None);
        assert!(machine_busy_seconds().unwrap() > 0.0);
    }

    #[test]
    fn rss_is_read_from_status_in_bytes() {
        let status = "Name:\tswitchboard\nVmPeak:\t  200 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss(status), Some(12345 * 1024));
        assert_eq!(parse_status_rss("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_a_clock_rate_cpu_time_and_memory() {
        let hz = clock_ticks_per_second().unwrap();
        assert!((10..=10_000).contains(&hz), "{hz}");
        assert!(cpu_seconds(std::process::id()).unwrap() >= 0.0);
        assert!(thread_cpu_seconds().unwrap() >= 0.0);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
