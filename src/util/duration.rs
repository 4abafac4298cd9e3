//! Go `time.Duration` strings as kubeadm writes them ("24h0m0s", "8760h", "1h30m", "90s").

use std::time::Duration;

/// The longest Go duration, 2^63-1 nanoseconds, in whole hours (about 292 years).
pub const MAX_HOURS: u64 = 2_562_047;

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// Not a duration; the words say why.
    Invalid(String),
    /// Longer than the longest Go duration; holds the text as given.
    TooLong(String),
}

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DurationError::Invalid(m) => f.write_str(m),
            DurationError::TooLong(text) => write!(f, "{text:?} is too long: a duration is at most {MAX_HOURS}h (about 292 years)"),
        }
    }
}

/// Parses a Go duration string. Negative durations are rejected by the caller through the
/// sign flag, so the same parser can explain "negative" precisely.
pub fn parse_go(text: &str) -> Result<GoDuration, DurationError> {
    parse_go_inner(text).map_err(|e| match e {
        Some(m) => DurationError::Invalid(m),
        None => DurationError::TooLong(text.to_string()),
    })
}

/// `Err(None)`: too long.
fn parse_go_inner(text: &str) -> Result<GoDuration, Option<String>> {
    let s = text.trim();
    if s.is_empty() {
        return Err(Some("empty duration".into()));
    }
    let (negative, mut rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(GoDuration { negative, value: Duration::ZERO });
    }
    if rest.is_empty() {
        return Err(Some(format!("invalid duration {text:?}")));
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(Some(format!("invalid duration {text:?}: expected a number before {rest:?}")));
        }
        let number = &rest[..num_len];
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => return Err(Some(format!("missing unit in duration {text:?} (use h, m or s, e.g. 24h0m0s)"))),
            other => return Err(Some(format!("unknown unit {other:?} in duration {text:?} (use h, m or s)"))),
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(Some(format!("invalid duration {text:?}")));
        }
        let int: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| Some(format!("invalid duration {text:?}")))? };
        let mut frac_nanos: u128 = 0;
        if !frac_part.is_empty() {
            if !frac_part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Some(format!("invalid duration {text:?}")));
            }
            let mut denom: u128 = 1;
            let mut value: u128 = 0;
            for b in frac_part.bytes().take(18) {
                value = value * 10 + u128::from(b - b'0');
                denom *= 10;
            }
            frac_nanos = value * scale / denom;
        }
        nanos = int
            .checked_mul(scale)
            .and_then(|n| n.checked_add(frac_nanos))
            .and_then(|n| n.checked_add(nanos))
            .filter(|n| *n <= i64::MAX as u128)
            .ok_or(None)?;
    }
    let value = Duration::new((nanos / 1_000_000_000) as u64, (nanos % 1_000_000_000) as u32);
    Ok(GoDuration { negative, value })
}

/// `--warn-within` of every command (`verify`, `certs check-expiration`): whole days (`30d`) or a
/// Go duration (`720h`, `1h30m`), not negative, at most the longest Go duration.
pub fn parse_warn_within(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let too_long = || format!("--warn-within {}", DurationError::TooLong(text.to_string()));
    if let Some(days) = t.strip_suffix('d').filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())) {
        return days.parse::<u64>().ok().filter(|n| *n <= MAX_HOURS / 24).map(|n| Duration::from_secs(n * 86_400)).ok_or_else(too_long);
    }
    match parse_go(t) {
        Ok(d) if d.negative && !d.value.is_zero() => Err(format!("--warn-within {text:?} is negative")),
        Ok(d) => Ok(d.value),
        Err(DurationError::TooLong(_)) => Err(too_long()),
        Err(DurationError::Invalid(_)) => Err(format!("--warn-within {text:?} is not a duration such as 30d, 720h or 1h30m")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration {
    pub negative: bool,
    pub value: Duration,
}

/// Formats whole seconds the way Go prints a duration ("24h0m0s", "5m0s", "0s").
pub fn format_go(d: Duration) -> String {
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> u64 {
        let d = parse_go(s).unwrap();
        assert!(!d.negative);
        d.value.as_secs()
    }

    #[test]
    fn parses_kubeadm_forms() {
        assert_eq!(secs("24h0m0s"), 86_400);
        assert_eq!(secs("8760h"), 31_536_000);
        assert_eq!(secs("87600h0m0s"), 315_360_000);
        assert_eq!(secs("1h30m"), 5_400);
        assert_eq!(secs("1.5h"), 5_400);
        assert_eq!(secs("0"), 0);
        assert_eq!(secs("0s"), 0);
        assert!(parse_go("-1h").unwrap().negative);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "h", "10", "10d", "1h-2m", "abc", "1..2h", "99999999999999999h"] {
            assert!(parse_go(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn too_long_is_its_own_error() {
        assert_eq!(parse_go("2562047h").unwrap().value.as_secs(), 2_562_047 * 3600);
        assert_eq!(parse_go("2562048h"), Err(DurationError::TooLong("2562048h".into())));
        assert_eq!(
            parse_go("999999999999h").unwrap_err().to_string(),
            "\"999999999999h\" is too long: a duration is at most 2562047h (about 292 years)"
        );
        assert!(matches!(parse_go("10x"), Err(DurationError::Invalid(_))));
    }

    #[test]
    fn warn_within_takes_days_and_go_durations() {
        let day = 86_400;
        for (text, secs) in
            [("30d", 30 * day), ("720h", 30 * day), ("1h30m", 5_400), ("0", 0), ("0d", 0), ("90s", 90), ("106751d", 106_751 * day)]
        {
            assert_eq!(parse_warn_within(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        for (text, words) in [
            ("-1h", "is negative"),
            ("soon", "is not a duration such as 30d"),
            ("1.5d", "is not a duration"),
            ("30", "is not a duration"),
            ("d", "is not a duration"),
            ("", "is not a duration"),
            ("106752d", "is too long"),
            ("99999999999999999999d", "is too long"),
            ("2562048h", "is too long"),
        ] {
            let e = parse_warn_within(text).unwrap_err();
            assert!(e.starts_with("--warn-within ") && e.contains(words), "{text}: {e}");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go(Duration::from_secs(86_400)), "24h0m0s");
        assert_eq!(format_go(Duration::from_secs(300)), "5m0s");
        assert_eq!(format_go(Duration::from_secs(0)), "0s");
        for s in ["24h0m0s", "8760h0m0s", "1h30m0s"] {
            assert_eq!(format_go(parse_go(s).unwrap().value), s);
        }
    }
}
