"""L-BFGS for maximising the concave sparse-OT duals, in torch with a backtracking (Armijo) line search.

Why not a library: `torch.optim.LBFGS`'s strong-Wolfe search returns a zero step at the kinks these duals have
(top-k ties) and stops far from the optimum; scipy's L-BFGS-B handles them but, called from torch code, its BLAS
threads and torch's OpenMP threads contend for the cores (50× slower on 2 shared cores). Backtracking only needs
the function to increase, which holds across kinks, and a memory reset recovers when a direction goes bad.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _direction(grad: torch.Tensor, s_hist: list[torch.Tensor], y_hist: list[torch.Tensor]) -> torch.Tensor:
    """Two-loop recursion: the L-BFGS approximation of (−∇²)⁻¹ ∇ for a concave function (an ascent direction)."""
    q = grad.clone()
    alphas = []
    for s, y in zip(reversed(s_hist), reversed(y_hist)):
        rho = 1.0 / torch.dot(y, s)
        alpha = rho * torch.dot(s, q)
        q -= alpha * y
        alphas.append((rho, alpha))
    if s_hist:
        q *= torch.dot(s_hist[-1], y_hist[-1]) / torch.dot(y_hist[-1], y_hist[-1])
    for (s, y), (rho, alpha) in zip(zip(s_hist, y_hist), reversed(alphas)):
        q += (alpha - rho * torch.dot(y, q)) * s
    return q


def lbfgs_maximize(
    value_and_grad: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    z0: torch.Tensor,
    max_iter: int,
    tol: float,
    history: int = 20,
    c1: float = 1e-4,
    max_halvings: int = 40,
) -> tuple[torch.Tensor, int]:
    """argmax of a concave function from z0; stops when max |gradient| ≤ tol, after max_iter iterations, or
    when even a fresh steepest-ascent step finds no increase (the optimum up to rounding). Returns (z, iterations).
    """
    z = z0.detach().clone()
    value, grad = value_and_grad(z)
    s_hist: list[torch.Tensor] = []
    y_hist: list[torch.Tensor] = []
    it = 0
    while it < max_iter and float(grad.abs().max()) > tol:
        direction = _direction(grad, s_hist, y_hist)
        slope = float(torch.dot(grad, direction))
        if not slope > 0:  # the memory no longer describes the curvature: start over from steepest ascent
            s_hist.clear()
            y_hist.clear()
            direction = grad.clone()
            slope = float(torch.dot(grad, direction))
        t = 1.0 if s_hist else min(1.0, 1.0 / float(grad.abs().sum()))
        for _ in range(max_halvings):
            z_new = z + t * direction
            value_new, grad_new = value_and_grad(z_new)
            if float(value_new - value) >= c1 * t * slope:
                break
            t *= 0.5
        else:
            if not s_hist:
                break  # no increase even along the gradient: stuck at rounding level
            s_hist.clear()
            y_hist.clear()
            continue
        s, y = z_new - z, grad - grad_new  # y = −(∇new − ∇old): curvature of the negated (convex) function
        if float(torch.dot(s, y)) > 1e-12 * float(torch.dot(y, y)):
            s_hist.append(s)
            y_hist.append(y)
            if len(s_hist) > history:
                s_hist.pop(0)
                y_hist.pop(0)
        z, value, grad = z_new, value_new, grad_new
        it += 1
    return z, it
