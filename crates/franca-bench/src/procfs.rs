//! Reading the server's cost from /proc: PSS and RSS over a process tree (smaps_rollup), CPU
//! time (utime + stime from /proc/PID/stat, in USER_HZ = 100 ticks/s), the machine description.

use std::fs;

const TICKS_PER_S: f64 = 100.0;

/// `pid` and all its descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let path = t.path().join("children");
                if let Ok(text) = fs::read_to_string(path) {
                    out.extend(
                        text.split_whitespace()
                            .filter_map(|c| c.parse::<u32>().ok()),
                    );
                }
            }
        }
        i += 1;
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn rollup_field(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| {
            t.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
}

/// Memory of the tree under `pid`, KiB.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Mem {
    pub pss_kib: u64,
    pub rss_kib: u64,
}

pub fn mem(pid: u32) -> Mem {
    let mut m = Mem::default();
    for p in tree(pid) {
        m.pss_kib += rollup_field(p, "Pss:");
        m.rss_kib += rollup_field(p, "Rss:");
    }
    m
}

fn stat_cpu_s(path: &str) -> f64 {
    let Ok(text) = fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the ")" that closes the command name: state is field 3; utime 14, stime 15.
    let Some(rest) = text.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / TICKS_PER_S
}

/// CPU seconds used so far by the tree under `pid` (live processes only).
pub fn cpu_s(pid: u32) -> f64 {
    tree(pid)
        .into_iter()
        .map(|p| stat_cpu_s(&format!("/proc/{p}/stat")))
        .sum()
}

/// CPU seconds used so far by this process.
pub fn self_cpu_s() -> f64 {
    stat_cpu_s("/proc/self/stat")
}

/// One line: CPU model and count, memory, kernel.
pub fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let thp = fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    format!(
        "{cpus} × {model}, {:.1} GiB RAM, Linux {}, THP {}",
        mem_kib as f64 / 1048576.0,
        kernel.trim(),
        thp.trim()
    )
}

/// /proc/loadavg, trimmed.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}
