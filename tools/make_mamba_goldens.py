#!/usr/bin/env python3
"""Golden cases for ssmkit's nn/ tests, made with HF transformers on the CPU.

For each small random-init MambaForCausalLM config it writes tests/data/mamba/<name>/:
  config.json, model.safetensors   save_pretrained output (float32 weights)
  golden.safetensors               input_ids (I64 [B, Lp]), logits (F32 [B, Lp, V]) for the prompt,
                                   greedy (I64 [B, Lp + new]) greedy continuation by full recompute
and for the MambaMixer alone tests/data/mamba/mixer_<name>.safetensors with the mixer weights
(F64, HF names without the layer prefix), x (F64 [B, L, d_model]) and out (F64 [B, L, d_model]).

Every weight is rounded to float32 first and the model then runs in float64, so the float32 file
holds exactly the weights the float64 reference used. transformers still rounds a few
intermediates to float32 (A = -exp(A_log.float()), RMSNorm, the fp32 residual); that costs ~1e-7
relative, far below the tests' 1e-5 / 1e-4 bounds.

Usage: python3 tools/make_mamba_goldens.py [--out tests/data/mamba] [--only NAME ...]
"""
import argparse
import json
import math
import os

import torch
from safetensors.torch import save_file
from transformers import MambaConfig, MambaForCausalLM
from transformers.models.mamba.modeling_mamba import MambaMixer

LM_CASES = {
    # tied embeddings, no in/out biases, conv bias, d_state 16
    "tiny_tied": dict(hidden_size=64, num_hidden_layers=2, vocab_size=300, state_size=16,
                      expand=2, conv_kernel=4, use_bias=False, use_conv_bias=True,
                      tie_word_embeddings=True, layer_norm_epsilon=1e-5, seed=11,
                      out_proj_scale=12.0),
    # untied, in/out proj biases and conv bias, d_state 16, explicit dt_rank
    "tiny_untied_bias": dict(hidden_size=64, num_hidden_layers=2, vocab_size=300, state_size=16,
                             expand=2, conv_kernel=4, use_bias=True, use_conv_bias=True,
                             time_step_rank=6, tie_word_embeddings=False,
                             layer_norm_epsilon=1e-5, seed=12),
    # untied, no biases at all, d_state 64, conv kernel 3, three layers
    "tiny_n64": dict(hidden_size=48, num_hidden_layers=3, vocab_size=280, state_size=64,
                     expand=2, conv_kernel=3, use_bias=False, use_conv_bias=False,
                     tie_word_embeddings=False, layer_norm_epsilon=1e-6, seed=13),
    # intermediate_size stored apart from expand * hidden_size (72, not 80): transformers sizes
    # the mixer from the stored value
    "tiny_inner": dict(hidden_size=40, intermediate_size=72, num_hidden_layers=2, vocab_size=200,
                       state_size=8, expand=2, conv_kernel=4, use_bias=False, use_conv_bias=True,
                       tie_word_embeddings=False, layer_norm_epsilon=1e-5, seed=14),
}

MIXER_CASES = {
    "n64": dict(hidden_size=48, state_size=64, expand=2, conv_kernel=4, use_bias=False,
                use_conv_bias=True, batch=2, length=13, seed=21),
    "bias": dict(hidden_size=40, state_size=16, expand=2, conv_kernel=3, use_bias=True,
                 use_conv_bias=True, time_step_rank=5, batch=3, length=9, seed=22),
}

PROMPT_LEN = 12
BATCH = 2
NEW_TOKENS = 16
MIN_GREEDY_GAP = 2e-3  # top-1 minus top-2 logit at every greedy step, so float32 cannot flip it


def config_of(case):
    kw = {k: v for k, v in case.items() if k not in ("seed", "batch", "length", "out_proj_scale")}
    kw.setdefault("num_hidden_layers", 1)
    kw.setdefault("vocab_size", 16)
    return MambaConfig(**kw)


