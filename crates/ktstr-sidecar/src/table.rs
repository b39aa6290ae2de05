//! Plain-text tables for every text renderer (`stats list`/`show`, `stats metrics`, the
//! comparison report): left-aligned columns two spaces apart, no trailing spaces.

/// The header and rows as aligned lines. `colors[i]`, when given, wraps the last cell of
/// row `i` in that escape sequence and a reset (after padding, so alignment holds).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>], colors: &[Option<&str>]) -> String {
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
pub(crate) const RESET: &str = "\x1b[0m";
