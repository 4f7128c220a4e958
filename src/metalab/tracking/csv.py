"""metrics.csv that survives a resume: rows logged before the checkpoint a run resumes from are
kept (Lightning's CSVLogger deletes the file), the rows after it are dropped, as the resumed
run logs those steps again: every step appears once."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from lightning_fabric.loggers.csv_logs import _ExperimentWriter
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from metalab.run.rundir import write_atomic


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv: keep it
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:  # new columns: whole
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        write_rows(Path(self.metrics_file_path), fieldnames, rows)


class CSVLogger(LightningCSVLogger):
    """Writes its rows out as they are logged (Lightning's waits for 100 steps), so that every
    row before a checkpoint, also one saved on SLURM's signal, is on disk when it is."""

    def __init__(self, *args, flush_logs_every_n_steps: int = 1, **kwargs):
        super().__init__(*args, flush_logs_every_n_steps=flush_logs_every_n_steps, **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def keep_rows_before(metrics_csv: Path, step: int) -> None:
    """Drop the rows of ``step`` and later (all rows for step 0: a fresh start)."""
    if not metrics_csv.is_file():
        return
    with open(metrics_csv, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    kept = [row for row in rows if row.get("step", "").isdigit() and int(row["step"]) < step]
    if not kept:
        metrics_csv.unlink()
        return
    write_rows(metrics_csv, fields, kept)


def write_rows(path: Path, fields: list[str], rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue().encode())
