"""The named ranges of lm1b.models.scopes: timed inside `timed_ranges` (the clock on a CPU,
events on CUDA, never inside a CUDA-graph capture), free outside it. CUDA is a stand-in here."""

from __future__ import annotations

import time

import pytest
import torch

from lm1b.models import scopes
from lm1b.models.scopes import CELL, TIME_LOOP, scope, timed_ranges


def test_ranges_are_timed_inclusively_and_summed_over_entries():
    with timed_ranges(torch.device("cpu")) as clock:
        for _ in range(2):
            with scope(TIME_LOOP), scope(CELL):
                time.sleep(0.01)
    seconds = clock.seconds()
    assert 0.02 <= seconds[CELL] <= seconds[TIME_LOOP] < 1.0
    assert scopes._clock is None  # outside the block nothing is timed


class FakeEvent:
    """torch.cuda.Event's stand-in: each event is 5 ms after the one recorded before it."""

    recorded = 0

    def __init__(self, enable_timing: bool) -> None:
        assert enable_timing
        self.at = None

    def record(self) -> None:
        FakeEvent.recorded += 1
        self.at = FakeEvent.recorded * 5.0

    def elapsed_time(self, end: FakeEvent) -> float:
        return end.at - self.at


@pytest.fixture
def fake_cuda_events(monkeypatch):
    FakeEvent.recorded = 0
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)


def test_on_cuda_a_range_is_timed_by_events_read_at_the_end(monkeypatch, fake_cuda_events):
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    with timed_ranges(torch.device("cuda")) as clock, scope(CELL):
        pass
    assert FakeEvent.recorded == 2 and clock.seconds() == {CELL: 0.005}


def test_a_range_inside_a_cuda_graph_capture_records_no_event(monkeypatch, fake_cuda_events):
    """A timing event recorded while a stream captures a graph would make the capture fail."""
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with timed_ranges(torch.device("cuda")) as clock, scope(CELL):
        ran = True
    assert ran and FakeEvent.recorded == 0 and clock.seconds() == {}
