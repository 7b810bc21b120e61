//! The shape every generated query must have, as one regular expression built from the
//! catalogue and the question: a flat `SELECT ... FROM table [JOIN ...] [WHERE ...] [GROUP BY
//! ...] [ORDER BY ...] [LIMIT n]` in the teaching data's layout, whose select list and
//! conditions name only the columns of the tables it reads, and whose conditions compare a listed
//! text column only to values the question names, the date column only to a date and only when
//! the question names a period, and a number column only to a number the question gives (or to
//! zero when it asks about losses).
//!
//! Why: the fine-tuned model, held only to the JSON reply and the question's cues, invented names
//! and values where it was unsure: `WHERE target='product'` on `sales`, `region='中国'`,
//! `category='品类'`, `city='淑'`, `order_date` on `sales_targets`, `TASTED_TARGET`, clauses
//! repeated until `max_tokens`: 11 of the 40 misses on the three fresh sets. Held to real names,
//! it then filtered what the question never asked for (`city='深圳'`, `city IS NULL`, `amount >
//! 5`, `order_id BETWEEN 0 AND 99`), hence the question-dependent parts. Generation under this
//! expression can write none of those; it writes the model's likeliest query that remains.
//! Fresh sets: 66.7 / 60.0 / 40.0% -> 76.7 / 70.0 / 60.0% with the cues of the same change, and
//! 50.0% -> 60.7% on a fourth set written after it (docs/BENCHMARKS.md).
//!
//! Left out on purpose: subqueries, `WITH`, `UNION` and `HAVING` (no teaching example uses them;
//! the guard would accept them, the model never learnt them), but for one subquery written one
//! way, a table kept by month joined to the dated table's monthly totals ([`monthly_join`]:
//! completion rates, months short of target); and aliases used before they are
//! defined (a regular expression cannot remember which aliases a query defined: lists after
//! `GROUP BY` and `ORDER BY` take any lower-case or Chinese name).

use crate::catalog::{Catalog, Column, Table};

/// A name the query defines (`AS amount`, `AS 实际销售额`).
const NAME: &str = r"[A-Za-z_\p{Han}][A-Za-z0-9_\p{Han}]*";
/// A name after `GROUP BY` / `ORDER BY` that is not a keyword (those are upper case): lower
/// case throughout, as every alias of the teaching data is. Why not upper case after the first
/// letter: the model sorted "the 3 products with the least profit" by `profitDATEDURID`, a name
/// no query defines, on three fresh questions.
const LIST_NAME: &str = r"[a-z_\p{Han}][a-z0-9_\p{Han}]*";
/// A number.
const NUM: &str = r"-?[0-9]+(\.[0-9]+)?";
/// A string literal (no quote, backslash or control character: the SQL sits in a JSON string).
const LIT: &str = r#"'[^'"\\\x00-\x1f]*'"#;
/// A date or a part of one, as the date column holds it (`'2019'`, `'2019-03'`, `'2019-03-01'`,
/// `'03'` from `substr(d,6,2)`).
const DATE_LIT: &str = r"'([0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?)?|0[1-9]|1[0-2])'";
/// Comparison operators.
const CMP: &str = r" ?(=|!=|<>|<=|>=|<|>) ?";
/// Aggregate functions.
pub(crate) const AGGREGATES: &[&str] = &["SUM", "AVG", "COUNT", "MIN", "MAX", "TOTAL"];
/// Functions that take a date apart.
const DATE_FUNCS: &[&str] = &["substr", "SUBSTR", "strftime", "date", "DATE"];
/// Functions of one row's values.
const SCALARS: &[&str] = &["ROUND", "ABS", "COALESCE", "IFNULL", "NULLIF", "CAST", "substr", "SUBSTR", "strftime", "date", "DATE", "LENGTH", "UPPER", "LOWER", "printf"];
/// Keywords that may appear inside an expression of the select list or a join condition.
const KEYWORDS: &[&str] = &["DISTINCT", "CASE", "WHEN", "THEN", "ELSE", "END", "AND", "OR", "NOT", "NULL", "IS", "IN", "LIKE", "BETWEEN", "INTEGER", "REAL", "TEXT"];

fn alt<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    format!("({})", items.into_iter().map(|s| s.as_ref().to_string()).collect::<Vec<_>>().join("|"))
}

fn escaped<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    alt(names.into_iter().map(regex::escape))
}

/// A run of words and separators where every word is one of `words` (the columns, each with
/// its qualifier), a function, a keyword, a number or `AS name`; separators are punctuation,
/// operators, spaces and string literals. The identifier columns `ids` appear only counted
/// (in `calls`) or listed (`SELECT order_id, ...`): summing or averaging an identifier means
/// nothing. An aggregate is one word with its argument, one of `calls` ([`aggregate_calls`]);
/// without `calls`, there is none (rows listed one by one). A function that takes a date apart
/// (`substr`, `strftime`, `date`) is one word with its argument, a column of `dates` (the time
/// columns, each with its qualifier); without `dates`, there is none.
///
/// Why the argument is fixed: with `substr` a free word, the model kept from grouping a total
/// by month wrote `substr(order_id, 1,7) AS month` instead, and grouped "2019年华东地区的销售额"
/// and "2020年平均每笔订单的销售额" into a thousand rows of order-number prefixes (a miss on
/// each of fresh3, fresh4 and fresh5, and three questions outside the schema answered that way).
fn expr(words: &str, ids: Option<&str>, calls: Option<&str>, dates: Option<&str>) -> String {
    let listed = ids.map_or(String::new(), |ids| format!("|{ids},"));
    let calls = calls.map_or(String::new(), |c| format!("|{c}"));
    let dated = dates.map_or(String::new(), |d| format!(r"|(substr|SUBSTR)\({d}, ?[0-9]+, ?[0-9]+\)|(strftime|STRFTIME)\('[%A-Za-z-]+', ?{d}\)|(date|DATE)\({d}\)"));
    let funcs = SCALARS.iter().filter(|f| !DATE_FUNCS.contains(f));
    let word = format!("({words}{dated}{calls}|{}|{}|{NUM}|AS {NAME}{listed})", escaped(funcs.copied()), escaped(KEYWORDS.iter().copied()));
    let sep = format!(r"([ (),*+\-/<>=!%|]|{LIT})");
    format!("{sep}*({word}{sep}+)*{word}?")
}

/// The aggregates a select list may write, each one word with its argument: `COUNT(*)`,
/// `COUNT([DISTINCT] column)`; `SUM`, `AVG` and `TOTAL` of a number column (`numbers`); `MIN`
/// and `MAX` of any other (`others`: dates too); and the expression of each measure the
/// question asks for (`measures`, [`crate::cues::measure_regex`]). `numbers` and `others` leave
/// out the column each measure opens with ([`crate::cues::measure_opening`]): it is aggregated
/// only inside its measure.
///
/// Why typed: with any column summable, the model answered plain totals with
/// `SUM(sales.amount)*100.0/SUM(category)` (four misses on fresh1, fresh8 and fresh11). Why the
/// measures: it answered "profit margin of each category" with `ROUND(SUM(profit),2)` (five
/// misses on fresh6-11); held only to contain the margin somewhere, it ran on with conditions
/// until `max_tokens` after `SUM(profit)` rather than go back.
fn aggregate_calls(all: &str, numbers: Option<&str>, others: Option<&str>, measures: &[String]) -> String {
    let mut calls = vec![format!(r"COUNT\((\*|(DISTINCT )?{all})\)")];
    if let Some(n) = numbers {
        calls.push(format!(r"(SUM|AVG|TOTAL|MIN|MAX)\({n}\)"));
    }
    if let Some(o) = others {
        calls.push(format!(r"(MIN|MAX)\({o}\)"));
    }
    calls.extend(measures.iter().cloned());
    alt(calls)
}

