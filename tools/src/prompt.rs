//! Prompts: where the text comes from and how it is wrapped for the model.
//!
//! * [`PromptSource`]: a command-line string, a file, or stdin (`-`), read with
//!   errors that name the file and, for bad encodings, the byte offset.
//! * [`Template`]: raw text, Baichuan's few-shot completion style
//!   (`Hamlet->Shakespeare\nOne Hundred Years of Solitude->`), or the chat
//!   style `USER:{text}\nASSISTANT:` with earlier turns joined by `\n`; for a
//!   conversation fed turn by turn, the same text split into a preamble and
//!   one piece per turn ([`Template::preamble`], [`Template::turn`]).
//! * [`unescape`]: turns `\n`, `\t`, … typed in a shell argument into the
//!   characters, for a CLI flag that asks for it.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Everything that can go wrong getting a prompt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromptError {
    /// The prompt file could not be read (the message names it).
    #[error("cannot read the prompt file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Standard input could not be read.
    #[error("cannot read the prompt from stdin: {source}")]
    ReadStdin {
        #[source]
        source: std::io::Error,
    },
    /// The prompt bytes are not UTF-8.
    #[error("{origin} is not valid UTF-8: invalid byte at offset {offset}; save it as UTF-8")]
    InvalidUtf8 { origin: String, offset: usize },
    /// Nothing but (possibly) whitespace.
    #[error("the prompt is empty ({detail})")]
    Empty { detail: String },
    /// A bad escape sequence given to [`unescape`].
    #[error("invalid escape in the prompt at byte {offset}: {problem}; supported escapes are \\n \\t \\r \\0 \\\\ \\' \\\" and \\u{{XXXX}}")]
    BadEscape { offset: usize, problem: String },
    /// A template name that is not one of [`Template::NAMES`].
    #[error("unknown prompt template {0:?}; choose one of: raw, completion, chat")]
    UnknownTemplate(String),
}

/// Where the prompt text comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptSource {
    /// The text itself (e.g. a `--prompt` argument).
    Text(String),
    /// A UTF-8 file.
    File(PathBuf),
    /// Standard input, read to the end.
    Stdin,
}

impl PromptSource {
    /// A file argument, where `-` means stdin (the usual CLI convention).
    pub fn from_path_arg(arg: impl AsRef<Path>) -> PromptSource {
        let arg = arg.as_ref();
        if arg.as_os_str() == "-" {
            PromptSource::Stdin
        } else {
            PromptSource::File(arg.to_path_buf())
        }
    }

    /// Reads the prompt exactly (no trimming; see [`trim_final_newline`]) and
    /// rejects an empty or whitespace-only one.
    pub fn read(&self) -> Result<String, PromptError> {
        self.read_with_stdin(&mut std::io::stdin().lock())
    }

    /// [`read`](Self::read), with `stdin` standing in for standard input.
    pub fn read_with_stdin(&self, stdin: &mut dyn Read) -> Result<String, PromptError> {
        let (text, origin) = match self {
            PromptSource::Text(text) => (text.clone(), "the prompt argument".to_owned()),
            PromptSource::File(path) => {
                let bytes =
                    std::fs::read(path).map_err(|source| PromptError::ReadFile { path: path.clone(), source })?;
                let origin = format!("the prompt file {}", path.display());
                (utf8(bytes, &origin)?, origin)
            }
            PromptSource::Stdin => {
                let mut bytes = Vec::new();
                stdin.read_to_end(&mut bytes).map_err(|source| PromptError::ReadStdin { source })?;
                let origin = "the prompt from stdin".to_owned();
                (utf8(bytes, &origin)?, origin)
            }
        };
        if text.trim().is_empty() {
            let what = if text.is_empty() { "has no text" } else { "has only whitespace" };
            return Err(PromptError::Empty { detail: format!("{origin} {what}") });
        }
        Ok(text)
    }
}

fn utf8(bytes: Vec<u8>, origin: &str) -> Result<String, PromptError> {
    String::from_utf8(bytes)
        .map_err(|e| PromptError::InvalidUtf8 { origin: origin.to_owned(), offset: e.utf8_error().valid_up_to() })
}

/// Drops one final `\n` or `\r\n`: editors and `echo` end files with one,
/// and a stray newline at the end of a prompt changes what the model writes.
pub fn trim_final_newline(text: &str) -> &str {
    text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(text)
}

