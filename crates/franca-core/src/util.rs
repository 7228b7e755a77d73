//! Small helpers shared by modules.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// XEP-0082 date-time (UTC, `YYYY-MM-DDThh:mm:ss[.sss]Z`) from microseconds since the epoch.
pub fn xep0082_datetime(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    if micros == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!(
            "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:03}Z",
            micros / 1000
        )
    }
}

/// Microseconds since the epoch from an XEP-0082 date-time (`YYYY-MM-DDThh:mm:ss[.s+]` then
/// `Z` or `±hh:mm`), as found in XEP-0203 delay stamps and XEP-0227 exports. `None` for anything
/// else: the format is fixed, so nothing lenient is attempted.
pub fn parse_xep0082_datetime(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let sep = |at: usize, c: u8| b.get(at) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut at = 19;
    let mut micros = 0;
    if sep(at, b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 6 {
                micros = micros * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return None;
        }
        for _ in (at - start)..6 {
            micros *= 10;
        }
    }
    let offset = match b.get(at) {
        Some(b'Z') if at + 1 == b.len() => 0,
        Some(&c @ (b'+' | b'-')) if at + 6 == b.len() && sep(at + 3, b':') => {
            let (oh, om) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if c == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(secs * 1_000_000 + micros)
}

/// (year, month, day) to days since 1970-01-01: the inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's civil-from-days algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xep0082_formats_known_instants() {
        assert_eq!(xep0082_datetime(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            xep0082_datetime(1_700_000_000_123_000),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            xep0082_datetime(951_782_400_000_000),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn xep0082_parses_what_it_formats_and_offsets() {
        for us in [
            0,
            1_700_000_000_123_000,
            951_782_400_000_000,
            -86_400_000_000,
        ] {
            assert_eq!(parse_xep0082_datetime(&xep0082_datetime(us)), Some(us));
        }
        assert_eq!(
            parse_xep0082_datetime("2023-11-14T23:13:20.123456+01:00"),
            Some(1_700_000_000_123_456)
        );
        assert_eq!(
            parse_xep0082_datetime("2023-11-14T21:43:20-00:30"),
            Some(1_700_000_000_000_000)
        );
        // Fractions beyond microseconds are cut, not rounded.
        assert_eq!(
            parse_xep0082_datetime("1970-01-01T00:00:00.0000019Z"),
            Some(1)
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-13-14T22:13:20Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20Zjunk",
            "2023-11-14T22:13:20+0100",
            "２023-11-14T22:13:20Z",
            "2023-11-14 22:13:20Z",
        ] {
            assert_eq!(parse_xep0082_datetime(bad), None, "{bad:?}");
        }
    }
}
