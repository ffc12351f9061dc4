"""SevenNet-0 (11Jul2024): the default backbone. 5 layers of 128x0e+64x1e+32x2e (the last 128x0e), 0.84M
parameters, trained on MPtrj; weights in the ``sevenn`` wheel (MIT)."""

from equiprop.nn.backbones.base import BackboneInfo
from equiprop.nn.backbones.sevennet import SEVENNET_CITATION, SevenNetBackbone


class SevenNet0(SevenNetBackbone):
    info = BackboneInfo(name="7net-0", title="SevenNet-0 (11Jul2024)", package="sevenn",
                        weights="pretrained_potentials/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth",
                        licence="MIT",
                        citation=SEVENNET_CITATION)