/// An identifier column (`id`, `order_id`): counted, never summed or compared as an amount.
pub(crate) fn is_id(c: &Column) -> bool {
    c.name.eq_ignore_ascii_case("id") || c.name.to_ascii_lowercase().ends_with("_id")
}

/// Whether every listed value of `c` is a date or a month (`2019-03`): a column such as a
/// targets table's `month`, compared like a date column rather than to named values.
pub(crate) fn holds_dates(c: &Column) -> bool {
    static DATE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| regex::Regex::new(r"^[0-9]{4}(-[0-9]{2}){0,2}$").expect("valid pattern"));
    !c.values.is_empty() && c.values.iter().all(|v| DATE.is_match(v))
}

/// The values of `c` a condition may name: those of `named` (the question's) that `c` holds,
/// or with `named` unset all of them; only values that can be written inside the JSON string
/// (no quote or backslash).
fn writable<'a>(c: &'a Column, named: Option<&[String]>) -> Vec<&'a str> {
    c.values.iter().filter(|v| named.is_none_or(|n| n.contains(v))).map(String::as_str).filter(|v| !v.contains(['\'', '"', '\\']) && !v.chars().any(char::is_control)).collect()
}

/// One condition on `c`, typed by what the catalogue knows of it.
fn predicates(qual: &str, c: &Column, date: Option<&str>, named: &Named) -> Vec<String> {
    let col = format!("{qual}{}", regex::escape(&c.name));
    let months = holds_dates(c);
    if (months || Some(c.name.as_str()) == date) && !named.period {
        return vec![];
    }
    if months {
        return vec![
            format!("{col}{CMP}{DATE_LIT}"),
            format!("{col} BETWEEN {DATE_LIT} AND {DATE_LIT}"),
            format!(r"{col} (NOT )?IN \({DATE_LIT}(, ?{DATE_LIT})*\)"),
            format!(r"substr\({col}, ?[0-9]+, ?[0-9]+\){CMP}{DATE_LIT}"),
            format!("{col} ?>= ?{DATE_LIT} AND {col} ?<=? ?{DATE_LIT}"),
        ];
    }
    if Some(c.name.as_str()) == date {
        let dx = alt([col.clone(), format!(r"substr\({col}, ?[0-9]+, ?[0-9]+\)"), format!(r"strftime\('[%A-Za-z-]+', ?{col}\)"), format!(r"(date|DATE)\({col}\)")]);
        let cast = format!(r"\(?CAST\(substr\({col}, ?[0-9]+, ?[0-9]+\) AS INTEGER\)(\+[0-9]+\)/[0-9]+)?");
        return vec![
            format!("{dx}{CMP}{DATE_LIT}"),
            format!("{dx} BETWEEN {DATE_LIT} AND {DATE_LIT}"),
            format!("{dx} ?>= ?{DATE_LIT} AND {dx} ?<=? ?{DATE_LIT}"),
            format!(r"{dx} (NOT )?IN \({DATE_LIT}(, ?{DATE_LIT})*\)"),
            format!("{cast}{CMP}{NUM}"),
            format!("{cast} BETWEEN {NUM} AND {NUM}"),
        ];
    }
    if c.is_number() {
        let Some(numbers) = &named.numbers else {
            return vec![format!("{col}{CMP}{NUM}"), format!("{col} BETWEEN {NUM} AND {NUM}")];
        };
        // Identifiers are not amounts.
        if is_id(c) {
            return vec![];
        }
        // Above or below zero where the question asks about a sign (a loss: `profit<0`), or a
        // number the question gives.
        // Only a column that holds values below zero (profit, not amount or quantity, when the
        // catalogue read its minimum), on the side the question asks for: the model answered
        // "亏损订单最多的5个产品" with `quantity<0 AND amount<0` and with `profit > 0 AND profit<0`.
        let mut preds = Vec::new();
        if c.min.is_none_or(|m| m < 0.0) {
            match named.sides {
                (true, true) => preds.push(format!("{col} ?(<|>|<=|>=) ?0")),
                (true, false) => preds.push(format!("{col} ?(<|<=) ?0")),
                (false, true) => preds.push(format!("{col} ?(>|>=) ?0")),
                (false, false) => {}
            }
        }
        if !numbers.is_empty() {
            let n = escaped(numbers.iter().map(String::as_str));
            preds.push(format!("{col}{CMP}{n}"));
            preds.push(format!("{col} BETWEEN {n} AND {n}"));
        }
        return preds;
    }
    let v = match (c.values.is_empty(), writable(c, named.values.as_deref())) {
        (true, _) => LIT.to_string(),
        // A listed column the question names no value of is not filtered at all.
        (false, values) if values.is_empty() => return vec![],
        // Two values of one column named side by side ("线上和线下", "online versus offline")
        // are compared or grouped, never filtered to one of them.
        // The list is no longer than the values named: unbounded, the model listed '家具' nine
        // times over.
        (false, values) if values.len() > 1 && named.values.is_some() => {
            let (v, more) = (format!("'{}'", escaped(values.iter().copied())), values.len() - 1);
            return vec![format!(r"{col} IN \({v}(, ?{v}){{1,{more}}}\)")];
        }
        (false, values) => format!("'{}'", escaped(values)),
    };
    // A listed column, with the question known, is compared only to the values it names: no
    // LIKE with any text, no NULL test (the model wrote `channel LIKE '打印机'` for a product).
    // (Two or more named values returned above: one is left.)
    if !c.values.is_empty() && named.values.is_some() {
        return vec![format!("{col}{CMP}{v}"), format!(r"{col} (NOT )?IN \({v}\)")];
    }
    vec![format!("{col}{CMP}{v}"), format!(r"{col} (NOT )?IN \({v}(, ?{v})*\)"), format!("{col} BETWEEN {v} AND {v}"), format!("{col} (NOT )?LIKE {LIT}"), format!("{col} IS (NOT )?NULL")]
}

/// What the question allows conditions to name.
struct Named {
    /// Values of listed columns; `None`: any value a column holds.
    values: Option<Vec<String>>,
    /// Whether dates may be compared (the question names a period, or no question is known).
    period: bool,
    /// The numbers the question gives ([`crate::cues::amounts`]), which number columns may be
    /// compared to; `None`: any number.
    numbers: Option<Vec<String>>,
    /// Which side of zero number columns may be compared to: (below, above)
    /// ([`crate::cues::sign_sides`]).
    sides: (bool, bool),
    /// Whether rows may be grouped by a time column ([`crate::cues::over_time`]).
    over_time: bool,
    /// Whether a number column may be compared with another table's
    /// ([`crate::cues::short_or_over`]: `s.amount < t.target`).
    versus: bool,
}

