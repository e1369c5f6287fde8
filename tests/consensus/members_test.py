import json
import threading
import time

import numpy as np
import pytest

from flame_jax.consensus._members import (
    ChatConfig,
    ChatMember,
    Item,
    LocalChatMember,
    Member,
    MemberError,
    RecommenderMember,
    dataset_recommender,
    generation_messages,
    parse_grades,
    parse_recommendation,
    parse_review_prompt,
    review_messages,
    soft_f1_grade,
)
from flame_jax.consensus._vignettes import Vignette
from flame_jax.data import oracle_recommend
from flame_jax.serve import create_app, serve_in_thread
from tests.consensus.protocol_helpers import cohort, vignettes

WARFARIN = "Warfarin"
VIGNETTE = Vignette(id="case", text="Case ID: visit-1\nA patient.", gold=("Aspirin",))


# --------------------------------------------------------------------------------------------------
# parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"drugs": ["Aspirin", "Heparin"], "rationale": "x"}', ["Aspirin", "Heparin"]),
        ('Here you go:\n```json\n{"drugs": ["Aspirin"]}\n```\nThanks', ["Aspirin"]),
        ('{"medications": [{"name": "Heparin", "dose": "5000 U"}]}', ["Heparin"]),
        ('{"note": {"x": 1}} then {"drugs": []}', []),
        ("Take:\n- Aspirin 81 mg\n* Heparin\n3) Warfarin", ["Aspirin 81 mg", "Heparin", WARFARIN]),
        ('{"drugs": ["Aspirin", 3]}\n- Heparin', ["Heparin"]),  # a malformed list falls back
    ],
)  # fmt: skip
def test_parse_recommendation_accepts_json_fences_objects_and_lists(text, expected):
    assert parse_recommendation(text) == expected


@pytest.mark.parametrize("text", ["", "lorem ipsum dolor sit amet", '{"drugs": "Aspirin"}', "{"])
def test_parse_recommendation_garbage_is_a_parse_failure(text):
    with pytest.raises(MemberError) as e:
        parse_recommendation(text)
    assert e.value.kind == "parse"


def test_parse_grades():
    ids = ["Item_0", "Item_1", "Item_2"]
    text = 'ok ```{"grades": {"Item_0": 0.25, "Item_1": 1, "Item_2": 1.5}}```'
    assert parse_grades(text, ids) == [0.25, 1.0, None]  # out of range is a missing edge
    assert parse_grades('{"Item_2": 0, "Item_0": "high"}', ids) == [None, None, 0.0]
    assert parse_grades('{"grades": {"Item_0": NaN, "Item_1": true, "Item_2": 0.5}}', ids) == [
        None,
        None,
        0.5,
    ]
    for garbage in ["no", '{"grades": {"Item_9": 0.5}}', '{"grades": [0.5]}', "{{{"]:
        with pytest.raises(MemberError, match="no valid grade"):
            parse_grades(garbage, ids)


def test_prompts_round_trip_through_the_server_side_parser():
    items = [Item("Item_0", ("Aspirin", "Heparin")), Item("Item_1", ())]
    text, parsed = parse_review_prompt(review_messages(VIGNETTE, items))
    assert parsed == items
    assert VIGNETTE.text in text
    gen = generation_messages(VIGNETTE, formulary=("Aspirin", "Heparin"))
    text, parsed = parse_review_prompt(gen)
    assert parsed is None and VIGNETTE.text in text and "Aspirin; Heparin" in text
    assert "interactions" in review_messages(VIGNETTE, items)[0]["content"]


# --------------------------------------------------------------------------------------------------
# recommender members


def reference_soft_f1(scores, item):
    s = [min(max(float(x), 0.0), 1.0) for x in scores]
    if not item or sum(s) == 0:
        return 0.0
    hit = sum(s[i] for i in item)
    p = hit / len(item)
    r = hit / sum(s)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


@pytest.mark.parametrize("seed", range(4))
def test_soft_f1_grade_matches_the_formula(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 12))
    scores = rng.random(m) * 1.4 - 0.2  # some outside [0, 1]: clipped
    for size in range(m + 1):
        item = sorted(rng.choice(m, size, replace=False).tolist())
        got = soft_f1_grade(scores, item)
        assert got == pytest.approx(reference_soft_f1(scores, item), abs=1e-12)
        assert 0.0 <= got <= 1.0
    assert soft_f1_grade(np.zeros(m), [0]) == 0.0


