"""The restricted unpickler and ``import-pickles``: benign SafeDrug/GAMENet-style pickles (plain
pickle and dill, with a by-value ``Voc`` class as in voc_final.pkl) and hostile ones."""

import os
import pickle
import pickletools
import types
from collections import OrderedDict

import dill
import numpy as np
import pytest

import __main__
from flame_jax.cli.main import main
from flame_jax.data import (
    DatasetError,
    PickleRefusedError,
    import_pickles,
    load_dataset,
    safe_load,
    split_patients,
)


def _voc_class():
    """A Voc class as SafeDrug's processing.py defines it, living in ``__main__`` so that dill
    pickles it by value (code objects included), as in the published voc_final.pkl."""

    def __init__(self):
        self.idx2word = {}
        self.word2idx = {}

    def add_sentence(self, sentence):
        for word in sentence:
            if word not in self.word2idx:
                self.idx2word[len(self.word2idx)] = word
                self.word2idx[word] = len(self.word2idx)

    methods = {
        f.__name__: types.FunctionType(f.__code__, __main__.__dict__, f.__name__)
        for f in (__init__, add_sentence)
    }
    return type("Voc", (object,), {**methods, "__module__": "__main__"})


def _write_pickles(folder, dataset, *, style):
    """records_final / voc_final / ddi_A_final / ehr_adj_final / atc3toSMILES / ddi_mask_H of
    ``dataset`` in SafeDrug's layout; ``style`` "dill" (as published) or "plain"."""
    folder.mkdir()
    v = dataset.visits
    records, current = [], None
    for i in range(len(v)):
        if v.patient_id[i] != current:
            records.append([])
            current = v.patient_id[i]
        records[-1].append([v.diag[i].tolist(), v.proc[i].tolist(), v.med[i].tolist(), 0.5])
    kinds = {"diag_voc": dataset.diag_vocab, "pro_voc": dataset.proc_vocab,
             "med_voc": dataset.med_vocab}  # fmt: skip
    if style == "dill":
        voc_cls = _voc_class()
        voc = {}
        for key, vocab in kinds.items():
            voc[key] = voc_cls()
            voc[key].add_sentence(vocab.codes)
        dump = dill.dumps
    else:
        voc = {
            key: {"idx2word": dict(enumerate(vocab.codes)),
                  "word2idx": {c: i for i, c in enumerate(vocab.codes)}}
            for key, vocab in kinds.items()
        }  # fmt: skip
        dump = pickle.dumps
    m = dataset.num_meds
    files = {
        "records_final.pkl": records,
        "voc_final.pkl": voc,
        "ddi_A_final.pkl": dataset.ddi.astype(np.float64),
        "ehr_adj_final.pkl": np.ones((m, m)),
        "atc3toSMILES.pkl": {c: list(s) for c, s in
                             zip(dataset.med_vocab.codes, dataset.med_vocab.smiles, strict=True)},
        "ddi_mask_H.pkl": (np.arange(m * 5).reshape(m, 5) % 3 == 0).astype(np.float64),
    }  # fmt: skip
    for name, obj in files.items():
        (folder / name).write_bytes(dump(obj))
    return records


def test_voc_final_is_a_by_value_dill_class_with_code_objects():
    voc_cls = _voc_class()
    voc = voc_cls()
    voc.add_sentence(["4019", "4280", "4019"])
    data = dill.dumps({"diag_voc": voc})
    ops = {arg for op, arg, _ in pickletools.genops(data) if isinstance(arg, str)}
    assert {"_create_type", "_create_code", "_create_function"} <= ops
    loaded = safe_load(data, where="voc_final.pkl")["diag_voc"]
    assert loaded.idx2word == {0: "4019", 1: "4280"}
    assert loaded.word2idx == {"4019": 0, "4280": 1}
    assert type(loaded).__name__ == "Voc" and not hasattr(loaded, "add_sentence")


@pytest.mark.parametrize("style", ["dill", "plain"])
def test_import_round_trip(tiny, tmp_path, style):
    ds = tiny.dataset
    records = _write_pickles(tmp_path / "in", ds, style=style)
    out = tmp_path / "out"
    imported = import_pickles(tmp_path / "in", out)
    loaded = load_dataset(out)
    assert loaded.diag_vocab.codes == ds.diag_vocab.codes
    assert loaded.med_vocab.codes == ds.med_vocab.codes
    assert loaded.med_vocab.smiles == ds.med_vocab.smiles
    flat = [visit for patient in records for visit in patient]
    assert len(loaded.visits) == len(flat)
    for i, visit in enumerate(flat):
        for k, kind in enumerate(("diag", "proc", "med")):
            assert getattr(loaded.visits, kind)[i].tolist() == visit[k]
    np.testing.assert_array_equal(loaded.ddi, ds.ddi)
    patients = np.arange(1, len(records) + 1)
    for name, pids in split_patients(patients).items():
        np.testing.assert_array_equal(loaded.splits[name], pids)
    with np.load(out / "extras.npz") as extras:
        assert extras["ddi_mask_H"].shape == (ds.num_meds, 5)
    assert imported.info["import_pickles"]["files"][0] == "atc3toSMILES.pkl"


