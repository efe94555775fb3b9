"""Running a function in several threads at once, for tests of thread safety."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any


def run_in_threads(fn: Callable[[Any], Any], args: Iterable[Any]) -> list[Any]:
    """`fn(a)` for every `a`, each in its own thread, all started before any is joined; the results in order.
    A thread's exception (otherwise lost) is re-raised here."""
    args = list(args)
    results: list[Any] = [None] * len(args)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = fn(args[i])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
