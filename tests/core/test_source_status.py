"""Blind time and reconnect counts of a tail source, whichever way its stream goes away."""

from __future__ import annotations

from rollout.sources import SourceStatus


def test_a_process_that_ends_counts_one_drop_and_its_blind_time() -> None:
    status = SourceStatus(blind_since=0.0)
    status.stream_up(2.0)  # first data after a 2 s start
    status.stream_down(10.0)
    status.stream_up(13.0)
    assert (status.reconnects, status.blind_s(20.0)) == (1, 5.0)


def test_a_stream_lost_inside_a_live_process_is_blind_and_counted_once() -> None:
    """wrangler 4.164 reconnects on its own: blind from the warning, and when it then gives up and exits the
    same drop is not counted again."""
    status = SourceStatus(blind_since=0.0)
    status.stream_up(1.0)
    status.stream_lost(5.0)
    assert not status.connected and status.blind_s(9.0) == 5.0
    status.stream_lost(7.0)  # its next "Reconnecting (attempt 2 of 5)"
    status.stream_down(36.0)  # it gave up and exited
    assert status.reconnects == 1
    status.stream_up(38.0)
    assert status.blind_s(40.0) == 1.0 + 33.0


def test_a_stream_lost_then_back_in_the_same_process_is_one_reconnect() -> None:
    status = SourceStatus(blind_since=0.0)
    status.stream_up(0.5)
    status.stream_lost(5.0)
    status.stream_up(6.0)  # its reconnect worked
    status.stream_down(100.0)  # the hourly session restart
    assert status.reconnects == 2
    assert status.blind_s(100.0) == 0.5 + 1.0