/// Separator of Baichuan's few-shot completion style.
pub const COMPLETION_SEPARATOR: &str = "->";

/// How the user's text is wrapped before tokenization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Template {
    /// The text as is.
    Raw,
    /// `input->output` lines for each example, then `query->`.
    Completion {
        /// `(input, output)` demonstrations.
        examples: Vec<(String, String)>,
    },
    /// `USER:…\nASSISTANT:…` turns joined by `\n`, ending with `ASSISTANT:`.
    Chat {
        /// Earlier `(user, assistant)` exchanges.
        history: Vec<(String, String)>,
    },
}

impl Template {
    /// Names accepted by [`Template::from_name`] / `FromStr`.
    pub const NAMES: [&'static str; 3] = ["raw", "completion", "chat"];

    /// `raw`, `completion` (one-shot, [`Template::one_shot`]) or `chat` (no history).
    pub fn from_name(name: &str) -> Result<Template, PromptError> {
        match name {
            "raw" => Ok(Template::Raw),
            "completion" => Ok(Template::one_shot()),
            "chat" => Ok(Template::Chat { history: Vec::new() }),
            other => Err(PromptError::UnknownTemplate(other.to_owned())),
        }
    }

    /// The chat template without history.
    pub fn chat() -> Template {
        Template::Chat { history: Vec::new() }
    }

    /// The model card's one-shot completion prompt: `Hamlet->Shakespeare`.
    pub fn one_shot() -> Template {
        Template::Completion { examples: vec![("Hamlet".to_owned(), "Shakespeare".to_owned())] }
    }

    /// Wraps `text` (the query, or the user's message).
    pub fn render(&self, text: &str) -> String {
        match self {
            Template::Raw => text.to_owned(),
            Template::Completion { examples } => render_completion(examples, text),
            Template::Chat { history } => render_chat(history, text),
        }
    }
}

impl Template {
    /// What comes before the first turn of a conversation: the completion examples (`Hamlet->Shakespeare`) or
    /// the chat history, without the separator that follows them; empty for raw text.
    pub fn preamble(&self) -> String {
        match self {
            Template::Raw => String::new(),
            Template::Completion { examples } => {
                examples.iter().map(|(i, o)| format!("{i}{COMPLETION_SEPARATOR}{o}")).collect::<Vec<_>>().join("\n")
            }
            Template::Chat { history } => {
                history.iter().map(|(q, a)| format!("USER:{q}\nASSISTANT:{a}")).collect::<Vec<_>>().join("\n")
            }
        }
    }

    /// One turn of a conversation fed turn by turn: the user's `text` wrapped, with the separator from what came
    /// before unless the conversation is still empty (`first`: no preamble and no earlier turn). The model's
    /// reply follows it. So `preamble() + turn(q1, first) + a1 + turn(q2, false) + ...` is the text
    /// [`render`](Self::render) gives for the same history, and raw turns simply continue the text.
    pub fn turn(&self, text: &str, first: bool) -> String {
        let sep = if first { "" } else { "\n" };
        match self {
            Template::Raw => text.to_owned(),
            Template::Completion { .. } => format!("{sep}{text}{COMPLETION_SEPARATOR}"),
            Template::Chat { .. } => format!("{sep}USER:{text}\nASSISTANT:"),
        }
    }

    /// Where a reply ends in a conversation: at the line break that would begin the next completion line, or at
    /// the model starting the user's next turn itself. Raw text has none.
    pub fn stop_strings(&self) -> Vec<String> {
        match self {
            Template::Raw => Vec::new(),
            Template::Completion { .. } => vec!["\n".to_owned()],
            Template::Chat { .. } => vec!["\nUSER:".to_owned()],
        }
    }
}

impl FromStr for Template {
    type Err = PromptError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Template::from_name(s)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Template::Raw => "raw",
            Template::Completion { .. } => "completion",
            Template::Chat { .. } => "chat",
        })
    }
}

/// `"Hamlet->Shakespeare\nOne Hundred Years of Solitude->"` for examples
/// `[("Hamlet", "Shakespeare")]` and query `"One Hundred Years of Solitude"`.
pub fn render_completion<S: AsRef<str>>(examples: &[(S, S)], query: &str) -> String {
    let mut out = String::new();
    for (input, output) in examples {
        out.push_str(input.as_ref());
        out.push_str(COMPLETION_SEPARATOR);
        out.push_str(output.as_ref());
        out.push('\n');
    }
    out.push_str(query);
    out.push_str(COMPLETION_SEPARATOR);
    out
}

