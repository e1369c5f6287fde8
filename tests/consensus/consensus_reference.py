"""Float64 oracles for flame_jax.consensus, written from consensus_spec.md with plain loops.

Vancouver (§2.3-2.6) is written edge by edge over Python dicts, the chemistry functions (§3.2-3.5)
over Python sets, and the ensemble metrics (§3.6) from their formulas. Nothing here imports
flame_jax, so these are independent of the implementation under test.
"""

import itertools
import math

import numpy as np


def reference_vancouver(
    grades,
    mask,
    *,
    iterations=20,
    eps=1e-4,
    leave_one_out=True,
    variance_floor=None,
    debias=False,
    init_variance=1.0,
):
    """Vancouver on a dense [R, I] grade matrix; edges are where ``mask`` is true.

    Returns a dict of float64 arrays: grade, item_variance [I]; reviewer_variance,
    reviewer_quality, reviewer_bias [R]. Items / reviewers without edges get 0.
    """
    grades = np.asarray(grades, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    n_rev, n_items = grades.shape
    reviewers_of = {i: [r for r in range(n_rev) if mask[r, i]] for i in range(n_items)}
    items_of = {r: [i for i in range(n_items) if mask[r, i]] for r in range(n_rev)}
    edges = [(r, i) for r in range(n_rev) for i in range(n_items) if mask[r, i]]

    # Reviewer -> item messages: (grade, variance) per edge.
    msg_grade = {e: grades[e] for e in edges}
    msg_var = dict.fromkeys(edges, init_variance)
    mu, s = {}, {}
    for _ in range(iterations):
        # (a) item -> reviewer
        for r, i in edges:
            include = reviewers_of[i]
            if leave_one_out and len(include) >= 2:
                include = [k for k in include if k != r]
            w = np.array([1.0 / (eps + msg_var[k, i]) for k in include])
            w = w / w.sum()
            mu[r, i] = float(sum(wk * msg_grade[k, i] for wk, k in zip(w, include, strict=True)))
            s[r, i] = float(sum(wk * wk * msg_var[k, i] for wk, k in zip(w, include, strict=True)))
        # (b) reviewer -> item
        new_grade, new_var = {}, {}
        for r, i in edges:
            include = items_of[r]
            if leave_one_out and len(include) >= 2:
                include = [j for j in include if j != i]
            c = np.array([1.0 / (eps + s[r, j]) for j in include])
            if debias:
                b = sum(cj * (grades[r, j] - mu[r, j]) for cj, j in zip(c, include, strict=True))
                b /= c.sum()
            else:
                b = 0.0
            var = sum(
                cj * (grades[r, j] - b - mu[r, j]) ** 2 for cj, j in zip(c, include, strict=True)
            )
            var /= c.sum()
            if variance_floor is not None:
                var = max(var, variance_floor)
            new_grade[r, i] = grades[r, i] - b
            new_var[r, i] = var
        msg_grade, msg_var = new_grade, new_var

    q = np.zeros(n_items)
    item_var = np.zeros(n_items)
    for i in range(n_items):
        if not reviewers_of[i]:
            continue
        w = np.array([1.0 / (eps + msg_var[k, i]) for k in reviewers_of[i]])
        w = w / w.sum()
        q[i] = sum(wk * msg_grade[k, i] for wk, k in zip(w, reviewers_of[i], strict=True))
        item_var[i] = sum(wk * wk * msg_var[k, i] for wk, k in zip(w, reviewers_of[i], strict=True))

    v = np.zeros(n_rev)
    bias = np.zeros(n_rev)
    for r in range(n_rev):
        if not items_of[r]:
            continue
        c = np.array([1.0 / (eps + s[r, j]) for j in items_of[r]])
        if debias:
            bias[r] = (
                sum(cj * (grades[r, j] - mu[r, j]) for cj, j in zip(c, items_of[r], strict=True))
                / c.sum()
            )
        v[r] = (
            sum(
                cj * (grades[r, j] - bias[r] - q[j]) ** 2
                for cj, j in zip(c, items_of[r], strict=True)
            )
            / c.sum()
        )

    observed = [grades[e] for e in edges]
    sigma = float(np.std(observed)) * math.sqrt(2.0) if observed else 0.0
    rho = np.zeros(n_rev)
    for r in range(n_rev):
        if not items_of[r]:
            continue
        rho[r] = max(0.0, 1.0 - math.sqrt(v[r]) / sigma) if sigma > 0 else 1.0
    return {
        "grade": q,
        "item_variance": item_var,
        "reviewer_variance": v,
        "reviewer_quality": rho,
        "reviewer_bias": bias,
    }


def random_graph(rng, n_rev, n_items, *, density=0.6, peer_review=False):
    """Random grades in [0, 1] and a random mask (zero diagonal when ``peer_review``)."""
    grades = rng.random((n_rev, n_items))
    mask = rng.random((n_rev, n_items)) < density
    if peer_review:
        np.fill_diagonal(mask, False)
    grades = np.where(mask, grades, np.nan)  # missing reviews are not grades
    return grades, mask


# ---------------------------------------------------------------- chemistry (spec §3.2-3.5)


def reference_cost_q(models, q, a, scale=10.0):
    """cost_Q over the model indices ``models``: rank by quality desc, ties by index."""
    ranked = sorted(models, key=lambda m: (-q[m], m))
    return sum((1.0 / i) * (1 - q[m] / scale) * (1 - a[m]) for i, m in enumerate(ranked, start=1))


def reference_mig(q, a, tau=0.5):
    """(C)'s Model Interaction Graph, built literally by breadth-first search from the pool.

    Returns a list of (node set, used set, cost) in insertion order.
    """
    pool = frozenset(range(len(q)))
    nodes, seen, queue = [], set(), [pool]
    while queue:
        current = queue.pop(0)
        if current in seen:
            continue
        seen.add(current)
        used = frozenset(m for m in current if a[m] > tau)
        cost = reference_cost_q(used, q, a) if used else 1.0
        nodes.append((current, used, cost))
        for m in used if used else current:
            child = current - {m}
            if child not in seen:
                queue.append(child)
    return nodes


def reference_mig_cost(nodes, x):
    """Cost of ``x`` through the first covering node Y with used(Y) <= x <= Y."""
    x = frozenset(x)
    for node, used, cost in nodes:
        if used <= x <= node:
            return cost
    raise AssertionError(f"no covering node for {sorted(x)}")


def _subsets(items):
    items = sorted(items)
    for k in range(len(items) + 1):
        yield from (frozenset(c) for c in itertools.combinations(items, k))


def reference_cheme(q, a, tau=0.5):
    """The released ChemE loop over every context, with MIG look-ups; dict (a, b) -> chem."""
    nodes = reference_mig(q, a, tau)
    n = len(q)
    pool = frozenset(range(n))
    table = {}
    for x in _subsets(pool):
        c_x = reference_mig_cost(nodes, x)
        if c_x == 0:
            continue
        for i, j in itertools.combinations(sorted(pool - x), 2):
            c_a = reference_mig_cost(nodes, x | {i})
            c_b = reference_mig_cost(nodes, x | {j})
            c_ab = reference_mig_cost(nodes, x | {i, j})
            if c_a == 0 or c_b == 0 or c_ab == 0:
                continue
            d = min(1.0, abs(c_ab - c_a - c_b + c_x) / c_ab)
            table[i, j] = max(table.get((i, j), 0.0), d)
            table[j, i] = table[i, j]
    return table


def reference_informative(q, a, tau=0.5):
    """Signed Shapley-weighted interaction over contexts with a used model; dict (a, b) -> chem.

    Sign: positive = synergy (the cost falls), i.e. minus the weighted mean of the second
    difference.
    """
    n = len(q)
    used = {m for m in range(n) if a[m] > tau}

    def cost(x):
        return reference_cost_q(x & used, q, a)

    table = {}
    for i, j in itertools.combinations(range(n), 2):
        num = den = 0.0
        for x in _subsets(set(range(n)) - {i, j}):
            if not x & used:
                continue
            s = len(x)
            w = math.factorial(s) * math.factorial(n - s - 2) / math.factorial(n - 1)
            delta = cost(x | {i, j}) - cost(x | {i}) - cost(x | {j}) + cost(x)
            num += w * delta
            den += w
        if den > 0:
            table[i, j] = table[j, i] = -num / den
    return table


def reference_loss(x, chem, n, alpha=0.5, beta=0.5):
    """(C)'s loss with T and the greedy max-cut I* (degree ties by index); inf if infeasible."""

    def c(i, j):
        return chem.get((i, j), 0.0)

    total = sum(c(i, j) for i, j in itertools.combinations(range(n), 2))
    degree = {s: sum(c(s, t) for t in range(n) if t != s) for s in range(n)}
    order = sorted(range(n), key=lambda s: (-degree[s], s))
    side_a, side_b = order[::2], order[1::2]
    cut = sum(c(i, j) for i in side_a for j in side_b)
    intra = sum(c(i, j) for i, j in itertools.combinations(sorted(x), 2))
    inter = sum(c(i, j) for i in x for j in range(n) if j not in x)
    slack = -1e-6 * max(1.0, total)
    if total - intra < slack or cut - inter < slack:
        return math.inf
    return alpha * (cut - inter) + (1 - alpha) * (total - intra) + beta * len(x)


def reference_recommend(chem, n, *, size=None, min_size=2, accuracy=None, latency=None, tol=1e-6):
    """Brute force over subsets with the documented tie-breaks; returns a sorted tuple or None."""
    sizes = [size] if size is not None else range(min_size, n + 1)
    cands = [c for k in sizes for c in itertools.combinations(range(n), k)]
    losses = {c: reference_loss(set(c), chem, n) for c in cands}
    best = min(losses.values())
    if not math.isfinite(best):
        return None
    pool = [c for c in cands if losses[c] <= best + tol * max(1.0, abs(best))]
    if accuracy is not None:
        top = max(np.mean([accuracy[m] for m in c]) for c in pool)
        pool = [c for c in pool if np.mean([accuracy[m] for m in c]) >= top - tol]
    if latency is not None:
        low = min(np.median([latency[m] for m in c]) for c in pool)
        pool = [c for c in pool if np.median([latency[m] for m in c]) <= low + tol * max(1, low)]
    return min(pool)  # lexicographically smallest sorted index tuple


# ---------------------------------------------------------------- ensemble metrics (spec §3.6)


def reference_effectiveness(acc, members, mask):
    correct = valid = 0
    for i in range(acc.shape[1]):
        votes = [acc[m, i] for m in range(acc.shape[0]) if members[m] and mask[m, i]]
        if not votes:
            continue
        valid += 1
        correct += float(np.mean(votes) > 0.5)
    return correct / valid if valid else 0.0


def reference_hypervolume(points):
    """Area of the union of [0, x] x [0, y] over the points, strip by strip along x."""
    pts = [(min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)) for x, y in points]
    xs = sorted({0.0} | {x for x, _ in pts})
    area = 0.0
    for lo, hi in itertools.pairwise(xs):
        heights = [y for x, y in pts if x >= hi]
        area += (hi - lo) * (max(heights) if heights else 0.0)
    return area


def reference_complementarity(points, alpha=0.5):
    pts = [(min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)) for x, y in points]
    m = len(pts)
    rao = 0.0
    if m >= 2:
        rao = sum(math.dist(p, r) for p in pts for r in pts) / (m * m) / math.sqrt(2)
    return alpha * reference_hypervolume(pts) + (1 - alpha) * min(rao, 1.0)
