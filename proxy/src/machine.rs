//! What the machine gives the edge: its memory, for sizing the caches.

/// Used when neither `/proc/meminfo` nor a cgroup limit can be read.
const FALLBACK: u64 = 4 << 30;

/// The memory this process may use, bytes: the smaller of physical memory and the cgroup
/// limit (v2 `memory.max` or v1 `memory.limit_in_bytes`), so a container's limit counts.
pub fn memory_bytes() -> u64 {
    let physical = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| mem_total(&t));
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .find_map(|t| t.trim().parse::<u64>().ok());
    match (physical, cgroup) {
        (Some(p), Some(c)) => p.min(c),
        (Some(m), None) | (None, Some(m)) => m,
        (None, None) => FALLBACK,
    }
}

/// `MemTotal` of a `/proc/meminfo` text, bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_total() {
        let text = "MemTotal:       24578160 kB\nMemFree:        20000000 kB\n";
        assert_eq!(mem_total(text), Some(24_578_160 * 1024));
        assert_eq!(mem_total("nothing"), None);
        assert!(memory_bytes() > 0);
    }
}
