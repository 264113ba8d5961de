"""What a power loss may leave of a file whose data was not written back yet, for the store's
durability tests: the four kinds of damage, chosen by kind % 4."""

import os

KINDS = ("truncated to half", "empty", "tail zeroed", "gone")


def damage(path, kind):
    """Damages path the way KINDS[kind % 4] says; returns that description."""
    kind %= 4
    size = path.stat().st_size
    if kind == 0:
        os.truncate(path, size // 2)
    elif kind == 1:
        os.truncate(path, 0)
    elif kind == 2:
        with open(path, "r+b") as f:  # same size, the tail never reached the disk
            f.seek(size // 3)
            f.write(b"\0" * (size - size // 3))
    else:
        path.unlink()
    return KINDS[kind]
