"""Ensemble members: anything that recommends drugs for a vignette and grades others' answers.

A member implements the small :class:`Member` protocol (a name, a pool, ``recommend`` and
``review``), so that an OpenAI-compatible chat endpoint (:class:`ChatMember`: vLLM, Ollama, a
hosted API, or ``flame-jax serve``), a point-wise recommender (:class:`RecommenderMember`: the
planted oracle, most-frequent drugs, a trained baseline) or a local flame_jax policy all take part
in the same collaboration round.

Failures are exceptions of type :class:`MemberError` with a ``kind`` ("timeout", "http",
"parse", "error"); the round (``_protocol.py``) counts them and drops the member, never crashes.

The chat prompts (:func:`generation_messages`, :func:`review_messages`) are zero-shot, as in
arXiv 2512.05066; the answer format is JSON (``{"drugs": [...]}`` and
``{"grades": {"Item_0": 0.8, ...}}``), parsed tolerantly (:func:`parse_recommendation`,
:func:`parse_grades`) because LLMs wrap JSON in prose and code fences.
"""

import dataclasses
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from flame_jax.consensus._vignettes import Vignette, case_id
from flame_jax.data import Dataset, PlantedRules, most_frequent_recommend, oracle_recommend

__all__ = [
    "ChatConfig",
    "ChatMember",
    "Item",
    "LocalChatMember",
    "Member",
    "MemberError",
    "RecommenderMember",
    "baseline_recommender",
    "dataset_recommender",
    "generation_messages",
    "parse_grades",
    "parse_recommendation",
    "review_messages",
    "soft_f1_grade",
]

POOLS = ("remote", "local")
REVIEW_MARKER = "Answers to grade:"
_ITEM_LINE = re.compile(r"^- (Item_\d+): (.*)$", re.MULTILINE)
NO_MEDICATION = "(no medication)"


class MemberError(Exception):
    """A member could not answer: ``kind`` is "timeout", "http", "parse" or "error".

    ``retry_after`` holds a server's Retry-After seconds (HTTP 429 / 503), else None.
    """

    def __init__(self, kind: str, message: str, *, retry_after: float | None = None):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.retry_after = retry_after


class Item(NamedTuple):
    """One anonymised answer of a round: its label and canonical drug names."""

    id: str
    drugs: tuple[str, ...]


@runtime_checkable
class Member(Protocol):
    """What the collaboration round needs from an ensemble member.

    Attributes:
      name: unique model name (the ``model`` column of the performance history).
      pool: "remote" or "local" (the REMOTE and LOCAL strategies draw from these pools).
      temperature: sampling temperature, logged (0 for deterministic members).

    ``recommend`` returns drug names (free text; the round canonicalises them); ``review`` returns
    one grade in [0, 1] per item, or None where it could not grade that item. Both raise
    :class:`MemberError` on failure.
    """

    name: str
    pool: str
    temperature: float

    def recommend(self, vignette: Vignette) -> list[str]: ...

    def review(self, vignette: Vignette, items: Sequence[Item]) -> list[float | None]: ...


# --------------------------------------------------------------------------------------------------
# Prompts and parsing (shared by ChatMember and the server's recommender backend)


def generation_messages(vignette: Vignette, *, formulary: Sequence[str] = ()) -> list[dict]:
    """The zero-shot generation prompt (system + user) in the OpenAI chat format."""
    system = (
        "You are an experienced clinical pharmacist. Recommend the medications to prescribe for "
        "the patient in the vignette. Reply with one JSON object and nothing else: "
        '{"drugs": ["<drug name>", ...], "rationale": "<one sentence>"}.'
    )
    user = vignette.text
    if formulary:
        user += "\n\nChoose drug names from this formulary: " + "; ".join(formulary) + "."
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _item_line(item: Item) -> str:
    return f"- {item.id}: " + ("; ".join(item.drugs) if item.drugs else NO_MEDICATION)


