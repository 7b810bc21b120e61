//! The schema catalogue: what the model is told about a database, read from the live connection
//! (tables, columns, types, the `-- comments` of each column in its `CREATE TABLE`, the distinct
//! values of low-cardinality text columns) plus English aliases of values (`North China` for
//! `华北`) where the database has them (the demo database's come from its dimensions).
//!
//! The prompt carries the schema in one compact line per table and, instead of every value of
//! every column, only the values the question names ([`Catalog::link`]): a small model copies a
//! value it is shown far more reliably than it recalls one, and the prompt stays short enough to
//! fine-tune on in minutes.

use crate::exec::Conn;
use crate::Result;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnection;
use sqlx::{Row, SqliteConnection};

/// Text columns with at most this many distinct values have them listed in the catalogue.
pub const LOW_CARDINALITY: i64 = 60;

/// One column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Name.
    pub name: String,
    /// Declared type (`TEXT`, `REAL`, ...).
    #[serde(rename = "type")]
    pub ty: String,
    /// The `-- comment` after the column in its `CREATE TABLE`, if any.
    pub comment: Option<String>,
    /// Every distinct value, for a low-cardinality text column.
    pub values: Vec<String>,
    /// The smallest value, for a number column (whether it can be below zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
}

impl Column {
    /// Whether the declared type is a number type.
    pub fn is_number(&self) -> bool {
        let t = self.ty.to_uppercase();
        ["INT", "REAL", "FLOA", "DOUB", "NUM", "DEC"].iter().any(|k| t.contains(k))
    }
}

/// One table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Name.
    pub name: String,
    /// Columns in declaration order.
    pub columns: Vec<Column>,
}

/// Another name users give a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alias {
    /// What users type (`North China`).
    pub alias: String,
    /// The value in the database (`华北`).
    pub value: String,
}

/// A business term and the column it names (`销售额` -> `sales.amount`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Term {
    /// What users say.
    pub term: String,
    /// `table.column`.
    pub column: String,
}

/// A figure computed from columns (`margin`: `SUM(profit)*100.0/SUM(amount)`), and the words
/// that ask for it (利润率, "profit margin").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    /// The name its column takes in an answer.
    pub name: String,
    /// Its SQL expression over the catalogue's columns, unqualified.
    pub sql: String,
    /// What users say.
    pub words: Vec<String>,
}

/// A value the question names, and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Table.
    pub table: String,
    /// Column.
    pub column: String,
    /// The value as stored.
    pub value: String,
    /// The alias the question used, if it used one.
    pub alias: Option<String>,
}

/// What the model may know of a database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// Tables (internal `sqlite_*` tables excluded).
    pub tables: Vec<Table>,
    /// Aliases of values.
    pub aliases: Vec<Alias>,
    /// The glossary: terms naming columns. Column comments that start with a Chinese word
    /// (`销售额, yuan`) add theirs.
    #[serde(default)]
    pub terms: Vec<Term>,
    /// Figures computed from columns, which a query answering a question that asks for one
    /// must contain ([`Catalog::measures_asked`]).
    #[serde(default)]
    pub measures: Vec<Measure>,
    /// The first and last value over the date and month columns (names ending in `date` or
    /// `month`), as text (`2018-01`, `2020-12-31`): what periods the data covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dates: Option<(String, String)>,
}

