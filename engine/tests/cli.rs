//! `engine-cli` as a user runs it: each subcommand's main path and its errors, on a tiny model that `engine-cli
//! synth` writes into a scratch folder of the test's own. Outputs are checked against each other (the streamed text
//! against the JSON, the logits file against generate and perplexity), errors for their one-line form.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A scratch folder for one test, removed on drop, holding a tiny model written by `engine-cli synth`.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("engine-cli-test-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let s = Scratch { dir };
        let model = s.model();
        ok(&s.run(&["synth", "--out", path_arg(&model)]));
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn model(&self) -> PathBuf {
        self.path("model")
    }

    /// `engine-cli args...`; a command without `--model` gets a built-in model inside the scratch folder, never in
    /// the user's cache.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_engine-cli"))
            .args(args)
            .env("ENGINE_TINY_MODEL_DIR", self.path("builtin"))
            .output()
            .expect("engine-cli runs")
    }

    /// [`run`](Self::run) with `input` as stdin (a pipe).
    fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_engine-cli"))
            .args(args)
            .env("ENGINE_TINY_MODEL_DIR", self.path("builtin"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("engine-cli runs");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        // From a thread: the output can be larger than a pipe buffer; a chat that ends early closes its stdin.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("engine-cli runs");
        writer.join().unwrap();
        out
    }

    /// `engine-cli COMMAND --model <the tiny model> args...`, on the CPU for the commands that run the model (so
    /// that results and messages are the same with or without a GPU).
    fn on_model(&self, command: &str, args: &[&str]) -> Output {
        let model = self.model();
        let mut all = vec![command, "--model", path_arg(&model)];
        if matches!(command, "generate" | "chat" | "logits" | "perplexity" | "bench") {
            all.extend(["--backend", "cpu"]);
        }
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// `engine-cli chat --model <the tiny model> --backend cpu args...` with `input` piped to it.
    fn chat(&self, args: &[&str], input: &str) -> Output {
        let model = self.model();
        let all = [&["chat", "--model", path_arg(&model), "--backend", "cpu"][..], args].concat();
        self.run_with_stdin(&all, input.as_bytes())
    }

    /// `vocab_size`, `hidden_size`, ... of the tiny model's config.json.
    fn config(&self, key: &str) -> usize {
        let text = std::fs::read_to_string(self.model().join("config.json")).unwrap();
        let config: Value = serde_json::from_str(&text).unwrap();
        config[key].as_u64().unwrap_or_else(|| panic!("config.json has no {key}")) as usize
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path_arg(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// Stdout of a successful run.
fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "engine-cli failed with {}: {stderr}", out.status);
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

/// Checks a failed run: exit `code`, nothing on stdout, exactly one line on stderr that starts with `engine-cli: `
/// and contains every one of `names` (the argument or file at fault).
fn fails(out: &Output, code: i32, names: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.starts_with("engine-cli: ") && stderr.ends_with('\n') && stderr.lines().count() == 1, "{stderr:?}");
    for name in names {
        assert!(stderr.contains(name), "the error does not name {name}: {stderr}");
    }
}

fn json(out: &Output) -> Value {
    let stdout = ok(out);
    assert_eq!(stdout.lines().count(), 1, "one JSON object on one line: {stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn ids_of(tokenize_stdout: &str) -> Vec<u32> {
    tokenize_stdout.trim_end().split(',').map(|t| t.parse().unwrap_or_else(|_| panic!("not an id: {t:?}"))).collect()
}

/// Little-endian f32 rows of `vocab` values, as `engine-cli logits` writes them.
fn read_logits(path: &Path, vocab: usize) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(bytes.len() % (vocab * 4), 0);
    let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    values.chunks(vocab).map(<[f32]>::to_vec).collect()
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a))).unwrap() as u32
}

const PROMPT: &str = "Hello world";

