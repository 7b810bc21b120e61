//! Three kinds of question the model is not taught to answer in one query, answered by composing
//! the query it writes for the plain question it is taught:
//!
//! - a change between two periods ("各大区2020年销售额比2019年增长了百分之多少", "By what
//!   percentage did sales grow from 2018 to 2020?"): the model's query for the later period
//!   ([`crate::period::asked`] puts only that one in its prompt) is run again for the earlier
//!   one, the two joined on their group columns, and the change computed in percent;
//! - groups whose figure passes a number the question gives ("2020年订单数超过300单的省份",
//!   "Which cities sold more than 2 million yuan in 2020?"): the model's grouped query,
//!   filtered on its figure;
//! - figures listed side by side ("各渠道的销售额、利润和订单数"): each selected in place of the
//!   model's one.
//!
//! Why: taught by example, the built-in model learnt none of them. Ten growth, nine threshold
//! and eight several-figure examples in the teaching set (in place of 35 template examples, the
//! same fine-tune time) left every taught growth question without a query (the model, held to
//! both periods, wrote the rest of the query into its select list) and every threshold question
//! unfiltered, and cost 5 of the 45 evaluation questions (2026-12-01). The model already writes
//! the plain question's query well; the arithmetic around it is fixed, so the pipeline writes
//! it. The composed SQL is the one shown and run, under the same guard. Composed: fresh8 23 -> 27
//! of 32, fresh10 16 -> 21 of 30, fresh11 11 -> 16 of 32 (docs/BENCHMARKS.md).

use crate::catalog::Catalog;
use crate::exec::Rows;
use crate::period::{self, Period};
use regex::Regex;
use std::sync::LazyLock;

/// What the pipeline adds to the model's query for a question.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The change from `earlier` to `later`, in percent.
    Change {
        /// The period compared with.
        earlier: Period,
        /// The period whose change is asked.
        later: Period,
        /// Whether to list both periods' figures too (the question asks how much, not only by
        /// what percentage).
        values: bool,
        /// How many groups, fastest-growing first (slowest first with `lowest`), where the
        /// question asks for the top n.
        top: Option<u32>,
        /// Whether the question asks for the least growth.
        lowest: bool,
    },
    /// Several figures side by side ("销售额、利润和订单数", "sales and profit"): the model's one
    /// figure replaced by each of these columns of its table (summed; an identifier counted).
    Figures(Vec<String>),
    /// A part's share of the whole, in percent ("上海下半年线上销售额占上海同期总销售额的百分比",
    /// "What percentage of the 2020 sales amount came from the online channel?"): the model's
    /// query for the part, its part's conditions moved from `WHERE` into the figure.
    Share {
        /// The values the words naming the whole name ("上海同期总销售额": 上海; "East China's
        /// sales": 华东): a condition on one of them filters the whole too; the others pick the
        /// part.
        whole: Vec<String>,
        /// Whether the whole is each group's own ("在各大区总销售额里": the part's share within each
        /// group); otherwise a grouped query is not composed ("华东地区各品类销售额占总销售额的比例"
        /// asks each group's share of 华东's total, which is another query).
        per_group: bool,
    },
    /// Along a series over time, each period's change from the one before, in percent
    /// ("2020年每个月华南区的销售额环比增长率"), beside the figure.
    Successive,
    /// Only the groups whose figure is `op` (`>`, `>=`, `<`, `<=`) `value`.
    Threshold {
        /// The comparison.
        op: &'static str,
        /// The number, as SQL writes it.
        value: String,
    },
}

/// Words that ask for the change as a percentage only (not 百分点, percentage points).
static PERCENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)百分(比|之)|%|％|增长率|增速|增幅|涨幅|降幅|幅度|\bpercent(age)?\b|\bgrowth rate\b|\brate of (growth|change|increase|decline)\b").expect("valid pattern"));

/// Words that compare a figure with a number, and the comparison each means: checked in this
/// order, so the negated and inclusive forms ("不超过", "no more than", "不少于") are not read as
/// the plain ones they contain. 以上 / 以下 count only right after a number or its unit ("300万元
/// 以上"; "以下5个城市" is "the following five").
static COMPARISONS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"(?i)不超过|不高于|不大于|不多于|小于等于|至多|[0-9万千元单件笔个]\s*以下|以内|\b(no|not) (more|greater|higher) than\b|\bat most\b|\bor (less|fewer)\b|\bup to\b", "<="),
        (r"(?i)不少于|不低于|不小于|大于等于|至少|[0-9万千元单件笔个]\s*以上|\b(no|not) (less|fewer|lower) than\b|\bat least\b|\bor more\b", ">="),
        (r"(?i)超过|大于|高于|多于|\bmore than\b|\bover\b|\babove\b|\bexceed(s|ed|ing)?\b|\bgreater than\b|\bhigher than\b", ">"),
        (r"(?i)低于|少于|小于|不到|不足|\bless than\b|\bfewer than\b|\bunder\b|\bbelow\b|\blower than\b", "<"),
    ]
    .into_iter()
    .map(|(p, op)| (Regex::new(p).expect("valid pattern"), op))
    .collect()
});

/// What the pipeline composes around the model's query for `question`, if anything.
pub fn plan(catalog: &Catalog, question: &str) -> Option<Plan> {
    if let Some((earlier, later)) = period::compared(question) {
        let (top, lowest) = (period::top_n(question), crate::cues::lowest(question));
        return Some(Plan::Change { earlier, later, values: !PERCENT.is_match(question), top, lowest });
    }
    if period::successive(question) {
        return Some(Plan::Successive);
    }
    // A share past a threshold ("...的比例超过5%的省份") is left to the threshold below.
    if let Some(whole) = share_whole(question).filter(|_| crate::cues::amounts(question).is_empty()) {
        static PER_GROUP: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)各|每|\b(each|every|per|its|their)\b").expect("valid pattern"));
        return Some(Plan::Share { whole: catalog.link(&whole).into_iter().map(|l| l.value).collect(), per_group: PER_GROUP.is_match(&whole) });
    }
    let figures = listed_figures(catalog, question);
    if figures.len() > 1 {
        return Some(Plan::Figures(figures));
    }
    let [value] = &crate::cues::amounts(question)[..] else { return None };
    let op = COMPARISONS.iter().find(|(re, _)| re.is_match(question)).map(|(_, op)| *op)?;
    Some(Plan::Threshold { op, value: value.clone() })
}

/// A part's share of a whole named as such: "占...总/全部/全年/同期...", "在...总销售额里...占",
/// "percentage of ... came from / lost money".
static SHARE_ZH: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"占(.{0,20}?(总|全部|全年|全国|整体|所有|同期|合计).*)$").expect("valid pattern"));
static SHARE_IN_ZH: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"在(.{0,20}?总.{0,10}?)(里|中).{0,10}占").expect("valid pattern"));
static SHARE_EN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(percent(age)?|share|proportion|fraction) of (.{0,60}?)\b(came from|come from|comes from|was from|were from|lost money|lose money|were|was)\b( (each|every|the (various|different)|all)\b)?").expect("valid pattern")
});

/// The words naming the whole of a share the question asks for in percent, if it asks for one
/// ([`Plan::Share`]). Not a share asked for per group without a whole named ("各品类的销售额占比":
/// the groups' own figures, drawn as a pie).
fn share_whole(question: &str) -> Option<String> {
    if !crate::cues::percent_asked(question) {
        return None;
    }
    if let Some(c) = SHARE_IN_ZH.captures(question) {
        return Some(c[1].to_string());
    }
    if let Some(c) = SHARE_ZH.captures(question) {
        return Some(c[1].to_string());
    }
    // "came from each category" asks for every group's share: a pie of their own figures.
    SHARE_EN.captures(question).filter(|c| c.get(5).is_none()).map(|c| c[3].to_string())
}

/// Words between two listed figures: separators, and what qualifies a figure ("sales amount,
/// number of orders and total profit").
static LISTED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)^(\s|、|,|，|和|及|与|以及|\band\b|&|\bamount\b|\bnumber of\b|\btotal\b|\bthe\b|\bcount of\b|总)*$").expect("valid pattern"));

static SEPARATOR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)、|,|，|和|及|与|\band\b|&").expect("valid pattern"));

/// The figure columns (`table.column`) the question lists side by side, in its order: glossary
/// terms for number columns (an identifier: its rows counted) that follow one another with only
/// separators between them. Not terms that name a derived figure or a filter (客单价, order
/// value, 亏损, 赚, 卖得最好).
fn listed_figures(catalog: &Catalog, question: &str) -> Vec<String> {
    let number = |col: &str| {
        let (t, c) = col.split_once('.').unwrap_or(("", col));
        catalog.tables.iter().find(|x| x.name == t).and_then(|x| x.columns.iter().find(|y| y.name == c)).is_some_and(|y| y.is_number())
    };
    let derived = ["价", "value", "亏", "赔", "loss", "lost", "赚", "最好", "多少"];
    let mut at = 0;
    let mut out: Vec<String> = Vec::new();
    let mut run: Vec<String> = Vec::new();
    for (col, word) in catalog.link_columns(question) {
        let Some(i) = question[at..].find(&word).map(|i| i + at) else { continue };
        let plain = number(&col) && !derived.iter().any(|d| word.to_lowercase().contains(d));
        // A separator between, not a compound ("订单金额" is an order's amount).
        let between = &question[at..i];
        let listed = LISTED.is_match(between) && SEPARATOR.is_match(between);
        if plain && (run.is_empty() || listed) {
            run.push(col);
        } else if plain {
            if run.len() > out.len() {
                out = std::mem::take(&mut run);
            }
            run = vec![col];
        }
        at = i + word.len();
    }
    if run.len() > out.len() {
        out = run;
    }
    out
}

/// The ways a query names period `p`: the teaching data's ([`crate::cues::period_literals`]),
/// and those as the guard prints them back (`substr(order_date, 1, 4) = '2019'`).
fn forms(p: Period) -> Vec<String> {
    let plain = crate::cues::period_literals(p);
    let printed: Vec<String> = plain.iter().map(|f| f.replace(",1,4)='", ", 1, 4) = '").replace("='", " = '")).collect();
    let mut all = plain;
    for f in printed {
        if !all.contains(&f) {
            all.push(f);
        }
    }
    all
}

/// `sql` with period `from` written as `to`; `None` when `sql` does not name `from` the way the
/// teaching data does, the two periods are not written alike, or a date of `from`'s first year
/// is left over (another way of writing it, which would filter the earlier query on both).
fn swap_period(sql: &str, from: Period, to: Period) -> Option<String> {
    let (a, b) = (forms(from), forms(to));
    if a.len() != b.len() {
        return None;
    }
    let mut out = sql.to_string();
    for (f, t) in a.iter().zip(&b) {
        out = out.replace(f, t);
    }
    let left = year(from) != year(to) && out.contains(&format!("'{}", year(from)));
    (out != sql && !left).then_some(out)
}

/// The year a period starts in.
fn year(p: Period) -> u16 {
    match p {
        Period::Year(y) | Period::Month(y, _) | Period::Range((y, _), _) => y,
    }
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

/// Whether every value of column `i` of `rows` is a number (or null).
fn numeric(rows: &Rows, i: usize) -> bool {
    rows.rows.iter().all(|r| r.get(i).is_some_and(|v| v.is_number() || v.is_null()))
}

/// `sql` without its outermost ORDER BY and LIMIT (the composed query orders and cuts the
/// result itself); `None` where it does not parse as one query.
fn unordered(dialect: crate::exec::Dialect, sql: &str) -> Option<String> {
    let mut stmts = parse(dialect, sql)?;
    let [sqlparser::ast::Statement::Query(q)] = &mut stmts[..] else { return None };
    q.order_by = None;
    q.limit = None;
    q.offset = None;
    Some(stmts[0].to_string())
}

fn parse(dialect: crate::exec::Dialect, sql: &str) -> Option<Vec<sqlparser::ast::Statement>> {
    crate::guard::parse_in(dialect, sql).ok()
}

/// One expression written as SQL text (`AVG(quantity)`), parsed.
fn parse_expr(dialect: crate::exec::Dialect, text: &str) -> Option<sqlparser::ast::Expr> {
    let stmts = parse(dialect, &format!("SELECT {text}"))?;
    let [sqlparser::ast::Statement::Query(q)] = &stmts[..] else { return None };
    let sqlparser::ast::SetExpr::Select(select) = q.body.as_ref() else { return None };
    selected(select.projection.first()?).map(|(e, _)| e.clone())
}

/// What a composed query shows: its SQL, and the chart it takes (a kind, x, y), or `None` to
/// keep the model's chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Composed {
    /// The query.
    pub sql: String,
    /// Its chart's kind, x and y; `None`: the model's.
    pub chart: Option<(crate::chart::ChartType, Option<String>, Option<String>)>,
}

/// What became of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The query around the model's.
    Composed(Composed),
    /// The model's answer stands: the plan does not apply to it (a total for a threshold, the
    /// number or both periods already in the model's query).
    Keep,
    /// A change that could not be composed (a series over time, several figures, a period
    /// written another way): the model's query alone answers only the later period.
    Failed,
}

