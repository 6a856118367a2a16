//! The one table `make bench` prints: plain text, fixed columns, section rows between.

pub const HEADERS: [&str; 6] = ["measurement", "result", "baseline", "ratio / delta", "target", "status"];

#[derive(Default)]
pub struct Table {
    rows: Vec<Row>,
}

enum Row {
    Section(String),
    /// Column titles of the rows that follow, where they differ from [`HEADERS`].
    Header([String; 6]),
    Cells([String; 6]),
}

impl Table {
    pub fn section(&mut self, title: impl Into<String>) {
        self.rows.push(Row::Section(title.into()));
    }

    pub fn row(&mut self, cells: [String; 6]) {
        self.rows.push(Row::Cells(cells));
    }

    pub fn header(&mut self, cells: [String; 6]) {
        self.rows.push(Row::Header(cells));
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn append(&mut self, other: Table) {
        self.rows.extend(other.rows);
    }

    pub fn render(&self) -> String {
        let mut widths = HEADERS.map(|h| h.chars().count());
        for row in &self.rows {
            if let Row::Cells(cells) | Row::Header(cells) = row {
                for (w, c) in widths.iter_mut().zip(cells) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let total: usize = widths.iter().sum::<usize>() + 3 * widths.len() + 1;
        let rule = format!("+{}+", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+"));
        let line = |cells: &[String]| {
            let parts: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!(" {c:<w$} ")).collect();
            format!("|{}|", parts.join("|"))
        };
        let mut out = vec![rule.clone(), line(&HEADERS.map(str::to_owned)), rule.clone()];
        for row in &self.rows {
            match row {
                Row::Section(title) => {
                    if out.last() != Some(&rule) {
                        out.push(rule.clone());
                    }
                    let inner = total - 4;
                    for piece in wrap(title, inner) {
                        out.push(format!("| {piece:<inner$} |"));
                    }
                    out.push(rule.clone());
                }
                Row::Header(cells) => {
                    out.push(line(cells));
                    out.push(rule.clone());
                }
                Row::Cells(cells) => out.push(line(cells)),
            }
        }
        out.push(rule);
        out.join("\n")
    }
}

/// Splits `text` into lines of at most `width` characters, at spaces where possible.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_aligned_columns() {
        let mut t = Table::default();
        t.section("1. latency, with a section title long enough that it has to be wrapped");
        t.header(["x".into(), "y".into(), "z".into(), "a longer title".into(), "".into(), "".into()]);
        t.row(["a".into(), "bb".into(), "c".into(), "d".into(), "e".into(), "f".into()]);
        let text = t.render();
        let widths: Vec<usize> = text.lines().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{text}");
    }
}