/// ` WHERE` and its conditions over `columns` (each with its qualifier; predicates joined by
/// AND), optional; nothing when no column can be compared.
fn conditions(columns: &[(&str, &Column)], date: Option<&str>, named: &Named) -> String {
    let (mut dated, mut preds) = (Vec::new(), Vec::new());
    for (qual, c) in columns {
        let p = predicates(qual, c, date, named);
        if is_time(c, date) {
            dated.extend(p);
        } else {
            preds.extend(p);
        }
    }
    // An actual figure against its target, in a join (`s.amount < t.target`), when the question
    // asks which rows fell short or beat it.
    if named.versus {
        let numbers = |q: &str| columns.iter().filter(|(qual, c)| *qual == q && c.is_number() && !is_id(c)).map(|(_, c)| regex::escape(&c.name)).collect::<Vec<_>>();
        let mut quals: Vec<&str> = columns.iter().map(|(q, _)| *q).collect();
        quals.dedup();
        for (i, a) in quals.iter().enumerate() {
            for b in &quals[i + 1..] {
                let (na, nb) = (numbers(a), numbers(b));
                if !na.is_empty() && !nb.is_empty() {
                    let (x, y) = (format!("{a}{}", alt(&na)), format!("{b}{}", alt(&nb)));
                    preds.push(format!("{x}{CMP}{y}"));
                    preds.push(format!("{y}{CMP}{x}"));
                }
            }
        }
    }
    // Every shipped gold query has at most three conditions, no parentheses and no OR (a
    // column's alternatives are an IN list); a fourth condition is allowed. Unbounded, a model
    // unsure of its filter repeats conditions until `max_tokens`; with OR it chained a
    // question's filters into alternatives (`... OR city IN ('上海','北京') OR region='华东'`).
    // At most one of them is the period (a range written as a `>=` and `<` pair counts as
    // one), with up to two others before it and one after: the model repeated it, or wrote
    // contradictory ones (`BETWEEN '2018' AND '2020' AND substr(order_date,1,7)='2018' AND
    // ...`, `t.month BETWEEN '2020-01' AND '2020-12' AND s.month='2020-01'`), on fresh6.
    let atoms = match (alt(&dated), alt(&preds)) {
        _ if dated.is_empty() && preds.is_empty() => return String::new(),
        (_, o) if dated.is_empty() => format!("{o}( AND {o}){{0,3}}"),
        (d, _) if preds.is_empty() => d,
        (d, o) => format!("({o} AND ){{0,2}}({d}|{o})( AND {o})?"),
    };
    format!("( WHERE {atoms})?")
}

/// What may follow the conditions: one `GROUP BY` (required when `grouped`, none otherwise)
/// with maybe one `HAVING`, one `ORDER BY`, one `LIMIT`, in that order. `words`: the columns,
/// each with its qualifier. A group's total is compared only to a number the question gives
/// (`HAVING SUM(amount)>2000000` for "sold more than 2 million"; any number with no question
/// known): the teaching data's groups that pass a threshold.
fn tail(words: &str, grouped: bool, named: &Named) -> String {
    // A column, a name, a number, or one function of a column (`SUM(amount)`).
    let call = format!(r"{}\((DISTINCT )?({words}|\*)\)", escaped(AGGREGATES.iter().chain(SCALARS).copied()));
    let item = format!(r"({words}|{LIST_NAME}|{call}|{NUM})( (ASC|DESC))?");
    let list = format!("{item}(, ?{item})*");
    let numbers = match &named.numbers {
        None => Some(NUM.to_string()),
        Some(n) if n.is_empty() => None,
        Some(n) => Some(escaped(n.iter().map(String::as_str))),
    };
    let totals = format!(r"{}\(({words}|\*)\)", escaped(AGGREGATES.iter().copied()));
    // An aggregate, not an alias: `HAVING amount>N` reads the column the alias shadows (in
    // SQLite, one arbitrary row's), and PostgreSQL refuses output names there.
    let having = numbers.map_or(String::new(), |n| format!("( HAVING {totals}{CMP}{n})?"));
    let group = if grouped { format!(" GROUP BY {list}{having}") } else { String::new() };
    format!("{group}( ORDER BY {list})?( LIMIT [0-9]+)?")
}

/// Whether `c` holds time: the date column, or a column of months.
fn is_time(c: &Column, date: Option<&str>) -> bool {
    Some(c.name.as_str()) == date || holds_dates(c)
}

/// The values `question` names that the query must name too, each quoted as SQL writes it
/// (`'北京'`): a named value is a filter or one of a compared set ("北京和上海": `IN ('北京',
/// '上海')`), never left out. Not when the question names every value of a column ("线上和线下"
/// is all channels: a grouping, which needs no filter), nor for columns of dates or months (a
/// period is written in many ways).
///
/// Why: with the values only allowed, the fine-tuned model answered "北京和上海2020年的销售额
/// 对比" for every province and "Compare furniture and electronics sales in East China" for all
/// three categories (fresh4).
pub fn required_values(catalog: &Catalog, question: &str) -> Vec<String> {
    let links = catalog.link(question);
    let column = |table: &str, name: &str| catalog.tables.iter().find(|t| t.name == table).and_then(|t| t.columns.iter().find(|c| c.name == name));
    links
        .iter()
        .filter(|l| {
            let Some(c) = column(&l.table, &l.column) else { return false };
            let named = links.iter().filter(|o| o.table == l.table && o.column == l.column).count();
            !holds_dates(c) && !(named > 1 && named == c.values.len()) && !writable(c, Some(std::slice::from_ref(&l.value))).is_empty()
        })
        .map(|l| format!("'{}'", l.value))
        .collect()
}

/// A pattern of queries that name the first two of `values` in either order
/// (`.*('家具'.*'电子产品'|'电子产品'.*'家具').*`). Why two: three values (six orders, or three
/// intersections) intersected with the shape and the cues ran out of llguidance's fuel for
/// deciding whether a token can still lead to a match, so no token was allowed at the reply's
/// first character ("Compare furniture and electronics sales in East China for 2020"); with the
/// first two required, the model wrote the third unasked.
pub fn values_pattern(values: &[String]) -> Option<String> {
    match values {
        [] => None,
        [a] => Some(format!(".*{}.*", regex::escape(a))),
        [a, b, ..] => {
            let (a, b) = (regex::escape(a), regex::escape(b));
            Some(format!(".*({a}.*{b}|{b}.*{a}).*"))
        }
    }
}

/// What may qualify a column, as a regular expression: a table's name or its one-letter alias
/// ([`alias`]), as FROM may declare it.
pub(crate) fn qualifiers(catalog: &Catalog) -> String {
    let mut names: Vec<String> = catalog.tables.iter().map(|t| regex::escape(&t.name)).collect();
    names.extend(catalog.tables.iter().filter_map(alias).map(String::from));
    names.sort();
    names.dedup();
    format!("({})", names.join("|"))
}

/// The one-letter alias of a table in a join: the first letter of its name's last word
/// (`sales` s, `sales_targets` t, as the teaching data writes them).
fn alias(t: &Table) -> Option<char> {
    t.name.rsplit('_').next()?.chars().next().filter(char::is_ascii_alphabetic).map(|c| c.to_ascii_lowercase())
}

