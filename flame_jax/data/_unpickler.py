"""A restricted unpickler for untrusted pickles (the SafeDrug / GAMENet / MoleRec files).

Pickles from other projects are untrusted: unpickling calls whatever globals the file names, and
even NumPy's own globals crash the process when fed a forged state (a ``dtype('V8')`` whose state
declares a subarray of object pointers makes NumPy dereference the file's bytes as ``PyObject*``).
:func:`safe_load` allows only what these files need, calls nothing else, and never hands NumPy a
state from the file:

* plain containers and scalars (pickle opcodes, no globals), ``collections.OrderedDict`` and
  ``collections.defaultdict`` (with a list / set / dict / int factory);
* NumPy arrays and scalars, rebuilt from checked parts. ``numpy.dtype``, ``_reconstruct``,
  ``_frombuffer``, ``scalar`` and dill's ``_create_array`` (over ``_reconstruct`` only) are
  replaced by stand-ins that only record their arguments and BUILD state. Once the file is read,
  each stand-in becomes a real array: the dtype is made by us as ``np.dtype(order + code)`` with
  ``code`` in ``b1 i1 i2 i4 i8 u1 u2 u4 u8 f2 f4 f8`` (no object, string, void, datetime or
  complex kinds, no fields, subarray, metadata or flags; the byte order and item size must agree
  with the code), the shape must be a tuple of at most 32 non-negative ints, the raw data must be
  bytes (or protocol 2's latin-1 text) of exactly ``prod(shape) * itemsize`` bytes, and the array
  is ``np.frombuffer(raw, dtype).reshape(shape, order).copy()``, writable and owning its memory.
  Like NumPy, ``_reconstruct`` arrays come back in native byte order and ``_frombuffer`` arrays
  keep theirs. ``numpy.ndarray(shape, dtype)`` (a shape without data: uninitialised memory), an
  array without data or with two states, and protocol 5's out-of-band buffers are refused.
  ``_codecs.encode(text, "latin1")`` and ``bytes()`` are allowed for protocol 2's bytes;
  ``numpy.dtypes`` classes and dill's ``_create_dtypemeta`` become inert placeholders;
* dill's by-value class of ``voc_final.pkl`` (a ``Voc`` defined in ``__main__``). dill writes the
  class as ``_create_type(_load_type('type'), 'Voc', (object,), {..., '__init__':
  _create_function(_create_code(...), ...)})`` followed by ``builtins.setattr``. Here
  ``_create_type`` returns a fresh data-only class that ignores the pickled namespace,
  ``_load_type``, ``_create_function`` and ``_create_code`` return inert placeholders (no code
  object is ever built, no builtin type is handed out), and ``setattr`` is a no-op. Instances
  then get only their attribute dict (``idx2word``, ``word2idx``); calling a placeholder is
  refused.

Memory is bounded by the file: a pickle carries the bytes of its arrays, so the arrays it may
build (declared shapes included, shared buffers counted once per array) total at most
``64 * file size + 1 MiB`` bytes. Tuples nest at most 1000 deep (hashing a deeper one as a dict
key overflows the C stack), which is checked on the opcodes before anything is built; deeper
lists load but are refused where they are used (a vocabulary word must be a string or int).
Running out of memory or recursion depth is a refusal, not a crash.

Anything else (``os.system``, ``builtins.eval``, ``subprocess``, an unknown class) raises
:class:`PickleRefusedError` naming the file and the global, before it is imported.
"""

import io
import math
import pickle
import pickletools
import re
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from flame_jax.data._format import DatasetError

__all__ = ["PickleRefusedError", "PickledObject", "safe_load"]

_MEMORY_FACTOR = 64  # arrays may total 64 x the file's size + 1 MiB (they carry their bytes)
_MEMORY_SLACK = 1 << 20
_MAX_TUPLE_DEPTH = 1000
_MAX_DIMS = 32
_DTYPE_CODE = re.compile(r"([<>=|]?)(\?|b1|[iu][1248]|f[248])")
_RESOURCE_ERRORS = (
    RecursionError,
    MemoryError,
    OverflowError,
)  # NumPy's alloc error is a MemoryError


class PickleRefusedError(DatasetError):
    """A pickle names a global outside the allowlist, calls pickled code or forges NumPy data."""


