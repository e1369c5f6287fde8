"""Chat backends for the server: a point-wise recommender speaking the consensus prompts.

:class:`RecommenderBackend` puts a dataset-backed recommender (the planted oracle, most-frequent
drugs, a noisy oracle; :func:`flame_jax.consensus._members.dataset_recommender`) behind the
OpenAI-compatible server, so the REMOTE strategy can be run end to end over real sockets. It
understands the prompts of :func:`flame_jax.consensus._members.generation_messages` and
:func:`~flame_jax.consensus._members.review_messages`: the vignette's ``Case ID: visit-<id>``
line selects the visit; a generation prompt is answered with ``{"drugs": [...]}``, a review
prompt with ``{"grades": {item: grade}}`` (the soft-F1 grade of
:class:`~flame_jax.consensus._members.RecommenderMember`). A prompt it cannot answer (no known
Case ID) is a ValueError, which the server turns into a 400.
"""

import json
import threading
from typing import Any

import jax
import numpy as np

from flame_jax.consensus import (
    MemberError,
    RecommenderMember,
    parse_review_prompt,
    vignette_from_prompt,
)
from flame_jax.policy import (
    CHAT_TEMPLATE,
    SamplingConfig,
    SamplingParams,
    from_pretrained,
    left_pad,
    load_tokenizer,
    make_generator,
)

__all__ = ["PolicyBackend", "RecommenderBackend", "seed_key"]


class RecommenderBackend:
    """Serves a :class:`RecommenderMember` through the chat protocol (deterministic).

    Examples:
      >>> import numpy as np
      >>> member = RecommenderMember(
      ...     "two", lambda v: (np.array([True, False]), np.array([0.9, 0.2])), ("A", "B"))
      >>> backend = RecommenderBackend(member)
      >>> msgs = [{"role": "user", "content": "Case ID: visit-1\\nA patient."}]
      >>> backend.complete(msgs, max_tokens=64, temperature=0.0, seed=0)
      '{"drugs": ["A"]}'
    """

    def __init__(self, member: RecommenderMember):
        self.member = member

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
    ) -> str:
        text, items = parse_review_prompt(messages)
        vignette = vignette_from_prompt(text)
        try:
            if items is None:
                return json.dumps({"drugs": self.member.recommend(vignette)})
            grades = self.member.review(vignette, items)
        except MemberError as e:
            raise ValueError(
                f"the {self.member.name} backend answers flame_jax vignette prompts whose Case ID "
                f"names a visit of its dataset ({e})"
            ) from None
        return json.dumps(
            {"grades": {it.id: g for it, g in zip(items, grades, strict=True) if g is not None}}
        )


def _power_of_two(n: int, minimum: int) -> int:
    return max(minimum, 1 << max(int(n) - 1, 0).bit_length())


def _powers_of_two(minimum: int, limit: int) -> tuple[int, ...]:
    out = [minimum]
    while out[-1] < limit:
        out.append(out[-1] * 2)
    return tuple(out)


def seed_key(seed: int | None) -> jax.Array:
    """The sampling key of a request's ``seed``: all 64 bits of it (None: 0).

    The seed is taken modulo 2**64 (a signed 64-bit seed by its two's complement) and its high
    and low 32-bit words become the threefry key, so ``seed < 2**32`` gives the same key as
    ``jax.random.key(seed)`` and seeds that differ only above bit 32 still differ.

    Examples:
      >>> import jax
      >>> bool((jax.random.key_data(seed_key(7)) == jax.random.key_data(jax.random.key(7))).all())
      True
      >>> jax.random.key_data(seed_key(-1)).tolist()
      [4294967295, 4294967295]
    """
    value = 0 if seed is None else int(seed) % 2**64
    words = np.array([value >> 32, value & 0xFFFFFFFF], np.uint32)
    return jax.random.wrap_key_data(words, impl="threefry2x32")


