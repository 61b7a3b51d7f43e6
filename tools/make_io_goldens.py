#!/usr/bin/env python3
"""Golden files for ssmkit's io tests, written by the reference implementations.

tests/data/io/all_dtypes.safetensors  every dtype ssmkit reads, written by the `safetensors`
                                      package (torch API), with metadata and a zero-size tensor
tests/data/io/all_dtypes.json         the same tensors' shapes and values, as JSON numbers
tests/data/io/tiny_sharded/           a random-init transformers MambaForCausalLM (untied, with
                                      biases, bfloat16) saved by save_pretrained in several shards
tests/data/io/tiny_sharded.json       the config values transformers derives and every tensor's
                                      shape, sum and sum of squares (float64)

Run from the repository root: python3 tools/make_io_goldens.py
"""
import json
import os
import shutil

import torch
from safetensors.torch import save_file

OUT = os.path.join("tests", "data", "io")


def all_dtypes():
    g = torch.Generator().manual_seed(1234)
    tensors = {
        "f64": torch.randn(3, 5, generator=g, dtype=torch.float64),
        "f32": torch.randn(2, 3, 4, generator=g, dtype=torch.float32),
        "f16": (torch.randn(7, generator=g) * 100).to(torch.float16),
        "bf16": torch.randn(2, 2, 3, 2, generator=g).to(torch.bfloat16),
        "i64": torch.randint(-(2**62), 2**62, (4, 2), generator=g, dtype=torch.int64),
        "i32": torch.randint(-(2**31), 2**31 - 1, (5,), generator=g, dtype=torch.int32),
        "i16": torch.randint(-(2**15), 2**15 - 1, (3, 3), generator=g, dtype=torch.int16),
        "i8": torch.randint(-128, 127, (6,), generator=g, dtype=torch.int8),
        "u8": torch.randint(0, 255, (2, 5), generator=g, dtype=torch.uint8),
        "bool": torch.randint(0, 2, (9,), generator=g).to(torch.bool),
        "empty_f32": torch.zeros(0, 4, dtype=torch.float32),
    }
    metadata = {"format": "pt", "producer": "tools/make_io_goldens.py", "unicode": "Δ·ħ"}
    save_file(tensors, os.path.join(OUT, "all_dtypes.safetensors"), metadata=metadata)
    expected = {
        "metadata": metadata,
        "tensors": {
            name: {
                "dtype": str(t.dtype).replace("torch.", ""),
                "shape": list(t.shape),
                # float64 holds every value of these dtypes exactly, integers stay integers.
                "values": (t.to(torch.float64) if t.is_floating_point() else t.to(torch.int64))
                .flatten()
                .tolist(),
            }
            for name, t in tensors.items()
        },
    }
    with open(os.path.join(OUT, "all_dtypes.json"), "w") as f:
        json.dump(expected, f, indent=1)


def derived(c):
    """The sizes ssmkit's MambaConfig holds, as transformers computes them."""
    return {
        "d_model": c.hidden_size,
        "n_layer": c.num_hidden_layers,
        "vocab_size": c.vocab_size,
        "d_state": c.state_size,
        "expand": c.expand,
        "d_inner": c.intermediate_size,
        "d_conv": c.conv_kernel,
        "dt_rank": c.time_step_rank,
        "use_bias": c.use_bias,
        "use_conv_bias": c.use_conv_bias,
        "norm_eps": c.layer_norm_epsilon,
        "tie_word_embeddings": c.tie_word_embeddings,
    }


def tiny_sharded():
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(99)
    config = MambaConfig(
        vocab_size=40,
        hidden_size=24,
        state_size=8,
        num_hidden_layers=2,
        expand=2,
        conv_kernel=3,
        use_bias=True,
        use_conv_bias=True,
        tie_word_embeddings=False,
        layer_norm_epsilon=1e-6,
    )
    model = MambaForCausalLM(config).to(torch.bfloat16).eval()
    d = os.path.join(OUT, "tiny_sharded")
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d, max_shard_size="8KB", safe_serialization=True)
    assert os.path.exists(os.path.join(d, "model.safetensors.index.json")), "expected shards"
    # transformers' defaults for every key a minimal config.json leaves out.
    minimal = {"hidden_size": 40, "num_hidden_layers": 3, "vocab_size": 77}
    expected = {
        "config": derived(model.config),
        "minimal_config": {"json": minimal, "derived": derived(MambaConfig(**minimal))},
        "tensors": {
            name: {
                "shape": list(t.shape),
                "sum": t.to(torch.float64).sum().item(),
                "sum_sq": (t.to(torch.float64) ** 2).sum().item(),
            }
            for name, t in model.state_dict().items()
        },
    }
    with open(os.path.join(OUT, "tiny_sharded.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    all_dtypes()
    tiny_sharded()
