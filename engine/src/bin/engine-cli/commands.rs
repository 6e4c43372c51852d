//! What each subcommand does. Errors carry the file or argument concerned; `main` prints them as one line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use engine::backend::BackendKind;
use engine::engine::{Engine, EngineOptions};
use engine::error::{Error, Result};
use engine::session::sampler::SamplerParams;
use engine::session::{GenerateOptions, StopMatcher, StopReason};
use engine_tools::prompt;

use crate::args::*;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(a) => generate(a),
        Command::Tokenize(a) => tokenize(a),
        Command::Logits(a) => logits(a),
        Command::Perplexity(a) => perplexity(a),
        Command::Inspect(a) => inspect(a),
        Command::Plan(a) => plan(a),
        Command::Synth(a) => synth(a),
        Command::Bench(a) => bench(a),
    }
}

/// The model directory the user named, or the built-in tiny model (synthesized on first use).
fn model_dir(arg: &Option<PathBuf>) -> Result<PathBuf> {
    match arg {
        Some(dir) => Ok(dir.clone()),
        None => {
            let dir = engine::synth::builtin_tiny_model()?;
            eprintln!("engine-cli: no --model given; using the built-in tiny model (random weights) in {}", dir.display());
            Ok(dir)
        }
    }
}

fn load(m: &ModelArgs) -> Result<Engine> {
    if let Some(n) = m.threads {
        if n == 0 {
            return Err(Error::InvalidArgument("--threads must be at least 1".into()));
        }
        // Only fails if the pool was already built, which cannot happen before the first load.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
    let dir = model_dir(&m.model)?;
    let opts = EngineOptions {
        backend: match m.backend {
            BackendArg::Cpu => BackendKind::Cpu,
            BackendArg::Cuda => BackendKind::Cuda,
            BackendArg::Auto => BackendKind::Auto,
        },
        device: m.device,
        max_context: m.ctx,
        progress: std::io::stderr().is_terminal(),
        ..EngineOptions::default()
    };
    let engine = Engine::load(&dir, &opts)?;
    if let Some(note) = &engine.fallback_note {
        eprintln!("engine-cli: using the CPU backend ({note})");
    }
    Ok(engine)
}

fn read_prompt(a: &GenerateArgs) -> Result<String> {
    let source = match (&a.prompt, &a.prompt_file) {
        (Some(p), _) if p == "-" => prompt::PromptSource::Stdin,
        (Some(p), _) if a.escapes => {
            prompt::PromptSource::Text(prompt::unescape(p).map_err(|e| Error::InvalidArgument(e.to_string()))?)
        }
        (Some(p), _) => prompt::PromptSource::Text(p.clone()),
        (None, Some(f)) => prompt::PromptSource::from_path_arg(f),
        (None, None) if std::io::stdin().is_terminal() => {
            return Err(Error::InvalidArgument(
                "no prompt: pass --prompt TEXT, --prompt-file FILE, or pipe text to stdin".into(),
            ))
        }
        (None, None) => prompt::PromptSource::Stdin,
    };
    let mut text = source.read().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    if !matches!(source, prompt::PromptSource::Text(_)) {
        text = prompt::trim_final_newline(&text).to_string();
    }
    let template = match a.template {
        TemplateArg::Raw => prompt::Template::Raw,
        TemplateArg::Chat => prompt::Template::Chat { history: Vec::new() },
        TemplateArg::Completion if a.example.is_empty() => prompt::Template::one_shot(),
        TemplateArg::Completion => {
            let examples = a
                .example
                .iter()
                .map(|e| {
                    e.split_once(prompt::COMPLETION_SEPARATOR)
                        .map(|(i, o)| (i.to_string(), o.to_string()))
                        .ok_or_else(|| Error::InvalidArgument(format!("--example `{e}`: expected input->output")))
                })
                .collect::<Result<Vec<_>>>()?;
            prompt::Template::Completion { examples }
        }
    };
    Ok(template.render(&text))
}

fn generate(a: GenerateArgs) -> Result<()> {
    let sampler = SamplerParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        repetition_penalty: a.repetition_penalty,
        seed: a.seed,
    };
    sampler.validate()?;
    let text = read_prompt(&a)?;
    let engine = load(&a.model)?;
    let tok = engine.tokenizer();
    let ids = tok.encode(&text, !a.no_bos).map_err(|e| Error::Tokenizer(e.to_string()))?;
    if ids.is_empty() {
        return Err(Error::InvalidArgument("the prompt is empty".into()));
    }
    if ids.len() >= engine.max_context() {
        return Err(Error::ContextOverflow { needed: ids.len() + 1, limit: engine.max_context(), what: "context (--ctx)" });
    }
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens.min(engine.max_context() - ids.len()),
        sampler,
        stop_strings: a.stop.clone(),
        eos_token_id: (!a.ignore_eos).then_some(engine.config().eos_token_id),
    };
    let mut session = engine.new_session(None)?;
    let mut stream = tok.stream_decoder();
    let mut stops = StopMatcher::new(&a.stop);
    let mut text_out = String::new();
    let mut stdout = std::io::stdout().lock();
    let mut io_err = None;
    let mut stream_err = None;
    let mut emit = |s: &str, text_out: &mut String| {
        text_out.push_str(s);
        if !a.json && !s.is_empty() {
            if let Err(e) = stdout.write_all(s.as_bytes()).and_then(|_| stdout.flush()) {
                io_err.get_or_insert(e);
            }
        }
    };
    let eos = engine.config().eos_token_id;
    let (tokens, mut reason, stats) = session.generate(&ids, &opts, |id| {
        if id == eos && opts.eos_token_id.is_some() {
            return false;
        }
        let piece = match stream.push(id) {
            Ok(p) => p,
            Err(e) => {
                stream_err.get_or_insert(e);
                return false;
            }
        };
        let safe = stops.push(&piece);
        emit(&safe, &mut text_out);
        !stops.stopped()
    })?;
    if stops.stopped() {
        reason = StopReason::StopString;
    } else {
        let tail = stream.finish().map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut rest = stops.push(&tail);
        if !stops.stopped() {
            rest.push_str(&stops.finish());
        }
        emit(&rest, &mut text_out);
    }
    if let Some(e) = stream_err {
        return Err(Error::Tokenizer(e.to_string()));
    }
    if let Some(e) = io_err {
        return Err(Error::io("<stdout>", e));
    }
    let ttft_ms = stats.time_to_first_token.as_secs_f64() * 1e3;
    if a.json {
        let j = serde_json::json!({
            "text": text_out,
            "prompt_tokens": ids.len(),
            "generated_tokens": tokens.len(),
            "tokens": tokens,
            "stop_reason": format!("{reason:?}").to_lowercase(),
            "backend": engine.backend_name(),
            "device": engine.device_description(),
            "load_ms": engine.load_time.as_secs_f64() * 1e3,
            "time_to_first_token_ms": ttft_ms,
            "decode_tokens_per_second": stats.decode_tokens_per_second(),
        });
        println!("{j}");
    } else {
        println!();
        eprintln!(
            "[{} on {}] load {:.0} ms | prompt {} tokens, first token {:.1} ms | {} tokens, {:.1} tok/s | stop: {:?}",
            engine.backend_name(),
            engine.device_description(),
            engine.load_time.as_secs_f64() * 1e3,
            ids.len(),
            ttft_ms,
            tokens.len(),
            stats.decode_tokens_per_second(),
            reason
        );
    }
    Ok(())
}

