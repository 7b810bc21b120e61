//! Two kinds of question the model is not taught to answer in one query, answered by composing
//! the query it writes for the plain question it is taught:
//!
//! - a change between two periods ("各大区2020年销售额比2019年增长了百分之多少", "By what
//!   percentage did sales grow from 2018 to 2020?"): the model's query for the later period
//!   ([`crate::period::asked`] puts only that one in its prompt) is run again for the earlier
//!   one, the two joined on their group columns, and the change computed in percent;
//! - groups whose figure passes a number the question gives ("2020年订单数超过300单的省份",
//!   "Which cities sold more than 2 million yuan in 2020?"): the model's grouped query,
//!   filtered on its figure.
//!
//! Why: taught by example, the built-in model learnt neither. Ten growth and nine threshold
//! examples in the teaching set (in place of 35 template examples, the same fine-tune time)
//! left every taught growth question without a query (the model, held to both periods, wrote
//! the rest of the query into its select list) and every threshold question unfiltered, and cost
//! 5 of the 45 evaluation questions (2026-12-01). The model already writes the plain question's
//! query well; the arithmetic around it is fixed, so the pipeline writes it. The composed SQL is
//! the one shown and run, under the same guard.

use crate::exec::Rows;
use crate::period::{self, Period};
use regex::Regex;
use std::sync::LazyLock;

/// What the pipeline adds to the model's query for a question.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The change from `earlier` to `later`, in percent; with `values`, both periods' figures
    /// beside it (the question asks how much, not only by what percentage).
    Change {
        /// The period compared with.
        earlier: Period,
        /// The period whose change is asked.
        later: Period,
        /// Whether to list both periods' figures too.
        values: bool,
    },
    /// Only the groups whose figure is `op` (`>`, `>=`, `<`) `value`.
    Threshold {
        /// The comparison.
        op: &'static str,
        /// The number, as SQL writes it.
        value: String,
    },
}

/// Words that ask for the change as a percentage only.
static PERCENT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)百分|%|％|增长率|增速|增幅|涨幅|降幅|\bpercent(age)?\b|\brate\b").expect("valid pattern"));

/// Words that compare a figure with a number, and the comparison each means: checked in this
/// order, so "不少于" is not read as "少于".
static COMPARISONS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"(?i)不少于|不低于|不小于|至少|以上|\bat least\b|\bor more\b", ">="),
        (r"(?i)超过|大于|高于|多于|\bmore than\b|\bover\b|\babove\b|\bexceed(s|ed|ing)?\b|\bgreater than\b", ">"),
        (r"(?i)低于|少于|小于|不到|不足|以下|\bless than\b|\bfewer than\b|\bunder\b|\bbelow\b", "<"),
    ]
    .into_iter()
    .map(|(p, op)| (Regex::new(p).expect("valid pattern"), op))
    .collect()
});

/// What the pipeline composes around the model's query for `question`, if anything.
pub fn plan(question: &str) -> Option<Plan> {
    if let Some((earlier, later)) = period::compared(question) {
        return Some(Plan::Change { earlier, later, values: !PERCENT.is_match(question) });
    }
    let [value] = &crate::cues::amounts(question)[..] else { return None };
    let op = COMPARISONS.iter().find(|(re, _)| re.is_match(question)).map(|(_, op)| *op)?;
    Some(Plan::Threshold { op, value: value.clone() })
}

/// The ways the teaching data writes period `p` in a query.
fn forms(p: Period) -> Vec<String> {
    match p {
        Period::Year(y) => vec![format!("BETWEEN '{y}-01' AND '{y}-12'"), format!(",1,4)='{y}'"), format!(", 1, 4) = '{y}'")],
        Period::Month(y, m) => vec![format!("='{y}-{m:02}'"), format!("= '{y}-{m:02}'"), format!("BETWEEN '{y}-{m:02}' AND '{y}-{m:02}'")],
        Period::Range((y1, m1), (y2, m2)) => vec![format!("BETWEEN '{y1}-{m1:02}' AND '{y2}-{m2:02}'")],
    }
}

