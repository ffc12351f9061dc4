"""Numeric command-line options that refuse what no run can mean: NaN, infinities, values out of range.

Every number an equiprop command takes through argparse is parsed by one of these ``type=`` functions, so a bad value
stops the command before anything is loaded with one error line naming the option, exit status 2::

    equiprop suggest: error: argument --diversity: must be a finite number >= 0; got 'nan' (--help for usage)

``ArgumentParser`` is argparse's with that one-line error in place of the usage block (as ``ConfigError`` reads), and
with the flags every command spells one way (``RENAMED``): an old spelling still works, with a note naming the new.

Why at the edge: ``float("nan")`` parses, and NaN compares false with everything, so it passes every later check of
the form ``if x < 0`` and ranks nonsense; ``1e999`` parses as infinity. Integers cannot be NaN, but a negative
budget, batch size or seed means nothing either (Lightning replaces a seed outside [0, 2**32) by a random one).
"""

from __future__ import annotations

import argparse
import math

MAX_SEED = 2 ** 32 - 1  # numpy's (and Lightning's seed_everything's) range of seeds
COMPILE_HELP = ("run the pretrained SevenNet layers through torch.compile: ~1 min to compile on 2 cores the first "
                "time (seconds once inductor's disk cache holds it), then ~1.5x faster featurisation (pays after a "
                "few thousand structures; docs/benchmarks.md)")


# old spelling -> the one every command uses: models that predict are --checkpoint (files, a manifest or a shipped
# name), structures to read are --input, a run's folder name is --run_name (as in LightningCLI)
RENAMED = {"--checkpoints": "--checkpoint", "--teacher": "--checkpoint", "--pool": "--input",
           "--run-name": "--run_name"}


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line (``PROG: error: MESSAGE (--help for usage)``), exit status 2, and
    which reads an old spelling of a flag (``RENAMED``) as the new one, with a note on stderr."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help for usage)\n")

    def parse_known_args(self, args=None, namespace=None):
        import sys

        args = list(sys.argv[1:] if args is None else args)
        known = {option for action in self._actions for option in action.option_strings}
        for i, arg in enumerate(args):
            flag, sep, value = arg.partition("=")
            new = RENAMED.get(flag)
            if new is not None and new in known and flag not in known:
                print(f"{self.prog}: note: {flag} is now {new} (the old spelling still works)", file=sys.stderr)
                args[i] = new + sep + value
        return super().parse_known_args(args, namespace)


def number(kind: type = float, minimum: float | None = None, maximum: float | None = None):
    """An argparse ``type=``: text -> ``kind`` (float or int), finite and within [minimum, maximum] (either end
    optional); otherwise ``argparse.ArgumentTypeError`` saying what the option takes."""
    what = "a finite number" if kind is float else "an integer"
    low, high = (None if v is None else f"{kind(v)}" if kind is int else f"{v:g}" for v in (minimum, maximum))
    if low is not None and high is not None:
        what += f" from {low} to {high}"
    elif low is not None:
        what += f" >= {low}"
    elif high is not None:
        what += f" <= {high}"

    def parse(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {what}; got {text!r}") from None
        if not math.isfinite(value) or (minimum is not None and value < minimum) or (
                maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {what}; got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type by it in its own messages
    return parse


finite_float = number(float)
non_negative_float = number(float, minimum=0)
positive_int = number(int, minimum=1)
non_negative_int = number(int, minimum=0)
random_seed = number(int, minimum=0, maximum=MAX_SEED)


def shard_spec(text: str) -> tuple[int, int]:
    """``--shard I/N`` -> (I, N): this process's share of N, counted from 0."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = -1
    if not sep or n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"must be I/N with 0 <= I < N (e.g. 0/4 ... 3/4); got {text!r}")
    return i, n


shard_spec.__name__ = "I/N"
