"""Running the pass: plan the units, skip finished ones, run the rest on all cores.

``run_pass(opts)``:

1. lists the units of the input (shards, or ``chunk_rows``-row chunks of a table) and
   refuses an output folder that is, holds or lies inside an input folder;
2. builds the filter once here (so a missing spaCy model or Tesseract fails at once);
3. records the pass in ``_pass.json`` or checks that the one there matches;
4. picks this job's units (``shard_range`` or ``array_index``/``array_count``), drops
   those with a unit report already (a resumed run redoes nothing that finished);
5. runs the rest in ``workers`` processes (forked after the spaCy pipeline is loaded
   here, so they share it; with the spawn/forkserver start methods each loads its
   own), writing each unit's outputs and then its report atomically as soon as it
   finishes, with a progress bar and one log line per unit;
6. merges the report once every unit of the whole pass is done (the last array job to
   finish does it; ``merge`` can be run by hand too).

Workers end when the process that started them dies (:func:`exit_with_parent`), so a
pass killed with ``kill -9`` leaves no worker processes behind.

A unit that fails (an exception, a worker process killed) is logged and left without a
report; the other units go on, and the run then raises :class:`FilterPassError` naming
the failed units. Rerunning the same command retries exactly those.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlexp.filters.base import FILTERS, PairFilter
from vlexp.filters.filter_pass import shard_unit, table_unit
from vlexp.filters.filter_pass.judge import criteria_of, warm_up
from vlexp.filters.filter_pass.manifest import build_manifest, write_or_check_manifest
from vlexp.filters.filter_pass.merge import merge_pass
from vlexp.filters.filter_pass.options import PassOptions
from vlexp.filters.filter_pass.report import UnitReport
from vlexp.filters.filter_pass.units import (
    Unit,
    check_output_dir,
    guess_kind,
    report_path,
    select_units,
    shard_units,
    table_units,
)
from vlexp.io import write_json_atomic

log = logging.getLogger(__name__)


class FilterPassError(RuntimeError):
    """Some units of this run failed; rerunning the same command retries them."""


@dataclass
class Plan:
    """The units of a pass and where its inputs are."""

    kind: str
    units: list[Unit]
    input_dirs: list[Path]
    table: table_unit.PairTable | None = None
    image_root: Path | None = None


def plan_pass(opts: PassOptions) -> Plan:
    """List the units of ``opts.input`` (reading a table input into memory)."""
    kind = guess_kind(str(opts.input)) if opts.kind == "auto" else opts.kind
    if kind == "webdataset":
        units, dirs = shard_units(str(opts.input))
        return Plan(kind, units, dirs)
    table = table_unit.PairTable(opts.input, opts.image_col, opts.caption_col, opts.sep)  # type: ignore[arg-type]
    root = Path(opts.image_root) if opts.image_root else table.path.parent
    units = table_units(str(table.path), table.n_rows, opts.chunk_rows)
    dirs = sorted({table.path.parent.resolve(), root.resolve()})
    return Plan(kind, units, dirs, table=table, image_root=root)


# --------------------------------------------------------------------- workers
_WORKER: dict[str, Any] = {}
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PARENT_POLL_SECONDS = 0.5


def exit_with_parent() -> None:
    """Make this (worker) process end when the process that started it dies.

    A pool worker blocks reading its task queue, whose write end it inherited, so it
    would never see the parent go and would linger after a ``kill -9`` of the pass. On
    Linux the kernel sends it SIGKILL when its parent dies (``PR_SET_PDEATHSIG``); on
    every platform a daemon thread also checks ``os.getppid()`` twice a second and
    exits when the parent has changed (the worker was re-parented).
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the polling thread below still ends the worker
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def _init_worker(opts: PassOptions) -> None:
    """Pool initializer: each worker process builds its own filter."""
    exit_with_parent()
    _WORKER["opts"] = opts
    _WORKER["filter"] = FILTERS.build(opts.filter)
    warm_up(_WORKER["filter"])


