"""How the learnt rate behaves against a rate-limited API: measured from one throttle's wave, backed off a little,
never ratcheted down by throttles below a rate the API served for a while.

The rules are driven through ``Cooldown`` with an injected clock (the timeline is the point, and sleeping through it
would cost seconds per case); the first test drives the real CLI against the real local API.
"""

from __future__ import annotations

import re

from batchcli.executors.limiter import Limiter, Limits
from batchcli.executors.throttling import Cooldown, Throttle
from batchcli.load.configuration import Configuration
from batchcli.outcome import Tally
from tests.test_throttle import JOB, FlakyApi, assert_ledger, log_text


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cooldown(concurrency: int = 100, rate: float | None = None) -> tuple[Cooldown, Limiter, Tally, Clock]:
    clock, tally = Clock(), Tally()
    limiter = Limiter(Limits(concurrency, rate), clock=clock)
    config = Configuration(concurrency=concurrency, rate_limit=rate)
    cool = Cooldown(config, limiter, lambda limits: _set(limiter, limits), tally, clock=clock)
    cool.start()
    return cool, limiter, tally, clock


def _set(limiter: Limiter, limits: Limits) -> None:
    limiter.set_concurrency(limits.concurrency)
    limiter.set_rate_limit(limits.rate_limit)


def learnt(cool: Cooldown, tally: Tally, clock: Clock, per_s: float) -> float:
    """The first throttle after a burst of 10, then its wave: the API serving ``per_s`` among the 429s."""
    tally.succeeded += 10
    clock.now += 0.05
    cool.throttled(Throttle(1.0))
    for _ in range(8):
        clock.now += 0.05
        tally.succeeded += round(per_s * 0.05)
        cool.throttled(Throttle(1.0))
    clock.now += 1.0  # the cool-down ends
    return cool._limiter.limits.rate_limit or 0.0


def test_the_first_throttles_wave_measures_the_apis_rate() -> None:
    """Successes between the first and a later 429 of one cool-down are the API's rate: the run resumes at 0.95 of it."""
    cool, limiter, tally, clock = cooldown()
    rate = learnt(cool, tally, clock, 120)
    assert abs(rate - 120 * 0.95) < 0.5, rate
    # It then grows slowly: a measured rate has no slow start.
    tally.succeeded += 100
    cool.tick()
    grown = limiter.limits.rate_limit
    assert grown is not None and rate < grown < rate * 1.01


def test_throttles_from_jitter_never_cut_below_most_of_a_rate_served_for_a_while() -> None:
    """After 12 s served at the learnt rate, quick throttles cut 5%, then hold near 0.9 of it (without: 0.95**4)."""
    cool, limiter, tally, clock = cooldown()
    r0 = learnt(cool, tally, clock, 120)
    clock.now += 12.0
    tally.succeeded += round(r0 * 12)
    cool.throttled(Throttle(1.0))
    served = limiter.limits.rate_limit
    assert served is not None and abs(served - r0 * 0.95) < 1, (served, r0)
    rates = []
    for _ in range(3):  # throttled soon after each cool-down: jitter, or a real drop
        clock.now += 1.5
        tally.succeeded += 40
        cool.throttled(Throttle(1.0))
        rates.append(limiter.limits.rate_limit or 0.0)
    assert rates == sorted(rates, reverse=True), rates
    assert abs(rates[0] - r0 * 0.95**2) < 1, rates
    # At the floor it gives way by 2% a throttle (the API's rate may have dropped), not by 5%.
    assert rates[2] > r0 * 0.85 > r0 * 0.95**4, (rates, r0)


def test_a_long_window_cuts_from_what_the_api_served() -> None:
    """A throttle after 12 s in which items succeeded at a third of the rate cuts to 0.95 of what was served."""
    cool, limiter, tally, clock = cooldown()
    r0 = learnt(cool, tally, clock, 120)
    clock.now += 12.0
    tally.succeeded += round(r0 * 4)
    cool.throttled(Throttle(1.0))
    rate = limiter.limits.rate_limit
    assert rate is not None and r0 * 0.3 < rate < r0 * 0.4, (rate, r0)


def test_the_answers_read_right_after_the_first_throttle_are_not_counted_in_the_wave() -> None:
    """A backlog of 20 answers read with the first 429 does not raise the wave's measure of an API serving 100/s."""
    cool, limiter, tally, clock = cooldown()
    tally.succeeded += 10
    clock.now += 0.05
    cool.throttled(Throttle(1.0))
    clock.now += 0.01
    tally.succeeded += 20  # served before the first 429, read just after it: counted, they would read ~140/s
    cool.throttled(Throttle(1.0))
    for _ in range(8):
        clock.now += 0.05
        tally.succeeded += 5
        cool.throttled(Throttle(1.0))
    rate = limiter.limits.rate_limit
    assert rate is not None and abs(rate - 100 * 0.95) < 0.5, rate