def review_messages(vignette: Vignette, items: Sequence[Item]) -> list[dict]:
    """The anonymous listwise review prompt with the rubric of consensus_spec §1.2."""
    system = (
        "You are an experienced clinical pharmacist reviewing anonymous medication "
        "recommendations. Grade each answer from 0.0 (harmful or useless) to 1.0 (exactly right), "
        "weighing: fit to the indications; contraindications and allergies; drug-drug "
        "interactions; dose and route plausibility; completeness (nothing essential missing, no "
        "over-prescription). Reply with one JSON object and nothing else: "
        '{"grades": {"<item id>": <grade>, ...}}.'
    )
    user = "\n".join([vignette.text, "", REVIEW_MARKER, *map(_item_line, items)])
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_review_prompt(messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[Item] | None]:
    """The vignette text and, for a review prompt, its items (None for a generation prompt)."""
    user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    text = str(user.get("content", "")) if user else ""
    if REVIEW_MARKER not in text:
        return text, None
    head, _, tail = text.rpartition(REVIEW_MARKER)
    items = []
    for m in _ITEM_LINE.finditer(tail):
        body = m.group(2).strip()
        drugs = () if body == NO_MEDICATION else tuple(d.strip() for d in body.split(";"))
        items.append(Item(m.group(1), tuple(d for d in drugs if d)))
    return head, items


def _json_objects(text: str) -> list[Any]:
    """Every JSON value that starts at a ``{`` of ``text`` and parses, outermost first."""
    decoder = json.JSONDecoder()
    out = []
    i = text.find("{")
    while i >= 0:
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        out.append(value)
        i = text.find("{", end)
    return out


_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.+?)\s*$")


def parse_recommendation(text: str) -> list[str]:
    """Drug names from a generation answer.

    Accepted: a JSON object with a list under "drugs" (or "medications"), possibly inside prose or
    a code fence, of strings or of objects with a "name"; else a bulleted or numbered list.

    Raises:
      MemberError: kind "parse", when neither is found.

    Examples:
      >>> parse_recommendation('Sure! ```json\\n{"drugs": ["Aspirin", {"name": "Heparin"}]}\\n```')
      ['Aspirin', 'Heparin']
      >>> parse_recommendation("1. Aspirin 81 mg\\n2. Heparin")
      ['Aspirin 81 mg', 'Heparin']
      >>> parse_recommendation("I am not sure.")
      Traceback (most recent call last):
      ...
      flame_jax.consensus._members.MemberError: parse: no drug list in the answer
    """
    for obj in _json_objects(text):
        if not isinstance(obj, dict):
            continue
        drugs = obj.get("drugs", obj.get("medications"))
        if not isinstance(drugs, list):
            continue
        names = []
        for d in drugs:
            if isinstance(d, dict):
                d = d.get("name")
            if isinstance(d, str) and d.strip():
                names.append(d.strip())
        if len(names) == len(drugs):
            return names
    lines = [m.group(1) for m in map(_LIST_LINE.match, text.splitlines()) if m]
    if lines:
        return lines
    raise MemberError("parse", "no drug list in the answer")


