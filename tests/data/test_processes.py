"""No process outlives a killed command: the training DataLoader's workers and the graph-store build's encoding pool
end with their parent after SIGKILL (``equiprop.data.processes.DieWithParent``; the screen's workers:
tests/screening/test_orphans.py)."""

import sys

import pytest
import yaml


@pytest.mark.integration
def test_dataloader_workers_of_a_killed_fit_do_not_survive(tmp_path, cli_recipe, process_watch):
    cli_recipe["data"].update(num_workers=2, cache_dir=str(tmp_path / "cache"))
    cli_recipe["trainer"].update(max_epochs=1000, limit_train_batches=None, limit_val_batches=None)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(cli_recipe))
    process_watch.kill_and_check([sys.executable, "-m", "equiprop.cli", "fit", "-c", str(recipe)], tmp_path)


@pytest.mark.integration
def test_the_encoding_pool_of_a_killed_store_build_does_not_survive(tmp_path, process_watch):
    # the 5,909 bundled structures written to an SQLite store by a pool of two encoding processes
    process_watch.kill_and_check([sys.executable, "-m", "equiprop.cli", "data", "summary", "--data.storage=disk",
                                  f"--data.cache_dir={tmp_path / 'cache'}"], tmp_path)
