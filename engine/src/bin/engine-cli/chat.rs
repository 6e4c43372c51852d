//! `engine-cli chat`: the loop around [`engine::chat::Conversation`]. One message per line of stdin, from a
//! terminal or a pipe (a line ending in `\` continues on the next); replies stream to stdout, per-turn statistics
//! go to stderr, or everything to stdout as one JSON object per turn and command with `--json`.
//!
//! Lines starting with `/` are commands (`//` sends a message that starts with `/`). From a pipe there is nobody
//! to ask, so what is only a message in a terminal (an unknown command, a message that does not fit) ends the
//! chat with an error there.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use engine::chat::{ChatOptions, Conversation, OnFull, TurnOutcome};
use engine::engine::Engine;
use engine::error::{Error, Result};
use engine::session::StopReason;
use serde_json::json;

use crate::args::{ChatArgs, OnFullArg};
use crate::stream_out::StreamOut;

const HELP: &str = "commands: /undo (forget the last turn), /reset (start over), /logits FILE (write the next \
                    token's logits, little-endian f32), /help, /quit; // starts a message with /; a line ending in \\ \
                    continues on the next";

pub fn run(engine: &Engine, a: ChatArgs) -> Result<()> {
    let opts = ChatOptions {
        template: a.template.template(&a.example).map_err(Error::InvalidArgument)?,
        max_new_tokens: a.max_new_tokens,
        sampler: a.sampling.params(),
        stop_strings: a.stop.clone(),
        stop_at_eos: !a.ignore_eos,
        add_bos: !a.no_bos,
        on_full: match a.on_full {
            OnFullArg::Stop => OnFull::Stop,
            OnFullArg::DropOldest => OnFull::DropOldest,
        },
    };
    if opts.max_new_tokens == 0 {
        return Err(Error::InvalidArgument("--max-new-tokens must be at least 1".into()));
    }
    let mut conv = Conversation::new(engine, engine.new_session(None)?, opts)?;
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprintln!(
            "engine-cli: chat on {} ({}), template {}, context {}; {HELP}; Ctrl-D ends",
            engine.device_description(),
            engine.backend_name(),
            conv.options().template,
            conv.session().capacity()
        );
    }
    let mut input = stdin.lock();
    let mut line_no = 0;
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let Some(line) = read_message(&mut input, &mut line_no)? else { break };
        if line.trim().is_empty() {
            continue;
        }
        let result = match line.strip_prefix('/').filter(|rest| !rest.starts_with('/')) {
            Some(command) => match command.split_once(char::is_whitespace).unwrap_or((command, "")) {
                ("quit" | "exit", _) => break,
                (name, arg) => run_command(&mut conv, name, arg.trim(), a.json),
            },
            None => {
                let message = line.strip_prefix('/').unwrap_or(&line);
                // Numbered by position in the conversation: after /undo the next turn takes the undone one's number.
                let n = conv.turns() + 1;
                turn(&mut conv, n, message, a.json)
            }
        };
        match result {
            Ok(()) => {}
            // A closed stdout ends the chat quietly, as it would end any other command's output.
            Err(Error::Io { ref source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(e) if interactive => eprintln!("engine-cli: {e}"),
            Err(e) => return Err(e),
        }
    }
    if interactive {
        eprintln!();
    }
    Ok(())
}

/// The next message: a line without its line break, joined with the following ones while it ends in `\`.
/// `None` at the end of the input.
fn read_message(input: &mut impl BufRead, line_no: &mut usize) -> Result<Option<String>> {
    let mut message = String::new();
    loop {
        let mut bytes = Vec::new();
        let n = input.read_until(b'\n', &mut bytes).map_err(|e| Error::io("<stdin>", e))?;
        if n == 0 {
            return Ok((!message.is_empty()).then_some(message));
        }
        *line_no += 1;
        let line = String::from_utf8(bytes).map_err(|e| {
            Error::InvalidArgument(format!(
                "line {line_no} of stdin is not valid UTF-8 (invalid byte at offset {}); send UTF-8 text",
                e.utf8_error().valid_up_to()
            ))
        })?;
        let line = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
        match line.strip_suffix('\\') {
            Some(part) => {
                message.push_str(part);
                message.push('\n');
            }
            None => {
                message.push_str(line);
                return Ok(Some(message));
            }
        }
    }
}

