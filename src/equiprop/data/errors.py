"""Errors and counted skips: bad input is either a clear error naming the entry, or a skip that is reported."""

from collections import Counter, defaultdict
from dataclasses import dataclass, field


class DataError(ValueError):
    """Bad input data. The message names the file or entry and the problem."""

    def __init__(self, where: str, problem: str, kind: str | None = None):
        self.where, self.problem = where, problem
        self.kind = kind or problem  # short category used to count skips, e.g. "atoms closer than 0.5 Å"
        super().__init__(f"{where}: {problem}")


class ConfigError(ValueError):
    """A configuration that cannot be run (missing file, unknown task, ...)."""


def check_choice(option: str, value, choices) -> None:
    """ConfigError naming ``option`` and the allowed values unless ``value`` is one of ``choices`` (a sequence or a
    ``typing.Literal``). LightningCLI checks Literal-typed arguments itself; this covers construction from Python."""
    from typing import get_args

    allowed = get_args(choices) or tuple(choices)
    if value not in allowed:
        raise ConfigError(f"{option} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


@dataclass
class SkipLog:
    """Counts what a reader or builder skipped, by reason, keeping a few example entries per reason."""

    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=lambda: defaultdict(list))
    max_examples: int = 3

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        if len(self.examples[reason]) < self.max_examples:
            self.examples[reason].append(where)

    def extend(self, other: "SkipLog") -> None:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            room = self.max_examples - len(self.examples[reason])
            self.examples[reason].extend(other.examples[reason][: max(room, 0)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def lines(self) -> list[str]:
        return [f"{n} x {reason} (e.g. {', '.join(self.examples[reason])})" for reason, n in self.counts.most_common()]
