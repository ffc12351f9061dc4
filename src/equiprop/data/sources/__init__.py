"""Readers of crystal datasets. Each returns a SourceResult: records + labels + provenance + counted skips."""

from equiprop.data.sources.base import Source, SourceResult, add_entry
from equiprop.data.sources.generic import ExtXYZ, StructureFolder
from equiprop.data.sources.jarvis import JarvisDFT3D, jarvis_leaderboard_split
from equiprop.data.sources.matbench import MatbenchTask, matbench_folds
from equiprop.data.sources.materials_project import MaterialsProjectAPI, MaterialsProjectJSON
from equiprop.data.sources.matminer_csv import MatminerCSV
from equiprop.data.sources.perov5 import Perov5CSV
from equiprop.data.sources.records_json import BundledDataset, RecordsJSON

__all__ = ["Source", "SourceResult", "add_entry", "ExtXYZ", "StructureFolder", "JarvisDFT3D",
           "jarvis_leaderboard_split", "MatbenchTask", "matbench_folds", "MaterialsProjectAPI",
           "MaterialsProjectJSON", "MatminerCSV", "Perov5CSV", "BundledDataset", "RecordsJSON"]
