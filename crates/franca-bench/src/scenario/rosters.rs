//! Ring rosters written straight into a stopped Prosody's `internal` storage (notes D-perf §4.1
//! M4: "provisioned offline … Prosody roster files"): building 100-contact rosters through the
//! protocol costs Prosody minutes of rewriting whole roster files per subscription change.
//! The result is the same state the protocol path produces: every contact `both`, no pending.

use std::fmt::Write as _;
use std::path::Path;

/// The ring neighbours of account `n` (1-based) among `total`: `contacts/2` on each side.
pub fn ring(n: u32, total: u32, contacts: u32) -> Vec<u32> {
    let half = contacts / 2;
    let mut v = Vec::new();
    for k in 1..=half {
        v.push((n - 1 + k) % total + 1);
        v.push((n - 1 + total - k % total) % total + 1);
    }
    v.sort_unstable();
    v.dedup();
    v.retain(|&p| p != n);
    v
}

/// Prosody's escaping of path components (`.` → `%2e`, …).
fn escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_string()
            } else {
                format!("%{:02x}", c as u32)
            }
        })
        .collect()
}

/// Writes `{prefix}1..={prefix}{total}`'s rosters under Prosody's `data_path`.
pub fn write_prosody(
    data: &Path,
    domain: &str,
    prefix: &str,
    total: u32,
    contacts: u32,
) -> Result<(), String> {
    let dir = data.join(escape(domain)).join("roster");
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    for n in 1..=total {
        let mut s = String::from(
            "return {\n\t[false] = {\n\t\t[\"version\"] = 1;\n\t\t[\"pending\"] = {};\n\t};\n",
        );
        for p in ring(n, total, contacts) {
            let _ = write!(
                s,
                "\t[\"{prefix}{p}@{domain}\"] = {{\n\t\t[\"subscription\"] = \"both\";\n\t\t[\"groups\"] = {{}};\n\t}};\n"
            );
        }
        s.push_str("};\n");
        let path = dir.join(format!("{}.dat", escape(&format!("{prefix}{n}"))));
        std::fs::write(&path, s).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_symmetric() {
        let total = 10;
        for n in 1..=total {
            let r = ring(n, total, 4);
            assert_eq!(r.len(), 4);
            for p in r {
                assert!(ring(p, total, 4).contains(&n));
            }
        }
        assert_eq!(escape("bench.local"), "bench%2elocal");
    }
}
