//! What a run prints and writes: the terminal table, the ratios against the best peer, and
//! BENCHMARKS.md.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::scenario::{Outcome, Scenario};

/// What a run records about itself, for the JSON and BENCHMARKS.md.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    pub command: String,
    pub date: String,
    pub server_commit: String,
    pub quick: bool,
    pub machine: Vec<(String, String)>,
    pub versions: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub meta: Meta,
    pub scenarios: Vec<Scenario>,
    pub outcomes: Vec<Outcome>,
    /// The event stores side by side (stores.rs).
    #[serde(default)]
    pub stores: Vec<crate::stores::StoreFigures>,
}

/// Ours against the best peer for one metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Ratio {
    pub best_peer: String,
    pub best_value: f64,
    pub ours: f64,
    /// ours / best peer.
    pub ratio: f64,
}

/// `values` are (server, value); "ours" is compared with the best of the others (the highest
/// when `higher_is_better`, else the lowest). Missing or non-finite values take no part.
pub fn ratio(values: &[(String, Option<f64>)], higher_is_better: bool) -> Option<Ratio> {
    let ours = values
        .iter()
        .find(|(s, _)| s == "ours")
        .and_then(|(_, v)| *v)
        .filter(|v| v.is_finite())?;
    let best = values
        .iter()
        .filter(|(s, _)| crate::servers::is_peer(s))
        .filter_map(|(s, v)| v.filter(|v| v.is_finite()).map(|v| (s, v)))
        .reduce(|a, b| {
            let b_better = if higher_is_better {
                b.1 > a.1
            } else {
                b.1 < a.1
            };
            if b_better {
                b
            } else {
                a
            }
        })?;
    (best.1 != 0.0).then(|| Ratio {
        best_peer: best.0.clone(),
        best_value: best.1,
        ours,
        ratio: ours / best.1,
    })
}

/// The goals: which figure, from which scenario, and what "winning" means.
pub struct Goal {
    pub metric: &'static str,
    pub scenario: &'static str,
    pub higher_is_better: bool,
    pub want: &'static str,
    pub met: fn(&Ratio) -> bool,
    pub value: fn(&Outcome) -> Option<f64>,
}

pub fn goals() -> Vec<Goal> {
    vec![
        Goal {
            metric: "deliveries per server CPU-second",
            scenario: "fanout-10k",
            higher_is_better: true,
            want: ">= 2x",
            met: |r| r.ratio >= 2.0,
            value: |o| (o.deliveries_per_cpu_s > 0.0).then_some(o.deliveries_per_cpu_s),
        },
        Goal {
            metric: "memory per idle stream (bytes)",
            scenario: "idle",
            higher_is_better: false,
            want: "<= 0.5x",
            met: |r| r.ratio <= 0.5,
            value: |o| (o.bytes_per_stream > 0.0).then_some(o.bytes_per_stream),
        },
        Goal {
            metric: "p99 publish-to-receive delay at 10k (ms)",
            scenario: "fanout-10k",
            higher_is_better: false,
            want: "<= 0.5x",
            met: |r| r.ratio <= 0.5,
            value: |o| (o.delay_ms.count > 0).then_some(o.delay_ms.p99),
        },
        Goal {
            metric: "connect storm: all 5k have their first event (ms)",
            scenario: "storm-5k",
            higher_is_better: false,
            want: "<= 0.5x",
            met: |r| r.ratio <= 0.5,
            value: |o| (o.failed == 0).then_some(o.all_first_event_ms),
        },
        Goal {
            metric: "idle streams held by one process",
            scenario: "idle",
            higher_is_better: true,
            want: "19,500",
            met: |r| r.ours >= 19_500.0,
            value: |o| Some(o.established as f64),
        },
    ]
}

/// A figure of ours read against the floor (floor.rs) of the same scenario in the same run.
pub struct FloorPick {
    pub label: &'static str,
    /// The figure, lower is better (CPU per delivery, not deliveries per CPU-second).
    pub value: fn(&Outcome) -> Option<f64>,
}

