//! CPU time of processes, from `/proc/<pid>/stat`, to say where a run's cycles went.

use anyhow::{Context, Result};

/// User + system CPU time of `pid` and of its reaped children (the runner reaps its
/// sandboxes), in microseconds. `pid` 0 means this process.
pub fn cpu_us(pid: u32) -> Result<u64> {
    let path = if pid == 0 { "/proc/self/stat".to_owned() } else { format!("/proc/{pid}/stat") };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may contain spaces; fields are counted after its ')'.
    let rest = text.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) .. cstime (17) are indexes 11..=14.
    let ticks: u64 = fields.get(11..=14).context("short stat")?.iter().map(|f| f.parse::<u64>().unwrap_or(0)).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(ticks * 1_000_000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_time() {
        let before = cpu_us(0).unwrap();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_us(0).unwrap() >= before);
    }
}
