"""The extension's runtime: the GIL is released during I/O, a forked child
works, and Ctrl-C stops a load cleanly."""

from __future__ import annotations

import _thread
import multiprocessing
import threading
import time
from pathlib import Path

import pytest
from conftest import rows

import pgbulk


def big_csv(path: Path, n: int) -> Path:
    with path.open("w") as f:
        f.write("id,name,qty\n")
        for i in range(n):
            f.write(f"{i},name {i},{i % 97}\n")
    return path


def test_other_threads_run_while_a_load_runs(db: str, tmp_path: Path) -> None:
    data = big_csv(tmp_path / "big.csv", 300_000)
    done = threading.Event()
    failure: list[BaseException] = []

    def load() -> None:
        try:
            pgbulk.load_csv(data, "big", db=db)
        except BaseException as e:  # noqa: BLE001 - reported below
            failure.append(e)
        finally:
            done.set()

    worker = threading.Thread(target=load)
    worker.start()
    ticks = 0
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    worker.join()
    assert not failure, failure
    # With the GIL held for the whole load this thread could not have run.
    assert ticks > 20, ticks
    assert rows(db, "SELECT count(*) FROM big") == [(300_000,)]


def _child(db: str, path: str, out: multiprocessing.Queue) -> None:
    try:
        report = pgbulk.load_csv(path, "forked", db=db, key=["id"])
        out.put(report.rows_read)
    except BaseException as e:  # noqa: BLE001 - sent to the parent
        out.put(repr(e))


def test_a_forked_child_gets_its_own_runtime(db: str, tmp_path: Path) -> None:
    data = big_csv(tmp_path / "f.csv", 1000)
    # The parent's runtime exists (and has threads) before the fork.
    pgbulk.load_csv(data, "forked", db=db)
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(db, str(data), out))
    child.start()
    child.join(120)
    assert child.exitcode == 0, "the forked child hung or failed"
    assert out.get(timeout=5) == 1000


def test_ctrl_c_stops_a_load_and_the_next_call_continues(db: str, tmp_path: Path) -> None:
    data = big_csv(tmp_path / "long.csv", 2_000_000)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        pgbulk.load_csv(data, "long", db=db, batch_rows=100_000, streams=1)
    timer.cancel()
    report = pgbulk.load_csv(data, "long", db=db, batch_rows=100_000, streams=1)
    assert rows(db, "SELECT count(*), count(DISTINCT id) FROM long") == [(2_000_000, 2_000_000)]
    assert report.rows_read <= 2_000_000
