"""The list-editing grammar: whole drug names one per line, EOS at a line start or after a name."""

import itertools

import numpy as np

from flame_jax.flame import ListExamples, edit_bans, edit_grammar, parse_completions
from flame_jax.rl import DrugVocabulary


def _accepts(grammar, prev, ids):
    for a, b in itertools.pairwise([prev, *ids]):
        if not grammar.allowed[grammar.token_class[a], b]:
            return False
    return True


def test_every_name_list_is_accepted_and_free_text_is_not(dataset, encoder):
    vocab = DrugVocabulary(names=tuple(dataset.med_vocab.titles))
    size = len(encoder.tokenizer) + 7
    grammar = edit_grammar(encoder, vocab, size)
    nl = encoder.text_ids("\n")[0]
    header = encoder.text_ids("### Drugs to add:\n")[-1]  # the prompt's last token
    rng = np.random.default_rng(0)
    for _ in range(30):
        names = rng.choice(vocab.names, size=rng.integers(0, 4), replace=False)
        ids = [*encoder.text_ids("".join(n + "\n" for n in names)), encoder.eos_id]
        assert _accepts(grammar, header, ids), names
        if len(names):  # EOS right after the last name, without its newline
            assert _accepts(grammar, header, [*encoder.text_ids("\n".join(names)), encoder.eos_id])
    for text in ("Yes.", "Diagnoses", "the", "0.9%"):
        assert not _accepts(grammar, nl, encoder.text_ids(text)), text
    # a walk through the grammar gives lines that parse as drugs (no multi-token splices here)
    names_have_shared_pieces = len({t for n in vocab.names for t in encoder.text_ids(n)[1:]}) < sum(
        len(encoder.text_ids(n)) - 1 for n in vocab.names
    )
    walks = []
    for _ in range(60):
        prev, out = header, []
        while len(out) < 12:
            options = np.flatnonzero(grammar.allowed[grammar.token_class[prev]])
            prev = int(rng.choice(options))
            out.append(prev)
            if prev == encoder.eos_id:
                break
        if out[-1] == encoder.eos_id:  # finished walks only (a cut one may end mid-name)
            walks.append(out)
    lengths = np.array([len(w) for w in walks])
    tokens = np.full((len(walks), lengths.max()), encoder.pad_id)
    for i, w in enumerate(walks):
        tokens[i, : len(w)] = w
    episodes, _, _ = parse_completions(
        encoder, tokens, lengths, ["add"] * len(walks), [()] * len(walks), vocab
    )
    assert len(walks) > 10
    invalid = sum(e.num_invalid for e in episodes)
    if not names_have_shared_pieces:
        assert invalid == 0
    assert grammar.allowed.any(axis=1).all() and grammar.allowed[0, encoder.eos_id]
    assert grammar.token_class.shape == (size,) and grammar.allowed.shape[1] == size


def test_edit_bans_keep_each_edit_to_the_drugs_it_can_act_on(dataset, encoder):
    vocab = DrugVocabulary(names=tuple(dataset.med_vocab.titles))
    size = len(encoder.tokenizer) + 7
    grammar = edit_grammar(encoder, vocab, size)
    header = encoder.text_ids("### Drugs to add:\n")[-1]
    rng = np.random.default_rng(1)
    m = len(vocab.names)
    tasks, initial, cands = [], [], []
    for k in range(12):
        p0 = tuple(sorted(rng.choice(m, size=rng.integers(0, 5), replace=False).tolist()))
        rest = [d for d in range(m) if d not in p0]
        c = tuple(rng.choice(rest, size=3, replace=False).tolist()) if k % 3 else ()
        tasks.append("add" if k % 2 == 0 else "remove")
        initial.append(p0)
        cands.append(c if tasks[-1] == "add" else ())
    ex = ListExamples(None, None, None, None, tuple(tasks), tuple(initial), tuple(cands))
    bans = edit_bans(encoder, vocab, ex, size)
    assert bans.shape == (12, size) and not bans[:, encoder.eos_id].any()
    for k in range(12):
        if tasks[k] == "add":
            ok = set(cands[k]) or set(range(m)) - set(initial[k])
        else:
            ok = set(initial[k])
        for d in range(m):  # a name is generable in row k exactly when row k may act on it
            ids = [*encoder.text_ids(vocab.names[d] + "\n"), encoder.eos_id]
            allowed = _accepts(grammar, header, ids) and not bans[k, ids].any()
            assert allowed == (d in ok), (k, tasks[k], d)


def test_add_targets_list_the_candidates_first_in_their_order(dataset, encoder, previous):
    """With candidates in the prompt, the "add" target names the candidates it holds in the
    listed order (best-scored first), then any other drug by index; otherwise index order."""
    from flame_jax.flame import EditTask, PromptConfig, list_examples

    titles = dataset.med_vocab.titles
    config = PromptConfig(history=False, candidates=3)
    rng = np.random.default_rng(4)
    m = len(titles)
    tasks = []
    for k in range(10):
        p0 = rng.choice(m, size=3, replace=False)
        rest = rng.permutation([d for d in range(m) if d not in p0])
        cands = tuple(int(d) for d in rest[:3]) if k % 4 else ()
        add = tuple(sorted(int(d) for d in rng.choice(rest[:6], size=k % 4, replace=False)))
        remove = tuple(sorted(int(d) for d in p0[: k % 3]))
        tasks.append(EditTask(row=k, pre_list=tuple(sorted(p0.tolist())), add=add, remove=remove,
                              candidates=cands))  # fmt: skip
    ex = list_examples(dataset, encoder, tasks, config=config, previous=previous)
    for i, t in enumerate(tasks):
        for j, kind in enumerate(("add", "remove")):
            want = sorted(getattr(t, kind))
            if kind == "add" and t.candidates:
                first = [d for d in t.candidates if d in t.add]
                want = first + sorted(set(t.add) - set(first))
            ids = ex.targets[2 * i + j][ex.target_mask[2 * i + j]]
            want_ids = encoder.encode_target("\n".join(titles[d] for d in want))
            assert ids.tolist() == list(want_ids), (i, kind)
