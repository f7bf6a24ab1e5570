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

/// A Prometheus histogram read from a server's exposition, summed over its label sets.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Buckets {
    pub count: u64,
    /// Upper bounds (seconds) with their cumulative counts, ascending; `+Inf` left out.
    pub bounds: Vec<(f64, u64)>,
}

impl Buckets {
    /// The histogram `name` in the text exposition `text`, or None when it has no samples.
    pub fn parse(text: &str, name: &str) -> Option<Buckets> {
        let bucket = format!("{name}_bucket{{");
        let mut bounds: Vec<(f64, u64)> = Vec::new();
        let mut count = 0;
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if series.starts_with(&bucket) {
                let le = series
                    .split("le=\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())?;
                if let Ok(le) = le.parse::<f64>()
                    && le.is_finite()
                {
                    match bounds.iter_mut().find(|(b, _)| *b == le) {
                        Some((_, n)) => *n += value as u64,
                        None => bounds.push((le, value as u64)),
                    }
                }
            } else if series == format!("{name}_count")
                || series.starts_with(&format!("{name}_count{{"))
            {
                count += value as u64;
            }
        }
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        (count > 0).then_some(Buckets { count, bounds })
    }

    /// The upper bound of the bucket holding quantile `q` (None past the last finite bound).
    pub fn quantile_at_most(&self, q: f64) -> Option<f64> {
        let rank = (q * self.count as f64).ceil() as u64;
        self.bounds
            .iter()
            .find(|(_, n)| *n >= rank)
            .map(|(b, _)| *b)
    }
}

/// The exposition served at `http://{addr}/metrics`.
pub async fn scrape(addr: &str) -> anyhow::Result<String> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text)
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

    #[test]
    fn a_histogram_is_summed_over_its_label_sets_and_its_quantile_bounded() {
        let text = "# TYPE x_seconds histogram\n\
                    x_seconds_bucket{le=\"0.001\"} 90\n\
                    x_seconds_bucket{le=\"0.01\"} 97\n\
                    x_seconds_bucket{le=\"+Inf\"} 100\n\
                    x_seconds_sum 1.5\n\
                    x_seconds_count 100\n\
                    x_seconds_bucket{partition=\"1\",le=\"0.001\"} 0\n\
                    x_seconds_bucket{partition=\"1\",le=\"0.01\"} 0\n\
                    x_seconds_bucket{partition=\"1\",le=\"+Inf\"} 0\n\
                    x_seconds_count{partition=\"1\"} 0\n\
                    y_seconds_count 7\n";
        let b = Buckets::parse(text, "x_seconds").expect("samples");
        assert_eq!(b.count, 100);
        assert_eq!(b.bounds, vec![(0.001, 90), (0.01, 97)]);
        assert_eq!(b.quantile_at_most(0.9), Some(0.001));
        assert_eq!(b.quantile_at_most(0.95), Some(0.01));
        // The 99th is past the last finite bound.
        assert_eq!(b.quantile_at_most(0.99), None);
        assert_eq!(Buckets::parse(text, "z_seconds"), None);
    }
}
