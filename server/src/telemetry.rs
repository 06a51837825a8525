//! Logs: one line per event of interest, to stdout, which IIS captures into `logs\stdout_*.log`.

use std::io::{self, Write};
use tracing_subscriber::{fmt::MakeWriter, EnvFilter};

pub fn init(filter: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("RUST_LOG: '{filter}': {e}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colour codes only make the IIS log files harder to read.
        .with_ansi(ansi)
        .with_writer(OneLine { ansi })
        .try_init()
        .map_err(|e| format!("cannot start logging: {e}"))
}

/// Makes every log record one line, whatever its fields hold.
///
/// Many fields carry a client's text (an unknown topic in an error message, a path, a
/// forwarded address), and a CR or LF in one would start a forged line of its own in the log
/// an operator reads (reachable through IIS, which forwards such text as it came). Escaping
/// at each call site would miss the next one; escaping here covers them all. The formatter
/// writes each record with one `write` that ends in the record's own newline, so only the
/// bytes before it are escaped.
struct OneLine {
    /// Colours on (a terminal): the formatter's own escape sequences must pass.
    ansi: bool,
}

impl<'a> MakeWriter<'a> for OneLine {
    type Writer = OneLineWriter;

    fn make_writer(&'a self) -> OneLineWriter {
        OneLineWriter {
            out: io::stdout(),
            ansi: self.ansi,
        }
    }
}

struct OneLineWriter {
    out: io::Stdout,
    ansi: bool,
}

impl Write for OneLineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut out = self.out.lock();
        match escape_record(buf, self.ansi) {
            None => out.write_all(buf)?,
            Some(escaped) => out.write_all(&escaped)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// `record` with its control characters (but the final newline, a tab and, with colours,
/// ESC) written as `\n`, `\r` or `\xNN`; `None` when nothing needs escaping.
fn escape_record(record: &[u8], ansi: bool) -> Option<Vec<u8>> {
    let (body, end) = match record.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (record, &b""[..]),
    };
    let needs = |b: u8| (b < 0x20 && b != b'\t' && !(ansi && b == 0x1b)) || b == 0x7f;
    if !body.iter().any(|&b| needs(b)) {
        return None;
    }
    let mut out = Vec::with_capacity(record.len() + 16);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b if needs(b) => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            b => out.push(b),
        }
    }
    out.extend_from_slice(end);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_stays_one_line_whatever_its_fields_hold() {
        let forged = b"WARN publish refused error=unknown topic 'x\r\n2026 INFO admin logged in'\n";
        let escaped = escape_record(forged, false).expect("escaped");
        assert_eq!(
            escaped,
            b"WARN publish refused error=unknown topic 'x\\r\\n2026 INFO admin logged in'\n"
        );
        assert_eq!(
            escape_record(b"a\x1b[31mred\x7f\n", false).expect("escaped"),
            b"a\\x1b[31mred\\x7f\n"
        );
        assert_eq!(escape_record(b"plain\tline\n", false), None);
        assert_eq!(escape_record(b"\x1b[2mcolour\x1b[0m\n", true), None);
    }
}
