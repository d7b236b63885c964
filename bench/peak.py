"""The machine's fp32 matmul peak, printed beside every wall time the benchmarks report (the machines here differ ~3×)."""

import math
import time


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """Best fp32 FLOP/s of an n³ torch matmul over `reps` tries (2n³ FLOPs each)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm the BLAS threads
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best
