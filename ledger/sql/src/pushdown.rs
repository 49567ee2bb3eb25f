//! Reading scan bounds out of the filters DataFusion offers a table.
//!
//! Only simple shapes are understood: `column = literal`, `column IN (...)`,
//! comparisons and `BETWEEN` on a `u64` column, and `AND`s of these. Every
//! pushed filter is declared *inexact*, so DataFusion still applies it to the
//! rows a scan returns: a bound here may read more rows than the filter
//! keeps, never fewer.

use std::collections::BTreeSet;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, expr::InList};

/// The most point lookups one scan makes from `IN` lists (their cross
/// product, for records); beyond it the scan reads everything instead.
pub(crate) const MAX_POINTS: usize = 4096;

/// Whether `e` is a filter this module can turn into a bound on one of
/// `eq_cols` (equality or `IN`) or `range_cols` (comparisons).
pub(crate) fn understood(e: &Expr, eq_cols: &[&str], range_cols: &[&str]) -> bool {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => understood(left, eq_cols, range_cols) || understood(right, eq_cols, range_cols),
        _ => {
            eq_cols.iter().any(|c| equal_values(e, c).is_some())
                || range_cols.iter().any(|c| range_of(e, c).is_some())
        }
    }
}

/// The values `column` must equal under all `filters` (an `AND`), as raw
/// literals; `None` when no filter pins it. An empty set means nothing can
/// match.
pub(crate) fn equal_to(filters: &[Expr], column: &str) -> Option<BTreeSet<Literal>> {
    let mut out: Option<BTreeSet<Literal>> = None;
    for f in conjuncts(filters) {
        if let Some(vals) = equal_values(f, column) {
            out = Some(match out {
                None => vals,
                Some(prev) => prev.intersection(&vals).cloned().collect(),
            });
        }
    }
    out
}

/// The inclusive range `column` (a `u64`) must lie in under all `filters`.
pub(crate) fn range(filters: &[Expr], column: &str) -> (u64, u64) {
    let mut bounds = (0u64, u64::MAX);
    for f in conjuncts(filters) {
        if let Some((lo, hi)) = range_of(f, column) {
            bounds = (bounds.0.max(lo), bounds.1.min(hi));
        }
    }
    bounds
}

/// A literal a bound compares against.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Literal {
    /// A string.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// An integer.
    Int(i128),
}

impl Literal {
    /// The literal's bytes: a string's UTF-8, or the bytes.
    pub(crate) fn bytes(&self) -> Option<&[u8]> {
        match self {
            Literal::Text(s) => Some(s.as_bytes()),
            Literal::Bytes(b) => Some(b),
            Literal::Int(_) => None,
        }
    }

    /// The literal as text.
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            Literal::Text(s) => Some(s),
            Literal::Bytes(b) => std::str::from_utf8(b).ok(),
            Literal::Int(_) => None,
        }
    }
}

fn conjuncts(filters: &[Expr]) -> Vec<&Expr> {
    fn walk<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
        match e {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::And,
                right,
            }) => {
                walk(left, out);
                walk(right, out);
            }
            other => out.push(other),
        }
    }
    let mut out = Vec::new();
    for f in filters {
        walk(f, &mut out);
    }
    out
}

fn is_column(e: &Expr, name: &str) -> bool {
    match e {
        Expr::Column(c) => c.name == name,
        _ => false,
    }
}

fn literal(e: &Expr) -> Option<Literal> {
    let v = match e {
        Expr::Literal(v, _) => v,
        // A cast of a literal that constant folding left in place.
        Expr::Cast(c) => return literal(&c.expr),
        Expr::TryCast(c) => return literal(&c.expr),
        _ => return None,
    };
    Some(match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Literal::Text(s.clone()),
        ScalarValue::Binary(Some(b))
        | ScalarValue::LargeBinary(Some(b))
        | ScalarValue::BinaryView(Some(b))
        | ScalarValue::FixedSizeBinary(_, Some(b)) => Literal::Bytes(b.clone()),
        ScalarValue::Int8(Some(i)) => Literal::Int((*i).into()),
        ScalarValue::Int16(Some(i)) => Literal::Int((*i).into()),
        ScalarValue::Int32(Some(i)) => Literal::Int((*i).into()),
        ScalarValue::Int64(Some(i)) => Literal::Int((*i).into()),
        ScalarValue::UInt8(Some(i)) => Literal::Int((*i).into()),
        ScalarValue::UInt16(Some(i)) => Literal::Int((*i).into()),
        ScalarValue::UInt32(Some(i)) => Literal::Int((*i).into()),
        ScalarValue::UInt64(Some(i)) => Literal::Int((*i).into()),
        _ => return None,
    })
}

