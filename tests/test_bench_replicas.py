"""The replica bench's rate figure: the most events in any sliding second, as the providers count them."""

from __future__ import annotations

from bench.replicas import max_in_any_second


def test_most_events_in_any_sliding_second() -> None:
    """A burst straddling a second boundary counts whole; events exactly 1 s apart fall in different windows."""
    assert max_in_any_second([]) == 0
    assert max_in_any_second([10.0, 11.0, 12.0]) == 1  # [t, t + 1): 1 s apart is the next window
    assert max_in_any_second([10.9, 11.0, 11.1, 11.8, 12.5]) == 4  # 10.9-11.8, across the boundary
    assert max_in_any_second([5.0 + i / 60 for i in range(60)][::-1]) == 60  # any order; 60 in 0.98 s