def _shard_task(unit: Unit) -> dict[str, Any]:
    return shard_unit.process_shard(unit, _WORKER["filter"], _WORKER["opts"]).as_dict()


def _rows_task(
    unit: Unit, captions: list[str], paths: list[str]
) -> tuple[dict[str, Any], np.ndarray]:
    rep, kept = table_unit.judge_rows(unit, captions, paths, _WORKER["filter"], _WORKER["opts"])
    return rep.as_dict(), kept


@dataclass
class _Job:
    """How to run one unit (in a worker) and finish it (here)."""

    unit: Unit
    args: tuple[Any, ...]
    task: Callable[..., Any]
    finish: Callable[[Any], UnitReport]


def _jobs(plan: Plan, todo: list[Unit], opts: PassOptions) -> Iterator[_Job]:
    """One job per unit; table chunks carry their captions and absolute image paths."""
    out = Path(opts.output_dir)
    for unit in todo:
        if plan.kind == "webdataset":
            yield _Job(unit, (unit,), _shard_task, lambda r: UnitReport.from_dict(r))
            continue
        table, root = plan.table, plan.image_root
        assert table is not None and root is not None
        captions = table.column(opts.caption_col, unit.lo, unit.hi)
        paths = [
            table_unit.resolve_image(p, root) if p else ""
            for p in table.column(opts.image_col, unit.lo, unit.hi)
        ]

        def finish(
            result: Any,
            unit: Unit = unit,
            paths: list[str] = paths,
            table: table_unit.PairTable = table,
        ) -> UnitReport:
            rep_dict, kept = result
            rep = UnitReport.from_dict(rep_dict)
            part = table_unit.part_path(out, unit, table.part_suffix)
            cells = table_unit.output_image_paths([paths[int(k)] for k in kept], opts)
            table.write_part(part, unit.lo + np.asarray(kept, dtype=np.int64), cells)
            rep.outputs.append(os.path.relpath(part, out))
            rep.finished = time.time()
            return rep

        yield _Job(unit, (unit, captions, paths), _rows_task, finish)


@dataclass
class _Progress:
    """A rich progress bar over units (a no-op when disabled) plus per-unit log lines."""

    total_units: int
    enabled: bool
    done: int = 0
    pairs: int = 0
    started: float = field(default_factory=time.perf_counter)

    def __enter__(self) -> _Progress:
        self._bar = None
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]filter pass[/bold] units"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._bar.start()
            self._task = self._bar.add_task("units", total=self.total_units, rate="")
        return self

    def unit_done(self, rep: UnitReport) -> None:
        self.done += 1
        self.pairs += rep.total
        rate = self.pairs / max(time.perf_counter() - self.started, 1e-9)
        log.info(
            "[%d/%d] %s: kept %d of %d judged (%d read) in %.1f s",
            self.done,
            self.total_units,
            rep.unit,
            rep.kept,
            rep.total,
            rep.read,
            rep.seconds,
        )
        if self._bar is not None:
            self._bar.update(self._task, advance=1, rate=f"{rate:,.1f} pairs/s")

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()


def _record(out: Path, job: _Job, result: Any) -> UnitReport:
    rep = job.finish(result)
    write_json_atomic(report_path(out, job.unit), rep.as_dict())
    return rep