impl Catalog {
    /// Reads the catalogue of the database behind `conn`.
    pub async fn read(conn: &mut Conn) -> Result<Catalog> {
        let mut tables = match conn {
            Conn::Sqlite(c) => Self::sqlite_tables(c).await?,
            Conn::Postgres(c) => Self::postgres_tables(c).await?,
        };
        for t in &mut tables {
            for c in &mut t.columns {
                let ty = c.ty.to_uppercase();
                if ty.contains("TEXT") || ty.contains("CHAR") || ty.is_empty() {
                    c.values = low_cardinality_values(conn, &t.name, &c.name).await?;
                } else if c.is_number() {
                    c.min = minimum(conn, &t.name, &c.name).await;
                }
            }
        }
        let mut terms = Vec::new();
        for t in &tables {
            for c in &t.columns {
                let first = c.comment.as_deref().and_then(|s| s.split([',', ' ']).next()).unwrap_or("");
                if !first.is_empty() && first.chars().all(|ch| ('\u{4e00}'..='\u{9fff}').contains(&ch)) {
                    terms.push(Term { term: first.to_string(), column: format!("{}.{}", t.name, c.name) });
                }
            }
        }
        let mut catalog = Catalog { tables, aliases: Vec::new(), terms, measures: Vec::new(), dates: None };
        // Every dated column counts (a targets table may run ahead of the sales it is set for).
        let dated: Vec<(String, String)> = catalog
            .tables
            .iter()
            .flat_map(|t| t.columns.iter().map(move |c| (t, c)))
            .filter(|(_, c)| {
                let n = c.name.to_ascii_lowercase();
                (n.ends_with("date") || n.ends_with("month")) && !c.is_number()
            })
            .map(|(t, c)| (t.name.clone(), c.name.clone()))
            .collect();
        for (t, c) in dated {
            if let Some((a, b)) = date_range(conn, &t, &c).await {
                // Months decide (`2018-01` and `2018-01-01` are the same month: the day is kept).
                let month = |s: &String| s.get(..7).unwrap_or(s).to_string();
                catalog.dates = Some(match catalog.dates.take() {
                    Some((x, y)) => {
                        (if (month(&a), std::cmp::Reverse(a.len())) < (month(&x), std::cmp::Reverse(x.len())) { a } else { x }, if (month(&b), b.len()) > (month(&y), y.len()) { b } else { y })
                    }
                    None => (a, b),
                });
            }
        }
        Ok(catalog)
    }

    /// Tables and views of the connection's current schema, in creation order; comments from
    /// `COMMENT ON COLUMN`. Types are shown in the families the prompt uses for SQLite
    /// (INTEGER, REAL, TEXT) where they are one of those, else as PostgreSQL names them.
    async fn postgres_tables(conn: &mut PgConnection) -> Result<Vec<Table>> {
        let rows = sqlx::query("SELECT c.oid::int8 AS oid, c.relname::text AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'v', 'm', 'p', 'f') ORDER BY c.oid")
            .fetch_all(&mut *conn)
            .await?;
        let mut tables = Vec::new();
        for r in rows {
            let (oid, name): (i64, String) = (r.get("oid"), r.get("name"));
            let info = sqlx::query("SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type, col_description(a.attrelid, a.attnum) AS comment FROM pg_attribute a WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum")
                .bind(oid)
                .fetch_all(&mut *conn)
                .await?;
            let mut columns = Vec::new();
            for c in info {
                let (col, pg_ty, comment): (String, String, Option<String>) = (c.get("name"), c.get("type"), c.get("comment"));
                let base = pg_ty.split('(').next().unwrap_or("").trim().to_string();
                let ty = match base.as_str() {
                    "smallint" | "integer" | "bigint" => "INTEGER".to_string(),
                    "real" | "double precision" | "numeric" => "REAL".to_string(),
                    "text" | "character varying" | "character" => "TEXT".to_string(),
                    _ => base.to_uppercase(),
                };
                columns.push(Column { name: col, ty, comment, values: Vec::new(), min: None });
            }
            tables.push(Table { name, columns });
        }
        Ok(tables)
    }

    async fn sqlite_tables(conn: &mut SqliteConnection) -> Result<Vec<Table>> {
        let rows = sqlx::query("SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY rowid").fetch_all(&mut *conn).await?;
        let mut tables = Vec::new();
        for r in rows {
            let name: String = r.get("name");
            let sql: Option<String> = r.get("sql");
            let info = sqlx::query("SELECT name, type FROM pragma_table_info(?) ORDER BY cid").bind(&name).fetch_all(&mut *conn).await?;
            let mut columns = Vec::new();
            for c in info {
                let col: String = c.get("name");
                let ty: String = c.get("type");
                let comment = sql.as_deref().and_then(|s| column_comment(s, &col));
                columns.push(Column { name: col, ty, comment, values: Vec::new(), min: None });
            }
            tables.push(Table { name, columns });
        }
        Ok(tables)
    }