/// Joins of two different tables that share a column (`s.region=t.region`) or whose date and
/// month columns match (`substr(s.order_date,1,7)=t.month`), ON those links only, every column
/// qualified (by the table's name, or by its alias after `FROM sales_targets t`): (the FROM
/// clause, each table with its qualifier). Before, a join could link a table to itself
/// (`sales_targets JOIN sales_targets`), on a tautology (`sales_targets.region=
/// sales_targets.region`) or on anything, and name columns both tables have unqualified (an
/// "ambiguous column" error): the model, made to join, wrote all of those. Only linked pairs are
/// joined, and past six linked pairs none (the shape would grow with the square of the tables).
/// Left open: a qualifier may be the table's name or its alias whether or not FROM declared the
/// alias (two variants per pair would double the join shapes), and a GROUP BY or ORDER BY item
/// may be an unqualified name (an alias of the select list, or an ambiguous column).
fn joins(catalog: &Catalog, date: Option<&str>, targets: bool) -> Vec<Join> {
    let (mut out, mut pairs) = (Vec::new(), 0);
    for (i, a) in catalog.tables.iter().enumerate() {
        for b in &catalog.tables[i + 1..] {
            let (na, nb) = (regex::escape(&a.name), regex::escape(&b.name));
            // Each table by its name, or by its alias where the two aliases differ.
            let (xa, xb) = match (alias(a), alias(b)) {
                (Some(x), Some(y)) if x != y => (Some(x), Some(y)),
                _ => (None, None),
            };
            let qual = |n: &str, x: Option<char>| x.map_or(format!(r"{n}\."), |x| format!(r"({n}|{x})\."));
            let (qa, qb) = (qual(&na, xa), qual(&nb, xb));
            let mut links: Vec<String> = Vec::new();
            for c in a.columns.iter().filter(|c| b.columns.iter().any(|d| d.name == c.name) && !holds_dates(c) && Some(c.name.as_str()) != date) {
                let n = regex::escape(&c.name);
                links.push(format!("{qa}{n} ?= ?{qb}{n}"));
                links.push(format!("{qb}{n} ?= ?{qa}{n}"));
            }
            let mut dated = false;
            for (x, qx, y, qy) in [(a, &qa, b, &qb), (b, &qb, a, &qa)] {
                let Some(d) = x.columns.iter().find(|c| Some(c.name.as_str()) == date) else { continue };
                for m in y.columns.iter().filter(|c| holds_dates(c)) {
                    let (d, m) = (regex::escape(&d.name), regex::escape(&m.name));
                    links.push(format!(r"substr\({qx}{d}, ?1, ?7\) ?= ?{qy}{m}"));
                    links.push(format!(r"{qy}{m} ?= ?substr\({qx}{d}, ?1, ?7\)"));
                    dated = true;
                }
            }
            if links.is_empty() {
                continue;
            }
            pairs += 1;
            if dated && !targets {
                continue;
            }
            let l = alt(links);
            let table = |n: &str, x: Option<char>| x.map_or(n.to_string(), |x| format!("{n}(( AS)? {x})?"));
            let (ta, tb) = (table(&na, xa), table(&nb, xb));
            let from = alt([format!("{ta} (LEFT |INNER )?JOIN {tb}"), format!("{tb} (LEFT |INNER )?JOIN {ta}")]);
            out.push(Join { from: format!("{from} ON {l}( AND {l}){{0,2}}"), parts: vec![(a.clone(), qa), (b.clone(), qb)], targets: dated, listing: false });
            if let (Some(xa), Some(xb), true) = (xa, xb, dated) {
                for (x, cx, y, cy) in [(a, xa, b, xb), (b, xb, a, xa)] {
                    out.extend(monthly_join(x, cx, y, cy, date));
                }
            }
        }
    }
    if pairs > 6 {
        out.clear();
    }
    out
}

/// One way to read two tables together.
struct Join {
    /// The FROM clause, as a pattern.
    from: String,
    /// Each table (or subquery, as a table of its columns) with the qualifier its columns take.
    parts: Vec<(Table, String)>,
    /// Whether it links a dated table to one kept by month (actuals against targets).
    targets: bool,
    /// Whether its rows may be listed: one per row of a table, not the product of both.
    listing: bool,
}

/// A table kept by month (`sales_targets`, alias `t`) joined to the dated table's monthly totals,
/// a subquery written one way (`(SELECT region, substr(order_date,1,7) AS month, ROUND(SUM(amount),2)
/// AS amount FROM sales GROUP BY region, month) s`), on their shared columns and the month: one
/// row per target, so targets and actuals can be summed, divided and compared row by row
/// (completion rates, the months that fell short). Why: the plain join repeats each month's
/// target once per order, so no completion rate can be written over it; reviewers asked for one
/// on four of five fresh sets. `None` unless `x` holds the date column and `y` a month column
/// and other columns in common.
fn monthly_join(x: &Table, cx: char, y: &Table, cy: char, date: Option<&str>) -> Option<Join> {
    let d = x.columns.iter().find(|c| Some(c.name.as_str()) == date)?;
    let m = y.columns.iter().find(|c| holds_dates(c))?;
    let shared: Vec<&Column> = x.columns.iter().filter(|c| y.columns.iter().any(|o| o.name == c.name) && !holds_dates(c) && c.name != d.name).collect();
    let sums: Vec<&Column> = x.columns.iter().filter(|c| c.is_number() && !is_id(c)).collect();
    if shared.is_empty() || sums.is_empty() || x.columns.iter().any(|c| c.name == m.name) {
        return None;
    }
    let e = |s: &str| regex::escape(s);
    let keys = shared.iter().map(|c| e(&c.name)).collect::<Vec<_>>().join(", ?");
    let (dn, mn, xn, yn) = (e(&d.name), e(&m.name), e(&x.name), e(&y.name));
    let item = alt(sums.iter().map(|c| format!(r"(ROUND\(SUM\({n}\), ?2\)|SUM\({n}\)) AS {n}", n = e(&c.name))));
    let derived = format!(r"\(SELECT {keys}, substr\({dn}, ?1, ?7\) AS {mn}, {item}(, ?{item}){{0,2}} FROM {xn} GROUP BY {keys}, {mn}\)( AS)? {cx}");
    let (qx, qy) = (format!(r"{cx}\."), format!(r"({yn}|{cy})\."));
    // On the shared columns and, always, the month.
    let link = |c: &Column| alt([format!("{qy}{n} ?= ?{qx}{n}", n = e(&c.name)), format!("{qx}{n} ?= ?{qy}{n}", n = e(&c.name))]);
    let (ls, lm, k) = (alt(shared.iter().map(|c| link(c))), link(m), shared.len());
    let from = format!("{yn}(( AS)? {cy})? (INNER )?JOIN {derived} ON ({ls} AND ){{0,{k}}}{lm}( AND {ls}){{0,{k}}}");
    // The subquery's columns: the shared ones, the month (holding the months the targets do), the sums.
    let mut columns: Vec<Column> = shared.iter().map(|c| (*c).clone()).collect();
    columns.push(Column { name: m.name.clone(), ty: m.ty.clone(), comment: None, values: m.values.clone(), min: None });
    columns.extend(sums.iter().map(|c| (*c).clone()));
    Some(Join { from, parts: vec![(y.clone(), qy), (Table { name: x.name.clone(), columns }, qx)], targets: true, listing: true })
}

