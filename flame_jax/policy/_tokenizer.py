"""An offline tokenizer built from the project's own vocabulary, and the built-in tiny model.

``build_tiny_tokenizer`` trains a byte-level BPE (Hugging Face ``tokenizers``) on the given words
(drug names, code titles, prompt words): every string is encodable (unknown text falls back to
bytes), ``decode(encode(text)) == text`` including newlines, and frequent words become single
tokens. It is saved in Hugging Face format, so ``transformers.AutoTokenizer.from_pretrained``
loads it. Special tokens, in id order: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3, then
the entity placeholders ``<patient>``, ``<diag>``, ``<proc>``, ``<drug>`` (knowledge-fusion
slots) and the chat roles ``<|system|>``, ``<|user|>``, ``<|assistant|>``. No BOS is added
automatically. The chat template renders ``<|role|>\\ncontent\\n`` per message.

``write_tiny_model`` writes a directory with that tokenizer and a randomly initialised
``DecoderConfig.tiny`` decoder whose vocabulary fits it: a complete Hugging Face model directory
for the synthetic default and for tests. Nothing is downloaded.
"""

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

from flax import nnx

from flame_jax._io import atomic_directory
from flame_jax.policy._config import DecoderConfig
from flame_jax.policy._hf import write_weights
from flame_jax.policy._model import Decoder

__all__ = [
    "CHAT_TEMPLATE",
    "ENTITY_TOKENS",
    "PROMPT_WORDS",
    "ROLE_TOKENS",
    "SPECIAL_TOKENS",
    "build_tiny_tokenizer",
    "load_tokenizer",
    "write_tiny_model",
]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
ENTITY_TOKENS = ("<patient>", "<diag>", "<proc>", "<drug>")
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Words of the prompts and answers (FLAME's pi_cls / pi_list tasks, the consensus vignettes).
PROMPT_WORDS = (
    "You are a clinical pharmacist. Recommend medications for the current visit of the patient.",
    "Patient history: previous visits, diagnoses, procedures and medications.",
    "Current visit diagnoses: Current visit procedures: Previous medications:",
    "Should the patient take the candidate drug? Answer Yes or No.",
    "Answer: Yes",
    "Answer: No",
    "Initial medication list: Edit the list. Add one drug or remove one drug per line.",
    "Add: Remove: Keep: Final list: none",
    "Review the answer of another model and grade it from 0 to 1. Grade: Reason:",
    "The patient is a man woman aged years old admitted with",
    "visit visits drug drugs code codes list lists interaction interactions dose",
    "0 1 2 3 4 5 6 7 8 9 10 0.5 0.25 0.75",
)


def _trained_tokenizer(words: Iterable[str], extra: tuple[str, ...]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1_000_000,  # unbounded: merge until every word of the corpus is one token
        min_frequency=1,
        special_tokens=[*SPECIAL_TOKENS, *extra],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = []
    for phrase in sorted(set(words) | set(PROMPT_WORDS)):
        corpus += [phrase, " " + phrase, phrase + "\n"]
        for w in phrase.split():  # each word also at the start of a line, and after a space
            corpus += [w, " " + w]
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def _fast_tokenizer(words: Iterable[str], extra_special_tokens: tuple[str, ...]):
    import transformers

    extra = tuple(dict.fromkeys((*ENTITY_TOKENS, *ROLE_TOKENS, *extra_special_tokens)))
    bad = [t for t in extra if not t or t in SPECIAL_TOKENS]
    if bad:
        raise ValueError(f"extra_special_tokens: invalid or reserved tokens {bad!r}")
    words = list(words)
    bad = [w for w in words if not isinstance(w, str) or not w.strip()]
    if bad:
        raise ValueError(f"words: every word must be a non-blank string, got {bad[:3]!r}")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=_trained_tokenizer(words, extra),
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        extra_special_tokens=list(extra),
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_tokenizer(
    words: Iterable[str],
    path: str | os.PathLike,
    *,
    extra_special_tokens: tuple[str, ...] = (),
    overwrite: bool = False,
) -> Path:
    """Trains a byte-level BPE on ``words`` (+ ``PROMPT_WORDS``) and saves it in HF format.

    Args:
      words: strings the tokenizer should know as whole tokens where possible (drug names, code
        titles, ...); any other text still encodes (bytes).
      path: output folder (written atomically).
      extra_special_tokens: more never-split tokens, after the built-in ones.
      overwrite: replace an existing non-empty folder.

    Returns:
      the folder, loadable with ``load_tokenizer`` or ``transformers.AutoTokenizer``.

    Examples:
      >>> import tempfile, pathlib
      >>> out = build_tiny_tokenizer(["aspirin", "Acute kidney failure"],
      ...                            pathlib.Path(tempfile.mkdtemp()) / "tok")
      >>> tok = load_tokenizer(out)
      >>> tok.convert_ids_to_tokens(tok("aspirin <drug>")["input_ids"])
      ['aspirin', 'Ġ', '<drug>']
      >>> tok.decode(tok("Add: aspirin\\nRemove: ibuprofen")["input_ids"])
      'Add: aspirin\\nRemove: ibuprofen'
    """
    fast = _fast_tokenizer(words, tuple(extra_special_tokens))
    path = Path(path)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        fast.save_pretrained(tmp)
    return path


def load_tokenizer(path: str | os.PathLike):
    """``transformers.AutoTokenizer.from_pretrained(path)`` on a local folder (no download).

    Raises:
      FileNotFoundError: when ``path`` has no tokenizer files.
    """
    import transformers

    path = Path(path)
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{path}: no tokenizer.json or tokenizer_config.json")
    return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def write_tiny_model(
    path: str | os.PathLike,
    words: Iterable[str],
    *,
    config: DecoderConfig | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Writes a tokenizer built from ``words`` and a random tiny decoder into one HF folder.

    The decoder is ``config`` (default ``DecoderConfig.tiny()``) with ``vocab_size`` set to the
    tokenizer's size rounded up to a multiple of 64 and the special ids set to the tokenizer's.

    Args:
      path: output folder (written atomically).
      words: as for ``build_tiny_tokenizer``; e.g. the synthetic cohort's drug names and
        synonyms and its diagnosis and procedure titles.
      config: shape overrides; None: ``DecoderConfig.tiny()``.
      seed: initialisation seed (same seed, same bytes).
      overwrite: replace an existing non-empty folder.

    Returns:
      the folder: config.json, model.safetensors, tokenizer files.

    Examples:
      >>> import tempfile, pathlib
      >>> from flame_jax.policy import from_pretrained
      >>> out = write_tiny_model(pathlib.Path(tempfile.mkdtemp()) / "m", ["aspirin"])
      >>> model, cfg = from_pretrained(out)
      >>> cfg.vocab_size >= len(load_tokenizer(out)), cfg.pad_token_id, cfg.eos_token_id
      (True, 0, 2)
    """
    fast = _fast_tokenizer(words, ())
    vocab = -(-len(fast) // 64) * 64
    base = DecoderConfig.tiny() if config is None else config
    config = dataclasses.replace(
        base,
        vocab_size=vocab,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    model = Decoder(config, rngs=nnx.Rngs(seed))
    path = Path(path)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        fast.save_pretrained(tmp)
        write_weights(model, config, tmp)
    return path