    /// Table names, for the SQL guard.
    pub fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.name.clone()).collect()
    }

    /// Looks a table up by name (case-insensitive).
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name.eq_ignore_ascii_case(name))
    }

    /// The schema as the prompt shows it: one line per table, each column with its type unless
    /// text, and its comment (with the comment's `--` and long value lists dropped).
    pub fn schema_text(&self) -> String {
        let mut out = String::new();
        for t in &self.tables {
            let cols: Vec<String> = t
                .columns
                .iter()
                .map(|c| {
                    let mut s = c.name.clone();
                    let ty = c.ty.to_uppercase();
                    if !ty.contains("TEXT") && !ty.is_empty() {
                        s.push(' ');
                        s.push_str(&ty);
                    }
                    if let Some(note) = c.comment.as_deref().map(short_comment).filter(|n| !n.is_empty()) {
                        s.push(' ');
                        s.push_str(&note);
                    }
                    s
                })
                .collect();
            out.push_str(&format!("{}({})\n", t.name, cols.join(", ")));
        }
        out
    }

    /// The values `question` names, longest match first and without overlaps, each once, found
    /// among the listed values of every column and the aliases (case-insensitive for aliases). A
    /// value stored in several columns is linked to the one that holds the most of the values the
    /// question names, and of those to the first (coarsest): `北京` is a province before it is a
    /// city, but in "北京、上海、广州这三个城市" a city, as 广州 is.
    ///
    /// Why: linked as provinces beside the city 广州, 北京 and 上海 were compared as provinces
    /// and 广州 left out (fresh5, fresh7).
    pub fn link(&self, question: &str) -> Vec<Link> {
        // (needle, value, alias?)
        let mut needles: Vec<(&str, &String, Option<&String>)> = Vec::new();
        for c in self.tables.iter().flat_map(|t| &t.columns) {
            needles.extend(c.values.iter().filter(|v| !v.trim().is_empty()).map(|v| (v.as_str(), v, None)));
        }
        needles.extend(self.aliases.iter().map(|a| (a.alias.as_str(), &a.value, Some(&a.alias))));
        let mut named: Vec<(&String, Option<&String>)> = Vec::new();
        for (_, i) in find_words(question, needles.iter().map(|n| n.0)) {
            let (_, value, alias) = needles[i];
            if !named.iter().any(|(v, _)| *v == value) {
                named.push((value, alias));
            }
        }
        let columns: Vec<(&Table, &Column)> = self.tables.iter().flat_map(|t| t.columns.iter().map(move |c| (t, c))).collect();
        let held = |c: &Column| named.iter().filter(|(v, _)| c.values.contains(v)).count();
        let mut links: Vec<Link> = Vec::new();
        for (value, alias) in named.iter().copied() {
            // The first column of those holding the most named values (max_by_key keeps the last).
            let home = columns.iter().filter(|(_, c)| c.values.contains(value)).rev().max_by_key(|(_, c)| held(c));
            if let Some((t, c)) = home {
                links.push(Link { table: t.name.clone(), column: c.name.clone(), value: value.clone(), alias: alias.cloned() });
            }
        }
        links
    }

    /// Every place the question's words name a column through the glossary: (byte offset, byte
    /// length, `table.column`), in question order.
    pub fn mentions(&self, question: &str) -> Vec<(usize, usize, String)> {
        find_words(question, self.terms.iter().map(|t| t.term.as_str())).into_iter().map(|(at, i)| (at, self.terms[i].term.len(), self.terms[i].column.clone())).collect()
    }

    /// The measures the question asks for, in question order, each once.
    pub fn measures_asked(&self, question: &str) -> Vec<&Measure> {
        let words: Vec<(usize, &str)> = self.measures.iter().enumerate().flat_map(|(i, m)| m.words.iter().map(move |w| (i, w.as_str()))).collect();
        let mut out: Vec<&Measure> = Vec::new();
        for (_, k) in find_words(question, words.iter().map(|(_, w)| *w)) {
            let m = &self.measures[words[k].0];
            if !out.iter().any(|o| o.name == m.name) {
                out.push(m);
            }
        }
        out
    }

    /// The one text column holding dates (its name ends in `date`), when there is exactly one.
    pub fn date_column(&self) -> Option<&str> {
        let mut it = self.tables.iter().flat_map(|t| &t.columns).filter(|c| c.name.to_ascii_lowercase().ends_with("date") && !c.ty.to_uppercase().contains("INT"));
        let first = it.next()?;
        it.next().is_none().then_some(first.name.as_str())
    }

    /// The columns the question's words name through the glossary, in the order the question
    /// names them, each once, with the words that named it.
    pub fn link_columns(&self, question: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (at, i) in find_words(question, self.terms.iter().map(|t| t.term.as_str())) {
            let t = &self.terms[i];
            if !out.iter().any(|(c, _)| *c == t.column) {
                out.push((t.column.clone(), question[at..at + t.term.len()].to_string()));
            }
        }
        out
    }
}

