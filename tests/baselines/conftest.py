"""A tiny synthetic cohort shared by the baseline tests (generated once per session)."""

import pytest

from flame_jax.data import SyntheticConfig, generate_cohort, save_dataset


@pytest.fixture(scope="session")
def tiny_dataset():
    return generate_cohort(SyntheticConfig.tiny()).dataset


@pytest.fixture(scope="session")
def tiny_dir(tiny_dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("baselines") / "dataset"
    save_dataset(tiny_dataset, path)
    return path
