"""The stream cap shared through Redis (api/jobs/stream_slots.py), on the real test Redis.

Two ``RedisStreamSlots`` on one Redis stand for two API processes: the cap holds across them,
a released place is free again at once, a process that died without releasing frees its places
when their lease runs out, and with Redis unreachable each process still caps its own streams.
"""

from __future__ import annotations

import uuid

import pytest
import redis

from api.jobs.stream_slots import (
    LocalStreamSlots,
    RedisStreamSlots,
    TooManyStreams,
    stream_slots_for,
)

LEASE = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client(keel_env: dict[str, str]) -> redis.Redis:
    return redis.Redis.from_url(keel_env["KEEL_BROKER_URL"])


def test_the_cap_holds_across_processes(client: redis.Redis) -> None:
    clock = Clock()
    tenant = f"org_{uuid.uuid4().hex}"
    first, second = (RedisStreamSlots(client, 2, LEASE, clock) for _ in range(2))
    held = [first.acquire(tenant), second.acquire(tenant)]
    with pytest.raises(TooManyStreams) as refused:
        second.acquire(tenant)
    assert refused.value.headers == {"Retry-After": "5"}
    assert "2 event streams open" in str(refused.value)
    with pytest.raises(TooManyStreams):
        first.acquire(tenant)
    assert first.open_count(tenant) == second.open_count(tenant) == 2
    # Another tenant is not affected.
    other = first.acquire(f"org_{uuid.uuid4().hex}")

    held[0].release()
    held[0].release()  # idempotent: frees one place, not two
    assert second.open_count(tenant) == 1
    again = second.acquire(tenant)
    with pytest.raises(TooManyStreams):
        first.acquire(tenant)
    for slot in (held[1], again, other):
        slot.release()
    assert first.open_count(tenant) == 0


def test_a_dead_process_frees_its_places_after_the_lease_and_renewal_keeps_them(
    client: redis.Redis,
) -> None:
    clock = Clock()
    tenant = f"org_{uuid.uuid4().hex}"
    dead, alive = (
        RedisStreamSlots(client, 2, LEASE, clock),
        RedisStreamSlots(client, 2, LEASE, clock),
    )
    dead.acquire(tenant)  # never released nor renewed: its process is gone
    kept = alive.acquire(tenant)
    clock.now += LEASE * 0.8
    kept.renew()
    clock.now += LEASE * 0.8  # past the dead stream's lease, within the renewed one
    assert alive.open_count(tenant) == 1
    replacement = alive.acquire(tenant)
    with pytest.raises(TooManyStreams):
        alive.acquire(tenant)
    kept.release()
    replacement.release()


def test_unreachable_redis_caps_per_process(caplog: pytest.LogCaptureFixture) -> None:
    # Port 1 on loopback: nothing listens, the connect fails at once.
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    slots = RedisStreamSlots(down, 1, LEASE)
    slot = slots.acquire("org_a")
    with pytest.raises(TooManyStreams):
        slots.acquire("org_a")
    assert slots.open_count("org_a") == 1
    slot.renew()
    slot.release()
    assert slots.open_count("org_a") == 0
    warnings = [r for r in caplog.records if "stream cap storage unreachable" in r.message]
    assert len(warnings) == 1  # once per outage, and without the URL
    assert "127.0.0.1" not in warnings[0].getMessage()


def test_storage_choice_follows_the_url() -> None:
    assert isinstance(stream_slots_for("memory://", 3, 2.0), LocalStreamSlots)
    shared = stream_slots_for("redis://127.0.0.1:6379/0", 3, 2.0)
    assert isinstance(shared, RedisStreamSlots)
    assert shared.limit == 3
