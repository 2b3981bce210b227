"""PyTorch reference for the baby Transformer: nanoGPT's CPU "baby" recipe, evaluated two ways.

Trains the configs/train/shakespeare_char.py model in PyTorch with nanoGPT's recipe (written
from its description: init N(0, 0.02) with residual projections scaled by 1/sqrt(2 L), tied
token embedding, learned positions, bias-free LayerNorm, exact GELU, AdamW with decay on every
>= 2-D tensor, warmup lr * (it + 1) / (warmup + 1) then cosine to min_lr, clip 1.0, random
windows drawn with torch.randint) on the same character splits as lmjax, then reports

  - the exact validation loss over the full split (the number lmjax reports), and
  - nanoGPT's estimate: the mean loss of `eval_iters` random validation batches, repeated
    `--repeats` times to show its spread.

torch is not an lmjax dependency: `.venv/bin/pip install torch==2.13.0` (local CPU wheel).

    .venv/bin/python experiments/nanogpt_reference/torch_reference.py --seeds 0 1 2
    .venv/bin/python experiments/nanogpt_reference/torch_reference.py --lmjax-workdir /tmp/baby  # estimator on an lmjax run
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from lmjax import config as config_lib
from lmjax.data.batches import eval_windows
from lmjax.data.dataset import load_dataset

CONFIG = "configs/train/shakespeare_char.py"


def build_model(torch, vocab: int, d: int, heads: int, layers: int, context: int):
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
            self.qkv, self.attn_proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
            self.fc, self.mlp_proj = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
            q, k, v = (a.view(b, t, heads, d // heads).transpose(1, 2) for a in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, d))
            return x + self.mlp_proj(F.gelu(self.fc(self.ln2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(context, d)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f = nn.LayerNorm(d, bias=False)
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * layers) if name.endswith("_proj.weight") else 0.02
                    nn.init.normal_(p, 0.0, std)

        def per_token_loss(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for blk in self.blocks:
                x = blk(x)
            logits = self.ln_f(x) @ self.wte.weight.T
            return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)

    return GPT()


def nanogpt_lr(it: int, o) -> float:
    if it < o.warmup_steps:
        return o.lr * (it + 1) / (o.warmup_steps + 1)
    ratio = min(1.0, (it - o.warmup_steps) / (o.decay_steps - o.warmup_steps))
    return o.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (o.lr - o.min_lr)


def random_batch(torch, data, batch: int, context: int):
    ix = torch.randint(len(data) - context, (batch,))
    x = torch.stack([data[i:i + context] for i in ix])
    y = torch.stack([data[i + 1:i + 1 + context] for i in ix])
    return x, y


def estimator(torch, loss_fn, val, batch, context, eval_iters, repeats):
    """nanoGPT's estimate_loss on the val split, `repeats` independent times."""
    out = []
    for _ in range(repeats):
        out.append(float(np.mean([loss_fn(*random_batch(torch, val, batch, context)).mean().item()
                                  for _ in range(eval_iters)])))
    return out


def full_split(torch, loss_fn, val_np, batch, context):
    total, count = 0.0, 0.0
    for windows, mask in eval_windows(val_np, context, batch):
        w, m = torch.from_numpy(windows).long(), torch.from_numpy(mask).double()
        total += float((loss_fn(w[:, :-1], w[:, 1:]).double() * m).sum())
        count += float(m.sum())
    return total / count


def train_torch(torch, cfg, ds, seed: int):
    m, o, tr = cfg.model, cfg.optim, cfg.train
    torch.manual_seed(seed)
    model = build_model(torch, ds.vocab_size, m.d_model, m.n_heads, m.n_layers, m.context)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, betas=(o.b1, o.b2))
    train = torch.from_numpy(np.array(ds.train, np.int64))
    t0 = time.perf_counter()
    for it in range(tr.steps):
        for g in opt.param_groups:
            g["lr"] = nanogpt_lr(it, o)
        x, y = random_batch(torch, train, tr.batch_size, m.context)
        loss = model.per_token_loss(x, y).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_norm)
        opt.step()
    ms = (time.perf_counter() - t0) / tr.steps * 1e3
    model.eval()
    return model, ms


def lmjax_loss_fn(torch, workdir: str):
    """Per-token loss of an lmjax run's latest checkpoint, as a torch-tensor function."""
    import jax

    from lmjax import models
    from lmjax.train import rundir
    from lmjax.train.loop import restore_params
    from lmjax.train.step import token_losses

    cfg, _, _, params, _ = restore_params(workdir, rundir.load_config(workdir))
    module = models.build(cfg.model)
    per_token = jax.jit(lambda x, y: token_losses(module.apply({"params": params}, x, train=False), y))

    return lambda x, y: torch.from_numpy(np.array(per_token(x.numpy().astype(np.int32),
                                                              y.numpy().astype(np.int32))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--eval-iters", type=int, nargs="*", default=[20, 200])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lmjax-workdir", help="also apply nanoGPT's estimator to this lmjax run")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    cfg = config_lib.load_config_file(CONFIG)
    ds = load_dataset(cfg.data)
    val_np = np.asarray(ds.val)
    val = torch.from_numpy(np.array(val_np, np.int64))
    B, T = cfg.train.batch_size, cfg.model.context
    runs = []
    if args.lmjax_workdir:
        runs.append(("lmjax " + args.lmjax_workdir, lmjax_loss_fn(torch, args.lmjax_workdir), float("nan")))
    for seed in args.seeds:
        model, ms = train_torch(torch, cfg, ds, seed)
        runs.append((f"torch seed {seed}", model.per_token_loss, ms))
    print(f"{'run':<28} {'ms/step':>8} {'full val':>9}  " +
          "  ".join(f"{'est' + str(k) + ' mean+-sd [min,max]':>30}" for k in args.eval_iters))
    rows = []
    with torch.no_grad():
        for name, fn, ms in runs:
            torch.manual_seed(1234)
            full = full_split(torch, fn, val_np, B, T)
            ests = {k: estimator(torch, fn, val, B, T, k, args.repeats) for k in args.eval_iters}
            cells = "  ".join(f"{np.mean(e):.4f}+-{np.std(e):.4f} [{min(e):.4f},{max(e):.4f}]".rjust(30)
                              for e in ests.values())
            print(f"{name:<28} {ms:>8.1f} {full:>9.4f}  {cells}", flush=True)
            rows.append({"run": name, "ms_per_step": ms, "full_val_loss": full, "estimates": ests})
    print(json.dumps([{k: v for k, v in r.items() if k != "estimates"} for r in rows]))


if __name__ == "__main__":
    main()