/// The query shape over `catalog` (see the module documentation); `None` for a catalogue
/// without tables. With `question`, a listed text column is compared only to values the
/// question names ([`Catalog::link`]: `华北`, or `North China` for it), so a question that names
/// no city filters no city, and dates only when the question names a period (the model
/// otherwise invents one, and its rows come back empty or short); without, to any value.
pub fn sql_shape(catalog: &Catalog, question: Option<&str>) -> Option<String> {
    // A name with a quote or backslash would need escaping inside the reply's JSON string.
    let plain = |n: &str| !n.contains(['"', '\\']) && !n.chars().any(char::is_control);
    if catalog.tables.is_empty() || !catalog.tables.iter().all(|t| plain(&t.name) && t.columns.iter().all(|c| plain(&c.name))) {
        return None;
    }
    let named = Named {
        values: question.map(|q| catalog.link(q).into_iter().map(|l| l.value).collect()),
        period: question.is_none_or(|q| crate::period::find(q).is_some()),
        numbers: question.map(crate::cues::amounts),
        sides: question.map_or((true, true), crate::cues::sign_sides),
        over_time: question.is_none_or(|q| crate::cues::over_time(catalog, q)),
        versus: question.is_none_or(crate::cues::short_or_over),
    };
    let date = catalog.date_column();
    let asked = question.map(|q| catalog.measures_asked(q)).unwrap_or_default();
    let asked_measures: Vec<String> = asked.iter().map(|m| crate::cues::measure_regex(catalog, m)).collect();
    let opened: Vec<String> = asked.iter().filter_map(|m| crate::cues::measure_opening(m)).collect();
    // One query over `parts` (each table with the qualifier its columns take) read `from`;
    // `listing`: whether rows may be listed one by one (not for joined tables, whose rows are
    // the product of both).
    let query = |parts: &[(&Table, String)], from: String, listing: bool| {
        // The columns of each table, with its qualifier, that `keep` keeps; `None` for none.
        let words_where = |keep: &dyn Fn(&Column) -> bool| -> Option<String> {
            let each: Vec<String> = parts
                .iter()
                .filter_map(|(t, q)| {
                    let names: Vec<&str> = t.columns.iter().filter(|c| keep(c)).map(|c| c.name.as_str()).collect();
                    (!names.is_empty()).then(|| format!("{q}{}", escaped(names)))
                })
                .collect();
            (!each.is_empty()).then(|| alt(each))
        };
        let ids = words_where(&|c: &Column| is_id(c));
        let measures = words_where(&|c: &Column| !is_id(c)).unwrap_or_else(|| "()".into());
        // A question that asks for no series over time gets one total, not one row per month,
        // quarter or year: no time column in the select list of an aggregate (orders listed
        // with their dates are fine). Before this, the model answered "深圳2018年下半年的销售额"
        // and "华北地区2020年全年的销售目标合计" month by month (fresh4).
        let untimed = words_where(&|c: &Column| !is_id(c) && (named.over_time || !is_time(c, date))).unwrap_or_else(|| measures.clone());
        // An identifier may also end the select list (`SELECT order_id FROM`, `SELECT city, order_id FROM`).
        let last_id = ids.as_ref().map_or(String::new(), |i| format!("{i}?"));
        // The time columns, which alone a date function may take apart (with no one date
        // column known, any column named like a date).
        let times = words_where(&|c: &Column| is_time(c, date) || (date.is_none() && c.name.to_ascii_lowercase().ends_with("date")));
        let dates = |on: bool| times.as_deref().filter(|_| on);
        let free = |c: &Column| !is_id(c) && !opened.contains(&c.name);
        let calls = aggregate_calls(
            &words_where(&|_: &Column| true).unwrap_or_else(|| "()".into()),
            words_where(&|c: &Column| free(c) && c.is_number()).as_deref(),
            words_where(&|c: &Column| free(c) && !c.is_number()).as_deref(),
            &asked_measures,
        );
        let select = |words: &str, aggregates: bool, dated: bool| format!("{}{last_id}", expr(words, ids.as_deref(), aggregates.then_some(calls.as_str()), dates(dated)));
        let columns: Vec<(&str, &Column)> = parts.iter().flat_map(|(t, q)| t.columns.iter().map(move |c| (q.as_str(), c))).collect();
        let conds = conditions(&columns, date, &named);
        // Three kinds of query: grouped (rows per group), totals (the select list opens with an
        // aggregate), or rows listed (no aggregate at all). A select list that opens with a
        // column and has an aggregate after it needs GROUP BY (SQLite answers one arbitrary
        // row without): the model wrote `SELECT channel, SUM(amount) FROM sales` for shares of
        // each channel, and dodged the rule above with `SELECT substr(order_date,1,7) AS month,
        // SUM(amount)` and no GROUP BY. (A column after the opening aggregate is not caught.)
        // Left open: a GROUP BY item may name a time column unselected (`GROUP BY month`).
        let aggregate = format!(r"(ROUND\()?{calls}");
        let mut kinds = vec![
            format!("SELECT {} FROM {from}{conds}{}", select(&untimed, true, named.over_time), tail(&measures, true, &named)),
            format!("SELECT {aggregate}{} FROM {from}{conds}{}", select(&untimed, true, named.over_time), tail(&measures, false, &named)),
        ];
        // Rows listed keep their dates whole unless the question is about time: the model, kept
        // from grouping "深圳2018年下半年的销售额" by month, listed `substr(order_date,1,7)`
        // beside a half-written `ROUND(SUBSTR(...` instead.
        if listing {
            kinds.push(format!("SELECT {} FROM {from}{conds}{}", select(&measures, false, named.over_time), tail(&measures, false, &named)));
        }
        alt(kinds)
    };
    // One table: its columns, unqualified, as every teaching and gold query writes them. Why:
    // offered `sales.amount`, the model opened plain totals with `ROUND(SUM(sales.amount)*100.0`
    // and ran on into nonsense (`)/20.0,2)`, `/SUM(sales.profit)`: seven misses on fresh1-11).
    let mut shapes: Vec<String> = catalog.tables.iter().map(|t| query(&[(t, String::new())], regex::escape(&t.name), true)).collect();
    // A question that holds actual figures against targets reads both tables: the model
    // answered "每个月实际销售额和目标" and "against its monthly targets" from the targets alone
    // (3 misses on fresh4, 2 on each earlier set). And one that does not joins no targets: with
    // the monthly-totals join taught, the model answered "东北地区2018年第四季度的销售目标" with
    // actual sales beside the targets. (Other joins are offered either way.)
    let against = question.map(|q| crate::cues::against_target(catalog, q));
    let joined = joins(catalog, date, against != Some(false));
    if against == Some(true) && joined.iter().any(|j| j.targets) {
        shapes.clear();
    }
    shapes.extend(joined.into_iter().map(|j| query(&j.parts.iter().map(|(t, q)| (t, q.clone())).collect::<Vec<_>>(), j.from, j.listing)));
    if shapes.is_empty() {
        return None;
    }
    Some(alt(shapes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let col = |name: &str, ty: &str, values: &[&str]| Column {
            name: name.into(),
            ty: ty.into(),
            comment: None,
            values: values.iter().map(|v| v.to_string()).collect(),
            min: match name {
                "profit" => Some(-120.5),
                "amount" | "target" => Some(3.2),
                _ => None,
            },
        };
        Catalog {
            tables: vec![
                Table {
                    name: "sales".into(),
                    columns: vec![
                        col("order_id", "INTEGER", &[]),
                        col("order_date", "TEXT", &[]),
                        col("region", "TEXT", &["华北", "华东"]),
                        col("city", "TEXT", &["北京", "上海", "深圳"]),
                        col("amount", "REAL", &[]),
                        col("profit", "REAL", &[]),
                    ],
                },
                Table {
                    name: "sales_targets".into(), columns: vec![col("region", "TEXT", &["华北", "华东"]), col("month", "TEXT", &["2019-01", "2019-02", "2019-03"]), col("target", "REAL", &[])]
                },
            ],
            aliases: vec![],
            terms: vec![],
            measures: vec![],
            dates: None,
        }
    }

    fn shape() -> regex::Regex {
        regex::Regex::new(&format!("^{}$", sql_shape(&catalog(), None).unwrap())).unwrap()
    }

    #[test]
    fn the_teaching_styles_queries_fit() {
        let re = shape();
        for sql in [
            "SELECT substr(order_date,1,7) AS month, ROUND(SUM(amount),2) AS amount FROM sales WHERE region='华北' AND substr(order_date,1,7) BETWEEN '2019-03' AND '2019-05' GROUP BY month ORDER BY month",
            "SELECT city, ROUND(SUM(amount),2) AS amount FROM sales GROUP BY city ORDER BY amount DESC LIMIT 5",
            "SELECT COUNT(*) AS orders FROM sales WHERE city='北京' AND substr(order_date,1,7)='2018-12'",
            "SELECT (CAST(substr(order_date,6,2) AS INTEGER)+2)/3 AS quarter, COUNT(DISTINCT order_id) AS orders FROM sales WHERE profit<0 GROUP BY quarter",
            "SELECT month, target FROM sales_targets WHERE region='华东' AND month BETWEEN '2019-01' AND '2019-03' ORDER BY month",
            "SELECT region, ROUND(SUM(amount),2) AS amount FROM sales WHERE region IN ('华北', '华东') AND city IN ('北京', '上海') GROUP BY region",
            "SELECT t.month, t.target, ROUND(SUM(s.amount),2) AS amount FROM sales_targets t JOIN sales s ON s.region=t.region AND substr(s.order_date,1,7)=t.month WHERE t.region='华北' GROUP BY t.month, t.target ORDER BY t.month",
            "SELECT ROUND(SUM(amount)*1.0/COUNT(DISTINCT order_id),2) AS 客单价 FROM sales WHERE strftime('%Y', order_date)='2019'",
            "SELECT order_id FROM sales WHERE profit<0",
            "SELECT sales_targets.month, ROUND(SUM(sales.amount),2) AS amount FROM sales JOIN sales_targets ON substr(sales.order_date, 1, 7) = sales_targets.month AND sales.region = sales_targets.region GROUP BY sales_targets.month",
            "SELECT city, order_id FROM sales WHERE profit<0",
            "SELECT substr(order_date,1,4) || '-Q' || ((CAST(substr(order_date,6,2) AS INTEGER)+2)/3) AS quarter, ROUND(SUM(profit),2) AS profit FROM sales GROUP BY quarter ORDER BY quarter",
            "SELECT substr(month,1,4) AS year, SUM(target) AS target FROM sales_targets GROUP BY year",
        ] {
            assert!(re.is_match(sql), "{sql}");
        }
    }

    #[test]
    fn invented_names_values_and_repeated_clauses_do_not() {
        let re = shape();
        for sql in [
            // Columns of another table, or of none.
            "SELECT city, ROUND(SUM(amount),2) AS amount FROM sales WHERE target='city' GROUP BY city",
            "SELECT region, target FROM sales_targets WHERE substr(order_date,1,7) BETWEEN '2020-01' AND '2020-12'",
            "SELECT region, TASTED_TARGET FROM sales_targets GROUP BY region",
            // An identifier summed; a text column summed; one table's columns qualified.
            "SELECT region, ROUND(SUM(order_id),2) AS orders FROM sales GROUP BY region",
            "SELECT ROUND(SUM(amount)*100.0/SUM(category),2) AS margin FROM sales",
            "SELECT ROUND(SUM(sales.amount),2) AS amount FROM sales",
            // Values the column does not hold; a date compared to a word; a number to a string.
            "SELECT SUM(amount) FROM sales WHERE region='中国'",
            "SELECT SUM(amount) FROM sales WHERE city='淑'",
            "SELECT SUM(amount) FROM sales WHERE order_date='last year'",
            "SELECT SUM(amount) FROM sales WHERE profit='亏损'",
            "SELECT month, target FROM sales_targets WHERE month BETWEEN '2020-12' AND '2020-13'",
            // A column beside an aggregate without GROUP BY (one arbitrary row), however it is dressed.
            "SELECT city, ROUND(SUM(amount),2) AS amount FROM sales WHERE city IN ('北京', '上海')",
            "SELECT substr(order_date,1,7) AS month, ROUND(SUM(amount),2) AS amount FROM sales ORDER BY month",
            // A date function over what is not a date: order numbers cut into "months".
            "SELECT substr(order_id, 1,7) AS month, ROUND(SUM(amount),2) AS amount FROM sales GROUP BY month ORDER BY month",
            "SELECT strftime('%Y', region) AS year, COUNT(*) AS orders FROM sales GROUP BY year",
            // A table joined to itself, on a tautology, or with columns left unqualified.
            "SELECT t.month, SUM(t.target) AS target FROM sales_targets t JOIN sales_targets u ON t.region=u.region GROUP BY t.month",
            "SELECT sales_targets.month, SUM(sales.amount) AS amount FROM sales_targets JOIN sales ON sales_targets.region=sales_targets.region GROUP BY sales_targets.month",
            "SELECT month, ROUND(SUM(amount),2) AS amount FROM sales_targets t JOIN sales s ON s.region=t.region GROUP BY month",
            // Conditions chained with OR.
            "SELECT SUM(amount) FROM sales WHERE region='华北' OR city IN ('北京', '上海')",
            // Made-up operators, repeated clauses, a second statement, tables not in the catalogue.
            "SELECT product FROM sales WHERE order_id BETWEANKS 'x'",
            "SELECT region, target FROM sales_targets ORDER BY region ORDER BY target DESC LIMIT 12",
            "SELECT product, ROUND(SUM(profit),2) AS profit FROM sales GROUP BY product ORDER BY profitDATEDURID LIMIT 3",
            "SELECT region FROM sales; DROP TABLE sales",
            "SELECT name FROM users",
        ] {
            assert!(!re.is_match(sql), "{sql}");
        }
    }

    #[test]
    fn a_question_names_the_values_its_conditions_may_use() {
        let re = |q: &str| regex::Regex::new(&format!("^{}$", sql_shape(&catalog(), Some(q)).unwrap())).unwrap();
        let north = re("华北地区2019年3月的销售额");
        assert!(north.is_match("SELECT SUM(amount) FROM sales WHERE region='华北' AND substr(order_date,1,7)='2019-03'"));
        assert!(!north.is_match("SELECT SUM(amount) FROM sales WHERE region='华东'"));
        assert!(!north.is_match("SELECT SUM(amount) FROM sales WHERE city='北京'"));
        // Months of a targets table are compared like dates, named or not.
        assert!(north.is_match("SELECT month, target FROM sales_targets WHERE region='华北' AND month BETWEEN '2019-01' AND '2019-03' ORDER BY month"));
        let top = re("销售额最高的前5个城市");
        assert!(top.is_match("SELECT city, ROUND(SUM(amount),2) AS amount FROM sales GROUP BY city ORDER BY amount DESC LIMIT 5"));
        assert!(!top.is_match("SELECT city, ROUND(SUM(amount),2) AS amount FROM sales WHERE city='上海' GROUP BY city ORDER BY amount DESC LIMIT 5"));
        assert!(!top.is_match("SELECT city, SUM(amount) FROM sales WHERE profit<0 GROUP BY city"));
        assert!(re("哪个城市亏损的订单最多").is_match("SELECT city, COUNT(*) AS orders FROM sales WHERE profit<0 GROUP BY city ORDER BY orders DESC LIMIT 1"));
        assert!(!re("哪个城市亏损的订单最多").is_match("SELECT city, COUNT(*) AS orders FROM sales WHERE order_id<0 GROUP BY city"));
        // Only a column that goes below zero, and on the side asked for.
        assert!(!re("哪个城市亏损的订单最多").is_match("SELECT city, COUNT(*) AS orders FROM sales WHERE amount<0 GROUP BY city"));
        assert!(!re("哪个城市亏损的订单最多").is_match("SELECT city, COUNT(*) AS orders FROM sales WHERE profit>0 GROUP BY city"));
        assert!(re("哪个城市盈利的订单最多").is_match("SELECT city, COUNT(*) AS orders FROM sales WHERE profit>0 GROUP BY city"));
        // Numbers: zero for a question about a sign, or one the question gives (not its top-n);
        // dates only for a question with a period.
        assert!(!top.is_match("SELECT city, SUM(amount) FROM sales WHERE amount > 5 AND amount = 0 GROUP BY city"));
        assert!(!top.is_match("SELECT city, SUM(amount) FROM sales WHERE substr(order_date,1,4)='2020' GROUP BY city"));
        assert!(re("金额超过1000元的订单有多少").is_match("SELECT COUNT(*) AS orders FROM sales WHERE amount>1000"));
        assert!(!re("金额超过1000元的订单有多少").is_match("SELECT COUNT(*) AS orders FROM sales WHERE amount>100"));
        let both = re("华北和华东的销售额对比");
        assert!(!both.is_match("SELECT SUM(amount) FROM sales WHERE region='华北'"));
        assert!(both.is_match("SELECT region, SUM(amount) FROM sales GROUP BY region"));
        assert!(both.is_match("SELECT region, SUM(amount) FROM sales WHERE region IN ('华北', '华东') GROUP BY region"));
        // An IN list no longer than the values the question names.
        assert!(!both.is_match("SELECT region, SUM(amount) FROM sales WHERE region IN ('华北', '华东', '华北') GROUP BY region"));
        assert!(north.is_match("SELECT SUM(amount) FROM sales WHERE region IN ('华北')"));
        assert!(!north.is_match("SELECT SUM(amount) FROM sales WHERE region IN ('华北', '华北')"));
        // One period condition.
        assert!(!north.is_match("SELECT SUM(amount) FROM sales WHERE region='华北' AND substr(order_date,1,7)='2019-03' AND substr(order_date,1,7)='2019-03'"));
        assert!(north.is_match("SELECT SUM(amount) FROM sales WHERE order_date >= '2019-03-01' AND order_date < '2019-04-01' AND region='华北'"));
        // At most four conditions.
        assert!(!north.is_match("SELECT SUM(amount) FROM sales WHERE region='华北' AND region='华北' AND region='华北' AND region='华北' AND region='华北'"));
    }

    #[test]
    fn a_measure_asked_for_is_aggregated_only_whole() {
        let mut cat = catalog();
        cat.measures = vec![crate::catalog::Measure { name: "margin".into(), sql: "SUM(profit)*100.0/SUM(amount)".into(), words: vec!["利润率".into(), "margin".into()] }];
        let re = |q: &str| regex::Regex::new(&format!("^{}$", sql_shape(&cat, Some(q)).unwrap())).unwrap();
        let margin = re("各地区的利润率");
        assert!(margin.is_match("SELECT region, ROUND(SUM(profit)*100.0/SUM(amount),2) AS margin FROM sales GROUP BY region ORDER BY margin DESC"));
        assert!(!margin.is_match("SELECT region, ROUND(SUM(profit),2) AS profit FROM sales GROUP BY region ORDER BY profit DESC"));
        assert!(!margin.is_match("SELECT region, ROUND(AVG(profit),2) AS profit FROM sales GROUP BY region"));
        // Other figures stay as they were; without the measure's words, so does profit.
        assert!(margin.is_match("SELECT region, ROUND(SUM(amount),2) AS amount FROM sales GROUP BY region"));
        assert!(re("各地区的利润").is_match("SELECT region, ROUND(SUM(profit),2) AS profit FROM sales GROUP BY region ORDER BY profit DESC"));
        // Its columns qualified by a table of the catalogue or its alias only: an open-ended
        // qualifier let the model write an identifier until max_tokens.
        let total = re("总的利润率是多少");
        assert!(total.is_match("SELECT ROUND(SUM(profit)*100.0/SUM(amount),2) AS margin FROM sales"));
        assert!(total.is_match("SELECT ROUND(SUM(s.profit)*100.0/SUM(sales.amount),2) AS margin FROM sales"));
        assert!(!total.is_match("SELECT ROUND(SUM(profit)*100.0/SUM(product_category_amounts.amount),2) AS margin FROM sales"));
    }

    #[test]
    fn groups_pass_only_a_threshold_the_question_gives() {
        let re = |q: &str| regex::Regex::new(&format!("^{}$", sql_shape(&catalog(), Some(q)).unwrap())).unwrap();
        let having = "SELECT city, ROUND(SUM(amount),2) AS amount FROM sales WHERE substr(order_date,1,4)='2020' GROUP BY city HAVING SUM(amount)>2000000 ORDER BY amount DESC";
        assert!(re("Which cities sold more than 2 million yuan in 2020?").is_match(having));
        assert!(re("2020年销售额超过200万的城市").is_match(having));
        assert!(!re("2020年销售额超过200万的城市").is_match(&having.replace("SUM(amount)>", "amount>")));
        assert!(!re("2020年销售额超过300万的城市").is_match(having));
        assert!(!re("2020年各城市的销售额").is_match(having));
        assert!(
            re("2020年订单数超过300单的城市有哪些").is_match("SELECT city, COUNT(*) AS orders FROM sales WHERE substr(order_date,1,4)='2020' GROUP BY city HAVING COUNT(*)>300 ORDER BY orders DESC")
        );
    }

    #[test]
    fn rows_per_month_only_for_a_question_over_time() {
        let re = |q: &str| regex::Regex::new(&format!("^{}$", sql_shape(&catalog(), Some(q)).unwrap())).unwrap();
        let monthly = "SELECT substr(order_date,1,7) AS month, ROUND(SUM(amount),2) AS amount FROM sales WHERE city='上海' AND substr(order_date,1,7) BETWEEN '2018-07' AND '2018-12' GROUP BY month ORDER BY month";
        let total = "SELECT ROUND(SUM(amount),2) AS amount FROM sales WHERE city='上海' AND substr(order_date,1,7) BETWEEN '2018-07' AND '2018-12'";
        let half = re("上海2018年下半年的销售额");
        assert!(half.is_match(total) && !half.is_match(monthly));
        // Nor dressed as a cut of another column.
        assert!(!half.is_match("SELECT substr(order_id, 1,7) AS month, ROUND(SUM(amount),2) AS amount FROM sales WHERE city='上海' AND substr(order_date,1,7) BETWEEN '2018-07' AND '2018-12' GROUP BY month ORDER BY month"));
        // Orders listed with their dates are not rows per month.
        assert!(half.is_match("SELECT order_id, order_date, amount FROM sales WHERE city='上海' AND substr(order_date,1,7) BETWEEN '2018-07' AND '2018-12' ORDER BY amount DESC LIMIT 10"));
        for q in ["上海2018年下半年每月的销售额", "上海2018年下半年销售额的走势", "上海2018年下半年的销售额有什么变化", "上海2018年下半年哪个月销售额最高", "上海2018年下半年的销售额,用折线图"]
        {
            assert!(re(q).is_match(monthly), "{q}");
        }
        // Targets are kept by month: actual against target is read month by month, unless the
        // question asks for a total.
        let join = "SELECT t.month, t.target, ROUND(SUM(s.amount),2) AS amount FROM sales_targets t JOIN sales s ON s.region=t.region AND substr(s.order_date,1,7)=t.month WHERE t.region='华北' AND t.month BETWEEN '2019-01' AND '2019-03' GROUP BY t.month, t.target ORDER BY t.month";
        let mut c = catalog();
        c.terms.push(crate::catalog::Term { term: "目标".into(), column: "sales_targets.target".into() });
        let re = |q: &str| regex::Regex::new(&format!("^{}$", sql_shape(&c, Some(q)).unwrap())).unwrap();
        assert!(re("华北地区2019年1-3月完成目标的情况").is_match(join));
        assert!(!re("华北地区2019年1-3月的销售目标合计是多少").is_match(join));
        assert!(re("华北地区2019年1-3月的销售目标合计是多少").is_match("SELECT ROUND(SUM(target),2) AS target FROM sales_targets WHERE region='华北' AND month BETWEEN '2019-01' AND '2019-03'"));
        // Actual against target reads both tables.
        let against = re("华北地区2019年1-3月每月实际销售额与目标");
        assert!(against.is_match(join));
        assert!(!against.is_match("SELECT month, target FROM sales_targets WHERE region='华北' AND month BETWEEN '2019-01' AND '2019-03' ORDER BY month"));
    }

    #[test]
    fn targets_join_the_monthly_totals_of_the_dated_table() {
        const TOTALS: &str = "(SELECT region, substr(order_date,1,7) AS month, ROUND(SUM(amount),2) AS amount FROM sales GROUP BY region, month) s ON s.region=t.region AND s.month=t.month";
        let monthly = format!("SELECT t.month, t.target, s.amount FROM sales_targets t JOIN {TOTALS} WHERE t.region='华北' AND t.month BETWEEN '2019-01' AND '2019-03' ORDER BY t.month");
        let rate = format!("SELECT t.region, ROUND(SUM(s.amount)*100.0/SUM(t.target),2) AS completion FROM sales_targets t JOIN {TOTALS} WHERE t.month BETWEEN '2019-01' AND '2019-12' GROUP BY t.region ORDER BY completion DESC");
        let short =
            format!("SELECT t.month, t.target, s.amount FROM sales_targets t JOIN {TOTALS} WHERE t.region='华北' AND t.month BETWEEN '2019-01' AND '2019-12' AND s.amount<t.target ORDER BY t.month");
        let re = shape();
        for sql in [&monthly, &rate, &short] {
            assert!(re.is_match(sql), "{sql}");
        }
        for sql in [
            // A sum under another column's name, other groups, columns the subquery does not have.
            "SELECT t.month, s.target FROM sales_targets t JOIN (SELECT region, substr(order_date,1,7) AS month, SUM(amount) AS target FROM sales GROUP BY region, month) s ON s.region=t.region AND s.month=t.month",
            "SELECT t.month, s.amount FROM sales_targets t JOIN (SELECT region, substr(order_date,1,7) AS month, SUM(amount) AS amount FROM sales GROUP BY city, month) s ON s.region=t.region AND s.month=t.month",
            "SELECT t.month, s.city FROM sales_targets t JOIN (SELECT region, substr(order_date,1,7) AS month, SUM(amount) AS amount FROM sales GROUP BY region, month) s ON s.region=t.region AND s.month=t.month",
            // Linked without the month: each target beside every month's totals.
            "SELECT t.month, s.amount FROM sales_targets t JOIN (SELECT region, substr(order_date,1,7) AS month, SUM(amount) AS amount FROM sales GROUP BY region, month) s ON s.region=t.region",
            // Linked on nothing real.
            "SELECT t.month, s.amount FROM sales_targets t JOIN (SELECT region, substr(order_date,1,7) AS month, SUM(amount) AS amount FROM sales GROUP BY region, month) s ON s.amount=t.target",
        ] {
            assert!(!re.is_match(sql), "{sql}");
        }
        let mut c = catalog();
        c.terms.push(crate::catalog::Term { term: "目标".into(), column: "sales_targets.target".into() });
        let re = |q: &str| regex::Regex::new(&format!("^{}$", sql_shape(&c, Some(q)).unwrap())).unwrap();
        // Two columns compared only when the question asks which fell short or beat the target.
        let against = re("华北地区2019年1-3月每月实际销售额与目标");
        assert!(against.is_match(&monthly) && !against.is_match(&short));
        assert!(re("华北地区2019年哪些月份没完成销售目标").is_match(&short));
        assert!(re("2019年各大区销售目标完成率").is_match(&rate));
    }

    #[test]
    fn named_values_must_be_named_in_the_query() {
        let c = catalog();
        assert_eq!(required_values(&c, "北京和上海2020年的销售额对比"), ["'北京'", "'上海'"]);
        assert_eq!(required_values(&c, "华北地区2019年3月的销售额"), ["'华北'"]);
        // Every value of a column named: a grouping, no filter needed.
        assert!(required_values(&c, "华北和华东的销售额对比").is_empty());
        // Months are periods, written in many ways.
        assert!(required_values(&c, "2019-03的目标").is_empty());
        assert!(required_values(&c, "各城市的销售额").is_empty());
        let p = regex::Regex::new(&format!("^{}$", values_pattern(&required_values(&c, "北京和上海2020年的销售额对比")).unwrap())).unwrap();
        assert!(p.is_match("SELECT city, SUM(amount) FROM sales WHERE city IN ('上海', '北京') GROUP BY city"));
        assert!(p.is_match("SELECT city, SUM(amount) FROM sales WHERE region='华北' AND city IN ('北京','上海') GROUP BY city"));
        assert!(!p.is_match("SELECT city, SUM(amount) FROM sales WHERE city='上海' GROUP BY city"));
        assert_eq!(values_pattern(&[]), None);
    }
}
