"""SMILES -> molecular graph (``jraph.GraphsTuple``) with one-hot atom and bond features (RDKit).

One SMILES string becomes one graph: every atom a node, every bond two directed edges (both
directions, so a message passes each way). The fragments of a salt (``"[Na+].[Cl-]"``) stay in the
same graph, unconnected; a bare ion (``"[K+]"``) is one node and no edges. Hydrogens are not
nodes: they are counted in each heavy atom's features, as RDKit's default parser leaves them.
RDKit comes with the ``[data]`` extra and is imported on first use, so the rest of
``flame_jax.graph`` (batching of ready graphs, the encoders) works without it.

Atom features (``ATOM_FEATURES`` = 50 columns, each block one-hot, in this order):

====================  =====  =================================================================
block                 width  values
====================  =====  =================================================================
element               27     ``ELEMENTS`` (H C N O F P S Cl Br I B Si Se Na K Li Mg Ca Fe Zn Cu
                             Mn Co Al Pt Gd, in that order) + one "other" column
degree                7      number of bonded (heavy) neighbours 0, 1, 2, 3, 4, 5, >= 6
formal charge         5      <= -2, -1, 0, +1, >= +2
aromatic              1      1 if the atom is aromatic (a flag, not a one-hot pair)
chirality tag         4      unspecified, tetrahedral CW, tetrahedral CCW, other
total hydrogens       6      0, 1, 2, 3, 4, >= 5 (implicit + explicit)
====================  =====  =================================================================

Bond features (``BOND_FEATURES`` = 11 columns):

====================  =====  =================================================================
bond type             5      single, double, triple, aromatic, other (dative, ionic, ...)
conjugated            1      flag
in ring               1      flag
stereo                4      none, any, Z (incl. cis), E (incl. trans); atropisomers -> any
====================  =====  =================================================================
"""

import functools
from typing import TYPE_CHECKING

import numpy as np

from flame_jax.graph._compat import jraph

if TYPE_CHECKING:  # annotations name RDKit's types by their full path; beartype imports them
    import rdkit.Chem

__all__ = [
    "ATOM_FEATURES",
    "BOND_FEATURES",
    "ELEMENTS",
    "GraphError",
    "atom_features",
    "bond_features",
    "smiles_to_graph",
]

ELEMENTS = (
    "H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I", "B", "Si", "Se",
    "Na", "K", "Li", "Mg", "Ca", "Fe", "Zn", "Cu", "Mn", "Co", "Al", "Pt", "Gd",
)  # fmt: skip
_ELEMENT_INDEX = {symbol: i for i, symbol in enumerate(ELEMENTS)}
_MAX_DEGREE = 6  # buckets 0..5 and ">= 6"
_MAX_HYDROGENS = 5  # buckets 0..4 and ">= 5"

# Column offsets of each one-hot block.
_A_ELEMENT = 0
_A_DEGREE = _A_ELEMENT + len(ELEMENTS) + 1
_A_CHARGE = _A_DEGREE + _MAX_DEGREE + 1
_A_AROMATIC = _A_CHARGE + 5
_A_CHIRAL = _A_AROMATIC + 1
_A_HYDROGENS = _A_CHIRAL + 4
ATOM_FEATURES = _A_HYDROGENS + _MAX_HYDROGENS + 1

_B_TYPE = 0
_B_CONJUGATED = _B_TYPE + 5
_B_RING = _B_CONJUGATED + 1
_B_STEREO = _B_RING + 1
BOND_FEATURES = _B_STEREO + 4


def _rdkit():
    """RDKit's ``Chem`` and ``rdBase`` modules, imported on first use."""
    try:  # RDKit is heavy and optional (the [data] extra): graph's encoders work without it
        from rdkit import Chem, rdBase
    except ModuleNotFoundError as error:
        raise ImportError(
            "SMILES featurisation needs RDKit, the [data] extra: pip install 'flame-jax[data]'"
        ) from error
    return Chem, rdBase


@functools.cache
def _codes() -> tuple[dict, dict, dict]:
    """RDKit enum -> column tables: chirality tag, bond type and bond stereo."""
    Chem, _ = _rdkit()
    chiral = {
        Chem.ChiralType.CHI_UNSPECIFIED: 0,
        Chem.ChiralType.CHI_TETRAHEDRAL_CW: 1,
        Chem.ChiralType.CHI_TETRAHEDRAL_CCW: 2,
    }
    bond_type = {
        Chem.BondType.SINGLE: 0,
        Chem.BondType.DOUBLE: 1,
        Chem.BondType.TRIPLE: 2,
        Chem.BondType.AROMATIC: 3,
    }
    stereo = {
        Chem.BondStereo.STEREONONE: 0,
        Chem.BondStereo.STEREOANY: 1,
        Chem.BondStereo.STEREOZ: 2,
        Chem.BondStereo.STEREOCIS: 2,
        Chem.BondStereo.STEREOE: 3,
        Chem.BondStereo.STEREOTRANS: 3,
    }
    return chiral, bond_type, stereo


class GraphError(ValueError):
    """A SMILES string cannot become a molecular graph; the message names the drug and SMILES."""