class _Inert:
    """Stands in for a function or code object of a dill pickle; it can never be called."""

    def __init__(self, kind: str, name: str = "", where: str = ""):
        self.kind, self.name, self.where = kind, name, where

    def __setstate__(self, state: Any) -> None:  # dill BUILDs function attributes: ignored
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise PickleRefusedError(
            f"{self.where}: the pickle tries to call a {self.kind} it defines "
            f"({self.name or 'anonymous'}); pickled code is never run"
        )

    def __repr__(self) -> str:
        return f"<inert {self.kind} {self.name}>"


class _Pending:
    """A NumPy dtype, array or scalar as the pickle describes it: the call and the BUILD states,
    recorded and never forwarded to NumPy. :class:`_Rebuilder` makes the real object."""

    __slots__ = ("args", "kind", "states")

    def __init__(self, kind: str, args: tuple):
        self.kind, self.args, self.states = kind, args, []

    def __setstate__(self, state: Any) -> None:
        self.states.append(state)


class _NdarrayClass:
    """``numpy.ndarray``: an argument of ``_reconstruct``; calling it is refused."""

    def __init__(self, where: str):
        self.where = where

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise PickleRefusedError(
            f"{self.where}: refuses numpy.ndarray(...): an array made from a shape holds "
            "uninitialised memory, not data from the file"
        )


