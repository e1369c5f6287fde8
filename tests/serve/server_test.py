"""The OpenAI-compatible server over a real socket, and the REMOTE strategy end to end."""

import json
import threading
import time

import httpx
import jax
import pytest

from flame_jax.cli._consensus import build_backends
from flame_jax.consensus._members import ChatConfig, ChatMember
from flame_jax.consensus._protocol import RoundConfig
from flame_jax.consensus._strategies import EvaluationConfig, evaluate_strategies
from flame_jax.data import save_dataset
from flame_jax.serve import RecommenderBackend, create_app, serve_in_thread
from tests.consensus.protocol_helpers import cohort, recommender_member, vignettes, vocab

pytestmark = pytest.mark.slow  # live servers on loopback (make test-fast skips them)

KEY = {"Authorization": "Bearer sk-test"}


class Echo:
    def __init__(self):
        self.calls = []

    def complete(self, messages, *, max_tokens, temperature, seed):
        self.calls.append((messages, max_tokens, temperature, seed))
        return "echo: " + messages[-1]["content"]


class Gate:
    """Blocks every completion until released; counts the ones that started."""

    def __init__(self):
        self.release = threading.Event()
        self.started = 0
        self.lock = threading.Lock()

    def complete(self, messages, *, max_tokens, temperature, seed):
        with self.lock:
            self.started += 1
        self.release.wait(timeout=20)
        return "done"


class Garbage:
    def complete(self, messages, *, max_tokens, temperature, seed):
        return "lorem ipsum dolor sit amet, consectetur adipiscing elit"


class Broken:
    def complete(self, messages, *, max_tokens, temperature, seed):
        raise RuntimeError("secret internal detail")


@pytest.fixture(scope="module")
def server():
    echo, gate = Echo(), Gate()
    app = create_app(
        {"echo": echo, "gate": gate, "broken": Broken()},
        api_key="sk-test",
        max_request_bytes=2000,
        max_concurrency=1,
        max_queue=1,
    )
    with serve_in_thread(app) as url:
        assert url.startswith("http://127.0.0.1:")
        yield url, echo, gate
        gate.release.set()


def chat(url, body, headers=KEY, **kw):
    return httpx.post(f"{url}/chat/completions", json=body, headers=headers, timeout=10, **kw)


def test_chat_completion_in_the_openai_schema(server):
    url, echo, _ = server
    body = {
        "model": "echo",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}, {"text": " there"}]},
        ],
        "max_completion_tokens": 7,
        "temperature": 1,
        "seed": 3,
        "top_p": 0.9,  # accepted; Echo takes no top_p, so it is not passed on
    }  # fmt: skip
    r = chat(url, body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion" and out["model"] == "echo"
    assert out["id"].startswith("chatcmpl-")
    (choice,) = out["choices"]
    assert choice["message"] == {"role": "assistant", "content": "echo: hello there"}
    assert choice["finish_reason"] == "stop" and choice["index"] == 0
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + 3
    messages, max_tokens, temperature, seed = echo.calls[-1]
    assert messages[0] == {"role": "system", "content": "be brief"}
    assert (max_tokens, temperature, seed) == (7, 1.0, 3)


def test_models_endpoint(server):
    url, _, _ = server
    r = httpx.get(f"{url}/models", headers=KEY)
    assert r.status_code == 200
    data = r.json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["echo", "gate", "broken"]
    assert all(m["object"] == "model" for m in data["data"])


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "sk-test"}]
)
def test_api_key_is_checked_on_every_request(server, headers):
    url, _, _ = server
    for r in [
        httpx.get(f"{url}/models", headers=headers),
        chat(url, {"model": "echo", "messages": [{"role": "user", "content": "x"}]}, headers),
        httpx.get(url.replace("/v1", "/anything"), headers=headers),
    ]:
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"