#[test]
fn generate_greedy_text_is_deterministic_and_streams_what_json_reports() {
    let s = Scratch::new("generate");
    let args = ["-p", PROMPT, "-n", "16", "--ignore-eos"];
    let plain = s.on_model("generate", &args);
    let streamed = ok(&plain);
    assert_eq!(streamed, ok(&s.on_model("generate", &args)), "greedy generation differs between two runs");
    let stats = String::from_utf8_lossy(&plain.stderr);
    assert!(stats.contains("16 tokens") && stats.contains("stop: MaxTokens"), "{stats}");

    let j = json(&s.on_model("generate", &[&args[..], &["--json"]].concat()));
    let text = j["text"].as_str().unwrap();
    assert_eq!(format!("{text}\n"), streamed);
    assert_eq!(j["stop_reason"], "maxtokens");
    assert_eq!((j["generated_tokens"].as_u64(), j["tokens"].as_array().map(Vec::len)), (Some(16), Some(16)));
    let prompt_ids = ids_of(&ok(&s.on_model("tokenize", &[PROMPT])));
    assert_eq!(j["prompt_tokens"].as_u64(), Some(prompt_ids.len() as u64));

    // A stop string taken from the middle of that text: both outputs end just before its first occurrence.
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let stop = (chars.len() / 2..chars.len() - 1)
        .map(|k| text[chars[k].0..].chars().take(2).collect::<String>())
        .find(|s| !s.contains('\0'))
        .expect("16 tokens of text hold two characters without a NUL");
    let before = &text[..text.find(&stop).unwrap()];
    let stop_arg = format!("--stop={stop}");
    let j = json(&s.on_model("generate", &[&args[..], &["--json", &stop_arg]].concat()));
    assert_eq!((j["text"].as_str(), &j["stop_reason"]), (Some(before), &Value::from("stopstring")));
    let plain = s.on_model("generate", &[&args[..], &[stop_arg.as_str()]].concat());
    assert_eq!(ok(&plain), format!("{before}\n"));
    assert!(String::from_utf8_lossy(&plain.stderr).contains("stop: StopString"));
}

#[test]
fn a_checkpoint_with_tokenizer_json_runs_end_to_end() {
    let s = Scratch::new("tokenizer-json");
    let dir = s.path("json-model");
    let made = s.run(&["synth", "--out", path_arg(&dir), "--tokenizer", "json"]);
    ok(&made);
    assert!(String::from_utf8_lossy(&made.stderr).contains("tokenizer.json is the test tokenizer padded to"));
    assert!(dir.join("tokenizer.json").is_file() && !dir.join("tokenizer.model").exists());
    let config = std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap();
    assert!(config.contains("\"add_bos_token\": true") && config.contains("\"bos_token\": \"<s>\""), "{config}");
    let model = path_arg(&dir);

    // Byte-level pieces (Ġ for a space), BOS first as tokenizer_config.json asks.
    let text = "Hello world, 你好 😀";
    let rows = ok(&s.run(&["tokenize", "-m", model, text, "--pieces"]));
    let rows: Vec<(u32, &str)> =
        rows.lines().map(|l| l.split_once('\t').map(|(id, p)| (id.parse().unwrap(), p)).unwrap()).collect();
    assert_eq!(rows[0], (1, "<s>"));
    assert!(rows.iter().any(|(_, p)| p.starts_with('\u{120}')), "{rows:?}");
    let ids = ids_of(&ok(&s.run(&["tokenize", "-m", model, text])));
    assert_eq!(ids_of(&ok(&s.run(&["tokenize", "-m", model, text, "--no-bos"]))), ids[1..]);

    // Greedy generation: streamed text = the JSON's text = the decoded tokens, prompt tokens = tokenize's.
    let args = ["generate", "-m", model, "--backend", "cpu", "-p", text, "-n", "24", "--ignore-eos"];
    let streamed = ok(&s.run(&args));
    let j = json(&s.run(&[&args[..], &["--json"]].concat()));
    assert_eq!(format!("{}\n", j["text"].as_str().unwrap()), streamed);
    assert_eq!(j["prompt_tokens"].as_u64(), Some(ids.len() as u64));
    assert_eq!(j["generated_tokens"].as_u64(), Some(24));

    // Without tokenizer.model and tokenizer.json the error names both.
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    fails(&s.run(&["tokenize", "-m", model, "hi"]), 1, &["tokenizer.model", "tokenizer.json"]);
}

