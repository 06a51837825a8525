//! Any bytes a new connection sends: reading its head as the direct writer does never panics,
//! and what it accepts as a stream request is a complete `GET` of the stream's path that
//! `httparse` (hyper's parser) reads the same way, with no body and no upgrade.
#![no_main]

use events_core::head::{ends_head, may_be_get, stream_head};

// `may_be_get` is the direct writer's first filter; exercised here so it never panics.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (bool, &[u8])| {
    let (under_base, buf) = input;
    let base = if under_base { "/live" } else { "" };
    // The scan from any point agrees with the scan from the start about the bytes after it.
    let _ = may_be_get(buf);
    let whole = ends_head(buf, 0);
    for from in [buf.len() / 2, buf.len().saturating_sub(1), buf.len()] {
        if ends_head(buf, from) {
            assert!(whole, "a blank line found from {from} is found from 0");
        }
    }
    let mut names = Vec::new();
    let Some(head) = stream_head(buf, base, |name, _| names.push(name.to_ascii_lowercase())) else {
        return;
    };
    assert!(whole, "a complete head ends with a blank line");
    let path = head.target.split_once('?').map_or(head.target, |(p, _)| p);
    assert!(path.to_ascii_lowercase().ends_with("/api/events"));
    assert!(path.len() == base.len() + "/api/events".len());
    for refused in ["transfer-encoding", "upgrade"] {
        assert!(!names.iter().any(|n| n == refused), "{refused} is hyper's");
    }
});
