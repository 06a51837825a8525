//! The live view's components, one per file; they read the [`crate::stream::Feed`] signals and
//! never touch the connection.

mod controls;
mod delay_chart;
mod event_list;
mod instance;
mod live;
mod publish_form;
mod status;

pub use live::LivePage;

/// `x` with `decimals` digits after the point (at most 3), as `format!("{x:.N}")` writes it
/// except that an exact half rounds away from zero (not to even), by integer arithmetic: Rust's float formatting (`core::fmt::float`, Grisu and Dragon4) is
/// several kilobytes of the WebAssembly client, and the page needs only this.
pub(crate) fn fixed(x: f64, decimals: u32) -> String {
    let scale = 10u64.pow(decimals.min(3));
    let scaled = (x * scale as f64).round();
    if !scaled.is_finite() {
        return "0".into();
    }
    let sign = if scaled < 0.0 { "-" } else { "" };
    let n = scaled.abs() as u64;
    match decimals.min(3) {
        0 => format!("{sign}{n}"),
        d => format!(
            "{sign}{}.{:0width$}",
            n / scale,
            n % scale,
            width = d as usize
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::fixed;

    #[test]
    fn fixed_writes_what_format_writes() {
        for x in [
            0.0, 0.04, 0.05, 5.3, 12.96, 99.95, 1234.4, 600.0, 0.949, 37.46,
        ] {
            assert_eq!(fixed(x, 0), format!("{x:.0}"), "{x}");
            assert_eq!(fixed(x, 1), format!("{x:.1}"), "{x}");
            assert_eq!(fixed(-x - 1.0, 1), format!("{:.1}", -x - 1.0), "{x}");
        }
        assert_eq!(fixed(1.25, 1), "1.3");
        assert_eq!(fixed(f64::NAN, 1), "0");
    }
}