#[test]
fn generate_help_says_the_chat_template_of_tokenizer_config_is_not_used() {
    let s = Scratch::new("generate-help");
    let help = ok(&s.run(&["generate", "--help"]));
    assert!(help.contains("chat template of a tokenizer_config.json is not used"), "{help}");
}

/// One JSON object per line of a `--json` chat.
fn json_lines(out: &Output) -> Vec<Value> {
    ok(out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

fn n(v: &Value, key: &str) -> usize {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}")) as usize
}

#[test]
fn chat_feeds_each_turn_only_its_own_tokens_and_undo_restores_the_state() {
    let s = Scratch::new("chat");
    let (before, after) = (s.path("before.bin"), s.path("after-undo.bin"));
    let input = format!(
        "Hello there\n/logits {}\nHow are you today?\n/undo\n/logits {}\nTell me more\n",
        before.display(),
        after.display()
    );
    let args = ["-n", "8", "--ignore-eos"];
    let lines = json_lines(&s.chat(&[&args[..], &["--json"]].concat(), &input));
    let [t1, logits1, t2, undo, logits2, t3] = &lines[..] else { panic!("six JSON lines: {lines:?}") };

    // What each turn's own text tokenizes to: the first with BOS, the others after the previous reply.
    let own = |text: &str, first: bool| {
        let bos: &[&str] = if first { &[] } else { &["--no-bos"] };
        ids_of(&ok(&s.on_model("tokenize", &[&[text][..], bos].concat()))).len()
    };
    assert_eq!((n(t1, "cached_before"), n(t1, "dropped_turns")), (0, 0));
    assert_eq!(n(t1, "fed_tokens"), own("USER:Hello there\nASSISTANT:", true));
    assert_eq!(n(t1, "cached_after"), n(t1, "fed_tokens") + 8, "the whole reply is in the cache");
    // The second turn starts from the first's cache and feeds only its own tokens.
    assert_eq!(n(t2, "cached_before"), n(t1, "cached_after"));
    assert_eq!(n(t2, "fed_tokens"), own("\nUSER:How are you today?\nASSISTANT:", false));
    assert_eq!(n(t2, "fed_tokens"), n(t2, "turn_tokens"));
    assert_eq!(n(t2, "cached_after"), n(t2, "cached_before") + n(t2, "fed_tokens") + 8);
    // /undo truncates to the end of the first turn: the same positions, the same next-token logits, bit for bit.
    assert_eq!(
        (&undo["command"], n(undo, "cached"), n(undo, "turns")),
        (&Value::from("undo"), n(t1, "cached_after"), 1)
    );
    assert_eq!((n(logits1, "cached"), n(logits2, "cached")), (n(t1, "cached_after"), n(t1, "cached_after")));
    let (a, b) = (std::fs::read(&before).unwrap(), std::fs::read(&after).unwrap());
    assert_eq!(a.len(), s.config("vocab_size") * 4);
    assert!(a == b, "the logits after /undo differ from those before the undone turn");
    // The third turn again feeds only its own tokens.
    assert_eq!(n(t3, "cached_before"), n(t1, "cached_after"));
    assert_eq!(n(t3, "fed_tokens"), own("\nUSER:Tell me more\nASSISTANT:", false));

    // The first reply is what generate gives for the same prompt, and the turn after /undo is what a conversation
    // that never had the undone turn gives.
    let g = json(
        &s.on_model("generate", &["--template", "chat", "-p", "Hello there", "-n", "8", "--ignore-eos", "--json"]),
    );
    assert_eq!(g["tokens"], t1["tokens"]);
    let direct = json_lines(&s.chat(&[&args[..], &["--json"]].concat(), "Hello there\nTell me more\n"));
    assert_eq!((&direct[1]["tokens"], &direct[1]["cached_after"]), (&t3["tokens"], &t3["cached_after"]));

    // Without --json the replies stream to stdout, one line each, and per-turn stats go to stderr.
    let plain = s.chat(&args, &input);
    let texts: Vec<&str> = [t1, t2, t3].iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(ok(&plain), format!("{}\n{}\n{}\n", texts[0], texts[1], texts[2]));
    let stats = String::from_utf8_lossy(&plain.stderr);
    assert!(stats.contains("[turn 2]") && stats.contains("first token") && stats.contains("undone"), "{stats}");
}

#[test]
fn chat_context_full_stops_or_drops_the_oldest_turns() {
    let s = Scratch::new("chat-full");
    let input = "Hello there\nHow are you today?\nTell me more\n";
    let args = ["-n", "16", "--ignore-eos", "--json", "--ctx", "96"];
    // Dropping: the third turn drops the first and prefills the second again with its own tokens.
    let lines = json_lines(&s.chat(&[&args[..], &["--on-full", "drop-oldest"]].concat(), input));
    let [t1, t2, t3] = &lines[..] else { panic!("three turns: {lines:?}") };
    assert_eq!((n(t1, "dropped_turns"), n(t2, "dropped_turns"), n(t3, "dropped_turns")), (0, 0, 1));
    let head = 1; // BOS: the chat template has no preamble
    let second = n(t2, "cached_after") - n(t2, "cached_before");
    assert_eq!(n(t3, "fed_tokens"), head + second + n(t3, "turn_tokens"));
    assert_eq!(n(t3, "cached_after"), n(t3, "fed_tokens") + 16);
    assert!(n(t3, "cached_after") <= 96);

    // Stopping: the third message does not fit; from a pipe that ends the chat with an error naming the ways out.
    let out = s.chat(&args, input);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(ok_lines(&out), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("engine-cli: context overflow") && stderr.lines().count() == 1, "{stderr}");
    for name in ["/undo", "--on-full drop-oldest", "--ctx"] {
        assert!(stderr.contains(name), "{stderr}");
    }
}

/// Lines of stdout, whatever the exit status.
fn ok_lines(out: &Output) -> usize {
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn chat_errors_from_a_pipe_end_the_chat() {
    let s = Scratch::new("chat-errors");
    fails(&s.chat(&[], "/bogus\n"), 1, &["/bogus", "/undo"]);
    fails(&s.chat(&[], "/logits\n"), 1, &["/logits FILE"]);
    let model = s.model();
    let chat = ["chat", "-m", path_arg(&model), "--backend", "cpu"];
    fails(&s.run_with_stdin(&chat, b"\n\nab\xff\n"), 1, &["line 3 of stdin", "offset 2"]);
    assert_eq!(json_lines(&s.chat(&["--json"], "/undo\n"))[0]["undone"], false);
    fails(&s.chat(&["-n", "0"], "hi\n"), 1, &["--max-new-tokens"]);
    let help = ok(&s.run(&["chat", "--help"]));
    assert!(help.contains("chat template of a tokenizer_config.json is not used") && help.contains("--on-full"));
}

#[test]
fn generate_errors_name_what_is_wrong() {
    let s = Scratch::new("generate-errors");
    let missing = s.path("missing");
    fails(&s.run(&["generate", "-m", path_arg(&missing), "-p", "hi", "--backend", "cpu"]), 1, &[path_arg(&missing)]);
    fails(&s.on_model("generate", &["-p", "hi", "--temperature=-1"]), 1, &["temperature", "-1"]);
    let no_file = s.path("no-prompt.txt");
    fails(&s.on_model("generate", &["--prompt-file", path_arg(&no_file)]), 1, &[path_arg(&no_file)]);
    fails(&s.on_model("generate", &["-p", "hi", "--ctx", "2"]), 1, &["--ctx"]);
    // Argument errors are clap's, still one line, exit status 2.
    fails(&s.on_model("generate", &["-p", "hi", "--frobnicate"]), 2, &["--frobnicate"]);
}

#[test]
fn without_a_model_the_builtin_one_is_made_where_engine_tiny_model_dir_says() {
    let s = Scratch::new("builtin");
    let out = s.run(&["generate", "-p", PROMPT, "-n", "4", "--backend", "cpu", "--json"]);
    assert_eq!(json(&out)["generated_tokens"].as_u64().map(|n| n <= 4), Some(true));
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains("built-in tiny model") && note.contains(path_arg(&s.path("builtin"))), "{note}");
    assert!(s.path("builtin").join("config.json").is_file());
}

#[test]
fn tokenize_prints_ids_and_pieces() {
    let s = Scratch::new("tokenize");
    let ids = ids_of(&ok(&s.on_model("tokenize", &[PROMPT])));
    assert!(ids.len() > 2 && ids[0] == 1, "BOS first: {ids:?}");
    assert!(ids.iter().all(|&id| (id as usize) < s.config("vocab_size")));
    assert_eq!(ids_of(&ok(&s.on_model("tokenize", &[PROMPT, "--no-bos"]))), ids[1..]);
    let pieces = ok(&s.on_model("tokenize", &[PROMPT, "--pieces"]));
    let rows: Vec<(u32, String)> = pieces
        .lines()
        .map(|l| {
            let (id, piece) = l.split_once('\t').unwrap_or_else(|| panic!("not `id<TAB>piece`: {l:?}"));
            (id.parse().unwrap(), piece.to_string())
        })
        .collect();
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), ids);
    assert_eq!(rows[1..].iter().map(|r| r.1.as_str()).collect::<String>().replace('\u{2581}', " "), PROMPT);

    let missing = s.path("missing");
    fails(
        &s.run(&["tokenize", "-m", path_arg(&missing), "hi"]),
        1,
        &[&format!("{}/tokenizer.model", missing.display())],
    );
}