fn tokenize(a: TokenizeArgs) -> Result<()> {
    let dir = model_dir(&a.model)?;
    let path = dir.join("tokenizer.model");
    let tok = engine_tools::Tokenizer::open(&path).map_err(|e| Error::Tokenizer(e.to_string()))?;
    let text = if a.text == "-" {
        prompt::PromptSource::Stdin.read().map_err(|e| Error::InvalidArgument(e.to_string()))?
    } else {
        a.text.clone()
    };
    let ids = tok.encode(&text, !a.no_bos).map_err(|e| Error::Tokenizer(e.to_string()))?;
    if a.pieces {
        for id in &ids {
            println!("{id}\t{}", tok.id_to_piece(*id).unwrap_or_default());
        }
    } else {
        println!("{}", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
    }
    Ok(())
}

fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let ids: Result<Vec<u32>> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<u32>().map_err(|_| Error::InvalidArgument(format!("--ids: `{t}` is not a token id"))))
        .collect();
    let ids = ids?;
    if ids.is_empty() {
        return Err(Error::InvalidArgument("--ids: no token ids given".into()));
    }
    Ok(ids)
}

fn logits(a: LogitsArgs) -> Result<()> {
    let ids = parse_ids(&a.ids)?;
    let engine = load(&a.model)?;
    if ids.len() > engine.max_context() {
        return Err(Error::ContextOverflow { needed: ids.len(), limit: engine.max_context(), what: "context (--ctx)" });
    }
    let mut session = engine.new_session(None)?;
    let logits = session.feed_all_logits(&ids)?;
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&a.out, bytes).map_err(|e| Error::io(&a.out, e))?;
    eprintln!(
        "wrote {} x {} logits to {} ({})",
        ids.len(),
        engine.config().vocab_size,
        a.out.display(),
        engine.backend_name()
    );
    Ok(())
}