@torch.no_grad()
def randomise(module, gen):
    """Moves every parameter away from its structured init (zero biases, unit norms, A_log =
    log(1..N)) so that each weight matters, then rounds it to float32."""
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        if name.endswith("A_log"):
            p.copy_(p.double() + 0.3 * noise)
        elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
            p.copy_(1.0 + 0.2 * noise)
        elif name.endswith("mixer.D") or name == "D":
            p.copy_(1.0 + 0.5 * noise)
        elif name.endswith("bias"):
            p.copy_((p.double() if "dt_proj" in name else 0.0) + 0.1 * noise)
        else:
            p.copy_(p.double() * (1.0 + 0.1 * noise))
        p.copy_(p.float().double())


@torch.no_grad()
def greedy(model, ids, new_tokens):
    """Greedy continuation recomputing the whole sequence every step (no cache: a pure reference).
    Returns the ids and the smallest top-1/top-2 logit gap met."""
    gap = math.inf
    for _ in range(new_tokens):
        logits = model(ids, use_cache=False).logits[:, -1, :].double()
        top = torch.topk(logits, 2, dim=-1).values
        gap = min(gap, float((top[:, 0] - top[:, 1]).min()))
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids, gap


@torch.no_grad()
def make_lm(name, case, out_dir):
    torch.manual_seed(case["seed"])
    gen = torch.Generator().manual_seed(case["seed"])
    config = config_of(case)
    model = MambaForCausalLM(config).eval()
    if "intermediate_size" in case:
        assert model.backbone.layers[0].mixer.intermediate_size == case["intermediate_size"]
    randomise(model, gen)
    # With tied embeddings the residual stream's own embedding wins the lm head unless the mixers
    # speak louder: without this the greedy continuation just repeats the last prompt token.
    for layer in model.backbone.layers:
        layer.mixer.out_proj.weight.mul_(case.get("out_proj_scale", 1.0))
    if config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.backbone.embeddings.weight.data_ptr()
    # Pick prompts whose greedy continuation has a clear winner at every step.
    for attempt in range(50):
        prompt = torch.randint(0, config.vocab_size, (BATCH, PROMPT_LEN), generator=gen)
        model64 = model.double()
        ids, gap = greedy(model64, prompt, NEW_TOKENS)
        if gap >= MIN_GREEDY_GAP:
            break
    else:
        raise RuntimeError(f"{name}: no prompt with greedy gap >= {MIN_GREEDY_GAP}")
    logits = model64(prompt, use_cache=False).logits.float()
    d = os.path.join(out_dir, name)
    model.float().save_pretrained(d, safe_serialization=True)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(d, extra)):
            os.remove(os.path.join(d, extra))
    save_file({"input_ids": prompt.contiguous(), "logits": logits.contiguous(),
               "greedy": ids.contiguous()}, os.path.join(d, "golden.safetensors"))
    print(f"{name}: prompt tries {attempt + 1}, min greedy gap {gap:.4f}, "
          f"logit rms {logits.pow(2).mean().sqrt():.3f}")


@torch.no_grad()
def make_mixer(name, case, out_dir):
    torch.manual_seed(case["seed"])
    gen = torch.Generator().manual_seed(case["seed"])
    config = config_of(case)
    mixer = MambaMixer(config, layer_idx=0).eval()
    randomise(mixer, gen)
    mixer = mixer.double()
    x = torch.randn(case["batch"], case["length"], config.hidden_size, generator=gen,
                    dtype=torch.float64)
    out = mixer(x)
    tensors = {k: v.detach().clone().contiguous() for k, v in mixer.state_dict().items()}
    tensors["x"] = x
    tensors["out"] = out.contiguous()
    save_file(tensors, os.path.join(out_dir, f"mixer_{name}.safetensors"))
    print(f"mixer_{name}: out rms {out.pow(2).mean().sqrt():.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                  "mamba"))
    ap.add_argument("--only", action="append", default=[],
                    help="make only these cases (LM names, or mixer_<name>); repeatable")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    wanted = set(args.only)
    unknown = wanted - set(LM_CASES) - {f"mixer_{n}" for n in MIXER_CASES}
    if unknown:
        ap.error(f"unknown cases: {sorted(unknown)}")
    for name, case in LM_CASES.items():
        if not wanted or name in wanted:
            make_lm(name, case, args.out)
    for name, case in MIXER_CASES.items():
        if not wanted or f"mixer_{name}" in wanted:
            make_mixer(name, case, args.out)


if __name__ == "__main__":
    main()
