"""Rendezvous (highest random weight) owners of a key, computed the way
agent/replication/rendezvous.cc does, so tests and benchmarks can pick objects a given agent
owns (or does not). A change there must be made here too; the multi-node tests would fail."""

M64 = (1 << 64) - 1


def _fnv1a(s):
    h = 0xcbf29ce484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001b3) & M64
    return h


def _mix(x):
    x = (x + 0x9e3779b97f4a7c15) & M64
    x = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & M64
    x = ((x ^ (x >> 27)) * 0x94d049bb133111eb) & M64
    return x ^ (x >> 31)


def owners(key, members, copies):
    """The key's owners among members ("HOST:PORT"), first owner first."""
    scored = sorted(members, key=lambda m: (-_mix(_fnv1a(key) ^ _mix(_fnv1a(m))), m))
    return scored[:copies]
