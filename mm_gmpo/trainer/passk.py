"""pass@k: the unbiased estimator of Chen et al. 2021 (Codex, arXiv 2107.03374) from n samples per problem.

With ``c`` of ``n`` samples correct, pass@k = 1 - C(n-c, k) / C(n, k), the chance that k samples drawn without
replacement from the n contain a correct one. The ratio of binomials is computed as the product
prod_{i=n-c+1}^{n} (1 - k/i), which never forms the (huge) binomials themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` correct among ``n`` samples (1 <= k <= n, 0 <= c <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every draw of k contains a correct sample
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def mean_pass_at_k(correct: Iterable[int], n: int, ks: Sequence[int]) -> dict[int, float]:
    """pass@k for every k in ``ks``, averaged over problems (``correct``: correct samples per problem)."""
    counts = list(correct)
    if not counts:
        return {k: 0.0 for k in ks}
    return {k: sum(pass_at_k(n, c, k) for c in counts) / len(counts) for k in ks}


def summarize_samples(verdicts: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[str, float]:
    """``{"pass@k": ..., "avg@n": ...}`` of per-problem sample verdicts (every problem has n samples).

    avg@n is the mean accuracy over all samples (equal to pass@1; reported under its own name as papers do)."""
    n = len(verdicts[0]) if verdicts else 1
    if any(len(v) != n for v in verdicts):
        raise ValueError("summarize_samples: every problem needs the same number of samples")
    counts = [sum(bool(x) for x in v) for v in verdicts]
    out = {f"pass@{k}": value for k, value in mean_pass_at_k(counts, n, ks).items()}
    out[f"avg@{n}"] = sum(counts) / (n * len(counts)) if counts else 0.0
    return out
