"""Key → partition, identical to Kafka's default partitioner for keyed records.

Kafka's Java client uses ``murmur2(key) & 0x7fffffff % partitions``; librdkafka's
``murmur2_random`` partitioner does the same. Using it for both backends means a key
lands in the same partition whichever backend or producer wrote it.
Records without a key go round-robin (decided by the caller).
"""

from __future__ import annotations

import functools

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c), as a signed 32-bit int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    n4 = length & ~3
    for i in range(0, n4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[n4 + 2] << 16
    if rest >= 2:
        h ^= data[n4 + 1] << 8
    if rest >= 1:
        h ^= data[n4]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@functools.lru_cache(maxsize=65536)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def key_per_partition(partitions: int) -> list[bytes]:
    """One record key for each partition (index = partition), so an event meant for
    every consumer of a topic (a TRUNCATE) can be written once into each partition."""
    keys: dict[int, bytes] = {}
    i = 0
    while len(keys) < partitions:
        k = f'{{"__truncate":{i}}}'.encode()
        keys.setdefault(partition_for(k, partitions), k)
        i += 1
    return [keys[p] for p in range(partitions)]
