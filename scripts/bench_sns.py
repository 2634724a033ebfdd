"""Sinkhorn–Newton–Sparse against log-domain Sinkhorn on the same problem and the same accuracy target.

    python scripts/bench_sns.py [--n 2000] [--eps-rel 0.01] [--tol 1e-9] [--dim 3] [--seed 0]

Two independent samples of n points, uniform in the unit cube, uniform weights, cost ‖x − y‖², ε = eps_rel·mean(C).
Both solvers stop at ‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁ < tol. An iteration is a full Sinkhorn sweep or one Newton step; both
cost O(n²), and `kernel_passes` counts the full passes over the n×n matrix each solver made, the fairer unit.
Target (issue 17): SNS needs ≥ 5× fewer iterations and less time. Prints one JSON line.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see recon/__init__.py)

import argparse
import json
import time

import torch
from _bench import cpu_pressure, machine, peak_rss_mb

from recon.ot import SinkhornConfig, SNSConfig, sinkhorn_log, sinkhorn_newton_sparse, squared_euclidean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--eps-rel", type=float, default=0.01)
    parser.add_argument("--tol", type=float, default=1e-9)
    parser.add_argument("--dim", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    conditions = machine()

    g = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.n, args.dim, generator=g, dtype=torch.float64)
    y = torch.rand(args.n, args.dim, generator=g, dtype=torch.float64)
    a = torch.full((args.n,), 1.0 / args.n, dtype=torch.float64)
    C = squared_euclidean(x, y)
    eps = args.eps_rel * float(C.mean())
    sinkhorn_newton_sparse(
        a[:50] * 40, a[:50] * 40, C[:50, :50], eps
    )  # first-call overheads out of the timings

    t0 = time.perf_counter()
    sns = sinkhorn_newton_sparse(a, a, C, eps, SNSConfig(tol=args.tol))
    sns_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sk = sinkhorn_log(a, a, C, eps, SinkhornConfig(tol=args.tol, max_iter=100_000))
    sk_s = time.perf_counter() - t0

    print(
        json.dumps(
            {
                "bench": "sns",
                "n": args.n,
                "dim": args.dim,
                "eps": eps,
                "eps_rel": args.eps_rel,
                "tol": args.tol,
                "sinkhorn_iterations": sk.iterations,
                "sns_iterations": sns.iterations,
                "sns_warmup_sweeps": sns.sinkhorn_iterations,
                "sns_newton_steps": sns.newton_iterations,
                "sns_cg_iterations": sns.cg_iterations,
                "sinkhorn_s": round(sk_s, 3),
                "sns_s": round(sns_s, 3),
                "iteration_ratio": round(sk.iterations / max(sns.iterations, 1), 2),
                "time_ratio": round(sk_s / sns_s, 2),
                "sinkhorn_kernel_passes": sk.kernel_passes,
                "sns_kernel_passes": sns.kernel_passes,
                "max_plan_diff": float((sk.plan - sns.plan).abs().max()),
                "l1_plan_diff": float((sk.plan - sns.plan).abs().sum()),
                "sinkhorn_error": float(sk.error),
                "sns_error": float(sns.error),
                "converged": [sk.converged, sns.converged],
                "target_met": sk.iterations >= 5 * sns.iterations and sns_s < sk_s,
                "threads": torch.get_num_threads(),
                "cpu_pressure_avg10_at_end": cpu_pressure(),
                "peak_rss_mb": peak_rss_mb(),
                **conditions,
            }
        )
    )


if __name__ == "__main__":
    main()
