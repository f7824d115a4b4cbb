//! Plain-text tables with aligned columns, for list commands.

pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        // A line break inside a cell would tear the table apart.
        let cells = cells
            .into_iter()
            .map(|c| c.replace(['\r', '\n'], " "))
            .collect();
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| display_width(h)).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(display_width(cell));
            }
        }
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = width.saturating_sub(display_width(cell));
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Columns a terminal gives the text (unicode-width): East Asian wide characters take two and
/// combining marks none, which matters because brand and account names are often Chinese,
/// Japanese or Thai (whose vowel and tone marks sit on the consonant before them).
fn display_width(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let mut t = Table::new(&["ID", "NAME"]);
        t.row(vec!["tnt_1".into(), "Acme".into()]);
        t.row(vec!["tnt_22".into(), "B".into()]);
        assert_eq!(t.render(), "ID      NAME\ntnt_1   Acme\ntnt_22  B\n");
    }

    #[test]
    fn an_empty_table_shows_its_header() {
        assert_eq!(Table::new(&["ID", "NAME"]).render(), "ID  NAME\n");
    }

    #[test]
    fn line_breaks_inside_cells_become_spaces() {
        let mut t = Table::new(&["A"]);
        t.row(vec!["x\ny".into()]);
        assert_eq!(t.render(), "A\nx y\n");
    }

    #[test]
    fn wide_characters_take_two_columns() {
        let mut t = Table::new(&["N", "X"]);
        t.row(vec!["咖啡".into(), "1".into()]);
        t.row(vec!["ab".into(), "2".into()]);
        assert_eq!(t.render(), "N     X\n咖啡  1\nab    2\n");
    }

    #[test]
    fn thai_vowel_and_tone_marks_take_no_column() {
        let mut t = Table::new(&["N", "X"]);
        // 6 characters, 4 columns: the marks above the consonants take none.
        t.row(vec!["สวัสดี".into(), "1".into()]);
        t.row(vec!["abcd".into(), "2".into()]);
        assert_eq!(t.render(), "N     X\nสวัสดี  1\nabcd  2\n");
    }
}
