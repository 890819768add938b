//! How durations and moments read wherever a person sees them: the pages, chat messages and the CLI, so
//! a two-hour build reads "2h 05m" in each.

/// The time between two millisecond timestamps: "5s", "1m 05s", "2h 05m"; "running" without
/// an end, and "" when it has not started.
pub fn took(started_ms: Option<i64>, finished_ms: Option<i64>) -> String {
    match (started_ms, finished_ms) {
        (Some(s), Some(f)) => duration_ms(f - s),
        (Some(_), None) => "running".to_owned(),
        _ => String::new(),
    }
}

/// A duration in milliseconds: "5s", "1m 05s", "2h 05m" (a negative one reads "0s").
pub fn duration_ms(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    if secs >= 3600 {
        format!("{}h {:02}m", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// A moment in milliseconds as UTC to the minute: "2026-12-04 03:00 UTC".
pub fn at_ms(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(at) => at.format("%Y-%m-%d %H:%M UTC").to_string(),
        None => format!("{ms} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_read_in_utc_to_the_minute() {
        assert_eq!(at_ms(1_796_353_200_000), "2026-12-04 03:00 UTC");
    }

    #[test]
    fn durations_read_the_same_everywhere() {
        assert_eq!(took(Some(0), Some(5_400)), "5s");
        assert_eq!(took(Some(0), Some(65_000)), "1m 05s");
        assert_eq!(took(Some(0), Some(3_780_000)), "1h 03m");
        assert_eq!(duration_ms(7_503_000), "2h 05m", "not 125m 03s");
        assert_eq!(took(Some(10), Some(0)), "0s");
        assert_eq!(took(Some(0), None), "running");
        assert_eq!(took(None, None), "");
    }
}