class PickledObject:
    """Base of the data-only classes that replace classes pickled by value (dill's ``Voc``)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {sorted(vars(self))}>"


_LOADABLE_TYPES = ("type", "object")
_FACTORIES = (list, set, dict, int)
_DTYPE_CLASSES = ("Float64DType", "Int64DType", "Float32DType", "Int32DType", "BoolDType")
_OUT_OF_BAND = ("NEXT_BUFFER", "READONLY_BUFFER")
_PUT = ("PUT", "BINPUT", "LONG_BINPUT")
_GET = ("GET", "BINGET", "LONG_BINGET")
_SMALL_TUPLES = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


def _memory_limit(size: int) -> int:
    return _MEMORY_FACTOR * size + _MEMORY_SLACK


def _check_opcodes(data: bytes, where: str) -> None:
    """Refuses out-of-band buffers and tuples nested deeper than ``_MAX_TUPLE_DEPTH``.

    Walks the opcodes with a stack of tuple depths (0 for anything else): tuples are immutable,
    so the depth of each is known where it is made; other containers stop a hash's recursion.
    ``DUP`` copies a depth and ``BUILD`` keeps it (a None state leaves a tuple as it is); no
    allowlisted call returns a tuple.
    """
    stack: list[int] = []
    marks: list[int] = []
    memo: dict[Any, int] = {}
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        if name in _OUT_OF_BAND:
            raise PickleRefusedError(
                f"{where}: refuses out-of-band buffers (protocol 5 PickleBuffer); "
                "write the pickle with its data in-band"
            )
        if name == "MARK":
            marks.append(len(stack))
            continue
        if name in _PUT:
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in _GET:
            stack.append(memo.get(arg, 0))
        elif name == "DUP":
            stack.append(stack[-1])
        elif name == "BUILD":
            stack.pop()  # the state; the object (a tuple, when the state is None) stays
        elif name == "TUPLE" or name in _SMALL_TUPLES:
            start = marks.pop() if name == "TUPLE" else len(stack) - _SMALL_TUPLES[name]
            depth = 1 + max(stack[start:], default=0)
            if depth > _MAX_TUPLE_DEPTH:
                raise PickleRefusedError(
                    f"{where}: refuses tuples nested more than {_MAX_TUPLE_DEPTH} deep"
                )
            del stack[start:]
            stack.append(depth)
        else:
            before = op.stack_before
            below = len(before)
            if pickletools.markobject in before:
                del stack[marks.pop() :]
                below = before.index(pickletools.markobject)
            if below:
                del stack[-below:]
            stack.extend([0] * len(op.stack_after))


class _Rebuilder:
    """Makes real NumPy objects from :class:`_Pending` parts, checking each part and the memory
    they add up to (``_memory_limit`` of the file's size)."""

    def __init__(self, where: str, size: int):
        self.where, self.size, self.limit = where, size, _memory_limit(size)
        self.spent = 0
        self.dtypes: dict[int, np.dtype] = {}

    def refuse(self, why: str) -> PickleRefusedError:
        return PickleRefusedError(f"{self.where}: {why}")

    def check_size(self, nbytes: int, what: str) -> None:
        if nbytes > self.limit:
            raise self.refuse(
                f"refuses {what} of {nbytes} bytes: more than {self.limit} bytes of arrays from "
                f"a {self.size}-byte file ({_MEMORY_FACTOR} x its size + 1 MiB)"
            )

    def charge(self, nbytes: int) -> None:
        self.spent += nbytes
        if self.spent > self.limit:
            raise self.refuse(
                f"refuses {self.spent} bytes of arrays from a {self.size}-byte file (at most "
                f"{_MEMORY_FACTOR} x its size + 1 MiB; a pickle carries the bytes of its arrays)"
            )

    def shape(self, shape: Any) -> tuple[int, ...]:
        if (
            type(shape) is not tuple
            or len(shape) > _MAX_DIMS
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise self.refuse(
                f"refuses an array shape that is not a tuple of at most {_MAX_DIMS} "
                "non-negative ints"
            )
        return shape

    def raw(self, raw: Any) -> bytes | bytearray:
        if type(raw) is str:  # protocol 2 from Python 2: the bytes as latin-1 text
            try:
                return raw.encode("latin1")
            except UnicodeEncodeError:
                raise self.refuse("refuses array data that is not latin-1 text") from None
        if type(raw) not in (bytes, bytearray):
            what = "an object array" if type(raw) is list else f"array data of {type(raw).__name__}"
            raise self.refuse(f"refuses {what} (only bytes of bool, int and float arrays)")
        return raw

    def dtype(self, pending: Any) -> np.dtype:
        if type(pending) is not _Pending or pending.kind != "dtype":
            raise self.refuse(f"refuses an array dtype that is a {type(pending).__name__}")
        if id(pending) in self.dtypes:
            return self.dtypes[id(pending)]
        args = pending.args
        if not 1 <= len(args) <= 3 or type(args[0]) is not str:
            raise self.refuse("refuses numpy.dtype(...) without a type code")
        if not all(type(a) in (bool, int) and a in (0, 1) for a in args[1:]):
            raise self.refuse(f"refuses numpy.dtype({args[0][:20]!r}, ...) flags")
        match = _DTYPE_CODE.fullmatch(args[0])
        if match is None:
            raise self.refuse(
                f"refuses dtype {args[0][:20]!r} (only bool, int and float arrays: "
                "b1 i1..i8 u1..u8 f2 f4 f8)"
            )
        order, code = match.groups()
        code = "b1" if code == "?" else code
        itemsize = int(code[1])
        if len(pending.states) > 1:
            raise self.refuse(f"refuses dtype {code!r} whose state is set twice")
        if pending.states:
            order = self.dtype_state(pending.states[0], code, itemsize)
        order = "|" if itemsize == 1 else order or "="
        dtype = np.dtype(order + code)
        self.dtypes[id(pending)] = dtype
        return dtype

    def dtype_state(self, state: Any, code: str, itemsize: int) -> str:
        """The byte order of NumPy's version 3 dtype state, which must describe a plain number."""
        if type(state) is not tuple or len(state) != 8 or state[0] != 3:
            raise self.refuse(f"refuses the state of dtype {code!r} (expected NumPy's version 3)")
        _, order, subarray, names, fields, elsize, alignment, flags = state
        if subarray is not None:
            raise self.refuse(f"refuses dtype {code!r} with a subarray")
        if names is not None or fields is not None:
            raise self.refuse(f"refuses dtype {code!r} with fields")
        if type(flags) is not int or flags != 0:
            raise self.refuse(f"refuses dtype {code!r} with flags (object or structured data)")
        if type(elsize) is not int or elsize not in (-1, itemsize):
            raise self.refuse(f"refuses dtype {code!r} that declares item size {elsize!r}")
        if type(alignment) is not int or alignment not in (-1, 1, 2, 4, 8, 16):
            raise self.refuse(f"refuses dtype {code!r} that declares alignment {alignment!r}")
        if type(order) is not str or order not in ("<", ">", "=", "|"):
            raise self.refuse(f"refuses dtype {code!r} with byte order {order!r}")
        if order == "|" and itemsize > 1:
            raise self.refuse(f"refuses dtype {code!r} of {itemsize} bytes with byte order '|'")
        return order

    def from_parts(
        self, raw: Any, dtype: np.dtype, shape: tuple[int, ...], fortran: bool
    ) -> np.ndarray:
        raw = self.raw(raw)
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if len(raw) != nbytes:
            raise self.refuse(
                f"refuses array data of {len(raw)} bytes for shape {shape} of {dtype.str}: "
                f"expected {nbytes}"
            )
        self.charge(nbytes)
        flat = np.frombuffer(raw, dtype=dtype, count=count)
        return flat.reshape(shape, order="F" if fortran else "C").copy(order="K")

    def build(self, pending: _Pending) -> Any:
        kind, args, states = pending.kind, pending.args, pending.states
        if kind == "dtype":
            return self.dtype(pending)
        if kind != "array" and states:
            raise self.refuse(f"refuses a state set on a NumPy {kind}")
        if kind == "scalar":
            dtype = self.dtype(args[0])
            raw = self.raw(args[1] if len(args) == 2 else None)
            if len(raw) != dtype.itemsize:
                raise self.refuse(f"refuses scalar data of {len(raw)} bytes for {dtype.str}")
            self.charge(dtype.itemsize)
            return np.frombuffer(raw, dtype=dtype, count=1)[0]
        if kind == "frombuffer":
            if len(args) != 4 or args[3] not in ("C", "F"):
                raise self.refuse("refuses numpy _frombuffer(...) without a 'C' or 'F' order")
            buf, dtype, shape, order = args
            return self.from_parts(buf, self.dtype(dtype), self.shape(shape), order == "F")
        if not states:
            raise self.refuse("refuses an array with no data (_reconstruct without a state)")
        if len(states) > 1:
            raise self.refuse("refuses an array whose state is set twice")
        state = states[0]
        if type(state) is tuple and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if type(state) is not tuple or len(state) != 4:
            raise self.refuse("refuses an array state that is not (1, shape, dtype, order, data)")
        shape, dtype, fortran, raw = state
        if type(fortran) not in (bool, int) or fortran not in (0, 1):
            raise self.refuse("refuses an array state whose order flag is not a bool")
        array = self.from_parts(raw, self.dtype(dtype), self.shape(shape), bool(fortran))
        # NumPy's __setstate__ returns native byte order: so do we.
        return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def _containers(obj: Any) -> Iterator[Any] | None:
    """The objects ``obj`` holds that may hold or be a :class:`_Pending` (None for a leaf)."""
    if type(obj) in (list, tuple, set, frozenset):
        return iter(obj)
    if isinstance(obj, dict):
        return (x for item in obj.items() for x in item)
    if isinstance(obj, PickledObject):
        return iter((vars(obj),))
    return None


def _resolve(root: Any, build: Callable[[_Pending], Any], where: str) -> Any:
    """``root`` with every :class:`_Pending` it reaches replaced by ``build(pending)``.

    An iterative post-order walk: lists, dicts and sets are fixed in place, tuples and
    frozensets holding a replaced object are rebuilt. A tuple reached again through a list
    inside itself is fixed by a second pass; the passes stop when one changes nothing.
    """
    done: dict[int, Any] = {}
    alive: list[Any] = []  # every object whose id is a key of `done` or `seen`, so ids are unique

    def new(x: Any) -> Any:
        return done.get(id(x), x)

    for _ in range(4):
        changed = False
        seen: set[int] = set()
        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:
            obj, ready = stack.pop()
            if not ready:
                if id(obj) in seen:
                    continue
                seen.add(id(obj))
                alive.append(obj)
                if type(obj) is _Pending:
                    if id(obj) not in done:
                        done[id(obj)] = build(obj)
                        changed = True
                    continue
                children = _containers(obj)
                if children is not None:
                    stack.append((obj, True))
                    stack.extend((c, False) for c in children if id(c) not in done)
                continue
            t = type(obj)
            if t in (tuple, frozenset):
                if id(obj) not in done and any(id(x) in done for x in obj):
                    done[id(obj)] = t(new(x) for x in obj)
                    changed = True
                continue
            if not any(id(x) in done for x in (_containers(obj) or ())):
                continue
            changed = True
            try:
                if t is list:
                    obj[:] = [new(x) for x in obj]
                elif t is set:
                    items = [new(x) for x in obj]
                    obj.clear()
                    obj.update(items)
                elif isinstance(obj, dict):
                    pairs = [(new(k), new(v)) for k, v in obj.items()]
                    obj.clear()
                    obj.update(pairs)
            except TypeError:
                raise PickleRefusedError(
                    f"{where}: refuses a NumPy array as a dict key or set member"
                ) from None
        if not changed:
            return new(root)
    raise PickleRefusedError(f"{where}: refuses NumPy arrays inside tuples that contain themselves")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, where: str, rebuilder: "_Rebuilder"):
        super().__init__(file)
        self.where, self.rebuilder = where, rebuilder
        self.pending = 0  # stand-ins made: without any, there is nothing to resolve
        self.ndarray = _NdarrayClass(where)
        self.allowed: dict[tuple[str, str], Any] = {}
        where_ = where

        def load_type(name: str) -> _Inert:
            # Only the metaclass and base of a by-value class, which create_type ignores; the
            # real builtins never leave the unpickler.
            if name not in _LOADABLE_TYPES:
                raise PickleRefusedError(f"{where_}: refuses dill._dill._load_type({name!r})")
            return _Inert("builtin type", name, where_)

        def create_type(metaclass: Any, name: Any, bases: Any, namespace: Any) -> type:
            return type(str(name), (PickledObject,), {"__module__": "flame_jax.pickled"})

        def create_function(code: Any, globs: Any, name: Any = "", *args: Any) -> _Inert:
            return _Inert("function", str(name), where_)

        def create_code(*args: Any) -> _Inert:
            return _Inert("code object", "", where_)

        def create_cell(*args: Any) -> _Inert:
            return _Inert("cell", "", where_)

        def setattr_(obj: Any, name: Any, value: Any) -> None:
            if not (isinstance(obj, type) and issubclass(obj, PickledObject)):
                raise PickleRefusedError(
                    f"{where_}: refuses builtins.setattr on {type(obj).__name__} ({name!r})"
                )

        def default_dict(factory: Any = None, *args: Any) -> defaultdict:
            if factory is not None and factory not in _FACTORIES:
                raise PickleRefusedError(f"{where_}: refuses defaultdict factory {factory!r}")
            return defaultdict(factory, *args)

        reconstruct = self.reconstruct  # one bound method: create_array compares identity

        def create_array(f: Any, args: Any, state: Any, npdict: Any = None) -> _Pending:
            # dill's ndarray: f(*args) then __setstate__; only NumPy's own reconstructor.
            if f is not reconstruct or npdict or type(args) is not tuple:
                raise PickleRefusedError(
                    f"{where_}: refuses dill._dill._create_array of a {type(f).__name__} "
                    "(only numpy's _reconstruct)"
                )
            array = reconstruct(*args)
            array.__setstate__(state)
            return array

        def create_dtypemeta(scalar_type: Any = None) -> _Inert:
            return _Inert("NumPy DType class", "", where_)

        for dill_mod in ("dill._dill", "dill.dill"):
            self.allowed[(dill_mod, "_create_array")] = create_array
            self.allowed[(dill_mod, "_create_dtypemeta")] = create_dtypemeta
            self.allowed[(dill_mod, "_load_type")] = load_type
            self.allowed[(dill_mod, "_create_type")] = create_type
            self.allowed[(dill_mod, "_create_function")] = create_function
            self.allowed[(dill_mod, "_create_code")] = create_code
            self.allowed[(dill_mod, "_create_cell")] = create_cell
        for builtins in ("builtins", "__builtin__"):
            self.allowed[(builtins, "setattr")] = setattr_
            self.allowed[(builtins, "__main__")] = {}  # dill's globals of a __main__ function
            for factory in _FACTORIES:
                self.allowed[(builtins, factory.__name__)] = factory
            self.allowed[(builtins, "frozenset")] = frozenset

        def latin1(text: Any, encoding: Any = "utf-8", *args: Any) -> bytes:
            # Protocol-2 pickles of NumPy arrays carry their bytes as latin-1 text.
            if type(text) is not str or str(encoding).lower() not in ("latin1", "latin-1"):
                raise PickleRefusedError(f"{where_}: refuses _codecs.encode(...) but to latin-1")
            return text.encode("latin1")

        def empty_bytes(*args: Any) -> bytes:
            # Protocol 2 writes b"" (an empty array's data) as bytes(); nothing else is allowed.
            if args:
                raise PickleRefusedError(f"{where_}: refuses bytes(...) with arguments")
            return b""

        self.allowed[("_codecs", "encode")] = latin1
        self.allowed[("__builtin__", "bytes")] = self.allowed[("builtins", "bytes")] = empty_bytes
        self.allowed[("collections", "OrderedDict")] = OrderedDict
        self.allowed[("collections", "defaultdict")] = default_dict
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            self.allowed[(mod, "_reconstruct")] = reconstruct
            self.allowed[(mod, "scalar")] = self.scalar
        for mod in ("numpy.core.numeric", "numpy._core.numeric"):
            self.allowed[(mod, "_frombuffer")] = self.frombuffer
        self.allowed[("numpy", "ndarray")] = self.ndarray
        self.allowed[("numpy", "dtype")] = self.dtype
        for name in _DTYPE_CLASSES:
            self.allowed[("numpy.dtypes", name)] = _Inert("NumPy DType class", name, where)

    def make(self, kind: str, args: tuple) -> _Pending:
        self.pending += 1
        return _Pending(kind, args)

    def dtype(self, *args: Any) -> _Pending:
        return self.make("dtype", args)

    def scalar(self, *args: Any) -> _Pending:
        return self.make("scalar", args)

    def frombuffer(self, *args: Any) -> _Pending:
        return self.make("frombuffer", args)

    def reconstruct(self, subtype: Any, shape: Any, typecode: Any) -> _Pending:
        """NumPy's ``_reconstruct(ndarray, (0,), b"b")``; the data comes with the BUILD state."""
        if subtype is not self.ndarray or typecode not in (b"b", "b"):
            raise PickleRefusedError(f"{self.where}: refuses _reconstruct of {subtype!r}")
        self.rebuilder.check_size(math.prod(self.rebuilder.shape(shape)), "an array")
        return self.make("array", ())

    def find_class(self, module: str, name: str) -> Any:
        if name == "__dict__":
            return {}  # dill's globals of a pickled function: an empty namespace, nothing imported
        try:
            value = self.allowed[(module, name)]
        except KeyError:
            raise PickleRefusedError(
                f"{self.where}: refuses to load global {module}.{name} (only NumPy arrays, "
                "plain containers and vocabulary objects are allowed)"
            ) from None
        if isinstance(value, dict):
            return {}  # a fresh empty namespace each time
        return value

    def persistent_load(self, pid: Any) -> Any:
        raise PickleRefusedError(f"{self.where}: refuses persistent id {pid!r}")


def safe_load(data: bytes, *, where: str = "pickle") -> Any:
    """Unpickles ``data`` with the allowlist of the module docstring.

    Raises:
      PickleRefusedError: a disallowed global (named in the message), pickled code is called,
        NumPy data is forged or too large for the file, or the pickle nests too deep.
      DatasetError: the bytes are not a valid pickle.

    Examples:
      >>> import pickle
      >>> import numpy as np
      >>> safe_load(pickle.dumps({"a": [1, 2], "b": np.arange(3)}))
      {'a': [1, 2], 'b': array([0, 1, 2])}
      >>> safe_load(pickle.dumps(print), where="x.pkl")  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      flame_jax.data._unpickler.PickleRefusedError: x.pkl: refuses to load global builtins.print ...
    """
    try:
        _check_opcodes(data, where)
        rebuilder = _Rebuilder(where, len(data))
        unpickler = _RestrictedUnpickler(io.BytesIO(data), where, rebuilder)
        obj = unpickler.load()
        return _resolve(obj, rebuilder.build, where) if unpickler.pending else obj
    except PickleRefusedError:
        raise
    except _RESOURCE_ERRORS as e:
        raise PickleRefusedError(
            f"{where}: refused: too deeply nested or too large to read ({type(e).__name__})"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
            AttributeError, KeyError) as e:  # fmt: skip
        raise DatasetError(f"{where}: not a readable pickle ({type(e).__name__}: {e})") from None
