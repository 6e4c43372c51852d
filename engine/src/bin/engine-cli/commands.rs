//! What each subcommand does. Errors carry the file or argument concerned; `main` prints them as one line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use engine::engine::{Engine, EngineOptions};
use engine::error::{Error, Result};
use engine::sampling::SamplerParams;
use engine::session::text::{generate_text, TextOptions};
use engine::session::GenerateOptions;
use engine::BackendKind;
use engine_tools::prompt;

use crate::args::*;
use crate::stream_out::StreamOut;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(a) => generate(a),
        Command::Chat(a) => crate::chat::run(&load(&a.model)?, a),
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
            let dir = engine::tiny::builtin_tiny_model()?;
            eprintln!(
                "engine-cli: no --model given; using the built-in tiny model (random weights) in {}",
                dir.display()
            );
            Ok(dir)
        }
    }
}

/// Load the model `m` names, with the CUDA launch choices of its `--tune` (the defaults without).
fn load(m: &ModelArgs) -> Result<Engine> {
    let tuning = engine::Tuning::parse(&m.tune.join(",")).map_err(|e| match e {
        Error::InvalidArgument(why) => Error::InvalidArgument(format!("--tune: {why}")),
        e => e,
    })?;
    let engine = load_tuned(m, tuning)?;
    if !m.tune.is_empty() && engine.backend_name() != "cuda" {
        eprintln!("engine-cli: --tune changes CUDA launches only; the {} backend ignores it", engine.backend_name());
    }
    Ok(engine)
}

