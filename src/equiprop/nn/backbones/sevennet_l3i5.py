"""SevenNet-l3i5: SevenNet-0's recipe with l up to 3 (128x0e+64x1e+32x2e+32x3e per layer, the last 128x0e), trained
on MPtrj; weights in the ``sevenn`` wheel (MIT). Its 3e features reach the elastic (4e via products) and piezo
(3o) heads directly."""

from equiprop.nn.backbones.base import BackboneInfo
from equiprop.nn.backbones.sevennet import SEVENNET_CITATION, SevenNetBackbone


class SevenNetL3i5(SevenNetBackbone):
    info = BackboneInfo(name="7net-l3i5", title="SevenNet-l3i5", package="sevenn",
                        weights="pretrained_potentials/SevenNet_l3i5/checkpoint_l3i5.pth",
                        licence="MIT", citation=SEVENNET_CITATION)