class _System:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _Eval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


class _Unknown:
    def __init__(self):
        self.x = 1


def _hostile(kind, marker):
    if kind == "os.system":
        return pickle.dumps([[[[0], [0], [0]]], _System(marker)]), "posix.system"
    if kind == "eval":
        return pickle.dumps([_Eval()]), "builtins.eval"
    if kind == "unknown class":
        return pickle.dumps([_Unknown()]), "pickles_test._Unknown"
    # dill: a function pickled by value (code object) that the pickle then calls

    def payload(path=str(marker)):
        open(path, "w").close()

    payload = types.FunctionType(
        payload.__code__, __main__.__dict__, "payload", payload.__defaults__
    )

    class Call:
        def __reduce__(self):
            return (payload, ())

    data = dill.dumps([Call()])
    assert b"_create_code" in data  # the function travels as a code object
    return data, "tries to call a function it defines (payload)"


@pytest.mark.parametrize("kind", ["os.system", "eval", "unknown class", "dill code"])
def test_hostile_pickles_are_refused_and_nothing_is_written(tiny, tmp_path, kind, capsys):
    folder = tmp_path / "in"
    _write_pickles(folder, tiny.dataset, style="dill")
    marker = tmp_path / "pwned"
    data, named = _hostile(kind, marker)
    (folder / "records_final.pkl").write_bytes(data)
    out = tmp_path / "out"
    with pytest.raises(PickleRefusedError, match="records_final.pkl") as info:
        import_pickles(folder, out)
    assert named in str(info.value)
    assert not out.exists() and not marker.exists()
    rc = main(["data", "import-pickles", str(folder), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "records_final.pkl" in err and named in err
    assert not out.exists() and not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_hostile_globals_in_dill_helpers_and_setattr():
    # dill's module importer and a setattr on something other than a pickled class.
    with pytest.raises(PickleRefusedError, match=r"dill\._dill\._import_module"):
        safe_load(dill.dumps(os), where="m.pkl")

    class SetAttr:
        def __reduce__(self):
            return (setattr, (OrderedDict, "x", 1))

    with pytest.raises(PickleRefusedError, match=r"s.pkl: refuses builtins.setattr on type"):
        safe_load(pickle.dumps(SetAttr()), where="s.pkl")
    assert not hasattr(OrderedDict, "x")

    class Refer:
        def __reduce__(self):
            return (DatasetError, ("x",))

    with pytest.raises(PickleRefusedError, match=r"global flame_jax.data._format.DatasetError"):
        safe_load(pickle.dumps(Refer()), where="r.pkl")


def test_bad_pickles(tiny, tmp_path):
    folder = tmp_path / "in"
    _write_pickles(folder, tiny.dataset, style="plain")
    (folder / "records_final.pkl").write_bytes(pickle.dumps([[[[0], [0], [10_000]]]]))
    with pytest.raises(DatasetError, match=r"patient 0, visit 0, med: index 10000 out of range"):
        import_pickles(folder, tmp_path / "out")
    (folder / "records_final.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="not a readable pickle"):
        import_pickles(folder, tmp_path / "out")
    (folder / "voc_final.pkl").unlink()
    with pytest.raises(DatasetError, match="voc_final.pkl: missing"):
        import_pickles(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_numpy_pickles_of_every_protocol():
    x = np.arange(12, dtype=np.int64).reshape(3, 4)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        np.testing.assert_array_equal(safe_load(pickle.dumps(x, protocol=protocol)), x)
        assert safe_load(pickle.dumps(np.float32(1.5), protocol=protocol)) == np.float32(1.5)


def test_dill_type_helpers_never_hand_out_builtins():
    # A pickle that asks dill's _load_type for `type` and calls it to build a class.
    data = (
        b"\x80\x04\x8c\ndill._dill\x94\x8c\n_load_type\x94\x93\x94\x8c\x04type\x94\x85\x94R\x94"
        b"\x8c\x01X\x94)}\x94\x87\x94R\x94."
    )
    with pytest.raises(PickleRefusedError, match="tries to call a builtin type it defines"):
        safe_load(data, where="t.pkl")
    with pytest.raises(PickleRefusedError, match=r"_load_type\('function'\)"):
        safe_load(data.replace(b"\x8c\x04type", b"\x8c\x08function"), where="t.pkl")
