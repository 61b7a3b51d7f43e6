#!/usr/bin/env python3
"""NumPy model of cuda::ssm_kernel_dplr's Cauchy sums and Woodbury step in float (complex64)
against the same computation in double, on LegS's DPLR form (N = 64, rank 1) with random C:
the relative error of the kernel that float sums would give (the reason the CUDA kernel sums in
double by default). Prints L, dt and the largest and median ||K_float - K_double|| / ||K_double||
over 8 draws of C.
    python3 tools/model_dplr_float_sums.py
"""
import numpy as np


def legs_dplr(N):
    n = np.arange(N)
    p = np.sqrt(1 + 2 * n)
    A = -(np.tril(p[:, None] * p[None, :]) - np.diag(n))
    P, B = np.sqrt(n + 0.5), np.sqrt(2 * n + 1.0)
    S = A + np.outer(P, P)  # normal: -1/2 I + skew-symmetric
    w, V = np.linalg.eig(-1j * (S + 0.5 * np.eye(N)))
    w = 1j * w - 0.5
    keep = np.argsort(w.imag)[::-1][: N // 2]
    Vh = V[:, keep]
    return w[keep], Vh.conj().T @ P, Vh.conj().T @ B


def khat(lam, P, B, C, dt, L, ctype):
    z = np.exp(-2j * np.pi * np.arange(L // 2 + 1) / L)
    d0, e = (2.0 / dt * (1 - z)).astype(ctype), (1 + z).astype(ctype)
    lam, P, B, C = (x.astype(ctype) for x in (lam, P, B, C))

    def cauchy(x, y):
        v, acc = (x * y).astype(ctype), np.zeros(len(z), ctype)
        for n in range(len(lam)):
            acc = acc + v[n] / (d0 - e * lam[n]) + np.conj(v[n]) / (d0 - e * np.conj(lam[n]))
        return acc

    kpp = cauchy(np.conj(P), P)
    return 2 * (cauchy(C, B) - e * cauchy(C, P) * cauchy(np.conj(P), B) / (1 + e * kpp))


def main():
    rng = np.random.default_rng(0)
    lam, P, B = legs_dplr(64)
    f32 = lambda x: x.astype(np.complex64).astype(np.complex128)
    for L in (1000, 4097, 16384):
        for dt in (1e-4, 1e-3, 1e-2, 1e-1):
            errs = []
            for _ in range(8):
                C = (rng.normal(size=32) + 1j * rng.normal(size=32)) * np.sqrt(0.5)
                args = (f32(lam), f32(P), f32(B), f32(C), float(np.float32(dt)), L)
                kd = np.fft.irfft(khat(*args, np.complex128), L)
                kf = np.fft.irfft(khat(*args, np.complex64).astype(np.complex128), L)
                errs.append(np.linalg.norm(kf - kd) / np.linalg.norm(kd))
            print(L, dt, max(errs), np.median(errs))

if __name__ == "__main__":
    main()
