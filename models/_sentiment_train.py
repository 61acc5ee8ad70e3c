"""Fine-tune the tuned branch (LoRA on the upper layers) + a linear head for sentiment.

Called by ``livecoach models train``; never at run time or in tests.
"""

from __future__ import annotations

import random
import sys
import time

import numpy as np

from livecoach.models.data import Split


def _batches(n_tokens: list[int], batch: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches (less padding), in random order."""
    order = sorted(range(len(n_tokens)), key=lambda i: (n_tokens[i], rng.random()))
    chunks = [order[i:i + batch] for i in range(0, len(order), batch)]
    rng.shuffle(chunks)
    return chunks


def train_sentiment(model_dir, train: Split, calib: Split, *, split: int = 3, rank: int = 8, epochs: float = 1.0,
                    batch: int = 32, lr: float = 1e-3, max_len: int = 64, budget_s: float = 1800.0,
                    seed: int = 0, init: dict | None = None,
                    log=lambda m: print(m, file=sys.stderr, flush=True)):
    """Returns ``(lora_state, head_W, head_b, history)``; ``head`` maps the pooled tuned branch to 3 logits."""
    import torch
    from torch import nn

    from livecoach.models._bert import Tier0Net
    from livecoach.models.encoder import load_tokenizer

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = random.Random(seed)
    tok = load_tokenizer(model_dir, max_len=max_len)
    enc = tok.encode_batch(train.texts)
    ids = [e.ids for e in enc]
    y = np.asarray(train.labels)
    net = Tier0Net(split).load_minilm(model_dir)
    for p in net.parameters():
        p.requires_grad_(False)
    net.attach_tuned_branch(rank)
    head = nn.Sequential(nn.Dropout(0.1), nn.Linear(384, 3))
    if init:  # resume from saved artefacts: {"lora": {...}, "W": (384, 3), "b": (3,)}
        net.load_lora(init["lora"], rank)
        with torch.no_grad():
            head[1].weight.copy_(torch.from_numpy(np.asarray(init["W"]).T.copy()))
            head[1].bias.copy_(torch.from_numpy(np.asarray(init["b"])))
        for layer in net.tuned:
            for n, p in layer.named_parameters():
                p.requires_grad_(n.endswith(".A") or n.endswith(".B"))
    counts = np.bincount(y, minlength=3).astype(np.float64)
    w = torch.tensor((counts.sum() / (3 * counts)) ** 0.5, dtype=torch.float32)  # soft class balance
    loss_fn = nn.CrossEntropyLoss(weight=w)
    params = [p for p in net.tuned.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    plan = _batches([len(x) for x in ids], batch, rng)
    total = int(len(plan) * epochs)
    while len(plan) < total:
        plan += _batches([len(x) for x in ids], batch, rng)
    plan = plan[:total]
    warm = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.05, 1 - s / total))
    log(f"sentiment: {len(ids)} tweets, {total} steps of {batch}, LoRA rank {rank} on layers {split}-5, "
        f"budget {budget_s / 60:.0f} min")
    t0 = time.time()
    history = []
    net.train()
    head.train()
    run_loss = 0.0
    for step, b in enumerate(plan):
        L = max(len(ids[i]) for i in b)
        x = torch.zeros(len(b), L, dtype=torch.long)
        m = torch.zeros(len(b), L, dtype=torch.long)
        for r, i in enumerate(b):
            x[r, :len(ids[i])] = torch.tensor(ids[i])
            m[r, :len(ids[i])] = 1
        with torch.no_grad():
            h, bias = net.lower(x, m)
        logits = head(net.upper_tuned(h, bias, m))
        loss = loss_fn(logits, torch.from_numpy(y[b]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        run_loss = 0.98 * run_loss + 0.02 * loss.item() if step else loss.item()
        el = time.time() - t0
        if step % 100 == 0 or step == total - 1:
            eta = el / (step + 1) * (total - step - 1)
            log(f"  step {step + 1}/{total}  loss {run_loss:.3f}  {el / 60:.1f} min, eta {eta / 60:.1f} min")
            history.append({"step": step + 1, "loss": round(run_loss, 4), "minutes": round(el / 60, 2)})
        if el > budget_s:
            log(f"  time budget reached at step {step + 1}/{total}")
            break
    net.eval()
    head.eval()
    lin = head[1]
    return (net.lora_state(), lin.weight.detach().numpy().astype(np.float32),
            lin.bias.detach().numpy().astype(np.float32), history)
