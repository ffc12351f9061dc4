"""CHGNet 0.3.0 (the ``chgnet`` wheel, modified BSD) as a backbone: a second universal potential beside SevenNet.

CHGNet (Deng et al. 2023) is a graph network on an atom graph (6 Å) and a bond graph (3 Å, bond pairs and their
angles), trained on MPtrj energies, forces, stresses and magnetic moments. Four atom-convolution layers each give 64
invariant scalars per atom; they are this backbone's layers. Its inputs are distances and angles only, so the
features are O(3)-invariant as computed (``parity = True``, no symmetrisation needed).

It builds its own graphs (its converter, from positions and cell), so equiprop's edge list is not used
(``uses_equiprop_graph = False``; ``data.cutoff`` need not match). Bond and angle features also pass from layer to
layer, so a cached prefix of atom features cannot resume it (``splittable = False``): every pass runs all four
layers, and ``layer_features`` takes each layer's output from a forward hook on CHGNet's own forward pass, so what
runs is exactly CHGNet. The per-atom energies are CHGNet's site energies (readout MLP plus its elemental reference);
the magnetic-moment head is not used.
"""

from __future__ import annotations

import contextlib
import io
from typing import ClassVar

import torch
from e3nn import o3

from equiprop.data import keys
from equiprop.data.errors import DataError
from equiprop.nn.backbones.base import Backbone, BackboneInfo

MAX_Z = 94  # CHGNet's atom embedding has one row per element H..Pu


def _batch_index(data) -> torch.Tensor:
    numbers = data[keys.ATOMIC_NUMBERS]
    batch = data[keys.BATCH] if keys.BATCH in data else None
    return torch.zeros_like(numbers) if batch is None else batch


def _ids(data, graphs) -> str:
    ids = data[keys.STRUCTURE_ID]
    ids = [ids[int(g)] for g in graphs] if isinstance(ids, (list, tuple)) else [ids]
    return ", ".join(sorted(set(map(str, ids))))


