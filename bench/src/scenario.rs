//! One scenario against one server under test: start the subscriber workers, wait until
//! every stream has its first event, publish, let the events arrive, gather the figures.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use crate::hist::{self, Summary};
use crate::procfs;
use crate::publisher::{self, Plan};
use crate::unix_ns;
use crate::worker::{Command, DeliveryFigures, SetupFigures, WorkerConfig, WorkerMsg};

/// Streams per worker process: well under the 20,000 descriptors a process may hold here.
pub const CONNS_PER_WORKER: usize = 9_000;

/// A server under test: its instances (subscribers go round-robin, publishes to the first)
/// and their process ids (CPU and memory are summed).
#[derive(Clone, Debug)]
pub struct Target {
    pub addrs: Vec<SocketAddr>,
    pub pids: Vec<u32>,
    pub stream_path: String,
    pub publish_path: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub subscribers: usize,
    /// Events to publish (0: an idle scenario).
    pub events: u64,
    /// Events per second; None: as fast as possible.
    pub rate: Option<f64>,
    pub payload: usize,
    pub publish_connections: usize,
    /// Connect every stream at once (a storm) rather than a bounded number at a time.
    pub storm: bool,
    /// Idle: wait this long with every stream open before reading the memory.
    pub settle_ms: u64,
    /// How long to wait for late events after publishing.
    pub quiet_ms: u64,
    pub max_drain_ms: u64,
    pub setup_timeout_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub server: String,
    pub scenario: String,
    pub subscribers: usize,
    pub established: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    pub first_byte_ms: Summary,
    pub first_event_ms: Summary,
    /// From the common start to the last stream's first event.
    pub all_first_event_ms: f64,
    /// Streams whose first byte took over a second (a SYN retry, or a slow accept loop).
    pub first_byte_over_1s: u64,
    /// Streams whose connect() took over a second: the SYN-retry tail of an overflowing
    /// listen backlog.
    pub connect_ms: Summary,
    pub connect_over_1s: u64,
    pub published: u64,
    pub publish_failed: u64,
    /// From the first publish to the answer to the last one: a server whose publish returns
    /// before the fan-out is done lets a burst queue up (higher delay), one whose publish
    /// waits for the hand-off slows the publisher down instead.
    pub publish_ms: f64,
    pub deliveries: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub closed: u64,
    pub delay_ms: Summary,
    pub deliveries_per_s: f64,
    pub setup_cpu_s: f64,
    pub publish_cpu_s: f64,
    /// The publish phase's CPU in the kernel (system time): writes to sockets, mostly.
    pub publish_sys_s: f64,
    pub deliveries_per_cpu_s: f64,
    /// The load generator's own CPU (all workers) in the publish phase: near the wall time
    /// of that phase, the generator, not the server, set the pace.
    pub generator_cpu_s: f64,
    /// The load generator's CPU (all workers) until every stream had its first event: for a
    /// storm, the generator's share of the cores.
    #[serde(default)]
    pub generator_setup_cpu_s: f64,
    pub rss_before_kib: u64,
    pub rss_streams_kib: u64,
    pub hwm_kib: u64,
    pub bytes_per_stream: f64,
}

impl Outcome {
    /// What `--quick` refuses: lost or duplicated events, failed streams or publishes.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.failed > 0 {
            p.push(format!(
                "{} streams failed ({:?})",
                self.failed, self.errors
            ));
        }
        if self.publish_failed > 0 {
            p.push(format!("{} publishes failed", self.publish_failed));
        }
        if self.lost > 0 {
            p.push(format!("{} events lost", self.lost));
        }
        if self.duplicated > 0 {
            p.push(format!("{} events duplicated", self.duplicated));
        }
        p
    }
}

struct Worker {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn next(&mut self) -> Result<WorkerMsg, String> {
        let line = self
            .lines
            .next_line()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("a worker exited early (see its stderr above)")?;
        serde_json::from_str(&line).map_err(|e| format!("bad worker line {line:?}: {e}"))
    }
}

