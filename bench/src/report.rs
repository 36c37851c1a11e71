//! The table people read and the JSON that is kept.
use std::{path::Path, process::Command};

use serde::Serialize;

use crate::{cpu::CpuShare, load::Stats};

#[derive(Debug, Clone, Serialize, Default)]
pub struct Row {
    pub measurement: String,
    /// None when the measurement was skipped or failed (the note says why).
    pub figure: Option<f64>,
    pub unit: String,
    pub baseline: String,
    pub baseline_figure: Option<f64>,
    /// figure / baseline_figure.
    pub ratio: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub goal: String,
    pub note: String,
    /// Successful operations counted, and failures, when the row is a load measurement.
    pub ops: Option<u64>,
    pub errors: Option<u64>,
    pub cpu: Option<CpuShare>,
    pub round_rates: Vec<f64>,
    /// (fastest − slowest round) / median round.
    pub spread: Option<f64>,
}

impl Row {
    pub fn new(measurement: &str, unit: &str) -> Self {
        Row {
            measurement: measurement.into(),
            unit: unit.into(),
            ..Default::default()
        }
    }

    /// Throughput and latency from `stats`, the throughput scaled by `per_op` (e.g. 100
    /// evaluations per batch RPC).
    pub fn load(mut self, stats: &Stats, per_op: f64) -> Self {
        self.figure = Some(stats.rate() * per_op);
        self.p50_ms = Some(stats.p50_ms);
        self.p99_ms = Some(stats.p99_ms);
        self.ops = Some(stats.ops);
        self.errors = Some(stats.errors);
        self.cpu = stats.cpu;
        self.round_rates = stats.round_rates.iter().map(|r| r * per_op).collect();
        self.spread = stats.spread();
        if stats.errors > 0 {
            let first = stats.first_error.as_deref().unwrap_or("?");
            self.add_note(&format!("{} errors, first: {first}", stats.errors));
        }
        self
    }

    pub fn baseline(mut self, name: &str, figure: Option<f64>) -> Self {
        self.baseline = name.into();
        self.baseline_figure = figure;
        self.ratio = match (self.figure, figure) {
            (Some(f), Some(b)) if b > 0.0 => Some(f / b),
            _ => None,
        };
        self
    }

    pub fn goal(mut self, goal: &str) -> Self {
        self.goal = goal.into();
        self
    }

    pub fn note(mut self, note: &str) -> Self {
        self.add_note(note);
        self
    }

    fn add_note(&mut self, note: &str) {
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(note);
    }

    pub fn failed(measurement: &str, unit: &str, why: &str) -> Self {
        Row::new(measurement, unit).note(&format!("skipped: {why}"))
    }
}

/// 112345.6 → "112,346"; small figures keep a few decimals.
fn number(x: f64) -> String {
    if x.abs() < 10.0 {
        return format!("{x:.2}");
    }
    if x.abs() < 1000.0 {
        return format!("{x:.1}");
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map(f).unwrap_or_else(|| "-".into())
}

pub fn table(rows: &[Row]) -> String {
    let head = [
        "measurement",
        "figure",
        "unit",
        "baseline",
        "baseline figure",
        "ratio",
        "p50 ms",
        "p99 ms",
        "goal",
        "note",
    ];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                r.measurement.clone(),
                opt(r.figure, number),
                r.unit.clone(),
                if r.baseline.is_empty() {
                    "-".into()
                } else {
                    r.baseline.clone()
                },
                opt(r.baseline_figure, number),
                opt(r.ratio, |x| format!("{x:.2}")),
                opt(r.p50_ms, |x| format!("{x:.3}")),
                opt(r.p99_ms, |x| format!("{x:.3}")),
                if r.goal.is_empty() {
                    "-".into()
                } else {
                    r.goal.clone()
                },
                [
                    r.note.clone(),
                    r.spread.map_or(String::new(), |s| {
                        format!("rounds spread {:.0}%", s * 100.0)
                    }),
                    r.cpu.map_or(String::new(), |c| c.describe()),
                ]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
            ]
        })
        .collect();
    let mut width = head.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    // Numbers align right, words left; the note is last and not padded.
    let right = [
        false, true, false, false, true, true, true, true, false, false,
    ];
    let line = |row: &[String]| {
        let mut s = String::new();
        for (i, c) in row.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if right[i] {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if i + 1 < row.len() {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = line(&head.map(String::from));
    out.push('\n');
    let total: usize = width.iter().sum::<usize>() + 2 * (width.len() - 1);
    out.push_str(&"-".repeat(total.min(200)));
    for row in &cells {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_kib: u64,
    /// /proc/loadavg when the run started: a busy neighbour shows here first.
    pub loadavg_at_start: String,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: field(&cpuinfo, "model name"),
        mem_total_kib: field(&meminfo, "MemTotal")
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or(0),
        loadavg_at_start: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

/// Short commit, with "-dirty" when the tree has uncommitted changes; None outside git.
pub fn git_commit(root: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}
