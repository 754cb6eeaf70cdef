"""The LoRA disk cache: one fetch per source, least recently used evicted over budget,
safe between processes."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from models.loras.cache import LORA_FILE, LoraCache, cache_key


def writer(payload: bytes, calls: list | None = None, delay: float = 0.0):
    def fetch(folder: Path) -> dict:
        if calls is not None:
            calls.append(folder)
        time.sleep(delay)
        (folder / LORA_FILE).write_bytes(payload)
        return {"picked": "x"}

    return fetch


def test_second_use_is_a_hit_and_fetches_nothing(tmp_path):
    cache, calls = LoraCache(tmp_path, budget_bytes=10**6), []
    with cache.entry("url:a", writer(b"A" * 10, calls)) as (path, hit):
        assert (hit, path.read_bytes()) == (False, b"A" * 10)
    with cache.entry("url:a", writer(b"never", calls)) as (path, hit):
        assert (hit, path.read_bytes()) == (True, b"A" * 10)
    assert len(calls) == 1
    assert (tmp_path / cache_key("url:a") / "source.json").read_text().count("url:a") == 1


def test_least_recently_used_entries_go_first_over_budget(tmp_path):
    cache = LoraCache(tmp_path, budget_bytes=2500)
    for name in ("a", "b", "c"):
        with cache.entry(name, writer(b"x" * 1000)):
            pass
        time.sleep(0.02)  # distinct modification times
    # c evicted a (over 2500); now use b, then add d: c is the least recently used.
    assert not (tmp_path / cache_key("a")).exists()
    with cache.entry("b", writer(b"")) as (_, hit):
        assert hit
    time.sleep(0.02)
    with cache.entry("d", writer(b"x" * 1000)):
        pass
    kept = {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")}
    assert kept == {cache_key("b"), cache_key("d")}


def test_a_lora_larger_than_the_budget_is_still_used(tmp_path, caplog):
    cache = LoraCache(tmp_path, budget_bytes=10)
    with (
        caplog.at_level(logging.INFO, logger="models"),
        cache.entry("big", writer(b"x" * 100)) as (path, _),
    ):
        assert path.stat().st_size == 100
    assert "over its" in caplog.text


def test_a_failed_fetch_leaves_nothing_behind(tmp_path):
    cache = LoraCache(tmp_path, budget_bytes=10**6)

    def broken(folder: Path) -> dict:
        (folder / "half").write_bytes(b"partial")
        raise ConnectionError("dropped")

    with pytest.raises(ConnectionError), cache.entry("url:x", broken):
        pass
    assert [p.name for p in tmp_path.iterdir()] == [".locks"]


def test_stale_temporary_folders_of_dead_processes_are_removed(tmp_path):
    stale = tmp_path / ".abc.xyz.tmp"
    stale.mkdir(parents=True)
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    LoraCache(tmp_path, budget_bytes=10**6).evict()
    assert not stale.exists()


def test_an_entry_in_use_elsewhere_is_not_evicted(tmp_path):
    cache = LoraCache(tmp_path, budget_bytes=1500)
    with cache.entry("in-use", writer(b"x" * 1000)):
        time.sleep(0.02)
        with cache.entry("new", writer(b"x" * 1000)):
            pass
        assert (tmp_path / cache_key("in-use")).exists()  # locked while it is being read


def _fetch_in_process(root: str, log: str) -> None:
    def fetch(folder: Path) -> dict:
        with open(log, "a") as f:
            f.write("fetch\n")
        time.sleep(0.5)  # long enough for the other process to be waiting on the lock
        (folder / LORA_FILE).write_bytes(b"L" * 1000)
        return {}

    with LoraCache(Path(root), 10**6).entry("url:shared", fetch) as (path, _):
        assert path.read_bytes() == b"L" * 1000


def test_two_processes_fetching_the_same_lora_fetch_it_once(tmp_path):
    log = tmp_path / "fetches.log"
    context = multiprocessing.get_context("spawn")
    procs = [
        context.Process(target=_fetch_in_process, args=(str(tmp_path / "cache"), str(log)))
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert log.read_text().count("fetch") == 1