/// How many subscriber processes a scenario uses. A storm is spread over one per core: its
/// figure is how fast a server takes streams, and one single-threaded worker connecting 5,000
/// streams is busy for the whole storm, so it measured the generator (the floor itself came out
/// at 0.6x the best peer). Fan-out keeps the fewest workers, so the generator's share of the
/// cores stays small and the same for every server.
fn workers_for(s: &Scenario) -> usize {
    let needed = s.subscribers.div_ceil(CONNS_PER_WORKER).max(1);
    if !s.storm {
        return needed;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    needed.max(cores).min(s.subscribers.max(1))
}

pub async fn run(server: &str, target: &Target, s: &Scenario) -> Result<Outcome, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let before = procfs::total_memory(&target.pids);
    let cpu0 = procfs::total_cpu(&target.pids);
    let workers_n = workers_for(s);
    let start_at_ns = unix_ns() + 300_000_000; // every worker starts together
    let mut workers = Vec::new();
    let mut first_index = 0;
    for w in 0..workers_n {
        let conns = s.subscribers / workers_n + usize::from(w < s.subscribers % workers_n);
        let config = WorkerConfig {
            targets: target.addrs.clone(),
            path: target.stream_path.clone(),
            conns,
            first_index,
            source_addrs: 32,
            connect_concurrency: if s.storm { 0 } else { 500 },
            start_at_ns,
            setup_timeout_ms: s.setup_timeout_ms,
        };
        first_index += conns;
        let mut child = tokio::process::Command::new(&exe)
            .arg("worker")
            .arg(serde_json::to_string(&config).map_err(|e| e.to_string())?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        let stdout = child.stdout.take().ok_or("no worker stdout")?;
        workers.push(Worker {
            child,
            lines: BufReader::new(stdout).lines(),
        });
    }

    let mut setup = Vec::new();
    for w in &mut workers {
        match w.next().await? {
            WorkerMsg::Ready(figures) => setup.push(figures),
            other => return Err(format!("expected ready, got {other:?}")),
        }
    }
    let cpu1 = procfs::total_cpu(&target.pids);
    if s.settle_ms > 0 {
        tokio::time::sleep(Duration::from_millis(s.settle_ms)).await;
    }
    let with_streams = procfs::total_memory(&target.pids);

    let mut publish = publisher::Outcome::default();
    if s.events > 0 {
        let plan = Plan {
            target: target.addrs[0],
            path: target.publish_path.clone(),
            topic: "tick".into(),
            events: s.events,
            interval: s.rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            payload: s.payload,
            connections: s.publish_connections,
        };
        publish = publisher::publish(plan).await;
    }
    let command = serde_json::to_string(&Command::Drain {
        published: publish.published + publish.failed,
        quiet_ms: s.quiet_ms,
        max_wait_ms: s.max_drain_ms,
    })
    .map_err(|e| e.to_string())?;
    for w in &mut workers {
        let stdin = w.child.stdin.as_mut().ok_or("no worker stdin")?;
        stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(|e| format!("cannot talk to a worker: {e}"))?;
    }
    let mut reports = Vec::new();
    for w in &mut workers {
        match w.next().await? {
            WorkerMsg::Report(figures) => reports.push(figures),
            other => return Err(format!("expected a report, got {other:?}")),
        }
    }
    let cpu2 = procfs::total_cpu(&target.pids);
    let after = procfs::total_memory(&target.pids);
    for mut w in workers {
        let _ = w.child.wait().await;
    }
    Ok(combine(
        server,
        s,
        &setup,
        &reports,
        &publish,
        [cpu0, cpu1, cpu2],
        [before, with_streams, after],
    ))
}

impl Outcome {
    /// Events the publisher sent (none in an idle or storm scenario).
    pub fn events_published(&self) -> u64 {
        self.published + self.publish_failed
    }
}

fn over_1s(h: &hdrhistogram::Histogram<u64>) -> u64 {
    h.count_between(1_000_000, h.max().max(1_000_000))
}

/// Merges the workers' figures into one outcome.
fn combine(
    server: &str,
    s: &Scenario,
    setup: &[SetupFigures],
    reports: &[DeliveryFigures],
    publish: &publisher::Outcome,
    cpu: [procfs::Cpu; 3],
    mem: [procfs::Memory; 3],
) -> Outcome {
    let (mut connect, mut first_byte, mut first_event, mut since_start, mut delay) = (
        hist::new(),
        hist::new(),
        hist::new(),
        hist::new(),
        hist::new(),
    );
    let mut o = Outcome {
        server: server.into(),
        scenario: s.name.clone(),
        subscribers: s.subscribers,
        ..Outcome::default()
    };
    for f in setup {
        o.established += f.established;
        o.failed += f.failed;
        o.errors.extend(f.errors.iter().cloned());
        hist::merge(&mut connect, &f.connect);
        hist::merge(&mut first_byte, &f.first_byte);
        hist::merge(&mut first_event, &f.first_event);
        hist::merge(&mut since_start, &f.first_event_since_start);
    }
    let mut last_delivery_ns = 0;
    o.generator_setup_cpu_s = setup.iter().map(|f| f.cpu_s).sum();
    o.generator_cpu_s = reports.iter().map(|r| r.cpu_s).sum::<f64>() - o.generator_setup_cpu_s;
    for r in reports {
        o.deliveries += r.deliveries;
        o.duplicated += r.duplicates;
        o.lost += r.lost;
        o.closed += r.closed;
        hist::merge(&mut delay, &r.delay);
        last_delivery_ns = last_delivery_ns.max(r.last_delivery_ns);
    }
    o.first_byte_ms = hist::summary(&first_byte);
    o.first_event_ms = hist::summary(&first_event);
    o.all_first_event_ms = hist::summary(&since_start).max;
    o.first_byte_over_1s = over_1s(&first_byte);
    o.connect_ms = hist::summary(&connect);
    o.connect_over_1s = over_1s(&connect);
    o.delay_ms = hist::summary(&delay);
    o.published = publish.published;
    o.publish_failed = publish.failed;
    o.publish_ms = publish.last_send_ns.saturating_sub(publish.first_send_ns) as f64 / 1e6;
    o.expected = (publish.published + publish.failed) * o.established;
    if last_delivery_ns > publish.first_send_ns && o.deliveries > 0 {
        o.deliveries_per_s =
            o.deliveries as f64 / ((last_delivery_ns - publish.first_send_ns) as f64 / 1e9);
    }
    o.setup_cpu_s = cpu[1].since(&cpu[0]).total();
    let publish_cpu = cpu[2].since(&cpu[1]);
    o.publish_cpu_s = publish_cpu.total();
    o.publish_sys_s = publish_cpu.system;
    if o.publish_cpu_s > 0.0 {
        o.deliveries_per_cpu_s = o.deliveries as f64 / o.publish_cpu_s;
    }
    o.rss_before_kib = mem[0].rss_kib;
    o.rss_streams_kib = mem[1].rss_kib;
    o.hwm_kib = mem[2].hwm_kib;
    if o.established > 0 {
        o.bytes_per_stream =
            (mem[1].rss_kib.saturating_sub(mem[0].rss_kib) * 1024) as f64 / o.established as f64;
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(values_us: &[u64]) -> hist::Buckets {
        let mut h = hist::new();
        for &v in values_us {
            hist::record_us(&mut h, v);
        }
        hist::to_buckets(&h)
    }

    #[test]
    fn a_storm_connects_from_every_core_and_fan_out_from_as_few_workers_as_hold_it() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let s = |subscribers, storm| Scenario {
            name: "s".into(),
            subscribers,
            events: 0,
            rate: None,
            payload: 0,
            publish_connections: 1,
            storm,
            settle_ms: 0,
            quiet_ms: 0,
            max_drain_ms: 0,
            setup_timeout_ms: 0,
        };
        assert_eq!(workers_for(&s(10_000, false)), 2);
        assert_eq!(workers_for(&s(500, false)), 1);
        assert_eq!(workers_for(&s(5_000, true)), cores.max(1));
        assert_eq!(workers_for(&s(20_000, true)), cores.max(3));
        // Never a worker with nothing to connect.
        assert_eq!(workers_for(&s(1, true)), 1);
    }

    #[test]
    fn combine_sums_workers_and_derives_the_rates() {
        let s = Scenario {
            name: "fanout-4".into(),
            subscribers: 4,
            events: 10,
            rate: Some(10.0),
            payload: 100,
            publish_connections: 1,
            storm: false,
            settle_ms: 0,
            quiet_ms: 0,
            max_drain_ms: 0,
            setup_timeout_ms: 0,
        };
        let setup = |established, connect: &[u64]| SetupFigures {
            established,
            connect: buckets(connect),
            first_byte: buckets(connect),
            first_event: buckets(connect),
            first_event_since_start: buckets(&[2_000, 3_000]),
            cpu_s: 0.5,
            ..SetupFigures::default()
        };
        let report = |deliveries, lost, dup, last| DeliveryFigures {
            deliveries,
            duplicates: dup,
            lost,
            closed: 0,
            delay: buckets(&vec![1_000; deliveries as usize]),
            last_delivery_ns: last,
            cpu_s: 0.75,
        };
        let publish = publisher::Outcome {
            published: 10,
            first_send_ns: 1_000_000_000,
            last_send_ns: 2_000_000_000,
            ..publisher::Outcome::default()
        };
        let cpu = |t: f64| procfs::Cpu {
            user: t / 2.0,
            system: t / 2.0,
        };
        let mem = |kib| procfs::Memory {
            rss_kib: kib,
            hwm_kib: kib,
        };
        let o = combine(
            "go",
            &s,
            &[setup(2, &[100, 1_500_000]), setup(2, &[200, 300])],
            &[
                report(20, 0, 0, 3_000_000_000),
                report(19, 1, 0, 2_000_000_000),
            ],
            &publish,
            [cpu(1.0), cpu(1.5), cpu(3.5)],
            [mem(1000), mem(1040), mem(1100)],
        );
        assert_eq!(
            (o.established, o.deliveries, o.lost, o.duplicated),
            (4, 39, 1, 0)
        );
        assert_eq!(o.expected, 40);
        assert_eq!(o.connect_over_1s, 1, "the 1.5 s connect");
        assert!((o.all_first_event_ms - 3.0).abs() < 0.01);
        assert!((o.setup_cpu_s - 0.5).abs() < 1e-9);
        assert!((o.publish_cpu_s - 2.0).abs() < 1e-9);
        assert!((o.deliveries_per_cpu_s - 19.5).abs() < 1e-9);
        assert!(
            (o.deliveries_per_s - 19.5).abs() < 1e-9,
            "39 over the 2 s to the last delivery"
        );
        assert!((o.generator_cpu_s - 0.5).abs() < 1e-9);
        assert!((o.generator_setup_cpu_s - 1.0).abs() < 1e-9);
        assert!((o.publish_ms - 1000.0).abs() < 1e-9);
        assert!((o.bytes_per_stream - 40.0 * 1024.0 / 4.0).abs() < 1e-9);
        assert_eq!(o.problems(), ["1 events lost"]);
    }

    #[test]
    fn a_clean_outcome_has_no_problems() {
        assert!(Outcome::default().problems().is_empty());
        let o = Outcome {
            failed: 2,
            duplicated: 1,
            publish_failed: 1,
            ..Outcome::default()
        };
        assert_eq!(o.problems().len(), 3);
    }
}
