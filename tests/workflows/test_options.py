"""Every numeric option of suggest, screen, embed and matbench refuses NaN, infinities and out-of-range values at the
command line: exit status 2 and one error line naming the option, before any checkpoint or recipe is read (the paths
below do not exist: reaching them would be a different error)."""

import argparse

import numpy as np
import pytest

from equiprop.cli import main
from equiprop.data.errors import ConfigError
from equiprop.uncertainty.acquisition import expected_improvement, greedy_diverse_selection, window_probability
from equiprop.workflows import screen, suggest
from equiprop.workflows.options import finite_float, non_negative_float, number, positive_int, random_seed

SUGGEST = ["suggest", "--input", "nowhere/", "--checkpoint", "none.ckpt", "--task", "Ef", "--output", "out.csv"]
SCREEN = ["screen", "--input", "nowhere/", "--phase1", "none.ckpt", "--output", "out.csv"]
EMBED = ["embed", "--checkpoint", "none.ckpt", "--input", "nowhere/", "--output", "emb.npz"]
MATBENCH = ["matbench", "--task", "matbench_phonons", "-c", "none.yaml"]


def refused(argv, capsys) -> str:
    """The one error line of a command refused by argparse (exit 2)."""
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0] and lines[0].endswith("(--help for usage)"), lines
    return lines[0]


@pytest.mark.parametrize("extra, option", [
    (["--budget", "5", "--diversity", "nan"], "--diversity"),  # the reported trial
    (["--budget", "5", "--diversity", "inf"], "--diversity"),
    (["--budget", "5", "--diversity", "-0.5"], "--diversity"),
    (["--budget", "5", "--strategy", "ei", "--best", "nan"], "--best"),  # the reported trial
    (["--budget", "5", "--strategy", "ei", "--best=-inf"], "--best"),
    (["--budget", "5", "--strategy", "ei", "--best", "1e999"], "--best"),
    (["--budget", "5", "--strategy", "window", "--window", "nan", "3"], "--window"),
    (["--budget", "5", "--strategy", "window", "--window", "0", "inf"], "--window"),
    (["--budget", "5", "--strategy", "window", "--window", "3", "1"], "--window"),
    (["--budget", "5", "--strategy", "window", "--window", "1", "1"], "--window"),
    (["--budget", "0"], "--budget"),
    (["--budget", "-3"], "--budget"),
    (["--budget", "2.5"], "--budget"),
    (["--budget", "5", "--batch-size", "0"], "--batch-size"),
    (["--budget", "5", "--mc-samples", "-1"], "--mc-samples"),
])
def test_suggest_refuses_bad_numbers(extra, option, capsys):
    line = refused(SUGGEST + extra, capsys)
    assert line.startswith("equiprop suggest: error: ") and f"argument {option}" in line


@pytest.mark.parametrize("extra, option", [
    (["--workers", "-1"], "--workers"),
    (["--workers", "nan"], "--workers"),
    (["--batch-size", "0"], "--batch-size"),
    (["--chunk-size", "0"], "--chunk-size"),
    (["--chunk-size", "inf"], "--chunk-size"),
    (["--threads", "0"], "--threads"),
    (["--mc-samples", "-2"], "--mc-samples"),
])
def test_screen_refuses_bad_numbers(extra, option, capsys):
    line = refused(SCREEN + extra, capsys)
    assert line.startswith("equiprop screen: error: ") and f"argument {option}" in line


@pytest.mark.parametrize("extra, option", [
    (["--limit", "0"], "--limit"),
    (["--limit", "-5"], "--limit"),  # records[:-5] silently dropped the last five
    (["--limit", "nan"], "--limit"),
])
def test_embed_refuses_bad_numbers(extra, option, capsys):
    line = refused(EMBED + extra, capsys)
    assert line.startswith("equiprop embed: error: ") and f"argument {option}" in line


@pytest.mark.parametrize("extra, option", [
    (["--folds", "5"], "--folds"),
    (["--folds", "0", "-1"], "--folds"),
    (["--seeds", "-1"], "--seeds"),  # Lightning would swap it for a random seed
    (["--seeds", "4294967296"], "--seeds"),
    (["--seeds", "nan"], "--seeds"),
])
def test_matbench_refuses_bad_numbers(extra, option, capsys):
    line = refused(MATBENCH + extra, capsys)
    assert line.startswith("equiprop matbench: error: ") and f"argument {option}" in line


def test_other_argument_errors_are_one_line_too(capsys):
    for argv in (["distill", "--checkpoint", "t.ckpt"], ["suggest", "--budget", "1"], SCREEN[:-1] + ["out.txt"]):
        assert refused(argv, capsys)


def test_good_values_still_parse():
    args = suggest.parse_arguments(SUGGEST[1:] + ["--budget", "3", "--diversity", "0", "--strategy", "window",
                                                  "--window", "-2", "1e3", "--best=-1.5", "--mc-samples", "0"])
    assert (args.budget, args.diversity, args.window, args.best, args.mc_samples) == (3, 0.0, [-2.0, 1000.0],
                                                                                      -1.5, 0)
    args = screen.parse_arguments(SCREEN[1:] + ["--workers", "0", "--chunk-size", "1", "--threads", "2"])
    assert (args.workers, args.chunk_size, args.threads, args.batch_size) == (0, 1, 2, 64)


def test_the_helpers_say_what_they_take():
    for parse, text, message in [(finite_float, "nan", "must be a finite number; got 'nan'"),
                                 (non_negative_float, "-1", "must be a finite number >= 0; got '-1'"),
                                 (positive_int, "0", "must be an integer >= 1; got '0'"),
                                 (positive_int, "x", "must be an integer >= 1; got 'x'"),
                                 (random_seed, "-1", "must be an integer from 0 to 4294967295; got '-1'"),
                                 (number(float, maximum=1), "1.5", "must be a finite number <= 1; got '1.5'")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message.replace("(", r"\(")):
            parse(text)
    assert finite_float("-1e-3") == -0.001 and positive_int(" 7 ") == 7 and random_seed("4294967295") == 2 ** 32 - 1


def test_acquisition_functions_refuse_non_finite_settings():
    """The library functions behind suggest refuse them too (a Python caller passes no argparse)."""
    mu, sigma = np.array([0.0, 1.0]), np.array([0.5, 0.5])
    for call, match in [(lambda: greedy_diverse_selection(mu, np.eye(2), 1, diversity=float("nan")), "--diversity"),
                        (lambda: greedy_diverse_selection(mu, np.eye(2), 1, diversity=float("inf")), "--diversity"),
                        (lambda: expected_improvement(mu, sigma, float("nan")), "--best"),
                        (lambda: window_probability(mu, sigma, float("nan"), 1.0), "--window"),
                        (lambda: window_probability(mu, sigma, 0.0, float("inf")), "--window")]:
        with pytest.raises(ConfigError, match=match):
            call()
