//! Go `time.Duration` strings as kubeadm writes them ("24h0m0s", "8760h", "1h30m", "90s").

use std::time::Duration;

/// Parses a Go duration string. Negative durations are rejected by the caller through the
/// sign flag, so the same parser can explain "negative" precisely.
pub fn parse_go(text: &str) -> Result<GoDuration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
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
        return Err(format!("invalid duration {text:?}"));
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("invalid duration {text:?}: expected a number before {rest:?}"));
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
            "" => return Err(format!("missing unit in duration {text:?} (use h, m or s, e.g. 24h0m0s)")),
            other => return Err(format!("unknown unit {other:?} in duration {text:?} (use h, m or s)")),
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(format!("invalid duration {text:?}"));
        }
        let int: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| format!("invalid duration {text:?}"))? };
        let mut frac_nanos: u128 = 0;
        if !frac_part.is_empty() {
            if !frac_part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("invalid duration {text:?}"));
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
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
    }
    let value = Duration::new((nanos / 1_000_000_000) as u64, (nanos % 1_000_000_000) as u32);
    Ok(GoDuration { negative, value })
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
    fn formats_like_go() {
        assert_eq!(format_go(Duration::from_secs(86_400)), "24h0m0s");
        assert_eq!(format_go(Duration::from_secs(300)), "5m0s");
        assert_eq!(format_go(Duration::from_secs(0)), "0s");
        for s in ["24h0m0s", "8760h0m0s", "1h30m0s"] {
            assert_eq!(format_go(parse_go(s).unwrap().value), s);
        }
    }
}
