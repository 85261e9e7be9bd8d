//! Durations as scenarios write them: `500ms`, `10s`, `10 min`, `1h30m`,
//! `2d`, or a bare number of seconds.
//!
//! Contract: [`parse_duration`] accepts one or more `NUMBER UNIT` parts
//! (units `ms`, `s`, `m`/`min`, `h`, `d`; spaces allowed) or a plain
//! non-negative number (seconds); anything else is an error that quotes the
//! input and lists the units.

use std::time::Duration;

/// Parses a duration; the error quotes the input and says what is allowed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "malformed duration {text:?}; write e.g. \"500ms\", \"10s\", \"10min\", \"1h30m\", \"2d\" or a number of seconds"
        )
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return secs_to_duration(secs).ok_or_else(bad);
    }
    let mut total = 0.0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(bad()),
        };
        total += n * factor;
        rest = rest[unit_len..].trim_start();
    }
    secs_to_duration(total).ok_or_else(bad)
}

/// Seconds to a duration, if finite and non-negative.
pub fn secs_to_duration(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..1e12).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10 min"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in ["", "soon", "10 parsecs", "-1", "s10", "1h 30", "NaN"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("malformed duration"), "{bad}: {e}");
        }
    }
}
