"""Readers of crystal datasets. Each returns a SourceResult: records + labels + provenance + counted skips."""

from equiprop.data.sources.base import Source, SourceResult, add_entry
from equiprop.data.sources.matminer_csv import MatminerCSV
from equiprop.data.sources.records_json import BundledDataset, RecordsJSON
