"""The synthetic cohort's drug SMILES (salts, bare metal ions) for the graph tests."""

import pytest

from flame_jax.data import SyntheticConfig, generate_cohort


@pytest.fixture(scope="session")
def med_vocab():
    return generate_cohort(SyntheticConfig.tiny()).dataset.med_vocab