/// Where `needles` occur in `question`: (byte offset, needle index) in question order; longest
/// needles first, no two matches overlapping, ASCII needles case-insensitive and only as whole
/// words ("East China" does not match inside "Northeast China").
fn find_words<'a>(question: &str, needles: impl Iterator<Item = &'a str>) -> Vec<(usize, usize)> {
    let mut order: Vec<(usize, String)> = needles.map(|n| n.to_ascii_lowercase()).enumerate().collect();
    order.sort_by(|a, b| b.1.chars().count().cmp(&a.1.chars().count()).then(a.1.cmp(&b.1)));
    // ASCII-only lowering keeps byte offsets equal to the question's.
    let hay = question.to_ascii_lowercase();
    let mut taken = vec![false; hay.len()];
    let mut found: Vec<(usize, usize)> = Vec::new();
    for (i, needle) in order {
        if needle.is_empty() {
            continue;
        }
        let mut start = 0;
        while let Some(pos) = hay[start..].find(&needle) {
            let (at, end) = (start + pos, start + pos + needle.len());
            start = end;
            if (!needle.is_ascii() || is_word(&hay, at, end)) && !taken[at..end].iter().any(|t| *t) {
                taken[at..end].iter_mut().for_each(|t| *t = true);
                found.push((at, i));
            }
        }
    }
    found.sort();
    found
}

/// Whether `hay[at..end]` is a whole word (an English plural `s`/`es` allowed after it), so
/// "East China" does not match inside "Northeast China" but "projector" matches "projectors".
fn is_word(hay: &str, at: usize, end: usize) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let before = hay[..at].chars().next_back().is_some_and(alnum);
    let rest = &hay[end..];
    let rest = rest.strip_prefix("es").filter(|r| !r.starts_with(alnum)).or_else(|| rest.strip_prefix('s')).unwrap_or(rest);
    !before && !rest.starts_with(alnum)
}