/// `sql` with period `from` written as `to`; `None` when `sql` does not name `from` the way the
/// teaching data does, or the two periods are not written alike.
fn swap_period(sql: &str, from: Period, to: Period) -> Option<String> {
    let (a, b) = (forms(from), forms(to));
    if a.len() != b.len() {
        return None;
    }
    let mut out = sql.to_string();
    for (f, t) in a.iter().zip(&b) {
        out = out.replace(f, t);
    }
    (out != sql).then_some(out)
}

/// A period as part of a column name: `2019`, `2019_03`, `2019_01_06`.
fn label(p: Period) -> String {
    match p {
        Period::Year(y) => y.to_string(),
        Period::Month(y, m) => format!("{y}_{m:02}"),
        Period::Range((y1, m1), (y2, m2)) if y1 == y2 => format!("{y1}_{m1:02}_{m2:02}"),
        Period::Range((y1, m1), (y2, m2)) => format!("{y1}_{m1:02}_{y2}_{m2:02}"),
    }
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether column `i` of `rows` holds dates or months (a series over time, whose rows the two
/// periods do not share).
fn holds_time(rows: &Rows, i: usize) -> bool {
    static DATE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[0-9]{4}-[0-9]{2}").expect("valid pattern"));
    rows.rows.iter().any(|r| r.get(i).and_then(|v| v.as_str()).is_some_and(|s| DATE.is_match(s)))
}

/// What a composed query shows: its SQL, and the chart it takes (a kind, x, y), or `None` to
/// keep the model's chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Composed {
    /// The query.
    pub sql: String,
    /// Its chart's kind, x and y; `None`: the model's.
    pub chart: Option<(crate::chart::ChartType, Option<String>, String)>,
}

impl Plan {
    /// The query around `sql` (the model's, as guarded), whose result was `rows`; `None` where
    /// the plan does not apply to it (no figure to compare, a series over time, the period or the
    /// number already written by the model), so the model's answer stands.
    pub fn apply(&self, sql: &str, rows: &Rows) -> Option<Composed> {
        let (last, keys) = rows.columns.split_last()?;
        let m = quoted(last);
        let numeric = rows.rows.iter().all(|r| r.last().is_some_and(|v| v.is_number() || v.is_null()));
        if !numeric || rows.rows.is_empty() {
            return None;
        }
        match self {
            Plan::Change { earlier, later, values } => {
                // A query that names the earlier period already compares them itself.
                if (0..keys.len()).any(|i| holds_time(rows, i)) || forms(*earlier).iter().any(|f| sql.contains(f.as_str())) {
                    return None;
                }
                let before = swap_period(sql, *later, *earlier)?;
                let (le, ll) = (label(*earlier), label(*later));
                let mut select: Vec<String> = keys.iter().map(|k| format!("a.{}", quoted(k))).collect();
                if *values {
                    select.push(format!("b.{m} AS {}", quoted(&format!("{last}_{le}"))));
                    select.push(format!("a.{m} AS {}", quoted(&format!("{last}_{ll}"))));
                }
                select.push(format!("ROUND((a.{m} - b.{m}) * 100.0 / b.{m}, 2) AS growth"));
                let on = if keys.is_empty() { "1=1".to_string() } else { keys.iter().map(|k| format!("a.{q} = b.{q}", q = quoted(k))).collect::<Vec<_>>().join(" AND ") };
                let order = if keys.is_empty() { "" } else { " ORDER BY growth DESC" };
                let composed = format!("SELECT {} FROM ({sql}) a JOIN ({before}) b ON {on}{order}", select.join(", "));
                let chart = match (keys, values) {
                    ([k], _) => (crate::chart::ChartType::Bar, Some(k.clone())),
                    ([], false) => (crate::chart::ChartType::Number, None),
                    _ => (crate::chart::ChartType::Table, None),
                };
                Some(Composed { sql: composed, chart: Some((chart.0, chart.1, "growth".into())) })
            }
            Plan::Threshold { op, value } => {
                // Only groups, and only where the model did not compare with the number itself.
                if keys.is_empty() || sql.contains(value.as_str()) {
                    return None;
                }
                Some(Composed { sql: format!("SELECT * FROM ({sql}) WHERE {m} {op} {value}"), chart: None })
            }
        }
    }
}

/// Aggregate functions, by their upper-case names.
const AGGREGATES: &[&str] = &["SUM", "COUNT", "AVG", "MIN", "MAX", "TOTAL"];

/// `sql` (already guarded) without its `GROUP BY` where every item it selects is an aggregate,
/// so one total is asked for: `SELECT ROUND(SUM(amount),2) AS amount FROM sales WHERE ...
/// GROUP BY amount` groups by the raw column its alias shadows, and answers hundreds of sums of
/// one order each. `None` where there is nothing to take out.
///
/// Why: the model wrote that for "By what percentage did total sales amount grow from 2018 to
/// 2020?" (fresh8) and "2020年12月的全国销售额比11月..." (fresh11); the shape cannot tell an
/// aggregate's alias from a column in `GROUP BY`.
pub fn ungroup_totals(dialect: crate::exec::Dialect, sql: &str) -> Option<String> {
    use sqlparser::ast::{visit_expressions, Expr, GroupByExpr, SelectItem, SetExpr, Statement};
    use std::ops::ControlFlow;
    let parsed = match dialect {
        crate::exec::Dialect::Sqlite => sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::SQLiteDialect {}, sql),
        crate::exec::Dialect::Postgres => sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql),
    };
    let mut stmts = parsed.ok()?;
    let [Statement::Query(q)] = &mut stmts[..] else { return None };
    let SetExpr::Select(select) = q.body.as_mut() else { return None };
    let GroupByExpr::Expressions(items, modifiers) = &select.group_by else { return None };
    if items.is_empty() || !modifiers.is_empty() || select.having.is_some() {
        return None;
    }
    let aggregate = |e: &Expr| {
        visit_expressions(e, |x| match x {
            Expr::Function(f) if AGGREGATES.contains(&f.name.to_string().to_ascii_uppercase().as_str()) => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        })
        .is_break()
    };
    let all = select.projection.iter().all(|item| match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => aggregate(e),
        _ => false,
    });
    if !all {
        return None;
    }
    select.group_by = GroupByExpr::Expressions(vec![], vec![]);
    Some(stmts[0].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(columns: &[&str], rows: Vec<Vec<serde_json::Value>>) -> Rows {
        Rows { columns: columns.iter().map(|c| c.to_string()).collect(), rows }
    }

    #[test]
    fn plans_for_changes_and_thresholds() {
        assert_eq!(plan("各大区2020年销售额比2019年增长了百分之多少"), Some(Plan::Change { earlier: Period::Year(2019), later: Period::Year(2020), values: false }));
        assert_eq!(plan("华南地区各省份2020年的销售额同比增长了多少？"), Some(Plan::Change { earlier: Period::Year(2019), later: Period::Year(2020), values: true }));
        assert_eq!(plan("2020年订单数超过300单的省份有哪些"), Some(Plan::Threshold { op: ">", value: "300".into() }));
        assert_eq!(plan("Which cities sold more than 2 million yuan in 2020?"), Some(Plan::Threshold { op: ">", value: "2000000".into() }));
        assert_eq!(plan("2019年销售额不少于150万的城市"), Some(Plan::Threshold { op: ">=", value: "1500000".into() }));
        assert_eq!(plan("Provinces with fewer than 200 orders in 2019"), Some(Plan::Threshold { op: "<", value: "200".into() }));
        // A top-n, a period and a plain question are none of these.
        assert_eq!(plan("2020年销售额最高的5个城市"), None);
        assert_eq!(plan("华北地区2019年3-5月的销售额,用折线图来表示"), None);
        assert_eq!(plan("2019年和2020年各大区的销售额"), None);
    }

    #[test]
    fn a_change_runs_the_query_for_both_periods_and_joins_them() {
        let sql = "SELECT region, ROUND(SUM(amount),2) AS amount FROM sales WHERE substr(order_date,1,7) BETWEEN '2020-01' AND '2020-12' GROUP BY region LIMIT 1000";
        let got = rows(&["region", "amount"], vec![vec![json!("华北"), json!(10.0)]]);
        let p = Plan::Change { earlier: Period::Year(2019), later: Period::Year(2020), values: true };
        let c = p.apply(sql, &got).unwrap();
        assert_eq!(
            c.sql,
            "SELECT a.\"region\", b.\"amount\" AS \"amount_2019\", a.\"amount\" AS \"amount_2020\", ROUND((a.\"amount\" - b.\"amount\") * 100.0 / b.\"amount\", 2) AS growth \
             FROM (SELECT region, ROUND(SUM(amount),2) AS amount FROM sales WHERE substr(order_date,1,7) BETWEEN '2020-01' AND '2020-12' GROUP BY region LIMIT 1000) a \
             JOIN (SELECT region, ROUND(SUM(amount),2) AS amount FROM sales WHERE substr(order_date,1,7) BETWEEN '2019-01' AND '2019-12' GROUP BY region LIMIT 1000) b ON a.\"region\" = b.\"region\" ORDER BY growth DESC"
        );
        assert_eq!(c.chart, Some((crate::chart::ChartType::Bar, Some("region".into()), "growth".into())));
        // A total: one number when only the percentage is asked for.
        let total = "SELECT ROUND(SUM(amount),2) AS amount FROM sales WHERE substr(order_date,1,7) BETWEEN '2020-01' AND '2020-06'";
        let h = |y| Period::Range((y, 1), (y, 6));
        let c = Plan::Change { earlier: h(2019), later: h(2020), values: false }.apply(total, &rows(&["amount"], vec![vec![json!(5.0)]])).unwrap();
        assert!(c.sql.contains("BETWEEN '2019-01' AND '2019-06') b ON 1=1") && !c.sql.contains("ORDER BY"), "{}", c.sql);
        assert_eq!(c.chart, Some((crate::chart::ChartType::Number, None, "growth".into())));
        // Not where the query names another period, or is a series over time.
        assert_eq!(p.apply(&sql.replace("2020-01", "2020-02"), &got), None);
        let monthly = rows(&["month", "amount"], vec![vec![json!("2020-01"), json!(1.0)]]);
        assert_eq!(p.apply(sql, &monthly), None);
        // Nor where it compares the two periods itself.
        let both = "SELECT region, ROUND((SUM(CASE WHEN substr(order_date,1,4)='2020' THEN amount END)-SUM(CASE WHEN substr(order_date,1,4)='2019' THEN amount END))*100.0/SUM(CASE WHEN substr(order_date,1,4)='2019' THEN amount END),2) AS growth FROM sales GROUP BY region";
        assert_eq!(p.apply(both, &got), None);
    }

    #[test]
    fn a_total_grouped_by_its_own_figure_is_one_total() {
        use crate::exec::Dialect::Sqlite;
        let got =
            ungroup_totals(Sqlite, "SELECT ROUND(SUM(amount),2) AS amount FROM sales WHERE substr(order_date,1,7) BETWEEN '2020-12' AND '2020-12' GROUP BY amount ORDER BY amount DESC LIMIT 1000");
        assert_eq!(got.as_deref(), Some("SELECT ROUND(SUM(amount), 2) AS amount FROM sales WHERE substr(order_date, 1, 7) BETWEEN '2020-12' AND '2020-12' ORDER BY amount DESC LIMIT 1000"));
        // Groups named in the select list, and totals without GROUP BY, stay as they are.
        assert_eq!(ungroup_totals(Sqlite, "SELECT region, SUM(amount) AS amount FROM sales GROUP BY region"), None);
        assert_eq!(ungroup_totals(Sqlite, "SELECT substr(order_date,1,7) AS month, COUNT(*) FROM sales GROUP BY month"), None);
        assert_eq!(ungroup_totals(Sqlite, "SELECT SUM(amount) FROM sales"), None);
    }

    #[test]
    fn a_threshold_filters_the_groups_on_their_figure() {
        let sql = "SELECT province, COUNT(*) AS orders FROM sales GROUP BY province ORDER BY orders DESC LIMIT 1000";
        let got = rows(&["province", "orders"], vec![vec![json!("广东"), json!(400)]]);
        let p = Plan::Threshold { op: ">", value: "300".into() };
        assert_eq!(p.apply(sql, &got).unwrap().sql, format!("SELECT * FROM ({sql}) WHERE \"orders\" > 300"));
        // Not a total, nor a query that already compares with the number.
        assert_eq!(p.apply("SELECT COUNT(*) AS orders FROM sales", &rows(&["orders"], vec![vec![json!(9)]])), None);
        assert_eq!(p.apply("SELECT province, COUNT(*) AS orders FROM sales GROUP BY province HAVING COUNT(*)>300", &got), None);
    }
}
