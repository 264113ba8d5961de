"""Waiting for a condition: one bounded poll loop for the harness, the tests, the benchmarks and
the demo."""

import time


def wait_for(what: str, fn, timeout: float, interval: float = 0.25, error=TimeoutError,
             tolerate: tuple = ()):
    """Polls fn until it returns a truthy value, which is returned. After timeout seconds raises
    error naming `what` and fn's last answer. An exception of a `tolerate` type counts as a falsy
    answer (a command failing while the objects it reads come and go)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last = fn()
        except tolerate as err:
            last = err
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r:.500})")
        time.sleep(interval)
