"""Shared fixtures of the FLAME stage tests: a tiny cohort, tokenizer, encoder, tables, policy."""

import numpy as np
import pytest

from flame_jax.data import SyntheticConfig, generate_cohort
from flame_jax.flame import (
    PromptConfig,
    PromptEncoder,
    build_policy,
    previous_visit_rows,
)
from flame_jax.policy import build_tiny_tokenizer, load_tokenizer
from tests.flame.helpers import POLICY


@pytest.fixture(scope="module")
def cohort():
    return generate_cohort(SyntheticConfig.tiny(patients=30))


@pytest.fixture(scope="module")
def dataset(cohort):
    return cohort.dataset


@pytest.fixture(scope="module")
def encoder(dataset, tmp_path_factory):
    words = [*list(dataset.med_vocab.titles), "Yes", "No", "Candidate", "drug:", "Answer:"]
    path = build_tiny_tokenizer(words, tmp_path_factory.mktemp("tok") / "tok")
    return PromptEncoder(load_tokenizer(path))


@pytest.fixture(scope="module")
def tables(dataset):
    rng = np.random.default_rng(0)
    return {
        "patient": rng.normal(size=(len(dataset.visits), 6)).astype(np.float32),
        "diagnosis": rng.normal(size=(len(dataset.diag_vocab), 4)).astype(np.float32),
        "procedure": rng.normal(size=(len(dataset.proc_vocab), 4)).astype(np.float32),
        "drug": rng.normal(size=(dataset.num_meds, 5)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def prompt_config():
    return PromptConfig(history=True, max_codes=2, code_names=False)


@pytest.fixture(scope="module")
def previous(dataset):
    return previous_visit_rows(dataset)


@pytest.fixture
def policy(encoder, tables):
    return build_policy(POLICY, encoder.tokenizer, tables, seed=0)
