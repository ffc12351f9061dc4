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
