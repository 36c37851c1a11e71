//! Where the CPU went during a measurement: the servers, the load generator, or other
//! processes. On 2 shared cores a figure means little without it: a low total says the run was
//! waiting on something other than CPU, a high "others" says a neighbour took the cores.
use serde::Serialize;

/// Shares of the whole machine's CPU time (all cores), 0..1.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuShare {
    pub servers: f64,
    pub load_tool: f64,
    pub others: f64,
}

impl CpuShare {
    pub fn describe(&self) -> String {
        format!(
            "cpu: servers {:.0}%, load tool {:.0}%, others {:.0}%",
            self.servers * 100.0,
            self.load_tool * 100.0,
            self.others * 100.0
        )
    }
}

/// Clock ticks (USER_HZ) at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    machine_total: u64,
    machine_busy: u64,
    servers: u64,
    load_tool: u64,
}

impl Sample {
    /// None where /proc is not readable (the figures are then reported without it).
    pub fn now() -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // cpu user nice system idle iowait irq softirq steal guest guest_nice; guest time is
        // already counted in user.
        let f: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let total: u64 = f.iter().sum();
        let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
        let (mut servers, mut load_tool) = (0, 0);
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let Ok(s) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            // "tid (comm) state ...": comm may hold spaces, so split at the last ')'.
            let Some((head, rest)) = s.rsplit_once(')') else {
                continue;
            };
            let comm = head.split_once('(').map_or("", |(_, c)| c);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the line, 12 and 13 after "state".
            let ticks: u64 = [11, 12]
                .iter()
                .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
                .sum();
            // The main thread drives the load runtime; every other thread (server runtime,
            // SQLite workers) belongs to the system under test.
            if comm.starts_with("bench-load") || comm.starts_with("maxai-bench") {
                load_tool += ticks;
            } else {
                servers += ticks;
            }
        }
        Some(Sample {
            machine_total: total,
            machine_busy: total.saturating_sub(idle),
            servers,
            load_tool,
        })
    }

    pub fn share_since(&self, earlier: &Sample) -> Option<CpuShare> {
        let total = self.machine_total.saturating_sub(earlier.machine_total);
        if total == 0 {
            return None;
        }
        let busy = self.machine_busy.saturating_sub(earlier.machine_busy);
        let servers = self.servers.saturating_sub(earlier.servers);
        let load_tool = self.load_tool.saturating_sub(earlier.load_tool);
        let share = |t: u64| (t as f64 / total as f64).min(1.0);
        Some(CpuShare {
            servers: share(servers),
            load_tool: share(load_tool),
            others: share(busy.saturating_sub(servers + load_tool)),
        })
    }
}