def test_body_too_large_is_413(server):
    url, _, _ = server
    big = {"model": "echo", "messages": [{"role": "user", "content": "x" * 5000}]}
    r = chat(url, big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit applies to the bytes received
        for _ in range(10):
            yield b"x" * 500

    r = httpx.post(f"{url}/chat/completions", content=chunks(), headers=KEY, timeout=10)
    assert r.status_code == 413


def body(**fields) -> str:
    return json.dumps({"model": "echo", "messages": [{"role": "user", "content": "x"}], **fields})


@pytest.mark.parametrize(
    ("content", "status", "message"),
    [
        ("{not json", 400, "not valid JSON"),
        ('{"model": "echo"}', 422, "messages"),
        (body(messages=[]), 422, "messages"),
        (body(messages=[{"role": "wizard", "content": "x"}]), 422, "role"),
        (body(temperature=9), 422, "temperature"),
        (body(max_tokens=0), 422, "max_tokens"),
        (body(stream=True), 400, "streaming"),
        (body(n=2), 400, "n = 1"),
        (body(model="gpt-9"), 404, "not served"),
        ("[1, 2]", 422, "body"),
    ],
)
def test_malformed_requests_get_clear_json_errors(server, content, status, message):
    url, _, _ = server
    r = httpx.post(
        f"{url}/chat/completions",
        content=content.encode(),
        headers={**KEY, "Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert message in err["message"] and err["type"] == "invalid_request_error"


def test_backend_errors_are_500_without_internals(server):
    url, _, _ = server
    r = chat(url, {"model": "broken", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 500 and "secret" not in r.text
    assert r.json()["error"]["type"] == "server_error"


class NotText:
    def complete(self, messages, *, max_tokens, temperature, seed):
        return None  # a faulty backend: the app itself fails on it


def test_server_faults_are_500_in_the_openai_shape_without_internals():
    with serve_in_thread(create_app(NotText(), model="bad")) as url:
        body = {"model": "bad", "messages": [{"role": "user", "content": "x"}]}
        r = httpx.post(f"{url}/chat/completions", json=body, timeout=10)
    assert r.status_code == 500
    assert r.json() == {
        "error": {
            "message": "internal server error",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def test_concurrency_is_bounded_with_a_queue_then_429(server):
    url, _, gate = server
    body = {"model": "gate", "messages": [{"role": "user", "content": "x"}]}
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(chat(url, body).status_code))
        for _ in range(2)
    ]
    for t in threads:  # one runs, one waits in the queue
        t.start()
    deadline = time.monotonic() + 10
    while gate.started < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert gate.started == 1  # max_concurrency = 1
    r = chat(url, body)  # the queue (1) is full
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    gate.release.set()
    for t in threads:
        t.join()
    assert results == [200, 200]


def test_create_app_validation():
    # a TypeError from the run-time type checker under test, the ValueError without it
    with pytest.raises((ValueError, TypeError), match="backend"):
        create_app({"x": object()})
    with pytest.raises(ValueError, match="max_request_bytes"):
        create_app(Echo(), max_request_bytes=0)


# --------------------------------------------------------------------------------------------------
# REMOTE end to end: served recommenders, a member that times out, one that returns garbage


class Sleeper:
    def __init__(self):
        self.release = threading.Event()
        self.calls = 0

    def complete(self, messages, *, max_tokens, temperature, seed):
        self.calls += 1
        self.release.wait(timeout=30)
        return '{"drugs": []}'


@pytest.fixture(scope="module")
def servers():
    c = cohort()
    titles = c.dataset.med_vocab.titles
    good = {
        "oracle": RecommenderBackend(recommender_member("oracle")),
        "noisy": RecommenderBackend(recommender_member("noisy", noise=0.3, seed=1)),
        "most-frequent": RecommenderBackend(recommender_member("mf", "most-frequent")),
        "garbage": Garbage(),
    }
    assert len(titles) > 0
    sleeper = Sleeper()
    with (
        serve_in_thread(create_app(good, api_key="sk-test")) as url,
        serve_in_thread(create_app(sleeper, model="slow")) as slow_url,
    ):
        yield url, slow_url, sleeper
        sleeper.release.set()


def test_remote_strategy_end_to_end_with_timeout_and_garbage_members(servers):
    url, slow_url, sleeper = servers
    fast = ChatConfig(timeout_s=3.0, retries=1, backoff_s=0.05)
    members = [
        ChatMember("oracle", url, api_key="sk-test", config=fast),
        ChatMember("noisy", url, api_key="sk-test", config=fast),
        ChatMember("most-frequent", url, api_key="sk-test", config=fast),
        ChatMember("garbage", url, api_key="sk-test", config=fast),
        ChatMember("slow", slow_url, config=ChatConfig(timeout_s=0.4, retries=1, backoff_s=0.05)),
    ]
    config = EvaluationConfig(
        strategies=("REMOTE",),
        ensemble_size=5,  # the whole remote pool in every round
        repetitions=1,
        bootstrap_rounds=20,
        round=RoundConfig(stage_timeout_s=10.0),
    )
    t0 = time.perf_counter()
    result = evaluate_strategies(
        members, vignettes("test", 3), [], vocab(), key=jax.random.key(0), config=config,
        progress=False,
    )  # fmt: skip
    assert time.perf_counter() - t0 < 30.0
    rounds = result.rounds["REMOTE"]
    assert len(rounds) == 3
    for r in rounds:
        failures = {m.name: m.failure for m in r.members if m.failure}
        assert set(failures) == {"garbage", "slow"}
        assert failures["garbage"].startswith("parse")
        assert failures["slow"].startswith("timeout")
        assert r.failures == 2 and r.review_failures == 0
        assert r.answer is not None and r.items
        slots = {m.name: m.slot for m in r.members}
        for name in ("garbage", "slow"):
            assert not r.mask[slots[name]].any()
        for name in ("oracle", "noisy", "most-frequent"):
            s = slots[name]
            assert r.mask[s].sum() == sum(s not in a for a in r.authors)
        assert r.generation_s >= 0.8  # the slow member was waited for, twice (one retry)
    # the first two calls reach the backend; later ones may wait in the server's queue, since
    # the abandoned requests still hold its concurrency slots: either way the client times out
    assert 2 <= sleeper.calls <= 2 * 3
    (report,) = result.reports
    assert report.mean["failures"] == 2.0
    models = {row["model"] for row in result.history}
    assert models == {"oracle", "noisy", "most-frequent"}
    # the oracle behind HTTP answers exactly what the in-process oracle answers
    local = recommender_member("oracle")
    for r, v in zip(rounds, vignettes("test", 3), strict=True):
        o = next(m for m in r.members if m.name == "oracle")
        assert list(o.drugs) == local.recommend(v)
    for m in members:
        m.close()


def test_build_backends_for_the_serve_command(tmp_path):
    c = cohort()
    save_dataset(c.dataset, tmp_path / "ds")
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "rules.json").write_text(json.dumps(c.rules.to_json()))
    backends = build_backends(
        ["oracle", "most-frequent", "noisy-oracle"], tmp_path / "ds", tmp_path / "truth"
    )
    assert list(backends) == ["oracle", "most-frequent", "noisy-oracle"]
    with pytest.raises(ValueError, match="needs --truth"):
        build_backends(["oracle"], tmp_path / "ds", None)


def test_serve_command_input_errors(tmp_path, capsys):
    from flame_jax.cli.main import main

    assert main(["serve"]) == 2
    assert "give --model DIR" in capsys.readouterr().err
    assert main(["serve", "--backend", "oracle"]) == 2
    assert "--backend needs --data" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "not a model directory" in capsys.readouterr().err