pub fn floor_picks() -> [FloorPick; 6] {
    [
        FloorPick {
            label: "CPU per delivery",
            value: cpu_ms_per_1000,
        },
        FloorPick {
            label: "delay p50",
            value: |o| (o.delay_ms.count > 0).then_some(o.delay_ms.p50),
        },
        FloorPick {
            label: "delay p99",
            value: |o| (o.delay_ms.count > 0).then_some(o.delay_ms.p99),
        },
        FloorPick {
            label: "delay p99.9",
            value: |o| (o.delay_ms.count > 0).then_some(o.delay_ms.p999),
        },
        FloorPick {
            label: "all first events",
            value: |o| (o.established > 0 && o.failed == 0).then_some(o.all_first_event_ms),
        },
        FloorPick {
            label: "bytes/stream",
            value: |o| (o.bytes_per_stream > 0.0).then_some(o.bytes_per_stream),
        },
    ]
}

/// Milliseconds of server CPU per 1,000 deliveries in the publish phase.
fn cpu_ms_per_1000(o: &Outcome) -> Option<f64> {
    (o.deliveries_per_cpu_s > 0.0).then(|| 1e6 / o.deliveries_per_cpu_s)
}

/// `server`'s figure over the floor's, in one scenario's outcomes.
pub fn to_floor(outcomes: &[&Outcome], server: &str, pick: &FloorPick) -> Option<(f64, f64)> {
    let find = |name: &str| outcomes.iter().find(|o| o.server == name);
    let ours = (pick.value)(find(server)?).filter(|v| v.is_finite())?;
    let floor = (pick.value)(find(crate::servers::FLOOR)?).filter(|v| v.is_finite() && *v > 0.0)?;
    Some((ours, ours / floor))
}