def test_recommender_member_answers_the_oracle_set_and_grades_its_own_answer_best():
    c = cohort()
    ds = c.dataset
    vs = vignettes("test", 5)
    member = RecommenderMember(
        "oracle", dataset_recommender(ds, "oracle", rules=c.rules), ds.med_vocab.titles
    )
    assert isinstance(member, Member)
    rows = ds.split_rows("test")[:5]
    sets, scores = oracle_recommend(c.rules, ds, rows)
    for v, s, sc in zip(vs, sets, scores, strict=True):
        answer = member.recommend(v)
        assert answer == [ds.med_vocab.titles[i] for i in np.flatnonzero(s)]
        own = Item("Item_0", tuple(answer))
        other = Item("Item_1", tuple(answer[:1]))
        unknown = Item("Item_2", ("Tea",))
        g = member.review(v, [own, other, unknown])
        assert g[0] == pytest.approx(reference_soft_f1(sc, np.flatnonzero(s).tolist()))
        assert g[0] > g[1] and g[2] is None


def test_recommender_member_without_a_visit_fails_cleanly():
    ds = cohort().dataset
    member = RecommenderMember("mf", dataset_recommender(ds, "most-frequent"), ds.med_vocab.titles)
    with pytest.raises(MemberError, match="names no visit"):
        member.recommend(Vignette(id="x", text="free text", gold=()))


def test_noisy_recommender_is_seeded_and_differs_from_the_oracle():
    c = cohort()
    ds = c.dataset
    vs = vignettes("test", 8)
    a = dataset_recommender(ds, "oracle", rules=c.rules, noise=0.3, seed=1)
    b = dataset_recommender(ds, "oracle", rules=c.rules, noise=0.3, seed=1)
    o = dataset_recommender(ds, "oracle", rules=c.rules)
    same = [np.array_equal(a(v)[0], b(v)[0]) for v in vs]
    differs = [not np.array_equal(a(v)[0], o(v)[0]) for v in vs]
    assert all(same) and any(differs)
    with pytest.raises(ValueError, match="needs the planted rules"):
        dataset_recommender(ds, "oracle")


# --------------------------------------------------------------------------------------------------
# chat members against a real loopback server


class Backend:
    def __init__(self, reply, *, fail_first=0, error=None, wait=None):
        self.reply = reply
        self.fail_first = fail_first
        self.error = error
        self.wait = wait
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self.bodies = []
        self.lock = threading.Lock()

    def complete(self, messages, *, max_tokens, temperature, seed):
        with self.lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.bodies.append((messages, max_tokens, temperature, seed))
            n = self.calls
        try:
            if self.wait is not None:
                self.wait.wait(timeout=20)
            else:
                time.sleep(0.05)
            if n <= self.fail_first:
                raise RuntimeError("transient")
            if self.error is not None:
                raise self.error
            return self.reply
        finally:
            with self.lock:
                self.active -= 1


@pytest.fixture(scope="module")
def server():
    release = threading.Event()
    backends = {
        "good": Backend('{"drugs": ["Aspirin"]}'),
        "grader": Backend('{"grades": {"Item_0": 0.7}}'),
        "flaky": Backend('{"drugs": ["Heparin"]}', fail_first=1),
        "refuses": Backend("", error=ValueError("cannot answer this")),
        "slow": Backend("{}", wait=release),
        "garbage": Backend("lorem ipsum dolor sit amet"),
        "busy": Backend('{"drugs": []}'),
    }
    app = create_app(backends, api_key="secret", max_concurrency=8)
    with serve_in_thread(app) as url:
        yield url, backends
        release.set()


FAST = ChatConfig(timeout_s=2.0, retries=2, backoff_s=0.01, max_concurrency=4)


def test_chat_member_sends_the_openai_request_and_parses(server):
    url, backends = server
    member = ChatMember("good", url, api_key="secret", config=FAST, formulary=("Aspirin",))
    assert isinstance(member, Member)
    assert member.recommend(VIGNETTE) == ["Aspirin"]
    messages, max_tokens, temperature, seed = backends["good"].bodies[-1]
    assert messages == generation_messages(VIGNETTE, formulary=("Aspirin",))
    assert (max_tokens, temperature, seed) == (512, 0.0, 0)
    grader = ChatMember("grader", url, api_key="secret", config=FAST)
    assert grader.review(VIGNETTE, [Item("Item_0", ("Aspirin",)), Item("Item_1", ())]) == [
        0.7,
        None,
    ]
    member.close()


def test_chat_member_retries_server_errors_with_backoff(server):
    url, backends = server
    member = ChatMember("flaky", url, api_key="secret", config=FAST)
    assert member.recommend(VIGNETTE) == ["Heparin"]
    assert backends["flaky"].calls == 2


def test_chat_member_does_not_retry_client_errors(server):
    url, backends = server
    cases = [("wrong", "good", 401), ("secret", "refuses", 400), ("secret", "nope", 404)]
    for key, name, status in cases:
        before = backends["refuses"].calls
        with pytest.raises(MemberError, match=f"HTTP {status}") as e:
            ChatMember(name, url, api_key=key, config=FAST).recommend(VIGNETTE)
        assert e.value.kind == "http"
        if name == "refuses":
            assert backends["refuses"].calls == before + 1  # no retry


