#!/usr/bin/env python3
"""Golden cases of the S6 selective scan and the causal conv1d, computed by PyTorch in float64.

The scan follows mamba_ssm's reference `selective_scan_ref` (mamba_ssm/ops/selective_scan_interface.py)
in its (batch, dim, length) layout, with an initial state added; the conv is F.conv1d with
groups = channels, as MambaMixer runs it, fed the K-1 previous inputs as its left padding.

Each case is tests/data/s6/<name>.txt (a header: `option <name> <int>` and
`tensor <name> <rank> <dims...>` lines, in file order) and <name>.bin (the tensors' float64
little-endian values, row-major, concatenated in the header's order).

    python3 tools/make_s6_goldens.py [output dir]
"""
import pathlib
import sys

import torch
import torch.nn.functional as F

OUT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parents[1] / "tests/data/s6")


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, h0=None):
    """mamba_ssm's selective_scan_ref for real A and grouped (B, G, N, L) B/C, plus h0."""
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, L = u.shape
    B = torch.repeat_interleave(B, dim // B.shape[1], dim=1)
    C = torch.repeat_interleave(C, dim // C.shape[1], dim=1)
    delta_A = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    delta_B_u = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)
    x = torch.zeros(batch, dim, A.shape[1], dtype=u.dtype) if h0 is None else h0.clone()
    ys = []
    for i in range(L):
        x = delta_A[:, :, i] * x + delta_B_u[:, :, i]
        ys.append(torch.einsum("bdn,bdn->bd", x, C[:, :, :, i]))
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D[..., None]
    if z is not None:
        out = out * F.silu(z)
    return out, x


def write(name, options, tensors):
    header = ["ssmkit-golden 1"]
    header += [f"option {k} {int(v)}" for k, v in options.items()]
    blobs = []
    for key, t in tensors.items():
        t = t.detach().to(torch.float64).contiguous()
        header.append(f"tensor {key} {t.dim()} " + " ".join(str(s) for s in t.shape))
        blobs.append(t.numpy().astype("<f8").tobytes())
    (OUT / f"{name}.txt").write_text("\n".join(header) + "\n")
    (OUT / f"{name}.bin").write_bytes(b"".join(blobs))


def scan_case(name, seed, batch, dim, N, G, L, softplus, bias, skip, gate, init):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape, lo=-1.0, hi=1.0: lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)
    t = {
        "u": rand(batch, dim, L),
        "delta": rand(batch, dim, L, lo=-2.5, hi=0.5) if softplus else rand(batch, dim, L, lo=0.01, hi=0.3),
        "A": -torch.exp(rand(dim, N, lo=-1.0, hi=2.0)),
        "B": rand(batch, G, N, L),
        "C": rand(batch, G, N, L),
    }
    if skip:
        t["D"] = rand(dim)
    if gate:
        t["z"] = rand(batch, dim, L, lo=-3.0, hi=3.0)
    if bias:
        t["delta_bias"] = rand(dim, lo=-1.0, hi=0.0) if softplus else rand(dim, lo=0.0, hi=0.2)
    if init:
        t["h0"] = rand(batch, dim, N)
    out, last = selective_scan_ref(t["u"], t["delta"], t["A"], t["B"], t["C"], t.get("D"), t.get("z"),
                                   t.get("delta_bias"), softplus, t.get("h0"))
    t["out"], t["h_final"] = out, last
    write(name, {"delta_softplus": softplus}, t)


def conv_case(name, seed, batch, channels, K, L, bias, silu, init):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: 2 * torch.rand(*shape, generator=g, dtype=torch.float64) - 1
    t = {"x": rand(batch, channels, L), "weight": rand(channels, K)}
    if bias:
        t["bias"] = rand(channels)
    state = rand(batch, channels, K - 1) if init else torch.zeros(batch, channels, K - 1, dtype=torch.float64)
    if init:
        t["initial_state"] = state
    padded = torch.cat([state, t["x"]], dim=-1)
    out = F.conv1d(padded, t["weight"][:, None, :], t.get("bias"), groups=channels)
    t["out"] = F.silu(out) if silu else out
    t["final_state"] = padded[..., padded.shape[-1] - (K - 1):]
    write(name, {"silu": silu}, t)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    scan_case("scan_full", 1, batch=2, dim=8, N=4, G=2, L=33, softplus=True, bias=True, skip=True, gate=True, init=True)
    scan_case("scan_plain", 2, batch=1, dim=6, N=16, G=1, L=17, softplus=False, bias=False, skip=False, gate=False, init=False)
    scan_case("scan_n64", 3, batch=1, dim=5, N=64, G=1, L=12, softplus=True, bias=True, skip=True, gate=False, init=True)
    conv_case("conv_k4_bias_silu_state", 4, batch=2, channels=10, K=4, L=19, bias=True, silu=True, init=True)
    conv_case("conv_k3_plain", 5, batch=1, channels=7, K=3, L=2, bias=False, silu=False, init=False)
    conv_case("conv_k1_bias", 6, batch=2, channels=3, K=1, L=5, bias=True, silu=False, init=False)