class PolicyBackend:
    """A local flame_jax LLM (``flame_jax.policy``) behind the chat protocol.

    Loads a Hugging Face model directory (``config.json``, safetensors, tokenizer files) with
    :func:`flame_jax.policy.from_pretrained` and :func:`flame_jax.policy.load_tokenizer`, renders
    the messages with the tokenizer's chat template (the project's ``CHAT_TEMPLATE`` when it has
    none), decodes with the jitted KV-cache generator of :func:`flame_jax.policy.make_generator`
    and returns the decoded completion (special tokens skipped).

    Compiled programs: the prompt is left-padded to a power of two >= ``min_bucket`` (the prompt
    bucket) and ``max_tokens`` rounded up to one (the token bucket, which sizes the KV cache);
    each (prompt bucket, token bucket) pair compiles one program on first use, kept for the
    life of the backend. Temperature, ``top_p``, ``top_k``, the seed and the exact
    ``max_tokens`` are traced values (:class:`flame_jax.policy.SamplingParams`): no request
    compiles anything beyond :meth:`buckets`. ``seed`` (default 0) seeds the sampling key with
    all its 64 bits (:func:`seed_key`): same request, same answer. One request decodes at a time
    (the device is shared).

    Args:
      path: the model directory.
      dtype: parameter dtype ("float32" / "bfloat16"; None: as stored).
      max_prompt_tokens: longer prompts are refused (ValueError, i.e. HTTP 400).
      max_new_tokens: larger ``max_tokens`` are refused (ValueError, i.e. HTTP 400).
      min_bucket: the smallest prompt and token bucket.
    """

    def __init__(
        self,
        path,
        *,
        dtype: str | None = None,
        max_prompt_tokens: int = 4096,
        max_new_tokens: int = 4096,
        min_bucket: int = 16,
    ):
        for name, value in (
            ("max_prompt_tokens", max_prompt_tokens),
            ("max_new_tokens", max_new_tokens),
            ("min_bucket", min_bucket),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PolicyBackend: {name} must be an integer >= 1, got {value!r}")
        self.model, self.config = from_pretrained(path, dtype=dtype)
        self.tokenizer = load_tokenizer(path)
        self.max_prompt_tokens = max_prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.min_bucket = min_bucket
        eos = self.config.eos_token_id
        self._eos_ids = (
            tuple(eos) if isinstance(eos, list | tuple) else (() if eos is None else (eos,))
        )
        pad = self.config.pad_token_id
        self._pad_id = 0 if pad is None else int(pad)
        self._generators: dict[int, Any] = {}  # token bucket -> generator (its prompt buckets)
        self._lock = threading.Lock()

    def buckets(self) -> list[tuple[int, int]]:
        """Every (prompt bucket, token bucket) pair that a request can compile."""
        prompts = _powers_of_two(self.min_bucket, self.max_prompt_tokens)
        tokens = _powers_of_two(self.min_bucket, self.max_new_tokens)
        return [(p, t) for p in prompts for t in tokens]

    def compilations(self) -> int:
        """Programs compiled so far (at most ``len(self.buckets())``)."""
        return sum(g.compilations() for g in self._generators.values())

    def _generator(self, bucket: int):
        if bucket not in self._generators:
            self._generators[bucket] = make_generator(
                SamplingConfig(
                    max_new_tokens=bucket,
                    eos_ids=self._eos_ids,
                    pad_id=self._pad_id,
                    min_length_bucket=self.min_bucket,
                )
            )
        return self._generators[bucket]

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        top_p: float = 1.0,
        top_k: int = 0,
    ) -> str:
        if not 1 <= max_tokens <= self.max_new_tokens:
            raise ValueError(f"max_tokens must be in [1, {self.max_new_tokens}], got {max_tokens}")
        template = None if getattr(self.tokenizer, "chat_template", None) else CHAT_TEMPLATE
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=template, add_generation_prompt=True, tokenize=False
        )
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            raise ValueError("the prompt encodes to no tokens")
        if len(ids) > self.max_prompt_tokens:
            raise ValueError(
                f"the prompt has {len(ids)} tokens, more than {self.max_prompt_tokens}"
            )
        # padded here, to the prompt bucket: the generator's own padding is then shape-stable
        tokens, mask = left_pad(
            [ids], pad_id=self._pad_id, length=_power_of_two(len(ids), self.min_bucket)
        )
        sampling = SamplingParams(
            temperature=np.float32(temperature),
            top_k=np.int32(min(int(top_k), self.config.vocab_size)),  # >= vocab: off
            top_p=np.float32(top_p),
            max_new_tokens=np.int32(max_tokens),
        )
        key = seed_key(seed)
        with self._lock:
            generate = self._generator(_power_of_two(max_tokens, self.min_bucket))
            out = generate(self.model, tokens, mask, key=key, sampling=sampling)
            completion = np.asarray(out.tokens)[0, : int(np.asarray(out.lengths)[0])]
        return self.tokenizer.decode(completion.tolist(), skip_special_tokens=True)
