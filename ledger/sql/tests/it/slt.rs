//! Runs `tests/queries.slt`, a sqllogictest-style file of queries and their
//! expected answers over the fixture.
//!
//! Format: records separated by blank lines; `#` starts a comment line.
//!
//! ```text
//! query
//! SELECT ...            (one or more lines)
//! ----
//! a | b                 (expected rows: values joined by " | ", NULL for null)
//!
//! error read_only       (the expected error code)
//! INSERT ...
//! ```

use pyralog_sql::{Limits, ScanCache, query, query_cached};
use serde_json::Value;

use crate::fixture::FIXTURE;

#[derive(Debug)]
enum Expect {
    Rows(Vec<String>),
    Error(String),
}

#[derive(Debug)]
struct Case {
    line: usize,
    sql: String,
    expect: Expect,
}

fn parse(text: &str) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut sql = Vec::new();
        let mut in_result = false;
        let mut result = Vec::new();
        while let Some((_, l)) = lines.peek() {
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            lines.next();
            if l == "----" {
                in_result = true;
            } else if in_result {
                result.push(l.to_owned());
            } else {
                sql.push(l.to_owned());
            }
        }
        let expect = if line == "query" {
            if !in_result {
                return Err(format!("line {}: a query without ----", n + 1));
            }
            Expect::Rows(result)
        } else if let Some(code) = line.strip_prefix("error ") {
            Expect::Error(code.trim().to_owned())
        } else {
            return Err(format!(
                "line {}: expected `query` or `error CODE`, got {line:?}",
                n + 1
            ));
        };
        cases.push(Case {
            line: n + 1,
            sql: sql.join("\n"),
            expect,
        });
    }
    Ok(cases)
}

fn render(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn the_harness_reads_its_format() {
    let cases =
        parse("# c\nquery\nSELECT 1\n----\n1\n\nerror read_only\nDROP TABLE x\n").expect("parse");
    assert_eq!(cases.len(), 2);
    assert!(matches!(&cases[0].expect, Expect::Rows(r) if r == &["1"]));
    assert!(matches!(&cases[1].expect, Expect::Error(c) if c == "read_only"));
    assert!(parse("query\nSELECT 1\n").is_err());
    assert!(parse("frobnicate\nSELECT 1\n").is_err());
}

#[test]
fn queries_slt() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/queries.slt");
    let text = std::fs::read_to_string(path).expect("read queries.slt");
    let cases = parse(&text).expect("parse queries.slt");
    assert!(cases.len() >= 20, "only {} cases", cases.len());
    let mut failures = Vec::new();
    // Every case twice: read from storage, then through a column cache that
    // the cases before it filled (so its answers must not depend on what a
    // segment was first cached for).
    let shared = std::sync::Arc::new(ScanCache::new(64 << 20));
    let passes = cases
        .iter()
        .map(|c| (c, None))
        .chain(cases.iter().map(|c| (c, Some(shared.clone()))));
    for (c, cache) in passes {
        let pass = if cache.is_some() { "cached" } else { "storage" };
        let got = match cache {
            Some(cache) => query_cached(
                FIXTURE.scan_snapshot(),
                &c.sql,
                &Limits::default(),
                Some(cache),
            ),
            None => query(FIXTURE.snapshot(), &c.sql, &Limits::default()),
        };
        match (&c.expect, got) {
            (Expect::Rows(want), Ok(a)) => {
                let j = a.to_json().expect("json");
                let got: Vec<String> = j["rows"]
                    .as_array()
                    .map(|rows| {
                        rows.iter()
                            .map(|r| {
                                r.as_array()
                                    .map(|vs| vs.iter().map(render).collect::<Vec<_>>().join(" | "))
                                    .unwrap_or_default()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if &got != want {
                    failures.push(format!(
                        "line {} ({pass}): {}\nwant:\n{}\ngot:\n{}",
                        c.line,
                        c.sql,
                        want.join("\n"),
                        got.join("\n")
                    ));
                }
            }
            (Expect::Error(code), Err(e)) if e.code() == code => {}
            (want, got) => failures.push(format!(
                "line {} ({pass}): {}\nwant {want:?}, got {:?}",
                c.line,
                c.sql,
                got.map(|a| a.num_rows()).map_err(|e| e.to_string())
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The cached pass did answer from the cache.
    let stats = shared.stats();
    assert!(stats.hits > 0 && stats.segments > 0, "{stats:?}");
}
