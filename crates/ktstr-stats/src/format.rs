//! How every renderer (`stats list`/`show`, `stats metrics`, the comparison report) writes
//! numbers ([`num`]) and plain-text tables ([`table`]: left-aligned columns two spaces
//! apart, no trailing spaces). One small module so the metric registry, the detail view
//! and the report share one number format without depending on each other.

/// The header and rows as aligned lines. `colors[i]`, when given, wraps the last cell of
/// row `i` in that escape sequence and a reset (after padding, so alignment holds).
pub fn table(header: &[&str], rows: &[Vec<String>], colors: &[Option<&str>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String], color: Option<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let last = i + 1 == cells.len();
            match (last, color) {
                (true, Some(c)) => {
                    s.push_str(c);
                    s.push_str(cell);
                    s.push_str(RESET);
                }
                _ => s.push_str(cell),
            }
            if !last {
                s.push_str(&" ".repeat(w.saturating_sub(cell.chars().count())));
            }
        }
        s.push('\n');
        s
    };
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = line(&head, None);
    for (i, r) in rows.iter().enumerate() {
        out.push_str(&line(r, colors.get(i).copied().flatten()));
    }
    out
}

/// Ends a colour escape.
pub const RESET: &str = "\x1b[0m";

/// A number in a short, readable form.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        format!("{v}")
    } else if a == 0.0 {
        "0".into()
    } else if v.fract() == 0.0 && a < 1e15 {
        format!("{v:.0}")
    } else if !(1e-3..1e7).contains(&a) {
        format!("{v:.3e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(123456.7), "123457");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(1.2345), "1.23");
        assert_eq!(num(0.12345), "0.1235");
        assert_eq!(num(0.00001), "1.000e-5");
        assert_eq!(num(-25.0), "-25");
        assert_eq!(num(-25.5), "-25.5");
        assert_eq!(num(120_003.0), "120003");
    }
}
