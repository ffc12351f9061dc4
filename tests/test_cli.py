import pytest

from equiprop.cli import main


@pytest.mark.integration  # builds the graphs of all 5,909 bundled crystals (~20-40 s)
def test_data_summary_of_the_bundled_default(capsys):
    assert main(["data", "summary"]) == 0
    out = capsys.readouterr().out
    assert "bundled:default" in out and "5909 entries read" in out
    assert "matminer:dielectric_constant" in out and "frame mismatch" in out  # the build report
    for task, units in [("Ef", "eV/atom"), ("elastic_tensor", "GPa"), ("piezo_tensor", "C/m^2")]:
        assert any(line.startswith(task) and units in line for line in out.splitlines())


def test_data_summary_from_a_recipe_with_overrides(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("""
trainer: {max_epochs: 1}   # other sections of a recipe are ignored by `data summary`
data:
  sources:
    - class_path: equiprop.data.sources.BundledDataset
      init_args: {dataset: tiny}
  tasks: [Ef, eps_electronic]
""")
    assert main(["data", "summary", "-c", str(recipe), "--data.cutoff=4.0"]) == 0
    out = capsys.readouterr().out
    assert "cutoff 4.0 Å" in out and "eps_electronic" in out and "K_VRH" not in out


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["data", "summary", "-c", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert main(["data", "summary", "--data.tasks=[Ef,bogus]"]) == 2
    assert "unknown task 'bogus'" in capsys.readouterr().err


def test_one_command_table_dispatches_every_command_and_writes_the_usage(capsys):
    import importlib

    from equiprop.cli import COMMANDS, usage

    for name, command in COMMANDS.items():
        module, function = command.run.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
    text = usage()
    assert all(f"equiprop {name}" in text or name in ("validate", "test") for name in COMMANDS)
    assert main(["--help"]) == 0 and capsys.readouterr().err.strip() == text.strip()
    assert main(["nope"]) == 2


@pytest.mark.parametrize("command, old, new", [("calibrate", "--checkpoints", "--checkpoint"),
                                               ("suggest", "--pool", "--input"),
                                               ("distill", "--teacher", "--checkpoint")])
def test_an_old_flag_spelling_still_works_with_a_note(command, old, new, tmp_path, capsys):
    missing = str(tmp_path / "missing.ckpt")
    args = {"calibrate": [old, missing],
            "suggest": [old, "bundled:tiny", "--checkpoint", missing, "--task", "Eg", "--budget", "2", "--output",
                        str(tmp_path / "s.csv")],
            "distill": [old, missing, "-c", str(tmp_path / "missing.yaml"), "--input", "bundled:tiny"]}[command]
    code = main([command, *args])
    err = capsys.readouterr().err
    assert f"note: {old} is now {new} (the old spelling still works)" in err
    assert code == 2 and "missing" in err.splitlines()[-1]  # parsed as the new flag: the file is what fails
