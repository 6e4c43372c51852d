//! A conversation on one session, turn by turn: each turn feeds only its own tokens (the earlier turns stay in the
//! KV cache, so the time to the first token of a follow-up depends on the new message only), `undo` truncates the
//! cache back to where the last turn began, and a full context either refuses the turn or drops the oldest turns
//! and prefills what is left again. What `engine-cli chat` runs.
//!
//! The cache always holds the conversation's text: the preamble (BOS, completion examples), then per turn the
//! template's wrapping of the message ([`Template::turn`]) and the reply as shown. A reply's last token, which
//! [`Session::generate`] samples but does not feed, is fed at the end of the turn; an end-of-sequence token is not
//! (it is not text); a reply cut by a stop string keeps its tokens up to the stop string's start, and what a cut
//! token still held of the reply is fed as text again.

use engine_tools::Template;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::sampling::SamplerParams;
use crate::session::text::{generate_text, TextOptions};
use crate::session::{GenerateOptions, GenerateStats, Session, StopReason};

/// What a turn does when the conversation and the new message leave no room for the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Refuse a message that does not fit (a context-overflow error), and end a reply where the context ends.
    Stop,
    /// Drop the oldest turns (the preamble stays) until the message and a whole reply fit, and prefill what is
    /// kept again as part of the turn.
    DropOldest,
}

/// How a conversation runs.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// How messages are wrapped; its stop strings end replies.
    pub template: Template,
    /// Most tokens of one reply (at least 1).
    pub max_new_tokens: usize,
    pub sampler: SamplerParams,
    /// Stop strings besides the template's.
    pub stop_strings: Vec<String>,
    /// End a reply at the model's end-of-sequence token (`config.json`'s `eos_token_id`).
    pub stop_at_eos: bool,
    /// Start the conversation with BOS (when the tokenizer starts sequences with one).
    pub add_bos: bool,
    pub on_full: OnFull,
}

/// What one turn did.
#[derive(Debug, Clone)]
pub struct TurnOutcome {
    /// The reply, stop string excluded.
    pub text: String,
    /// Every token sampled (an end-of-sequence token included).
    pub tokens: Vec<u32>,
    pub reason: StopReason,
    /// Timings; `time_to_first_token` covers prefilling `fed_tokens`.
    pub stats: GenerateStats,
    /// Positions in the cache when the turn began.
    pub cached_before: usize,
    /// Tokens of the turn's own text (the message as the template wraps it, and the preamble on a first turn).
    pub turn_tokens: usize,
    /// Tokens prefilled before the reply: `turn_tokens`, plus the kept turns fed again after dropping some.
    pub fed_tokens: usize,
    /// Oldest turns dropped to make room ([`OnFull::DropOldest`]).
    pub dropped_turns: usize,
    /// Positions in the cache after the turn (the whole conversation so far).
    pub cached_after: usize,
}

/// Where a turn's tokens are in the cache.
#[derive(Debug, Clone)]
struct TurnRecord {
    start: usize,
    tokens: Vec<u32>,
}

/// A conversation with the model on a session of its own.
pub struct Conversation<'e> {
    engine: &'e Engine,
    session: Session,
    opts: ChatOptions,
    /// BOS and the template's preamble: the cache's first tokens, fed with the first turn.
    head: Vec<u32>,
    turns: Vec<TurnRecord>,
}

