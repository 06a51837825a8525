//! The built-in source: a `tick` event at a steady pace, like the "Hello, world" loop of the
//! original report. A steady source is what makes buffering visible (events then arrive in
//! bursts instead of one per interval).

use crate::hub::Hub;
use std::{sync::Arc, time::Duration};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub fn spawn(hub: Arc<Hub>, every: Duration, shutdown: CancellationToken) {
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
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {
                    n += 1;
                    if let Err(e) = hub.publish("tick", &format!("Hello, world #{n}")) {
                        tracing::error!(error = %e, "the tick source cannot publish");
                        break;
                    }
                }
            }
        }
    });
}
