"""SMILES -> GraphsTuple: the documented feature layout, fragments, ions, errors."""

import numpy as np
import pytest
from rdkit import Chem

from flame_jax.graph import (
    ATOM_FEATURES,
    BOND_FEATURES,
    ELEMENTS,
    GraphError,
    smiles_to_graph,
)

# The layout documented in flame_jax/graph/_featurize.py, written out independently.
ATOM_BLOCKS = (
    ("element", 27),
    ("degree", 7),
    ("charge", 5),
    ("aromatic", 1),
    ("chiral", 4),
    ("h", 6),
)
BOND_BLOCKS = (("type", 5), ("conjugated", 1), ("ring", 1), ("stereo", 4))
CHARGES = ("<=-2", -1, 0, 1, ">=2")
CHIRAL = ("none", "cw", "ccw", "other")
BOND_TYPES = ("single", "double", "triple", "aromatic", "other")
STEREO = ("none", "any", "Z", "E")


def _decode(row, blocks):
    out, start = {}, 0
    for name, width in blocks:
        part = row[start : start + width]
        start += width
        if width == 1:
            assert part[0] in (0.0, 1.0)
            out[name] = bool(part[0])
        else:
            assert sorted(part.tolist()) == [0.0] * (width - 1) + [1.0], (name, part)
            out[name] = int(np.argmax(part))
    assert start == len(row)
    return out


def atom(row):
    d = _decode(row, ATOM_BLOCKS)
    element = ELEMENTS[d["element"]] if d["element"] < len(ELEMENTS) else "other"
    return (element, d["degree"], CHARGES[d["charge"]], d["aromatic"], CHIRAL[d["chiral"]], d["h"])


def bond(row):
    d = _decode(row, BOND_BLOCKS)
    return (BOND_TYPES[d["type"]], d["conjugated"], d["ring"], STEREO[d["stereo"]])


def test_widths_and_element_list():
    assert ATOM_FEATURES == sum(w for _, w in ATOM_BLOCKS) == 50
    assert BOND_FEATURES == sum(w for _, w in BOND_BLOCKS) == 11
    assert len(ELEMENTS) == 26 and len(set(ELEMENTS)) == 26


