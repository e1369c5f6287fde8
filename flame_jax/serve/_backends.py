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

from flame_jax.consensus._members import (
    MemberError,
    RecommenderMember,
    parse_review_prompt,
    vignette_from_prompt,
)

__all__ = ["PolicyBackend", "RecommenderBackend"]


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


class PolicyBackend:
    """A local flame_jax LLM (``flame_jax.policy``) behind the chat protocol.

    Loads a Hugging Face model directory (``config.json``, safetensors, tokenizer files) with
    :func:`flame_jax.policy.from_pretrained` and :func:`flame_jax.policy.load_tokenizer`, renders
    the messages with the tokenizer's chat template (the project's ``CHAT_TEMPLATE`` when it has
    none), decodes with the jitted KV-cache generator of ``flame_jax.policy._sampling`` and
    returns the decoded completion (special tokens skipped).

    ``max_tokens`` is rounded up to a power of two for the compiled program (then the completion
    is cut to ``max_tokens`` tokens), and every distinct (length bucket, temperature) compiles its
    own generator, kept in a small cache. ``seed`` (default 0) seeds the sampling key: same
    request, same answer. One request decodes at a time (the device is shared).

    Args:
      path: the model directory.
      dtype: parameter dtype ("float32" / "bfloat16"; None: as stored).
      max_prompt_tokens: longer prompts are refused (ValueError, i.e. HTTP 400).
    """

    def __init__(self, path, *, dtype: str | None = None, max_prompt_tokens: int = 4096):
        import threading

        from flame_jax.policy import from_pretrained, load_tokenizer

        self.model, self.config = from_pretrained(path, dtype=dtype)
        self.tokenizer = load_tokenizer(path)
        self.max_prompt_tokens = max_prompt_tokens
        self._generators: dict = {}
        self._lock = threading.Lock()

    def _generator(self, new_tokens: int, temperature: float):
        from flame_jax.policy._sampling import SamplingConfig, make_generator

        key = (new_tokens, temperature)
        if key not in self._generators:
            if len(self._generators) >= 8:
                self._generators.pop(next(iter(self._generators)))
            eos = self.config.eos_token_id
            eos_ids = (
                tuple(eos) if isinstance(eos, list | tuple) else (() if eos is None else (eos,))
            )
            pad = self.config.pad_token_id
            self._generators[key] = make_generator(
                SamplingConfig(
                    max_new_tokens=new_tokens,
                    temperature=temperature,
                    eos_ids=eos_ids,
                    pad_id=0 if pad is None else int(pad),
                )
            )
        return self._generators[key]

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
    ) -> str:
        import jax

        from flame_jax.policy import CHAT_TEMPLATE
        from flame_jax.policy._sampling import left_pad

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
        bucket = 1 << max(int(max_tokens) - 1, 0).bit_length()
        pad = self.config.pad_token_id
        tokens, mask = left_pad([ids], pad_id=0 if pad is None else int(pad))
        with self._lock:
            generate = self._generator(bucket, float(temperature))
            out = generate(self.model, tokens, mask, key=jax.random.key(seed or 0))
            length = min(int(out.lengths[0]), int(max_tokens))
            completion = [int(t) for t in jax.device_get(out.tokens[0, :length])]
        return self.tokenizer.decode(completion, skip_special_tokens=True)