/// `name` quoted as an SQL identifier.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Every distinct value of a text column that has at most [`LOW_CARDINALITY`] of them (none
/// for a column with more, or whose values are not text).
async fn low_cardinality_values(conn: &mut Conn, table: &str, column: &str) -> Result<Vec<String>> {
    let (c, t) = (quote(column), quote(table));
    let count = format!("SELECT COUNT(DISTINCT {c}) FROM {t}");
    let list = format!("SELECT DISTINCT {c} FROM {t} WHERE {c} IS NOT NULL ORDER BY {c}");
    Ok(match conn {
        Conn::Sqlite(db) => match sqlx::query_scalar::<_, i64>(&count).fetch_one(&mut *db).await? {
            n if n <= LOW_CARDINALITY => sqlx::query_scalar::<_, String>(&list).fetch_all(&mut *db).await.unwrap_or_default(),
            _ => Vec::new(),
        },
        Conn::Postgres(db) => match sqlx::query_scalar::<_, i64>(&count).fetch_one(&mut *db).await? {
            n if n <= LOW_CARDINALITY => sqlx::query_scalar::<_, String>(&list).fetch_all(&mut *db).await.unwrap_or_default(),
            _ => Vec::new(),
        },
    })
}

/// The smallest value of a number column (`None` for an empty column or a failed query; SQLite
/// reads a value that is not a number as 0).
async fn minimum(conn: &mut Conn, table: &str, column: &str) -> Option<f64> {
    let (c, t) = (quote(column), quote(table));
    match conn {
        Conn::Sqlite(db) => sqlx::query_scalar::<_, Option<f64>>(&format!("SELECT CAST(MIN({c}) AS REAL) FROM {t}")).fetch_one(&mut *db).await.ok().flatten(),
        Conn::Postgres(db) => sqlx::query_scalar::<_, Option<f64>>(&format!("SELECT MIN({c})::float8 FROM {t}")).fetch_one(&mut *db).await.ok().flatten(),
    }
}

/// The first and last value of a date column, as text (`None` for an empty column or a failed query).
async fn date_range(conn: &mut Conn, table: &str, column: &str) -> Option<(String, String)> {
    let (c, t) = (quote(column), quote(table));
    let q = |cast: &str| format!("SELECT MIN({c}){cast}, MAX({c}){cast} FROM {t}");
    let r = match conn {
        Conn::Sqlite(db) => sqlx::query_as::<_, (Option<String>, Option<String>)>(&q("")).fetch_one(&mut *db).await,
        Conn::Postgres(db) => sqlx::query_as::<_, (Option<String>, Option<String>)>(&q("::text")).fetch_one(&mut *db).await,
    };
    match r {
        Ok((Some(a), Some(b))) => Some((a, b)),
        _ => None,
    }
}

/// The `-- comment` on the line declaring `column` in a `CREATE TABLE` statement.
pub(crate) fn column_comment(create_sql: &str, column: &str) -> Option<String> {
    for line in create_sql.lines() {
        let Some((decl, comment)) = line.split_once("--") else { continue };
        let first = decl.trim().trim_start_matches('(').split_whitespace().next().unwrap_or("");
        if first.trim_matches(['"', '`', '[', ']']) == column {
            return Some(comment.trim().to_string());
        }
    }
    None
}

/// A comment without enumerations of values (those reach the prompt through linking): keeps
/// formats, units and translations ("'YYYY-MM-DD', 2018-01-01 .. 2020-12-31", "销售额, yuan").
fn short_comment(c: &str) -> String {
    let has_cjk_list = c.split_whitespace().filter(|w| w.chars().all(|ch| ('\u{4e00}'..='\u{9fff}').contains(&ch))).count() >= 2;
    if has_cjk_list || c.starts_with("e.g.") {
        return String::new();
    }
    c.split(',').next().unwrap_or("").trim().to_string()
}

