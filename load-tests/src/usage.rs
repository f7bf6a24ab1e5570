//! What a run costs a process: CPU seconds (user + system) and peak resident memory, read
//! from `/proc` (Linux). Elsewhere the figures are left out of the report, not made up.

/// A process's CPU time so far and its peak RSS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub cpu_s: f64,
    pub peak_rss_bytes: u64,
}

/// `pid`'s usage, or this process's with `None`.
pub fn of(pid: Option<u32>) -> Option<Usage> {
    let dir = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    parse(&stat, &status, ticks as f64)
}

/// From `/proc/PID/stat` (utime and stime, fields 14 and 15, in clock ticks) and
/// `/proc/PID/status` (`VmHWM`, the peak RSS, in kB).
pub fn parse(stat: &str, status: &str, ticks_per_sec: f64) -> Option<Usage> {
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    (ticks_per_sec > 0.0).then(|| Usage {
        cpu_s: (utime + stime) / ticks_per_sec,
        peak_rss_bytes: hwm_kb * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_peak_rss_are_read_from_proc_text() {
        let stat = "4242 (switch board) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 50 0 0 20 0 \
                    9 0 12345 100000000 5000 18446744073709551615";
        let status =
            "Name:\tswitchboard\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n";
        let u = parse(stat, status, 100.0).expect("parses");
        assert_eq!(u.cpu_s, 3.0);
        assert_eq!(u.peak_rss_bytes, 51_200 * 1024);
        assert_eq!(parse("garbage", status, 100.0), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let u = of(None).expect("/proc/self on Linux");
        assert!(u.peak_rss_bytes > 0);
    }
}