class CHGNet030(Backbone):
    """CHGNet 0.3.0: 4 layers of 64x0e, 0.41M parameters.

    ``uses_equiprop_graph = False``: CHGNet builds its atom and bond graphs itself from ``data``'s positions, cell and
    atomic numbers, so ``layer_features`` ignores the edge vectors the encoder passes (and the encoder need not check
    ``data.cutoff`` against ``cutoff``, which is CHGNet's own atom-graph cutoff). Those graphs are built without
    gradient with respect to positions; gradients flow to CHGNet's parameters (fine-tuning).
    """

    info = BackboneInfo(
        name="chgnet-0.3.0", title="CHGNet 0.3.0", package="chgnet",
        weights="pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar",
        licence="Modified BSD (BSD-3-Clause-LBNL; The Regents of the University of California)",
        citation="Deng et al., CHGNet as a pretrained universal neural network potential for charge-informed "
                 "atomistic modelling, Nat. Mach. Intell. 5, 1031 (2023)",
        note="invariant features (64 scalars per atom after each of the 4 atom-conv layers); the magmom head is not "
             "used; CHGNet builds its own 6 Å atom and 3 Å bond graphs")
    parity: ClassVar[bool] = True
    splittable: ClassVar[bool] = False
    uses_equiprop_graph: ClassVar[bool] = False

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.model = self._load(pretrained)
        self.model.site_wise.requires_grad_(False)  # the magmom head: never run here, so never trained
        self.cutoff = float(self.model.graph_converter.atom_graph_cutoff)
        self.num_layers = len(self.model.atom_conv_layers)
        self.layer_irreps = [o3.Irreps(f"{self.model.atom_fea_dim}x0e")] * self.num_layers

    def _load(self, pretrained: bool):
        from chgnet.model import CHGNet

        # as CHGNet.load(model_name="0.3.0") builds it, from the file in the wheel (never a download)
        path = self.weights_path()
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)["model"]
        with contextlib.redirect_stdout(io.StringIO()):  # CHGNet prints its parameter count
            if pretrained:
                return CHGNet.from_dict(checkpoint, mlp_out_bias=False, version="0.3.0")
            # the from-scratch control: the same architecture, random weights (the elemental reference is CHGNet's
            # fixed MPtrj fit either way; it is not a feature)
            return CHGNet(**checkpoint["model_args"], mlp_out_bias=False, version="0.3.0")

    # -- layers -------------------------------------------------------------------------------------------------------
    def layer_modules(self) -> list[torch.nn.Module]:
        """Layer k: atom conv k and, for k > 0, the bond and angle updates between atom convs k-1 and k (they act on
        layer k's output only). The embeddings, shared by all layers, belong to none (as SevenNet's)."""
        m = self.model
        return [torch.nn.ModuleList([m.atom_conv_layers[0]])] + [
            torch.nn.ModuleList([m.bond_conv_layers[k - 1], m.angle_layers[k - 1], m.atom_conv_layers[k]])
            for k in range(1, self.num_layers)]

    def readout_modules(self) -> list[torch.nn.Module]:
        return [self.model.readout_norm, self.model.mlp]

    # -- running it ---------------------------------------------------------------------------------------------------
    def species_index(self, data) -> torch.Tensor:
        numbers = data[keys.ATOMIC_NUMBERS]
        bad = (numbers < 1) | (numbers > MAX_Z)
        if bool(bad.any()):
            from ase.data import chemical_symbols

            unseen = sorted({chemical_symbols[int(z)] if int(z) < len(chemical_symbols) else f"Z={int(z)}"
                             for z in numbers[bad]})
            raise DataError(_ids(data, _batch_index(data)[bad].unique()),
                            f"elements {unseen} are not among the elements {self.info.name} was trained on",
                            "element unknown to the potential")
        return numbers

    def _graphs(self, data) -> tuple[list, torch.Tensor]:
        """CHGNet's graphs, one per structure of the batch, and the node order they concatenate to."""
        from pymatgen.core import Lattice, Structure

        batch, numbers = _batch_index(data), data[keys.ATOMIC_NUMBERS]
        positions = data[keys.POSITIONS].detach().double().cpu().numpy()
        cells = data[keys.CELL].detach().double().cpu().reshape(-1, 3, 3).numpy()
        pbc = data[keys.PBC].reshape(-1, 3) if keys.PBC in data and data[keys.PBC] is not None else None
        device, dtype = next(self.parameters()).device, self.dtype
        graphs, order = [], []
        for g in range(cells.shape[0]):
            if pbc is not None and not bool(pbc[g].all()):
                raise DataError(_ids(data, [g]), f"not periodic: {self.info.name} models periodic crystals only",
                                "not periodic")
            nodes = (batch == g).nonzero().reshape(-1)
            structure = Structure(Lattice(cells[g]), numbers[nodes].tolist(), positions[nodes.cpu().numpy()],
                                  coords_are_cartesian=True)
            try:
                graph = self.model.graph_converter(structure, graph_id=_ids(data, [g]))
            except ValueError as err:
                if "isolated atom" not in str(err):
                    raise
                raise DataError(_ids(data, [g]), f"atoms without a neighbour within {self.info.name}'s "
                                f"{self.cutoff:g} Å: it cannot run on this structure", "isolated atom") from None
            # positions and cell as plain inputs (no forces), in the backbone's dtype: from the structure, since
            # CHGNet's converter rounds them to float32
            graph = graph.to(device)
            graph.atom_frac_coord = torch.as_tensor(structure.frac_coords, dtype=dtype, device=device)
            graph.lattice = torch.tensor(structure.lattice.matrix, dtype=dtype, device=device)
            graph.neighbor_image = graph.neighbor_image.to(dtype)  # integer image shifts
            graphs.append(graph)
            order.append(nodes)
        return graphs, torch.cat(order)

    def layer_features(self, data, vectors: torch.Tensor, species: torch.Tensor,
                       prefix: list[torch.Tensor]) -> tuple[list[torch.Tensor], dict]:
        """Every atom-conv layer's output (num_nodes, 64), in ``data``'s node order, and the state holding the site
        energies. ``vectors`` are ignored (CHGNet builds its own graphs), and so is ``prefix`` (not splittable: the
        encoder never caches one, and atom features alone could not resume CHGNet)."""
        from chgnet.model.model import BatchedGraph

        self.species_index(data)
        graphs, order = self._graphs(data)
        outputs: list[torch.Tensor] = []
        hooks = [layer.register_forward_hook(lambda module, args, out: outputs.append(out))
                 for layer in self.model.atom_conv_layers]
        try:  # CHGNet.forward without its composition model, which runs in float32 only (added below, per atom)
            batched = BatchedGraph.from_graphs(graphs, bond_basis_expansion=self.model.bond_basis_expansion,
                                               angle_basis_expansion=self.model.angle_basis_expansion)
            prediction = self.model._compute(batched, return_site_energies=True)
        finally:
            for hook in hooks:
                hook.remove()
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=order.device)
        inverse = inverse.to(outputs[0].device)
        reference = self.model.composition_model.fc.weight[0].detach()  # its elemental energies, eV/atom, frozen
        site_energies = torch.cat(list(prediction["site_energies"])) + reference[batched.atomic_numbers.long() - 1]
        return [out[inverse] for out in outputs], {"atomic_energies": site_energies[inverse]}

    def atomic_energies(self, state: dict) -> torch.Tensor:
        """(num_nodes,) eV: CHGNet's site energies (its readout MLP on the normalised last-layer features plus its
        elemental reference); their sum per structure is CHGNet's total energy (``e`` x number of atoms)."""
        return state["atomic_energies"]