/// The demo database's catalogue with its aliases and glossary, for tests (the directory
/// holding the database goes with it).
#[cfg(test)]
pub(crate) async fn demo_catalog() -> (tempfile::TempDir, Catalog) {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::ConnectOptions;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.db");
    crate::demo::write_demo_db(&path).await.unwrap();
    let mut c = Conn::Sqlite(SqliteConnectOptions::new().filename(&path).read_only(true).connect().await.unwrap());
    let mut cat = Catalog::read(&mut c).await.unwrap();
    cat.aliases = crate::demo::aliases();
    cat.terms.extend(crate::demo::terms());
    cat.measures = crate::demo::measures();
    (dir, cat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_catalogue_reads_tables_types_comments_and_values_from_the_database() {
        let (_d, cat) = demo_catalog().await;
        assert_eq!(cat.table_names(), vec!["sales", "sales_targets"]);
        let sales = cat.table("SALES").unwrap();
        let region = sales.columns.iter().find(|c| c.name == "region").unwrap();
        assert_eq!(region.values.len(), 7);
        let amount = sales.columns.iter().find(|c| c.name == "amount").unwrap();
        assert_eq!(amount.ty, "REAL");
        assert_eq!(amount.comment.as_deref(), Some("销售额, yuan, 2 decimals, > 0"));
        assert!(amount.values.is_empty());
        let text = cat.schema_text();
        assert!(text.starts_with("sales(order_id INTEGER, order_date 'YYYY-MM-DD', region, province, city, category, product, channel, quantity INTEGER units"), "{text}");
        assert!(text.contains("amount REAL 销售额") && text.contains("sales_targets(region, month 'YYYY-MM', target REAL yuan)"), "{text}");
    }

    #[tokio::test]
    async fn linking_finds_named_values_and_aliases() {
        let (_d, cat) = demo_catalog().await;
        let l = cat.link("华北地区2019年3-5月的销售额,用折线图来表示");
        assert_eq!(l, vec![Link { table: "sales".into(), column: "region".into(), value: "华北".into(), alias: None }]);
        let l = cat.link("Monthly sales in north china vs Northeast China for office supplies, online");
        let got: Vec<(&str, &str)> = l.iter().map(|l| (l.column.as_str(), l.value.as_str())).collect();
        assert_eq!(got, vec![("region", "华北"), ("region", "东北"), ("category", "办公用品"), ("channel", "线上")]);
        // 北京 is a province first; beside the city 深圳, a city; 笔记本电脑 a product.
        let l = cat.link("北京的笔记本电脑销量");
        let got: Vec<(&str, &str)> = l.iter().map(|l| (l.column.as_str(), l.value.as_str())).collect();
        assert_eq!(got, vec![("province", "北京"), ("product", "笔记本电脑")]);
        let l = cat.link("北京和深圳的笔记本电脑销量");
        let got: Vec<(&str, &str)> = l.iter().map(|l| (l.column.as_str(), l.value.as_str())).collect();
        assert_eq!(got, vec![("city", "北京"), ("city", "深圳"), ("product", "笔记本电脑")]);
        let l = cat.link("对比一下北京、上海、广州这三个城市2020年的销售额");
        assert!(l.iter().all(|l| l.column == "city"), "{l:?}");
        let l = cat.link("北京和上海2020年的销售额对比");
        assert!(l.iter().all(|l| l.column == "province"), "{l:?}");
        assert!(cat.link("员工的工资是多少").is_empty());
    }

    #[tokio::test]
    async fn the_glossary_links_words_to_columns() {
        let (_d, cat) = demo_catalog().await;
        // Column comments give 销售额 and 利润 on their own.
        assert!(cat.terms.iter().any(|t| t.term == "销售额" && t.column == "sales.amount"));
        let got = cat.link_columns("2019年全年华中地区卖了多少钱?");
        assert_eq!(got, vec![("sales.region".to_string(), "地区".to_string()), ("sales.amount".to_string(), "卖了多少钱".to_string())]);
        let got: Vec<String> = cat.link_columns("Top 5 cities by units sold, online vs offline").into_iter().map(|c| c.0).collect();
        assert_eq!(got, vec!["sales.city", "sales.quantity", "sales.channel"]);
        // Words inside other words do not count.
        assert!(cat.link_columns("salesman").is_empty());
        let l = cat.link("monthly turnover for projectors and laptops");
        assert_eq!(l.iter().map(|l| l.value.as_str()).collect::<Vec<_>>(), vec!["投影仪", "笔记本电脑"]);
    }
}