impl<'e> Conversation<'e> {
    /// A conversation on `session` (which should be empty; it is reset).
    pub fn new(engine: &'e Engine, mut session: Session, opts: ChatOptions) -> Result<Conversation<'e>> {
        opts.sampler.validate()?;
        if opts.max_new_tokens == 0 {
            return Err(Error::InvalidArgument("a reply needs at least one new token".into()));
        }
        let head = engine
            .tokenizer()
            .encode(&opts.template.preamble(), opts.add_bos)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        if head.len() >= session.capacity() {
            return Err(Error::ContextOverflow {
                needed: head.len() + 1,
                limit: session.capacity(),
                what: "chat context: the template's preamble alone fills it",
            });
        }
        session.reset();
        Ok(Conversation { engine, session, opts, head, turns: Vec::new() })
    }

    /// The session (its tokens are the conversation so far).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Turns in the cache.
    pub fn turns(&self) -> usize {
        self.turns.len()
    }

    pub fn options(&self) -> &ChatOptions {
        &self.opts
    }

    /// Sends `message` and streams the reply to `on_piece` (which returns `false` to stop it).
    ///
    /// Errors: a message without tokens, a message that does not fit ([`OnFull::Stop`]: the conversation does
    /// not change), and whatever generation reports.
    pub fn turn(&mut self, message: &str, mut on_piece: impl FnMut(&str) -> bool) -> Result<TurnOutcome> {
        let tokenizer = self.engine.tokenizer();
        let tok_err = |e: engine_tools::TokenizerError| Error::Tokenizer(e.to_string());
        let first = self.turns.is_empty() && self.opts.template.preamble().is_empty();
        let body = tokenizer.encode(&self.opts.template.turn(message, first), false).map_err(tok_err)?;
        if body.is_empty() {
            return Err(Error::InvalidArgument("the message has no tokens".into()));
        }
        let capacity = self.session.capacity();
        let cached_before = self.session.tokens().len();
        // Fed before the message: the head when the cache is empty, everything kept after dropping turns.
        let mut prefix = if cached_before == 0 { self.head.clone() } else { Vec::new() };
        let mut dropped = 0;
        let fits = |cached: usize, prefix: usize, reply: usize| cached + prefix + body.len() + reply <= capacity;
        match self.opts.on_full {
            OnFull::Stop if !fits(cached_before, prefix.len(), 1) => {
                return Err(Error::ContextOverflow {
                    needed: cached_before + prefix.len() + body.len() + 1,
                    limit: capacity,
                    what: "chat context: the conversation so far, this message and one reply token; /undo or \
                           /reset make room, --on-full drop-oldest drops old turns, --ctx sets the size",
                });
            }
            OnFull::DropOldest if !fits(cached_before, prefix.len(), self.opts.max_new_tokens) => {
                let mut total: usize = self.turns.iter().map(|t| t.tokens.len()).sum();
                while dropped < self.turns.len()
                    && self.head.len() + total + body.len() + self.opts.max_new_tokens > capacity
                {
                    total -= self.turns[dropped].tokens.len();
                    dropped += 1;
                }
                if self.head.len() + body.len() + 1 > capacity {
                    return Err(Error::ContextOverflow {
                        needed: self.head.len() + body.len() + 1,
                        limit: capacity,
                        what: "chat context: this message alone, with one reply token; --ctx sets the size",
                    });
                }
                if dropped > 0 {
                    self.turns.drain(..dropped);
                    self.session.reset();
                    prefix = self.head.clone();
                    for t in &mut self.turns {
                        t.start = prefix.len();
                        prefix.extend_from_slice(&t.tokens);
                    }
                }
            }
            _ => {}
        }
        // The message's tokens begin after what is cached (nothing after dropping turns) and the prefix.
        let turn_start = self.session.tokens().len() + prefix.len();
        let reply_start = turn_start + body.len();
        let turn_tokens = body.len() + if cached_before == 0 { self.head.len() } else { 0 };
        let fed: Vec<u32> = prefix.iter().chain(&body).copied().collect();
        let text_opts = TextOptions {
            generate: GenerateOptions {
                max_new_tokens: self.opts.max_new_tokens.min(capacity - reply_start),
                sampler: self.opts.sampler,
                eos_token_id: self.opts.stop_at_eos.then_some(self.engine.config().eos_token_id),
            },
            stop_strings: self.opts.template.stop_strings().into_iter().chain(self.opts.stop_strings.clone()).collect(),
        };
        let out = generate_text(&mut self.session, tokenizer, &fed, &text_opts, |_, piece| on_piece(piece))?;

        // Make the cache hold the reply as shown (see the module docs).
        match out.reason {
            StopReason::Eos | StopReason::ContextFull => {}
            StopReason::StopString => {
                let (mut k, mut kept) = (out.tokens.len() - 1, String::new());
                while k > 0 {
                    let text = tokenizer.decode(&out.tokens[..k]).map_err(tok_err)?;
                    if out.text.starts_with(&text) {
                        kept = text;
                        break;
                    }
                    k -= 1;
                }
                self.session.truncate(reply_start + k);
                let rest = tokenizer.encode(&out.text[kept.len()..], false).map_err(tok_err)?;
                if !rest.is_empty() && self.session.tokens().len() + rest.len() <= capacity {
                    self.session.feed(&rest)?;
                }
            }
            StopReason::MaxTokens | StopReason::Callback => {
                if let Some(&last) = out.tokens.last() {
                    if self.session.tokens().len() < capacity {
                        self.session.feed(&[last])?;
                    }
                }
            }
        }
        let tokens = self.session.tokens()[turn_start..].to_vec();
        self.turns.push(TurnRecord { start: turn_start, tokens });
        Ok(TurnOutcome {
            text: out.text,
            tokens: out.tokens,
            reason: out.reason,
            stats: out.stats,
            cached_before,
            turn_tokens,
            fed_tokens: fed.len(),
            dropped_turns: dropped,
            cached_after: self.session.tokens().len(),
        })
    }

    /// Forgets the last turn: the cache is truncated to where it began, exactly as it was before it. Turns
    /// dropped to make room for it stay dropped. Returns `false` when there is no turn.
    pub fn undo(&mut self) -> bool {
        match self.turns.pop() {
            Some(turn) => {
                self.session.truncate(turn.start);
                true
            }
            None => false,
        }
    }

    /// Forgets every turn (the next turn starts the conversation again, preamble included).
    pub fn reset(&mut self) {
        self.turns.clear();
        self.session.reset();
    }

    /// The logits of the next token after the conversation so far, by running its last token again: the cache's
    /// other positions are what they hold.
    pub fn next_logits(&mut self) -> Result<Vec<f32>> {
        let Some(&last) = self.session.tokens().last() else {
            return Err(Error::InvalidArgument("no logits yet: the conversation is empty".into()));
        };
        let len = self.session.tokens().len();
        self.session.truncate(len - 1);
        self.session.feed(&[last])
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::backend::BackendKind;
    use crate::engine::EngineOptions;
    use crate::synth::{write_checkpoint, SynthSpec};

    struct Tiny {
        dir: PathBuf,
        engine: Engine,
    }

    impl Tiny {
        fn new(name: &str) -> Tiny {
            let dir = std::env::temp_dir().join(format!("engine-chat-unit-{}-{name}", std::process::id()));
            write_checkpoint(&dir, &crate::tiny::with_test_tokenizer(SynthSpec::tiny()).unwrap()).unwrap();
            let engine =
                Engine::load(&dir, &EngineOptions { backend: BackendKind::Cpu, ..Default::default() }).unwrap();
            Tiny { dir, engine }
        }

        fn conversation(&self, template: Template, stops: &[String]) -> Conversation<'_> {
            let opts = ChatOptions {
                template,
                max_new_tokens: 24,
                sampler: SamplerParams::default(),
                stop_strings: stops.to_vec(),
                stop_at_eos: false,
                add_bos: true,
                on_full: OnFull::Stop,
            };
            Conversation::new(&self.engine, self.engine.new_session(None).unwrap(), opts).unwrap()
        }
    }

    impl Drop for Tiny {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// The text the cache holds from position `from` on.
    fn cached_text(conv: &Conversation<'_>, from: usize) -> String {
        conv.engine.tokenizer().decode(&conv.session().tokens()[from..]).unwrap()
    }

    #[test]
    fn the_cache_holds_the_conversation_text() {
        let tiny = Tiny::new("text");
        let mut conv = tiny.conversation(Template::Raw, &[]);
        let one = conv.turn("Hello world", |_| true).unwrap();
        let two = conv.turn(" and more", |_| true).unwrap();
        assert_eq!((one.reason, two.reason), (StopReason::MaxTokens, StopReason::MaxTokens));
        let expect = format!("Hello world{} and more{}", one.text, two.text);
        assert_eq!(cached_text(&conv, 0), expect);
        assert_eq!(two.cached_before, one.cached_after);
        assert!(conv.undo() && conv.undo() && !conv.undo());
        assert_eq!(conv.session().tokens(), [tiny.engine.tokenizer().bos_id().unwrap()]);
    }

    #[test]
    fn a_reply_cut_by_a_stop_string_leaves_exactly_its_text_in_the_cache() {
        let tiny = Tiny::new("stop");
        let full = tiny.conversation(Template::Raw, &[]).turn("Hello world", |_| true).unwrap();
        // Stop strings starting at every character past the first few: many cut a token in the middle.
        let starts: Vec<usize> = full.text.char_indices().map(|(i, _)| i).filter(|&i| i > 0).collect();
        let mut checked = 0;
        for &at in starts.iter().take(12) {
            let stop: String = full.text[at..].chars().take(2).collect();
            if full.text.find(&stop) != Some(at) {
                continue;
            }
            let mut conv = tiny.conversation(Template::Raw, std::slice::from_ref(&stop));
            let out = conv.turn("Hello world", |_| true).unwrap();
            assert_eq!((out.reason, out.text.as_str()), (StopReason::StopString, &full.text[..at]));
            assert_eq!(cached_text(&conv, 0), format!("Hello world{}", out.text), "stop {stop:?}");
            checked += 1;
        }
        assert!(checked >= 3, "only {checked} stop strings tried");
    }
}
