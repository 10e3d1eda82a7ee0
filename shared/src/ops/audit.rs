//! Reading the audit trail: one page, or every entry a query matches, and what `--since`
//! means.

use chrono::{DateTime, Utc};

use super::Error;
use crate::backends::Services;
use crate::catalog::{AuditPage, AuditQuery};
use crate::model::AuditEntry;
use crate::retention::Span;

/// One page of entries, newest first.
pub async fn page(services: &Services, query: &AuditQuery) -> Result<AuditPage, Error> {
    Ok(services.catalog.audit_page(query).await?)
}

/// Every entry matching `query`, following cursors to the end, newest first.
pub async fn all(services: &Services, query: &AuditQuery) -> Result<Vec<AuditEntry>, Error> {
    let mut query = query.clone();
    query.limit = Some(500);
    let mut out = Vec::new();
    loop {
        let page = services.catalog.audit_page(&query).await?;
        out.extend(page.entries);
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// A `since` bound as people write it: a duration back from `now` (`7d`, `12h`) or an
/// RFC 3339 time (`2026-11-24T00:00:00Z`).
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(span) = text.parse::<Span>() {
        return Ok(now - span.as_delta());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!(
                "since {text:?} is neither a duration (7d, 12h, 30m) nor an RFC 3339 time (2026-11-24T00:00:00Z)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
        assert_eq!(
            parse_since("2d", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
        );
        assert_eq!(
            parse_since("2026-11-01T08:00:00+01:00", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 1, 7, 0, 0).unwrap()
        );
        let err = parse_since("yesterday", now).unwrap_err();
        assert!(err.contains("7d") && err.contains("RFC 3339"), "{err}");
    }
}