/// "delay p50 1.31x, ..." for `server` against the floor of the same scenario.
pub fn floor_line(outcomes: &[&Outcome], server: &str) -> Option<String> {
    let parts: Vec<String> = floor_picks()
        .iter()
        .filter_map(|p| to_floor(outcomes, server, p).map(|(_, r)| format!("{} {r:.2}x", p.label)))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Per scenario, ours (and ours-redis) against the floor: for the terminal.
pub fn floor_summary(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let mut scenarios: Vec<&str> = Vec::new();
    for o in outcomes {
        if !scenarios.contains(&o.scenario.as_str()) {
            scenarios.push(&o.scenario);
        }
    }
    for s in scenarios {
        let of: Vec<&Outcome> = outcomes.iter().filter(|o| o.scenario == s).collect();
        for server in of
            .iter()
            .map(|o| o.server.as_str())
            .filter(|n| crate::servers::is_ours(n))
        {
            if let Some(line) = floor_line(&of, server) {
                let _ = writeln!(out, "{s}: {server} / floor: {line}");
            }
        }
    }
    out
}

/// Issue #17's goals, against the floor of the same run.
pub struct FloorGoal {
    pub pick: usize,
    pub scenario: &'static str,
    /// The most ours / floor may be.
    pub max_ratio: f64,
}

/// Where the floor's one thread could not keep the publish rate (its publish phase took over
/// 10 % longer than the schedule): there its delays include a queue, and its CPU per delivery
/// is that of one saturated core, so a ratio to it flatters a server that uses both cores.
/// Said in the report, not hidden in the table.
pub fn floor_saturated(results: &Results) -> Vec<String> {
    let mut lines = Vec::new();
    for s in &results.scenarios {
        let Some(rate) = s.rate.filter(|r| *r > 0.0) else {
            continue;
        };
        let schedule_ms = 1000.0 * s.events.saturating_sub(1) as f64 / rate;
        let floor = results
            .outcomes
            .iter()
            .find(|o| o.scenario == s.name && o.server == crate::servers::FLOOR);
        if let Some(o) = floor.filter(|o| schedule_ms > 0.0 && o.publish_ms > 1.1 * schedule_ms) {
            lines.push(format!(
                "**{}: the floor could not keep the rate**: its publish phase took {:.1} s for a \
                 {:.1} s schedule, so its one thread was saturated; its delays there include a \
                 queue, and a ratio to it is a ratio to one core's worth of writes.",
                s.name,
                o.publish_ms / 1000.0,
                schedule_ms / 1000.0
            ));
        }
    }
    lines
}

pub fn floor_goals() -> Vec<FloorGoal> {
    vec![
        FloorGoal {
            pick: 0,
            scenario: "fanout-10k",
            max_ratio: 1.15,
        },
        FloorGoal {
            pick: 1,
            scenario: "fanout-10k",
            max_ratio: 1.25,
        },
        FloorGoal {
            pick: 2,
            scenario: "fanout-10k",
            max_ratio: 1.25,
        },
    ]
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

const HEADERS: [&str; 18] = [
    "server",
    "scenario",
    "streams ok/fail",
    "first event p50/p99/all ms",
    "SYN retries",
    "first byte >1s",
    "delay p50 ms",
    "p99",
    "p99.9",
    "max",
    "lost/dup",
    "publish s",
    "deliv/s",
    "server CPU s",
    "kernel %",
    "deliv/CPU-s",
    "generator CPU s (setup+publish)",
    "RSS MiB (B/stream)",
];

fn row(o: &Outcome) -> Vec<String> {
    vec![
        o.server.clone(),
        o.scenario.clone(),
        format!("{}/{}", o.established, o.failed),
        format!(
            "{}/{}/{}",
            num(o.first_event_ms.p50),
            num(o.first_event_ms.p99),
            num(o.all_first_event_ms)
        ),
        o.connect_over_1s.to_string(),
        o.first_byte_over_1s.to_string(),
        num(o.delay_ms.p50),
        num(o.delay_ms.p99),
        num(o.delay_ms.p999),
        num(o.delay_ms.max),
        format!("{}/{}", o.lost, o.duplicated),
        if o.published > 0 {
            format!("{:.2}", o.publish_ms / 1000.0)
        } else {
            "-".into()
        },
        format!("{:.0}", o.deliveries_per_s),
        format!("{:.2}+{:.2}", o.setup_cpu_s, o.publish_cpu_s),
        // Below a few clock ticks the share means nothing.
        if o.publish_cpu_s >= 0.05 {
            format!("{:.0}", 100.0 * o.publish_sys_s / o.publish_cpu_s)
        } else {
            "-".into()
        },
        format!("{:.0}", o.deliveries_per_cpu_s),
        format!("{:.2}+{:.2}", o.generator_setup_cpu_s, o.generator_cpu_s),
        format!(
            "{:.1} ({:.0})",
            o.rss_streams_kib as f64 / 1024.0,
            o.bytes_per_stream
        ),
    ]
}

/// The terminal table, columns right-aligned.
pub fn table(outcomes: &[Outcome]) -> String {
    let rows: Vec<Vec<String>> = outcomes.iter().map(row).collect();
    let widths: Vec<usize> = (0..HEADERS.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([HEADERS[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in std::iter::once(HEADERS.map(String::from).to_vec()).chain(rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

fn md_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        headers.join(" | "),
        " --- |".repeat(headers.len())
    );
    for r in rows {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
    out
}

/// The per-scenario metrics that get an "ours / best peer" row.
fn scenario_ratios(outcomes: &[&Outcome]) -> Vec<String> {
    type Pick = (&'static str, bool, fn(&Outcome) -> Option<f64>);
    let picks: [Pick; 6] = [
        ("delay p99", false, |o| {
            (o.delay_ms.count > 0).then_some(o.delay_ms.p99)
        }),
        ("deliveries/CPU-s", true, |o| {
            (o.deliveries_per_cpu_s > 0.0).then_some(o.deliveries_per_cpu_s)
        }),
        ("bytes/stream", false, |o| {
            (o.bytes_per_stream > 0.0).then_some(o.bytes_per_stream)
        }),
        ("all first events", false, |o| {
            (o.established > 0).then_some(o.all_first_event_ms)
        }),
        ("streams held", true, |o| Some(o.established as f64)),
        // A storm is CPU-bound on a small machine: its wall time is the server's and the
        // generator's CPU shared over the cores. What the server itself spent is its part.
        ("server CPU until all first events", false, |o| {
            (o.events_published() == 0 && o.established > 0 && o.setup_cpu_s > 0.0)
                .then_some(o.setup_cpu_s)
        }),
    ];
    picks
        .iter()
        .filter_map(|(label, higher, pick)| {
            let values: Vec<(String, Option<f64>)> = outcomes
                .iter()
                .map(|o| (o.server.clone(), pick(o)))
                .collect();
            ratio(&values, *higher)
                .map(|r| format!("{label} {:.2}x (best peer: {})", r.ratio, r.best_peer))
        })
        .collect()
}

/// What the Redis fan-out costs: two instances on one Redis against one process.
fn redis_cost(outcomes: &[&Outcome]) -> Option<String> {
    let find = |name: &str| outcomes.iter().find(|o| o.server == name);
    let (one, two) = (find("ours")?, find("ours-redis")?);
    let mut parts = Vec::new();
    if one.delay_ms.count > 0 && two.delay_ms.count > 0 {
        parts.push(format!(
            "delay p50 {:.3} ms against {:.3} ms, p99 {:.3} ms against {:.3} ms",
            two.delay_ms.p50, one.delay_ms.p50, two.delay_ms.p99, one.delay_ms.p99
        ));
    }
    if one.deliveries_per_cpu_s > 0.0 && two.deliveries_per_cpu_s > 0.0 {
        parts.push(format!(
            "deliveries per CPU-second {:.2}x (both instances and Redis counted)",
            two.deliveries_per_cpu_s / one.deliveries_per_cpu_s
        ));
    }
    (!parts.is_empty()).then(|| {
        format!(
            "Two instances on one Redis (ours-redis) against one process (ours): {}.",
            parts.join("; ")
        )
    })
}

/// Marks the part of BENCHMARKS.md a run rewrites; what is outside (notes on the causes, each
/// change's effect) is kept from the existing file.
pub const GENERATED_START: &str =
    "<!-- generated by `cargo xtask bench`: edit outside these markers -->";
pub const GENERATED_END: &str = "<!-- end of generated part -->";

/// `existing` with its generated part replaced by `generated` (appended after the notes when
/// it has none).
pub fn splice(existing: Option<&str>, generated: &str) -> String {
    let block = format!("{GENERATED_START}\n{generated}{GENERATED_END}\n");
    let Some(existing) = existing else {
        return block;
    };
    match (existing.find(GENERATED_START), existing.find(GENERATED_END)) {
        (Some(a), Some(b)) if b > a => {
            let after = &existing[b + GENERATED_END.len()..];
            format!(
                "{}{block}{}",
                &existing[..a],
                after.strip_prefix('\n').unwrap_or(after)
            )
        }
        _ => format!("{block}\n{existing}"),
    }
}

pub fn markdown(results: &Results, plot: Option<&str>) -> String {
    let m = &results.meta;
    let mut out =
        String::from("# Benchmarks: SSE fan-out against the servers people would use instead\n\n");
    let _ = writeln!(
        out,
        "Generated by `{}` on {}. Server commit measured: `{}`.\n",
        m.command, m.date, m.server_commit
    );
    out.push_str(
        "The load generator (`bench/`) shares the machine's cores with the server under test, so \
         absolute times move from run to run; the ratios, taken within one run, are the figures \
         to compare. Every server runs every scenario as a fresh process. How each figure is \
         measured: `bench/README.md`.\n\n## Machine\n\n",
    );
    let rows: Vec<Vec<String>> = m
        .machine
        .iter()
        .map(|(k, v)| vec![k.clone(), v.clone()])
        .collect();
    out.push_str(&md_table(&["", ""], &rows));
    out.push_str("\n## Versions\n\n");
    let rows: Vec<Vec<String>> = m
        .versions
        .iter()
        .map(|(k, v)| vec![k.clone(), v.clone()])
        .collect();
    out.push_str(&md_table(&["", ""], &rows));

    out.push_str("\n## Against the goals (ours / best peer in this run)\n\n");
    let mut rows = Vec::new();
    for g in goals() {
        let values: Vec<(String, Option<f64>)> = results
            .outcomes
            .iter()
            .filter(|o| o.scenario == g.scenario)
            .map(|o| (o.server.clone(), (g.value)(o)))
            .collect();
        let r = ratio(&values, g.higher_is_better);
        rows.push(match r {
            Some(r) => vec![
                g.metric.into(),
                g.scenario.into(),
                num(r.ours),
                format!("{} ({})", num(r.best_value), r.best_peer),
                format!("{:.2}x", r.ratio),
                g.want.into(),
                if (g.met)(&r) { "yes" } else { "**no**" }.into(),
            ],
            None => vec![
                g.metric.into(),
                g.scenario.into(),
                "n/a".into(),
                "n/a".into(),
                "".into(),
                g.want.into(),
                "n/a".into(),
            ],
        });
    }
    out.push_str(&md_table(
        &[
            "metric",
            "scenario",
            "ours",
            "best peer",
            "ratio",
            "goal",
            "met",
        ],
        &rows,
    ));
    out.push_str(
        "\n## Against the floor (ours / floor in this run)\n\n\
         The floor (`bench/src/floor.rs`) is not a peer: one thread writes each event's \
         pre-encoded chunk to every stream's socket back to back, and drops a socket that cannot \
         take it at once. It has no backpressure, history, resume, heartbeat, topic filter or \
         routing. It shows what this machine allows.\n\n",
    );
    let picks = floor_picks();
    let mut rows = Vec::new();
    for g in floor_goals() {
        let pick = &picks[g.pick];
        let of: Vec<&Outcome> = results
            .outcomes
            .iter()
            .filter(|o| o.scenario == g.scenario)
            .collect();
        let floor = of
            .iter()
            .find(|o| o.server == crate::servers::FLOOR)
            .and_then(|o| (pick.value)(o));
        let want = format!("<= {:.2}x", g.max_ratio);
        rows.push(match (to_floor(&of, "ours", pick), floor) {
            (Some((ours, r)), Some(floor)) => vec![
                pick.label.into(),
                g.scenario.into(),
                num(ours),
                num(floor),
                format!("{r:.2}x"),
                want,
                if r <= g.max_ratio { "yes" } else { "**no**" }.into(),
            ],
            _ => vec![
                pick.label.into(),
                g.scenario.into(),
                "n/a".into(),
                "n/a".into(),
                "".into(),
                want,
                "n/a".into(),
            ],
        });
    }
    out.push_str(&md_table(
        &[
            "metric", "scenario", "ours", "floor", "ratio", "goal", "met",
        ],
        &rows,
    ));
    out.push_str(
        "\nCPU per delivery is milliseconds of server CPU per 1,000 deliveries in the publish \
         phase; delays are in milliseconds.\n",
    );
    for line in floor_saturated(results) {
        let _ = writeln!(out, "\n{line}");
    }
    if let Some(plot) = plot {
        let _ = writeln!(
            out,
            "\n![publish-to-receive delay against subscribers]({plot})\n"
        );
    }
    out.push_str("\n## Scenarios\n");
    for s in &results.scenarios {
        let of: Vec<&Outcome> = results
            .outcomes
            .iter()
            .filter(|o| o.scenario == s.name)
            .collect();
        let what = match (s.events, s.rate) {
            (0, _) if s.storm => format!(
                "{} streams connecting at once (one worker process per core), nothing published",
                s.subscribers
            ),
            (0, _) => format!(
                "{} idle streams held (memory read after {} ms)",
                s.subscribers, s.settle_ms
            ),
            (n, Some(r)) => format!(
                "{} subscribers, {n} events at {r}/s, {} B payload",
                s.subscribers, s.payload
            ),
            (n, None) => format!(
                "{} subscribers, {n} events as fast as {} publishing connections go, {} B payload",
                s.subscribers, s.publish_connections, s.payload
            ),
        };
        let _ = writeln!(out, "\n### {}: {what}\n", s.name);
        let rows: Vec<Vec<String>> = of.iter().map(|o| row(o)).collect();
        out.push_str(&md_table(&HEADERS, &rows));
        let ratios = scenario_ratios(&of);
        if !ratios.is_empty() {
            let _ = writeln!(out, "\nOurs against the best peer: {}.", ratios.join("; "));
        }
        for server in of
            .iter()
            .map(|o| o.server.as_str())
            .filter(|n| crate::servers::is_ours(n))
        {
            if let Some(line) = floor_line(&of, server) {
                let _ = writeln!(out, "\n{server} against the floor: {line}.");
            }
        }
        if let Some(line) = redis_cost(&of) {
            let _ = writeln!(out, "\n{line}");
        }
        for o in &of {
            if !o.errors.is_empty() {
                let _ = writeln!(out, "\n{} errors: {}", o.server, o.errors.join("; "));
            }
        }
    }
    out.push_str(
        "\nColumns: *first event* is from the start of connect() to the first frame with data \
         (the `ready`), *all* is from the common start to the last stream's first event; *SYN \
         retries* counts streams whose connect() took over a second (a dropped SYN retried: the \
         listen backlog overflowed), *first byte >1s* those whose first byte came after a second \
         (a SYN retry or a slow accept loop); *delay* is publish \
         send time to receipt by the subscriber; *publish s* is the time from the first publish \
         to the answer to the last; *server CPU s* is connect phase + publish phase \
         (utime+stime of the server process), *kernel %* the share of the publish phase's CPU spent in the kernel (stime); *deliv/CPU-s* uses the publish phase; *generator CPU s* is the load generator's own CPU (all its \
         workers) until every stream had its first event + in the publish phase; a storm connects \
         from one worker process per core, the other scenarios from as few as hold the streams; \
         *RSS* is with \
         every stream open, *B/stream* is (RSS with streams − RSS before) / streams.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(pairs: &[(&str, Option<f64>)]) -> Vec<(String, Option<f64>)> {
        pairs.iter().map(|(s, x)| (s.to_string(), *x)).collect()
    }

    #[test]
    fn ratio_picks_the_best_peer_each_way() {
        let values = v(&[
            ("ours", Some(10.0)),
            ("go", Some(20.0)),
            ("node", Some(40.0)),
            ("python", None),
        ]);
        let lower = ratio(&values, false).expect("ratio");
        assert_eq!(lower.best_peer, "go");
        assert!((lower.ratio - 0.5).abs() < 1e-9);
        let higher = ratio(&values, true).expect("ratio");
        assert_eq!(higher.best_peer, "node");
        assert!((higher.ratio - 0.25).abs() < 1e-9);
    }

    #[test]
    fn a_floor_that_could_not_keep_the_rate_is_said_so() {
        let scenario = |name: &str| crate::suite::scenario(name, 10, 101, Some(10.0));
        let floor = |name: &str, publish_ms: f64| Outcome {
            server: "floor".into(),
            scenario: name.into(),
            publish_ms,
            ..Outcome::default()
        };
        let results = Results {
            scenarios: vec![scenario("kept"), scenario("late"), scenario("burst")],
            outcomes: vec![
                floor("kept", 10_500.0),
                floor("late", 14_800.0),
                // Ours late is not the floor's saturation.
                Outcome {
                    server: "ours".into(),
                    scenario: "kept".into(),
                    publish_ms: 20_000.0,
                    ..Outcome::default()
                },
            ],
            ..Results::default()
        };
        let lines = floor_saturated(&results);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("late") && lines[0].contains("14.8 s for a 10.0 s schedule"));
    }

    #[test]
    fn the_floor_is_no_peer_and_ours_is_read_against_it() {
        let o = |server: &str, p50: f64, deliv: f64| Outcome {
            server: server.into(),
            scenario: "fanout-10k".into(),
            delay_ms: crate::hist::Summary {
                count: 10,
                p50,
                ..Default::default()
            },
            deliveries_per_cpu_s: deliv,
            ..Outcome::default()
        };
        let all = [
            o("floor", 1.0, 1000.0),
            o("ours", 2.0, 500.0),
            o("go", 4.0, 250.0),
        ];
        let values: Vec<(String, Option<f64>)> = all
            .iter()
            .map(|x| (x.server.clone(), Some(x.delay_ms.p50)))
            .collect();
        // The best peer is go, though the floor is lower.
        assert_eq!(ratio(&values, false).expect("ratio").best_peer, "go");
        let of: Vec<&Outcome> = all.iter().collect();
        let picks = floor_picks();
        assert_eq!(to_floor(&of, "ours", &picks[1]), Some((2.0, 2.0)));
        // Half the deliveries per CPU-second is twice the CPU per delivery.
        let (cpu, r) = to_floor(&of, "ours", &picks[0]).expect("cpu");
        assert!((cpu - 2000.0).abs() < 1e-9 && (r - 2.0).abs() < 1e-9);
        let line = floor_line(&of, "ours").expect("line");
        assert!(
            line.starts_with("CPU per delivery 2.00x, delay p50 2.00x"),
            "{line}"
        );
    }

    #[test]
    fn ratio_needs_ours_and_a_peer() {
        assert_eq!(ratio(&v(&[("go", Some(1.0))]), true), None);
        assert_eq!(ratio(&v(&[("ours", Some(1.0)), ("go", None)]), true), None);
        assert_eq!(
            ratio(&v(&[("ours", Some(1.0)), ("go", Some(0.0))]), false),
            None
        );
        assert_eq!(
            ratio(&v(&[("ours", Some(f64::NAN)), ("go", Some(1.0))]), false),
            None
        );
    }

    #[test]
    fn splice_keeps_the_notes_around_the_generated_part() {
        let first = splice(None, "figures 1\n");
        assert!(first.starts_with(GENERATED_START) && first.contains("figures 1"));
        let edited = format!("# Notes before\n{first}\n## Causes\nkept\n");
        let second = splice(Some(&edited), "figures 2\n");
        assert!(second.starts_with("# Notes before\n"));
        assert!(second.contains("figures 2") && !second.contains("figures 1"));
        assert!(second.ends_with("\n## Causes\nkept\n"), "{second}");
        // A file without markers (hand-written): the figures go first, the text stays.
        let third = splice(Some("old text\n"), "figures 3\n");
        assert!(third.contains("figures 3") && third.ends_with("old text\n"));
    }

    #[test]
    fn table_has_a_row_per_outcome() {
        let o = Outcome {
            server: "go".into(),
            scenario: "fanout-200".into(),
            ..Outcome::default()
        };
        let t = table(&[o.clone(), o]);
        assert_eq!(t.lines().count(), 3);
        assert!(t
            .lines()
            .nth(1)
            .expect("row")
            .trim_start()
            .starts_with("go"));
    }
}
