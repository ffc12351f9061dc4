"""The data summary: per source and per task, records read, labels present, skips with reasons, merges, splits."""

from __future__ import annotations

from equiprop.data.errors import SkipLog
from equiprop.data.merge import MergeReport
from equiprop.data.sources.base import SourceResult


def source_summary(result: SourceResult) -> dict:
    return {"name": result.name, "provenance": result.provenance, "entries_read": result.entries_read,
            "records": result.added, "labels": dict(result.label_counts()),
            "labels_missing": dict(result.missing), "skipped": _log(result.skips),
            "labels_skipped": _log(result.label_skips), "built_from": result.built_from}


def merge_summary(report: MergeReport) -> dict:
    return {"merged": dict(report.merged), "frame_mismatches": _log(report.frame_mismatches),
            "label_conflicts": _log(report.conflicts)}


def _log(log: SkipLog) -> dict:
    return {reason: {"count": n, "examples": log.examples[reason]} for reason, n in log.counts.items()}


def format_summary(report: dict, units: dict[str, str]) -> str:
    """Human-readable text of a DataModule report (see ``MultiTaskDataModule.report``)."""
    tasks = list(units)
    lines = []
    for s in report["sources"]:
        if s.get("built_from"):
            lines.append(f"[{s['name']} was built from these sources]")
            lines += ["  " + line for line in _source_lines(s["built_from"]["sources"], s["built_from"]["merge"],
                                                             tasks)]
            lines.append(f"[{s['name']} as read now]")
    lines += _source_lines(report["sources"], report["merge"], tasks)
    lines.append(f"graphs: {report['num_graphs']} built (cutoff {report['graph']['cutoff']} Å, max neighbours "
                 f"{report['graph']['max_neighbors']}), {report['num_edges']} edges, "
                 f"{'loaded from cache' if report['from_cache'] else 'cache written'}: {report['cache_path']}")
    extended = report.get("extended_radius", {})
    if extended.get("count"):
        lines.append(f"  radius extended for {extended['count']} structures with an atom of fewer than "
                     f"{report['graph'].get('min_neighbors')} neighbours within the cutoff "
                     f"(e.g. {', '.join(extended['examples'])})")
    lines += _skip_lines("skipped graph", report["graph_skipped"])
    w = max([16, *(len(t) + 1 for t in tasks)])  # counts: structures with the label (per-atom tasks: any atom)
    header = f"{'task':<{w}} {'units':<14} {'kind':<13}" + "".join(f"{n:>8}" for n in ("all", *report["splits"]))
    lines += ["", header, "-" * len(header)]
    for t in tasks:
        counts = [report["label_counts"]["all"].get(t, 0)] + [report["label_counts"][s].get(t, 0)
                                                               for s in report["splits"]]
        lines.append(f"{t:<{w}} {units[t]:<14} {report['kinds'][t]:<13}" + "".join(f"{c:>8}" for c in counts))
    structures = [report["num_graphs"]] + [report["splits"][s] for s in report["splits"]]
    lines.append(f"{'structures':<{w}} {'':<14} {'':<13}" + "".join(f"{c:>8}" for c in structures))
    return "\n".join(lines)


def _source_lines(sources: list[dict], m: dict, tasks: list[str]) -> list[str]:
    lines = []
    for s in sources:
        lines.append(f"source {s['name']}: {s['entries_read']} entries read, {s['records']} records kept")
        lines.append(f"  from {s['provenance']}")
        for t in tasks:
            if s["labels"].get(t) or s["labels_missing"].get(t):
                lines.append(f"  {t:<16} {s['labels'].get(t, 0):>6} labels   {s['labels_missing'].get(t, 0):>6} "
                             f"absent or NaN/na (masked)")
        lines += _skip_lines("skipped entry", s["skipped"]) + _skip_lines("masked label", s["labels_skipped"])
    lines.append(f"merge: {sum(m['merged'].values())} records combined across sources; "
                 f"{sum(v['count'] for v in m['frame_mismatches'].values())} same-id records kept apart (cells differ)")
    lines += [f"  combined {n:>5} x {pair}" for pair, n in m["merged"].items()]
    lines += _skip_lines("frame mismatch", m["frame_mismatches"]) + _skip_lines("label conflict", m["label_conflicts"])
    return lines


def _skip_lines(what: str, log: dict) -> list[str]:
    return [f"  {what}: {v['count']} x {reason} (e.g. {'; '.join(v['examples'][:2])})" for reason, v in log.items()]
