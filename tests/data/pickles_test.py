"""The restricted unpickler and ``import-pickles``: benign SafeDrug/GAMENet-style pickles (plain
pickle and dill, with a by-value ``Voc`` class as in voc_final.pkl) and hostile ones."""

import os
import pickle
import pickletools
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import dill
import numpy as np
import pytest

import __main__
from flame_jax.cli.main import main
from flame_jax.data import (
    DatasetError,
    PickleRefusedError,
    _pickles,
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


def test_what_the_data_describes_is_bounded_by_the_file(tiny, tmp_path):
    """A list repeated by reference costs 2 bytes a copy, so 300,000 references to one visit of
    1,000 codes (a 0.6 MB file) describe 3e8 codes; and a vocabulary of 20,001 drugs asks for
    dense [meds, meds] graphs of 400 MB. Both are refused, naming the file, before any is built."""
    folder = tmp_path / "in"
    _write_pickles(folder, tiny.dataset, style="plain")
    patient = [[[0] * 1000, [0], [0]]]
    data = pickle.dumps([patient] * 300_000)
    assert len(data) < 700_000
    (folder / "records_final.pkl").write_bytes(data)
    with pytest.raises(DatasetError, match=r"records_final.pkl: refuses more than \d+ codes"):
        import_pickles(folder, tmp_path / "out")
    (folder / "records_final.pkl").write_bytes(pickle.dumps([patient] * 3))
    import_pickles(folder, tmp_path / "out")  # the same visit three times is fine
    voc = pickle.loads((folder / "voc_final.pkl").read_bytes())
    codes = [f"D{i}" for i in range(20_001)]
    voc["med_voc"] = {"idx2word": dict(enumerate(codes)), "word2idx": {}}
    (folder / "voc_final.pkl").write_bytes(pickle.dumps(voc))
    with pytest.raises(DatasetError, match=r"voc_final.pkl: 'med_voc' has 20001 drugs; at most"):
        import_pickles(folder, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


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


# --------------------------------------------------------------------------------------------------
# NumPy arrays are rebuilt from validated parts: hostile files that use only allowlisted globals


_RECONSTRUCT = np._core.multiarray._reconstruct
_FROMBUFFER = np._core.numeric._frombuffer
_SCALAR = np._core.multiarray.scalar


class _Reduce:
    """Pickles as ``func(*args)`` followed by a BUILD of ``state``: any call of the allowlisted
    NumPy globals, with any state, written by the real pickler."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _dtype(spec, state):
    return _Reduce(np.dtype, (spec, False, True), state)


def _array(shape, dtype, raw, *, fortran=False):
    return _Reduce(_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, shape, dtype, fortran, raw))


def _nested_lists(depth):
    """Opcodes of a list nested ``depth`` deep (the pickler itself would recurse too deep)."""
    return pickle.EMPTY_LIST * depth + pickle.APPEND * (depth - 1)


def _nested_tuples(depth):
    return pickle.EMPTY_TUPLE + pickle.TUPLE1 * depth


def _splice(obj, sentinel, opcodes):
    """Protocol-2 pickle of ``obj`` with the string ``sentinel`` replaced by ``opcodes``."""
    data = pickle.dumps(obj, protocol=2)
    text = sentinel.encode()
    old = pickle.BINUNICODE + len(text).to_bytes(4, "little") + text
    assert data.count(old) == 1
    return data.replace(old, opcodes)


def _hostile_file(case, m):
    """(file name, bytes, words the refusal names) of one hostile pickle of the corpus."""
    if case == "forged subarray dtype":
        # dtype('V8') whose BUILD state declares a subarray of object pointers: NumPy accepts it
        # and dereferences the array's bytes as PyObject* (SIGSEGV under stock pickle.loads).
        state = (3, "|", (np.dtype("O"), (1,)), None, None, 8, 1, 0)
        raw = b"\x41" * (8 * m * m)
        return "ddi_A_final.pkl", pickle.dumps(_array((m, m), _dtype("V8", state), raw)), "V8"
    if case == "data-less constructor":
        data = pickle.dumps(_Reduce(np.ndarray, ((m, m), "i8")), protocol=2)
        return "ddi_A_final.pkl", data, "numpy.ndarray"
    if case == "declared 8 GiB ndarray":
        data = pickle.dumps(_Reduce(np.ndarray, ((1 << 30,), "f8")), protocol=2)
        return "ddi_mask_H.pkl", data, "numpy.ndarray"
    if case == "declared 8 GiB _reconstruct":
        data = pickle.dumps(_Reduce(_RECONSTRUCT, (np.ndarray, (1 << 33,), b"b")), protocol=2)
        return "ddi_mask_H.pkl", data, "8589934592 bytes"
    if case == "one buffer shared by 3 GiB of arrays":
        args = (bytearray(1 << 20), np.dtype("u1"), (1 << 20,), "C")
        data = pickle.dumps([_Reduce(_FROMBUFFER, args) for _ in range(3 << 10)], protocol=5)
        assert len(data) < 2 << 20
        return "ddi_mask_H.pkl", data, "bytes of arrays"
    if case == "vocabulary word nested 100,000 deep":
        sentinel = "SENTINEL_WORD"
        voc = {key: {"idx2word": {0: sentinel}, "word2idx": {}}
               for key in ("diag_voc", "pro_voc", "med_voc")}  # fmt: skip
        voc["diag_voc"]["idx2word"][0] = sentinel + "!"
        data = _splice(voc, sentinel + "!", _nested_lists(100_000))
        return "voc_final.pkl", data, "diag_voc"
    if case == "tuple key nested 1,000,000 deep":
        # Hashing the key recurses in C without a depth check: SIGSEGV under stock pickle.loads.
        data = _splice({"SENTINEL": ["C"]}, "SENTINEL", _nested_tuples(1_000_000))
        return "atc3toSMILES.pkl", data, "deep"
    if case == "object array":
        return "ddi_A_final.pkl", pickle.dumps(np.zeros((m, m), dtype=object)), "'O8'"
    if case == "structured dtype":
        data = pickle.dumps(np.zeros((m, m), dtype=[("a", "<f8")]))
        return "ddi_A_final.pkl", data, "'V8'"
    raise AssertionError(case)


_HOSTILE_CASES = [
    "forged subarray dtype",
    "data-less constructor",
    "declared 8 GiB ndarray",
    "declared 8 GiB _reconstruct",
    "one buffer shared by 3 GiB of arrays",
    "vocabulary word nested 100,000 deep",
    "tuple key nested 1,000,000 deep",
    "object array",
    "structured dtype",
]
_CLI_MEMORY = 3 << 30  # a regression fails the test instead of eating the machine
# The child limits its own address space, then becomes the console script (no fork-time hook).
_LIMIT_AND_EXEC = (
    "import os, resource, sys; "
    f"resource.setrlimit(resource.RLIMIT_AS, ({_CLI_MEMORY}, {_CLI_MEMORY})); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def _run_cli(folder, out):
    """``flame-jax data import-pickles`` in a child process: a crash is an exit status here."""
    script = str(Path(sys.executable).with_name("flame-jax"))  # the installed console script
    cmd = [sys.executable, "-c", _LIMIT_AND_EXEC, script, "data", "import-pickles", str(folder),
           "--out", str(out)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.parametrize("case", _HOSTILE_CASES)
def test_hostile_numpy_and_nesting_pickles_exit_2_in_a_child_process(tiny, tmp_path, case):
    folder = tmp_path / "in"
    _write_pickles(folder, tiny.dataset, style="dill")
    name, data, named = _hostile_file(case, tiny.dataset.num_meds)
    (folder / name).write_bytes(data)
    out = tmp_path / "out"
    run = _run_cli(folder, out)
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert lines[0].startswith(f"flame-jax: error: {folder / name}: "), lines[0]
    assert named in lines[0], lines[0]
    assert not out.exists()


def test_the_child_process_harness_imports_benign_pickles(tiny, tmp_path):
    # The control of the test above: the same child process, memory limit and files, unmodified.
    folder = tmp_path / "in"
    _write_pickles(folder, tiny.dataset, style="dill")
    run = _run_cli(folder, tmp_path / "out")
    assert run.returncode == 0 and not run.stderr, run.stderr[-2000:]
    np.testing.assert_array_equal(load_dataset(tmp_path / "out").ddi, tiny.dataset.ddi)


_DTYPES = ["?", "i1", "<i2", "<i4", "<i8", "u1", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8",
           ">i4", ">u8", ">f8"]  # fmt: skip


@pytest.mark.parametrize("dtype", _DTYPES)
def test_numpy_round_trip_matches_numpy_exactly(dtype):
    rng = np.random.default_rng(sum(map(ord, dtype)))
    shapes = [(), (0,), (5,), (3, 4), (2, 0, 3), (2, 3, 4)]
    for shape in shapes:
        x = (rng.normal(size=shape) * 100).astype(dtype)
        for order in ("C", "F"):
            y = np.asarray(x, order=order)
            dumps = [pickle.dumps(y, protocol=p) for p in range(2, 6)] + [dill.dumps(y)]
            for data in dumps:
                got, want = safe_load(data), pickle.loads(data)
                assert type(got) is np.ndarray and got.dtype == want.dtype
                assert got.dtype.str == want.dtype.str and got.shape == want.shape
                assert got.tobytes(order="A") == want.tobytes(order="A")
                assert got.flags.f_contiguous == want.flags.f_contiguous
                assert got.flags.c_contiguous == want.flags.c_contiguous
                assert got.flags.writeable and got.flags.owndata
        for protocol in range(2, 6):
            s = x.reshape(-1)[:1].astype(dtype)[0] if x.size else np.zeros((), dtype)[()]
            got = safe_load(pickle.dumps(s, protocol=protocol))
            assert type(got) is type(s) and got.dtype == s.dtype and got.tobytes() == s.tobytes()


def test_big_endian_values_are_right():
    # NumPy's _reconstruct (protocols 2-4, dill) returns native order, _frombuffer (5) keeps it.
    x = np.arange(6, dtype=">i4").reshape(2, 3)
    for data in [pickle.dumps(x, protocol=p) for p in range(2, 6)] + [dill.dumps(x)]:
        got = safe_load(data)
        assert got.tolist() == [[0, 1, 2], [3, 4, 5]]
        assert got.dtype.str == pickle.loads(data).dtype.str
    assert safe_load(pickle.dumps(np.array([1.5], ">f8")))[0] == 1.5
    assert safe_load(pickle.dumps(np.array([1.5], ">f8"), protocol=5)).dtype.str == ">f8"


def test_arrays_inside_containers_tuples_keys_and_vocabulary_objects():
    voc_cls = _voc_class()
    voc = voc_cls()
    voc.add_sentence(["a", "b"])
    voc.extra = (np.arange(3), [np.float32(2.0)])
    shared = np.ones(2)
    obj = {
        "v": voc,
        "t": (shared, shared),
        np.int64(7): frozenset({np.int32(1)}),
        "s": {np.int8(2)},
    }
    got = safe_load(dill.dumps(obj), where="c.pkl")
    np.testing.assert_array_equal(got["v"].extra[0], np.arange(3))
    assert got["v"].extra[1] == [np.float32(2.0)] and type(got["v"].extra[1][0]) is np.float32
    assert got["t"][0] is got["t"][1]  # shared references stay shared
    assert got[np.int64(7)] == frozenset({1}) and got["s"] == {2}
    with pytest.raises(PickleRefusedError, match="k.pkl: .*array.*key"):
        safe_load(pickle.dumps(_Reduce(dict, ([(_array((1,), np.dtype("u1"), b"x"), 1)],))),
                  where="k.pkl")  # fmt: skip


def test_out_of_band_buffers_are_refused():
    data = pickle.dumps(np.arange(4), protocol=5, buffer_callback=lambda b: False)
    assert any(op.name == "NEXT_BUFFER" for op, _, _ in pickletools.genops(data))
    with pytest.raises(PickleRefusedError, match="b.pkl: .*out-of-band"):
        safe_load(data, where="b.pkl")


_F8 = (3, "<", None, None, None, -1, -1, 0)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (_array((2, 2), _dtype("f8", _F8), b"\0" * 31), "31 bytes for shape \\(2, 2\\)"),
        (_array((2, 2), _dtype("f8", _F8), b"\0" * 33), "33 bytes for shape"),
        (_array((-1, 2), _dtype("f8", _F8), b""), "shape"),
        (_array((2, "2"), _dtype("f8", _F8), b"\0" * 32), "shape"),
        (_array((1,), _dtype("O8", (3, "|", None, None, None, -1, -1, 63)), [1]), "'O8'"),
        (_array((1,), _dtype("U1", (3, "<", None, None, None, 4, 4, 8)), b"a\0\0\0"), "'U1'"),
        (_array((1,), _dtype("M8", (4, "<", None, None, None, -1, -1, 0, {})), b"\0" * 8), "M8"),
        (_array((1,), _dtype("c16", _F8), b"\0" * 16), "'c16'"),
        (
            _array(
                (1,),
                _dtype("f8", (3, "<", (np.dtype("f8"), (1,)), None, None, -1, -1, 0)),
                b"\0" * 8,
            ),
            "subarray",
        ),
        (
            _array((1,), _dtype("f8", (3, "<", None, ("a",), None, -1, -1, 0)), b"\0" * 8),
            "fields",
        ),
        (_array((1,), _dtype("f8", (3, "<", None, None, None, -1, -1, 63)), b"\0" * 8), "flags"),
        (_array((1,), _dtype("f8", (3, "|", None, None, None, -1, -1, 0)), b"\0" * 8), "'|'"),
        (_array((1,), _dtype("f8", (3, "<", None, None, None, 4, 4, 0)), b"\0" * 8), "size 4"),
        (_array((1,), "f8", b"\0" * 8), "dtype"),
        (_Reduce(_RECONSTRUCT, (np.ndarray, (0,), b"b")), "no data"),
        (
            _Reduce(
                _RECONSTRUCT,
                (np.ndarray, (0,), b"b"),
                (1, (1,), _dtype("u1", None), False, b"x", "extra"),
            ),
            "state",
        ),
        (_Reduce(np.ndarray, ((1,), "u1", b"x")), "numpy.ndarray"),
        (_Reduce(_SCALAR, (_dtype("O8", (3, "|", None, None, None, -1, -1, 63)), 1)), "'O8'"),
        (_Reduce(_SCALAR, (_dtype("f8", _F8), b"\0" * 4)), "4 bytes"),
        (_Reduce(_FROMBUFFER, (b"\0" * 8, _dtype("f8", _F8), (2,), "C")), "8 bytes"),
        (_Reduce(_FROMBUFFER, (b"\0" * 8, _dtype("f8", _F8), (1,), "X")), "order"),
        (_Reduce(dill._dill._create_array, (_FROMBUFFER, (b"\0" * 8,), _F8)), "_create_array"),
    ],
)
def test_forged_numpy_states_are_refused(obj, message):
    data = pickle.dumps([obj], protocol=4)
    with pytest.raises(PickleRefusedError, match=f"f.pkl: .*{message}"):
        safe_load(data, where="f.pkl")


def test_an_array_state_built_twice_or_reached_only_through_a_cycle_is_refused():
    # BUILD applied twice to one array (the second state would replace validated data).
    one = pickle.dumps(_array((1,), _dtype("u1", None), b"x"), protocol=2)
    twice = one[:-1] + one[one.index(b"(K\x01") : one.rindex(b"b")] + b"b."
    assert pickle.loads(twice).tolist() == [120]  # NumPy itself takes the last state
    with pytest.raises(PickleRefusedError, match="t.pkl: .*twice"):
        safe_load(twice, where="t.pkl")
    # A tuple that holds an array and, through a list, a tuple holding itself.
    inner = []
    outer = (inner, np.arange(2))
    inner.append((outer,))
    got = safe_load(pickle.dumps(outer), where="c.pkl")
    np.testing.assert_array_equal(got[1], np.arange(2))
    assert got[0][0][0] is got


def test_deep_nesting_and_huge_declarations_are_refused_in_process():
    with pytest.raises(PickleRefusedError, match="d.pkl: .*deep"):
        safe_load(_splice({"k": 1}, "k", _nested_tuples(50_000)), where="d.pkl")
    # The same depth through opcodes that keep a tuple: BUILD with a None state, and DUP.
    build_none = pickle.EMPTY_TUPLE + (pickle.TUPLE1 + pickle.NONE + pickle.BUILD) * 50_000
    assert str(pickle.loads(b"\x80\x02" + build_none[:40] + b".")).count("(") == 14  # 13 deep
    with pytest.raises(PickleRefusedError, match="b.pkl: .*deep"):
        safe_load(_splice({"k": 1}, "k", build_none), where="b.pkl")
    with pytest.raises(PickleRefusedError, match="u.pkl: .*deep"):
        safe_load(_splice({"k": 1}, "k", pickle.EMPTY_TUPLE + (pickle.DUP + pickle.TUPLE2) * 1001),
                  where="u.pkl")  # fmt: skip
    # Running out of recursion while loading (dill's class name is str()-ed) is a refusal too.
    name = b"cdill._dill\n_create_type\n(N" + _nested_lists(100_000) + b"NNtR."
    with pytest.raises(PickleRefusedError, match="n.pkl: .*too deeply nested"):
        safe_load(b"\x80\x02" + name, where="n.pkl")
    assert safe_load(_splice({"k": 1}, "k", _nested_tuples(100)), where="d.pkl")
    deep = safe_load(pickle.PROTO + b"\x02" + _nested_lists(100_000) + pickle.STOP, where="l.pkl")
    assert isinstance(deep, list)  # lists are not hashed: loading them is safe, using them is not
    with pytest.raises(PickleRefusedError, match=r"h.pkl: .*17179869184 bytes"):
        safe_load(pickle.dumps(_Reduce(_RECONSTRUCT, (np.ndarray, (1 << 32, 4), b"b"))),
                  where="h.pkl")  # fmt: skip


def test_running_out_of_memory_or_odd_smiles_are_refusals_naming_the_file(
    tiny, tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "in"
    _write_pickles(folder, tiny.dataset, style="plain")
    smiles = {c: [1.5] for c in tiny.dataset.med_vocab.codes}
    (folder / "atc3toSMILES.pkl").write_bytes(pickle.dumps(smiles))
    with pytest.raises(DatasetError, match=r"atc3toSMILES.pkl: .* lists a float"):
        import_pickles(folder, tmp_path / "out")
    (folder / "atc3toSMILES.pkl").unlink()

    def exhausted(*args):
        raise MemoryError

    monkeypatch.setattr(_pickles, "_matrix", exhausted)
    assert main(["data", "import-pickles", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"flame-jax: error: {folder / 'ddi_A_final.pkl'}: refused: too deeply nested or too "
        "large to use (MemoryError)"
    )
    assert not (tmp_path / "out").exists()