fn run_command(conv: &mut Conversation<'_>, name: &str, arg: &str, json: bool) -> Result<()> {
    let report = |what: serde_json::Value, text: String, conv: &Conversation<'_>| -> Result<()> {
        if json {
            let mut j = what;
            j["cached"] = conv.session().tokens().len().into();
            j["turns"] = conv.turns().into();
            print_line(&j.to_string())
        } else {
            eprintln!("{text} (cache: {} tokens, turns: {})", conv.session().tokens().len(), conv.turns());
            Ok(())
        }
    };
    match name {
        "undo" => {
            let undone = conv.undo();
            let text = if undone { "undone" } else { "nothing to undo" };
            report(json!({"command": "undo", "undone": undone}), text.to_owned(), conv)
        }
        "reset" => {
            conv.reset();
            report(json!({"command": "reset"}), "reset".to_owned(), conv)
        }
        "logits" if !arg.is_empty() => {
            let logits = conv.next_logits()?;
            let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(Path::new(arg), bytes).map_err(|e| Error::io(arg, e))?;
            let text = format!("wrote {} logits to {arg}", logits.len());
            report(json!({"command": "logits", "file": arg, "vocab": logits.len()}), text, conv)
        }
        "logits" => Err(Error::InvalidArgument("/logits needs a file name: /logits FILE".into())),
        "help" => {
            eprintln!("{HELP}");
            Ok(())
        }
        other => Err(Error::InvalidArgument(format!("unknown command /{other}; {HELP}"))),
    }
}

fn print_line(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|_| out.flush()).map_err(|e| Error::io("<stdout>", e))
}

fn turn(conv: &mut Conversation<'_>, n: usize, message: &str, json: bool) -> Result<()> {
    let mut stdout = StreamOut::new(json);
    let t = conv.turn(message, |piece| stdout.piece(piece))?;
    stdout.finish()?;
    let capacity = conv.session().capacity();
    if json {
        return print_line(&turn_json(n, message, &t, capacity).to_string());
    }
    print_line("")?;
    let dropped = match t.dropped_turns {
        0 => String::new(),
        k => format!(", dropped {k} old turn(s) and prefilled {} tokens again", t.fed_tokens - t.turn_tokens),
    };
    eprintln!(
        "[turn {n}] {} new tokens{dropped}, first token {:.1} ms | {} tokens, {:.1} tok/s | stop: {:?} | cache {} → {} of {capacity}",
        t.turn_tokens,
        t.stats.time_to_first_token.as_secs_f64() * 1e3,
        t.tokens.len(),
        t.stats.decode_tokens_per_second(),
        t.reason,
        t.cached_before,
        t.cached_after,
    );
    if t.reason == StopReason::ContextFull {
        eprintln!(
            "engine-cli: the context is full ({capacity} positions) and cut the reply; /undo or /reset make room, \
             --on-full drop-oldest drops old turns, --ctx sets the size"
        );
    }
    Ok(())
}

fn turn_json(n: usize, message: &str, t: &TurnOutcome, capacity: usize) -> serde_json::Value {
    json!({
        "turn": n,
        "message": message,
        "text": t.text,
        "tokens": t.tokens,
        "stop_reason": format!("{:?}", t.reason).to_lowercase(),
        "cached_before": t.cached_before,
        "turn_tokens": t.turn_tokens,
        "fed_tokens": t.fed_tokens,
        "dropped_turns": t.dropped_turns,
        "cached_after": t.cached_after,
        "context": capacity,
        "time_to_first_token_ms": t.stats.time_to_first_token.as_secs_f64() * 1e3,
        "decode_tokens_per_second": t.stats.decode_tokens_per_second(),
    })
}
