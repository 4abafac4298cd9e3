//! One clock per run: `--now`, else SOURCE_DATE_EPOCH, else the system time, in whole seconds.

use std::time::Duration;

use time::OffsetDateTime;

/// kubeadm (1.31+) backdates notBefore by five minutes against clock skew.
pub const BACKDATE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("--now {0:?} is not an RFC 3339 time\n  hint: write e.g. --now 2026-01-01T00:00:00Z")]
    Now(String),
    #[error("SOURCE_DATE_EPOCH {0:?} is not a number of seconds since 1970\n  hint: unset it or set e.g. SOURCE_DATE_EPOCH=1767225600")]
    Epoch(String),
}

impl Clock {
    pub fn from_sources(now: Option<&str>, source_date_epoch: Option<&str>) -> Result<Clock, ClockError> {
        let t = if let Some(n) = now {
            OffsetDateTime::parse(n, &time::format_description::well_known::Rfc3339).map_err(|_| ClockError::Now(n.to_string()))?
        } else if let Some(e) = source_date_epoch.filter(|e| !e.is_empty()) {
            let secs: i64 = e.trim().parse().map_err(|_| ClockError::Epoch(e.to_string()))?;
            OffsetDateTime::from_unix_timestamp(secs).map_err(|_| ClockError::Epoch(e.to_string()))?
        } else {
            OffsetDateTime::now_utc()
        };
        let t = t.to_offset(time::UtcOffset::UTC).replace_nanosecond(0).expect("0 is a valid nanosecond");
        Ok(Clock { now: t })
    }

    pub fn backdated(&self) -> OffsetDateTime {
        self.now - BACKDATE
    }

    pub fn unix(&self) -> u64 {
        self.now.unix_timestamp().max(0) as u64
    }
}

/// A time as every message shows it: RFC 3339 in UTC (`2026-01-01T00:00:00Z`).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_in_order() {
        let c = Clock::from_sources(Some("2026-01-02T03:04:05.678+01:00"), Some("0")).unwrap();
        assert_eq!(c.unix(), 1_767_319_445);
        assert_eq!(Clock::from_sources(None, Some("1767225600")).unwrap().unix(), 1_767_225_600);
        assert!(Clock::from_sources(Some("yesterday"), None).is_err());
        assert!(Clock::from_sources(None, Some("x")).is_err());
        assert_eq!(rfc3339(c.now), "2026-01-02T02:04:05Z");
    }
}