fn load_tuned(m: &ModelArgs, tuning: engine::Tuning) -> Result<Engine> {
    if let Some(n) = m.threads {
        if n == 0 {
            return Err(Error::InvalidArgument("--threads must be at least 1".into()));
        }
        // Only fails if the pool was already built, which cannot happen before the first load.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
    if m.prefill_chunk == 0 {
        return Err(Error::InvalidArgument("--prefill-chunk must be at least 1".into()));
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
        prefill_chunk: m.prefill_chunk,
        progress: std::io::stderr().is_terminal(),
        tuning,
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
    let template = a.template.template(&a.example).map_err(Error::InvalidArgument)?;
    Ok(template.render(&text))
}

fn generate(a: GenerateArgs) -> Result<()> {
    let sampler = a.sampling.params();
    sampler.validate()?;
    let text = read_prompt(&a)?;
    let engine = load(&a.model)?;
    let tok = engine.tokenizer();
    // The time to the first token counts from here: tokenizing is part of what the user waits for.
    let t0 = Instant::now();
    let ids = tok.encode(&text, !a.no_bos).map_err(|e| Error::Tokenizer(e.to_string()))?;
    let tokenize_time = t0.elapsed();
    if ids.is_empty() {
        return Err(Error::InvalidArgument("the prompt is empty".into()));
    }
    if ids.len() >= engine.max_context() {
        return Err(Error::ContextOverflow {
            needed: ids.len() + 1,
            limit: engine.max_context(),
            what: "context (--ctx)",
        });
    }
    let opts = TextOptions {
        generate: GenerateOptions {
            max_new_tokens: a.max_new_tokens.min(engine.max_context() - ids.len()),
            sampler,
            eos_token_id: (!a.ignore_eos).then_some(engine.config().eos_token_id),
        },
        stop_strings: a.stop.clone(),
    };
    let mut session = engine.new_session(None)?;
    let mut stdout = StreamOut::new(a.json);
    let out = generate_text(&mut session, tok, &ids, &opts, |_, piece| stdout.piece(piece))?;
    stdout.finish()?;
    let ttft_ms = (tokenize_time + out.stats.time_to_first_token).as_secs_f64() * 1e3;
    if a.json {
        let j = serde_json::json!({
            "text": out.text,
            "prompt_tokens": ids.len(),
            "generated_tokens": out.tokens.len(),
            "tokens": out.tokens,
            "stop_reason": format!("{:?}", out.reason).to_lowercase(),
            "backend": engine.backend_name(),
            "device": engine.device_description(),
            "load_ms": engine.load_time.as_secs_f64() * 1e3,
            "time_to_first_token_ms": ttft_ms,
            "decode_tokens_per_second": out.stats.decode_tokens_per_second(),
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
            out.tokens.len(),
            out.stats.decode_tokens_per_second(),
            out.reason
        );
    }
    Ok(())
}

fn tokenize(a: TokenizeArgs) -> Result<()> {
    let dir = model_dir(&a.model)?;
    let tok = engine_tools::Tokenizer::open(&dir).map_err(|e| Error::Tokenizer(e.to_string()))?;
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
    let stride = a.stride.unwrap_or(window);
    if stride == 0 || stride > window {
        return Err(Error::InvalidArgument(format!("--stride must be in 1..={window}")));
    }
    let mut session = engine.new_session(Some(window))?;
    let (mut nll, mut count) = (0f64, 0usize);
    let mut scored_until = 0; // tokens 1..=scored_until have been scored
    let mut begin = 0;
    let t0 = Instant::now();
    loop {
        let end = (begin + window).min(ids.len());
        session.reset();
        // Value r is the loss of token begin + r + 1 (scored on the device where the backend can); count only
        // targets no earlier window scored.
        let losses = session.feed_scored(&ids[begin..end])?;
        for (r, loss) in losses.into_iter().enumerate() {
            if begin + r + 1 > scored_until {
                nll += loss;
                count += 1;
            }
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
    println!(
        "constants:  rms_norm_eps {}, rope_theta {}, bos {}, eos {}",
        c.rms_norm_eps, c.rope_theta, c.bos_token_id, c.eos_token_id
    );
    match &d.quant {
        Some(q) => println!(
            "quant:      GPTQ int{}, group size {}, desc_act {}, {}",
            q.bits,
            q.group_size.map(|g| g.to_string()).unwrap_or_else(|| "-1 (one group)".into()),
            q.desc_act,
            if q.sym { "symmetric" } else { "asymmetric" }
        ),
        None => println!("quant:      none (unquantized)"),
    }
    println!("floats:     {} (config.json torch_dtype {})", float_types(d), c.torch_dtype.name());
    println!("shards:     {}", d.shards.join(", "));
    let tensors = all_tensors(d);
    let bytes: usize = tensors.iter().map(|t| t.len).sum();
    println!("tensors:    {} used, {:.3} GB", tensors.len(), bytes as f64 / 1e9);
    match engine::cuda_runs(&model) {
        Ok(()) => {
            let bf16 = d.tensors().iter().any(|t| t.dtype == engine_format::DType::BF16);
            println!("cuda:       runs it{}", if bf16 { " (its bf16 tensors rounded to fp16 at load)" } else { "" })
        }
        Err(e) => println!("cuda:       refuses it: {e}"),
    }
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

/// The element types of the float tensors (embeddings, norms, unquantized weights; GPTQ scales are always fp16):
/// `fp16`, `bf16`, or both.
fn float_types(d: &engine::ModelDesc) -> String {
    use engine_format::DType;
    let floats: Vec<DType> = d.tensors().iter().filter(|t| !t.name.ends_with(".scales")).map(|t| t.dtype).collect();
    let names: Vec<&str> = [(DType::F16, "fp16"), (DType::BF16, "bf16")]
        .iter()
        .filter(|(t, _)| floats.contains(t))
        .map(|(_, n)| *n)
        .collect();
    names.join(" + ")
}

/// Every tensor the engine reads, in checkpoint order (lm_head once even when tied).
fn all_tensors(d: &engine::ModelDesc) -> Vec<&engine_format::TensorRef> {
    use engine_format::Linear;
    let mut v = vec![&d.embed_tokens];
    fn push<'a>(v: &mut Vec<&'a engine_format::TensorRef>, l: &'a Linear) {
        match l {
            Linear::Gptq { qweight, qzeros, scales, g_idx, .. } => v.extend([qweight, qzeros, scales, g_idx]),
            Linear::Dense { weight, .. } => v.push(weight),
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
    use engine_format::plan::{plan, PlanLimits, Region};
    let dir = model_dir(&a.model)?;
    let model = engine::Model::open(&dir)?;
    let c = &model.desc.config;
    let ctx = a.ctx.unwrap_or(c.max_position_embeddings);
    if ctx == 0 || ctx > c.max_position_embeddings {
        return Err(Error::InvalidArgument(format!(
            "--ctx must be in 1..={} (max_position_embeddings)",
            c.max_position_embeddings
        )));
    }
    if a.prefill_chunk == 0 {
        return Err(Error::InvalidArgument("--prefill-chunk must be at least 1".into()));
    }
    let p = plan(&model.desc, PlanLimits::new(ctx, a.prefill_chunk).with_lm_head_screen(!a.no_lm_head_screen));
    let mb = |b: usize| b as f64 / (1 << 20) as f64;
    println!("memory plan for {} at context {ctx}, prefill chunk {}", dir.display(), p.limits.prefill_chunk);
    println!();
    println!("{:<12} {:>12} {:>8}", "region", "MiB", "buffers");
    for r in Region::ALL {
        let n = p.buffers.iter().filter(|b| b.region == r).count();
        println!("{:<12} {:>12.2} {:>8}", r.name(), mb(p.region_size(r)), n);
    }
    println!("{:<12} {:>12.2} {:>8}   ({:.3} GB)", "total", mb(p.total()), p.buffers.len(), p.total() as f64 / 1e9);
    println!();
    let mut shown: Vec<&engine_format::PlanBuffer> = p.buffers.iter().collect();
    if !a.all {
        // Everything but the per-layer weights, plus layer 0's as an example.
        shown.retain(|b| {
            b.region != Region::Weights || !b.name.starts_with("layers.") || b.name.starts_with("layers.0.")
        });
    }
    println!("{:<36} {:<12} {:>14} {:>12} {:>6}  live", "buffer", "region", "offset", "bytes", "align");
    for b in shown {
        let live = b.live.map(|(f, l)| format!("steps {f}..={l}")).unwrap_or_default();
        println!("{:<36} {:<12} {:>14} {:>12} {:>6}  {live}", b.name, b.region.name(), b.offset, b.size, b.align);
    }
    if !a.all {
        println!("(layers 1..{} repeat layer 0; --all lists every buffer)", c.num_hidden_layers);
    }
    Ok(())
}

fn synth(a: SynthArgs) -> Result<()> {
    use engine::synth::SynthSpec;
    let mut spec = match a.preset {
        PresetArg::Tiny => SynthSpec::tiny(),
        PresetArg::B7 => SynthSpec::baichuan_7b(),
    };
    if let Some(arch) = a.arch {
        spec.arch = match arch {
            ArchArg::Baichuan => engine_format::Arch::Baichuan,
            ArchArg::Llama => engine_format::Arch::Llama,
        };
    }
    spec.bits = match a.bits {
        4 | 8 => a.bits,
        b => return Err(Error::InvalidArgument(format!("--bits must be 4 or 8, got {b}"))),
    };
    if let Some(g) = a.group_size {
        spec.group_size = match g {
            -1 => None,
            g if g > 0 => Some(g as usize),
            _ => return Err(Error::InvalidArgument(format!("--group-size must be positive or -1, got {g}"))),
        };
    }
    let set = |v: Option<usize>, field: &mut usize| {
        if let Some(v) = v {
            *field = v;
        }
    };
    set(a.hidden, &mut spec.hidden);
    set(a.intermediate, &mut spec.intermediate);
    set(a.heads, &mut spec.heads);
    set(a.layers, &mut spec.layers);
    set(a.vocab, &mut spec.vocab);
    set(a.max_pos, &mut spec.max_pos);
    spec.kv_heads = a.kv_heads.unwrap_or(spec.heads);
    spec.desc_act = a.desc_act || a.desc_act_per_linear;
    spec.g_idx_per_linear = a.desc_act_per_linear;
    spec.sym = !a.asym;
    spec.quantized = !(a.f16 || a.bf16);
    if a.bf16 {
        spec.float_dtype = engine_format::DType::BF16;
    }
    spec.shards = a.shards;
    spec.seed = a.seed;
    spec.tie_word_embeddings = a.tie_embeddings;
    spec.outliers = a.outliers;
    let (spec, tokenizer_file) = match a.tokenizer {
        TokenizerArg::Sentencepiece => (engine::tiny::with_test_tokenizer(spec)?, "tokenizer.model"),
        TokenizerArg::Json => (engine::tiny::with_test_tokenizer_json(spec)?, "tokenizer.json"),
    };
    let t0 = Instant::now();
    let report = engine::synth::write_checkpoint(&a.out, &spec)?;
    eprintln!(
        "wrote {} tensors, {:.3} GB in {} file(s) to {} in {:.1} s (random weights; {tokenizer_file} is the test tokenizer padded to {} pieces)",
        report.tensors,
        report.weight_bytes as f64 / 1e9,
        report.weight_files.len(),
        a.out.display(),
        t0.elapsed().as_secs_f64(),
        spec.vocab
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Pseudo-random token ids (never 0, the unknown piece): benchmarks run on real-looking input, not zeros.
fn bench_ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            1 + (s % (vocab as u64 - 1)) as u32
        })
        .collect()
}

fn bench(a: BenchArgs) -> Result<()> {
    let prompts: Vec<usize> = a
        .prompts
        .split(',')
        .map(|t| {
            t.trim().parse::<usize>().map_err(|_| Error::InvalidArgument(format!("--prompts: `{t}` is not a length")))
        })
        .collect::<Result<_>>()?;
    if prompts.contains(&0) || a.reps == 0 || a.decode_tokens == 0 {
        return Err(Error::InvalidArgument("--prompts lengths, --reps and --decode-tokens must be at least 1".into()));
    }
    let engine = load(&a.model)?;
    let c = engine.config().clone();
    let (vocab, ctx) = (c.vocab_size, engine.max_context());
    let mut report = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        report.insert(k.to_string(), v);
    };
    put("backend", engine.backend_name().into());
    put("device", engine.device_description().into());
    put("model", format!("{}", engine.model().dir.display()).into());
    put("load_ms", (engine.load_time.as_secs_f64() * 1e3).into());
    eprintln!("device:  {} ({})", engine.device_description(), engine.backend_name());
    eprintln!("load:    {:.0} ms (page cache warm)", engine.load_time.as_secs_f64() * 1e3);

    // The card's bandwidth and the bytes of a decode step set the floor (where the backend measures itself).
    let decode_ctx = 16 + a.decode_tokens / 2;
    let floor = engine.with_measure(|m| -> Result<_> {
        let phases: Vec<String> = m.load_phases().iter().map(|(what, s)| format!("{what} {:.0} ms", s * 1e3)).collect();
        eprintln!("         of which {}", phases.join(", "));
        eprintln!("tuning:  {}", m.tuning());
        let bw = m.copy_bandwidth()?;
        let read_bw = m.read_bandwidth()?;
        let bytes = m.decode_step_bytes(decode_ctx);
        let mem = m.memory();
        let kv = m.kv_cache_bytes(ctx) as usize;
        Ok((bw, read_bw, bytes, mem, kv, m.tuning()))
    });
    let bws = match floor.transpose()? {
        Some((bw, read_bw, bytes, mem, kv, tuning)) => {
            let floor_ms = bytes as f64 / bw * 1e3;
            let read_floor_ms = bytes as f64 / read_bw * 1e3;
            eprintln!("copy bw: {:.2} TB/s (read + write, engine copy kernel, 2 x 1 GiB)", bw / 1e12);
            eprintln!("read bw: {:.2} TB/s (read only, engine streaming kernel, 1 GiB)", read_bw / 1e12);
            eprintln!(
                "step:    {:.3} GB read per decode step at context {decode_ctx}; floor {:.3} ms/token = {:.0} tok/s at \
                 the copy rate, {:.3} ms/token = {:.0} tok/s at the read rate",
                bytes as f64 / 1e9,
                floor_ms,
                1e3 / floor_ms,
                read_floor_ms,
                1e3 / read_floor_ms
            );
            let (w, act, ws) = (mem.weights, mem.activations, mem.workspace);
            eprintln!(
                "memory:  weights {:.3} GB + KV cache {:.3} GB (ctx {ctx}) + activations {:.1} MB + workspace {:.1} MB = +{:.2}% over weights + KV",
                w as f64 / 1e9,
                kv as f64 / 1e9,
                act as f64 / 1e6,
                ws as f64 / 1e6,
                100.0 * (act + ws) as f64 / (w + kv) as f64
            );
            put("tuning", tuning.into());
            put("copy_bandwidth_tb_s", (bw / 1e12).into());
            put("read_bandwidth_tb_s", (read_bw / 1e12).into());
            put("decode_bytes_per_step", bytes.into());
            put("floor_ms_per_token", floor_ms.into());
            put("read_floor_ms_per_token", read_floor_ms.into());
            put("weights_bytes", w.into());
            put("kv_bytes", kv.into());
            put("activation_workspace_bytes", (act + ws).into());
            Some((bw, read_bw))
        }
        None => None,
    };

    // Decode after a 16-token prompt, and after the longest prompt that fits.
    let decode = |prompt_len: usize| -> Result<f64> {
        let ids = bench_ids(prompt_len, vocab, 7);
        let opts =
            GenerateOptions { max_new_tokens: a.decode_tokens, sampler: SamplerParams::default(), eos_token_id: None };
        let mut v = Vec::new();
        for _ in 0..a.reps {
            let mut s = engine.new_session(None)?;
            let (_, _, stats) = s.generate(&ids, &opts, |_| true)?;
            v.push(stats.decode_tokens_per_second());
        }
        Ok(median(v))
    };
    let mut decode_rows = Vec::new();
    for &p in [16usize].iter().chain(prompts.iter().filter(|&&p| p >= 1024)) {
        if p + a.decode_tokens > ctx {
            eprintln!("decode after {p}: skipped (needs ctx {} > {ctx})", p + a.decode_tokens);
            continue;
        }
        let tps = decode(p)?;
        let bytes = engine.with_measure(|m| m.decode_step_bytes(p + a.decode_tokens / 2));
        let line = match (bws, bytes) {
            (Some((bw, read_bw)), Some(bytes)) => {
                let (floor_tps, read_floor_tps) = (bw / bytes as f64, read_bw / bytes as f64);
                format!(
                    "decode:  {tps:.1} tok/s = {:.3} ms/token after a {p}-token prompt ({} tokens) | {:.0} GB/s | {:.1}% of the floor ({floor_tps:.0} tok/s), {:.1}% of the read-only floor ({read_floor_tps:.0} tok/s)",
                    1e3 / tps,
                    a.decode_tokens,
                    bytes as f64 * tps / 1e9,
                    100.0 * tps / floor_tps,
                    100.0 * tps / read_floor_tps
                )
            }
            _ => format!("decode:  {tps:.2} tok/s = {:.1} ms/token after a {p}-token prompt", 1e3 / tps),
        };
        eprintln!("{line}");
        let mut row = serde_json::json!({"prompt": p, "tokens": a.decode_tokens, "tok_s": tps});
        if let (Some((bw, read_bw)), Some(bytes)) = (bws, bytes) {
            row["bytes_per_step"] = bytes.into();
            row["floor_tok_s"] = (bw / bytes as f64).into();
            row["read_floor_tok_s"] = (read_bw / bytes as f64).into();
        }
        decode_rows.push(row);
    }
    put("decode", decode_rows.into());

    let mut ttft_rows = Vec::new();
    for &p in &prompts {
        if p + 1 > ctx {
            eprintln!("ttft {p}: skipped (ctx {ctx})");
            continue;
        }
        let ids = bench_ids(p, vocab, 9);
        let opts = GenerateOptions { max_new_tokens: 1, sampler: SamplerParams::default(), eos_token_id: None };
        let mut v = Vec::new();
        for _ in 0..a.reps {
            let mut s = engine.new_session(None)?;
            let (_, _, stats) = s.generate(&ids, &opts, |_| true)?;
            v.push(stats.time_to_first_token.as_secs_f64() * 1e3);
        }
        let ms = median(v);
        // The device's own time for the same work, to tell kernel time from launch cost.
        let gpu_ms = if (2..=engine.prefill_chunk()).contains(&p) {
            engine.with_measure(|m| m.time_prefill(&ids)).transpose()?
        } else {
            None
        };
        let gpu_note = gpu_ms.map(|g| format!(", of which {g:.2} ms GPU time")).unwrap_or_default();
        eprintln!("ttft:    {ms:.2} ms for a {p}-token prompt ({:.0} tok/s prefill{gpu_note})", p as f64 / ms * 1e3);
        ttft_rows.push(serde_json::json!({"prompt": p, "ms": ms}));
    }
    put("time_to_first_token", ttft_rows.into());

    if a.breakdown {
        match bws {
            // Against the read-only rate: the step's kernels (nearly) only read.
            Some((_, bw)) => {
                for pos in [16usize, 2048].into_iter().filter(|&p| p < ctx) {
                    let rows = engine
                        .with_measure(|m| m.profile_decode_step(pos, 1, a.reps.max(5)))
                        .transpose()?
                        .unwrap_or_default();
                    let total: f64 = rows.iter().map(|r| r.ms).sum();
                    eprintln!("\nper-kernel breakdown of one decode step at context {} (kernels launched one by one, events between):", pos + 1);
                    eprintln!(
                        "  {:<40} {:>8} {:>10} {:>7} {:>10} {:>9}",
                        "kernel", "launches", "time ms", "share", "GB/s", "% of read"
                    );
                    let mut out_rows = Vec::new();
                    for r in &rows {
                        let gbs = r.bytes as f64 / (r.ms / 1e3) / 1e9;
                        eprintln!(
                            "  {:<40} {:>8} {:>10.4} {:>6.1}% {:>10.0} {:>8.1}%",
                            r.kernel,
                            r.launches,
                            r.ms,
                            100.0 * r.ms / total,
                            gbs,
                            100.0 * gbs * 1e9 / bw
                        );
                        out_rows.push(
                            serde_json::json!({"kernel": r.kernel, "launches": r.launches, "ms": r.ms, "bytes": r.bytes}),
                        );
                    }
                    eprintln!(
                        "  {:<40} {:>8} {:>10.4}",
                        "total",
                        rows.iter().map(|r| r.launches).sum::<usize>(),
                        total
                    );
                    put(&format!("breakdown_ctx_{}", pos + 1), out_rows.into());
                }
            }
            None => eprintln!("breakdown: only on the CUDA backend"),
        }
    }
    if a.json {
        println!("{}", serde_json::Value::Object(report));
    }
    Ok(())
}