fn perplexity(a: PerplexityArgs) -> Result<()> {
    let engine = load(&a.model)?;
    let text = std::fs::read_to_string(&a.file).map_err(|e| Error::io(&a.file, e))?;
    let ids = engine.tokenizer().encode(&text, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
    if ids.len() < 2 {
        return Err(Error::InvalidArgument(format!("{}: needs at least one token of text", a.file.display())));
    }
    let window = a.window.unwrap_or(engine.max_context().min(512));
    if window < 2 || window > engine.max_context() {
        return Err(Error::InvalidArgument(format!("--window must be in 2..={}", engine.max_context())));
    }
    let stride = a.stride.unwrap_or(window / 2);
    if stride == 0 || stride > window {
        return Err(Error::InvalidArgument(format!("--stride must be in 1..={window}")));
    }
    let vocab = engine.config().vocab_size;
    let mut session = engine.new_session(Some(window))?;
    let (mut nll, mut count) = (0f64, 0usize);
    let mut scored_until = 0; // tokens 1..=scored_until have been scored
    let mut begin = 0;
    let t0 = Instant::now();
    loop {
        let end = (begin + window).min(ids.len());
        session.reset();
        let logits = session.feed_all_logits(&ids[begin..end])?;
        // Row r predicts token begin + r + 1; score only targets not scored by an earlier window.
        for r in 0..end - begin - 1 {
            let target = begin + r + 1;
            if target <= scored_until {
                continue;
            }
            let row = &logits[r * vocab..(r + 1) * vocab];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max + row.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
            nll += lse - row[ids[target] as usize] as f64;
            count += 1;
        }
        scored_until = end - 1;
        if end == ids.len() {
            break;
        }
        begin += stride;
    }
    let ppl = (nll / count as f64).exp();
    println!("{ppl:.4}");
    eprintln!(
        "perplexity {ppl:.4} over {count} tokens (window {window}, stride {stride}, {}) in {:.1} s",
        engine.backend_name(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn inspect(a: InspectArgs) -> Result<()> {
    let dir = model_dir(&a.model)?;
    let model = engine::Model::open(&dir)?;
    let d = &model.desc;
    let c = &d.config;
    println!("model:      {}", dir.display());
    println!("naming:     {:?}", c.arch);
    println!(
        "shape:      hidden {}, intermediate {}, heads {} (kv {}), head_dim {}, layers {}, vocab {}, max positions {}",
        c.hidden_size,
        c.intermediate_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.num_hidden_layers,
        c.vocab_size,
        c.max_position_embeddings
    );
    println!("constants:  rms_norm_eps {}, rope_theta {}, bos {}, eos {}", c.rms_norm_eps, c.rope_theta, c.bos_token_id, c.eos_token_id);
    match &d.quant {
        Some(q) => println!(
            "quant:      GPTQ int{}, group size {}, desc_act {}, {}",
            q.bits,
            q.group_size.map(|g| g.to_string()).unwrap_or_else(|| "-1 (one group)".into()),
            q.desc_act,
            if q.sym { "symmetric" } else { "asymmetric" }
        ),
        None => println!("quant:      none (fp16)"),
    }
    println!("shards:     {}", d.shards.join(", "));
    let tensors = all_tensors(d);
    let bytes: usize = tensors.iter().map(|t| t.len).sum();
    println!("tensors:    {} used, {:.3} GB", tensors.len(), bytes as f64 / 1e9);
    for w in &d.warnings {
        println!("warning:    {w}");
    }
    if a.tensors {
        for t in tensors {
            println!("  {:<56} {:>4} {:?} @ {}:{}", t.name, t.dtype.name(), t.shape, d.shards[t.shard], t.start);
        }
    }
    Ok(())
}

/// Every tensor the engine reads, in checkpoint order (lm_head once even when tied).
fn all_tensors(d: &engine::ModelDesc) -> Vec<&engine_format::TensorRef> {
    use engine_format::Linear;
    let mut v = vec![&d.embed_tokens];
    fn push<'a>(v: &mut Vec<&'a engine_format::TensorRef>, l: &'a Linear) {
        match l {
            Linear::Gptq { qweight, qzeros, scales, g_idx, .. } => v.extend([qweight, qzeros, scales, g_idx]),
            Linear::F16 { weight, .. } => v.push(weight),
        }
    }
    for l in &d.layers {
        v.push(&l.input_layernorm);
        for p in &l.qkv.parts {
            push(&mut v, p);
        }
        push(&mut v, &l.o_proj);
        v.push(&l.post_attention_layernorm);
        push(&mut v, &l.gate_proj);
        push(&mut v, &l.up_proj);
        push(&mut v, &l.down_proj);
    }
    v.push(&d.norm);
    if d.lm_head != d.embed_tokens {
        v.push(&d.lm_head);
    }
    v
}

fn plan(a: PlanArgs) -> Result<()> {
    let _ = a;
    Err(Error::InvalidArgument("plan: not implemented yet".into()))
}

fn synth(a: SynthArgs) -> Result<()> {
    let _ = a;
    Err(Error::InvalidArgument("synth: not implemented yet".into()))
}

fn bench(a: BenchArgs) -> Result<()> {
    let _ = a;
    Err(Error::InvalidArgument("bench: not implemented yet".into()))
}
