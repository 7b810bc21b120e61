//! The demo sales database, generated deterministically (fixed seed) from the dimension values
//! shipped in the binary (`data/dimensions.json`, copied from the Ask-Data brief).
//!
//! Shape, as the brief asks: about 20,000 order lines from 2018-01-01 to 2020-12-31; every
//! region has orders in every month (and every category sells in every region every month, so
//! every quarter too); some lines lose money; monthly amounts vary by region (size), season
//! (a winter dip, a spring and autumn rise, a year-end push) and a gentle yearly trend, so charts
//! have a shape. Monthly targets per region sit near the expected sales.

use crate::{Error, Result};
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection};
use std::path::Path;

/// The dimension values, compiled in.
pub const DIMENSIONS_JSON: &str = include_str!("../data/dimensions.json");

/// The generator's seed: the database is the same bytes of data on every machine.
pub const SEED: u64 = 2019;

/// A region with its provinces and their cities.
#[derive(Debug, Clone, Deserialize)]
pub struct Region {
    /// Chinese name (华北).
    pub name: String,
    /// English alias (North China).
    pub english: String,
    /// Province -> cities.
    pub provinces: std::collections::BTreeMap<String, Vec<String>>,
}

/// A product category.
#[derive(Debug, Clone, Deserialize)]
pub struct Category {
    /// Chinese name.
    pub name: String,
    /// English alias.
    pub english: String,
    /// Products.
    pub products: Vec<String>,
}

/// A sales channel.
#[derive(Debug, Clone, Deserialize)]
pub struct Channel {
    /// Chinese name.
    pub name: String,
    /// English alias.
    pub english: String,
}

/// Every dimension value of the demo database.
#[derive(Debug, Clone, Deserialize)]
pub struct Dimensions {
    /// Regions.
    pub regions: Vec<Region>,
    /// Categories.
    pub categories: Vec<Category>,
    /// Channels.
    pub channels: Vec<Channel>,
    /// First and last order date.
    pub date_range: [String; 2],
}

/// The compiled-in dimensions.
pub fn dimensions() -> Dimensions {
    serde_json::from_str(DIMENSIONS_JSON).expect("the compiled-in dimensions.json is valid")
}

/// English names of provinces, cities and products, and the glossary, compiled in.
pub const ALIASES_JSON: &str = include_str!("../data/aliases.json");

fn aliases_json() -> serde_json::Value {
    serde_json::from_str(ALIASES_JSON).expect("the compiled-in aliases.json is valid")
}

/// The English aliases of the demo database's values: regions, categories and channels from the
/// dimensions; provinces, cities and products from `data/aliases.json`.
pub fn aliases() -> Vec<crate::catalog::Alias> {
    let d = dimensions();
    let mut out: Vec<(String, String)> = Vec::new();
    out.extend(d.regions.iter().map(|r| (r.english.clone(), r.name.clone())));
    out.extend(d.categories.iter().map(|c| (c.english.clone(), c.name.clone())));
    out.extend(d.channels.iter().map(|c| (c.english.clone(), c.name.clone())));
    let extra = aliases_json();
    for group in ["provinces", "cities", "products"] {
        for (value, alias) in extra[group].as_object().into_iter().flatten() {
            out.push((alias.as_str().unwrap_or_default().to_string(), value.clone()));
        }
    }
    out.into_iter().map(|(alias, value)| crate::catalog::Alias { alias, value }).collect()
}

/// The demo database's glossary (`data/aliases.json`, `terms`): business words for each column.
pub fn terms() -> Vec<crate::catalog::Term> {
    let extra = aliases_json();
    let mut out = Vec::new();
    for (column, words) in extra["terms"].as_object().into_iter().flatten() {
        for w in words.as_array().into_iter().flatten().filter_map(|w| w.as_str()) {
            out.push(crate::catalog::Term { term: w.to_string(), column: column.clone() });
        }
    }
    out
}

/// The demo database's measures (`data/aliases.json`, `measures`): a margin, an average order value, an average quantity per order.
pub fn measures() -> Vec<crate::catalog::Measure> {
    serde_json::from_value(aliases_json()["measures"].clone()).expect("the compiled-in aliases.json has valid measures")
}

