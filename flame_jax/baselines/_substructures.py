"""SafeDrug's drug-to-substructure incidence: BRICS fragments of every drug's molecules (RDKit).

SafeDrug decomposes each drug's SMILES with BRICS, collects the distinct fragments over all
drugs, and masks its local (bipartite) output layer with the [meds, substructures] incidence, so
a drug's local score reads only the substructures it contains.
"""

from collections.abc import Sequence

import numpy as np

__all__ = ["brics_substructures"]


def brics_substructures(
    smiles_per_drug: Sequence[Sequence[str]],
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The [meds, substructures] float32 0/1 incidence of BRICS fragments, and the fragments.

    Fragments are sorted (deterministic columns). A drug without any parsable SMILES gets a
    private column of its own, so that its local score is still learnable (SafeDrug's code leaves
    such a drug with an all-zero row).

    Examples:
        >>> mask, frags = brics_substructures([["CCO"], ["[Na+].[Cl-]"], []])
        >>> mask.shape, mask.sum(axis=1).tolist()
        ((3, 3), [1.0, 1.0, 1.0])
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import BRICS

    RDLogger.DisableLog("rdApp.*")
    per_drug: list[set[str]] = []
    for smiles_list in smiles_per_drug:
        fragments: set[str] = set()
        for smiles in smiles_list:
            mol = Chem.MolFromSmiles(smiles)
            if mol is not None:
                fragments |= set(BRICS.BRICSDecompose(mol))
        per_drug.append(fragments)
    names = sorted(set().union(*per_drug)) if per_drug else []
    names += [f"<drug {i}>" for i, f in enumerate(per_drug) if not f]
    column = {name: j for j, name in enumerate(names)}
    mask = np.zeros((len(per_drug), len(names)), np.float32)
    for i, fragments in enumerate(per_drug):
        for name in fragments or {f"<drug {i}>"}:
            mask[i, column[name]] = 1.0
    return mask, tuple(names)