#[test]
fn logits_file_is_ids_by_vocab_floats_and_agrees_with_generate() {
    let s = Scratch::new("logits");
    let vocab = s.config("vocab_size");
    let ids = ok(&s.on_model("tokenize", &[PROMPT]));
    let out = s.path("logits.bin");
    ok(&s.on_model("logits", &["--ids", ids.trim_end(), "--out", path_arg(&out)]));
    let n = ids_of(&ids).len();
    assert_eq!(std::fs::metadata(&out).unwrap().len() as usize, n * vocab * 4);
    let rows = read_logits(&out, vocab);
    assert!(rows.iter().flatten().all(|v| v.is_finite()));
    // Greedy decoding picks the largest logit after the prompt.
    let j = json(&s.on_model("generate", &["-p", PROMPT, "-n", "1", "--ignore-eos", "--json"]));
    assert_eq!(j["tokens"][0].as_u64(), Some(argmax(&rows[n - 1]) as u64));

    fails(&s.on_model("logits", &["--ids", "1,x", "--out", path_arg(&out)]), 1, &["--ids", "`x`"]);
    fails(&s.on_model("logits", &["--ids", "1,5000", "--out", path_arg(&out)]), 1, &["5000"]);
    let unwritable = s.path("missing/logits.bin");
    fails(&s.on_model("logits", &["--ids", "1,2", "--out", path_arg(&unwritable)]), 1, &[path_arg(&unwritable)]);
}

