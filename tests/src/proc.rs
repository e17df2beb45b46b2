//! Readings of processes from /proc, for the tests and benches that measure
//! what a server (and the processes it started) costs in CPU.

/// The fields of /proc/<pid>/stat after the command name: state, ppid, ...
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// `root` and every process below it, from the parent links in /proc.
pub fn tree(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat_fields(pid)?.get(1)?.parse().ok()?)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|&&(_, pp)| pp == parent).map(|&(pid, _)| pid));
        i += 1;
    }
    found
}

/// Two fields of stat in clock ticks (USER_HZ, 100 on Linux), as seconds.
fn ticks(pid: u32, first: usize) -> Option<f64> {
    let f = stat_fields(pid)?;
    Some((f.get(first)?.parse::<f64>().ok()? + f.get(first + 1)?.parse::<f64>().ok()?) / 100.0)
}

/// User + system CPU seconds of one process (all its threads, no children):
/// utime and stime, fields 14 and 15 of stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    ticks(pid, 11)
}

/// User + system CPU seconds of the children `pid` waited for after they
/// ended: cutime and cstime, fields 16 and 17 of stat.
pub fn ended_children_cpu_seconds(pid: u32) -> Option<f64> {
    ticks(pid, 13)
}

/// User + system CPU seconds of the live processes of the tree (all threads).
pub fn tree_cpu_seconds(root: u32) -> f64 {
    tree(root).into_iter().filter_map(cpu_seconds).sum()
}
