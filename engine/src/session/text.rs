//! Generation as text: the tokens of [`Session::generate`] streamed out as text without splitting a character, cut
//! at the first stop string, and ended with whatever the stream held back. The one loop behind `engine-cli generate`
//! and the C ABI's `engine_generate`, so that both give the same text for the same tokens.

use engine_tools::{StreamDecoder, Tokenizer};

use super::stop::StopMatcher;
use super::{GenerateOptions, GenerateStats, Session, StopReason};
use crate::error::{Error, Result};

/// What [`generate_text`] is asked to do.
#[derive(Debug, Clone)]
pub struct TextOptions {
    /// Token budget, sampling and end of sequence, as for [`Session::generate`].
    pub generate: GenerateOptions,
    /// Stop when the text contains one of these; the stop string and whatever follows it are never emitted.
    /// Empty ones are ignored.
    pub stop_strings: Vec<String>,
}

/// What [`generate_text`] did.
#[derive(Debug, Clone)]
pub struct TextOutcome {
    /// Every token sampled, an EOS included, as [`Session::generate`] returns them (the last is not in the session).
    pub tokens: Vec<u32>,
    /// The generated text, stop string excluded: the pieces passed to `on_piece`, plus the held-back end when
    /// `on_piece` stopped the loop (that end is never passed).
    pub text: String,
    /// [`StopReason::StopString`] whenever a stop string matched, whatever else ended the token loop.
    pub reason: StopReason,
    pub stats: GenerateStats,
}

