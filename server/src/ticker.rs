//! The built-in source: a `tick` event at a steady pace, like the "Hello, world" loop of the
//! original report. A steady source is what makes buffering visible (events then arrive in
//! bursts instead of one per interval).

//!
//! It publishes through the bus like any publisher. Processes sharing the event log tick once
//! between them (a lease in the log says who). With Redis every instance would tick into the
//! shared stream, so `EVENTS_TICK=auto` (the default) turns it off there; set it explicitly on
//! one instance for a demo farm.

use crate::bus::{Bus, PublishError};
use std::time::Duration;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub fn spawn(bus: Bus, every: Duration, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        // Ticks missed while the process was starved of CPU are made up at once, so the source
        // keeps its rate on average (the 2 ms of the browser's 500 events/s test on a busy
        // machine): a delayed schedule fell to about 320/s there. The made-up ticks carry
        // their own (close) send times, which the page's buffering detector does not mistake
        // for buffering.
        interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
        interval.tick().await; // the first tick is immediate
        let mut n: u64 = 0;
        // Logged once per outage of the event store, not once per tick.
        let mut unavailable = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {
                    match bus.tick(&format!("Hello, world #{}", n + 1)).await {
                        Ok(stored) => {
                            n += u64::from(stored.is_some());
                            unavailable = false;
                        }
                        Err(e @ PublishError::Unavailable { .. }) => {
                            if !unavailable {
                                tracing::warn!(error = %e, "the tick source cannot publish; it keeps trying");
                            }
                            unavailable = true;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the tick source cannot publish");
                            break;
                        }
                    }
                }
            }
        }
    });
}