def _execute(
    plan: Plan, todo: list[Unit], opts: PassOptions, flt: PairFilter, progress: _Progress
) -> dict[str, str]:
    """Run ``todo``; return {unit name: error} for the units that failed."""
    out = Path(opts.output_dir)
    failed: dict[str, str] = {}
    workers = min(opts.num_workers, len(todo))
    if workers <= 1:
        _WORKER.update(opts=opts, filter=flt)
        warm_up(flt)
        for job in _jobs(plan, todo, opts):
            try:
                progress.unit_done(_record(out, job, job.task(*job.args)))
            except Exception as e:  # one bad unit must not stop the others
                failed[job.unit.name] = f"{type(e).__name__}: {e}"
                log.error("unit %s failed:\n%s", job.unit.name, traceback.format_exc())
        return failed
    jobs = _jobs(plan, todo, opts)
    ctx = multiprocessing.get_context()
    if ctx.get_start_method() == "fork":
        # load the models once here; forked workers inherit them (no per-worker import)
        warm_up(flt)
        _WORKER.update(opts=opts, filter=flt)
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=exit_with_parent)
    else:
        pool = ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(opts,)
        )
    with pool:
        pending: dict[Future, _Job] = {}
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < 2 * workers:  # bounded: table chunks are data
                job = next(jobs, None)
                if job is None:
                    exhausted = True
                    break
                pending[pool.submit(job.task, *job.args)] = job
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                job = pending.pop(fut)
                try:
                    progress.unit_done(_record(out, job, fut.result()))
                except Exception as e:
                    failed[job.unit.name] = f"{type(e).__name__}: {e}"
                    log.error("unit %s failed: %s", job.unit.name, failed[job.unit.name])
                    if isinstance(e, BrokenProcessPool):  # a worker died: stop here
                        for other in pending.values():
                            failed[other.unit.name] = "not run: the worker pool broke"
                        failed.update({j.unit.name: "not run: the worker pool broke" for j in jobs})
                        return failed
    return failed


def run_pass(opts: PassOptions) -> dict[str, Any]:
    """Run the pass over this job's units (see the module docstring).

    Returns a summary: ``units`` (of the whole pass), ``selected``, ``skipped_done``,
    ``ran``, ``seconds``, ``pairs`` judged in this run and, when the pass is complete,
    ``report`` (the merged report).
    """
    opts.validate()
    t0 = time.perf_counter()
    plan = plan_pass(opts)
    out = check_output_dir(opts.output_dir, plan.input_dirs)
    flt = FILTERS.build(opts.filter)
    table_info = None
    if plan.table is not None:
        table_info = {
            "path": str(plan.table.path.resolve()),
            "fmt": plan.table.fmt,
            "suffix": plan.table.part_suffix,
            "image_root": str(plan.image_root),
        }
    out.mkdir(parents=True, exist_ok=True)
    write_or_check_manifest(
        out,
        build_manifest(
            plan.kind,
            str(opts.input),
            plan.units,
            opts.result_settings(),
            criteria_of(flt),
            table_info,
        ),
    )
    selected = select_units(plan.units, opts.shard_range, opts.array_index, opts.array_count)
    todo = [u for u in selected if not report_path(out, u).is_file()]
    log.info(
        "filter pass %s -> %s: %d units in all, %d for this job, %d already done, "
        "%d to run with %d worker(s); filter %s",
        opts.input,
        out,
        len(plan.units),
        len(selected),
        len(selected) - len(todo),
        len(todo),
        min(opts.num_workers, max(1, len(todo))),
        flt,
    )
    with _Progress(len(todo), opts.progress) as progress:
        failed = _execute(plan, todo, opts, flt, progress) if todo else {}
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "units": len(plan.units),
        "selected": len(selected),
        "skipped_done": len(selected) - len(todo),
        "ran": len(todo) - len(failed),
        "failed": failed,
        "pairs": progress.pairs,
        "seconds": seconds,
    }
    if failed:
        names = ", ".join(list(failed)[:5])
        raise FilterPassError(
            f"{len(failed)} of {len(todo)} units failed ({names}{'...' if len(failed) > 5 else ''}; "
            f"first error: {next(iter(failed.values()))}). Their outputs were not kept; "
            "fix the cause and rerun the same command: finished units are skipped."
        )
    if all(report_path(out, u).is_file() for u in plan.units):
        summary["report"] = merge_pass(out)
    else:
        log.info(
            "this job's units are done; run `python -m vlexp.cli.filter merge output_dir=%s` "
            "once every job has finished",
            out,
        )
    return summary