/// Generate after `prompt` (appended to what `session` holds) and stream the text to `on_piece`.
///
/// `on_piece(Some(token), piece)` is called for each new token in order, the EOS excepted, with the text the token
/// completes; `piece` may be empty while a character or a possible stop string is incomplete. Returning `false`
/// stops generation ([`StopReason::Callback`]) and `on_piece` is not called again. Otherwise text still held back
/// after the last token comes in one more call, `on_piece(None, rest)`, made only when `rest` is not empty; its
/// return value is ignored.
pub fn generate_text(
    session: &mut Session,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &TextOptions,
    mut on_piece: impl FnMut(Option<u32>, &str) -> bool,
) -> Result<TextOutcome> {
    let mut stream = StreamDecoder::new(tokenizer);
    let mut stops = StopMatcher::new(&opts.stop_strings);
    let mut text = String::new();
    let mut stream_err = None;
    let mut caller_stopped = false;
    let (tokens, mut reason, stats) = session.generate(prompt, &opts.generate, |id| {
        let piece = match stream.push(id) {
            Ok(piece) => stops.push(&piece),
            Err(e) => {
                stream_err = Some(e);
                return false;
            }
        };
        text.push_str(&piece);
        if !on_piece(Some(id), &piece) {
            caller_stopped = true;
            return false;
        }
        !stops.stopped()
    })?;
    let tokenizer_err = |e: engine_tools::TokenizerError| Error::Tokenizer(e.to_string());
    if let Some(e) = stream_err {
        return Err(tokenizer_err(e));
    }
    if !stops.stopped() {
        // An incomplete character comes out as U+FFFD, as in a full decode; it may still complete a stop string.
        let tail = stream.finish().map_err(tokenizer_err)?;
        let mut rest = stops.push(&tail);
        if !stops.stopped() {
            rest.push_str(&stops.finish());
        }
        text.push_str(&rest);
        if !rest.is_empty() && !caller_stopped {
            on_piece(None, &rest);
        }
    }
    if stops.stopped() {
        reason = StopReason::StopString;
    }
    Ok(TextOutcome { tokens, text, reason, stats })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::SamplerParams;
    use crate::testing::TinyModel;

    /// The built-in tiny model on the CPU, with the text loop around it.
    struct Tiny(TinyModel);

    impl Tiny {
        fn new(name: &str) -> Tiny {
            Tiny(TinyModel::new(&format!("text-{name}"), 512))
        }

        /// Greedy text after a fixed prompt, with every call `on_piece` got; `stop_after` tokens make it return false.
        fn run(&self, max: usize, eos: Option<u32>, stops: &[String], stop_after: usize) -> (TextOutcome, Calls) {
            let opts = TextOptions {
                generate: GenerateOptions { max_new_tokens: max, sampler: SamplerParams::default(), eos_token_id: eos },
                stop_strings: stops.to_vec(),
            };
            let tok = self.0.engine.tokenizer();
            let prompt = tok.encode("Hello world", true).unwrap();
            let mut session = self.0.engine.new_session(None).unwrap();
            let mut calls = Vec::new();
            let out = generate_text(&mut session, tok, &prompt, &opts, |t, piece| {
                calls.push((t, piece.to_string()));
                calls.len() < stop_after
            })
            .unwrap();
            (out, calls)
        }
    }

    type Calls = Vec<(Option<u32>, String)>;

    fn concat(calls: &Calls) -> String {
        calls.iter().map(|(_, p)| p.as_str()).collect()
    }

    fn token_calls(calls: &Calls) -> Vec<u32> {
        calls.iter().filter_map(|(t, _)| *t).collect()
    }

    #[test]
    fn pieces_add_up_to_the_decoded_tokens() {
        let tiny = Tiny::new("pieces");
        let (out, calls) = tiny.run(32, None, &[], usize::MAX);
        assert_eq!(out.reason, StopReason::MaxTokens);
        assert_eq!(out.tokens.len(), 32);
        assert_eq!(token_calls(&calls), out.tokens);
        assert_eq!(out.text, tiny.0.engine.tokenizer().decode(&out.tokens).unwrap());
        assert_eq!(concat(&calls), out.text);
    }

    #[test]
    fn stop_string_split_across_tokens_is_cut_and_never_emitted() {
        let tiny = Tiny::new("split-stop");
        let (full, calls) = tiny.run(48, None, &[], usize::MAX);
        // A stop string made of the last character of one token's piece and the first of the next one's, at its
        // first occurrence in the text.
        let mut at = 0;
        let found = calls.windows(2).enumerate().find_map(|(i, w)| {
            at += w[0].1.len();
            let last = w[0].1.chars().last()?;
            let first = w[1].1.chars().next()?;
            let stop = format!("{last}{first}");
            let start = at - last.len_utf8();
            (full.text.find(&stop) == Some(start)).then_some((i + 1, stop, start))
        });
        let (second, stop, start) = found.expect("two consecutive tokens with text in 48 tokens of the tiny model");

        let (out, calls) = tiny.run(48, None, std::slice::from_ref(&stop), usize::MAX);
        assert_eq!(out.reason, StopReason::StopString);
        assert_eq!(out.text, full.text[..start]);
        assert_eq!(concat(&calls), out.text);
        // Generation ends at the token that completed the stop string; nothing is flushed after it.
        assert_eq!(out.tokens, full.tokens[..=second]);
        assert_eq!(token_calls(&calls), out.tokens);
    }

    #[test]
    fn held_back_text_is_flushed_once_at_the_end() {
        let tiny = Tiny::new("flush");
        let (full, _) = tiny.run(24, None, &[], usize::MAX);
        // The text's last two characters begin a stop string that never completes: they stay held back until the
        // end, then come in one call without a token.
        let end: String = full.text.chars().rev().take(2).collect::<Vec<_>>().into_iter().rev().collect();
        let stop = format!("{end}\u{10FFFD}");
        assert!(!full.text.contains(&stop));

        let (out, calls) = tiny.run(24, None, std::slice::from_ref(&stop), usize::MAX);
        assert_eq!((out.reason, out.text.as_str()), (StopReason::MaxTokens, full.text.as_str()));
        assert_eq!(concat(&calls), out.text);
        let (last_token, last_piece) = calls.last().unwrap();
        assert!(last_token.is_none() && last_piece.ends_with(&end), "{calls:?}");
        assert_eq!(calls.iter().filter(|(t, _)| t.is_none()).count(), 1);
        assert_eq!(token_calls(&calls), out.tokens);

        // A callback that stops at the last token gets no flush; the outcome's text still has the held-back end.
        let (out, calls) = tiny.run(24, None, std::slice::from_ref(&stop), 24);
        assert_eq!(out.reason, StopReason::Callback);
        assert!(calls.iter().all(|(t, _)| t.is_some()), "{calls:?}");
        assert_eq!(out.text, full.text);
        let shown = concat(&calls);
        assert!(out.text.starts_with(&shown) && out.text.len() - shown.len() >= end.len(), "{calls:?}");
    }

    #[test]
    fn eos_ends_generation_and_is_not_passed_on() {
        let tiny = Tiny::new("eos");
        let (full, _) = tiny.run(32, None, &[], usize::MAX);
        // Pretend a token the model produces, at its first occurrence past the start, is the end of sequence.
        let k = (2..full.tokens.len())
            .find(|&k| !full.tokens[..k].contains(&full.tokens[k]))
            .expect("a new token after the second in 32 tokens of the tiny model");
        let (out, calls) = tiny.run(32, Some(full.tokens[k]), &[], usize::MAX);
        assert_eq!(out.reason, StopReason::Eos);
        assert_eq!(out.tokens, full.tokens[..=k]);
        assert_eq!(token_calls(&calls), full.tokens[..k]);
        assert_eq!(out.text, tiny.0.engine.tokenizer().decode(&full.tokens[..k]).unwrap());
        assert_eq!(concat(&calls), out.text);
    }
}
