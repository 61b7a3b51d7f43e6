#!/usr/bin/env python3
"""Plots the learning curve CSV that train_selective_copying writes with --csv (step, loss,
accuracy, seconds): the training loss (log scale, left) and the held-out accuracy (right) against
the step. Usage: tools/plot_learning_curve.py CURVE.csv OUT.png [--title TEXT]"""
import argparse
import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("png")
    ap.add_argument("--title", default="Selective Copying, 2-layer Mamba trained with ssmkit")
    args = ap.parse_args()
    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{args.csv}: no rows")
    step = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    acc = [100 * float(r["accuracy"]) for r in rows]
    minutes = float(rows[-1]["seconds"]) / 60

    fig, left = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    left.plot(step, loss, color="tab:blue", label="training loss")
    left.set_yscale("log")
    left.set_xlabel("step")
    left.set_ylabel("training loss (cross-entropy)", color="tab:blue")
    right = left.twinx()
    right.plot(step, acc, color="tab:red", label="held-out accuracy")
    right.axhline(99, color="tab:red", linestyle=":", linewidth=1)
    right.set_ylim(0, 100)
    right.set_ylabel("held-out accuracy (%)", color="tab:red")
    left.set_title(f"{args.title}\nfinal accuracy {acc[-1]:.2f}% at step {step[-1]} "
                   f"({minutes:.0f} min)", fontsize=10)
    left.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.png)


if __name__ == "__main__":
    main()
