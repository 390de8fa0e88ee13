"""PDB / mmCIF files through gemmi: the only reader and writer of atomic
coordinates in the package.

* ``read_structure``: a ``gemmi.Structure`` with errors that name the file;
* ``read_pdb``: positions (M, N, 3) A of every model (+ B-factors);
* ``read_coordinates``: positions (N, 3) A of every atom record (ATOM and
  HETATM) of the first model, in file order (e.g. the structure a set of
  normal-mode files was computed on: one mode line per atom);
* ``write_pdb``: pseudo-atoms as CA atoms, one model or M models, B-factor
  column = amplitudes (per model when they change), occupancy = learned
  amplitudes in [0, 1] when given.  Atomic.
"""
import os

import numpy as np

from ..fileio import atomic_write

#: first line of every PDB written here
PSEUDO_ATOM_REMARK = ('REMARK   1 continuousflex_geodl pseudo-atoms (Gaussian centres, A); '
                      'B-factor = amplitude')


def read_structure(path, what='atomic model', merge_chain_parts=True):
    """``gemmi.Structure`` of a PDB or mmCIF file; FileNotFoundError /
    ValueError naming the file.  ``merge_chain_parts=False`` keeps the atoms
    in file order (a chain split in parts, e.g. its ligands after another
    chain, is not regrouped)."""
    import gemmi
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError('%s not found: %s' % (what[:1].upper() + what[1:], path))
    try:
        return gemmi.read_structure(path, merge_chain_parts=merge_chain_parts)
    except Exception as exc:
        raise ValueError('Cannot read the %s %s (%s): give a PDB or mmCIF file'
                         % (what, path, ' '.join(str(exc).split())[:200])) from None


def _atoms(model):
    return [a for ch in model for r in ch for a in r]


def read_pdb(path, return_bfactors=False):
    """All models' atom positions of a PDB/mmCIF file -> (M, N, 3) A
    (and (N,) B-factors of the first model if ``return_bfactors``, (M, N)
    those of every model if it is ``'all'``); atoms in file order."""
    st = read_structure(path, 'PDB file', merge_chain_parts=False)
    models = [np.array([(a.pos.x, a.pos.y, a.pos.z) for a in _atoms(mdl)]) for mdl in st]
    if not models or not len(models[0]):
        raise ValueError('The PDB file %s contains no atoms' % path)
    if len({len(m) for m in models}) > 1:
        raise ValueError('The models of %s have different numbers of atoms' % path)
    pos = np.stack(models)
    if return_bfactors == 'all':
        return pos, np.array([[a.b_iso for a in _atoms(mdl)] for mdl in st])
    if return_bfactors:
        return pos, np.array([a.b_iso for a in _atoms(st[0])])
    return pos


def read_coordinates(path):
    """(N, 3) positions (A) of all atom records of the first model, file order."""
    st = read_structure(path, 'PDB file', merge_chain_parts=False)
    atoms = _atoms(st[0]) if len(st) else []
    if not atoms:
        raise ValueError('No atoms found in %s.' % path)
    return np.array([(a.pos.x, a.pos.y, a.pos.z) for a in atoms])


def write_pdb(path, positions, amplitudes=None, chain='A', residue='ALA', remarks=(),
              occupancies=None):
    """Pseudo-atoms as CA atoms of a PDB file; positions (M, N, 3) write M models.

    The B-factor column carries the amplitudes, (N,) for every model or
    (M, N) one row per model (scaled so that the largest is 999 when they
    exceed the column).  ``occupancies`` (N,) or (M, N) in [0, 1] (default
    1), e.g. learned amplitudes relative to the reference.  ``chain``: one chain ID, or one per
    atom (a new chain, after a TER record, wherever it changes).
    ``remarks``: extra REMARK lines.  Residue numbers are atom numbers (mod
    10000).  Written atomically with gemmi.  Returns ``path``.
    """
    import gemmi
    pos = np.asarray(positions, dtype=float)
    if pos.ndim == 2:
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise ValueError('write_pdb: positions must be (N, 3) or (M, N, 3), got %s'
                         % (pos.shape,))
    n = pos.shape[1]
    if not np.all(np.isfinite(pos)):
        raise ValueError('write_pdb: positions contain NaN or Inf')
    if np.abs(pos).max(initial=0) >= 1e4:
        raise ValueError('write_pdb: coordinates beyond the PDB format (|x| >= 10000 A)')
    b = np.zeros(n) if amplitudes is None else np.asarray(amplitudes, float)
    if b.ndim == 2 and b.shape[0] == 1:
        b = b[0]
    if b.shape not in ((n,), (len(pos), n)):
        raise ValueError('write_pdb: %s amplitudes for %d models of %d atoms'
                         % (b.shape, len(pos), n))
    if b.size and np.abs(b).max() >= 1000:
        b = b * (999.0 / np.abs(b).max())
    b = np.broadcast_to(b, (len(pos), n))
    occ = np.ones(n) if occupancies is None else np.asarray(occupancies, float)
    if occ.shape not in ((n,), (len(pos), n)) or not np.all(np.isfinite(occ)):
        raise ValueError('write_pdb: occupancies must be finite, (N,) or (M, N)')
    occ = np.broadcast_to(np.clip(occ, 0.0, 1.0), (len(pos), n))
    chains = [chain] * n if isinstance(chain, str) else [str(c) for c in chain]
    if len(chains) != n or any(len(c) != 1 for c in chains):
        raise ValueError('write_pdb: chain must be one character or one per atom')

    st = gemmi.Structure()
    st.raw_remarks = [PSEUDO_ATOM_REMARK] + ['REMARK   2 %s' % r for r in remarks]
    element = gemmi.Element('C')
    for m, p in enumerate(pos):
        model = gemmi.Model(str(m + 1))
        for i, (x, y, z) in enumerate(p):
            if i == 0 or chains[i] != chains[i - 1]:
                model.add_chain(gemmi.Chain(chains[i]))
                ch = model[len(model) - 1]
            res = gemmi.Residue()
            res.name, res.seqid = residue, gemmi.SeqId((i + 1) % 10000, ' ')
            res.het_flag = 'A'
            atom = gemmi.Atom()
            atom.name, atom.element = 'CA', element
            atom.pos, atom.occ, atom.b_iso = (gemmi.Position(x, y, z), float(occ[m, i]),
                                              float(b[m, i]))
            res.add_atom(atom)
            ch.add_residue(res)
        st.add_model(model)
    st.setup_entities()
    for ent in st.entities:  # every chain is a polymer: ATOM records, closed by TER
        ent.entity_type, ent.polymer_type = gemmi.EntityType.Polymer, gemmi.PolymerType.PeptideL
    opt = gemmi.PdbWriteOptions()
    opt.cryst1_record = False  # pseudo-atoms have no crystal cell
    text = st.make_pdb_string(opt)
    with atomic_write(path, 'w') as fh:
        fh.write(text)
    return path
