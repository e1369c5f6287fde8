"""Synthetic cohorts shared by the data tests (generated once per test module)."""

import pytest

from flame_jax.data import SyntheticConfig, generate_cohort


@pytest.fixture(scope="module")
def tiny():
    return generate_cohort(SyntheticConfig.tiny())


@pytest.fixture(scope="module")
def medium():
    """Tiny vocabularies, more patients: enough visits for the statistical checks."""
    return generate_cohort(SyntheticConfig.tiny(patients=800))
