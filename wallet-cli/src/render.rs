//! Printing a `POST /query` answer (`{height, state_root, columns, rows}`)
//! as an aligned text table or as CSV.
//!
//! The wallet renders the node's JSON answer rather than decoding Arrow
//! itself, so it does not link DataFusion or arrow (ADR 0008); Arrow output
//! is the node's IPC stream passed through unchanged.

use serde_json::Value;

/// The column names of an answer.
fn columns(answer: &Value) -> Vec<String> {
    answer["columns"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| c["name"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn rows(answer: &Value) -> Vec<Vec<String>> {
    answer["rows"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    r.as_array()
                        .map(|vs| vs.iter().map(cell).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The answer as an aligned table with a header, then a line naming the row
/// count and the snapshot (height, state root) it was read at.
pub fn table(answer: &Value) -> String {
    let head = columns(answer);
    let body = rows(answer);
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in &body {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join(" | ").trim_end().to_owned()
    };
    let mut out = String::new();
    out.push_str(&line(&head));
    out.push('\n');
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("-+-"));
    out.push('\n');
    for r in &body {
        out.push_str(&line(r));
        out.push('\n');
    }
    let n = body.len();
    out.push_str(&format!(
        "({n} row{}; height {}, state root {})",
        if n == 1 { "" } else { "s" },
        answer["height"],
        answer["state_root"].as_str().unwrap_or("?")
    ));
    out
}

/// The answer as CSV (RFC 4180): a header line, then one line per row; NULL
/// is an empty field.
pub fn csv(answer: &Value) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    }
    let mut out = String::new();
    let head: Vec<String> = columns(answer).iter().map(|c| field(c)).collect();
    out.push_str(&head.join(","));
    out.push_str("\r\n");
    for r in answer["rows"].as_array().into_iter().flatten() {
        let cells: Vec<String> = r
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| match v {
                Value::Null => String::new(),
                other => field(&cell(other)),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer() -> Value {
        json!({
            "height": 7, "state_root": "ab",
            "columns": [{"name": "address", "type": "Utf8"}, {"name": "balance", "type": "UInt64"}],
            "rows": [["pyrA", 10], ["a \"b\", c", null]],
        })
    }

    #[test]
    fn a_table_is_aligned_and_names_its_snapshot() {
        let t = table(&answer());
        assert_eq!(
            t,
            "address  | balance\n---------+--------\npyrA     | 10\na \"b\", c | NULL\n(2 rows; height 7, state root ab)"
        );
    }

    #[test]
    fn csv_quotes_what_needs_it_and_leaves_null_empty() {
        assert_eq!(
            csv(&answer()),
            "address,balance\r\npyrA,10\r\n\"a \"\"b\"\", c\",\r\n"
        );
    }

    #[test]
    fn an_empty_answer_still_has_its_header() {
        let a = json!({"height": 1, "state_root": "x", "columns": [{"name": "n", "type": "Int64"}], "rows": []});
        assert_eq!(csv(&a), "n\r\n");
        assert!(table(&a).ends_with("(0 rows; height 1, state root x)"));
    }
}