/// `"USER:hi\nASSISTANT:hello\nUSER:{user}\nASSISTANT:"` for history
/// `[("hi", "hello")]`.
pub fn render_chat<S: AsRef<str>>(history: &[(S, S)], user: &str) -> String {
    let mut out = String::new();
    for (question, answer) in history {
        out.push_str("USER:");
        out.push_str(question.as_ref());
        out.push_str("\nASSISTANT:");
        out.push_str(answer.as_ref());
        out.push('\n');
    }
    out.push_str("USER:");
    out.push_str(user);
    out.push_str("\nASSISTANT:");
    out
}

/// Interprets backslash escapes in a command-line argument: `\n`, `\t`, `\r`,
/// `\0`, `\\`, `\'`, `\"` and `\u{…}` (1–6 hex digits). Anything else is an
/// error rather than being passed through, so a typo (or a Windows path given
/// with the flag on) is reported instead of silently changing the prompt.
pub fn unescape(arg: &str) -> Result<String, PromptError> {
    let mut out = String::with_capacity(arg.len());
    let mut chars = arg.char_indices();
    while let Some((offset, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let bad = |problem: String| PromptError::BadEscape { offset, problem };
        let escaped = match chars.next() {
            None => return Err(bad("a lone backslash at the end".to_owned())),
            Some((_, 'n')) => '\n',
            Some((_, 't')) => '\t',
            Some((_, 'r')) => '\r',
            Some((_, '0')) => '\0',
            Some((_, '\\')) => '\\',
            Some((_, '\'')) => '\'',
            Some((_, '"')) => '"',
            Some((_, 'u')) => {
                let rest = chars.as_str();
                let digits = rest
                    .strip_prefix('{')
                    .and_then(|r| r.split_once('}'))
                    .map(|(digits, _)| digits)
                    .filter(|d| (1..=6).contains(&d.len()) && d.chars().all(|c| c.is_ascii_hexdigit()))
                    .ok_or_else(|| bad("\\u must be followed by {1 to 6 hex digits}".to_owned()))?;
                let code = u32::from_str_radix(digits, 16).unwrap_or(u32::MAX);
                let c = char::from_u32(code).ok_or_else(|| bad(format!("U+{code:X} is not a Unicode scalar value")))?;
                // Skip "{", the digits and "}".
                for _ in 0..digits.len() + 2 {
                    chars.next();
                }
                c
            }
            Some((_, other)) => return Err(bad(format!("unknown escape \\{other}"))),
        };
        out.push(escaped);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render() {
        assert_eq!(Template::Raw.render("a\nb"), "a\nb");
        assert_eq!(
            Template::one_shot().render("One Hundred Years of Solitude"),
            "Hamlet->Shakespeare\nOne Hundred Years of Solitude->"
        );
        assert_eq!(render_completion(&[("a", "1"), ("b", "2")], "c"), "a->1\nb->2\nc->");
        assert_eq!(render_completion::<&str>(&[], "q"), "q->");
        assert_eq!(Template::from_name("chat").unwrap().render("你好"), "USER:你好\nASSISTANT:");
        let chat = Template::Chat {
            history: vec![("hi".to_owned(), "hello".to_owned()), ("2+2?".to_owned(), "4".to_owned())],
        };
        assert_eq!(chat.render("thanks"), "USER:hi\nASSISTANT:hello\nUSER:2+2?\nASSISTANT:4\nUSER:thanks\nASSISTANT:");
        for name in Template::NAMES {
            assert_eq!(name.parse::<Template>().unwrap().to_string(), name);
        }
        let err = "chatml".parse::<Template>().unwrap_err().to_string();
        assert!(err.contains("chatml") && err.contains("raw, completion, chat"), "{err}");
    }

    #[test]
    fn turns_add_up_to_the_rendered_conversation() {
        let examples = vec![("Hamlet".to_owned(), "Shakespeare".to_owned()), ("Emma".to_owned(), "Austen".to_owned())];
        let (q1, a1, q2) = ("Dune", "Herbert", "Ulysses");
        for template in [Template::Raw, Template::Completion { examples: examples.clone() }, Template::chat()] {
            let pre = template.preamble();
            let one = format!("{pre}{}", template.turn(q1, pre.is_empty()));
            assert_eq!(one, template.render(q1), "{template}");
            let two = format!("{one}{a1}{}", template.turn(q2, false));
            let with_history = match &template {
                Template::Raw => format!("{q1}{a1}{q2}"),
                Template::Completion { examples } => {
                    let mut e = examples.clone();
                    e.push((q1.to_owned(), a1.to_owned()));
                    Template::Completion { examples: e }.render(q2)
                }
                Template::Chat { .. } => Template::Chat { history: vec![(q1.to_owned(), a1.to_owned())] }.render(q2),
            };
            assert_eq!(two, with_history, "{template}");
        }
        assert_eq!(Template::one_shot().preamble(), "Hamlet->Shakespeare");
        assert_eq!(Template::chat().turn("hi", true), "USER:hi\nASSISTANT:");
        assert_eq!(Template::chat().turn("hi", false), "\nUSER:hi\nASSISTANT:");
        let history = Template::Chat { history: vec![("a".into(), "b".into()), ("c".into(), "d".into())] };
        assert_eq!(history.preamble(), "USER:a\nASSISTANT:b\nUSER:c\nASSISTANT:d");
        assert_eq!(Template::Raw.stop_strings(), Vec::<String>::new());
        assert_eq!(Template::chat().stop_strings(), ["\nUSER:"]);
    }

    #[test]
    fn sources() {
        assert_eq!(PromptSource::from_path_arg("-"), PromptSource::Stdin);
        assert_eq!(PromptSource::from_path_arg("p.txt"), PromptSource::File("p.txt".into()));
        let text = PromptSource::Text("hi".into()).read().unwrap();
        assert_eq!(text, "hi");
        let got = PromptSource::Stdin.read_with_stdin(&mut &b"from stdin\n"[..]).unwrap();
        assert_eq!(got, "from stdin\n");
        assert_eq!(trim_final_newline(&got), "from stdin");
        assert_eq!(trim_final_newline("a\r\n"), "a");
        assert_eq!(trim_final_newline("a\n\n"), "a\n");
        assert_eq!(trim_final_newline("a"), "a");
    }

    #[test]
    fn source_errors() {
        let dir = std::env::temp_dir().join(format!("engine-tools-prompt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let missing = dir.join("missing.txt");
        let err = PromptSource::File(missing.clone()).read().unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");

        let bad = dir.join("latin1.txt");
        std::fs::write(&bad, b"caf\xe9 ok").unwrap();
        let err = PromptSource::File(bad.clone()).read().unwrap_err().to_string();
        assert!(err.contains(&bad.display().to_string()) && err.contains("offset 3"), "{err}");

        let empty = dir.join("empty.txt");
        std::fs::write(&empty, b"").unwrap();
        let err = PromptSource::File(empty).read().unwrap_err().to_string();
        assert!(err.starts_with("the prompt is empty"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();

        for source in [PromptSource::Text(String::new()), PromptSource::Text(" \n\t".into())] {
            let err = source.read().unwrap_err().to_string();
            assert!(err.starts_with("the prompt is empty"), "{err}");
        }
        let err = PromptSource::Stdin.read_with_stdin(&mut &b"\xff"[..]).unwrap_err().to_string();
        assert!(err.contains("stdin") && err.contains("offset 0"), "{err}");
    }

    #[test]
    fn unescape_cases() {
        assert_eq!(unescape(r"a\nb\tc\\d").unwrap(), "a\nb\tc\\d");
        assert_eq!(unescape(r#"\"q\" \'s\' \r\0"#).unwrap(), "\"q\" 's' \r\0");
        assert_eq!(unescape(r"\u{4e2d}\u{1F600}x").unwrap(), "中😀x");
        assert_eq!(unescape("中文 no escapes").unwrap(), "中文 no escapes");
        for bad in [r"end\", r"\q", r"\u4e2d", r"\u{}", r"\u{d800}", r"\u{1234567}", r"\u{12"] {
            let err = unescape(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid escape"), "{bad}: {err}");
        }
        let err = unescape(r"ab\q").unwrap_err().to_string();
        assert!(err.contains("byte 2") && err.contains(r"\q"), "{err}");
    }
}