def test_acetaminophen_features_edges_both_directions():
    g = smiles_to_graph("CC(=O)Nc1ccc(O)cc1", name="Acetaminophen")
    assert g.nodes.dtype == np.float32 and g.edges.dtype == np.float32
    assert g.senders.dtype == np.int32 and g.n_node.tolist() == [11] and g.n_edge.tolist() == [22]
    assert g.globals is None
    atoms = [atom(r) for r in g.nodes]
    assert atoms[:4] == [
        ("C", 1, 0, False, "none", 3),
        ("C", 3, 0, False, "none", 0),
        ("O", 1, 0, False, "none", 0),
        ("N", 2, 0, False, "none", 1),
    ]
    assert atoms[4] == ("C", 3, 0, True, "none", 0) and atoms[8] == ("O", 1, 0, False, "none", 1)
    assert sum(a[3] for a in atoms) == 6
    pairs = list(zip(g.senders.tolist(), g.receivers.tolist(), strict=True))
    assert pairs[0::2] == [(r, s) for s, r in pairs[1::2]]  # i->j then j->i
    np.testing.assert_array_equal(g.edges[0::2], g.edges[1::2])
    mol = Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1")
    want = {(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()}
    assert set(pairs[0::2]) == want
    bonds = [bond(r) for r in g.edges[0::2]]
    assert bonds[0] == ("single", False, False, "none")
    assert bonds[1] == ("double", True, False, "none")
    assert sorted(bonds).count(("aromatic", True, True, "none")) == 6


@pytest.mark.parametrize(
    ("smiles", "index", "want"),
    [
        ("C[C@@H](O)N", 1, ("C", 3, 0, False, "cw", 1)),
        ("C[C@H](O)N", 1, ("C", 3, 0, False, "ccw", 1)),
        ("[PH5]", 0, ("P", 0, 0, False, "none", 5)),
        ("C", 0, ("C", 0, 0, False, "none", 4)),
        ("F[S](F)(F)(F)(F)F", 1, ("S", 6, 0, False, "none", 0)),
        ("[O-2]", 0, ("O", 0, "<=-2", False, "none", 0)),
        ("[Fe+3]", 0, ("Fe", 0, ">=2", False, "none", 0)),
        ("[Mg+2]", 0, ("Mg", 0, ">=2", False, "none", 0)),
        ("[Xe]", 0, ("other", 0, 0, False, "none", 0)),
        ("[NH4+]", 0, ("N", 0, 1, False, "none", 4)),
    ],
)
def test_atom_buckets(smiles, index, want):
    assert atom(smiles_to_graph(smiles).nodes[index]) == want


@pytest.mark.parametrize(
    ("smiles", "index", "want"),
    [
        ("C/C=C\\C", 1, ("double", False, False, "Z")),
        ("C/C=C/C", 1, ("double", False, False, "E")),
        ("CC#N", 1, ("triple", False, False, "none")),
        ("C1CC1", 0, ("single", False, True, "none")),
        ("C=CC=C", 1, ("single", True, False, "none")),
    ],
)
def test_bond_buckets(smiles, index, want):
    g = smiles_to_graph(smiles)
    assert bond(g.edges[2 * index]) == want


def test_salts_and_bare_ions():
    salt = smiles_to_graph("[Mg+2].[O-]S([O-])(=O)=O")
    assert salt.n_node.tolist() == [6] and salt.n_edge.tolist() == [8]
    assert atom(salt.nodes[0]) == ("Mg", 0, ">=2", False, "none", 0)
    assert 0 not in salt.senders.tolist() + salt.receivers.tolist()  # the ion is unconnected
    kcl = smiles_to_graph("[K+].[Cl-]")
    assert kcl.n_node.tolist() == [2] and kcl.n_edge.tolist() == [0]
    assert kcl.edges.shape == (0, BOND_FEATURES) and kcl.senders.shape == (0,)
    ion = smiles_to_graph("[K+]")
    assert ion.nodes.shape == (1, ATOM_FEATURES) and ion.n_edge.tolist() == [0]


def test_every_cohort_smiles_parses(med_vocab):
    kinds = set()
    for smiles_list in med_vocab.smiles:
        for smiles in smiles_list:
            g = smiles_to_graph(smiles)
            mol = Chem.MolFromSmiles(smiles)
            assert g.n_node.tolist() == [mol.GetNumAtoms()]
            assert g.n_edge.tolist() == [2 * mol.GetNumBonds()]
            kinds.add(
                ("salt" if "." in smiles else "one") + ("-bonds" if mol.GetNumBonds() else "")
            )
    assert {"salt", "salt-bonds", "one-bonds"} <= kinds  # bare-ion salts, salts with bonds


@pytest.mark.parametrize(
    ("smiles", "reason"),
    [
        ("C1CC", "not valid smiles syntax"),
        ("C(C)(C)(C)(C)C", "valence"),
        ("c1cccc1", "kekulize"),
        ("", "empty smiles"),
        ("   ", "empty smiles"),
    ],
)
def test_errors_name_drug_and_smiles(smiles, reason):
    with pytest.raises(GraphError) as info:
        smiles_to_graph(smiles, name="Badamycin")
    message = str(info.value)
    assert "Badamycin" in message and repr(smiles) in message and reason in message.lower()
    assert isinstance(info.value, ValueError)


def test_error_is_raised_every_time_and_not_cached():
    for _ in range(2):
        with pytest.raises(GraphError, match="'C1CC'"):
            smiles_to_graph("C1CC")
    with pytest.raises(GraphError, match="^drug 'Other': cannot parse SMILES 'C1CC'"):
        smiles_to_graph("C1CC", name="Other")


def test_cached_arrays_are_read_only():
    g = smiles_to_graph("CCO")
    with pytest.raises(ValueError, match="read-only"):
        g.nodes[0, 0] = 5.0
    np.testing.assert_array_equal(smiles_to_graph("CCO").nodes, g.nodes)
