"""A local flame_jax LLM (the built-in tiny random decoder) behind the server, in a round."""

import httpx
import pytest

from flame_jax.consensus._members import ChatConfig, ChatMember, generation_messages
from flame_jax.consensus._protocol import run_round
from flame_jax.consensus._vignettes import Vignette
from flame_jax.policy import write_tiny_model
from flame_jax.serve import PolicyBackend, create_app, serve_in_thread
from tests.consensus.protocol_helpers import recommender_member, vignettes, vocab

pytestmark = pytest.mark.slow  # live servers on loopback (make test-fast skips them)


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("m") / "tiny", ["Acetaminophen"])


@pytest.fixture(scope="module")
def policy(path):
    return PolicyBackend(path)


@pytest.mark.slow
def test_policy_backend_serves_greedy_completions_deterministically(policy, path):
    (full,) = vignettes("test", 1)
    # a short prompt for a fast CPU compile; the recommenders find the visit by its Case ID
    v = Vignette(id=full.id, text=f"Case ID: {full.id}", gold=full.gold, visit_id=full.visit_id)
    messages = generation_messages(v)
    direct = policy.complete(messages, max_tokens=12, temperature=0.0, seed=0)
    assert isinstance(direct, str)
    with serve_in_thread(create_app(policy, model="tiny")) as url:
        body = {"model": "tiny", "messages": messages, "max_tokens": 12, "temperature": 0}
        r = httpx.post(f"{url}/chat/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == direct
        # an untrained model answers garbage: a counted failure, the round goes on
        member = ChatMember(
            "tiny", url, pool="local", config=ChatConfig(timeout_s=60.0, max_tokens=12)
        )
        ensemble = [recommender_member("oracle"), recommender_member("mf", "most-frequent"), member]
        result = run_round(v, ensemble, vocab(), seed=0)
        tiny = result.members[2]
        assert tiny.failure is None or tiny.failure.startswith("parse")
        assert result.answer is not None
    with pytest.raises(ValueError, match="tokens, more than 4"):
        PolicyBackend(path, max_prompt_tokens=4).complete(
            messages, max_tokens=4, temperature=0.0, seed=0
        )
    with pytest.raises(ValueError, match="max_tokens must be in"):
        PolicyBackend(path, max_new_tokens=8).complete(
            messages, max_tokens=9, temperature=0.0, seed=0
        )
