//! Aligned text tables and human-friendly times and sizes.

use chrono::{DateTime, Utc};

/// A table with a header row; columns are separated by at least two spaces.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Add a row (missing cells are blank).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Render the table; the last column is not padded.
    pub fn render(&self) -> String {
        let ncols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; ncols];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                line.push_str(cell);
                if i + 1 < ncols {
                    let pad = width - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `t` relative to `now`: `12s ago`, `5m ago`, `in 3h`, `2d ago`.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (past, n) = if secs >= 0 {
        (true, secs)
    } else {
        (false, -secs)
    };
    let amount = if n < 60 {
        format!("{n}s")
    } else if n < 3600 {
        format!("{}m", n / 60)
    } else if n < 86_400 {
        format!("{}h", n / 3600)
    } else {
        format!("{}d", n / 86_400)
    };
    if past {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// An optional time relative to now, `-` when absent.
pub fn relative_opt(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map(|t| relative(t, now))
        .unwrap_or_else(|| "-".to_owned())
}

/// A byte count: `512B`, `1.5KiB`, `20.0MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn aligned() {
        let mut t = Table::new(&["ID", "STATE", "CREATED"]);
        t.row(vec!["sb-1".into(), "running".into(), "5s ago".into()]);
        t.row(vec!["sb-12345".into(), "paused".into(), "".into()]);
        assert_eq!(
            t.render(),
            "ID        STATE    CREATED\n\
             sb-1      running  5s ago\n\
             sb-12345  paused\n"
        );
    }

    #[test]
    fn empty_and_short_rows() {
        let t = Table::new(&["A", "B"]);
        assert_eq!(t.render(), "A  B\n");
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["long-value".into()]);
        assert_eq!(t.render(), "A           B\nlong-value\n");
    }

    #[test]
    fn times() {
        let now = Utc.with_ymd_and_hms(2025, 1, 2, 12, 0, 0).unwrap();
        let ago = |s: i64| relative(now - chrono::Duration::seconds(s), now);
        assert_eq!(ago(5), "5s ago");
        assert_eq!(ago(125), "2m ago");
        assert_eq!(ago(7200), "2h ago");
        assert_eq!(ago(3 * 86_400), "3d ago");
        assert_eq!(ago(-300), "in 5m");
        assert_eq!(relative_opt(None, now), "-");
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(1023), "1023B");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(20 * 1024 * 1024), "20.0MiB");
    }
}
