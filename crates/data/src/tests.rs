//! Case tables for every format and every kind of bad line.

use super::*;

fn chat_line(user: &str, answer: &str) -> String {
    serde_json::json!({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}).to_string()
}

#[test]
fn openai_chat_with_weights() {
    let text = [
        r#"{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "draft", "weight": 0}, {"role": "user", "content": "again"}, {"role": "assistant", "content": "a"}]}"#,
        "",
        &chat_line("q2", "a2"),
    ]
    .join("\n");
    let p = parse(text.as_bytes(), None, Some("train.jsonl")).unwrap();
    assert_eq!(p.format, Format::OpenaiChat);
    assert_eq!(p.error_count, 0, "{:?}", p.errors);
    assert_eq!(p.examples.len(), 2);
    assert_eq!(p.examples[0].messages[2].weight, 0.0);
    assert_eq!(p.examples[0].messages[4].weight, 1.0);
    assert_eq!(p.examples[1].line, 3);
}

#[test]
fn every_bad_line_is_named_with_its_field() {
    let text = [
        chat_line("fine", "ok"),
        "{not json".to_string(),
        r#"{"messages": [{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}, {"role": "assistant", "content": 5}]}"#.to_string(),
        r#"{"messages": []}"#.to_string(),
        r#"{"messages": [{"role": "user", "content": "only a question"}]}"#.to_string(),
        r#"{"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a", "weight": 0.5}]}"#.to_string(),
        r#"["an array"]"#.to_string(),
    ]
    .join("\n");
    let p = parse(text.as_bytes(), Some(Format::OpenaiChat), None).unwrap();
    let shown: Vec<String> = p.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        shown,
        vec![
            "line 2: is not valid JSON: key must be a string at line 1 column 2",
            "line 3: messages[1].role must be one of system, user, assistant, tool",
            "line 3: messages[2].content must be a string",
            "line 4: messages must not be empty",
            "line 5: messages must contain at least one assistant message to learn from",
            "line 6: messages[0].weight is only allowed on assistant messages",
            "line 6: messages[1].weight must be 0 or 1",
            "line 7: must be a JSON object",
        ]
    );
    assert_eq!(p.examples.len(), 1);
    match p.validate() {
        Err(Rejection::BadLines { total, .. }) => assert_eq!(total, 8),
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_are_capped_but_counted() {
    let text = "{bad\n".repeat(MAX_ERRORS + 25);
    let p = parse(text.as_bytes(), Some(Format::OpenaiChat), None).unwrap();
    assert_eq!(p.errors.len(), MAX_ERRORS);
    assert_eq!(p.error_count, MAX_ERRORS + 25);
    let msg = p.validate().unwrap_err().to_string();
    assert!(msg.contains("and 25 more"), "{msg}");
}

#[test]
fn prompt_completion_alpaca_sharegpt_and_csv() {
    let pc = parse(br#"{"prompt": "2+2?", "completion": "4"}"#, None, None).unwrap();
    assert_eq!(pc.format, Format::PromptCompletion);
    assert_eq!(pc.examples[0].messages[1].content, "4");

    let alpaca = parse(br#"[{"instruction": "Translate", "input": "hola", "output": "hello"}, {"instruction": "Say hi", "output": "hi"}]"#, None, Some("a.json")).unwrap();
    assert_eq!(alpaca.format, Format::Alpaca);
    assert_eq!(alpaca.examples[0].messages[0].content, "Translate\n\nhola");
    assert_eq!(alpaca.examples[1].messages[0].content, "Say hi");
    let alpaca_l = parse(b"{\"instruction\": \"x\", \"output\": \"y\"}\n{\"instruction\": \"x\"}\n", None, None).unwrap();
    assert_eq!(alpaca_l.errors[0].to_string(), "line 2: output is missing");

    let sg = parse(br#"{"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}"#, None, None).unwrap();
    assert_eq!(sg.format, Format::Sharegpt);
    assert_eq!(sg.examples[0].messages.iter().map(|t| t.role.as_str()).collect::<Vec<_>>(), ["system", "user", "assistant"]);
    let sg_bad = parse(br#"{"conversations": [{"from": "bot", "value": "q"}]}"#, None, None).unwrap();
    assert_eq!(sg_bad.errors[0].to_string(), "line 1: conversations[0].from must be one of human, gpt, system");

    let csv = "Question,Answer\n\"华北地区2019年3月的销售额?\",\"SELECT 1\"\n,missing question\n";
    let c = parse(csv.as_bytes(), None, Some("qa.csv")).unwrap();
    assert_eq!(c.format, Format::Csv);
    assert_eq!(c.examples.len(), 1);
    assert_eq!(c.examples[0].messages[0].content, "华北地区2019年3月的销售额?");
    assert_eq!(c.errors[0].to_string(), "line 3: question is empty");
    let no_cols = parse(b"q,a\nx,y\n", None, Some("x.csv")).unwrap();
    assert!(no_cols.errors[0].message.contains("`question` and `answer`"));
}

#[test]
fn too_few_examples_are_refused_with_the_reason() {
    let text: Vec<String> = (0..3).map(|i| chat_line(&format!("q{i}"), "a")).collect();
    let err = parse(text.join("\n").as_bytes(), None, None).unwrap().validate().unwrap_err();
    assert_eq!(err, Rejection::TooFew { count: 3 });
    assert!(err.to_string().contains("at least 10"));
    let text: Vec<String> = (0..12).map(|i| chat_line(&format!("q{i}"), "a")).collect();
    assert_eq!(parse(text.join("\n").as_bytes(), None, None).unwrap().validate().unwrap().examples.len(), 12);
}

#[test]
fn unknown_formats_and_binary_are_errors() {
    assert!(matches!(parse(br#"{"foo": 1}"#, None, None), Err(Error::UnknownFormat(_))));
    assert!(matches!(parse(b"hello\xff", None, None), Err(Error::NotUtf8(5))));
}

#[test]
fn stats_count_tokens_truncation_and_duplicates() {
    let lines = [chat_line("a", "b"), chat_line("a", "b"), chat_line("long question here", "and a long answer")];
    let p = parse(lines.join("\n").as_bytes(), None, None).unwrap();
    let words = |e: &Example| e.messages.iter().map(|t| t.content.split_whitespace().count()).sum::<usize>();
    let s = stats(&p.examples, &words, 5, 3, 10.0);
    assert_eq!((s.examples, s.tokens_min, s.tokens_max, s.tokens_total), (3, 2, 7, 11));
    assert_eq!(s.truncated, 1);
    assert_eq!(s.duplicates, 1);
    assert!((s.est_train_seconds - (2 + 2 + 5) as f64 * 3.0 / 10.0).abs() < 1e-9);
}

#[test]
fn split_is_seeded_and_disjoint() {
    let ex: Vec<Example> = (0..20).map(|i| Example { messages: vec![], line: i + 1 }).collect();
    let (t1, v1) = split(ex.clone(), 0.2, 7);
    let (t2, v2) = split(ex.clone(), 0.2, 7);
    assert_eq!((t1.len(), v1.len()), (16, 4));
    assert_eq!(v1, v2);
    assert_eq!(t1, t2);
    let (_, v3) = split(ex.clone(), 0.2, 8);
    assert_ne!(v1, v3, "another seed, another split");
    let mut all: Vec<usize> = t1.iter().chain(&v1).map(|e| e.line).collect();
    all.sort();
    assert_eq!(all, (1..=20).collect::<Vec<_>>());
    assert_eq!(split(ex[..1].to_vec(), 0.5, 1).1.len(), 0);
}