#[test]
fn perplexity_is_the_mean_loss_of_the_logits() {
    let s = Scratch::new("perplexity");
    let text = "The cat sat on the mat. The dog sat on the log.\n";
    let file = s.path("text.txt");
    std::fs::write(&file, text).unwrap();
    let printed = ok(&s.on_model("perplexity", &["--file", path_arg(&file)]));
    let ppl: f64 = printed.trim().parse().unwrap_or_else(|_| panic!("not a number: {printed:?}"));

    // The same from the logits of the same ids: exp of the mean negative log-likelihood of each next token.
    let ids = ok(&s.on_model("tokenize", &[text]));
    let logits = s.path("logits.bin");
    ok(&s.on_model("logits", &["--ids", ids.trim_end(), "--out", path_arg(&logits)]));
    let (ids, rows) = (ids_of(&ids), read_logits(&logits, s.config("vocab_size")));
    let nll: f64 = (1..ids.len())
        .map(|t| {
            let row = &rows[t - 1];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max + row.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
            lse - row[ids[t] as usize] as f64
        })
        .sum();
    let expect = (nll / (ids.len() - 1) as f64).exp();
    // Printed with four decimals.
    assert!((ppl - expect).abs() <= 1e-4 + 1e-9 * expect, "perplexity {ppl}, from the logits {expect}");

    let missing = s.path("missing.txt");
    fails(&s.on_model("perplexity", &["--file", path_arg(&missing)]), 1, &[path_arg(&missing)]);
    fails(&s.on_model("perplexity", &["--file", path_arg(&file), "--window", "1"]), 1, &["--window"]);
}

