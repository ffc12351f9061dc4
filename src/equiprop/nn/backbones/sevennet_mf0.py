"""SevenNet-MF-0: a multi-fidelity SevenNet (the architecture of SevenNet-0 with a fidelity one-hot in its
self-interactions and a fidelity-wise energy shift), trained on MPtrj (PBE/PBE+U) and MP r2SCAN together; weights in
the ``sevenn`` wheel (MIT).

Fidelity: PBE. Every label equiprop trains on here (Materials Project, JARVIS-OptB88vdW, MatBench) comes from a
GGA calculation on a GGA-relaxed structure, the PBE fidelity's data; the r2SCAN fidelity would describe bonding the
labels were not computed with.
"""

from equiprop.nn.backbones.base import MPTRJ, BackboneInfo
from equiprop.nn.backbones.sevennet import SevenNetBackbone


class SevenNetMF0(SevenNetBackbone):
    modality = "PBE"
    info = BackboneInfo(name="7net-mf-0", title="SevenNet-MF-0 (PBE fidelity)", package="sevenn",
                        weights="pretrained_potentials/SevenNet_MF_0/checkpoint_sevennet_mf_0.pth",
                        licence="MIT", pretrained_on=f"{MPTRJ} and MP r2SCAN (multi-fidelity)",
                        citation="Kim et al., Data-efficient multifidelity training for high-fidelity machine "
                                 "learning interatomic potentials, J. Am. Chem. Soc. 147, 1042 (2025)",
                        note="runs in its PBE fidelity: the labels are GGA (PBE/PBE+U) values")