fn equal_values(e: &Expr, column: &str) -> Option<BTreeSet<Literal>> {
    match e {
        // The optimizer rewrites a short `IN` list as `c = a OR c = b`.
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let mut l = equal_values(left, column)?;
            l.extend(equal_values(right, column)?);
            (l.len() <= MAX_POINTS).then_some(l)
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            let v = if is_column(left, column) {
                literal(right)?
            } else if is_column(right, column) {
                literal(left)?
            } else {
                return None;
            };
            Some([v].into())
        }
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) if is_column(expr, column) && list.len() <= MAX_POINTS => {
            list.iter().map(literal).collect()
        }
        _ => None,
    }
}

fn to_u64(v: i128) -> u64 {
    v.clamp(0, i128::from(u64::MAX)) as u64
}

fn range_of(e: &Expr, column: &str) -> Option<(u64, u64)> {
    let int = |e: &Expr| match literal(e)? {
        Literal::Int(i) => Some(i),
        _ => None,
    };
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            // Put the column on the left: `5 < h` is `h > 5`.
            let (op, v) = if is_column(left, column) {
                (*op, int(right)?)
            } else if is_column(right, column) {
                (op.swap()?, int(left)?)
            } else {
                return None;
            };
            let empty = (1, 0);
            Some(match op {
                Operator::Eq if v < 0 => empty,
                Operator::Eq => (to_u64(v), to_u64(v)),
                Operator::Gt => (to_u64(v.saturating_add(1)), u64::MAX),
                Operator::GtEq => (to_u64(v), u64::MAX),
                Operator::Lt if v <= 0 => empty,
                Operator::Lt => (0, to_u64(v - 1)),
                Operator::LtEq if v < 0 => empty,
                Operator::LtEq => (0, to_u64(v)),
                _ => return None,
            })
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_column(expr, column) => {
            let (lo, hi) = (int(low)?, int(high)?);
            if hi < 0 || hi < lo {
                Some((1, 0))
            } else {
                Some((to_u64(lo), to_u64(hi)))
            }
        }
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) if is_column(expr, column) => {
            let vals: Option<Vec<i128>> = list.iter().map(int).collect();
            let vals = vals?;
            let lo = vals.iter().copied().min()?;
            let hi = vals.iter().copied().max()?;
            if hi < 0 {
                Some((1, 0))
            } else {
                Some((to_u64(lo), to_u64(hi)))
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn ranges_from_comparisons_and_between() {
        let h = || col("height");
        assert_eq!(range(&[h().gt(lit(5u64))], "height"), (6, u64::MAX));
        assert_eq!(range(&[lit(5u64).lt(h())], "height"), (6, u64::MAX));
        assert_eq!(
            range(&[h().lt_eq(lit(9i64)), h().gt_eq(lit(3i64))], "height"),
            (3, 9)
        );
        assert_eq!(
            range(&[h().between(lit(2u64), lit(4u64))], "height"),
            (2, 4)
        );
        assert_eq!(range(&[h().eq(lit(7u64))], "height"), (7, 7));
        assert_eq!(range(&[h().lt(lit(0i64))], "height"), (1, 0), "empty");
        assert_eq!(range(&[h().gt(lit(-3i64))], "height"), (0, u64::MAX));
        assert_eq!(
            range(&[h().in_list(vec![lit(3u64), lit(8u64)], false)], "height"),
            (3, 8)
        );
        // Not understood: other columns, OR, negation.
        assert_eq!(range(&[col("x").gt(lit(5u64))], "height"), (0, u64::MAX));
        assert_eq!(
            range(&[h().gt(lit(5u64)).or(h().lt(lit(2u64)))], "height"),
            (0, u64::MAX)
        );
        assert!(!understood(&h().not_eq(lit(1u64)), &[], &["height"]));
    }

    #[test]
    fn equalities_intersect() {
        let a = || col("address");
        let got = equal_to(
            &[
                a().in_list(vec![lit("x"), lit("y")], false),
                a().eq(lit("y")),
            ],
            "address",
        );
        assert_eq!(got, Some([Literal::Text("y".into())].into()));
        assert_eq!(
            equal_to(&[a().eq(lit("x")), a().eq(lit("y"))], "address"),
            Some(BTreeSet::new())
        );
        assert_eq!(equal_to(&[col("b").eq(lit("x"))], "address"), None);
        assert!(understood(
            &a().eq(lit("x")).and(col("q").gt(lit(1))),
            &["address"],
            &[]
        ));
        let either = a().eq(lit("x")).or(a().eq(lit("z")));
        assert_eq!(
            equal_to(&[either], "address"),
            Some([Literal::Text("x".into()), Literal::Text("z".into())].into())
        );
        // An OR with another column bounds nothing.
        assert_eq!(
            equal_to(&[a().eq(lit("x")).or(col("b").eq(lit("z")))], "address"),
            None
        );
    }
}
