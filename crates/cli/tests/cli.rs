//! The real `shovel` binary, driven as a user would, each test in its own SHOVEL_HOME. Models are
//! imported in place from the shared cache that `scripts/test.sh` fills with `shovel pull`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cache_home() -> PathBuf {
    std::env::var_os("SHOVEL_HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".shovel"))
}

fn cached_gguf(id: &str) -> PathBuf {
    let p = cache_home().join("models").join(id).join("model.gguf");
    assert!(p.exists(), "{} is missing: run `shovel pull {id}` first (scripts/test.sh does)", p.display());
    p
}

fn shovel(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shovel")).args(args).env("SHOVEL_HOME", home).env_remove("RUST_LOG").output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn err(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure, got success: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn import_list_tokenize_run_rm() {
    let home = tempfile::tempdir().unwrap();
    let gguf = cached_gguf("smollm2-135m-instruct");
    ok(&shovel(home.path(), &["import", gguf.to_str().unwrap(), "--name", "mine"]));
    let list = ok(&shovel(home.path(), &["models"]));
    assert!(list.lines().any(|l| l.starts_with("mine ") && l.contains("gguf")), "{list}");
    let ids = ok(&shovel(home.path(), &["tokenize", "--model", "mine", "Hello, world!"]));
    assert_eq!(ids.trim(), "[19556,28,905,17]");
    let out = ok(&shovel(home.path(), &["run", "mine", "The capital of France is", "--raw", "--temperature", "0", "--max-tokens", "3"]));
    // Three tokens " Paris", ".", "\n", then the newline `run` ends with.
    assert_eq!(out, " Paris.\n\n");
    ok(&shovel(home.path(), &["rm", "mine"]));
    assert!(!ok(&shovel(home.path(), &["models"])).contains("mine"));
    // An imported file is the user's: removing the registration leaves it in place.
    assert!(gguf.exists());
}

#[test]
fn corrupt_and_truncated_gguf_are_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let bad = home.path().join("garbage.gguf");
    std::fs::write(&bad, b"this is not a model at all").unwrap();
    let e = err(&shovel(home.path(), &["import", bad.to_str().unwrap(), "--name", "bad"]));
    assert!(e.contains("garbage.gguf") && e.contains("not a GGUF file"), "{e}");
    let src = std::fs::read(cached_gguf("smollm2-135m-instruct")).unwrap();
    let cut = home.path().join("cut.gguf");
    std::fs::write(&cut, &src[..src.len() / 2]).unwrap();
    let e = err(&shovel(home.path(), &["import", cut.to_str().unwrap(), "--name", "cut"]));
    assert!(e.contains("cut.gguf") && e.contains("truncated"), "{e}");
    let cut = home.path().join("header.gguf");
    std::fs::write(&cut, &src[..1000]).unwrap();
    let e = err(&shovel(home.path(), &["import", cut.to_str().unwrap(), "--name", "cut"]));
    assert!(e.contains("header.gguf") && e.contains("truncated"), "{e}");
    assert!(!ok(&shovel(home.path(), &["models"])).contains("cut"), "nothing half-checked is registered");
}

#[test]
fn unknown_models_are_named() {
    let home = tempfile::tempdir().unwrap();
    let e = err(&shovel(home.path(), &["pull", "no-such-model"]));
    assert!(e.contains("no-such-model") && e.contains("smollm2-135m-instruct"), "{e}");
    let e = err(&shovel(home.path(), &["run", "ghost", "hi"]));
    assert!(e.contains("ghost") && e.contains("not registered"), "{e}");
    let e = err(&shovel(home.path(), &["import", "/does/not/exist.gguf", "--name", "x"]));
    assert!(e.contains("/does/not/exist.gguf"), "{e}");
}

#[test]
fn gemma_runs_from_the_cli() {
    let home = tempfile::tempdir().unwrap();
    let gguf = cached_gguf("gemma3-270m");
    ok(&shovel(home.path(), &["import", gguf.to_str().unwrap(), "--name", "g"]));
    let out = ok(&shovel(home.path(), &["run", "g", "The capital of France is", "--raw", "--temperature", "0", "--max-tokens", "4"]));
    assert_eq!(out, " the capital of the\n");
}

#[test]
fn data_check_reports_every_bad_line_and_stats() {
    let home = tempfile::tempdir().unwrap();
    ok(&shovel(home.path(), &["import", cached_gguf("smollm2-135m-instruct").to_str().unwrap(), "--name", "smollm2-135m-instruct"]));
    let good: Vec<String> =
        (0..12).map(|i| serde_json::json!({"messages": [{"role": "user", "content": format!("question {i}")}, {"role": "assistant", "content": "SELECT 1"}]}).to_string()).collect();
    let f = home.path().join("train.jsonl");
    std::fs::write(&f, good.join("\n")).unwrap();
    let out = ok(&shovel(home.path(), &["data", "check", f.to_str().unwrap()]));
    assert!(out.contains("12 good example(s), 0 bad line(s)") && out.contains("ok: ready to fine-tune"), "{out}");
    assert!(out.contains("tokens per example"), "{out}");
    let mut bad = good.clone();
    bad[4] = r#"{"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}"#.into();
    std::fs::write(&f, bad.join("\n")).unwrap();
    let out = shovel(home.path(), &["data", "check", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("line 5: messages[1].role must be one of system, user, assistant, tool"), "{text}");
}
