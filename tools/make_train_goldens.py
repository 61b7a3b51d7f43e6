#!/usr/bin/env python3
"""Goldens for ssmkit's training utilities (tests/train), from PyTorch in float64:
torch.optim.AdamW over a few steps (one parameter without weight decay),
torch.nn.utils.clip_grad_norm_ (clipping and not), and F.cross_entropy with ignore_index.
Writes tests/data/train/optim_golden.json."""
import json
import pathlib

import torch

torch.manual_seed(20261125)
dt = torch.float64
out = {}

# AdamW: two parameters, the second without weight decay; fresh random gradients each step.
opts = dict(lr=0.05, betas=(0.85, 0.97), eps=1e-6, weight_decay=0.1)
p0 = torch.randn(7, dtype=dt)
p1 = torch.randn(3, dtype=dt)
a = p0.clone().requires_grad_(True)
b = p1.clone().requires_grad_(True)
opt = torch.optim.AdamW([{"params": [a]}, {"params": [b], "weight_decay": 0.0}], **opts)
steps = []
for _ in range(4):
    g0 = torch.randn(7, dtype=dt) * 3
    g1 = torch.randn(3, dtype=dt) * 0.01
    a.grad, b.grad = g0.clone(), g1.clone()
    opt.step()
    steps.append({"grad0": g0.tolist(), "grad1": g1.tolist(),
                  "param0": a.detach().tolist(), "param1": b.detach().tolist()})
out["adamw"] = {"lr": opts["lr"], "beta1": opts["betas"][0], "beta2": opts["betas"][1],
                "eps": opts["eps"], "weight_decay": opts["weight_decay"],
                "param0": p0.tolist(), "param1": p1.tolist(), "steps": steps}

# clip_grad_norm_: a case that clips and one that does not.
clips = []
for max_norm in (1.5, 100.0):
    g = [torch.randn(5, dtype=dt), torch.randn(4, dtype=dt) * 2]
    ps = [torch.zeros(5, dtype=dt, requires_grad=True), torch.zeros(4, dtype=dt, requires_grad=True)]
    for p, gi in zip(ps, g):
        p.grad = gi.clone()
    total = torch.nn.utils.clip_grad_norm_(ps, max_norm)
    clips.append({"max_norm": max_norm, "grads": [gi.tolist() for gi in g],
                  "total": float(total), "clipped": [p.grad.tolist() for p in ps]})
out["clip_grad_norm"] = clips

# cross_entropy, mean over the tokens not ignored.
logits = (torch.randn(6, 11, dtype=dt) * 2).requires_grad_(True)
targets = torch.tensor([3, 0, -100, 10, 7, 3])
loss = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100)
loss.backward()
out["cross_entropy"] = {"logits": logits.detach().tolist(), "targets": targets.tolist(),
                        "loss": loss.item(), "dlogits": logits.grad.tolist()}

path = pathlib.Path(__file__).resolve().parent.parent / "tests/data/train/optim_golden.json"
path.write_text(json.dumps(out, indent=1) + "\n")
print("wrote", path)
