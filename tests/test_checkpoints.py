"""Crash-safe checkpoints: a kill during a save keeps the previous checkpoint; resume skips unreadable files and
refuses another run's checkpoints."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
import torch
from ignite.engine import Engine

from weakseg_monai.engines import AtomicCheckpointSaver, latest_checkpoint
from weakseg_monai.engines.checkpoints import list_checkpoints

RUN = {"dataset_dir": "/data/a", "working_spacing": [0.5, 0.5, 1.0], "seed": 0}

KILLED_DURING_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from ignite.engine import Engine
    from weakseg_monai.engines import AtomicCheckpointSaver

    model = torch.nn.Linear(4, 4)
    trainer = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(sys.argv[1], {"model": model, "trainer": trainer}, n_saved=1)
    saver.attach(trainer)
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        if trainer.state.epoch == 2:  # the second save dies half-way through writing
            f.write(b"\\x80\\x02partial")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = dying_save
    trainer.run([0], max_epochs=3)
    """
)


def test_kill_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    result = subprocess.run([sys.executable, "-c", KILLED_DURING_SAVE, str(tmp_path)], capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint_epoch=1.pt"]
    state = torch.load(latest_checkpoint(str(tmp_path)), weights_only=True)
    assert state["trainer"]["iteration"] == 1 and "weight" in state["model"]


def test_resume_skips_an_unreadable_newest_checkpoint_and_names_it(tmp_path, caplog):
    model = torch.nn.Linear(2, 2)
    trainer = Engine(lambda e, b: None)
    AtomicCheckpointSaver(tmp_path, {"model": model}, n_saved=3, run=RUN).attach(trainer)
    trainer.run([0], max_epochs=2)
    (tmp_path / "checkpoint_epoch=3.pt").write_bytes(b"")  # what an in-place save killed mid-way left
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(str(tmp_path), RUN).endswith("checkpoint_epoch=2.pt")
    assert "checkpoint_epoch=3.pt" in caplog.text and "unreadable" in caplog.text


def test_only_n_saved_checkpoints_are_kept(tmp_path):
    trainer = Engine(lambda e, b: None)
    AtomicCheckpointSaver(tmp_path, {"model": torch.nn.Linear(2, 2)}, n_saved=2).attach(trainer)
    trainer.run([0], max_epochs=4)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint_epoch=3.pt", "checkpoint_epoch=4.pt"]
    assert not list(tmp_path.glob(".tmp_*"))


def test_resume_refuses_another_runs_checkpoints(tmp_path):
    trainer = Engine(lambda e, b: None)
    AtomicCheckpointSaver(tmp_path, {"model": torch.nn.Linear(2, 2)}, run=RUN).attach(trainer)
    trainer.run([0], max_epochs=1)
    assert latest_checkpoint(str(tmp_path), dict(RUN, working_spacing=(0.5, 0.5, 1.0)))  # same values, tuple
    with pytest.raises(ValueError, match="another run.*dataset_dir"):
        latest_checkpoint(str(tmp_path), dict(RUN, dataset_dir="/data/b"))
