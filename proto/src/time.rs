//! Time as brook's parts write it: durations in config and on the command
//! line (`500ms`, `1s`, `5m`, `2h`, `3d`), and wall-clock milliseconds.
//! Shared by the broker's config, `brookctl` and `brook-bench`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Parses a duration such as `500ms`, `1s`, `5m`, `2h`, `3d` or a bare
/// number of milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a duration (like 500ms, 1s, 5m, 2h, 3d)"))?;
    let scale = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m, h, d)")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("{text:?} is too long"))
}

/// Current system time in ms since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_every_unit_and_refuse_the_rest() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("250"), Ok(250));
        assert_eq!(parse_duration_ms(" 2s "), Ok(2_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("3d"), Ok(259_200_000));
        assert!(parse_duration_ms("1w").is_err());
        assert!(parse_duration_ms("ms").is_err());
        assert!(parse_duration_ms("99999999999999999d").is_err());
    }
}