def test_a_wave_rate_throttled_soon_after_is_cut_once_deeply_then_as_usual() -> None:
    """Throttled 2 s after resuming at a wave's rate, the rate goes to 0.85 of it; the next quick throttle cuts 5%."""
    cool, limiter, tally, clock = cooldown()
    r0 = learnt(cool, tally, clock, 120)
    clock.now += 2.0
    tally.succeeded += round(r0 * 2)
    cool.throttled(Throttle(1.0))
    deep = limiter.limits.rate_limit
    assert deep is not None and abs(deep - r0 * 0.85) < 0.5, (deep, r0)
    clock.now += 1.0 + 2.0
    tally.succeeded += round(deep * 2)
    cool.throttled(Throttle(1.0))
    usual = limiter.limits.rate_limit
    assert usual is not None and abs(usual - deep * 0.95) < 0.5, (usual, deep)


def test_after_a_wave_rates_deep_cut_the_rate_climbs_back_to_what_the_api_served_beyond_its_burst() -> None:
    """Throttled 2 s after resuming, by an API serving 110/s beyond a burst of 10, the rate climbs back from the deep cut
    to 0.98 of 110/s in a few steps (the deep cut alone stays 8% below it), then probes slowly."""
    cool, limiter, tally, clock = cooldown()
    r0 = learnt(cool, tally, clock, 120)  # a wave read 120/s: the API's real 110/s is found by throttling
    clock.now += 2.0
    tally.succeeded += 10 + 110 * 2  # the bucket, full when the cool-down ended, then the API's rate
    cool.throttled(Throttle(1.0))
    assert abs((limiter.limits.rate_limit or 0) - r0 * 0.85) < 0.5
    clock.now += 1.0
    rates = []
    for _ in range(6):
        clock.now += 0.5
        tally.succeeded += 50
        cool.tick()
        rates.append(limiter.limits.rate_limit or 0.0)
    assert rates == sorted(rates) and rates[0] < 110 * 0.98 - 1, rates
    assert abs(rates[3] - 110 * 0.98) < 0.5 and rates[5] < 110 * 0.98 * 1.01, rates


def test_after_a_wave_rates_deep_cut_no_climb_when_the_api_served_less() -> None:
    """When the API served no more than the deep cut beyond its burst, the rate stays there and probes slowly."""
    cool, limiter, tally, clock = cooldown()
    r0 = learnt(cool, tally, clock, 120)
    clock.now += 2.0
    tally.succeeded += 10 + 90 * 2
    cool.throttled(Throttle(1.0))
    deep = limiter.limits.rate_limit or 0.0
    clock.now += 1.5
    tally.succeeded += 50
    cool.tick()
    assert deep < (limiter.limits.rate_limit or 0.0) < deep * 1.01, (deep, r0)


def test_a_token_bucket_api_is_served_near_its_rate_and_loses_nothing(run_batchcli) -> None:
    """Against a 100/s token bucket with 100 in flight, every item succeeds once and the rate learnt is near 100/s."""
    with FlakyApi(rate=100, burst=10, retry_after_s=1) as api:
        result = run_batchcli(
            "exec", JOB, "-d", "out", "-p", f"url={api.url}", "-p", "count=400", "-p", "concurrency=100",
            "-p", "max_retries=0",
        )
        assert result.exit_code == 0, result.output
        assert_ledger(result, api, 400)
        assert api.statuses[429] > 0
    log = log_text(result.run_dir)
    rates = [float(r) for r in re.findall(r"effective concurrency=\d+, rate_limit=([\d.]+)/s", log)]
    # Learnt near the API's rate (the wave is timed by the client, which shares this process with the server).
    assert rates and 50 <= rates[-1] <= 120, rates


def test_a_wave_of_throttles_without_retry_after_doubles_the_cool_down_once(caplog) -> None:
    """Ten refusals answering one burst are one throttle: the cool-down is backoff_s (1 s), not 2**9 s (the streak
    counted every refused attempt, and one burst at concurrency 10 stopped the run for 512 s while the log said
    1 s). Each later cool-down with no success between doubles it; a success resets it."""
    cool, limiter, tally, clock = cooldown(concurrency=10)
    waits = [cool.throttled(Throttle(None)) for _ in range(10)]
    assert waits == [1.0] * 10
    clock.now += 1.0
    assert cool.throttled(Throttle(None)) == 2.0  # the next cool-down, with no success between
    clock.now += 2.0
    assert cool.throttled(Throttle(None)) == 4.0
    clock.now += 4.0
    tally.succeeded += 5
    cool.tick()  # a success after the cool-down: the streak starts again
    assert cool.throttled(Throttle(None)) == 1.0


def test_a_wait_past_throttle_max_wait_s_is_clamped_and_said_once_per_cool_down(caplog) -> None:
    cool, limiter, tally, clock = cooldown(concurrency=10)
    with caplog.at_level("WARNING", logger="batchcli"):
        waits = [cool.throttled(Throttle(float("inf"))) for _ in range(10)]
    assert waits == [cool.max_wait_s] * 10
    said = [r.getMessage() for r in caplog.records if "throttle_max_wait_s" in r.getMessage()]
    assert said == [f"The API asked to wait for ever; waiting throttle_max_wait_s={cool.max_wait_s:g}s instead."]
