//! What the reference comparisons (reference.rs for SentencePiece, hf_reference.rs for tokenizer.json) share:
//! running a reference script, a deterministic generator and the strings both tokenize.

#![allow(dead_code)] // each test binary uses its part

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The version of `package` tools/tests/requirements.txt pins.
pub fn pinned_version(package: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let reqs = std::fs::read_to_string(dir.join("tests/requirements.txt")).unwrap();
    reqs.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{package}==")).map(str::to_owned))
        .unwrap_or_else(|| panic!("tools/tests/requirements.txt pins no {package}"))
}

/// Runs the Python script `tests/{script}` on `request` (JSON in, JSON out) with `$ENGINE_PYTHON` (default
/// `python3`), failing with setup help for `package` if it can't. The reply names the version of `package` it ran;
/// a version other than the pinned one fails with `strict_version`, and is warned about otherwise.
pub fn run_reference(script: &str, package: &str, strict_version: bool, request: &Value) -> Value {
    let python = std::env::var("ENGINE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join(script);
    let pinned = pinned_version(package);
    let setup = format!(
        "set up the reference with `pip install {package}=={pinned}` (see tools/tests/requirements.txt), \
         or set ENGINE_PYTHON to a Python that has it"
    );
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python:?} ({e}); {setup}"));
    let input = serde_json::to_vec(request).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Write from a thread: the reply can be larger than a pipe buffer.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    // A script that exits early (the package missing) closes its stdin; its status and stderr, checked next, are
    // the useful part then.
    let written = writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{} {} failed ({}):\n{stderr}\n{setup}", python, script.display(), output.status);
    written.unwrap();
    let reply: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("bad JSON from the reference script ({e}); stderr:\n{stderr}"));
    let version = reply["version"].as_str().unwrap_or("?");
    if strict_version {
        assert_eq!(version, pinned, "the reference must run the {package} version the crate is");
    } else if version != pinned {
        eprintln!("warning: comparing against {package} {version}, but {pinned} is pinned");
    }
    reply
}

/// xorshift64*: deterministic test data without a dependency.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The strings the SentencePiece comparison tokenizes: fixed cases of every kind, then random mixtures.
pub fn strings() -> Vec<String> {
    let fixed = [
        "",
        " ",
        "  ",
        "\n",
        "\n\n\n",
        "\t",
        "The quick brown fox jumps over the lazy dog.",
        "Hello, world!",
        " leading space",
        "trailing space ",
        "   three leading, two trailing  ",
        "multiple   spaces    inside",
        "line one\nline two\n\nline four\n",
        "\ttab\tseparated\tvalues\t",
        "mixed \t \n whitespace \r\n windows line end",
        "我们今天去公园散步。",
        "这个模型有七十亿个参数，需要很大的显存。",
        "龘靐齉爩 rare characters fall back to bytes",
        "中文和English混合，还有数字123和符号!?",
        "0",
        "1234567890",
        "3.14159 2.71828 -42 1e-5 0x1F 1,000,000",
        "2024-11-07 14:45:00",
        "😀",
        "emoji 😀🎉🚀 in text",
        "family 👩‍👩‍👧‍👦 and flag 🇨🇳 and skin tone 👍🏽",
        "fn main() {\n    println!(\"hi\");\n}\n",
        "def f(x):\n\treturn x * 2\n",
        "<s> and </s> and <unk> typed as text",
        "<0x41> typed as text",
        "▁ the meta symbol itself ▁▁",
        "é vs e\u{301} (combining)",
        "Ελληνικά, русский, العربية, हिन्दी, 日本語, 한국어",
        "full-width ＡＢＣ１２３ and ideographic space\u{3000}here",
        "zero\u{200b}width and nbsp\u{a0}here",
        "nul\u{0}inside",
        "<unused1000> <unused63999>",
        "\u{fffd} replacement char",
        "a",
        "ab",
        "x\ny",
    ];
    let mut out: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
    // Random strings from a palette that mixes everything above.
    let palette: Vec<char> = "abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789  \n\t.,;:!?-_()[]{}<>\"'\\/\
                              我们的是在了一中文模型龘靐😀🎉👍🏽é\u{301}ß▁\u{3000}"
        .chars()
        .collect();
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for _ in 0..150 {
        let len = rng.below(30);
        out.push((0..len).map(|_| palette[rng.below(palette.len())]).collect());
    }
    out
}

/// More strings for the `tokenizer.json` comparison (a few hundred with [`strings`]): code, runs of whitespace
/// (where the byte-level pre-tokenizer's `\s+(?!\S)` lookahead matters), Chinese, emoji, and random mixtures of
/// them.
pub fn more_strings() -> Vec<String> {
    let fixed = [
        "    ",
        "        indented\n            deeper\n",
        "a  b   c    d     e",
        "trailing spaces    \n",
        " \n \n  \n",
        "\r\n\r\n",
        "\t\t\ttabs\t \t",
        "x\u{a0}\u{a0}y\u{2003}z",
        "import numpy as np\n\ndef softmax(x):\n    e = np.exp(x - x.max())\n    return e / e.sum()\n",
        "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
        "<div class=\"x\">&nbsp;</div>",
        "let v: Vec<u32> = (0..10).map(|i| i * i).collect();",
        "It's, we're, they've, I'm, you'll, he'd, DON'T, I'M",
        "1234567890123 3.14159e-10 ٣٤٥ ⅓ ²",
        "北京是中华人民共和国的首都。",
        "机器学习（ML）和深度学习（DL）",
        "日本語のテキストと한국어 텍스트",
        "🇺🇸🇯🇵🏳️‍🌈 👨‍👩‍👧‍👦 ✊🏿 🤷‍♀️",
        "😀😃😄😁😆😅🤣😂",
        "<s> </s> <|pad|> <|begin_of_text|> <think> typed as text",
        "Ġ Ċ ĉ the byte-level stand-ins typed as text",
        "\u{0}\u{1}\u{7f}\u{80}\u{ff}",
    ];
    let mut out: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
    let palette: Vec<char> =
        "abcdefXYZ019 \t\n\r  {}()[];:=+-*/\\\"'#_.,我们的是中文字😀🎉👍🏽\u{200d}\u{a0}\u{3000}ĠĊ".chars().collect();
    let mut rng = Rng(0x0bad_5eed_0fc0_de01);
    for _ in 0..80 {
        let len = rng.below(40);
        out.push((0..len).map(|_| palette[rng.below(palette.len())]).collect());
    }
    out
}