#[test]
fn inspect_describes_the_checkpoint() {
    let s = Scratch::new("inspect");
    let out = ok(&s.on_model("inspect", &[]));
    let vocab = format!("vocab {}", s.config("vocab_size"));
    for want in [
        "naming:     Baichuan",
        &vocab,
        "quant:      GPTQ int4, group size 32",
        "floats:     fp16 (config.json torch_dtype float16)",
        "tensors:    47 used",
    ] {
        assert!(out.contains(want), "no {want:?} in\n{out}");
    }
    let listed = ok(&s.on_model("inspect", &["--tensors"]));
    let rows = listed.lines().filter(|l| l.starts_with("  ") && l.contains(".safetensors:"));
    assert_eq!(rows.count(), 47, "{listed}");

    let missing = s.path("missing");
    fails(&s.run(&["inspect", "-m", path_arg(&missing)]), 1, &[path_arg(&missing)]);
}

#[test]
fn plan_sizes_the_kv_cache_from_the_context() {
    let s = Scratch::new("plan");
    let out = ok(&s.on_model("plan", &["--ctx", "64", "--all"]));
    for region in ["weights", "kv cache", "activations", "workspace", "total"] {
        assert!(out.lines().any(|l| l.starts_with(region)), "no {region} row in\n{out}");
    }
    // Keys: one fp16 vector per layer, KV head (Baichuan: one per head) and position.
    let keys = out.lines().find(|l| l.starts_with("kv.keys")).expect("a kv.keys buffer");
    let bytes: usize = keys.split_whitespace().nth(4).unwrap().parse().unwrap();
    let head_dim = s.config("hidden_size") / s.config("num_attention_heads");
    assert_eq!(bytes, s.config("num_hidden_layers") * s.config("num_attention_heads") * 64 * head_dim * 2, "{keys}");
    let short = ok(&s.on_model("plan", &["--ctx", "64"]));
    assert!(short.lines().count() < out.lines().count() && short.contains("--all lists every buffer"));
    // The lm_head's int8 copy for the greedy screen: a byte per weight, and one scale per 128 columns; gone with
    // --no-lm-head-screen.
    let screen = out.lines().find(|l| l.starts_with("lm_head.screen_q")).expect("an lm_head.screen_q buffer");
    let bytes: usize = screen.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(bytes, s.config("vocab_size") * s.config("hidden_size"), "{screen}");
    let without = ok(&s.on_model("plan", &["--ctx", "64", "--all", "--no-lm-head-screen"]));
    assert!(!without.contains("lm_head.screen"), "{without}");

    fails(&s.on_model("plan", &["--ctx", "0"]), 1, &["--ctx"]);
}

#[test]
fn synth_writes_what_inspect_reads() {
    let s = Scratch::new("synth");
    let llama = s.path("llama");
    ok(&s.run(&["synth", "--out", path_arg(&llama), "--arch", "llama", "--group-size", "64", "--shards", "2"]));
    let out = ok(&s.run(&["inspect", "-m", path_arg(&llama)]));
    for want in ["naming:     Llama", "group size 64", "model-00001-of-00002.safetensors, model-00002-of-00002"] {
        assert!(out.contains(want), "no {want:?} in\n{out}");
    }

    fails(&s.run(&["synth", "--out", path_arg(&s.path("bad")), "--group-size", "0"]), 1, &["--group-size"]);
    // A file where the directory should go.
    let file = s.model().join("config.json");
    fails(&s.run(&["synth", "--out", path_arg(&file)]), 1, &[path_arg(&file)]);
}

