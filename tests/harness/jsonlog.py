"""The JSON log lines a buildcache process (agent or operator) writes on stderr, collected as
they come, for tests, benchmarks and the demo to wait on."""

import json
import threading
import time


class JsonLog:
    """Reads proc.stderr (a text pipe) in a thread; .logs holds the parsed lines in order."""

    def __init__(self, proc):
        self.proc = proc
        self.logs = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stderr:
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                entry = {"msg": "<unparsable>", "raw": raw}
            with self._cond:
                self.logs.append(entry)
                self._cond.notify_all()

    def wait_for(self, msg, timeout=30, start=0):
        """The first entry with this msg (from index start on), waiting up to timeout seconds;
        AssertionError, with the last lines, when it does not come or the process ended."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for entry in self.logs[start:]:
                    if entry.get("msg") == msg:
                        return entry
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no {msg!r} log line; exit={self.proc.poll()} "
                                         f"logs={self.logs[-20:]}")
                self._cond.wait(min(left, 0.2))

    def logged(self, msg):
        with self._cond:
            return [e for e in self.logs if e.get("msg") == msg]

    def join(self, timeout=5):
        self._reader.join(timeout)
