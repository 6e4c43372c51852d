//! The command line, as clap types. Defaults are the ones a first-time user should get.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use engine::engine::EngineOptions;
use engine_tools::prompt::{Template, COMPLETION_SEPARATOR};

#[derive(Parser, Debug)]
#[command(
    name = "engine-cli",
    version,
    about = "Fast single-stream generation for Baichuan-7B / LLaMA checkpoints: GPTQ int4 (and int8, fp16, bf16)",
    long_about = "Fast single-stream generation for Baichuan-7B / LLaMA checkpoints: GPTQ int4 (and int8, fp16, bf16).\n\n\
        Without --model, commands use a built-in tiny model with random weights (made on first use), so that \
        everything can be tried on any machine. Get the real model with:\n  \
        huggingface-cli download TheBloke/baichuan-7B-GPTQ --local-dir baichuan-7B-GPTQ"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate text from a prompt, streamed to stdout; timings to stderr.
    Generate(GenerateArgs),
    /// A conversation: one message per line of stdin (a terminal or a pipe), replies streamed to stdout, each turn
    /// feeding only its own tokens. Lines starting with / are commands: /undo, /reset, /logits FILE, /help, /quit.
    Chat(ChatArgs),
    /// Print the token ids of a text.
    Tokenize(TokenizeArgs),
    /// Write the logits of every position of a list of token ids to a file (little-endian f32, [ids, vocab]).
    Logits(LogitsArgs),
    /// Token-level perplexity of a text file.
    Perplexity(PerplexityArgs),
    /// Describe a checkpoint: configuration, quantization, tensors, warnings.
    Inspect(InspectArgs),
    /// Print the static device memory plan for a checkpoint and context length.
    Plan(PlanArgs),
    /// Write a random-weight checkpoint in the exact published layout.
    Synth(SynthArgs),
    /// Measure load time, time to first token, decode speed and memory on this machine.
    Bench(BenchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model directory (config.json, quantize_config.json, *.safetensors, and tokenizer.model or else
    /// tokenizer.json with tokenizer_config.json). Default: the built-in tiny model.
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub device: usize,
    /// KV-cache positions to reserve (default: the model's max_position_embeddings).
    #[arg(long, value_name = "N")]
    pub ctx: Option<usize>,
    /// CPU threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Most prompt tokens per prefill pass: longer prompts run in chunks of this many rows. Larger chunks read the
    /// weights fewer times per prompt and take more device memory for the activations (`engine-cli plan` shows how
    /// much).
    #[arg(long, default_value_t = EngineOptions::default().prefill_chunk, value_name = "N")]
    pub prefill_chunk: usize,
    /// Change a CUDA launch choice for this run, to measure or check an alternative (repeatable or
    /// comma-separated): pdl=on|off, gemv_blocks_per_sm=1..=16, attn_splits=1..=64, attn_short_splits=0..=64,
    /// attn_cluster=on|off, gemv_wide=on|off, gemv_ring=on|off, gemv_lean=on|off, gemv_sym=on|off,
    /// gemv_prefetch=0..=64 (MB), lm_head_passes=1..=16, lm_head_screen=on|off, gemm128=on|off,
    /// wgmma=off|128|256|ws|wreg, wgmma_short=on|off, gemv_rows=on|off, gpu_repack=on|off, cubin=on|off. The
    /// defaults are what measured fastest.
    #[arg(long, value_name = "KEY=VALUE")]
    pub tune: Vec<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendArg {
    Cpu,
    Cuda,
    /// CUDA if a usable GPU is present, else the CPU.
    Auto,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateArg {
    /// The prompt as given.
    Raw,
    /// `USER:{prompt}\nASSISTANT:`
    Chat,
    /// The model card's few-shot completion style: each --example `input->output` line, then `{prompt}->`
    /// (default example: `Hamlet->Shakespeare`).
    Completion,
}

impl TemplateArg {
    /// The template, with the --example lines for `completion` (`Hamlet->Shakespeare` when there are none).
    pub fn template(self, examples: &[String]) -> Result<Template, String> {
        Ok(match self {
            TemplateArg::Raw => Template::Raw,
            TemplateArg::Chat => Template::chat(),
            TemplateArg::Completion if examples.is_empty() => Template::one_shot(),
            TemplateArg::Completion => Template::Completion {
                examples: examples
                    .iter()
                    .map(|e| {
                        e.split_once(COMPLETION_SEPARATOR)
                            .map(|(i, o)| (i.to_string(), o.to_string()))
                            .ok_or_else(|| format!("--example `{e}`: expected input->output"))
                    })
                    .collect::<Result<_, _>>()?,
            },
        })
    }
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text; `-` reads stdin. See also --prompt-file.
    #[arg(long, short = 'p', value_name = "TEXT", conflicts_with = "prompt_file")]
    pub prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// How to wrap the prompt. The chat template of a tokenizer_config.json is not used: `chat` is the plain
    /// USER:/ASSISTANT: role template.
    #[arg(long, value_enum, default_value_t = TemplateArg::Raw)]
    pub template: TemplateArg,
    /// An example for --template completion, as `input->output` (repeatable).
    #[arg(long, value_name = "LINE")]
    pub example: Vec<String>,
    /// Turn `\n`, `\t` and `\\` in --prompt into newline, tab and backslash.
    #[arg(long, short = 'e')]
    pub escapes: bool,
    /// Most new tokens to generate.
    #[arg(long, short = 'n', default_value_t = 128, value_name = "N")]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long, value_name = "STR")]
    pub stop: Vec<String>,
    /// Keep generating after the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Do not start with the BOS token (by default it comes first when the tokenizer adds one: always for
    /// tokenizer.model, as tokenizer_config.json says for tokenizer.json).
    #[arg(long)]
    pub no_bos: bool,
    /// Print one JSON object (text, tokens, timings) instead of streaming.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFullArg {
    /// Refuse a message that does not fit (from a pipe: end with an error) and end a reply where the context ends.
    Stop,
    /// Drop the oldest turns until the message and a whole reply fit, and prefill the rest again.
    DropOldest,
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// How to wrap each message. The chat template of a tokenizer_config.json is not used: `chat` is the plain
    /// USER:/ASSISTANT: role template (a reply ends where the model starts a new USER: line), `completion` the
    /// model card's one-shot style (one line per reply), `raw` continues the text as typed.
    #[arg(long, value_enum, default_value_t = TemplateArg::Chat)]
    pub template: TemplateArg,
    /// An example for --template completion, as `input->output` (repeatable; default `Hamlet->Shakespeare`).
    #[arg(long, value_name = "LINE")]
    pub example: Vec<String>,
    /// Most new tokens per reply.
    #[arg(long, short = 'n', default_value_t = 256, value_name = "N")]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Also end a reply when this text appears (repeatable); it is not printed.
    #[arg(long, value_name = "STR")]
    pub stop: Vec<String>,
    /// Do not end a reply at the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Do not start the conversation with the BOS token.
    #[arg(long)]
    pub no_bos: bool,
    /// When the conversation fills the context (--ctx).
    #[arg(long, value_enum, default_value_t = OnFullArg::Stop)]
    pub on_full: OnFullArg,
    /// Print one JSON object per turn and command (reply, tokens, cache positions, timings) instead of streaming.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// The text to tokenize; `-` reads stdin.
    pub text: String,
    /// Do not start with the BOS token (by default it comes first when the tokenizer adds one: always for
    /// tokenizer.model, as tokenizer_config.json says for tokenizer.json).
    #[arg(long)]
    pub no_bos: bool,
    /// Also print each piece.
    #[arg(long)]
    pub pieces: bool,
}

#[derive(Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated token ids, e.g. `1,2,3`.
    #[arg(long, value_name = "IDS")]
    pub ids: String,
    /// Output file: little-endian f32, row-major [number of ids, vocab].
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text file to score.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: PathBuf,
    /// Tokens per evaluation window (default: min(ctx, 512)).
    #[arg(long, value_name = "N")]
    pub window: Option<usize>,
    /// Tokens the window advances by; only the new tokens of a window are scored. Default: the window (windows side
    /// by side, every token prefilled once, as lm-eval-harness's rolling log-likelihood scores a document); a
    /// smaller stride gives each scored token more context at the cost of prefilling it again.
    #[arg(long, value_name = "N")]
    pub stride: Option<usize>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// List every tensor.
    #[arg(long)]
    pub tensors: bool,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// KV-cache positions (default: the model's max_position_embeddings).
    #[arg(long, value_name = "N")]
    pub ctx: Option<usize>,
    /// Most tokens per prefill chunk.
    #[arg(long, alias = "chunk", default_value_t = EngineOptions::default().prefill_chunk, value_name = "N")]
    pub prefill_chunk: usize,
    /// List every buffer, not only the per-region totals and the largest buffers.
    #[arg(long)]
    pub all: bool,
    /// Plan without the int8 copy of the lm_head that greedy decoding screens with (what `--tune
    /// lm_head_screen=off` loads).
    #[arg(long)]
    pub no_lm_head_screen: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresetArg {
    /// A few MB: tests and the default model.
    Tiny,
    /// The full Baichuan-7B shape (~3.9 GB).
    #[value(name = "7b")]
    B7,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchArg {
    Baichuan,
    Llama,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerArg {
    /// tokenizer.model: the SentencePiece test tokenizer (byte fallback, Baichuan's settings).
    Sentencepiece,
    /// tokenizer.json + tokenizer_config.json: the Hugging Face test tokenizer (GPT-2-style byte-level BPE).
    Json,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Directory to write (created if missing).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = PresetArg::Tiny)]
    pub preset: PresetArg,
    /// Tensor naming: Baichuan (fused W_pack) or LLaMA (q/k/v separate).
    #[arg(long, value_enum)]
    pub arch: Option<ArchArg>,
    /// GPTQ bits per weight: 4 (AutoGPTQ's int4, 8 values per word) or 8 (4 values per word).
    #[arg(long, default_value_t = 4, value_name = "B")]
    pub bits: u32,
    /// Rows per quantization group: 32, 64, 128, ... or -1 for one group.
    #[arg(long, value_name = "G", allow_hyphen_values = true)]
    pub group_size: Option<i64>,
    /// Act-order: a random permutation of each layer's groups (g_idx), one per distinct input (q/k/v share one).
    #[arg(long)]
    pub desc_act: bool,
    /// Act-order with a permutation of its own for every linear (q, k, v, gate and up each theirs), as AutoGPTQ
    /// writes act-order checkpoints. Implies --desc-act.
    #[arg(long)]
    pub desc_act_per_linear: bool,
    /// Asymmetric quantization (random zero points).
    #[arg(long)]
    pub asym: bool,
    /// An unquantized fp16 checkpoint instead of GPTQ.
    #[arg(long, conflicts_with = "bf16")]
    pub f16: bool,
    /// An unquantized bfloat16 checkpoint (torch_dtype bfloat16) instead of GPTQ.
    #[arg(long)]
    pub bf16: bool,
    /// Split the weights into this many shards with an index file.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub shards: usize,
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    #[arg(long, value_name = "N")]
    pub hidden: Option<usize>,
    #[arg(long, value_name = "N")]
    pub intermediate: Option<usize>,
    #[arg(long, value_name = "N")]
    pub heads: Option<usize>,
    #[arg(long, value_name = "N")]
    pub kv_heads: Option<usize>,
    #[arg(long, value_name = "N")]
    pub layers: Option<usize>,
    #[arg(long, value_name = "N")]
    pub vocab: Option<usize>,
    #[arg(long, value_name = "N")]
    pub max_pos: Option<usize>,
    /// Tie lm_head to the embedding (LLaMA naming only).
    #[arg(long)]
    pub tie_embeddings: bool,
    /// Give N evenly spaced hidden dims an RMSNorm weight of 30 in every layer's feed-forward norm, so that the
    /// gate/up projections' input carries a few values ~30x the others (as trained models' massive activations do).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub outliers: usize,
    /// Which tokenizer to write, padded to the vocabulary size.
    #[arg(long, value_enum, default_value_t = TokenizerArg::Sentencepiece)]
    pub tokenizer: TokenizerArg,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tokens to decode after each prompt.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub decode_tokens: usize,
    /// Prompt lengths to measure time to first token for (comma-separated). Decode is timed after a 16-token
    /// prompt and after each of these of 1024 tokens or more.
    #[arg(long, default_value = "16,512,2048", value_name = "LIST")]
    pub prompts: String,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub reps: usize,
    /// Also print a per-kernel breakdown of one decode step (CUDA only).
    #[arg(long)]
    pub breakdown: bool,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How tokens are picked, for `generate` and `chat` (Hugging Face semantics; every setting runs on the device on
/// the CUDA backend).
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// 0 = greedy; higher = more random.
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    pub temperature: f32,
    /// Sample from the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub top_k: usize,
    /// Sample from the smallest set of tokens whose probability reaches P (1 = all).
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    pub top_p: f32,
    /// Sample only from tokens at least M times as likely as the most likely one (0 = all).
    #[arg(long, default_value_t = 0.0, value_name = "M")]
    pub min_p: f32,
    /// Penalize tokens already in the context (Hugging Face semantics; the model card uses 1.1).
    #[arg(long, default_value_t = 1.0, value_name = "R")]
    pub repetition_penalty: f32,
    /// Random seed: the number drawn for a token depends only on the seed and the token's position.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn params(&self) -> engine::sampling::SamplerParams {
        engine::sampling::SamplerParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
        }
    }
}