#[test]
fn eight_bit_checkpoints_are_written_described_planned_and_run_on_the_cpu() {
    let s = Scratch::new("int8");
    let m = s.path("int8");
    let args = [
        "synth",
        "--out",
        path_arg(&m),
        "--bits",
        "8",
        "--arch",
        "llama",
        "--intermediate",
        "172",
        "--desc-act-per-linear",
    ];
    ok(&s.run(&args));
    assert!(m.join("gptq_model-8bit-32g.safetensors").is_file());
    let out = ok(&s.run(&["inspect", "-m", path_arg(&m)]));
    assert!(out.contains("quant:      GPTQ int8, group size 32, desc_act true"), "{out}");
    assert!(out.contains("cuda:       refuses it:") && out.contains("multiples of 8"), "{out}");
    // The plan sizes 8-bit linears as the int4 tiles with one byte per weight: q/k/v's 64 rows × its slots.
    let plan = ok(&s.run(&["plan", "-m", path_arg(&m), "--ctx", "64"]));
    let qkv = plan.lines().find(|l| l.starts_with("layers.0.qkv.qw ")).expect("a q/k/v buffer");
    let col_map = plan.lines().find(|l| l.starts_with("layers.0.qkv.col_map ")).expect("a column map");
    let bytes = |l: &str| -> usize { l.split_whitespace().nth(3).unwrap().parse().unwrap() };
    assert_eq!(
        bytes(qkv),
        64 * bytes(col_map) / 4,
        "{qkv}
{col_map}"
    );

    let logits = s.path("int8.f32");
    ok(&s.run(&["logits", "-m", path_arg(&m), "--backend", "cpu", "--ids", "1,5,9", "--out", path_arg(&logits)]));
    assert_eq!(std::fs::metadata(&logits).unwrap().len() as usize, 3 * 1024 * 4);
    // CUDA runs 8-bit GPTQ, but not this shape (intermediate 172, not a multiple of 8), and says so with or without
    // a GPU, naming where it runs.
    let gen = ["generate", "-m", path_arg(&m), "--backend", "cuda", "-p", "hi", "-n", "1"];
    fails(&s.run(&gen), 1, &["intermediate_size", "multiples of 8", "--backend cpu"]);

    fails(&s.run(&["synth", "--out", path_arg(&s.path("bad")), "--bits", "3"]), 1, &["--bits", "4 or 8"]);
}

#[test]
fn act_order_per_linear_runs_on_the_cpu_and_plans_a_permutation_per_part() {
    // 4-bit with a permutation per linear, as AutoGPTQ writes act-order: q, k, v, gate and up each their own.
    let s = Scratch::new("per-linear");
    let m = s.path("per-linear");
    let args = ["synth", "--out", path_arg(&m), "--arch", "llama", "--desc-act-per-linear", "--intermediate", "168"];
    ok(&s.run(&args));
    let out = ok(&s.run(&["inspect", "-m", path_arg(&m)]));
    assert!(out.contains("quant:      GPTQ int4, group size 32, desc_act true"), "{out}");
    let logits = s.path("per-linear.f32");
    ok(&s.run(&["logits", "-m", path_arg(&m), "--backend", "cpu", "--ids", "1,5", "--out", path_arg(&logits)]));
    // The device plan holds one row order per fused part (q/k/v: 3, gate/up: 2, each K rows padded to 64), and
    // lays gate/up out split: the gate columns' tiles, then the up columns' (168 → 176 slots each).
    let plan = ok(&s.run(&["plan", "-m", path_arg(&m), "--ctx", "64"]));
    let line = |name: &str| plan.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}\n{plan}"));
    let bytes = |l: &str| -> usize { l.split_whitespace().nth(3).unwrap().parse().unwrap() };
    let hidden = 64;
    assert_eq!(bytes(line("layers.0.qkv.perm ")), 3 * hidden * 4, "{plan}");
    assert_eq!(bytes(line("layers.0.gate_up.perm ")), 2 * hidden * 4, "{plan}");
    assert_eq!(bytes(line("layers.0.gate_up.col_map ")), 2 * 176 * 4, "{plan}");
    assert_eq!(bytes(line("layers.0.down_proj.perm ")), 192 * 4, "{plan}");
}

