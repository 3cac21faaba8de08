"""Standby workers: a slot is held by one process at a time and freed by its death, kill -9 too."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

from recsys.serving.active_slots import ActiveSlots


def _hold(directory: str, slots: int, taken) -> None:
    held = ActiveSlots(directory, slots)  # the lock lives as long as this object
    taken.put(held.wait_for_one())
    time.sleep(600)  # until killed


def test_a_slot_is_held_until_its_process_dies(tmp_path):
    context = mp.get_context("spawn")
    taken = context.Queue()
    first = context.Process(target=_hold, args=(str(tmp_path), 1, taken))
    first.start()
    assert taken.get(timeout=60) == 0
    standby = ActiveSlots(tmp_path, 1, poll_s=0.01)
    assert standby.try_take() is None  # the only slot is held
    os.kill(first.pid, signal.SIGKILL)
    first.join(timeout=30)
    t0 = time.monotonic()
    assert standby.wait_for_one() == 0
    assert time.monotonic() - t0 < 5  # the kernel freed it with the process (one poll here)


def test_slots_go_one_per_process_then_none(tmp_path):
    context = mp.get_context("spawn")
    taken = context.Queue()
    holders = [context.Process(target=_hold, args=(str(tmp_path), 2, taken)) for _ in range(2)]
    for p in holders:
        p.start()
    try:
        assert sorted(taken.get(timeout=60) for _ in holders) == [0, 1]
        assert ActiveSlots(tmp_path, 2).try_take() is None
    finally:
        for p in holders:
            p.kill()
            p.join(timeout=30)
    assert ActiveSlots(tmp_path, 2).try_take() == 0


def test_no_slots_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="active slots must be >= 1"):
        ActiveSlots(tmp_path, 0)


def test_the_server_starts_active_plus_standby_workers_sharing_one_slot_per_active(tiny_bundle):
    from recsys.serving.api import build_server

    server = build_server(tiny_bundle, workers=1, standby_workers=1)
    api = server.litapi_connector.lit_apis[0]
    assert server.workers_per_device == 2
    assert api.slots.slots == 1 and api.slots.directory.is_dir()
    assert build_server(tiny_bundle).litapi_connector.lit_apis[0].slots is None  # no standby: no lock
