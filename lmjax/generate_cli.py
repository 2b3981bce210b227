"""`lmjax sample` and `lmjax score`: generate from and score text under a run directory's model.

    lmjax sample --workdir DIR --prompt "ROMEO:" -n 200 [--temperature 0.8] [--top-k 40]
                 [--top-p 0.9] [--min-p 0.05] [--greedy] [--seed 0] [--num-samples 1] [--end TEXT]
    lmjax score --workdir DIR "TEXT" [--context TEXT] [--stride N] [--json]

On the command line a temperature must be > 0 (argmax decoding is --greedy); the library's
temperature 0 is the same greedy decoding.
"""

from __future__ import annotations

import json
import math
import sys
import time

from lmjax.errors import ConfigError


def _check_sampler_args(args) -> dict:
    if args.greedy:
        given = [f"--{n.replace('_', '-')}" for n in ("temperature", "top_k", "top_p", "min_p")
                 if getattr(args, n) is not None]
        if given:
            raise ConfigError(f"--greedy takes no {', '.join(given)} (greedy decoding is the argmax)")
        return {"temperature": 0.0}
    t = 1.0 if args.temperature is None else args.temperature
    if not math.isfinite(t) or t <= 0:
        raise ConfigError(f"--temperature must be > 0, got {t:g} (use --greedy for argmax decoding)")
    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1], got {args.top_p:g}")
    if args.min_p is not None and not 0 <= args.min_p <= 1:
        raise ConfigError(f"--min-p must be in [0, 1], got {args.min_p:g}")
    return {"temperature": t, "top_k": args.top_k, "top_p": args.top_p, "min_p": args.min_p}


def cmd_sample(args) -> int:
    import jax

    from lmjax.generate import generate, load_bundle

    settings = _check_sampler_args(args)
    if args.max_new_tokens < 1:
        raise ConfigError(f"-n must be >= 1, got {args.max_new_tokens}")
    if args.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {args.num_samples}")
    if not args.prompt:
        raise ConfigError("--prompt is empty: the models need at least one token to start from")
    bundle = load_bundle(args.workdir)
    prompt = bundle.encode(args.prompt, "--prompt")  # bad characters fail here, before any compile
    end = None
    if args.end is not None:
        end_ids = bundle.encode(args.end, "--end")
        if end_ids.size != 1:
            raise ConfigError(f"--end must be exactly one token, {args.end!r} is {end_ids.size}")
        end = int(end_ids[0])
    t0 = time.perf_counter()
    gen = generate(bundle, [prompt] * args.num_samples, args.max_new_tokens, jax.random.key(args.seed),
                   end_token=end, use_cache=not args.no_cache, **settings)
    wall_s = time.perf_counter() - t0
    texts = gen.texts(bundle.tokenizer)
    n_tokens = int(gen.lengths_B.sum())
    if args.json:
        print(json.dumps({"workdir": args.workdir, "family": bundle.family, "step": bundle.step,
                          "prompt": args.prompt, "samples": texts, "tokens": [r.tolist() for r in gen.rows()],
                          "settings": settings, "seed": args.seed, "wall_s": wall_s}))
    else:
        for i, text in enumerate(texts):
            if args.num_samples > 1:
                print(f"--- sample {i} ---")
            print(args.prompt + text)
    print(f"{n_tokens} tokens in {wall_s:.2f} s ({n_tokens / max(wall_s, 1e-9):.0f} tokens/s, compile included)",
          file=sys.stderr)
    return 0


def cmd_score(args) -> int:
    from lmjax.generate import load_bundle
    from lmjax.scoring import score

    if not args.text:
        raise ConfigError("TEXT is empty")
    bundle = load_bundle(args.workdir)
    result = score(bundle, args.text, context=args.context, stride=args.stride)
    if args.json:
        out = {"workdir": args.workdir, "family": bundle.family, "step": bundle.step, "text": args.text,
               "context": args.context, **result.to_dict()}
        print(json.dumps(out))
        return 0
    print(f"{'pos':>5} {'id':>6} {'token':<12} {'logprob_nats':>13} {'prob':>9}")
    for row in result.to_dict()["tokens"]:
        print(f"{row['position']:>5} {row['id']:>6} {json.dumps(row['token']):<12} "
              f"{row['logprob_nats']:>13.4f} {row['prob']:>9.5f}")
    given = (f"given the context {json.dumps(args.context)}" if args.context is not None
             else f"given the first token {json.dumps(bundle.decode(result.tokens[:1]))}")
    print(f"total log-probability: {result.total_logprob_nats:.4f} nats over {result.n_scored} tokens ({given})")
    bpb = result.bits_per_byte
    print(f"cross-entropy: {result.cross_entropy_nats:.4f} nats/token, perplexity: {result.perplexity:.3f}"
          + (f", bits per byte: {bpb:.4f}" if bpb is not None else ""))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sample", help="generate text from a run directory's latest checkpoint",
                              description="Sample continuations of a prompt (temperature -> top-k -> top-p -> min-p).")
    p.add_argument("--workdir", required=True, help="the run directory")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("-n", "--max-new-tokens", type=int, default=200, help="tokens to generate (default 200)")
    p.add_argument("--temperature", type=float, default=None, help="> 0 (default 1.0); see --greedy")
    p.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus: keep the smallest set with mass >= p")
    p.add_argument("--min-p", type=float, default=None, help="keep tokens with p >= min_p * max p")
    p.add_argument("--greedy", action="store_true", help="argmax decoding (no sampling)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1, help="independent samples, generated as one batch")
    p.add_argument("--end", default=None, help="stop a sample after this token (one token of the vocabulary)")
    p.add_argument("--no-cache", action="store_true", help="Transformer: recompute the window each step")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_sample)

    p = subparsers.add_parser("score", help="log-probability of a text under a run directory's model",
                              description="Chain-rule scoring: total log-probability (nats), per-token table, "
                                          "cross-entropy, perplexity, bits per byte. Without --context the first "
                                          "token is only conditioned on (the models have no start token).")
    p.add_argument("--workdir", required=True, help="the run directory")
    p.add_argument("text", help="the text to score")
    p.add_argument("--context", default=None, help="score TEXT given this text")
    p.add_argument("--stride", type=int, default=None,
                   help="Transformer/FFNN texts longer than the context: window stride (default: exact)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_score)