impl Plan {
    /// The query around `sql` (the model's, as guarded), whose result was `rows`.
    pub fn apply(&self, dialect: crate::exec::Dialect, sql: &str, rows: &Rows) -> Outcome {
        let Some((last, _)) = rows.columns.split_last() else { return Outcome::Keep };
        // One figure, the last column; the others are its groups.
        let figures = (0..rows.columns.len()).filter(|&i| numeric(rows, i)).count();
        let keys = &rows.columns[..rows.columns.len() - 1];
        let single = !rows.rows.is_empty() && numeric(rows, keys.len()) && figures == 1;
        let m = quoted(last);
        match self {
            Plan::Change { earlier, later, values, top, lowest } => {
                // A query that names the earlier period (or a date of its year) already compares
                // them itself.
                let other_year = year(*earlier) != year(*later) && sql.contains(&format!("'{}", year(*earlier)));
                if other_year || forms(*earlier).iter().any(|f| sql.contains(f.as_str())) {
                    return Outcome::Keep;
                }
                if !single || (0..keys.len()).any(|i| holds_time(rows, i)) {
                    return Outcome::Failed;
                }
                let Some(after) = unordered(dialect, sql) else { return Outcome::Failed };
                let Some(before) = swap_period(&after, *later, *earlier) else { return Outcome::Failed };
                let (le, ll) = (label(*earlier), label(*later));
                let mut select: Vec<String> = keys.iter().map(|k| format!("a.{}", quoted(k))).collect();
                if *values {
                    select.push(format!("b.{m} AS {}", quoted(&format!("{last}_{le}"))));
                    select.push(format!("a.{m} AS {}", quoted(&format!("{last}_{ll}"))));
                }
                // No growth from nothing (PostgreSQL would fail on the division).
                select.push(format!("ROUND((a.{m} - b.{m}) * 100.0 / NULLIF(b.{m}, 0), 2) AS growth"));
                let on = if keys.is_empty() { "1=1".to_string() } else { keys.iter().map(|k| format!("a.{q} = b.{q}", q = quoted(k))).collect::<Vec<_>>().join(" AND ") };
                let order = match (keys.is_empty(), lowest) {
                    (true, _) => String::new(),
                    (false, false) => " ORDER BY growth DESC NULLS LAST".to_string(),
                    (false, true) => " ORDER BY growth ASC NULLS LAST".to_string(),
                };
                let limit = top.filter(|_| !keys.is_empty()).map_or(String::new(), |n| format!(" LIMIT {n}"));
                let composed = format!("SELECT {} FROM ({after}) AS a JOIN ({before}) AS b ON {on}{order}{limit}", select.join(", "));
                let chart = match (keys, values) {
                    // The one group that changed most: a row, as "which one" is answered.
                    ([k], _) if *top == Some(1) => (crate::chart::ChartType::Table, Some(k.clone())),
                    ([k], _) => (crate::chart::ChartType::Bar, Some(k.clone())),
                    ([], false) => (crate::chart::ChartType::Number, None),
                    _ => (crate::chart::ChartType::Table, None),
                };
                Outcome::Composed(Composed { sql: composed, chart: Some((chart.0, chart.1, Some("growth".into()))) })
            }
            // One figure to replace (a query with several already lists them).
            Plan::Figures(_) if !single => Outcome::Keep,
            Plan::Figures(columns) => match with_figures(dialect, sql, columns, keys) {
                Some(sql) => Outcome::Composed(Composed { sql, chart: Some((crate::chart::ChartType::Table, None, None)) }),
                None => Outcome::Keep,
            },
            Plan::Successive => {
                // One figure over one time column (and maybe a series column beside it); not a
                // query that already reads the period before.
                let time: Vec<usize> = (0..keys.len()).filter(|&i| holds_time(rows, i)).collect();
                if !single || time.len() != 1 || sql.to_ascii_uppercase().contains(" OVER ") {
                    return Outcome::Keep;
                }
                let Some(inner) = unordered(dialect, sql) else { return Outcome::Keep };
                let t = quoted(&keys[time[0]]);
                let others: Vec<String> = (0..keys.len()).filter(|&i| i != time[0]).map(|i| quoted(&keys[i])).collect();
                let partition = if others.is_empty() { String::new() } else { format!("PARTITION BY {} ", others.join(", ")) };
                let before = format!("LAG(a.{m}) OVER ({partition}ORDER BY a.{t})");
                let select: Vec<String> = keys.iter().map(|k| format!("a.{}", quoted(k))).chain([format!("a.{m}")]).collect();
                let order: Vec<String> = others.iter().map(|o| format!("a.{o}")).chain([format!("a.{t}")]).collect();
                let composed = format!("SELECT {}, ROUND((a.{m} - {before}) * 100.0 / NULLIF({before}, 0), 2) AS change_pct FROM ({inner}) AS a ORDER BY {}", select.join(", "), order.join(", "));
                Outcome::Composed(Composed { sql: composed, chart: Some((crate::chart::ChartType::Line, Some(keys[time[0]].clone()), Some("change_pct".into()))) })
            }
            Plan::Share { per_group: false, .. } if !keys.is_empty() => Outcome::Keep,
            Plan::Share { whole, .. } => match part_share(dialect, sql, whole) {
                Some(sql) => Outcome::Composed(Composed {
                    sql,
                    chart: Some(match keys {
                        [] => (crate::chart::ChartType::Number, None, Some("share_pct".into())),
                        [k, ..] => (crate::chart::ChartType::Bar, Some(k.clone()), Some("share_pct".into())),
                    }),
                }),
                None => Outcome::Keep,
            },
            Plan::Threshold { op, value } => {
                // Only groups with one figure, and only where the model did not compare with the
                // number itself (`> 300`, `>= 300`).
                static COMPARED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[<>=]\s*'?([0-9]+(\.[0-9]+)?)").expect("valid pattern"));
                let named = COMPARED.captures_iter(sql).any(|c| c[1] == *value);
                if keys.is_empty() || !single || named {
                    return Outcome::Keep;
                }
                Outcome::Composed(Composed { sql: format!("SELECT * FROM ({sql}) AS t WHERE {m} {op} {value}"), chart: None })
            }
        }
    }
}

/// `sql` (the model's query for the part) as the part's share of the whole in percent: the
/// conditions of its `WHERE` that pick the part (those on none of the values `whole`, and
/// not the period's) moved into its one figure, `SUM(x)` as `SUM(CASE WHEN part THEN x ELSE 0
/// END) * 100.0 / SUM(x)` and `COUNT(*)` likewise. `None` where the query has no such condition
/// or not one aggregate figure last.
fn part_share(dialect: crate::exec::Dialect, sql: &str, whole: &[String]) -> Option<String> {
    use sqlparser::ast::{BinaryOperator, Expr, OrderByKind, SelectItem, SetExpr, Statement};
    let mut stmts = parse(dialect, sql)?;
    let [Statement::Query(q)] = &mut stmts[..] else { return None };
    let SetExpr::Select(select) = q.body.as_mut() else { return None };
    let all: Vec<Expr> = select.selection.take().map(|w| conjuncts(&w).into_iter().cloned().collect()).unwrap_or_default();
    static LITERAL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"'([^']*)'").expect("valid pattern"));
    static DATED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)date|month|'[0-9]{4}").expect("valid pattern"));
    let (part, rest): (Vec<Expr>, Vec<Expr>) = all.into_iter().partition(|c| {
        let text = c.to_string();
        let named_in_whole = LITERAL.captures_iter(&text).any(|l| whole.iter().any(|w| *w == l[1]));
        !DATED.is_match(&text) && !named_in_whole
    });
    if part.is_empty() {
        return None;
    }
    let part_text = part.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" AND ");
    // The one figure, last: an aggregate call of one argument (`SUM(amount)`, `COUNT(*)`).
    let (last_expr, alias) = selected(select.projection.last()?)?;
    let (last_expr, alias) = (last_expr.clone(), alias.map(|a| a.value.clone()));
    // One figure: no other aggregate beside it (it would lose the part's conditions), and not a
    // ratio already (`SUM(profit)*100.0/SUM(amount)`): one call of one argument.
    let figures = select.projection.iter().filter(|i| selected(i).is_some_and(|(e, _)| aggregate(e))).count();
    let calls = aggregate_calls(&last_expr);
    let [(func, Some(arg))] = &calls[..] else { return None };
    if figures != 1 || !["SUM", "COUNT", "TOTAL"].contains(&func.as_str()) {
        return None;
    }
    let (of_part, of_whole) = match (func.as_str(), arg.as_str()) {
        ("COUNT", _) => ("1".to_string(), "COUNT(*)".to_string()),
        (_, a) => (a.to_string(), format!("SUM({a})")),
    };
    let share = format!("ROUND(SUM(CASE WHEN {part_text} THEN {of_part} ELSE 0 END) * 100.0 / NULLIF({of_whole}, 0), 2)");
    let mut parsed = parse(dialect, &format!("SELECT {share} FROM t"))?;
    let [Statement::Query(sq)] = &mut parsed[..] else { return None };
    let SetExpr::Select(ss) = sq.body.as_mut() else { return None };
    let SelectItem::UnnamedExpr(share_expr) = ss.projection.pop()? else { return None };
    let n = select.projection.len();
    select.projection[n - 1] = SelectItem::ExprWithAlias { expr: share_expr, alias: sqlparser::ast::Ident::new("share_pct") };
    select.selection = rest.into_iter().reduce(|a, b| Expr::BinaryOp { left: Box::new(a), op: BinaryOperator::And, right: Box::new(b) });
    if let Some(OrderByKind::Expressions(list)) = q.order_by.as_mut().map(|o| &mut o.kind) {
        for o in list.iter_mut() {
            if matches!(&o.expr, Expr::Identifier(i) if Some(&i.value) == alias.as_ref()) {
                o.expr = Expr::Identifier(sqlparser::ast::Ident::new("share_pct"));
            }
        }
    }
    Some(stmts[0].to_string())
}

/// `sql` with its last select item (one aggregate figure, in a query of one table) replaced by
/// `columns` summed (an identifier: the rows counted), in their order; its ORDER BY kept where it
/// names only groups or figures still selected. `None` where the query is not of that form, or
/// names a table other than the columns'.
fn with_figures(dialect: crate::exec::Dialect, sql: &str, columns: &[String], keys: &[String]) -> Option<String> {
    use sqlparser::ast::{Expr, OrderByKind, SetExpr, Statement, TableFactor};
    let mut stmts = parse(dialect, sql)?;
    let [Statement::Query(q)] = &mut stmts[..] else { return None };
    let SetExpr::Select(select) = q.body.as_mut() else { return None };
    let [from] = &select.from[..] else { return None };
    let TableFactor::Table { name, .. } = &from.relation else { return None };
    if !from.joins.is_empty() {
        return None;
    }
    let table = name.to_string();
    let last = select.projection.last()?;
    let is_aggregate = selected(last).is_some_and(|(e, _)| aggregate(e));
    if !is_aggregate || select.projection.len() != keys.len() + 1 || columns.iter().any(|c| !c.starts_with(&format!("{table}."))) {
        return None;
    }
    let mut items: Vec<String> = select.projection[..keys.len()].iter().map(|i| i.to_string()).collect();
    let mut names: Vec<String> = keys.to_vec();
    for col in columns {
        let c = col.split_once('.').map_or(col.as_str(), |(_, c)| c);
        let (item, alias) = if c == "id" || c.ends_with("_id") {
            let n = format!("{}s", c.trim_end_matches("_id").trim_end_matches("id"));
            let n = if n == "s" { "count".to_string() } else { n };
            (format!("COUNT(*) AS {n}"), n)
        } else {
            (format!("ROUND(SUM({c}), 2) AS {c}"), c.to_string())
        };
        items.push(item);
        names.push(alias);
    }
    // ORDER BY items that are names (groups, or figures still selected) stay.
    let keep_order = q.order_by.as_ref().is_none_or(|o| match &o.kind {
        OrderByKind::Expressions(list) => list.iter().all(|e| matches!(&e.expr, Expr::Identifier(i) if names.contains(&i.value))),
        OrderByKind::All(_) => false,
    });
    if !keep_order {
        q.order_by = None;
    }
    let head = format!("SELECT {}{} FROM ", if select.distinct.is_some() { "DISTINCT " } else { "" }, items.join(", "));
    let text = stmts[0].to_string();
    let from_at = text.find(" FROM ")?;
    Some(format!("{head}{}", &text[from_at + 6..]))
}

/// Whether `e` holds an aggregate call (not a window function).
fn aggregate(e: &sqlparser::ast::Expr) -> bool {
    !aggregate_calls(e).is_empty()
}

/// The aggregate calls `e` holds (not window functions), outermost first: each one's name in
/// upper case, and its argument where it has one plain argument (`*` of `COUNT(*)`; none of
/// `COUNT(DISTINCT x)`).
fn aggregate_calls(e: &sqlparser::ast::Expr) -> Vec<(String, Option<String>)> {
    use sqlparser::ast::{visit_expressions, Expr, FunctionArg, FunctionArgExpr, FunctionArguments};
    let mut out = Vec::new();
    let _ = visit_expressions(e, |x| {
        if let Expr::Function(f) = x {
            let name = f.name.to_string().to_ascii_uppercase();
            if f.over.is_none() && crate::shape::AGGREGATES.contains(&name.as_str()) {
                let arg = match &f.args {
                    FunctionArguments::List(l) if l.duplicate_treatment.is_none() => match &l.args[..] {
                        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] => Some("*".to_string()),
                        [FunctionArg::Unnamed(FunctionArgExpr::Expr(a))] => Some(a.to_string()),
                        _ => None,
                    },
                    _ => None,
                };
                out.push((name, arg));
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    out
}

/// The name of the column `e` is, if it is one (`amount`, `s.amount`).
fn column_name(e: &sqlparser::ast::Expr) -> Option<String> {
    use sqlparser::ast::Expr;
    match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(p) => p.last().map(|i| i.value.clone()),
        _ => None,
    }
}

/// The conjuncts of a condition (`a AND (b AND c)`: `a`, `b`, `c`), in order.
fn conjuncts(e: &sqlparser::ast::Expr) -> Vec<&sqlparser::ast::Expr> {
    use sqlparser::ast::{BinaryOperator, Expr};
    match e {
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => conjuncts(left).into_iter().chain(conjuncts(right)).collect(),
        Expr::Nested(inner) => conjuncts(inner),
        other => vec![other],
    }
}

/// A select item's expression and alias; `None` for a wildcard.
fn selected(item: &sqlparser::ast::SelectItem) -> Option<(&sqlparser::ast::Expr, Option<&sqlparser::ast::Ident>)> {
    use sqlparser::ast::SelectItem;
    match item {
        SelectItem::UnnamedExpr(e) => Some((e, None)),
        SelectItem::ExprWithAlias { expr, alias } => Some((expr, Some(alias))),
        _ => None,
    }
}

/// The text of a quoted literal (`'华北'`), if `e` is one.
fn text_value(e: &sqlparser::ast::Expr) -> Option<&str> {
    use sqlparser::ast::{Expr, Value};
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// `sql` parsed as one plain SELECT, handed to `edit` with its ORDER BY; the edited query
/// printed, or `None` where `sql` is not such a query or `edit` declines (returns `None`).
fn edit_select(dialect: crate::exec::Dialect, sql: &str, edit: impl FnOnce(&mut sqlparser::ast::Select, &mut Option<sqlparser::ast::OrderBy>) -> Option<()>) -> Option<String> {
    use sqlparser::ast::{Query, SetExpr, Statement};
    let mut stmts = parse(dialect, sql)?;
    let [Statement::Query(q)] = &mut stmts[..] else { return None };
    let Query { body, order_by, .. } = q.as_mut();
    let SetExpr::Select(select) = body.as_mut() else { return None };
    edit(select, order_by)?;
    Some(stmts[0].to_string())
}

/// `sql` (already guarded) with each measure of one aggregate the question asks for
/// ([`crate::cues::measure_call`]: 客单价 as `AVG(amount)`) in place of the model's sum of the
/// same column (`SUM(amount)`, `TOTAL(amount)`) where it is a figure of the select list, bare
/// or rounded, or an ORDER BY item; not inside a larger expression (a margin's `/SUM(amount)`),
/// nor where the query already has the measure beside the sum ("销售额和客单价"). `None` where
/// nothing changes.
///
/// Why: the model answered "2019年的客单价是多少？" and "客单价最高的前10个省份" with
/// `SUM(amount)` (fresh3, fresh10); held to `AVG(amount)` while it wrote, it ran on instead.
pub fn with_measures(catalog: &Catalog, dialect: crate::exec::Dialect, question: &str, sql: &str) -> Option<String> {
    use sqlparser::ast::{Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, ObjectNamePart, OrderBy, OrderByKind, SelectItem, SetExpr, Statement};
    let calls: Vec<(String, String, String)> = catalog.measures_asked(question).into_iter().filter_map(|m| crate::cues::measure_call(m).map(|(f, c)| (f, c, m.name.clone()))).collect();
    if calls.is_empty() {
        return None;
    }
    // The aggregate a figure is, bare or rounded (`SUM(amount)`, `ROUND(SUM(amount), 2)`), with
    // the column it takes; not one inside a larger expression (a margin's `/SUM(amount)`).
    fn bare(e: &mut Expr) -> Option<(&mut Function, String)> {
        let Expr::Function(f) = e else { return None };
        if f.name.to_string().eq_ignore_ascii_case("ROUND") {
            let FunctionArguments::List(l) = &mut f.args else { return None };
            let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(inner))) = l.args.first_mut() else { return None };
            return bare(inner);
        }
        let FunctionArguments::List(l) = &f.args else { return None };
        let column = match &l.args[..] {
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] if l.duplicate_treatment.is_none() => column_name(e)?,
            _ => return None,
        };
        Some((f, column))
    }
    let mut stmts = parse(dialect, sql)?;
    let [Statement::Query(q)] = &mut stmts[..] else { return None };
    let SetExpr::Select(select) = q.body.as_mut() else { return None };
    // A query that already has the measure beside its sum ("销售额和客单价") is left as it is.
    let text = select.projection.iter().map(|i| i.to_string().to_ascii_uppercase()).collect::<Vec<_>>().join(", ");
    if calls.iter().any(|(func, col, _)| text.contains(&format!("{func}({})", col.to_ascii_uppercase()))) {
        return None;
    }
    let mut changed = false;
    let mut swap = |e: &mut Expr| {
        if let Some((f, column)) = bare(e) {
            let name = f.name.to_string().to_ascii_uppercase();
            if let Some((func, ..)) = calls.iter().find(|(_, col, _)| *col == column && (name == "SUM" || name == "TOTAL")) {
                f.name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(func.clone()))]);
                changed = true;
            }
        }
    };
    for item in &mut select.projection {
        match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => swap(e),
            _ => {}
        }
    }
    if let Some(OrderBy { kind: OrderByKind::Expressions(list), .. }) = &mut q.order_by {
        for o in list.iter_mut() {
            swap(&mut o.expr);
        }
    }
    // No sum to take the measure's place, and the rows counted where the question asks for no
    // number of orders ("笔记本电脑2019年平均一单买几台" answered `COUNT(*) AS orders`): the count
    // is the measure, where it is the query's one figure.
    if let ([(func, col, measure)], false) = (&calls[..], changed || crate::cues::count_asked(question)) {
        let figures: Vec<usize> = select.projection.iter().enumerate().filter(|(_, i)| selected(i).is_some_and(|(e, _)| aggregate(e))).map(|(n, _)| n).collect();
        if let [n] = figures[..] {
            let counted = |e: &Expr| matches!(e, Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("COUNT") && f.args.to_string().trim() == "(*)");
            let call = parse_expr(dialect, &format!("{func}({col})"))?;
            let renamed = match &mut select.projection[n] {
                SelectItem::ExprWithAlias { expr, alias } if counted(expr) => {
                    *expr = call;
                    Some(std::mem::replace(&mut alias.value, measure.clone()))
                }
                SelectItem::UnnamedExpr(expr) if counted(expr) => {
                    *expr = call;
                    None
                }
                _ => return None,
            };
            if let Some(OrderBy { kind: OrderByKind::Expressions(list), .. }) = &mut q.order_by {
                for o in list.iter_mut() {
                    if renamed.as_ref().is_some_and(|old| matches!(&o.expr, Expr::Identifier(i) if i.value == *old)) || counted(&o.expr) {
                        o.expr = Expr::Identifier(Ident::new(measure.clone()));
                    }
                }
            }
            return Some(stmts[0].to_string());
        }
    }
    if !changed {
        return None;
    }
    // A figure named after its column (`AS amount`) takes the measure's name, and so does the
    // ORDER BY that names it (which would otherwise sort by the raw column).
    let [Statement::Query(q)] = &mut stmts[..] else { return None };
    let mut renamed: Vec<(String, String)> = Vec::new();
    if let SetExpr::Select(select) = q.body.as_mut() {
        for item in &mut select.projection {
            if let SelectItem::ExprWithAlias { expr, alias } = item {
                let text = expr.to_string().to_ascii_uppercase();
                if let Some((.., measure)) = calls.iter().find(|(func, col, _)| *col == alias.value && text.contains(&format!("{func}({})", col.to_ascii_uppercase()))) {
                    renamed.push((alias.value.clone(), measure.clone()));
                    alias.value = measure.clone();
                }
            }
        }
    }
    if let Some(OrderBy { kind: OrderByKind::Expressions(list), .. }) = &mut q.order_by {
        for e in list {
            if let Expr::Identifier(i) = &mut e.expr {
                if let Some((_, new)) = renamed.iter().find(|(old, _)| *old == i.value) {
                    i.value = new.clone();
                }
            }
        }
    }
    Some(stmts[0].to_string())
}

