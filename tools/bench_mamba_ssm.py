#!/usr/bin/env python3
"""Times mamba_ssm's own selective-scan CUDA kernels (forward and backward) on the target shapes (benchmarks/RESULTS.md, top).

This is the baseline the CUDA benchmarks compare against: bench_cuda and bench_cuda_scan_backward
quote DESIGN.md's figures unless `--mamba-ssm FILE` gives them the file this writes (--out), so
run it on the GPU that runs them, in the same session, and both sides are measured on one device
(scripts/gpu-check does so when MAMBA_SSM_SRC names the source). It is a measuring tool only:
nothing in the library, its build or its tests uses it.

The extension is mamba_ssm's `selective_scan_cuda` (csrc/selective_scan of its source
distribution, e.g. mamba_ssm-2.3.2.post1.tar.gz from PyPI): `--src` names the unpacked source,
compiled here with mamba_ssm's own nvcc flags for the GPU present (TORCH_CUDA_ARCH_LIST, MAX_JOBS
as torch.utils.cpp_extension reads them); without it, an importable selective_scan_cuda is used.

Inputs are mamba_ssm's layout ((batch, D, L) activations, (batch, 1, N, L) B and C, fp32 A, D
and delta_bias), with z, D, delta_bias and softplus, drawn from the ranges bench_scan.cuh uses.
Each call is timed by CUDA events around it (allocation of its outputs included, as a caller
pays it); the median of --runs after two warm-up calls.

    python3 tools/bench_mamba_ssm.py [--src DIR] [--build DIR] [--runs N] [--shape I]
                                     [--dtype fp32|bf16] [--out FILE]

FILE gets one line per (direction, shape, dtype): `fwd|bwd batch D L fp32|bf16 ms`, after a `#`
line naming the device and the versions.
"""
import argparse
import os
import statistics
import sys

import torch

SHAPES = [(8, 2048, 2048), (1, 5120, 16384), (2, 1536, 131072)]  # (batch, D, L), DESIGN.md
N_STATE = 16


def load_extension(src, build):
    """mamba_ssm's extension: compiled from `src` when given, else the importable one."""
    if src is None:
        try:
            import selective_scan_cuda

            return selective_scan_cuda
        except ImportError:
            sys.exit("selective_scan_cuda is not importable: pass --src <unpacked mamba_ssm source>")
    from torch.utils.cpp_extension import load

    d = os.path.join(src, "csrc", "selective_scan")
    files = ["selective_scan.cpp"] + sorted(f for f in os.listdir(d) if f.endswith(".cu"))
    os.makedirs(build, exist_ok=True)
    return load(
        name="selective_scan_cuda",
        sources=[os.path.join(d, f) for f in files],
        extra_include_paths=[d],
        extra_cflags=["-O3", "-std=c++17"],
        extra_cuda_cflags=[
            "-O3", "-std=c++17",
            "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
            "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
            "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
            "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "-lineinfo",
        ],
        build_directory=build,
        verbose=True,
    )


def mamba_version(src):
    """The version in the source's PKG-INFO, or 'installed' for an importable extension."""
    if src is None:
        return "installed"
    with open(os.path.join(src, "PKG-INFO")) as f:
        for line in f:
            if line.startswith("Version:"):
                return line.split()[1]
    return "unknown"


def uniform(shape, lo, hi, dtype, gen):
    return (torch.rand(shape, generator=gen, device="cuda") * (hi - lo) + lo).to(dtype)


def median_ms(fn, runs):
    for _ in range(2):
        fn()
    times = []
    for _ in range(runs):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src")
    ap.add_argument("--build", default="build-mamba-ssm")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--shape", type=int)
    ap.add_argument("--dtype", choices=["fp32", "bf16"])
    ap.add_argument("--out")
    args = ap.parse_args()
    ext = load_extension(args.src, args.build)

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    rows = []
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| shape | dtype | mamba_ssm fwd ms | mamba_ssm bwd ms |")
    print("|---|---|---|---|")
    for i, (batch, D, L) in enumerate(SHAPES):
        if args.shape is not None and i != args.shape:
            continue
        for name, dt in dtypes.items():
            if args.dtype is not None and name != args.dtype:
                continue
            gen = torch.Generator(device="cuda").manual_seed(1234 + i)
            u = uniform((batch, D, L), -1, 1, dt, gen)
            delta = uniform((batch, D, L), -4, 1, dt, gen)
            z = uniform((batch, D, L), -3, 3, dt, gen)
            dout = uniform((batch, D, L), -1, 1, dt, gen)
            B = uniform((batch, 1, N_STATE, L), -1, 1, dt, gen)
            C = uniform((batch, 1, N_STATE, L), -1, 1, dt, gen)
            A = uniform((D, N_STATE), -4, -0.1, torch.float32, gen)
            Dskip = uniform((D,), -1, 1, torch.float32, gen)
            bias = uniform((D,), -1, 0.5, torch.float32, gen)
            out, x, *_ = ext.fwd(u, delta, A, B, C, Dskip, z, bias, True)
            fwd = median_ms(lambda: ext.fwd(u, delta, A, B, C, Dskip, z, bias, True), args.runs)
            bwd = median_ms(
                lambda: ext.bwd(u, delta, A, B, C, Dskip, z, bias, dout, x, out, None, True, False),
                args.runs,
            )
            shape = f"B={batch} D={D} L={L}"
            print(f"| {shape} | {name} | {fwd:.3f} | {bwd:.3f} |", flush=True)
            rows += [f"fwd {batch} {D} {L} {name} {fwd:.4f}", f"bwd {batch} {D} {L} {name} {bwd:.4f}"]
            del u, delta, z, dout, B, C, out, x
            torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"# mamba_ssm {mamba_version(args.src)} selective_scan_cuda on "
                    f"{torch.cuda.get_device_name()}, torch {torch.__version__}, median of "
                    f"{args.runs}\n")
            f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
