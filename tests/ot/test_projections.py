import pytest
import torch

from recon.ot import project_ksparse_simplex, project_simplex

X = torch.tensor([0.5, 0.4, 0.3, -0.1], dtype=torch.float64)


@pytest.mark.parametrize(
    "k, expected",
    [
        # k = 1: keep {0.5}; projecting one value onto the 1-simplex gives 1.
        (1, [1.0, 0.0, 0.0, 0.0]),
        # k = 2: keep {0.5, 0.4}, sum 0.9; τ = (0.9 − 1)/2 = −0.05, so t = (0.55, 0.45), both > 0.
        (2, [0.55, 0.45, 0.0, 0.0]),
        # k = 3: keep {0.5, 0.4, 0.3}, sum 1.2; τ = (1.2 − 1)/3 = 1/15, so t = (13/30, 10/30, 7/30), all > 0.
        (3, [13 / 30, 10 / 30, 7 / 30, 0.0]),
        # k = 4: the plain simplex projection; with −0.1 in, τ = (1.1 − 1)/4 = 0.025 > −0.1, so −0.1 leaves the
        # support and τ = 1/15 as for k = 3.
        (4, [13 / 30, 10 / 30, 7 / 30, 0.0]),
    ],
)
def test_ksparse_projection_of_the_methods_example(k, expected):
    t = project_ksparse_simplex(X, k)
    torch.testing.assert_close(t, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)


def test_ksparse_projection_keeps_the_largest_whatever_their_order():
    t = project_ksparse_simplex(X[[3, 1, 0, 2]], 2)
    torch.testing.assert_close(
        t, torch.tensor([0.0, 0.45, 0.55, 0.0], dtype=torch.float64), rtol=0, atol=1e-15
    )


def test_simplex_projection_satisfies_kkt_along_any_dim():
    """t = [x − τ]₊ is the projection iff Σt = 1 and every kept entry is shifted by the same τ ≥ every dropped x."""
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = project_simplex(x, dim=0)
    torch.testing.assert_close(t.sum(0), torch.ones(5, dtype=torch.float64))
    assert bool((t >= 0).all())
    for j in range(5):
        kept = t[:, j] > 0
        tau = x[kept, j] - t[kept, j]
        torch.testing.assert_close(tau, tau[:1].expand_as(tau))
        assert bool((x[~kept, j] <= tau[0] + 1e-12).all())


def test_ksparse_projection_has_k_nonzeros_per_column():
    x = torch.randn(9, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.05
    t = project_ksparse_simplex(x, 3, dim=0)
    assert (t > 0).sum(0).tolist() == [3] * 6  # small spread: all three kept entries stay positive
    torch.testing.assert_close(t.sum(0), torch.ones(6, dtype=torch.float64))