def atom_features(atom: "rdkit.Chem.Atom") -> np.ndarray:
    """The ``ATOM_FEATURES`` one-hot / flag vector of one RDKit atom (float32).

    Examples:
        >>> from rdkit import Chem
        >>> x = atom_features(Chem.MolFromSmiles("[NH4+]").GetAtomWithIdx(0))
        >>> x.shape, int(x.sum())  # element, degree, charge, chirality and H blocks: 5 ones
        ((50,), 5)
    """
    x = np.zeros(ATOM_FEATURES, np.float32)
    x[_A_ELEMENT + _ELEMENT_INDEX.get(atom.GetSymbol(), len(ELEMENTS))] = 1.0
    x[_A_DEGREE + min(atom.GetDegree(), _MAX_DEGREE)] = 1.0
    x[_A_CHARGE + min(max(atom.GetFormalCharge(), -2), 2) + 2] = 1.0
    x[_A_AROMATIC] = float(atom.GetIsAromatic())
    chiral, _, _ = _codes()
    x[_A_CHIRAL + chiral.get(atom.GetChiralTag(), 3)] = 1.0
    x[_A_HYDROGENS + min(atom.GetTotalNumHs(), _MAX_HYDROGENS)] = 1.0
    return x


def bond_features(bond: "rdkit.Chem.Bond") -> np.ndarray:
    """The ``BOND_FEATURES`` one-hot / flag vector of one RDKit bond (float32).

    Examples:
        >>> from rdkit import Chem
        >>> b = Chem.MolFromSmiles("c1ccccc1").GetBondWithIdx(0)
        >>> bond_features(b).tolist()
        [0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    """
    _, bond_type, stereo = _codes()
    x = np.zeros(BOND_FEATURES, np.float32)
    x[_B_TYPE + bond_type.get(bond.GetBondType(), 4)] = 1.0
    x[_B_CONJUGATED] = float(bond.GetIsConjugated())
    x[_B_RING] = float(bond.IsInRing())
    x[_B_STEREO + stereo.get(bond.GetStereo(), 1)] = 1.0
    return x


def _parse(smiles: str, name: str) -> "rdkit.Chem.Mol":
    where = f"drug {name!r}: " if name else ""
    if not isinstance(smiles, str) or not smiles.strip():
        raise GraphError(f"{where}empty SMILES {smiles!r}")
    Chem, rdBase = _rdkit()
    with rdBase.BlockLogs():  # RDKit reports parse errors on stderr; we raise them instead
        mol = Chem.MolFromSmiles(smiles)
        if mol is not None:
            if mol.GetNumAtoms() == 0:
                raise GraphError(f"{where}SMILES {smiles!r} has no atoms")
            return mol
        # Parse again without sanitising to tell a syntax error from a chemistry error.
        raw = Chem.MolFromSmiles(smiles, sanitize=False)
        reason = "not valid SMILES syntax"
        if raw is not None:
            try:
                Chem.SanitizeMol(raw)
            except Exception as error:  # RDKit raises several unrelated exception types
                reason = str(error).strip() or type(error).__name__
    raise GraphError(f"{where}cannot parse SMILES {smiles!r}: {reason}")


@functools.lru_cache(maxsize=4096)
def _graph_arrays(smiles: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mol = _parse(smiles, "")
    nodes = np.stack([atom_features(a) for a in mol.GetAtoms()])
    bonds = list(mol.GetBonds())
    edges = np.zeros((2 * len(bonds), BOND_FEATURES), np.float32)
    senders = np.zeros(2 * len(bonds), np.int32)
    receivers = np.zeros(2 * len(bonds), np.int32)
    for k, bond in enumerate(bonds):
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        edges[2 * k] = edges[2 * k + 1] = bond_features(bond)
        senders[2 * k], receivers[2 * k] = i, j
        senders[2 * k + 1], receivers[2 * k + 1] = j, i
    for array in (nodes, edges, senders, receivers):
        array.setflags(write=False)  # cached: shared between callers
    return nodes, edges, senders, receivers


def smiles_to_graph(smiles: str, *, name: str = "") -> jraph.GraphsTuple:
    """One molecule as a single-graph ``jraph.GraphsTuple`` of host NumPy arrays.

    Args:
        smiles: a SMILES string; several fragments (``"."``) stay in one graph.
        name: the drug's name, quoted in error messages.

    Returns:
        ``GraphsTuple`` with ``nodes`` float32 [atoms, ATOM_FEATURES], ``edges`` float32
        [2 * bonds, BOND_FEATURES] (each bond twice: i->j at 2k, j->i at 2k+1), ``senders`` and
        ``receivers`` int32 [2 * bonds], ``n_node = [atoms]``, ``n_edge = [2 * bonds]`` (int32),
        ``globals = None``. The arrays are read-only (parsed graphs are cached).

    Raises:
        GraphError: the SMILES is empty or RDKit cannot parse or sanitise it; the message names
            the drug and the SMILES, and RDKit's reason where it gives one.

    Examples:
        >>> g = smiles_to_graph("CC(=O)Nc1ccc(O)cc1", name="Acetaminophen")
        >>> g.nodes.shape, g.edges.shape, g.n_node.tolist(), g.n_edge.tolist()
        ((11, 50), (22, 11), [11], [22])
        >>> smiles_to_graph("[Na+].[Cl-]").n_edge.tolist()
        [0]
        >>> smiles_to_graph("C1CC", name="Bad")
        Traceback (most recent call last):
        ...
        flame_jax.graph._featurize.GraphError: drug 'Bad': cannot parse SMILES 'C1CC': not valid SMILES syntax
    """  # noqa: E501
    try:
        nodes, edges, senders, receivers = _graph_arrays(smiles)
    except GraphError as error:
        if not name:
            raise
        raise GraphError(f"drug {name!r}: {error}") from None
    return jraph.GraphsTuple(
        nodes=nodes,
        edges=edges,
        senders=senders,
        receivers=receivers,
        globals=None,
        n_node=np.array([len(nodes)], np.int32),
        n_edge=np.array([len(edges)], np.int32),
    )