/// `sql` (already guarded) grouped by the expression a select alias stands for, where the
/// query joins tables and the `GROUP BY` names the alias bare (`substr(s.month,1,7) AS month ...
/// GROUP BY month` over `sales_targets t JOIN (...) s`): SQLite reads such a name as the joined
/// tables' column first and fails with "ambiguous column name", and PostgreSQL groups by the
/// column. `None` where nothing is replaced.
///
/// Why: the model wrote that for "For East China in 2020, show each month's actual sales against
/// its target and the achievement rate." (fresh9), and the answer was an error.
pub fn unalias_groups(dialect: crate::exec::Dialect, sql: &str) -> Option<String> {
    use sqlparser::ast::{Expr, SelectItem};
    edit_grouped(dialect, sql, |select, groups, _| {
        if select.from.len() < 2 && select.from.iter().all(|f| f.joins.is_empty()) {
            return None;
        }
        let mut changed = false;
        for g in groups.iter_mut() {
            let Expr::Identifier(name) = &*g else { continue };
            let aliased = select.projection.iter().find_map(|i| match i {
                SelectItem::ExprWithAlias { expr, alias } if alias.value == name.value && !matches!(expr, Expr::Identifier(i) if i.value == name.value) => Some(expr.clone()),
                _ => None,
            });
            if let Some(e) = aliased.filter(|e| !aggregate(e)) {
                *g = e;
                changed = true;
            }
        }
        changed.then_some(())
    })
}

/// `sql` (already guarded) with every plain column it selects beside an aggregate in its
/// `GROUP BY`, where the model left one out (`SELECT month, category, SUM(amount) ... GROUP BY
/// category`: SQLite answers one arbitrary month per category, PostgreSQL refuses). `None`
/// where nothing is missing.
///
/// Why: the model answered "Monthly sales by category over 2018-2020, one line per category"
/// so (fresh12), and series per quarter and category likewise (fresh2, fresh9).
pub fn complete_group_by(dialect: crate::exec::Dialect, sql: &str) -> Option<String> {
    use sqlparser::ast::Expr;
    edit_grouped(dialect, sql, |select, groups, _| {
        let grouped: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let mut missing: Vec<Expr> = Vec::new();
        for item in &select.projection {
            let (expr, alias) = selected(item)?;
            if aggregate(expr) || matches!(expr, Expr::Value(_)) {
                continue;
            }
            let named = grouped.contains(&expr.to_string()) || alias.is_some_and(|a| grouped.contains(&a.value));
            // The expression, not its alias: PostgreSQL reads a GROUP BY name as an input
            // column first (`month` of a joined targets table).
            if !named {
                missing.push(expr.clone());
            }
        }
        if missing.is_empty() {
            return None;
        }
        // Before the groups already there: the select list's order (time first, as it is written).
        missing.append(groups);
        *groups = missing;
        Some(())
    })
}

/// `sql` parsed as one SELECT grouped by a plain list (no ROLLUP and the like), handed to `edit`
/// with its GROUP BY items and its ORDER BY; the edited query printed, or `None` where `sql` is
/// not such a query or `edit` declines (returns `None`).
fn edit_grouped(
    dialect: crate::exec::Dialect,
    sql: &str,
    edit: impl FnOnce(&mut sqlparser::ast::Select, &mut Vec<sqlparser::ast::Expr>, &mut Option<sqlparser::ast::OrderBy>) -> Option<()>,
) -> Option<String> {
    use sqlparser::ast::GroupByExpr;
    edit_select(dialect, sql, |select, order_by| {
        let GroupByExpr::Expressions(groups, modifiers) = &mut select.group_by else { return None };
        if groups.is_empty() || !modifiers.is_empty() {
            return None;
        }
        let mut groups = std::mem::take(groups);
        edit(select, &mut groups, order_by)?;
        select.group_by = GroupByExpr::Expressions(groups, vec![]);
        Some(())
    })
}

/// `sql` (already guarded) without the group columns its `WHERE` pins to one value
/// (`SELECT province, SUM(amount) ... WHERE province IN ('广东') GROUP BY province`): one group
/// is no grouping, and the column only repeats what the question named. `None` where nothing
/// is pinned, or nothing but pinned columns is selected.
///
/// Why: the model answered "What were total sales in 广东 province in 2020?", "家具这个品类每年卖了
/// 多少？" and "Show monthly Electronics sales for 2020" with the named value beside each figure,
/// which no gold answer of any set has (five misses on fresh1-9).
pub fn unpin_groups(dialect: crate::exec::Dialect, sql: &str) -> Option<String> {
    use sqlparser::ast::{BinaryOperator, Expr, OrderByKind, SelectItem};
    let is_text = |e: &Expr| text_value(e).is_some();
    edit_grouped(dialect, sql, |select, groups, order_by| {
        // The columns the WHERE's conjuncts pin to one text value.
        let mut pinned: Vec<String> = Vec::new();
        for e in select.selection.iter().flat_map(conjuncts) {
            match e {
                Expr::BinaryOp { left, op: BinaryOperator::Eq, right } if is_text(right) => pinned.extend(column_name(left)),
                Expr::InList { expr, list, negated: false } if list.len() == 1 && is_text(&list[0]) => pinned.extend(column_name(expr)),
                _ => {}
            }
        }
        // Select items that are a pinned column, by their output name.
        let mut dropped: Vec<String> = Vec::new();
        let keep: Vec<SelectItem> = select
            .projection
            .iter()
            .filter(|item| {
                let Some((expr, alias)) = selected(item) else { return true };
                match column_name(expr).filter(|n| pinned.contains(n)) {
                    Some(n) => {
                        dropped.push(n.clone());
                        dropped.extend(alias.map(|a| a.value.clone()));
                        false
                    }
                    None => true,
                }
            })
            .cloned()
            .collect();
        if dropped.is_empty() || keep.is_empty() {
            return None;
        }
        select.projection = keep;
        groups.retain(|g| column_name(g).is_none_or(|n| !dropped.contains(&n)));
        if let Some(OrderByKind::Expressions(list)) = order_by.as_mut().map(|o| &mut o.kind) {
            list.retain(|o| column_name(&o.expr).is_none_or(|n| !dropped.contains(&n)));
            if list.is_empty() {
                *order_by = None;
            }
        }
        Some(())
    })
}

/// `sql` (already guarded) keeping only the rows whose actual figure falls short of, or beyond,
/// its target where the question asks for those ([`crate::cues::past_target`]: "哪几个月没完成
/// 销售目标", "In which months did East China beat its sales target?"), and the model's query
/// lists both figures without comparing them: `AND s.amount<t.target` in its `WHERE`, or in its
/// `HAVING` where the actual figure is an aggregate of a grouped query. The target is a number
/// column of a table other than the dated one (kept by month: `sales_targets.target`), the
/// actual a number column of the dated table (`amount`, summed or not). `None` where the query
/// does not select exactly one of each, or already compares two columns.
///
/// Why: the model listed every month with its target and actual figure for six such questions
/// across fresh5-13 (taught with seven examples, it wrote the comparison once).
pub fn past_target(catalog: &Catalog, dialect: crate::exec::Dialect, question: &str, sql: &str) -> Option<String> {
    use sqlparser::ast::{BinaryOperator, Expr, GroupByExpr};
    let side = crate::cues::past_target(question)?;
    let date = catalog.date_column()?;
    let number = |c: &crate::catalog::Column| c.is_number() && !crate::shape::is_id(c);
    let dated = catalog.tables.iter().find(|t| t.columns.iter().any(|c| c.name == date))?;
    let actuals: Vec<&str> = dated.columns.iter().filter(|c| number(c)).map(|c| c.name.as_str()).collect();
    let targets: Vec<&str> = catalog.tables.iter().filter(|t| t.name != dated.name).flat_map(|t| &t.columns).filter(|c| number(c)).map(|c| c.name.as_str()).collect();
    edit_select(dialect, sql, |select, _| {
        // The column a figure reads: itself, or the one argument of the aggregate it holds.
        let read = |e: &Expr| column_name(e).or_else(|| aggregate_calls(e).into_iter().next().and_then(|(_, a)| a).map(|a| a.rsplit('.').next().unwrap_or(&a).to_string()));
        let (mut actual, mut target) = (Vec::new(), Vec::new());
        for item in &select.projection {
            let (e, _) = selected(item)?;
            match read(e) {
                Some(c) if targets.contains(&c.as_str()) && !aggregate(e) => target.push(e.clone()),
                Some(c) if actuals.contains(&c.as_str()) => actual.push(e.clone()),
                _ => {}
            }
        }
        let ([actual], [target]) = (&actual[..], &target[..]) else { return None };
        // Already compared: a condition between two non-literal sides.
        fn literal(e: &Expr) -> bool {
            match e {
                Expr::Value(_) | Expr::TypedString { .. } => true,
                Expr::UnaryOp { expr, .. } | Expr::Nested(expr) => literal(expr),
                _ => false,
            }
        }
        let compares = |e: &Expr| {
            conjuncts(e).into_iter().any(|c| {
                matches!(c, Expr::BinaryOp { left, op: BinaryOperator::Lt | BinaryOperator::Gt | BinaryOperator::LtEq | BinaryOperator::GtEq, right }
                    if !literal(left) && !literal(right))
            })
        };
        if select.selection.as_ref().is_some_and(compares) || select.having.as_ref().is_some_and(compares) {
            return None;
        }
        let op = if side == std::cmp::Ordering::Less { BinaryOperator::Lt } else { BinaryOperator::Gt };
        let cond = Expr::BinaryOp { left: Box::new(actual.clone()), op, right: Box::new(target.clone()) };
        let grouped = matches!(&select.group_by, GroupByExpr::Expressions(g, _) if !g.is_empty());
        let slot = if grouped && aggregate(actual) { &mut select.having } else { &mut select.selection };
        *slot = Some(match slot.take() {
            Some(e) => Expr::BinaryOp { left: Box::new(e), op: BinaryOperator::And, right: Box::new(cond) },
            None => cond,
        });
        Some(())
    })
}

