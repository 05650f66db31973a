"""Admission of per-visitor scans: at most N at once, a bounded wait, then a 503."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from worker.api.errors import ApiError
from worker.api.scans import ScanLimiter, busy_message


def limiter(slots: int, wait_seconds: float) -> tuple[ScanLimiter, CollectorRegistry]:
    registry = CollectorRegistry()
    return ScanLimiter(slots, wait_seconds, registry), registry


def metric(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_a_scan_past_the_slots_is_refused_after_its_wait() -> None:
    scans, registry = limiter(1, 0.01)
    release = asyncio.Event()

    async def hold() -> None:
        async with scans.admitted():
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert metric(registry, "ab_api_scans_running") == 1
    with pytest.raises(ApiError) as refused:
        async with scans.admitted():
            pytest.fail("admitted past the only slot")
    assert refused.value.status_code == 503
    assert refused.value.headers == {"Retry-After": "1"}
    assert refused.value.message == busy_message(1, 1)
    assert metric(registry, "ab_api_scans_refused_total") == 1
    assert metric(registry, "ab_api_scans_waiting") == 0
    release.set()
    await holder
    assert metric(registry, "ab_api_scans_running") == 0


async def test_a_waiting_scan_starts_when_a_slot_frees_up_within_its_wait() -> None:
    scans, registry = limiter(2, 30)
    release = asyncio.Event()
    order: list[str] = []

    async def scan(name: str) -> None:
        async with scans.admitted():
            order.append(name)
            await release.wait()

    tasks = [asyncio.create_task(scan(name)) for name in ("a", "b", "c")]
    await asyncio.sleep(0)
    assert order == ["a", "b"]
    assert (metric(registry, "ab_api_scans_running"), metric(registry, "ab_api_scans_waiting")) == (
        2,
        1,
    )
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c"]
    assert metric(registry, "ab_api_scans_refused_total") == 0


async def test_a_free_slot_is_taken_even_with_no_wait_allowed() -> None:
    scans, _ = limiter(1, 0)
    for _ in range(3):  # and given back each time
        async with scans.admitted():
            pass


async def test_a_failed_or_cancelled_scan_gives_its_slot_back() -> None:
    scans, registry = limiter(1, 0)
    with pytest.raises(RuntimeError):
        async with scans.admitted():
            raise RuntimeError("scan failed")
    started = asyncio.Event()

    async def hold() -> None:
        async with scans.admitted():
            started.set()
            await asyncio.Event().wait()

    holder = asyncio.create_task(hold())
    await started.wait()
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    async with scans.admitted():
        assert metric(registry, "ab_api_scans_running") == 1


@pytest.mark.parametrize(("slots", "wait"), [(0, 1.0), (1, -1.0)])
def test_settings_out_of_range_are_refused_clearly(slots: int, wait: float) -> None:
    with pytest.raises(ValueError, match="AB_API_"):
        limiter(slots, wait)