/// The schema, with the column comments the catalogue shows the model.
pub const SCHEMA_SQL: &str = "CREATE TABLE sales (            -- one row per order line
  order_id   INTEGER PRIMARY KEY,
  order_date TEXT NOT NULL,     -- 'YYYY-MM-DD', 2018-01-01 .. 2020-12-31
  region     TEXT NOT NULL,     -- 华北 东北 华东 华中 华南 西南 西北
  province   TEXT NOT NULL,     -- e.g. 北京, 河北, 广东 (municipalities are provinces too)
  city       TEXT NOT NULL,     -- e.g. 北京, 石家庄, 深圳
  category   TEXT NOT NULL,     -- 办公用品 家具 电子产品
  product    TEXT NOT NULL,     -- e.g. 复印纸, 办公椅, 笔记本电脑
  channel    TEXT NOT NULL,     -- 线上 线下
  quantity   INTEGER NOT NULL,  -- units, >= 1
  amount     REAL NOT NULL,     -- 销售额, yuan, 2 decimals, > 0
  profit     REAL NOT NULL      -- 利润, yuan, 2 decimals, may be negative
);
CREATE TABLE sales_targets (    -- monthly sales target per region
  region TEXT NOT NULL,
  month  TEXT NOT NULL,         -- 'YYYY-MM'
  target REAL NOT NULL,         -- yuan
  PRIMARY KEY (region, month)
);";

/// Orders per region and month on average (7 regions x 36 months x 79 = about 20,000).
const MEAN_ORDERS: f64 = 79.0;

/// Relative size of each region, in the order of `dimensions.json`.
const REGION_WEIGHT: [f64; 7] = [1.15, 0.7, 1.6, 0.9, 1.25, 0.85, 0.55];

/// Seasonal factor by month (January first).
const SEASON: [f64; 12] = [0.75, 0.7, 0.95, 1.05, 1.1, 1.0, 0.9, 0.95, 1.1, 1.15, 1.05, 1.3];

/// Price range in yuan by category, in the order of `dimensions.json`.
const PRICE: [(f64, f64); 3] = [(5.0, 200.0), (300.0, 3000.0), (800.0, 8000.0)];

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One generated order line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sale {
    /// Date, `YYYY-MM-DD`.
    pub date: String,
    /// Region.
    pub region: String,
    /// Province.
    pub province: String,
    /// City.
    pub city: String,
    /// Category.
    pub category: String,
    /// Product.
    pub product: String,
    /// Channel.
    pub channel: String,
    /// Units.
    pub quantity: i64,
    /// Yuan.
    pub amount: f64,
    /// Yuan.
    pub profit: f64,
}

/// Every order line and every monthly target, in insertion order.
pub fn generate(d: &Dimensions) -> (Vec<Sale>, Vec<(String, String, f64)>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
    // Product unit prices, fixed per product.
    let prices: Vec<Vec<f64>> = d.categories.iter().enumerate().map(|(ci, c)| c.products.iter().map(|_| round2(rng.gen_range(PRICE[ci % 3].0..PRICE[ci % 3].1))).collect()).collect();
    let mut sales = Vec::with_capacity(21_000);
    let mut targets = Vec::new();
    for year in 2018..=2020 {
        let trend = 1.0 + 0.08 * (year - 2018) as f64;
        for month in 1..=12u32 {
            for (ri, r) in d.regions.iter().enumerate() {
                let expected = MEAN_ORDERS * REGION_WEIGHT[ri % 7] * SEASON[month as usize - 1] * trend;
                let n = (expected * rng.gen_range(0.9..1.1)).round().max(d.categories.len() as f64) as usize;
                let provinces: Vec<(&String, &Vec<String>)> = r.provinces.iter().collect();
                let mut month_amount = 0.0;
                for i in 0..n {
                    // The first lines of each region-month cycle through the categories.
                    let ci = if i < d.categories.len() { i } else { rng.gen_range(0..d.categories.len()) };
                    let c = &d.categories[ci];
                    let pi = rng.gen_range(0..c.products.len());
                    let (prov, cities) = provinces[rng.gen_range(0..provinces.len())];
                    let city = &cities[rng.gen_range(0..cities.len())];
                    let channel = &d.channels[if rng.gen_bool(0.6) { 0 } else { 1.min(d.channels.len() - 1) }];
                    let quantity: i64 = if ci == 2 { rng.gen_range(1..=3) } else { rng.gen_range(1..=12) };
                    let amount = round2(quantity as f64 * prices[ci][pi] * rng.gen_range(0.9..1.1));
                    // Margins from -5% to +35%: about one line in eight loses money.
                    let profit = round2(amount * rng.gen_range(-0.05..0.35));
                    let day = rng.gen_range(1..=days_in_month(year, month));
                    month_amount += amount;
                    sales.push(Sale {
                        date: format!("{year}-{month:02}-{day:02}"),
                        region: r.name.clone(),
                        province: prov.clone(),
                        city: city.clone(),
                        category: c.name.clone(),
                        product: c.products[pi].clone(),
                        channel: channel.name.clone(),
                        quantity,
                        amount: amount.max(0.01),
                        profit,
                    });
                }
                // Targets near what the month brought, rounded to thousands.
                let target = (month_amount * rng.gen_range(0.9..1.15) / 1000.0).round() * 1000.0;
                targets.push((r.name.clone(), format!("{year}-{month:02}"), target));
            }
        }
    }
    // Orders in date order, as a real table would fill.
    sales.sort_by(|a, b| a.date.cmp(&b.date));
    (sales, targets)
}

