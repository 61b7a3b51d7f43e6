#!/usr/bin/env python3
"""Golden files for ssmkit's S4 tests (tests/data/s4/), from SciPy and NumPy.

discretize.txt: ZOH and bilinear discretisations by scipy.signal.cont2discrete and the matrix
exponential by scipy.linalg.expm, for random stable systems and HiPPO-LegS.
hippo.txt: the HiPPO pairs (A, B) and the rank corrections P of the S4 repository's transition()
and rank_correction(), transcribed to NumPy, for small N.

Format: one record per line, `key count v0 v1 ...`, matrices row-major, values in repr().
Run: python3 tools/make_s4_goldens.py  (writes next to the tests; deterministic).
"""
import os

import numpy as np
import scipy
from scipy.linalg import expm
from scipy.signal import cont2discrete

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "s4")


def transition(measure, N):
    """The S4 repository's hippo.transition(), in NumPy."""
    if measure == "legt":
        Q = np.arange(N, dtype=np.float64)
        R = (2 * Q + 1) ** 0.5
        j, i = np.meshgrid(Q, Q)
        A = R[:, None] * np.where(i < j, (-1.0) ** (i - j), 1) * R[None, :]
        B = R[:, None]
        A = -A
        A *= 0.5
        B *= 0.5
    elif measure == "legs":
        q = np.arange(N, dtype=np.float64)
        col, row = np.meshgrid(q, q)
        r = 2 * q + 1
        M = -(np.where(row >= col, r, 0) - np.diag(q))
        T = np.sqrt(np.diag(2 * q + 1))
        A = T @ M @ np.linalg.inv(T)
        B = np.diag(T)[:, None].copy()
    elif measure == "lagt":
        A = np.eye(N) / 2 - np.tril(np.ones((N, N)))
        B = np.ones((N, 1))
    elif measure == "fout":
        freqs = np.arange(N // 2)
        d = np.stack([np.zeros(N // 2), freqs], axis=-1).reshape(-1)[1:]
        A = np.pi * (-np.diag(d, 1) + np.diag(d, -1))
        B = np.zeros(N)
        B[0::2] = 2**0.5
        B[0] = 1
        A = A - B[:, None] * B[None, :]
        B = B[:, None]
    else:
        raise ValueError(measure)
    return A, B[:, 0]


def rank_correction(measure, N):
    """The S4 repository's hippo.rank_correction(), in NumPy: P of shape (rank, N)."""
    if measure == "legs":
        P = np.sqrt(0.5 + np.arange(N))[None, :]
    elif measure == "legt":
        P = np.sqrt(1 + 2 * np.arange(N, dtype=np.float64))
        P0 = P.copy()
        P0[0::2] = 0.0
        P1 = P.copy()
        P1[1::2] = 0.0
        P = np.stack([P0, P1], axis=0) * 2**-0.5
    elif measure == "lagt":
        P = 0.5**0.5 * np.ones((1, N))
    elif measure == "fout":
        P = np.zeros(N)
        P[0::2] = 2**0.5
        P[0] = 1
        P = P[None, :]
    else:
        raise ValueError(measure)
    return P


def record(f, key, values):
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    f.write(f"{key} {values.size} " + " ".join(repr(float(v)) for v in values) + "\n")


def discretize_cases():
    rng = np.random.default_rng(20261125)
    cases = []
    for name, N, dt in [("rand4", 4, 0.1), ("rand7", 7, 0.37), ("rand12", 12, 0.013)]:
        # A random system shifted to be stable, not symmetric and not normal.
        A = rng.standard_normal((N, N)) / np.sqrt(N)
        A -= (np.max(np.linalg.eigvals(A).real) + 0.3) * np.eye(N)
        B = rng.standard_normal(N)
        cases.append((name, A, B, dt))
    A, B = transition("legs", 8)
    cases.append(("legs8", A, B, 0.05))
    A, B = transition("legt", 6)
    cases.append(("legt6", A, B, 0.2))
    return cases


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "discretize.txt"), "w") as f:
        f.write(f"# scipy {scipy.__version__}, numpy {np.__version__}; see tools/make_s4_goldens.py\n")
        for name, A, B, dt in discretize_cases():
            N = A.shape[0]
            C = np.ones((1, N))
            D = np.zeros((1, 1))
            record(f, f"{name}.dt", [dt])
            record(f, f"{name}.A", A)
            record(f, f"{name}.B", B)
            record(f, f"{name}.expm", expm(dt * A))
            for method in ["zoh", "bilinear"]:
                Ad, Bd, _, _, _ = cont2discrete((A, B[:, None], C, D), dt, method=method)
                record(f, f"{name}.{method}.A", Ad)
                record(f, f"{name}.{method}.B", Bd)
    with open(os.path.join(OUT, "hippo.txt"), "w") as f:
        f.write("# the S4 repository's transition() and rank_correction() in NumPy\n")
        for measure in ["legs", "legt", "lagt", "fout"]:
            for N in [4, 6]:
                A, B = transition(measure, N)
                record(f, f"{measure}{N}.A", A)
                record(f, f"{measure}{N}.B", B)
                record(f, f"{measure}{N}.P", rank_correction(measure, N).T)


if __name__ == "__main__":
    main()
