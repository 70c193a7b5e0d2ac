//! What servers say about their limits, read from response headers.
//!
//! - `Retry-After`: seconds, or an HTTP date (IMF-fixdate, `Wed, 21 Oct 2015 07:28:00 GMT`).
//! - `retry-after-ms`: milliseconds (OpenAI's SDKs read it first).
//! - `x-ratelimit-remaining-{requests,tokens}` and `x-ratelimit-reset-{requests,tokens}`
//!   (OpenAI: resets as durations like `6m0s` or `20ms`), and Anthropic's
//!   `anthropic-ratelimit-{requests,tokens}-remaining`.
//!
//! A value that does not parse is ignored (a hint, not a contract): the limiter then works
//! from what it measures.

use crate::Millis;

/// The limits a response reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerHints {
    /// How long to wait before the next request, when the server said.
    pub retry_after: Option<Millis>,
    /// Requests left in the server's current window.
    pub remaining_requests: Option<u64>,
    /// Tokens left in the server's current window.
    pub remaining_tokens: Option<u64>,
    /// When the request window resets, from now.
    pub reset_requests: Option<Millis>,
    /// When the token window resets, from now.
    pub reset_tokens: Option<Millis>,
}

impl ServerHints {
    /// The hints in `headers` (names in any case), received at `now_unix_ms` (for
    /// `Retry-After` as a date).
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        now_unix_ms: u64,
    ) -> Self {
        let mut hints = Self::default();
        let mut retry_after_ms = None;
        for (name, value) in headers {
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "retry-after-ms" => {
                    retry_after_ms = value
                        .parse::<f64>()
                        .ok()
                        .filter(|ms| ms.is_finite() && *ms >= 0.0)
                        .map(|ms| ms.ceil() as Millis);
                }
                "retry-after" => hints.retry_after = retry_after(value, now_unix_ms),
                "x-ratelimit-remaining-requests" | "anthropic-ratelimit-requests-remaining" => {
                    hints.remaining_requests = value.parse().ok();
                }
                "x-ratelimit-remaining-tokens" | "anthropic-ratelimit-tokens-remaining" => {
                    hints.remaining_tokens = value.parse().ok();
                }
                "x-ratelimit-reset-requests" => hints.reset_requests = duration(value),
                "x-ratelimit-reset-tokens" => hints.reset_tokens = duration(value),
                _ => {}
            }
        }
        // The finer of the two wins, as in OpenAI's SDKs.
        if retry_after_ms.is_some() {
            hints.retry_after = retry_after_ms;
        }
        hints
    }
}

/// `Retry-After` as a wait: whole seconds, or an HTTP date (a date in the past is no wait).
fn retry_after(value: &str, now_unix_ms: u64) -> Option<Millis> {
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    let at = http_date(value)?;
    Some(at.saturating_sub(now_unix_ms))
}

/// An IMF-fixdate (`Wed, 21 Oct 2015 07:28:00 GMT`) as Unix milliseconds.
fn http_date(value: &str) -> Option<u64> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_weekday, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let clock: Vec<i64> = time
        .split(':')
        .map(|part| part.parse().ok())
        .collect::<Option<_>>()?;
    let [hours, minutes, seconds] = clock.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *hours > 23 || *minutes > 59 || *seconds > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hours * 3_600 + minutes * 60 + seconds;
    u64::try_from(seconds).ok().map(|s| s * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A duration as OpenAI writes it: `1h2m3.5s`, `6m0s`, `20ms`, `0.5s`.
fn duration(value: &str) -> Option<Millis> {
    let mut total = 0.0;
    let mut rest = value;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&end| end > 0)?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, scale) = [
            ("ms", 1.0),
            ("h", 3_600_000.0),
            ("m", 60_000.0),
            ("s", 1_000.0),
        ]
        .into_iter()
        .find(|(unit, _)| rest.starts_with(unit))?;
        total += number * scale;
        rest = &rest[unit.len()..];
    }
    Some(total.ceil() as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_as_a_date_and_in_milliseconds() {
        let hints = ServerHints::from_headers([("Retry-After", "7")], 0);
        assert_eq!(hints.retry_after, Some(7_000));
        // 2015-10-21 07:28:00 UTC is 1445412480 s since the epoch.
        let now = 1_445_412_470_000;
        let hints =
            ServerHints::from_headers([("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], now);
        assert_eq!(hints.retry_after, Some(10_000));
        // A date in the past: no wait.
        let later = ServerHints::from_headers(
            [("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")],
            now + 60_000,
        );
        assert_eq!(later.retry_after, Some(0));
        // retry-after-ms is finer and wins, in whichever order.
        let both =
            ServerHints::from_headers([("retry-after-ms", "1250.5"), ("Retry-After", "2")], 0);
        assert_eq!(both.retry_after, Some(1_251));
        // Nonsense is ignored.
        let bad = ServerHints::from_headers([("Retry-After", "soon"), ("retry-after-ms", "-3")], 0);
        assert_eq!(bad.retry_after, None);
    }

    #[test]
    fn rate_limit_headers_of_openai_and_anthropic() {
        let openai = ServerHints::from_headers(
            [
                ("x-ratelimit-remaining-requests", "59"),
                ("x-ratelimit-remaining-tokens", "149984"),
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-reset-tokens", "6m0s"),
            ],
            0,
        );
        assert_eq!(openai.remaining_requests, Some(59));
        assert_eq!(openai.remaining_tokens, Some(149_984));
        assert_eq!(openai.reset_requests, Some(1_000));
        assert_eq!(openai.reset_tokens, Some(360_000));
        let anthropic = ServerHints::from_headers(
            [
                ("anthropic-ratelimit-requests-remaining", "49"),
                ("anthropic-ratelimit-tokens-remaining", "9000"),
            ],
            0,
        );
        assert_eq!(anthropic.remaining_requests, Some(49));
        assert_eq!(anthropic.remaining_tokens, Some(9_000));
    }

    #[test]
    fn durations_as_openai_writes_them() {
        for (text, ms) in [
            ("20ms", 20),
            ("0.5s", 500),
            ("1h2m3.5s", 3_723_500),
            ("6m0s", 360_000),
        ] {
            assert_eq!(duration(text), Some(ms), "{text}");
        }
        for bad in ["", "5", "s", "1x", "1.2.3s"] {
            assert_eq!(duration(bad), None, "{bad}");
        }
    }
}