#[test]
fn bf16_checkpoints_are_written_described_and_run_on_the_cpu() {
    let s = Scratch::new("bf16");
    let m = s.path("bf16");
    ok(&s.run(&["synth", "--out", path_arg(&m), "--bf16", "--arch", "llama", "--kv-heads", "2"]));
    assert!(!m.join("quantize_config.json").exists());
    let out = ok(&s.run(&["inspect", "-m", path_arg(&m)]));
    for want in [
        "quant:      none (unquantized)",
        "floats:     bf16 (config.json torch_dtype bfloat16)",
        "cuda:       runs it (its bf16 tensors rounded to fp16 at load)",
    ] {
        assert!(out.contains(want), "no {want:?} in\n{out}");
    }
    let listed = ok(&s.run(&["inspect", "-m", path_arg(&m), "--tensors"]));
    assert!(listed.lines().filter(|l| l.starts_with("  ")).all(|l| l.contains(" BF16 ")), "{listed}");
    // The device plan holds the linears as fp16 tiles (the CUDA backend rounds bf16 to fp16): q/k/v's 64 rows × its
    // slots, two bytes each.
    let plan = ok(&s.run(&["plan", "-m", path_arg(&m), "--ctx", "64"]));
    let line = |name: &str| plan.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}\n{plan}"));
    let bytes = |l: &str| -> usize { l.split_whitespace().nth(3).unwrap().parse().unwrap() };
    assert_eq!(bytes(line("layers.0.qkv.qw ")), 64 * bytes(line("layers.0.qkv.col_map ")) / 4 * 2, "{plan}");
    let text = ok(&s.run(&["generate", "-m", path_arg(&m), "--backend", "cpu", "-p", "hi", "-n", "3", "--json"]));
    assert!(text.contains("\"tokens\""), "{text}");
    fails(&s.run(&["synth", "--out", path_arg(&s.path("both")), "--bf16", "--f16"]), 2, &["--f16"]);
}

#[test]
fn bench_on_the_cpu_reports_json() {
    let s = Scratch::new("bench");
    let args = ["--decode-tokens", "4", "--prompts", "8", "--reps", "1", "--json"];
    let j = json(&s.on_model("bench", &args));
    assert_eq!(j["backend"], "cpu");
    assert_eq!(j["decode"][0]["tokens"].as_u64(), Some(4));
    assert!(j["decode"][0]["tok_s"].as_f64().is_some_and(|t| t > 0.0), "{j}");
    assert_eq!(j["time_to_first_token"][0]["prompt"].as_u64(), Some(8));
    assert!(j["time_to_first_token"][0]["ms"].as_f64().is_some_and(|t| t > 0.0), "{j}");

    fails(&s.on_model("bench", &["--prompts", "8,x"]), 1, &["--prompts", "`x`"]);
    fails(&s.on_model("bench", &["--tune", "pdl=maybe"]), 1, &["--tune", "pdl=maybe", "on or off"]);
    fails(&s.on_model("bench", &["--tune", "warp=9"]), 1, &["--tune", "`warp`", "gemv_blocks_per_sm"]);
}

#[test]
fn help_of_every_model_command_lists_every_tuning_key() {
    let s = Scratch::new("tune-help");
    for command in ["bench", "generate", "chat", "logits", "perplexity"] {
        let help = ok(&s.run(&[command, "--help"]));
        for (key, values, _) in engine::TUNING_KEYS {
            let listed = help.contains(&format!("{key}={values}"));
            assert!(listed, "{command} --help does not list {key}={values}:\n{help}");
        }
    }
    // Checked before anything loads, with the same message as bench's; the CPU backend says it ignores them.
    fails(&s.on_model("generate", &["-p", "hi", "--tune", "gemv_wide=2"]), 1, &["--tune", "gemv_wide=2"]);
    let out = s.on_model("generate", &["-p", "hi", "-n", "1", "--tune", "gemv_wide=on"]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tune changes CUDA launches only"));
}
