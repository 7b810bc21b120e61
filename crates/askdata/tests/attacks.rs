//! Questions that try to change data or escape, answered by a model that has been fully
//! hijacked (it writes exactly the SQL the attacker wants): none may modify the database or hang.
//! Checked by hashing the database file before and after every attack.

use sha2::{Digest, Sha256};
use shovel_askdata::ask::{answer_reply, AskOptions, Reply};
use shovel_askdata::source::Source;
use std::time::{Duration, Instant};

fn hash(path: &std::path::Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test]
async fn no_attack_modifies_the_database_or_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut db = Source::Demo.open(&cache).await.unwrap();
    let file = cache.join("demo.db");
    let before = hash(&file);
    let corpus: Vec<serde_json::Value> = include_str!("../data/attacks.jsonl").lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(corpus.len() >= 30, "{} attacks", corpus.len());
    let opts = AskOptions { timeout: Duration::from_millis(1500), ..AskOptions::default() };
    let mut refused = 0;
    for a in &corpus {
        let q = a["question"].as_str().unwrap();
        let sql = a["sql"].as_str().unwrap();
        let output = serde_json::to_string(&Reply { sql: Some(sql.into()), chart: None, error: None }).unwrap();
        let t = Instant::now();
        let ans = answer_reply(&mut db, q, output, &opts).await;
        assert!(t.elapsed() < Duration::from_secs(10), "{sql}: took {:?}", t.elapsed());
        match &ans.error {
            Some(_) => refused += 1,
            // What ran was a read-only query with a row cap.
            None => assert!(ans.rows.len() <= opts.max_rows as usize, "{sql}: {} rows", ans.rows.len()),
        }
        assert_eq!(hash(&file), before, "{sql} changed the database");
    }
    // All but the capped join and the nested one are refused outright or stopped by the clock.
    assert!(refused >= corpus.len() - 2, "only {refused} of {} refused", corpus.len());
    assert!(!std::path::Path::new("/tmp/shovel-attack.db").exists() && !std::path::Path::new("/tmp/shovel-attack-copy.db").exists());
}

#[tokio::test]
async fn a_question_outside_the_schema_gets_a_clear_answer_not_a_failing_query() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Source::Demo.open(dir.path()).await.unwrap();
    let opts = AskOptions::default();
    // The taught model declines.
    let a = answer_reply(&mut db, "每个员工的工资是多少?", r#"{"error":"没有员工或工资的数据"}"#.into(), &opts).await;
    assert!(a.sql.is_none() && a.answer.contains("没有员工或工资的数据") && a.answer.contains("sales"), "{}", a.answer);
    // A model that invents a table or a column is told, in the question's language, what exists.
    let a = answer_reply(&mut db, "What is each employee's salary?", r#"{"sql":"SELECT name, salary FROM employees"}"#.into(), &opts).await;
    assert!(a.error.as_deref().unwrap().contains("unknown table `employees`"), "{:?}", a.error);
    let a = answer_reply(&mut db, "每个员工的工资是多少?", r#"{"sql":"SELECT SUM(salary) FROM sales"}"#.into(), &opts).await;
    assert!(a.answer.starts_with("数据库里没有问题所说的内容") && a.answer.contains("no such column: salary") && a.answer.contains("sales("), "{}", a.answer);
    // Prose instead of JSON.
    let a = answer_reply(&mut db, "hello?", "I am a language model.".into(), &opts).await;
    assert_eq!(a.error.as_deref(), Some("the model did not reply with a query"));
}