def _grade(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def parse_grades(text: str, item_ids: Sequence[str]) -> list[float | None]:
    """Grades in [0, 1] for ``item_ids`` from a review answer.

    Accepted: a JSON object ``{"grades": {id: grade}}`` or ``{id: grade}``, possibly inside prose
    or a code fence. A grade that is missing, not a number, or outside [0, 1] is None (a missing
    edge, never a 0).

    Raises:
      MemberError: kind "parse", when no item received a valid grade.

    Examples:
      >>> parse_grades('{"grades": {"Item_1": 0.9, "Item_0": 7}}', ["Item_0", "Item_1"])
      [None, 0.9]
      >>> parse_grades("Looks fine", ["Item_0"])
      Traceback (most recent call last):
      ...
      flame_jax.consensus._members.MemberError: parse: no valid grade in the review
    """
    for obj in _json_objects(text):
        if not isinstance(obj, dict):
            continue
        table = obj.get("grades", obj)
        if not isinstance(table, dict):
            continue
        grades = [_grade(table.get(i)) for i in item_ids]
        if any(g is not None for g in grades):
            return grades
    raise MemberError("parse", "no valid grade in the review")


# --------------------------------------------------------------------------------------------------
# OpenAI-compatible chat endpoints


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChatConfig:
    """How a :class:`ChatMember` calls its endpoint.

    Attributes:
      timeout_s: per-request timeout (connect, read, write each), seconds.
      retries: extra attempts after a timeout, a transport error, HTTP 429 or 5xx.
      backoff_s: wait before retry k is ``backoff_s * 2**k`` (a Retry-After header, capped at
        4x that, wins).
      max_concurrency: requests in flight to this endpoint at once, over all threads.
      max_tokens, temperature, seed: sent with every request.
    """

    timeout_s: float = 60.0
    retries: int = 2
    backoff_s: float = 0.5
    max_concurrency: int = 4
    max_tokens: int = 512
    temperature: float = 0.0
    seed: int | None = 0

    def __post_init__(self):
        if not (isinstance(self.timeout_s, int | float) and self.timeout_s > 0):
            raise ValueError(f"ChatConfig.timeout_s must be > 0, got {self.timeout_s!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"ChatConfig.retries must be an integer >= 0, got {self.retries!r}")
        if not (isinstance(self.backoff_s, int | float) and self.backoff_s >= 0):
            raise ValueError(f"ChatConfig.backoff_s must be >= 0, got {self.backoff_s!r}")
        for name in ("max_concurrency", "max_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ChatConfig.{name} must be an integer >= 1, got {v!r}")
        if not (isinstance(self.temperature, int | float) and 0 <= self.temperature <= 2):
            raise ValueError(f"ChatConfig.temperature must be in [0, 2], got {self.temperature!r}")


_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def _seconds(header: str | None) -> float | None:
    """A Retry-After header in seconds (the HTTP-date form is ignored)."""
    try:
        value = float(header) if header is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value >= 0 else None


class ChatMember:
    """A member behind an OpenAI-compatible ``/chat/completions`` endpoint (httpx, synchronous).

    Every call has a timeout and at most ``config.retries`` retries with exponential backoff;
    ``config.max_concurrency`` bounds the requests in flight. Errors become :class:`MemberError`.
    The instance is thread-safe; :meth:`close` releases its connections.

    Args:
      name: the member's name in logs.
      base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is
        appended).
      model: the ``model`` field of each request (defaults to ``name``).
      api_key: sent as ``Authorization: Bearer <key>`` when given.
      pool: "remote" or "local".
      config: timeouts, retries, sampling parameters.
      formulary: drug names listed in the generation prompt (empty: none listed).
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        pool: str = "remote",
        config: ChatConfig = ChatConfig(),
        formulary: Sequence[str] = (),
    ):
        import httpx

        if pool not in POOLS:
            raise ValueError(f"ChatMember.pool must be one of {POOLS}, got {pool!r}")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"ChatMember.base_url must start with http:// or https://: {base_url}")
        self.name = name
        self.pool = pool
        self.model = model or name
        self.config = config
        self.temperature = float(config.temperature)
        self.formulary = tuple(formulary)
        self.url = base_url.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(config.timeout_s),
            headers=headers,
            limits=httpx.Limits(max_connections=config.max_concurrency),
        )
        self._slots = threading.BoundedSemaphore(config.max_concurrency)

    def __repr__(self) -> str:
        return f"ChatMember({self.name!r}, {self.url!r}, model={self.model!r})"

    def close(self) -> None:
        self._client.close()

    def complete(self, messages: list[dict]) -> str:
        """One chat completion's text, with timeouts and bounded retries."""
        import httpx

        c = self.config
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": c.max_tokens,
            "temperature": c.temperature,
        }
        if c.seed is not None:
            body["seed"] = c.seed
        last: MemberError | None = None
        for attempt in range(c.retries + 1):
            if attempt:
                wait = c.backoff_s * 2 ** (attempt - 1)
                hint = last.retry_after if last is not None and last.retry_after else 0.0
                time.sleep(min(wait * 4, max(wait, hint)))
            try:
                with self._slots:
                    response = self._client.post(self.url, json=body)
            except httpx.TimeoutException as e:
                last = MemberError("timeout", f"{self.url}: no answer within {c.timeout_s} s ({e})")
                continue
            except httpx.HTTPError as e:
                last = MemberError("http", f"{self.url}: {type(e).__name__}: {e}")
                continue
            if response.status_code != 200:
                last = MemberError(
                    "http",
                    f"{self.url}: HTTP {response.status_code}",
                    retry_after=_seconds(response.headers.get("retry-after")),
                )
                if response.status_code in _RETRY_STATUS:
                    continue
                raise last
            try:
                content = response.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise MemberError("parse", f"{self.url}: not a chat completion") from None
            if not isinstance(content, str):
                raise MemberError("parse", f"{self.url}: the message content is not text")
            return content
        assert last is not None
        raise last

    def recommend(self, vignette: Vignette) -> list[str]:
        return parse_recommendation(
            self.complete(generation_messages(vignette, formulary=self.formulary))
        )

    def review(self, vignette: Vignette, items: Sequence[Item]) -> list[float | None]:
        return parse_grades(self.complete(review_messages(vignette, items)), [i.id for i in items])


class LocalChatMember:
    """An in-process chat model (anything with the server's ``ChatBackend.complete``) as a member.

    Uses the same prompts and parsers as :class:`ChatMember`, without HTTP: e.g. a local flame_jax
    LLM, ``LocalChatMember("tiny", flame_jax.serve.PolicyBackend(model_dir))``. A ValueError of
    the backend, or an answer that does not parse, is a :class:`MemberError`.

    Args:
      name: the member's name.
      backend: ``complete(messages, *, max_tokens, temperature, seed) -> str``.
      pool: "remote" or "local".
      max_tokens, temperature, seed: passed to every call.
      formulary: drug names listed in the generation prompt.

    Examples:
      >>> class Fixed:
      ...     def complete(self, messages, *, max_tokens, temperature, seed):
      ...         return '{"drugs": ["Aspirin"]}'
      >>> LocalChatMember("fixed", Fixed()).recommend(Vignette(id="v", text="x", gold=()))
      ['Aspirin']
    """

    def __init__(
        self,
        name: str,
        backend: Any,
        *,
        pool: str = "local",
        max_tokens: int = 512,
        temperature: float = 0.0,
        seed: int | None = 0,
        formulary: Sequence[str] = (),
    ):
        if pool not in POOLS:
            raise ValueError(f"LocalChatMember.pool must be one of {POOLS}, got {pool!r}")
        if not callable(getattr(backend, "complete", None)):
            raise ValueError(f"LocalChatMember {name}: the backend has no complete() method")
        self.name = name
        self.pool = pool
        self.backend = backend
        self.max_tokens = max_tokens
        self.temperature = float(temperature)
        self.seed = seed
        self.formulary = tuple(formulary)

    def __repr__(self) -> str:
        return f"LocalChatMember({self.name!r}, pool={self.pool!r})"

    def complete(self, messages: list[dict]) -> str:
        try:
            text = self.backend.complete(
                messages, max_tokens=self.max_tokens, temperature=self.temperature, seed=self.seed
            )
        except ValueError as e:
            raise MemberError("error", f"{self.name}: {e}") from None
        if not isinstance(text, str):
            raise MemberError("parse", f"{self.name}: the backend returned {type(text).__name__}")
        return text

    def recommend(self, vignette: Vignette) -> list[str]:
        return parse_recommendation(
            self.complete(generation_messages(vignette, formulary=self.formulary))
        )

    def review(self, vignette: Vignette, items: Sequence[Item]) -> list[float | None]:
        return parse_grades(self.complete(review_messages(vignette, items)), [i.id for i in items])


# --------------------------------------------------------------------------------------------------
# Point-wise recommenders


Recommender = Callable[[Vignette], tuple[np.ndarray, np.ndarray]]


def soft_f1_grade(scores: np.ndarray, item: Sequence[int] | np.ndarray) -> float:
    """A recommender's grade of a drug set: the expected-F1 proxy under its own scores.

    With per-drug probabilities s (the recommender's scores, clipped to [0, 1]), the set I has
    precision P = mean_{d in I} s_d and recall R = sum_{d in I} s_d / sum_d s_d, and the grade is
    their harmonic mean 2PR / (P + R) (0 when I is empty or P + R = 0). Unlike the mean score it
    does not reward a one-drug answer that omits everything else the recommender expects.

    Examples:
      >>> s = np.array([0.9, 0.8, 0.1, 0.0])
      >>> round(soft_f1_grade(s, [0, 1]), 4), round(soft_f1_grade(s, [0]), 4)
      (0.8947, 0.6429)
      >>> soft_f1_grade(s, [])
      0.0
    """
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    idx = np.asarray(item, dtype=np.int64)
    total = float(s.sum())
    if not idx.size or total <= 0:
        return 0.0
    hit = float(s[idx].sum())
    p, r = hit / idx.size, hit / total
    return 0.0 if p + r <= 0 else 2 * p * r / (p + r)


class RecommenderMember:
    """A point-wise recommender as an ensemble member.

    ``recommend`` returns the names of the recommender's set; ``review`` grades each item by
    :func:`soft_f1_grade` of the recommender's scores (an item naming a drug outside ``med_names``
    gets None). Latency is the recommender's compute time.

    Args:
      name: the member's name.
      recommend: vignette -> (bool [meds] set, float [meds] scores); raises ValueError when it
        cannot answer the vignette (the round counts a failure).
      med_names: canonical drug names, index order.
      pool: "remote" or "local".
    """

    temperature = 0.0

    def __init__(
        self, name: str, recommend: Recommender, med_names: Sequence[str], *, pool: str = "local"
    ):
        if pool not in POOLS:
            raise ValueError(f"RecommenderMember.pool must be one of {POOLS}, got {pool!r}")
        self.name = name
        self.pool = pool
        self._recommend = recommend
        self.med_names = tuple(med_names)
        self._index = {n: i for i, n in enumerate(self.med_names)}

    def __repr__(self) -> str:
        return f"RecommenderMember({self.name!r}, pool={self.pool!r})"

    def _call(self, vignette: Vignette) -> tuple[np.ndarray, np.ndarray]:
        try:
            chosen, scores = self._recommend(vignette)
        except ValueError as e:
            raise MemberError("error", f"{self.name}: {e}") from None
        chosen, scores = np.asarray(chosen, bool), np.asarray(scores, np.float64)
        if chosen.shape != (len(self.med_names),) or scores.shape != chosen.shape:
            raise MemberError("error", f"{self.name}: recommender returned shape {chosen.shape}")
        return chosen, scores

    def recommend(self, vignette: Vignette) -> list[str]:
        chosen, _ = self._call(vignette)
        return [self.med_names[i] for i in np.flatnonzero(chosen)]

    def review(self, vignette: Vignette, items: Sequence[Item]) -> list[float | None]:
        _, scores = self._call(vignette)
        grades: list[float | None] = []
        for item in items:
            idx = [self._index.get(d) for d in item.drugs]
            ok = all(i is not None for i in idx)
            grades.append(soft_f1_grade(scores, idx) if ok else None)  # type: ignore[arg-type]
        return grades


RECOMMENDERS = ("oracle", "most-frequent")


def dataset_recommender(
    dataset: Dataset,
    kind: str,
    *,
    rules: PlantedRules | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> Recommender:
    """A vignette -> (set, scores) function backed by a dataset's visit table.

    The vignette's ``visit_id`` selects the visit (rendered vignettes carry it; a vignette
    without one, or with an unknown one, raises ValueError). ``kind`` "oracle" is the planted
    rules' decoder (needs ``rules``); "most-frequent" returns the most frequent training drugs.
    With ``noise`` > 0 the recommender is a weaker model: scores get Gaussian noise of that sd,
    seeded by (``seed``, visit id), and the set becomes the drugs whose noisy score exceeds 0.5.

    Examples:
      >>> from flame_jax.data import SyntheticConfig, generate_cohort
      >>> from flame_jax.consensus._vignettes import render_vignettes
      >>> cohort = generate_cohort(SyntheticConfig.tiny())
      >>> ds = cohort.dataset
      >>> (v,) = render_vignettes(ds, ds.split_rows("test")[:1])
      >>> chosen, scores = dataset_recommender(ds, "oracle", rules=cohort.rules)(v)
      >>> chosen.shape == scores.shape == (ds.num_meds,)
      True
    """
    if kind not in RECOMMENDERS:
        raise ValueError(f"recommender kind must be one of {RECOMMENDERS}, got {kind!r}")
    if kind == "oracle" and rules is None:
        raise ValueError("the oracle recommender needs the planted rules (truth/rules.json)")
    if not (isinstance(noise, int | float) and 0 <= noise <= 10):
        raise ValueError(f"noise must be in [0, 10], got {noise!r}")
    row_of = {int(v): i for i, v in enumerate(dataset.visits.visit_id)}
    frequent = most_frequent_recommend(dataset, [0]) if kind == "most-frequent" else None

    def recommend(vignette: Vignette) -> tuple[np.ndarray, np.ndarray]:
        if vignette.visit_id is None or vignette.visit_id not in row_of:
            raise ValueError(f"vignette {vignette.id} names no visit of dataset {dataset.name}")
        row = row_of[vignette.visit_id]
        if frequent is not None:
            chosen, scores = frequent[0][0], frequent[1][0].astype(np.float64)
        else:
            s, p = oracle_recommend(rules, dataset, [row])  # type: ignore[arg-type]
            chosen, scores = s[0], p[0].astype(np.float64)
        if noise > 0:
            rng = np.random.default_rng([seed, vignette.visit_id & 0xFFFFFFFF])
            scores = np.clip(scores + noise * rng.standard_normal(scores.shape), 0.0, 1.0)
            chosen = scores > 0.5
        return chosen, scores

    return recommend


def baseline_recommender(trained: Any, *, threshold: float = 0.5) -> Recommender:
    """A vignette -> (set, scores) function backed by a trained ``flame_jax.baselines`` model.

    ``trained`` is a :class:`flame_jax.baselines.TrainedBaseline` (``load_run(run)``). The
    model's probabilities for every visit of its dataset are computed once, on the first call
    (one batched pass, so a round never waits for a compilation per vignette); the set is the
    drugs whose probability reaches ``threshold``. The vignette's ``visit_id`` selects the visit.
    """
    from flame_jax.baselines import predict

    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    dataset = trained.dataset
    row_of = {int(v): i for i, v in enumerate(dataset.visits.visit_id)}
    cache: list[np.ndarray] = []
    lock = threading.Lock()

    def recommend(vignette: Vignette) -> tuple[np.ndarray, np.ndarray]:
        if vignette.visit_id is None or vignette.visit_id not in row_of:
            raise ValueError(f"vignette {vignette.id} names no visit of dataset {dataset.name}")
        with lock:
            if not cache:
                rows = np.arange(len(dataset.visits))
                probs, _ = predict(trained.model, trained.context, dataset, rows)
                cache.append(np.asarray(probs, np.float64))
        scores = cache[0][row_of[vignette.visit_id]]
        return scores >= threshold, scores

    return recommend


def vignette_from_prompt(text: str) -> Vignette:
    """A minimal vignette rebuilt from a prompt's text (its ``Case ID`` gives the visit id)."""
    name, visit = case_id(text)
    return Vignette(id=name or "unnamed", text=text.strip() or "(empty)", gold=(), visit_id=visit)
