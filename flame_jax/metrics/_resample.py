"""SafeDrug's bootstrap resampling of test patients, expressed as visit weights."""

import functools

import jax
import jax.numpy as jnp

from flame_jax.arraytypes import Array, ArrayLike, Float, Int, PRNGKeyArray

_STATIC = ("rounds", "fraction", "replace", "num_patients")
__all__ = ["bootstrap_weights"]


def _sample_size(num_patients: int, fraction: float, replace: bool, rounds: int) -> int:
    if isinstance(num_patients, bool) or not isinstance(num_patients, int) or num_patients < 0:
        raise ValueError(f"num_patients must be a non-negative int; got {num_patients!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive int; got {rounds!r}")
    if not fraction > 0:
        raise ValueError(f"fraction must be > 0; got {fraction!r}")
    # Python's round (half to even), exactly as SafeDrug's `round(len(data_test) * 0.8)`.
    size = round(fraction * num_patients)
    if not replace and size > num_patients:
        raise ValueError(
            f"fraction={fraction!r} draws {size} of {num_patients} patients: needs replace=True"
        )
    return size


@functools.partial(jax.jit, static_argnames=_STATIC)
def bootstrap_weights(
    patient: Int[ArrayLike, " batch"],
    *,
    key: PRNGKeyArray,
    rounds: int = 10,
    fraction: float = 0.8,
    replace: bool = True,
    num_patients: int,
) -> Float[Array, "rounds batch"]:
    """Visit weights of SafeDrug's bootstrap: each round resamples patients, not visits.

    Each round draws ``n = round(fraction · num_patients)`` patient ids from ``0 .. P-1`` (with
    replacement by default, like SafeDrug's ``np.random.choice(data_test, round(0.8 · P),
    replace=True)``). A visit's weight in that round is how many times its patient was drawn, so a
    weighted metric over visits equals the metric over the resampled test set; padding rows
    (``patient == -1``, or any id outside ``0 .. P-1``) get weight 0.

    ``rounds``, ``num_patients``, ``fraction`` and ``replace`` fix shapes: they are static
    arguments of the ``jax.jit`` this function is wrapped in, and must be static in any outer
    jit too: ``jax.jit(bootstrap_weights, static_argnames=("rounds", "num_patients", "replace",
    "fraction"))``.

    Args:
        patient: patient id of each visit (row group), ``-1`` for padding rows, shape ``[batch]``.
        key: PRNG key; the same key gives the same weights.
        rounds: number of bootstrap rounds (SafeDrug: 10).
        fraction: fraction of patients drawn per round (SafeDrug: 0.8); ``round`` is Python's
            (half to even). With ``replace=False`` it must not exceed 1.
        replace: draw patients with replacement (SafeDrug) or as a subset without replacement.
        num_patients: number of patients ``P`` (the ids are ``0 .. P-1``).

    Returns:
        Visit weights per round, float32, shape ``[rounds, batch]``; each row sums over patients
        to ``n`` draws.

    Raises:
        ValueError: for a negative ``num_patients``, ``rounds < 1``, ``fraction <= 0``, or more
            draws than patients without replacement.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> patient = jnp.array([0, 0, 1, 2, 3, -1])  # patient 0 owns two visits
        >>> w = bootstrap_weights(patient, key=jax.random.key(0), rounds=3, num_patients=4)
        >>> print(w.shape, w[:, -1])  # the padding row never counts
        (3, 6) [0. 0. 0.]
        >>> print(w[:, 1:5].sum(axis=1))  # round(0.8 * 4) = 3 draws per round
        [3. 3. 3.]

    References:
        Yang et al., "SafeDrug", IJCAI 2021 (evaluation protocol). FLAME, arXiv:2505.20218, 2025.
    """
    sample_size = _sample_size(num_patients, fraction, replace, rounds)
    patient = jnp.asarray(patient, dtype=jnp.int32)
    batch = patient.shape[0]
    if num_patients == 0 or sample_size == 0:
        return jnp.zeros((rounds, batch), jnp.float32)

    if replace:
        drawn = jax.random.randint(key, (rounds, sample_size), 0, num_patients)
    else:
        draw = lambda k: jax.random.choice(k, num_patients, (sample_size,), replace=False)
        drawn = jax.vmap(draw)(jax.random.split(key, rounds))
    round_index = jnp.arange(rounds)[:, None]
    counts = jnp.zeros((rounds, num_patients), jnp.float32).at[round_index, drawn].add(1.0)
    valid = (patient >= 0) & (patient < num_patients)
    per_visit = jnp.take(counts, jnp.clip(patient, 0, num_patients - 1), axis=1)
    return jnp.where(valid[None, :], per_visit, 0.0)
