"""The worker's Faust consumer commits only through records a stage handled (issue #9, takeover).

A real faust App and its (unstarted) consumer; the messages are the ones Faust's consumer makes.
"""

from __future__ import annotations

import faust
import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from livecoach.stream._faust_consumer import SafeCommitConsumer, drop_orphans, install, lost_offsets

TOPIC = "livecoach-signals"
TP0 = TP(TOPIC, 0)


@pytest.fixture
def consumer():
    app = faust.App("commit-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    install(app)
    app.topics.acking_topics.add(TOPIC)
    app.flow_control.resume()
    app.consumer_generation_id = 3
    c = app.consumer
    assert isinstance(c, SafeCommitConsumer)
    return c


def _message(offset: int, generation: int = 3) -> ConsumerMessage:
    return ConsumerMessage(TOPIC, 0, offset, 0.0, 0, [], b"k", b"v", None, generation_id=generation)


def _handled(consumer, *offsets: int, generation: int = 3) -> None:
    for o in offsets:
        m = _message(o, generation)
        consumer._unacked_messages.add(m)
        m.ack(consumer)


def _commit(consumer):
    """What Faust's commit does per partition: the new offset, kept as committed once the broker took it."""
    offset = consumer._new_offset(TP0)
    if offset is not None:
        consumer._committed_offset[TP0] = offset
    return offset


def test_the_commit_stops_at_the_first_record_not_handled(consumer):
    consumer._committed_offset[TP0] = 10
    _handled(consumer, 10, 11, 13)
    assert _commit(consumer) == 12  # 12 is still in flight: the commit stops before it
    _handled(consumer, 12)
    assert _commit(consumer) == 14


def test_a_single_unhandled_record_at_the_commit_holds_it_back(consumer):
    # Faust's own check (min(acked) - committed > 1) lets offset 10 through here
    consumer._committed_offset[TP0] = 10
    _handled(consumer, 11, 12)
    assert _commit(consumer) is None
    assert lost_offsets(consumer, {}) == {TP0: (10, 11)}  # the watchdog reads 10 again


def test_a_group_starting_at_offset_zero_still_has_its_hole_checked(consumer):
    consumer._committed_offset[TP0] = 0
    _handled(consumer, 2, 3)
    assert _commit(consumer) is None
    _handled(consumer, 0, 1)
    assert _commit(consumer) == 4


def test_a_record_skipped_around_a_rebalance_does_not_count_as_handled(consumer):
    consumer._committed_offset[TP0] = 5
    old = _message(5, generation=2)  # fetched in the generation before the rebalance
    old.ack(consumer)  # the stream's skip path acknowledges it ...
    assert consumer._acked[TP0] == []  # ... but the consumer does not count it
    _handled(consumer, 6)
    assert _commit(consumer) is None  # so the commit cannot pass offset 5


def test_a_record_finished_while_the_flow_is_stopped_is_read_again_not_committed(consumer):
    consumer._committed_offset[TP0] = 7
    m = _message(7)
    consumer._unacked_messages.add(m)
    consumer.app.flow_control.suspend()  # a rebalance began while the stage was busy with it
    m.ack(consumer)
    assert consumer._acked[TP0] == [] and m not in consumer._unacked_messages
    consumer.app.flow_control.resume()
    _handled(consumer, 7)  # the copy fetched again after the seek to the committed offset
    assert _commit(consumer) == 8


def test_offsets_missing_from_the_log_between_fetched_records_do_not_block_the_commit(consumer):
    consumer._committed_offset[TP0] = 20
    consumer._gap[TP0].addi(22, 25)  # Faust saw offset 21 then 25: 22-24 do not exist
    _handled(consumer, 20, 21, 25)
    assert _commit(consumer) == 26


def test_records_dropped_from_the_stream_buffers_are_read_again_once_the_worker_is_idle(consumer):
    # Faust's last "resume flow" of a rebalance clears the streams' buffers: offsets 10-19 were
    # delivered (one stream took offset 10, so it stays marked in flight) and then dropped
    consumer._committed_offset[TP0] = 10
    consumer._read_offset[TP0] = 19
    orphan = _message(10)
    consumer._unacked_messages.add(orphan)
    assert lost_offsets(consumer, {TP0: 20}) == {}  # busy: the streams may still be on it
    assert lost_offsets(consumer, {TP0: 20}, idle=True) == {TP0: (10, 20)}
    assert drop_orphans(consumer, TP0) == 1 and orphan not in consumer._unacked_messages


def test_an_idle_worker_with_a_commit_due_is_left_alone(consumer):
    consumer._committed_offset[TP0] = 10
    _handled(consumer, 10, 11)  # handled, committed at the next commit interval
    assert lost_offsets(consumer, {TP0: 12}, idle=True) == {}