def test_chat_member_timeout_is_bounded(server):
    url, _ = server
    config = ChatConfig(timeout_s=0.3, retries=1, backoff_s=0.01)
    member = ChatMember("slow", url, api_key="secret", config=config)
    t0 = time.perf_counter()
    with pytest.raises(MemberError) as e:
        member.recommend(VIGNETTE)
    elapsed = time.perf_counter() - t0
    assert e.value.kind == "timeout"
    assert elapsed < 3.0  # (retries + 1) x timeout + backoff, not the backend's 20 s


def test_chat_member_garbage_and_unreachable_endpoints_fail_cleanly(server):
    url, _ = server
    with pytest.raises(MemberError) as e:
        ChatMember("garbage", url, api_key="secret", config=FAST).recommend(VIGNETTE)
    assert e.value.kind == "parse"
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    config = ChatConfig(timeout_s=0.5, retries=1, backoff_s=0.01)
    with pytest.raises(MemberError) as e:
        ChatMember("gone", f"http://127.0.0.1:{port}/v1", config=config).recommend(VIGNETTE)
    assert e.value.kind == "http"


def test_chat_member_bounds_its_concurrency(server):
    url, backends = server
    member = ChatMember(
        "busy", url, api_key="secret", config=ChatConfig(timeout_s=5.0, max_concurrency=2)
    )
    threads = [threading.Thread(target=member.recommend, args=(VIGNETTE,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backends["busy"].calls == 6
    assert backends["busy"].max_active == 2


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timeout_s", 0.0, "timeout_s"),
        ("retries", -1, "retries"),
        ("max_concurrency", 0, "max_concurrency"),
        ("temperature", 3.0, "temperature"),
    ],
)
def test_chat_config_validation(field, value, message):
    with pytest.raises(ValueError, match=f"ChatConfig.{message}"):
        ChatConfig(**{field: value})


def test_chat_member_rejects_bad_urls_and_pools():
    with pytest.raises(ValueError, match="base_url"):
        ChatMember("x", "127.0.0.1:8000")
    with pytest.raises(ValueError, match="pool"):
        ChatMember("x", "http://127.0.0.1:1/v1", pool="cloud")


def test_json_reply_of_the_recommender_backend_is_parseable():
    from flame_jax.serve import RecommenderBackend

    c = cohort()
    ds = c.dataset
    (v,) = vignettes("test", 1)
    member = RecommenderMember(
        "oracle", dataset_recommender(ds, "oracle", rules=c.rules), ds.med_vocab.titles
    )
    backend = RecommenderBackend(member)
    text = backend.complete(generation_messages(v), max_tokens=64, temperature=0.0, seed=None)
    assert parse_recommendation(text) == member.recommend(v)
    items = [Item("Item_0", tuple(member.recommend(v))), Item("Item_1", ("Tea",))]
    reply = json.loads(
        backend.complete(review_messages(v, items), max_tokens=64, temperature=0.0, seed=None)
    )
    assert reply == {"grades": {"Item_0": member.review(v, items)[0]}}
    with pytest.raises(ValueError, match="Case ID"):
        backend.complete(
            [{"role": "user", "content": "hello"}], max_tokens=8, temperature=0.0, seed=0
        )
    # the same backend in process, through the chat prompts, answers like the member itself
    local = LocalChatMember("oracle-chat", backend)
    assert isinstance(local, Member)
    assert local.recommend(v) == member.recommend(v)
    assert local.review(v, items) == [member.review(v, items)[0], None]
    with pytest.raises(MemberError) as e:
        local.recommend(Vignette(id="x", text="no case id", gold=()))
    assert e.value.kind == "error"


@pytest.mark.slow
def test_a_trained_baseline_run_as_a_member(tmp_path):
    from flame_jax.baselines import BaselineConfig, load_run, predict, train_baseline
    from flame_jax.consensus._strategies import MemberSpec, build_members

    ds = cohort().dataset
    run = tmp_path / "lr"
    train_baseline(ds, BaselineConfig.tiny("lr", epochs=1), run, progress=False)
    spec = MemberSpec(name="lr", kind="baseline", run=str(run), threshold=0.3)
    (member,) = build_members([spec], ds)
    trained = load_run(run, dataset=ds)
    rows = ds.split_rows("test")[:3]
    probs, _ = predict(trained.model, trained.context, ds, rows)
    for v, p in zip(vignettes("test", 3), probs, strict=True):
        assert member.recommend(v) == [ds.med_vocab.titles[i] for i in np.flatnonzero(p >= 0.3)]
    with pytest.raises(ValueError, match="run is required"):
        MemberSpec(name="lr", kind="baseline")