/// Writes the demo database to `path` (a new file: written under a temporary name, then renamed).
pub async fn write_demo_db(path: &Path) -> Result<()> {
    if path.exists() {
        return Err(Error::Exists(path.to_path_buf()));
    }
    let tmp = path.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    let opts = SqliteConnectOptions::new().filename(&tmp).create_if_missing(true).journal_mode(SqliteJournalMode::Delete);
    let mut conn = opts.connect().await?;
    let (sales, targets) = generate(&dimensions());
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(SCHEMA_SQL).execute(&mut *tx).await?;
    for (i, s) in sales.iter().enumerate() {
        sqlx::query("INSERT INTO sales VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(i as i64 + 1)
            .bind(&s.date)
            .bind(&s.region)
            .bind(&s.province)
            .bind(&s.city)
            .bind(&s.category)
            .bind(&s.product)
            .bind(&s.channel)
            .bind(s.quantity)
            .bind(s.amount)
            .bind(s.profit)
            .execute(&mut *tx)
            .await?;
    }
    for (region, month, target) in &targets {
        sqlx::query("INSERT INTO sales_targets VALUES (?, ?, ?)").bind(region).bind(month).bind(target).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    conn.close().await?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io(path.to_path_buf(), e))?;
    Ok(())
}

/// The demo's tables as PostgreSQL types them: amounts `numeric` (so the model's
/// `ROUND(SUM(amount), 2)` runs as it does on SQLite), dates text as in SQLite.
fn postgres_schema_sql() -> String {
    SCHEMA_SQL.replace("INTEGER PRIMARY KEY", "BIGINT PRIMARY KEY").replace("INTEGER NOT NULL", "BIGINT NOT NULL").replace("REAL NOT NULL", "NUMERIC(14, 2) NOT NULL")
}

/// Whether a catalogue is the demo's: both its tables with the demo's columns.
pub fn is_demo(c: &crate::catalog::Catalog) -> bool {
    let cols = |t: &str| c.table(t).map(|t| t.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>());
    cols("sales").as_deref() == Some(&["order_id", "order_date", "region", "province", "city", "category", "product", "channel", "quantity", "amount", "profit"].map(String::from)[..])
        && cols("sales_targets").as_deref() == Some(&["region", "month", "target"].map(String::from)[..])
}

/// Writes the demo's tables into the current schema of the PostgreSQL database at `url`, with
/// the column comments as `COMMENT ON COLUMN`, in one transaction (nothing is left half
/// written). Refuses a database that already has either table.
pub async fn write_demo_postgres(url: &str) -> Result<()> {
    use sqlx::postgres::{PgConnectOptions, PgConnection};
    use std::str::FromStr;
    let shown = crate::source::redact(url);
    let opts = PgConnectOptions::from_str(url).map_err(|e| Error::Unsupported(format!("{shown}: {e}")))?;
    let mut conn: PgConnection = opts.connect().await.map_err(|e| Error::Query(format!("cannot connect to {shown}: {e}")))?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('sales') IS NOT NULL OR to_regclass('sales_targets') IS NOT NULL").fetch_one(&mut conn).await?;
    if exists {
        return Err(Error::Unsupported(format!("{shown} already has a table named sales or sales_targets; choose an empty database")));
    }
    let (sales, targets) = generate(&dimensions());
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(&postgres_schema_sql()).execute(&mut *tx).await?;
    for table in ["sales", "sales_targets"] {
        let create = SCHEMA_SQL.split("CREATE TABLE ").find(|t| t.starts_with(&format!("{table} "))).unwrap_or("");
        for line in create.lines().skip(1) {
            let col = line.split_whitespace().next().unwrap_or("");
            if let Some(comment) = crate::catalog::column_comment(create, col) {
                sqlx::query(&format!("COMMENT ON COLUMN {table}.{col} IS {}", quote_literal(&comment))).execute(&mut *tx).await?;
            }
        }
    }
    for (chunk_no, chunk) in sales.chunks(2000).enumerate() {
        let mut q = sqlx::QueryBuilder::new("INSERT INTO sales ");
        q.push_values(chunk.iter().enumerate(), |mut b, (i, s)| {
            b.push_bind((chunk_no * 2000 + i) as i64 + 1)
                .push_bind(&s.date)
                .push_bind(&s.region)
                .push_bind(&s.province)
                .push_bind(&s.city)
                .push_bind(&s.category)
                .push_bind(&s.product)
                .push_bind(&s.channel)
                .push_bind(s.quantity)
                .push_bind(s.amount)
                .push_bind(s.profit);
        });
        q.build().execute(&mut *tx).await?;
    }
    let mut q = sqlx::QueryBuilder::new("INSERT INTO sales_targets ");
    q.push_values(&targets, |mut b, (region, month, target)| {
        b.push_bind(region).push_bind(month).push_bind(target);
    });
    q.build().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// A PostgreSQL string literal.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    #[test]
    fn generation_is_deterministic_and_has_the_promised_shape() {
        let d = dimensions();
        let (a, ta) = generate(&d);
        let (b, tb) = generate(&d);
        assert_eq!(a, b);
        assert_eq!(ta, tb);
        assert!((18_000..=22_000).contains(&a.len()), "{} rows", a.len());
        assert_eq!(ta.len(), 7 * 36);
        assert!(a.iter().any(|s| s.profit < 0.0) && a.iter().all(|s| s.amount > 0.0 && s.quantity >= 1));
        assert_eq!(a.first().unwrap().date.as_str() >= "2018-01-01", true);
        assert!(a.last().unwrap().date.as_str() <= "2020-12-31");
        // Every region x month x category has sales.
        let mut seen = std::collections::HashSet::new();
        for s in &a {
            seen.insert((s.region.clone(), s.date[..7].to_string(), s.category.clone()));
        }
        assert_eq!(seen.len(), 7 * 36 * 3);
        // Every city belongs to its province and region.
        for s in a.iter().take(500) {
            let r = d.regions.iter().find(|r| r.name == s.region).unwrap();
            assert!(r.provinces[&s.province].contains(&s.city));
        }
    }

    #[tokio::test]
    async fn the_written_database_answers_queries_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.db");
        write_demo_db(&path).await.unwrap();
        assert!(matches!(write_demo_db(&path).await, Err(Error::Exists(_))));
        let mut c = SqliteConnectOptions::new().filename(&path).read_only(true).connect().await.unwrap();
        let row =
            sqlx::query("SELECT COUNT(*) AS n, ROUND(SUM(amount), 2) AS total FROM sales WHERE region = '华北' AND order_date BETWEEN '2019-03-01' AND '2019-05-31'").fetch_one(&mut c).await.unwrap();
        let n: i64 = row.get("n");
        let total: f64 = row.get("total");
        assert!(n > 100 && total > 0.0, "{n} {total}");
        let months: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT month) FROM sales_targets").fetch_one(&mut c).await.unwrap();
        assert_eq!(months, 36);
    }
}
