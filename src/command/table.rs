//! Terminal tables for the commands: columns as wide as their widest cell, the last one unpadded.

/// Prints `rows` under `headers`; a column listed in `right` is aligned right (numbers).
pub fn print(headers: &[&str], rows: &[Vec<String>], right: &[usize]) {
    print!("{}", render(headers, rows, right));
}

pub fn render(headers: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    // Cells can hold what a receiver answered: control characters (a terminal's escape
    // sequences, newlines) are shown escaped, never sent to the terminal.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| printable(c)).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths.get(i).copied().unwrap_or(0);
            let cell = if i == last && !right.contains(&i) {
                cell.clone()
            } else if right.contains(&i) {
                format!("{cell:>pad$}")
            } else {
                format!("{cell:<pad$}")
            };
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(&cell);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `text` with control characters and bidirectional overrides escaped (`\u{1b}`, `\u{202e}`),
/// for a terminal.
pub fn printable(text: &str) -> String {
    let hidden = |c: char| {
        c.is_control()
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if !text.chars().any(hidden) {
        return text.to_string();
    }
    text.chars()
        .map(|c| match hidden(c) {
            true => c.escape_unicode().to_string(),
            false => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_never_reach_the_terminal() {
        let rows = vec![vec!["a".to_string(), "\u{1b}[2Jgone\nline".to_string()]];
        let out = super::render(&["X", "Y"], &rows, &[]);
        assert!(
            !out.contains('\u{1b}') && out.lines().count() == 2,
            "{out:?}"
        );
        assert!(out.contains("\\u{1b}[2Jgone\\u{a}line"), "{out:?}");
        assert_eq!(super::printable("a\u{202e}b"), "a\\u{202e}b");
    }

    #[test]
    fn columns_line_up() {
        let rows = vec![
            vec![
                "hook".to_string(),
                "12".into(),
                "POST https://x/***: 503".into(),
            ],
            vec!["a-long-name".to_string(), "3".into(), "".into()],
        ];
        assert_eq!(
            super::render(&["SINK", "N", "LAST ERROR"], &rows, &[1]),
            "SINK          N  LAST ERROR\nhook         12  POST https://x/***: 503\na-long-name   3\n"
        );
    }
}