/// `sql` (already guarded) rewritten at the grain the question asks of actual figures against
/// their targets, where the model read the targets beside the actual figures' monthly totals
/// (`FROM sales_targets t JOIN (SELECT region, substr(order_date,1,7) AS month, SUM(amount) AS
/// amount FROM sales GROUP BY region, month) s ON ...`, as it is taught) but answered at another
/// grain or left a figure out: one row per month where the question asks month by month or
/// which months ([`crate::cues::by_month`]), one per key of the targets where it asks per key
/// ("哪些大区", "For each region"); each with the actual figure and the target summed over the
/// period, their rate in percent where a rate is asked ([`crate::cues::target_rate_asked`]),
/// their gap where a gap is asked (the target less the actual where the question asks what fell
/// short, else the actual less the target; alone, where the question names no actual figure:
/// "by how much"), and only the rows short of (or beyond) their
/// target where the question asks for those, compared on the sums; the months counted where it
/// asks how many. The model's `WHERE` stays, less any comparison of the two figures (made on the
/// sums instead).
///
/// Not rewritten: a rate per key the model wrote, unless only the keys past their target are
/// asked for (the reviewers' gold answers split between the rate alone and the rate beside
/// both figures); a question for one total; one asking for a top or bottom few; a join of the targets to the raw rows (its target
/// repeats on every row, so it cannot be summed).
///
/// Why: the model compared the regions' monthly figures with their monthly targets for "Which
/// regions fell short of their full-year 2019 target?" (56 rows for 5; fresh6, fresh8, fresh11,
/// fresh14), and answered "South China monthly target attainment in 2020" and "Attainment rate
/// per month" with the two figures and no rate, or one rate for the year (fresh9, fresh14,
/// fresh15): eight misses across the fresh sets.
pub fn regrain_target(catalog: &Catalog, dialect: crate::exec::Dialect, question: &str, sql: &str) -> Option<String> {
    use sqlparser::ast::{BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, SetExpr, Statement, TableFactor};
    if !crate::cues::against_target(catalog, question) || crate::period::top_n(question).is_some() || crate::period::one_best(question) {
        return None;
    }
    let date = catalog.date_column()?;
    let dated = catalog.tables.iter().find(|t| t.columns.iter().any(|c| c.name == date))?;
    let number = |c: &crate::catalog::Column| c.is_number() && !crate::shape::is_id(c);
    // The targets: a table other than the dated one, kept by a month column, with one figure.
    let targets = catalog.tables.iter().find(|t| t.name != dated.name && t.columns.iter().any(crate::shape::holds_dates))?;
    let month = targets.columns.iter().find(|c| crate::shape::holds_dates(c))?.name.clone();
    let [target] = &targets.columns.iter().filter(|c| number(c)).collect::<Vec<_>>()[..] else { return None };
    let rate = crate::cues::target_rate_asked(question);
    let side = crate::cues::past_target(question);
    let key = if crate::cues::by_month(question) { month.clone() } else { crate::cues::group_column(catalog, question).filter(|k| targets.columns.iter().any(|c| &c.name == k))? };
    let mut stmts = parse(dialect, sql)?;
    let [Statement::Query(q)] = &mut stmts[..] else { return None };
    let limit = q.limit.as_ref().map(|l| format!(" LIMIT {l}")).unwrap_or_default();
    let SetExpr::Select(select) = q.body.as_mut() else { return None };
    let [from] = &mut select.from[..] else { return None };
    let [join] = &mut from.joins[..] else { return None };
    // Which side is the targets, which the monthly totals (either order).
    let alias_of = |f: &TableFactor| match f {
        TableFactor::Table { name, alias, .. } if name.to_string().eq_ignore_ascii_case(&targets.name) => Some(alias.as_ref().map_or(name.to_string(), |a| a.name.to_string())),
        _ => None,
    };
    let (t, totals) = match (alias_of(&from.relation), alias_of(&join.relation)) {
        (Some(t), None) => (t, &mut join.relation),
        (None, Some(t)) => (t, &mut from.relation),
        _ => return None,
    };
    let TableFactor::Derived { subquery, alias: Some(s), .. } = totals else { return None };
    let s = s.name.to_string();
    let SetExpr::Select(inner) = subquery.body.as_mut() else { return None };
    // The monthly total of an actual figure, unrounded so that the sums over months round once
    // (as a sum over the rows would).
    let mut actual = None;
    for item in inner.projection.iter_mut() {
        let sqlparser::ast::SelectItem::ExprWithAlias { expr, alias } = item else { continue };
        let reads_actual = aggregate_calls(expr).first().and_then(|(_, a)| a.clone()).is_some_and(|a| dated.columns.iter().any(|c| number(c) && a.rsplit('.').next() == Some(c.name.as_str())));
        if !reads_actual {
            continue;
        }
        if let Expr::Function(f) = expr {
            if f.name.to_string().eq_ignore_ascii_case("ROUND") {
                if let FunctionArguments::List(l) = &f.args {
                    if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(e))) = l.args.first() {
                        *expr = e.clone();
                    }
                }
            }
        }
        actual = Some(alias.value.clone());
        break;
    }
    let actual = actual?;
    // Comparisons of two columns (`s.amount < t.target`) are made on the sums instead.
    fn literal(e: &Expr) -> bool {
        match e {
            Expr::Value(_) | Expr::TypedString { .. } => true,
            Expr::UnaryOp { expr, .. } | Expr::Nested(expr) => literal(expr),
            _ => false,
        }
    }
    let compares =
        |c: &Expr| matches!(c, Expr::BinaryOp { left, op: BinaryOperator::Lt | BinaryOperator::Gt | BinaryOperator::LtEq | BinaryOperator::GtEq, right } if !literal(left) && !literal(right));
    let kept: Vec<String> = select.selection.as_ref().map(|w| conjuncts(w).into_iter().filter(|c| !compares(c)).map(|c| c.to_string()).collect()).unwrap_or_default();
    // Grouped already: only by the targets' own columns (a rate for the year, or per month), or
    // by bare columns of either side (every column listed: `GROUP BY t.target, s.amount,
    // t.region, t.month`).
    let GroupByExpr::Expressions(groups, _) = &select.group_by else { return None };
    let reads_targets_only = |e: &Expr| {
        let mut only = true;
        let _ = sqlparser::ast::visit_expressions(e, |x| {
            match x {
                Expr::Identifier(_) => only = false,
                Expr::CompoundIdentifier(p) if p.first().is_none_or(|q| q.value != t) => only = false,
                _ => {}
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        only
    };
    let bare = |e: &Expr| matches!(e, Expr::CompoundIdentifier(p) if p.len() == 2 && (p[0].value == t || p[0].value == s));
    if !groups.iter().all(|g| reads_targets_only(g) || bare(g)) {
        return None;
    }
    // Answered already: rows at the grain asked (one per month of the targets, ungrouped; or
    // grouped by the key alone) with every figure asked (both figures, or the gap alone; the
    // rate; the gap).
    let items: Vec<String> = select.projection.iter().map(|i| i.to_string()).collect();
    let reads_key = |e: &Expr| reads_targets_only(e) && e.to_string().contains(&key);
    let grain_right = match &groups[..] {
        [] => key == month && select.projection.iter().any(|i| selected(i).is_some_and(|(e, _)| reads_key(e))) && !select.projection.iter().any(|i| selected(i).is_some_and(|(e, _)| aggregate(e))),
        [g] => reads_key(g),
        _ => false,
    };
    let has = |needle: &str| items.iter().any(|i| i.contains(needle));
    // A rate per key is the model's to write (the reviewers' gold answers split between the rate
    // alone and the rate beside both figures), unless it wrote none ("2020年各大区的销售目标完成
    // 率分别是多少" answered with every month's two figures), or only the keys past their target
    // are asked for ("Which regions beat their full-year 2020 target? show completion rate").
    if key != month && rate && has(" / ") && side.is_none() {
        return None;
    }
    // A figure listed as itself, not only inside the rate.
    let lists = |needle: &str| items.iter().any(|i| i.contains(needle) && !i.contains(" / "));
    let gap = crate::cues::gap_asked(question);
    // Both figures listed: beside a gap only where the question names the actual figure
    // ("实际卖的跟目标差多少"), beside a rate only where it names the actual figure, holds it
    // against the target ("track against its monthly targets") or asks for attainment in no
    // word of a rate. A gap asked alone ("by how much") and a rate asked as such ("每个月目标完成
    // 率是多少", "Monthly target completion rate") are listed alone, as the reviewers' gold
    // answers do (five of five such monthly rates, two of two such gaps). Both, too, for a rate
    // per key that the model left out beside the two figures it listed.
    let listed = lists(&format!("{s}.{actual}")) && lists(&format!("{t}.{}", target.name));
    let both = (listed && rate && key != month)
        || if rate { crate::cues::actual_named(question) || crate::cues::held_against(question) || !crate::cues::rate_named(question) } else { !gap || crate::cues::actual_named(question) };
    let figures = !both || listed;
    let compared = select.selection.iter().chain(&select.having).any(|w| conjuncts(w).into_iter().any(compares));
    let side_right = side.is_none() || compared;
    if grain_right && figures && side_right && (!rate || has(" / ")) && (!gap || has(" - ")) && (!crate::cues::months_counted(question) || has("COUNT(")) {
        return None;
    }
    let from = select.from[0].to_string();
    let zh = crate::ask::is_chinese(question);
    let (sa, st) = (format!("SUM({s}.{})", quoted(&actual)), format!("SUM({t}.{})", quoted(&target.name)));
    let g = format!("{t}.{}", quoted(&key));
    let mut items = vec![format!("{g} AS {}", quoted(&key))];
    if both {
        items.push(format!("ROUND({sa}, 2) AS {}", if zh { "实际" } else { "actual" }));
        items.push(format!("ROUND({st}, 2) AS {}", if zh { "目标" } else { "target" }));
    }
    if gap {
        // The target less the actual where the question asks what fell short, or how far short
        // ("how far short of target was each month"), else the actual less the target.
        let (gap, name) = if side == Some(std::cmp::Ordering::Less) || crate::cues::shortfall_asked(question) {
            (format!("{st} - {sa}"), if zh { "差额" } else { "shortfall" })
        } else {
            (format!("{sa} - {st}"), if zh { "差额" } else { "gap" })
        };
        items.push(format!("ROUND({gap}, 2) AS {name}"));
    }
    if rate {
        items.push(format!("ROUND({sa} * 100.0 / NULLIF({st}, 0), 2) AS {}", if zh { "完成率" } else { "attainment_pct" }));
    }
    let having = match side {
        Some(std::cmp::Ordering::Less) => format!(" HAVING {sa} < {st}"),
        Some(std::cmp::Ordering::Greater) => format!(" HAVING {sa} > {st}"),
        _ => String::new(),
    };
    let conds = if kept.is_empty() { String::new() } else { format!(" WHERE {}", kept.join(" AND ")) };
    let rows = format!("SELECT {} FROM {from}{conds} GROUP BY {g}{having}", items.join(", "));
    Some(if key == month && side.is_some() && crate::cues::months_counted(question) {
        format!("SELECT COUNT(*) AS {} FROM ({rows}) AS m{limit}", if zh { "月数" } else { "months" })
    } else {
        format!("{rows} ORDER BY {g}{limit}")
    })
}

/// `sql` (already guarded) with the teaching data's quarter, `(CAST(substr(order_date, 6, 2) AS
/// INTEGER) + 2) / 3`, where the model wrote it without its month (`(CAST(INTEGER) + 2) / 3`,
/// which no database runs). `None` elsewhere.
///
/// Why: answered under fewer rules (the question's rules together ran out of llguidance's
/// lexer fuel), the model wrote that for "2019年上半年和下半年的销售额对比一下" and
/// "华南区19年各个季度卖得怎么样" (fresh13, fresh18).
pub fn mend_quarter(catalog: &Catalog, sql: &str) -> Option<String> {
    const BROKEN: &str = "(CAST(INTEGER) + 2) / 3";
    let date = catalog.date_column()?;
    sql.contains(BROKEN).then(|| sql.replace(BROKEN, &format!("(CAST(substr({date}, 6, 2) AS INTEGER) + 2) / 3")))
}

/// `sql` (already guarded) with the date column compared as the month or year it is compared
/// with: a `YYYY-MM-DD` column against `'YYYY-MM'` (or `'YYYY'`) literals reads as its first 7 (or
/// 4) characters, `substr(order_date, 1, 7) BETWEEN '2019-01' AND '2019-12'`. `None` where no
/// comparison is such.
///
/// Why: compared whole, `order_date BETWEEN '2019-01' AND '2019-12'` leaves out every day of
/// December after the 1st ('2019-12-15' sorts after '2019-12'), and `order_date = '2019-03'`
/// holds no row. The model wrote such ranges for "19年一共多少笔订单" and "2018年第四季度订单数超过
/// 80笔的城市有哪些" (fresh5, fresh10): answers short by the last month.
pub fn date_prefixes(catalog: &Catalog, dialect: crate::exec::Dialect, sql: &str) -> Option<String> {
    use sqlparser::ast::{BinaryOperator, Expr, Value};
    let date = catalog.date_column()?;
    // The length of a month or year literal (`'2019-12'`: 7, `'2019'`: 4).
    fn prefix(e: &Expr) -> Option<usize> {
        let Expr::Value(v) = e else { return None };
        let Value::SingleQuotedString(text) = &v.value else { return None };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        match (text.len(), text.split_once('-')) {
            (7, Some((y, m))) if y.len() == 4 && digits(y) && m.len() == 2 && digits(m) => Some(7),
            (4, None) if digits(text) => Some(4),
            _ => None,
        }
    }
    let mut stmts = parse(dialect, sql)?;
    let mut changed = false;
    let wrap = |e: &mut Expr, n: usize| {
        if let Some(prefix) = parse_expr(dialect, &format!("substr({e}, 1, {n})")) {
            *e = prefix;
        }
    };
    let is_date = |e: &Expr| column_name(e).as_deref() == Some(date);
    let _ = sqlparser::ast::visit_expressions_mut(&mut stmts, |e| {
        match e {
            Expr::Between { expr, low, high, .. } if is_date(expr) => {
                if let (Some(a), Some(b)) = (prefix(low), prefix(high)) {
                    if a == b {
                        wrap(expr, a);
                        changed = true;
                    }
                }
            }
            Expr::BinaryOp { left, op: BinaryOperator::Eq | BinaryOperator::NotEq | BinaryOperator::Lt | BinaryOperator::LtEq | BinaryOperator::Gt | BinaryOperator::GtEq, right } => {
                if let (true, Some(n)) = (is_date(left), prefix(right)) {
                    wrap(left, n);
                    changed = true;
                } else if let (true, Some(n)) = (is_date(right), prefix(left)) {
                    wrap(right, n);
                    changed = true;
                }
            }
            _ => {}
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    changed.then(|| stmts[0].to_string())
}

/// Words that set a named value apart: to leave it out, or to compare the others with it
/// ("除了华北", "比华北高多少", "other than furniture").
static SET_APART: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)除了|除去|不含|不包括|以外|之外|比.{0,8}(高|低|多|少|大|小)|\b(except|excluding|other than|besides|apart from|than|compared (to|with)|relative to)\b").expect("valid pattern")
});

/// `sql` (already guarded), over one table, filtered on each value the question names of a
/// column the query never mentions (`AND category = '电子产品'`): the column named nowhere, the
/// value quoted nowhere. One value per column only (two name a comparison, which
/// [`split_in_list`] and the model's own `IN` lists answer); not where a value is set apart
/// (除了, "other than"), nor on a column of dates. `None` where nothing is missing.
///
/// Why: generation requires the first two named values only ([`crate::shape::values_pattern`]),
/// and the model left out the third: "2020年华南线上渠道电子产品卖了多少钱" summed every category
/// (fresh14, the set written this session), "Compare furniture and electronics sales in East
/// China for 2020" every region (fresh4).
pub fn fill_named(catalog: &Catalog, dialect: crate::exec::Dialect, question: &str, sql: &str) -> Option<String> {
    use sqlparser::ast::{BinaryOperator, Expr, Ident, TableFactor, Value};
    if SET_APART.is_match(question) {
        return None;
    }
    let links = catalog.link(question);
    edit_select(dialect, sql, |select, _| {
        let [from] = &select.from[..] else { return None };
        let TableFactor::Table { name, .. } = &from.relation else { return None };
        let table = catalog.tables.iter().find(|t| name.to_string().trim_matches('"') == t.name)?;
        if !from.joins.is_empty() {
            return None;
        }
        let mut add: Vec<(String, String)> = Vec::new();
        for l in links.iter().filter(|l| l.table == table.name) {
            let col = table.columns.iter().find(|c| c.name == l.column)?;
            let one = links.iter().filter(|m| m.table == l.table && m.column == l.column).count() == 1;
            let mentioned = Regex::new(&format!(r"(?i)\b{}\b", regex::escape(&l.column))).ok()?.is_match(sql) || sql.contains(&format!("'{}'", l.value));
            if one && !mentioned && !crate::shape::holds_dates(col) {
                add.push((l.column.clone(), l.value.clone()));
            }
        }
        if add.is_empty() {
            return None;
        }
        for (column, value) in add {
            let cond = Expr::BinaryOp { left: Box::new(Expr::Identifier(Ident::new(column))), op: BinaryOperator::Eq, right: Box::new(Expr::value(Value::SingleQuotedString(value))) };
            select.selection = Some(match select.selection.take() {
                Some(w) => Expr::BinaryOp { left: Box::new(w), op: BinaryOperator::And, right: Box::new(cond) },
                None => cond,
            });
        }
        Some(())
    })
}

/// `sql` (already guarded) with every value the question names of a column in the one `IN`
/// list the query has on that column, where the list holds only named values and leaves some
/// out (`region IN ('华北', '华南')` for "North China, South China and Southwest China"). `None`
/// where nothing is missing, or the column has no list or more than one.
///
/// Why: generation requires the first two named values only ([`crate::shape::values_pattern`]:
/// three intersected ran out of llguidance's fuel), and the model dropped the third (fresh5,
/// fresh7, fresh8).
pub fn complete_in_list(catalog: &Catalog, dialect: crate::exec::Dialect, question: &str, sql: &str) -> Option<String> {
    use sqlparser::ast::{BinaryOperator, Expr, Value};
    let links = catalog.link(question);
    if links.len() < 3 || SET_APART.is_match(question) {
        return None;
    }
    edit_select(dialect, sql, |select, _| {
        let selection = select.selection.as_mut()?;
        // Each IN list of the WHERE's conjuncts: its column and its text values.
        let listed: Vec<(String, Option<Vec<String>>)> = conjuncts(selection)
            .into_iter()
            .filter_map(|c| match c {
                Expr::InList { expr, list, negated: false } => Some((column_name(expr)?, list.iter().map(|v| text_value(v).map(String::from)).collect())),
                _ => None,
            })
            .collect();
        // What each column's one list lacks, where it holds named values only.
        let mut add: Vec<(String, Vec<String>)> = Vec::new();
        for (column, values) in &listed {
            let named: Vec<&str> = links.iter().filter(|l| &l.column == column).map(|l| l.value.as_str()).collect();
            let Some(values) = values else { continue };
            if listed.iter().filter(|(c, _)| c == column).count() > 1 || !values.iter().all(|v| named.contains(&v.as_str())) {
                continue;
            }
            let missing: Vec<String> = named.iter().filter(|n| !values.iter().any(|v| v == *n)).map(|n| n.to_string()).collect();
            if !missing.is_empty() {
                add.push((column.clone(), missing));
            }
        }
        if add.is_empty() {
            return None;
        }
        fn extend(e: &mut Expr, add: &[(String, Vec<String>)]) {
            match e {
                Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
                    extend(left, add);
                    extend(right, add);
                }
                Expr::Nested(inner) => extend(inner, add),
                Expr::InList { expr, list, negated: false } => {
                    if let Some((_, missing)) = column_name(expr).and_then(|c| add.iter().find(|(a, _)| *a == c)) {
                        list.extend(missing.iter().map(|v| Expr::value(Value::SingleQuotedString(v.clone()))));
                    }
                }
                _ => {}
            }
        }
        extend(selection, &add);
        Some(())
    })
}

/// `sql` (already guarded) split into a series by the column the question asks for beside its
/// time grain ([`crate::cues::series_column`]), where the model's query over one table groups by
/// time alone: the column selected after the time, grouped, and ordered after it. With the
/// column's name, for the chart's series. `None` where the query already selects or groups by
/// it, groups by more or other than its first item, or reads more than one table.
///
/// Why: the model answered "北京和上海2020年每个月的销售额对比", "办公椅、会议桌、书架这三样在2019年
/// 每个季度的销售额分别是多少" and "各个大区从2018到2020年每年的订单笔数是怎么变的？" with one
/// series for all of them together (fresh6, fresh11, fresh12).
pub fn add_series(catalog: &Catalog, dialect: crate::exec::Dialect, question: &str, sql: &str) -> Option<(String, String)> {
    use sqlparser::ast::{Expr, Ident, OrderByKind, SelectItem, TableFactor};
    let mut column = crate::cues::series_column(catalog, question)?;
    let out = edit_grouped(dialect, sql, |select, groups, order_by| {
        // The values named in an IN list: their column, as the query names them (北京 and 上海
        // are provinces and cities alike).
        // Only where the list holds the values the question named of the asked column.
        let named: Vec<String> = catalog.link(question).into_iter().filter(|l| l.column == column).map(|l| format!("'{}'", l.value)).collect();
        let listed = select.selection.iter().flat_map(conjuncts).find_map(|c| match c {
            Expr::InList { expr, list, negated: false } if list.len() > 1 && list.iter().all(|v| named.contains(&v.to_string())) => column_name(expr),
            _ => None,
        });
        if let Some(l) = listed {
            column = l;
        }
        let [from] = &select.from[..] else { return None };
        if !from.joins.is_empty() || !matches!(from.relation, TableFactor::Table { .. }) || groups.len() != 1 {
            return None;
        }
        // The time: the first item, by its alias or expression, is the one group.
        let (first, alias) = selected(select.projection.first()?)?;
        let (first, alias) = (first.clone(), alias.map(|a| a.value.clone()));
        let group = groups[0].to_string();
        if aggregate(&first) || (group != first.to_string() && Some(&group) != alias.as_ref()) {
            return None;
        }
        let named = |e: &Expr| column_name(e).as_deref() == Some(column.as_str());
        let already = select.projection.iter().any(|i| selected(i).is_some_and(|(e, _)| named(e) || e.to_string() == column));
        if already || select.projection[1..].iter().any(|i| !selected(i).is_some_and(|(e, _)| aggregate(e))) {
            return None;
        }
        let col = Expr::Identifier(Ident::new(column.clone()));
        select.projection.insert(1, SelectItem::UnnamedExpr(col.clone()));
        groups.push(col.clone());
        // Ordered by time: then by the series.
        if let Some(OrderByKind::Expressions(list)) = order_by.as_mut().map(|o| &mut o.kind) {
            if list.len() == 1 && (list[0].expr.to_string() == group || list[0].expr.to_string() == first.to_string()) {
                let mut next = list[0].clone();
                next.expr = col;
                next.options.asc = None;
                list.push(next);
            }
        }
        Some(())
    })?;
    Some((out, column))
}

/// `sql` (already guarded) split into a series by the column of an `IN` list of values the
/// question names, where the query groups by another column and neither selects nor groups by
/// the listed one: the column selected after the first group, grouped, and ordered after it.
/// With the column's name, for the chart's series. `None` where the question asks for the
/// values' figures together ([`crate::cues::together`]), or nothing applies.
///
/// Why: the model answered "For each category, compare the average order amount online vs
/// offline in 2020" with `WHERE channel IN ('线上', '线下') ... GROUP BY category`, one figure
/// for both channels (fresh6, fresh7 and fresh14, the set written this session).
pub fn split_in_list(catalog: &Catalog, dialect: crate::exec::Dialect, question: &str, sql: &str) -> Option<(String, String)> {
    use sqlparser::ast::{Expr, Ident, OrderByKind, SelectItem};
    if crate::cues::together(question) {
        return None;
    }
    let links = catalog.link(question);
    let mut column = None;
    let out = edit_grouped(dialect, sql, |select, groups, order_by| {
        // The first IN list of two or more values, each one the question names of its column.
        let listed = select.selection.iter().flat_map(conjuncts).find_map(|c| match c {
            Expr::InList { expr, list, negated: false } => {
                let col = column_name(expr)?;
                let named = |v: &Expr| text_value(v).is_some_and(|v| links.iter().any(|l| l.column == col && l.value == v));
                let distinct: std::collections::BTreeSet<String> = list.iter().map(|v| v.to_string()).collect();
                (distinct.len() > 1 && list.iter().all(named)).then_some(col)
            }
            _ => None,
        })?;
        let is_listed = |e: &Expr| column_name(e).as_deref() == Some(listed.as_str());
        if select.projection.iter().any(|i| selected(i).is_some_and(|(e, a)| is_listed(e) || a.is_some_and(|a| a.value == listed))) || groups.iter().any(is_listed) {
            return None;
        }
        let first = groups[0].to_string();
        let at = select.projection.iter().position(|i| selected(i).is_some_and(|(e, a)| e.to_string() == first || a.is_some_and(|a| a.value == first)))?;
        let col = Expr::Identifier(Ident::new(listed.clone()));
        select.projection.insert(at + 1, SelectItem::UnnamedExpr(col.clone()));
        groups.push(col.clone());
        if let Some(OrderByKind::Expressions(list)) = order_by.as_mut().map(|o| &mut o.kind) {
            if let Some(mut next) = list.first().cloned() {
                next.expr = col;
                next.options.asc = None;
                list.push(next);
            }
        }
        column = Some(listed);
        Some(())
    })?;
    Some((out, column?))
}

/// `sql` (already guarded) counting its rows where the question asks for a number of orders
/// ([`crate::cues::count_asked`]) and the query's one figure is another aggregate, bare or
/// rounded (`ROUND(SUM(amount),2)`): `COUNT(*) AS orders` in its place, and in its `ORDER BY`.
/// `None` where the query counts already, has other than one figure, or filters its groups, or
/// the question lists more figures than the count ([`Plan::Figures`] answers those).
///
/// Why: the model answered "成都2020年第三季度一共卖了多少单" and "Order count by quarter (1-4) for
/// Central China in 2020" with the sales amount (fresh6, fresh8). Required to count while it
/// wrote, it ran on where the question asked for more figures beside the count (three misses).
pub fn with_count(catalog: &Catalog, dialect: crate::exec::Dialect, question: &str, sql: &str) -> Option<String> {
    use sqlparser::ast::{Expr, Ident, OrderByKind, SetExpr, Statement};
    if !crate::cues::count_asked(question) || listed_figures(catalog, question).len() > 1 {
        return None;
    }
    edit_select(dialect, sql, |select, order_by| {
        if select.having.is_some() {
            return None;
        }
        let items: Vec<(Expr, Option<String>)> = select.projection.iter().map(|i| selected(i).map(|(e, a)| (e.clone(), a.map(|a| a.value.clone())))).collect::<Option<_>>()?;
        // Counting anywhere already (`ORDER BY COUNT(*)` beside the figure asked of the top one).
        if sql.to_ascii_uppercase().contains("COUNT(") {
            return None;
        }
        let figures: Vec<usize> = (0..items.len()).filter(|&i| aggregate(&items[i].0)).collect();
        let [at] = figures[..] else { return None };
        let (old, alias) = &items[at];
        let names: Vec<String> = std::iter::once(old.to_string()).chain(alias.clone()).collect();
        let count = match parse(dialect, "SELECT COUNT(*) AS orders")?.remove(0) {
            Statement::Query(q) => match *q.body {
                SetExpr::Select(s) => s.projection.into_iter().next()?,
                _ => return None,
            },
            _ => return None,
        };
        select.projection[at] = count;
        // The figure's name or its aggregate, bare or rounded (`ORDER BY SUM(amount)` beside
        // `ROUND(SUM(amount),2) AS amount`).
        let calls = aggregate_calls(old);
        if let Some(OrderByKind::Expressions(list)) = order_by.as_mut().map(|o| &mut o.kind) {
            for o in list.iter_mut().filter(|o| names.contains(&o.expr.to_string()) || (aggregate(&o.expr) && aggregate_calls(&o.expr) == calls)) {
                o.expr = Expr::Identifier(Ident::new("orders"));
            }
        }
        Some(())
    })
}

/// `sql` (already guarded) without the row conditions comparing a column with the number of a
/// threshold on a number of orders ([`Plan::Threshold`] where [`crate::cues::count_asked`]):
/// `WHERE amount < 300` for "订单数超过300单", where the query counts its groups. The
/// threshold is then composed on the count. `None` where nothing is misplaced.
///
/// Why: the model answered "2020年订单数超过300单的省份有哪些" and "2018年订单数超过250单的省份"
/// with `amount<300` among the row conditions and every province listed (fresh6, fresh8).
pub fn unplace_threshold(catalog: &Catalog, dialect: crate::exec::Dialect, question: &str, sql: &str) -> Option<String> {
    use sqlparser::ast::{BinaryOperator, Expr};
    let Some(Plan::Threshold { value, .. }) = plan(catalog, question) else { return None };
    if !crate::cues::count_asked(question) {
        return None;
    }
    edit_grouped(dialect, sql, |select, _, _| {
        let counts = select.projection.iter().any(|i| selected(i).is_some_and(|(e, _)| e.to_string().to_ascii_uppercase().starts_with("COUNT(")));
        let all: Vec<Expr> = conjuncts(select.selection.as_ref()?).into_iter().cloned().collect();
        let misplaced = |c: &Expr| match c {
            Expr::BinaryOp { left, op: BinaryOperator::Lt | BinaryOperator::LtEq | BinaryOperator::Gt | BinaryOperator::GtEq, right } => column_name(left).is_some() && right.to_string() == value,
            _ => false,
        };
        if !counts || !all.iter().any(misplaced) {
            return None;
        }
        select.selection = all.into_iter().filter(|c| !misplaced(c)).reduce(|a, b| Expr::BinaryOp { left: Box::new(a), op: BinaryOperator::And, right: Box::new(b) });
        Some(())
    })
}

/// `sql` (already guarded) without its `GROUP BY` where every item it selects is an aggregate,
/// so one total is asked for: `SELECT ROUND(SUM(amount),2) AS amount FROM sales WHERE ...
/// GROUP BY amount` groups by the raw column its alias shadows, and answers hundreds of sums of
/// one order each. `None` where there is nothing to take out.
///
/// Why: the model wrote that for "By what percentage did total sales amount grow from 2018 to
/// 2020?" (fresh8) and "2020年12月的全国销售额比11月..." (fresh11); the shape cannot tell an
/// aggregate's alias from a column in `GROUP BY`.
pub fn ungroup_totals(dialect: crate::exec::Dialect, sql: &str) -> Option<String> {
    edit_grouped(dialect, sql, |select, groups, order_by| {
        let all = select.projection.iter().all(|item| selected(item).is_some_and(|(e, _)| aggregate(e)));
        if !all || select.having.is_some() {
            return None;
        }
        groups.clear();
        // One row now: no order to keep (PostgreSQL refuses ORDER BY a column no longer grouped).
        *order_by = None;
        Some(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::ChartType;
    use crate::exec::Dialect::{Postgres, Sqlite};
    use serde_json::json;

    fn rows(columns: &[&str], rows: Vec<Vec<serde_json::Value>>) -> Rows {
        Rows { columns: columns.iter().map(|c| c.to_string()).collect(), rows }
    }

    /// The demo's sales table and glossary.
    fn catalog() -> Catalog {
        let col = |name: &str, ty: &str| crate::catalog::Column { name: name.into(), ty: ty.into(), comment: None, values: vec![], min: None };
        let columns = [
            ("order_id", "INTEGER"),
            ("order_date", "TEXT"),
            ("region", "TEXT"),
            ("province", "TEXT"),
            ("city", "TEXT"),
            ("category", "TEXT"),
            ("product", "TEXT"),
            ("channel", "TEXT"),
            ("quantity", "INTEGER"),
            ("amount", "REAL"),
            ("profit", "REAL"),
        ];
        Catalog {
            tables: vec![crate::catalog::Table { name: "sales".into(), columns: columns.iter().map(|(n, t)| col(n, t)).collect() }],
            aliases: vec![],
            terms: crate::demo::terms(),
            measures: crate::demo::measures(),
            dates: None,
        }
    }

    fn plan(question: &str) -> Option<Plan> {
        super::plan(&catalog(), question)
    }

    fn change(earlier: Period, later: Period, values: bool) -> Plan {
        Plan::Change { earlier, later, values, top: None, lowest: false }
    }

    fn composed(o: Outcome) -> Composed {
        match o {
            Outcome::Composed(c) => c,
            other => panic!("not composed: {other:?}"),
        }
    }

    #[test]
    fn plans_for_changes_and_thresholds() {
        let y = Period::Year;
        assert_eq!(plan("各大区2020年销售额比2019年增长了百分之多少"), Some(change(y(2019), y(2020), false)));
        assert_eq!(plan("华南地区各省份2020年的销售额同比增长了多少？"), Some(change(y(2019), y(2020), true)));
        assert_eq!(plan("2020年利润比2019年增长了几个百分点"), Some(change(y(2019), y(2020), true)));
        assert_eq!(plan("Which 3 regions grew sales the least from 2019 to 2020?"), Some(Plan::Change { earlier: y(2019), later: y(2020), values: true, top: Some(3), lowest: true }));
        let t = |op, v: &str| Some(Plan::Threshold { op, value: v.into() });
        assert_eq!(plan("2020年订单数超过300单的省份有哪些"), t(">", "300"));
        assert_eq!(plan("Which cities sold more than 2 million yuan in 2020?"), t(">", "2000000"));
        assert_eq!(plan("2019年销售额不少于150万的城市"), t(">=", "1500000"));
        assert_eq!(plan("2018年卖了300万元以上的商品"), t(">=", "3000000"));
        assert_eq!(plan("2019年订单数不超过200单的省份"), t("<=", "200"));
        assert_eq!(plan("Provinces with no more than 200 orders in 2019"), t("<=", "200"));
        assert_eq!(plan("Provinces with fewer than 200 orders in 2019"), t("<", "200"));
        // A top-n, a period, a span of months and a plain question are none of these.
        assert_eq!(plan("2020年销售额最高的5个城市"), None);
        assert_eq!(plan("以下5个城市2019年的销售额"), None);
        assert_eq!(plan("Monthly orders by channel over the last 6 months"), None);
        assert_eq!(plan("华北地区2019年3-5月的销售额,用折线图来表示"), None);
        assert_eq!(plan("2019年和2020年各大区的销售额"), None);
    }

    #[test]
    fn a_change_runs_the_query_for_both_periods_and_joins_them() {
        let sql = "SELECT region, ROUND(SUM(amount), 2) AS amount FROM sales WHERE substr(order_date, 1, 7) BETWEEN '2020-01' AND '2020-12' GROUP BY region ORDER BY amount DESC LIMIT 1000";
        let got = rows(&["region", "amount"], vec![vec![json!("华北"), json!(10.0)]]);
        let p = change(Period::Year(2019), Period::Year(2020), true);
        let c = composed(p.apply(Sqlite, sql, &got));
        assert_eq!(
            c.sql,
            "SELECT a.\"region\", b.\"amount\" AS \"amount_2019\", a.\"amount\" AS \"amount_2020\", ROUND((a.\"amount\" - b.\"amount\") * 100.0 / NULLIF(b.\"amount\", 0), 2) AS growth \
             FROM (SELECT region, ROUND(SUM(amount), 2) AS amount FROM sales WHERE substr(order_date, 1, 7) BETWEEN '2020-01' AND '2020-12' GROUP BY region) AS a \
             JOIN (SELECT region, ROUND(SUM(amount), 2) AS amount FROM sales WHERE substr(order_date, 1, 7) BETWEEN '2019-01' AND '2019-12' GROUP BY region) AS b ON a.\"region\" = b.\"region\" ORDER BY growth DESC NULLS LAST"
        );
        assert_eq!(c.chart, Some((ChartType::Bar, Some("region".into()), Some("growth".into()))));
        // The same in PostgreSQL's dialect, and it parses there.
        let pg = composed(p.apply(Postgres, sql, &got));
        assert!(parse(Postgres, &pg.sql).is_some(), "{}", pg.sql);
        // The top n fastest (or slowest) of all groups, not of the model's top n by figure.
        let top = Plan::Change { earlier: Period::Year(2019), later: Period::Year(2020), values: false, top: Some(3), lowest: true };
        let c = composed(top.apply(Sqlite, &sql.replace("LIMIT 1000", "LIMIT 3"), &got));
        assert!(c.sql.ends_with("ORDER BY growth ASC NULLS LAST LIMIT 3") && c.sql.matches("LIMIT").count() == 1, "{}", c.sql);
        assert_eq!(c.chart.as_ref().map(|c| c.0), Some(ChartType::Bar));
        // The one that changed most ("哪个大区增长最多"): a row, as a table.
        let one = Plan::Change { earlier: Period::Year(2019), later: Period::Year(2020), values: false, top: Some(1), lowest: false };
        assert_eq!(composed(one.apply(Sqlite, sql, &got)).chart.map(|c| c.0), Some(ChartType::Table));
        // A year written as its first four characters, as the guard prints it.
        let by_year = "SELECT region, SUM(amount) AS amount FROM sales WHERE substr(order_date, 1, 4) = '2020' GROUP BY region";
        assert!(composed(p.apply(Sqlite, by_year, &got)).sql.contains("substr(order_date, 1, 4) = '2019'"));
        // A total: one number when only the percentage is asked for.
        let total = "SELECT ROUND(SUM(amount),2) AS amount FROM sales WHERE substr(order_date,1,7) BETWEEN '2020-01' AND '2020-06'";
        let h = |y| Period::Range((y, 1), (y, 6));
        let c = composed(change(h(2019), h(2020), false).apply(Sqlite, total, &rows(&["amount"], vec![vec![json!(5.0)]])));
        assert!(c.sql.contains("BETWEEN '2019-01' AND '2019-06') AS b ON 1=1") && !c.sql.contains("ORDER BY"), "{}", c.sql);
        assert_eq!(c.chart, Some((ChartType::Number, None, Some("growth".into()))));
    }

    #[test]
    fn a_change_fails_or_keeps_where_it_cannot_be_composed() {
        let sql = "SELECT region, SUM(amount) AS amount FROM sales WHERE substr(order_date,1,7) BETWEEN '2020-01' AND '2020-12' GROUP BY region";
        let got = rows(&["region", "amount"], vec![vec![json!("华北"), json!(10.0)]]);
        let p = change(Period::Year(2019), Period::Year(2020), true);
        // Another period written; a series over time; two figures; a leftover date of the year.
        assert_eq!(p.apply(Sqlite, &sql.replace("2020-01", "2020-02"), &got), Outcome::Failed);
        assert_eq!(p.apply(Sqlite, sql, &rows(&["month", "amount"], vec![vec![json!("2020-01"), json!(1.0)]])), Outcome::Failed);
        assert_eq!(p.apply(Sqlite, sql, &rows(&["region", "amount", "orders"], vec![vec![json!("华北"), json!(1.0), json!(3)]])), Outcome::Failed);
        assert_eq!(p.apply(Sqlite, &sql.replace("GROUP BY", "AND order_date >= '2020-01-01' GROUP BY"), &got), Outcome::Failed);
        // A query that compares the two periods itself stands.
        let both = "SELECT region, ROUND((SUM(CASE WHEN substr(order_date,1,4)='2020' THEN amount END)-SUM(CASE WHEN substr(order_date,1,4)='2019' THEN amount END))*100.0/SUM(CASE WHEN substr(order_date,1,4)='2019' THEN amount END),2) AS growth FROM sales GROUP BY region";
        assert_eq!(p.apply(Sqlite, both, &got), Outcome::Keep);
    }

    #[test]
    fn figures_listed_side_by_side_are_all_selected() {
        let f = |cols: &[&str]| Some(Plan::Figures(cols.iter().map(|c| format!("sales.{c}")).collect()));
        assert_eq!(plan("2019年线上线下各渠道的销售额、利润和订单数"), f(&["amount", "profit", "order_id"]));
        assert_eq!(plan("List each province in Northwest China with its 2020 sales amount, number of orders and total profit"), f(&["amount", "order_id", "profit"]));
        assert_eq!(plan("Give me yearly sales and profit for 2018 through 2020."), f(&["amount", "profit"]));
        // One figure, or figures not listed together, or a figure that is a filter.
        assert_eq!(plan("2020年各地区的销售额"), None);
        assert_eq!(plan("2020年利润最高的城市的销售额"), None);
        assert_eq!(plan("2020年亏损的订单数"), None);
        assert_eq!(plan("2018年下半年各销售渠道的平均订单金额"), None);
        let sql = "SELECT channel, ROUND(SUM(profit), 2) AS profit FROM sales WHERE substr(order_date, 1, 7) BETWEEN '2019-01' AND '2019-12' GROUP BY channel ORDER BY profit DESC LIMIT 1000";
        let got = rows(&["channel", "profit"], vec![vec![json!("线上"), json!(1.0)]]);
        let p = Plan::Figures(vec!["sales.amount".into(), "sales.profit".into(), "sales.order_id".into()]);
        let c = composed(p.apply(Sqlite, sql, &got));
        assert_eq!(c.sql, "SELECT channel, ROUND(SUM(amount), 2) AS amount, ROUND(SUM(profit), 2) AS profit, COUNT(*) AS orders FROM sales WHERE substr(order_date, 1, 7) BETWEEN '2019-01' AND '2019-12' GROUP BY channel ORDER BY profit DESC LIMIT 1000");
        assert_eq!(c.chart.map(|c| c.0), Some(ChartType::Table));
        // An order by a figure no longer selected goes; a join is left alone.
        let p2 = Plan::Figures(vec!["sales.amount".into(), "sales.order_id".into()]);
        assert!(!composed(p2.apply(Sqlite, sql, &got)).sql.contains("ORDER BY"));
        assert_eq!(p.apply(Sqlite, "SELECT t.region, SUM(s.amount) AS amount FROM sales_targets t JOIN sales s ON s.region = t.region GROUP BY t.region", &got), Outcome::Keep);
    }

    #[test]
    fn a_total_grouped_by_its_own_figure_is_one_total() {
        let got =
            ungroup_totals(Sqlite, "SELECT ROUND(SUM(amount),2) AS amount FROM sales WHERE substr(order_date,1,7) BETWEEN '2020-12' AND '2020-12' GROUP BY amount ORDER BY amount DESC LIMIT 1000");
        assert_eq!(got.as_deref(), Some("SELECT ROUND(SUM(amount), 2) AS amount FROM sales WHERE substr(order_date, 1, 7) BETWEEN '2020-12' AND '2020-12' LIMIT 1000"));
        // Groups named in the select list, totals without GROUP BY, and window sums stay.
        assert_eq!(ungroup_totals(Sqlite, "SELECT region, SUM(amount) AS amount FROM sales GROUP BY region"), None);
        assert_eq!(ungroup_totals(Sqlite, "SELECT substr(order_date,1,7) AS month, COUNT(*) FROM sales GROUP BY month"), None);
        assert_eq!(ungroup_totals(Sqlite, "SELECT SUM(amount) FROM sales"), None);
        assert_eq!(ungroup_totals(Sqlite, "SELECT SUM(amount) OVER () AS total FROM sales GROUP BY region"), None);
    }

    #[test]
    fn a_measure_of_one_aggregate_replaces_the_models_sum() {
        let cat = catalog();
        let got = with_measures(&cat, Sqlite, "客单价最高的前10个省份是哪些？", "SELECT province, SUM(amount) AS amount FROM sales GROUP BY province ORDER BY amount DESC LIMIT 10");
        assert_eq!(got.as_deref(), Some("SELECT province, AVG(amount) AS avg_amount FROM sales GROUP BY province ORDER BY avg_amount DESC LIMIT 10"));
        let got = with_measures(&cat, Postgres, "2019年的客单价是多少？", "SELECT ROUND(SUM(amount),2) AS sales FROM sales WHERE substr(order_date,1,4)='2019'");
        assert_eq!(got.as_deref(), Some("SELECT ROUND(AVG(amount), 2) AS sales FROM sales WHERE substr(order_date, 1, 4) = '2019'"));
        // Already an average, another column's sum, or no measure asked: unchanged.
        assert_eq!(with_measures(&cat, Sqlite, "2019年的客单价", "SELECT ROUND(AVG(amount),2) AS avg_amount FROM sales"), None);
        assert_eq!(with_measures(&cat, Sqlite, "各省客单价和销量", "SELECT province, SUM(quantity) AS quantity FROM sales GROUP BY province"), None);
        assert_eq!(with_measures(&cat, Sqlite, "2019年的销售额", "SELECT SUM(amount) AS amount FROM sales"), None);
        // Inside a margin, beside the measure already written, or inside a ratio: unchanged.
        let margin = "SELECT province, ROUND(AVG(amount),2) AS avg_amount, ROUND(SUM(profit)*100.0/SUM(amount),2) AS margin FROM sales GROUP BY province";
        assert_eq!(with_measures(&cat, Sqlite, "2020年各省的客单价和利润率", margin), None);
        let margin = "SELECT province, ROUND(SUM(profit)*100.0/SUM(amount),2) AS margin FROM sales GROUP BY province";
        assert_eq!(with_measures(&cat, Sqlite, "2020年各省的客单价和利润率", margin), None);
        assert_eq!(with_measures(&cat, Sqlite, "各大区的销售额和客单价", "SELECT region, SUM(amount) AS amount, AVG(amount) AS avg_amount FROM sales GROUP BY region"), None);
        // An average quantity per order, which the model summed or counted.
        let got = with_measures(&cat, Sqlite, "avg units per order for Electronics in 2020", "SELECT SUM(quantity) AS quantity FROM sales WHERE category='电子产品'");
        assert_eq!(got.as_deref(), Some("SELECT AVG(quantity) AS avg_quantity FROM sales WHERE category = '电子产品'"));
        let got = with_measures(&cat, Sqlite, "笔记本电脑2019年平均一单买几台", "SELECT COUNT(*) AS orders FROM sales WHERE product='笔记本电脑' ORDER BY orders DESC");
        assert_eq!(got.as_deref(), Some("SELECT AVG(quantity) AS avg_quantity FROM sales WHERE product = '笔记本电脑' ORDER BY avg_quantity DESC"));
        // A count beside another figure, or asked for, stays.
        assert_eq!(with_measures(&cat, Sqlite, "各省客单价", "SELECT province, COUNT(*) AS orders, SUM(profit) AS profit FROM sales GROUP BY province"), None);
        assert_eq!(with_measures(&cat, Sqlite, "2019年的订单数和客单价", "SELECT COUNT(*) AS orders FROM sales"), None);
        // A quarter written without its month: the teaching data's.
        assert_eq!(
            mend_quarter(&cat, "SELECT (CAST(INTEGER) + 2) / 3 AS quarter, ROUND(SUM(amount), 2) AS amount FROM sales GROUP BY quarter").as_deref(),
            Some("SELECT (CAST(substr(order_date, 6, 2) AS INTEGER) + 2) / 3 AS quarter, ROUND(SUM(amount), 2) AS amount FROM sales GROUP BY quarter")
        );
        assert_eq!(mend_quarter(&cat, "SELECT (CAST(substr(order_date, 6, 2) AS INTEGER) + 2) / 3 AS quarter FROM sales"), None);
        // Dates compared as the months and years they are compared with.
        let d = |sql: &str| date_prefixes(&cat, Sqlite, sql);
        assert_eq!(
            d("SELECT COUNT(*) AS orders FROM sales WHERE order_date BETWEEN '2019-01' AND '2019-12'").as_deref(),
            Some("SELECT COUNT(*) AS orders FROM sales WHERE substr(order_date, 1, 7) BETWEEN '2019-01' AND '2019-12'")
        );
        assert_eq!(
            d("SELECT city FROM sales s WHERE s.order_date = '2019-03' OR '2020' <= s.order_date").as_deref(),
            Some("SELECT city FROM sales AS s WHERE substr(s.order_date, 1, 7) = '2019-03' OR '2020' <= substr(s.order_date, 1, 4)")
        );
        assert_eq!(d("SELECT city FROM sales WHERE substr(order_date,1,7) BETWEEN '2019-01' AND '2019-12' AND order_date >= '2019-01-05'"), None);
        assert_eq!(d("SELECT month FROM sales_targets WHERE month BETWEEN '2019-01' AND '2019-12'"), None);
        assert!(crate::cues::count_asked("number of loss-making orders per category in 2020") && crate::cues::count_asked("how many online orders") && crate::cues::count_asked("2020年有多少个单子"));
    }

    #[test]
    fn a_group_pinned_to_one_value_is_no_group() {
        let got =
            unpin_groups(Sqlite, "SELECT province, ROUND(SUM(amount),2) AS amount FROM sales WHERE province IN ('广东') AND substr(order_date,1,4)='2020' GROUP BY province ORDER BY amount DESC");
        assert_eq!(got.as_deref(), Some("SELECT ROUND(SUM(amount), 2) AS amount FROM sales WHERE province IN ('广东') AND substr(order_date, 1, 4) = '2020' ORDER BY amount DESC"));
        let got = unpin_groups(
            Postgres,
            "SELECT substr(order_date,1,7) AS month, category, ROUND(SUM(amount),2) AS amount FROM sales WHERE category IN ('电子产品') AND category='电子产品' GROUP BY month, category ORDER BY month",
        );
        assert_eq!(
            got.as_deref(),
            Some("SELECT substr(order_date, 1, 7) AS month, ROUND(SUM(amount), 2) AS amount FROM sales WHERE category IN ('电子产品') AND category = '电子产品' GROUP BY month ORDER BY month")
        );
        // Two values, a group not pinned, or nothing left to select: unchanged.
        assert_eq!(unpin_groups(Sqlite, "SELECT city, SUM(amount) AS amount FROM sales WHERE city IN ('北京', '上海') GROUP BY city"), None);
        assert_eq!(unpin_groups(Sqlite, "SELECT city, SUM(amount) AS amount FROM sales WHERE region='华北' GROUP BY city"), None);
        assert_eq!(unpin_groups(Sqlite, "SELECT city FROM sales WHERE city='北京' GROUP BY city"), None);
        assert_eq!(unpin_groups(Sqlite, "SELECT city, SUM(amount) AS amount FROM sales WHERE city='北京' OR city='上海' GROUP BY city"), None);
    }

    #[test]
    fn a_share_of_a_named_whole_moves_the_parts_conditions_into_the_figure() {
        let share = |q: &str| share_whole(q);
        assert_eq!(share("上海2020年下半年线上销售额占上海同期总销售额的百分比是多少").as_deref(), Some("上海同期总销售额的百分比是多少"));
        assert_eq!(share("What percentage of the 2020 sales amount came from the online channel?").as_deref(), Some("the 2020 sales amount "));
        assert_eq!(share("2020年电子产品销售额在各大区总销售额里分别占多少比例").as_deref(), Some("各大区总销售额"));
        assert_eq!(share("2020年亏损的订单占全年订单总数的百分之多少？").as_deref(), Some("全年订单总数的百分之多少？"));
        // Shares of each group, no whole named: the groups' own figures (a pie).
        assert_eq!(share("2019年各品类的销售额占比"), None);
        assert_eq!(share("What share of 2019 profit did each region contribute?"), None);
        assert_eq!(share("What fraction of East China's 2019 units came from each category? Pie please"), None);
        let got = part_share(
            Sqlite,
            "SELECT ROUND(SUM(amount),2) AS amount FROM sales WHERE province='上海' AND channel='线上' AND substr(order_date,1,7) BETWEEN '2020-07' AND '2020-12'",
            &["上海".into()],
        );
        assert_eq!(
            got.as_deref(),
            Some("SELECT ROUND(SUM(CASE WHEN channel = '线上' THEN amount ELSE 0 END) * 100.0 / NULLIF(SUM(amount), 0), 2) AS share_pct FROM sales WHERE province = '上海' AND substr(order_date, 1, 7) BETWEEN '2020-07' AND '2020-12'")
        );
        let got = part_share(Postgres, "SELECT region, COUNT(*) AS orders FROM sales WHERE profit<0 GROUP BY region ORDER BY orders DESC", &[]);
        assert_eq!(
            got.as_deref(),
            Some("SELECT region, ROUND(SUM(CASE WHEN profit < 0 THEN 1 ELSE 0 END) * 100.0 / NULLIF(COUNT(*), 0), 2) AS share_pct FROM sales GROUP BY region ORDER BY share_pct DESC")
        );
        // Another figure beside it, or a ratio already: the model's query stands.
        assert_eq!(part_share(Sqlite, "SELECT COUNT(*) AS orders, SUM(amount) AS amount FROM sales WHERE channel='线上'", &[]), None);
        assert_eq!(part_share(Sqlite, "SELECT ROUND(SUM(profit)*100.0/SUM(amount),2) AS margin FROM sales WHERE region='华东'", &[]), None);
        // Each group's share of a whole the part names, or a share past a threshold: not this plan.
        let per = |q: &str| match plan(q) {
            Some(Plan::Share { per_group, .. }) => Some(per_group),
            _ => None,
        };
        assert_eq!(per("华东地区各品类销售额占总销售额的比例"), Some(false));
        assert_eq!(per("2020年电子产品销售额在各大区总销售额里分别占多少比例"), Some(true));
        assert_eq!(per("亏损订单占全部订单的比例超过5%的省份"), None);
        let r = rows(&["category", "amount"], vec![vec![json!("家具"), json!(1.0)]]);
        assert_eq!(Plan::Share { whole: vec![], per_group: false }.apply(Sqlite, "SELECT category, SUM(amount) AS amount FROM sales WHERE region='华东' GROUP BY category", &r), Outcome::Keep);
        // Nothing but the period to move: the model's query stands.
        assert_eq!(part_share(Sqlite, "SELECT SUM(amount) AS amount FROM sales WHERE substr(order_date,1,4)='2020'", &[]), None);
    }

    #[test]
    fn a_series_gets_each_periods_change_from_the_one_before() {
        assert_eq!(plan("2020年每个月华南区的销售额环比增长率"), Some(Plan::Successive));
        let sql = "SELECT substr(order_date,1,7) AS month, ROUND(SUM(amount),2) AS amount FROM sales WHERE region='华南' GROUP BY month ORDER BY amount DESC LIMIT 1000";
        let r = rows(&["month", "amount"], vec![vec![json!("2020-01"), json!(10.0)], vec![json!("2020-02"), json!(12.5)]]);
        let c = composed(Plan::Successive.apply(Sqlite, sql, &r));
        assert_eq!(
            c.sql,
            "SELECT a.\"month\", a.\"amount\", ROUND((a.\"amount\" - LAG(a.\"amount\") OVER (ORDER BY a.\"month\")) * 100.0 / NULLIF(LAG(a.\"amount\") OVER (ORDER BY a.\"month\"), 0), 2) AS change_pct FROM (SELECT substr(order_date, 1, 7) AS month, ROUND(SUM(amount), 2) AS amount FROM sales WHERE region = '华南' GROUP BY month) AS a ORDER BY a.\"month\""
        );
        assert_eq!(c.chart, Some((ChartType::Line, Some("month".into()), Some("change_pct".into()))));
        // Not a series over time, or already reading the month before: kept.
        let by_region = rows(&["region", "amount"], vec![vec![json!("华南"), json!(10.0)]]);
        assert_eq!(Plan::Successive.apply(Sqlite, "SELECT region, SUM(amount) AS amount FROM sales GROUP BY region", &by_region), Outcome::Keep);
    }

    #[test]
    fn every_plain_column_selected_is_grouped() {
        let got = complete_group_by(Sqlite, "SELECT substr(order_date,1,7) AS month, category, ROUND(SUM(amount),2) AS amount FROM sales GROUP BY category ORDER BY amount DESC");
        assert_eq!(
            got.as_deref(),
            Some("SELECT substr(order_date, 1, 7) AS month, category, ROUND(SUM(amount), 2) AS amount FROM sales GROUP BY substr(order_date, 1, 7), category ORDER BY amount DESC")
        );
        let got = complete_group_by(Postgres, "SELECT t.region, s.channel, COUNT(*) FROM sales_targets t JOIN sales s ON s.region=t.region GROUP BY s.channel");
        assert_eq!(got.as_deref(), Some("SELECT t.region, s.channel, COUNT(*) FROM sales_targets AS t JOIN sales AS s ON s.region = t.region GROUP BY t.region, s.channel"));
        // All grouped (by name or by alias), no GROUP BY, or rows listed: unchanged.
        assert_eq!(complete_group_by(Sqlite, "SELECT substr(order_date,1,7) AS month, SUM(amount) FROM sales GROUP BY month"), None);
        assert_eq!(complete_group_by(Sqlite, "SELECT region, SUM(amount) FROM sales GROUP BY region"), None);
        assert_eq!(complete_group_by(Sqlite, "SELECT SUM(amount) FROM sales"), None);
    }

    #[test]
    fn a_threshold_filters_the_groups_on_their_figure() {
        // As the guard prints it: the number must not be found in `LIMIT 1000`.
        let sql = "SELECT province, COUNT(*) AS orders FROM sales GROUP BY province ORDER BY orders DESC LIMIT 1000";
        let got = rows(&["province", "orders"], vec![vec![json!("广东"), json!(400)]]);
        let p = |v: &str| Plan::Threshold { op: ">", value: v.into() };
        assert_eq!(composed(p("100").apply(Sqlite, sql, &got)).sql, format!("SELECT * FROM ({sql}) AS t WHERE \"orders\" > 100"));
        assert!(matches!(p("300").apply(Sqlite, sql, &got), Outcome::Composed(_)));
        // Not a total, nor a query that already compares with the number.
        assert_eq!(p("300").apply(Sqlite, "SELECT COUNT(*) AS orders FROM sales", &rows(&["orders"], vec![vec![json!(9)]])), Outcome::Keep);
        assert_eq!(p("300").apply(Sqlite, "SELECT province, COUNT(*) AS orders FROM sales GROUP BY province HAVING COUNT(*) > 300", &got), Outcome::Keep);
    }

    #[tokio::test]
    async fn rows_short_of_their_target_are_kept_where_asked() {
        let (_d, cat) = crate::catalog::demo_catalog().await;
        let f = |q: &str, sql: &str| past_target(&cat, Sqlite, q, sql);
        let listed = "SELECT t.month, t.target, s.amount FROM sales_targets t JOIN (SELECT region, substr(order_date,1,7) AS month, ROUND(SUM(amount),2) AS amount FROM sales GROUP BY region, month) s ON s.region=t.region AND s.month=t.month WHERE t.region='华北' AND t.month BETWEEN '2020-01' AND '2020-12' ORDER BY t.month";
        let short = f("2020年华北哪几个月没完成销售目标？", listed).unwrap();
        assert!(short.contains("t.month BETWEEN '2020-01' AND '2020-12' AND s.amount < t.target ORDER BY"), "{short}");
        let over = f("In which months of 2020 did North China beat its sales target?", listed).unwrap();
        assert!(over.contains("AND s.amount > t.target ORDER BY"), "{over}");
        // A grouped query compares its sum in HAVING.
        let grouped = "SELECT t.month, t.target, ROUND(SUM(s.amount),2) AS amount FROM sales_targets t JOIN sales s ON s.region=t.region AND substr(s.order_date,1,7)=t.month WHERE t.region='华南' GROUP BY t.month, t.target ORDER BY t.month";
        let having = f("Months when South China fell short of its target", grouped).unwrap();
        assert!(having.contains("GROUP BY t.month, t.target HAVING ROUND(SUM(s.amount), 2) < t.target"), "{having}");
        // Not asked, asked both ways, already compared, or not both figures listed: as it was.
        assert_eq!(f("2020年华北每个月的实际销售额和目标", listed), None);
        assert_eq!(f("哪些月份超额完成,哪些月份没完成目标", listed), None);
        assert_eq!(f("2020年华北哪几个月没完成销售目标？", &listed.replace(" ORDER BY", " AND s.amount<t.target ORDER BY")), None);
        let rate = "SELECT t.region, ROUND(SUM(s.amount)*100.0/SUM(t.target),2) AS completion FROM sales_targets t JOIN sales s ON s.region=t.region GROUP BY t.region";
        assert_eq!(f("Which regions fell short of their 2019 target?", rate), None);
        assert_eq!(crate::cues::chart_for(&cat, "2020年华北哪几个月没完成销售目标？"), Some(ChartType::Table));
    }

    #[tokio::test]
    async fn actual_figures_against_targets_are_answered_at_the_grain_asked() {
        let (_d, cat) = crate::catalog::demo_catalog().await;
        let f = |q: &str, sql: &str| regrain_target(&cat, Sqlite, q, sql);
        let join =
            "FROM sales_targets t JOIN (SELECT region, substr(order_date,1,7) AS month, ROUND(SUM(amount),2) AS amount FROM sales GROUP BY region, month) s ON s.region=t.region AND s.month=t.month";
        let totals = "FROM sales_targets AS t JOIN (SELECT region, substr(order_date, 1, 7) AS month, SUM(amount) AS amount FROM sales GROUP BY region, month) AS s ON s.region = t.region AND s.month = t.month";
        // Regions short of a year's target, which the model compared month by month: summed
        // per region, compared on the sums, the monthly totals unrounded.
        let monthly = format!("SELECT t.region, t.target, s.amount {join} WHERE t.month BETWEEN '2019-01' AND '2019-12' AND s.amount < t.target ORDER BY t.region LIMIT 1000");
        assert_eq!(
            f("Which regions fell short of their 2019 sales target?", &monthly).unwrap(),
            format!("SELECT t.\"region\" AS \"region\", ROUND(SUM(s.\"amount\"), 2) AS actual, ROUND(SUM(t.\"target\"), 2) AS target {totals} WHERE t.month BETWEEN '2019-01' AND '2019-12' GROUP BY t.\"region\" HAVING SUM(s.\"amount\") < SUM(t.\"target\") ORDER BY t.\"region\" LIMIT 1000")
        );
        // "By how much", no actual figure named: the gap alone, the target less the actual.
        let gap = f("Which regions fell short of their full-year 2019 target, and by how much?", &monthly).unwrap();
        assert!(gap.starts_with("SELECT t.\"region\" AS \"region\", ROUND(SUM(t.\"target\") - SUM(s.\"amount\"), 2) AS shortfall FROM"), "{gap}");
        // A rate month by month, which the model gave as one figure for the year.
        let year = format!("SELECT ROUND(SUM(s.amount)*100.0/SUM(t.target),2) AS completion {join} WHERE t.region='西北' AND t.month BETWEEN '2020-01' AND '2020-12' LIMIT 1000");
        let rate = f("How did Northwest China track against its monthly targets through 2020? Attainment rate per month please.", &year).unwrap();
        assert!(rate.starts_with("SELECT t.\"month\" AS \"month\", ROUND(SUM(s.\"amount\"), 2) AS actual, ROUND(SUM(t.\"target\"), 2) AS target, ROUND(SUM(s.\"amount\") * 100.0 / NULLIF(SUM(t.\"target\"), 0), 2) AS attainment_pct FROM"), "{rate}");
        assert!(rate.ends_with("WHERE t.region = '西北' AND t.month BETWEEN '2020-01' AND '2020-12' GROUP BY t.\"month\" ORDER BY t.\"month\" LIMIT 1000"), "{rate}");
        // How many months fell short: counted. Which months: listed, not counted.
        let counted = f("华北区2020年有几个月没完成销售目标？", &year.replace("西北", "华北")).unwrap();
        assert!(counted.starts_with("SELECT COUNT(*) AS 月数 FROM (SELECT t.\"month\" AS \"month\", ROUND(SUM(s.\"amount\"), 2) AS 实际, ROUND(SUM(t.\"target\"), 2) AS 目标 FROM"), "{counted}");
        assert!(counted.ends_with("HAVING SUM(s.\"amount\") < SUM(t.\"target\")) AS m LIMIT 1000"), "{counted}");
        assert!(!f("2020年华北哪几个月没完成销售目标？", &year.replace("西北", "华北")).unwrap().contains("COUNT"));
        // Not rewritten: a rate per region (the model's), one total, a top few, a question not
        // about targets, a join of the targets to the raw rows.
        let per_region = format!("SELECT t.region, ROUND(SUM(s.amount)*100.0/SUM(t.target),2) AS completion {join} WHERE t.month BETWEEN '2020-01' AND '2020-12' GROUP BY t.region");
        assert_eq!(f("2020年各大区销售目标完成率", &per_region), None);
        // A rate per region that the model left out, listing every month's two figures: the
        // rate per region, beside the two figures it listed.
        let every = format!("SELECT t.region, t.target, s.amount {join} WHERE t.month BETWEEN '2020-01' AND '2020-12' GROUP BY t.target, s.amount, t.region, t.month");
        let rated = f("2020年各大区的销售目标完成率分别是多少？", &every).unwrap();
        assert!(rated.starts_with("SELECT t.\"region\" AS \"region\", ROUND(SUM(s.\"amount\"), 2) AS 实际, ROUND(SUM(t.\"target\"), 2) AS 目标, ROUND(SUM(s.\"amount\") * 100.0 / NULLIF(SUM(t.\"target\"), 0), 2) AS 完成率 FROM"), "{rated}");
        assert!(rated.ends_with("GROUP BY t.\"region\" ORDER BY t.\"region\""), "{rated}");
        assert_eq!(f("What was South China's target completion rate for Q4 2019?", &year), None);
        assert_eq!(f("Which region had the best target completion rate in 2019?", &per_region), None);
        assert_eq!(f("2020年各大区的销售额", &per_region), None);
        let raw = "SELECT t.month, t.target, ROUND(SUM(s.amount),2) AS amount FROM sales_targets t JOIN sales s ON s.region=t.region AND substr(s.order_date,1,7)=t.month WHERE t.region='华南' GROUP BY t.month, t.target";
        assert_eq!(f("South China monthly target attainment in 2020", raw), None);
        // A rate asked as such is listed alone; beside both figures where the question holds
        // them against each other or asks for attainment in no word of a rate.
        let alone = f("Monthly target completion rate for North China in 2019", &year.replace("西北", "华北")).unwrap();
        assert!(alone.starts_with("SELECT t.\"month\" AS \"month\", ROUND(SUM(s.\"amount\") * 100.0 / NULLIF(SUM(t.\"target\"), 0), 2) AS attainment_pct FROM"), "{alone}");
        assert!(f("华南区2020年每个月目标完成率是多少", &year)
            .unwrap()
            .starts_with("SELECT t.\"month\" AS \"month\", ROUND(SUM(s.\"amount\") * 100.0 / NULLIF(SUM(t.\"target\"), 0), 2) AS 完成率 FROM"));
        assert!(f("South China monthly target attainment in 2020", &year).unwrap().contains("AS actual, ROUND(SUM(t.\"target\"), 2) AS target, ROUND("));
        // The regions past their target, with their rate: the model's rates, compared on the sums.
        let beat = f("Which regions beat their full-year 2020 target? show completion rate", &per_region).unwrap();
        assert!(beat.starts_with("SELECT t.\"region\" AS \"region\", ROUND(SUM(s.\"amount\") * 100.0 / NULLIF(SUM(t.\"target\"), 0), 2) AS attainment_pct FROM"), "{beat}");
        assert!(beat.ends_with("GROUP BY t.\"region\" HAVING SUM(s.\"amount\") > SUM(t.\"target\") ORDER BY t.\"region\""), "{beat}");
        assert_eq!(crate::cues::chart_for(&cat, "Which regions beat their full-year 2020 target? show completion rate"), Some(ChartType::Bar));
        // How far short each month, the gap's direction named: the target less the actual, every
        // month, alone.
        let monthly = format!("SELECT t.month, t.target, s.amount {join} WHERE t.region='西北' AND t.month BETWEEN '2019-01' AND '2019-12' ORDER BY t.month");
        let short = f("Northwest China 2019: how far short of target was each month? (target minus actual sales)", &monthly).unwrap();
        assert!(short.starts_with("SELECT t.\"month\" AS \"month\", ROUND(SUM(t.\"target\") - SUM(s.\"amount\"), 2) AS shortfall FROM"), "{short}");
        assert!(!short.contains("HAVING"), "{short}");
        // Charts: a gap alone in bars, beside both figures a table; a monthly rate a line.
        assert_eq!(crate::cues::chart_for(&cat, "Which regions fell short of their full-year 2019 target, and by how much?"), Some(ChartType::Bar));
        assert_eq!(crate::cues::chart_for(&cat, "Which regions fell short of their total 2020 sales target? Show actual sales, target and the shortfall"), Some(ChartType::Table));
        assert_eq!(crate::cues::chart_for(&cat, "South China monthly target attainment in 2020"), Some(ChartType::Line));
    }

    #[tokio::test]
    async fn a_list_of_named_values_holds_them_all() {
        let (_d, cat) = crate::catalog::demo_catalog().await;
        let f = |q: &str, sql: &str| complete_in_list(&cat, Sqlite, q, sql);
        let q = "Compare the 2019 sales amount of North China, South China and Southwest China";
        let two = "SELECT region, ROUND(SUM(amount),2) AS amount FROM sales WHERE region IN ('华北', '华南') AND substr(order_date,1,4)='2019' GROUP BY region";
        assert_eq!(f(q, two).unwrap(), "SELECT region, ROUND(SUM(amount), 2) AS amount FROM sales WHERE region IN ('华北', '华南', '西南') AND substr(order_date, 1, 4) = '2019' GROUP BY region");
        let cities = f("对比一下北京、上海、广州这三个城市2020年的销售额", "SELECT city, SUM(amount) FROM sales WHERE city IN ('上海', '北京') GROUP BY city").unwrap();
        assert!(cities.contains("city IN ('上海', '北京', '广州')"), "{cities}");
        // All there, a value not named, two lists on the column, or two values named: as it was.
        assert_eq!(f(q, &two.replace("'华南')", "'华南', '西南')")), None);
        assert_eq!(f(q, &two.replace("'华南')", "'东北')")), None);
        assert_eq!(f(q, &two.replace(" AND substr", " AND region IN ('华北') AND substr")), None);
        assert_eq!(f("Compare North China and South China in 2019", two), None);
        assert_eq!(f("除了西南，华北和华南2019年的销售额", two), None);
        assert_eq!(f("华北和华南2019年分别比西南高多少", two), None);
    }

    #[tokio::test]
    async fn a_count_threshold_written_on_a_column_moves_to_the_count() {
        let (_d, cat) = crate::catalog::demo_catalog().await;
        let f = |q: &str, sql: &str| unplace_threshold(&cat, Sqlite, q, sql);
        let q = "2020年订单数超过300单的省份有哪些";
        let sql = "SELECT province, COUNT(*) AS orders FROM sales WHERE amount<300 AND substr(order_date,1,4)='2020' GROUP BY province ORDER BY orders DESC";
        assert_eq!(f(q, sql).unwrap(), "SELECT province, COUNT(*) AS orders FROM sales WHERE substr(order_date, 1, 4) = '2020' GROUP BY province ORDER BY orders DESC");
        assert_eq!(f(q, "SELECT province, COUNT(*) AS orders FROM sales WHERE amount<300 GROUP BY province").unwrap(), "SELECT province, COUNT(*) AS orders FROM sales GROUP BY province");
        // Not a count asked, not counted, another number, or not grouped: as it was.
        assert_eq!(f("2020年销售额超过300的省份有哪些", sql), None);
        assert_eq!(f(q, &sql.replace("COUNT(*)", "SUM(amount)")), None);
        assert_eq!(f(q, &sql.replace("amount<300", "amount<500")), None);
        assert_eq!(f(q, "SELECT COUNT(*) AS orders FROM sales WHERE amount<300"), None);
    }

    #[tokio::test]
    async fn a_named_value_the_query_left_out_filters_it() {
        let (_d, cat) = crate::catalog::demo_catalog().await;
        let f = |q: &str, sql: &str| fill_named(&cat, Sqlite, q, sql);
        let q = "2020年华南线上渠道电子产品卖了多少钱";
        let two = "SELECT ROUND(SUM(amount),2) AS amount FROM sales WHERE region='华南' AND substr(order_date,1,4)='2020' AND channel='线上'";
        assert_eq!(f(q, two).unwrap(), "SELECT ROUND(SUM(amount), 2) AS amount FROM sales WHERE region = '华南' AND substr(order_date, 1, 4) = '2020' AND channel = '线上' AND category = '电子产品'");
        let compared =
            f("Compare furniture and electronics sales in East China for 2020", "SELECT category, SUM(amount) AS amount FROM sales WHERE category IN ('家具', '电子产品') GROUP BY category").unwrap();
        assert!(compared.contains("WHERE category IN ('家具', '电子产品') AND region = '华东'"), "{compared}");
        // A query with no WHERE gets one.
        assert!(f("电子产品的总销售额", "SELECT SUM(amount) FROM sales").unwrap().ends_with("WHERE category = '电子产品'"));
        // All named, the column named (grouped, or the value another way), set apart, or two
        // values of the column: as it was.
        assert_eq!(f(q, &format!("{two} AND category='电子产品'")), None);
        assert_eq!(f("电子产品各大区的销售额", "SELECT region, category, SUM(amount) FROM sales GROUP BY region, category"), None);
        assert_eq!(f("除了电子产品，各品类的销售额", "SELECT SUM(amount) FROM sales"), None);
        assert_eq!(f("北京和上海的销售额", "SELECT SUM(amount) FROM sales"), None);
    }

    #[tokio::test]
    async fn a_list_of_named_values_beside_other_groups_is_a_series() {
        let (_d, cat) = crate::catalog::demo_catalog().await;
        let f = |q: &str, sql: &str| split_in_list(&cat, Sqlite, q, sql);
        let sql = "SELECT category, ROUND(AVG(amount),2) AS avg_amount FROM sales WHERE channel IN ('线上', '线下') AND channel IN ('线上', '线下') GROUP BY category ORDER BY avg_amount DESC";
        let (out, series) = f("For each category, compare the average order amount online vs offline in 2020.", sql).unwrap();
        assert_eq!(series, "channel");
        assert!(out.starts_with("SELECT category, channel, ROUND(AVG(amount), 2) AS avg_amount FROM sales"), "{out}");
        assert!(out.ends_with("GROUP BY category, channel ORDER BY avg_amount DESC, channel"), "{out}");
        // Asked together, already grouped, one value, or values the question does not name: as it was.
        assert_eq!(f("线上和线下加起来各品类的平均订单金额", sql), None);
        assert_eq!(f("线上和线下各品类的平均订单金额", "SELECT category, channel, AVG(amount) FROM sales WHERE channel IN ('线上', '线下') GROUP BY category, channel"), None);
        assert_eq!(f("线上各品类的平均订单金额", "SELECT category, AVG(amount) FROM sales WHERE channel IN ('线上') GROUP BY category"), None);
        assert_eq!(f("各品类的平均订单金额", sql), None);
    }

    #[tokio::test]
    async fn figures_over_time_split_into_the_series_asked_for() {
        let (_d, cat) = crate::catalog::demo_catalog().await;
        let f = |q: &str, sql: &str| add_series(&cat, Sqlite, q, sql);
        let monthly =
            "SELECT substr(order_date,1,7) AS month, ROUND(SUM(amount),2) AS amount FROM sales WHERE city IN ('北京', '上海') AND substr(order_date,1,4)='2020' GROUP BY month ORDER BY month";
        let (sql, series) = f("北京和上海2020年每个月的销售额对比", monthly).unwrap();
        assert_eq!(series, "city");
        assert_eq!(sql, "SELECT substr(order_date, 1, 7) AS month, city, ROUND(SUM(amount), 2) AS amount FROM sales WHERE city IN ('北京', '上海') AND substr(order_date, 1, 4) = '2020' GROUP BY month, city ORDER BY month, city");
        let yearly = "SELECT substr(order_date,1,4) AS year, COUNT(*) AS orders FROM sales GROUP BY year ORDER BY year";
        assert_eq!(f("各个大区从2018到2020年每年的订单笔数是怎么变的？", yearly).unwrap().1, "region");
        // Their total, no time grain, the series already there, or a join: as it was.
        assert_eq!(f("北京和上海2020年每个月的销售额合计", monthly), None);
        assert_eq!(f("北京和上海2020年每个月加起来的销售额", monthly), None);
        // The series asked (各渠道), not the column of a list of other values.
        let two_regions = "SELECT substr(order_date,1,7) AS month, SUM(amount) FROM sales WHERE region IN ('华东', '华南') GROUP BY month ORDER BY month";
        assert_eq!(f("2020年华东和华南每个月各渠道的销售额", two_regions).unwrap().1, "channel");
        assert_eq!(f("北京和上海2020年的销售额对比", monthly), None);
        assert_eq!(f("2020年每个月各渠道的销售额", "SELECT substr(order_date,1,7) AS month, channel, SUM(amount) FROM sales GROUP BY month, channel"), None);
        assert_eq!(f("2020年每个月的销售额", monthly), None);
    }

    #[test]
    fn a_number_of_orders_asked_is_counted_and_ranked() {
        let cat = catalog();
        let f = |q: &str, sql: &str| with_count(&cat, Sqlite, q, sql);
        assert_eq!(f("成都2020年第三季度一共卖了多少单", "SELECT ROUND(SUM(amount),2) AS amount FROM sales WHERE city='成都'").unwrap(), "SELECT COUNT(*) AS orders FROM sales WHERE city = '成都'");
        assert_eq!(
            f("Order count by quarter for Central China in 2020", "SELECT quarter, SUM(amount) AS amount FROM sales GROUP BY quarter ORDER BY amount DESC").unwrap(),
            "SELECT quarter, COUNT(*) AS orders FROM sales GROUP BY quarter ORDER BY orders DESC"
        );
        assert_eq!(
            f("各城市的订单数", "SELECT city, ROUND(SUM(amount),2) AS amount FROM sales GROUP BY city ORDER BY SUM(amount) DESC").unwrap(),
            "SELECT city, COUNT(*) AS orders FROM sales GROUP BY city ORDER BY orders DESC"
        );
        // Counted already (anywhere), not asked, more figures, or groups filtered: as it was.
        assert_eq!(f("订单数最多的城市销售额是多少", "SELECT city, SUM(amount) FROM sales GROUP BY city ORDER BY COUNT(*) DESC LIMIT 1"), None);
        assert_eq!(f("2020年一共多少单", "SELECT COUNT(*) AS orders FROM sales"), None);
        assert_eq!(f("2020年的销售额", "SELECT SUM(amount) AS amount FROM sales"), None);
        assert_eq!(f("各渠道的销售额和订单数", "SELECT channel, SUM(amount), SUM(profit) FROM sales GROUP BY channel"), None);
        assert_eq!(f("各渠道的销售额和订单数", "SELECT channel, SUM(amount) FROM sales GROUP BY channel"), None);
        assert_eq!(f("订单数超过300的城市", "SELECT city, SUM(amount) FROM sales GROUP BY city HAVING SUM(amount) > 300"), None);
    }

    #[test]
    fn a_group_named_by_an_alias_in_a_join_is_grouped_by_its_expression() {
        let joined = "SELECT substr(s.month,1,7) AS month, ROUND(SUM(s.amount)*100.0/SUM(t.target),2) AS achievement FROM sales_targets t JOIN (SELECT region, substr(order_date,1,7) AS month, SUM(amount) AS amount FROM sales GROUP BY region, month) s ON s.region=t.region AND s.month=t.month GROUP BY month";
        assert!(unalias_groups(Sqlite, joined).unwrap().ends_with("GROUP BY substr(s.month, 1, 7)"));
        assert!(unalias_groups(Sqlite, "SELECT t.month AS month, SUM(s.amount) FROM sales_targets t JOIN sales s ON s.region=t.region GROUP BY month").unwrap().ends_with("GROUP BY t.month"));
        // One table: as it was.
        assert_eq!(unalias_groups(Sqlite, "SELECT substr(order_date,1,7) AS month, SUM(amount) FROM sales GROUP BY month"), None);
    }
}
