"""Computes batches ahead on a background thread.

  for batch in Prefetcher(lambda s: train_batch(ds, s, seed=0), range(a, b)):
    ...

Batches are those of ``fn(step)`` for each step in order, so a prefetched run
sees exactly the batches of an unprefetched one (``train_batch`` is pure in
(seed, step)).  The work is numpy gathers and file reads, which release the
GIL, so one thread overlaps it with the device step.  An exception in ``fn``
is re-raised by the iterator at the batch where it happened.  ``close()`` (or
leaving a ``with`` block) stops the thread.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator

_DONE = object()


class Prefetcher:
  """Iterator over fn(step) for step in steps, ``depth`` batches ahead."""

  def __init__(self, fn: Callable[[int], Any], steps: Iterable[int], *,
               depth: int = 2):
    if depth < 1:
      raise ValueError(f"depth must be >= 1, got {depth}")
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._work, args=(fn, iter(steps)),
                                    daemon=True, name="case_jax-prefetch")
    self._thread.start()

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _work(self, fn, steps: Iterator[int]) -> None:
    try:
      for step in steps:
        if not self._put((fn(step), None)):
          return
    except BaseException as e:   # handed to the consumer
      self._put((None, e))
      return
    self._put((_DONE, None))

  def __iter__(self) -> "Prefetcher":
    return self

  def __next__(self):
    if self._stop.is_set():
      raise StopIteration
    item, error = self._queue.get()
    if error is not None:
      self.close()
      raise error
    if item is _DONE:
      self.close()
      raise StopIteration
    return item

  def close(self) -> None:
    self._stop.set()
    self._thread.join(timeout=5)

  def __enter__(self) -> "Prefetcher":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
