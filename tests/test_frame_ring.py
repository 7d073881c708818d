"""FrameRing: the pinned ring buffer behind the zero-copy frame iterator."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ditto_fast import _core
from ditto_fast._core import FrameRing, RingClosed


def fill(ring: FrameRing, index: int) -> None:
    """Producer side of one frame whose every byte encodes its index."""
    slot = ring.acquire(timeout=5)
    slot.array[...] = index % 251
    slot.commit(index)


def test_shape_alignment_and_memory_kind():
    ring = FrameRing(3, 5, 7, 3)
    assert ring.shape == (5, 7, 3)
    assert ring.slots == 3
    assert ring.slot_stride % 4096 == 0 and ring.slot_stride >= 5 * 7 * 3
    devices, _ = _core.cuda_devices()
    assert ring.memory_kind == ("cuda_pinned" if devices else "aligned")
    assert ring.pinned == bool(devices)
    with ring.acquire() as slot:
        # Every slot starts on a page boundary.
        assert slot.array.__array_interface__["data"][0] % 4096 == 0
        slot.commit(0)


def test_pinned_true_needs_a_device():
    if _core.cuda_devices()[0]:
        assert FrameRing(1, 2, 2, pinned=True).memory_kind == "cuda_pinned"
    else:
        with pytest.raises(RuntimeError, match="page-locked memory needs"):
            FrameRing(1, 2, 2, pinned=True)
    assert FrameRing(1, 2, 2, pinned=False).memory_kind == "aligned"


@pytest.mark.parametrize(
    "args", [(0, 2, 2, 3), (2, 0, 2, 3), (2, 2, 0, 3), (2, 2, 2, 0)], ids=str
)
def test_rejects_empty_geometry(args):
    with pytest.raises(ValueError):
        FrameRing(*args)


def test_views_are_zero_copy_and_consumer_view_is_read_only():
    ring = FrameRing(2, 4, 6, 3)
    slot = ring.acquire()
    written = slot.array
    written[...] = np.arange(72, dtype=np.uint8).reshape(4, 6, 3)
    slot.commit(0)
    frame = ring.take()
    seen = frame.array
    assert frame.index == 0
    assert np.shares_memory(seen, written)
    assert seen.shape == (4, 6, 3) and seen.dtype == np.uint8
    assert not seen.flags.writeable
    np.testing.assert_array_equal(seen, np.arange(72, dtype=np.uint8).reshape(4, 6, 3))
    assert frame.array is seen  # one view per handle, not a new one per access


def test_frames_come_out_in_index_order_whatever_the_commit_order():
    ring = FrameRing(4, 2, 2, 1)
    slots = [ring.acquire() for _ in range(4)]
    for slot, index in zip(slots, [2, 0, 3, 1]):
        slot.array[...] = index
        slot.commit(index)
    for expected in range(4):
        with ring.take() as frame:
            assert frame.index == expected
            assert frame.array[0, 0, 0] == expected


def test_commit_outside_the_window_or_twice_is_an_error():
    ring = FrameRing(2, 1, 1, 1)
    a, b = ring.acquire(), ring.acquire()
    with pytest.raises(ValueError, match="outside the ring window"):
        a.commit(2)  # window is [0, 2)
    a.commit(1)
    with pytest.raises(ValueError, match="already committed"):
        b.commit(1)
    b.commit(0)
    ring.take().release()
    with pytest.raises(ValueError, match="outside the ring window"):
        c = ring.acquire()
        c.commit(0)  # already consumed


def test_handles_cannot_be_used_twice():
    ring = FrameRing(1, 1, 1, 1)
    slot = ring.acquire()
    slot.commit(0)
    with pytest.raises(RuntimeError, match="already committed or abandoned"):
        slot.commit(0)
    with pytest.raises(RuntimeError, match="already committed or abandoned"):
        slot.array
    frame = ring.take()
    frame.release()
    frame.release()  # idempotent
    assert frame.released
    with pytest.raises(RuntimeError, match="was released"):
        frame.array


def test_with_block_abandons_on_error_and_refuses_a_silent_skip():
    ring = FrameRing(1, 1, 1, 1)
    with pytest.raises(ZeroDivisionError):
        with ring.acquire():
            1 / 0
    assert ring.counts()["free"] == 1
    with pytest.raises(RuntimeError, match="without commit"):
        with ring.acquire():
            pass
    assert ring.counts()["free"] == 1


def test_dropped_handles_give_their_slots_back():
    ring = FrameRing(1, 1, 1, 1)
    ring.acquire()  # dropped uncommitted: abandoned
    slot = ring.acquire(timeout=1)
    slot.commit(0)
    ring.take()  # dropped unreleased: released
    assert ring.counts()["free"] == 1


def test_view_kept_after_release_never_sees_recycled_memory():
    ring = FrameRing(2, 8, 8, 3)
    fill(ring, 0)
    frame = ring.take()
    kept = frame.array
    frame.release()
    # The kept view pins slot 0: the producer gets the other slot, then has to wait.
    assert ring.counts() == {"free": 1, "writing": 0, "committed": 0, "reading": 0, "retired": 1}
    fill(ring, 1)
    with pytest.raises(TimeoutError, match="free slot"):
        ring.acquire(timeout=0.1)
    assert (kept == 0).all()
    derived = kept[2:4]  # a slice keeps the pin too
    del kept
    with pytest.raises(TimeoutError):
        ring.acquire(timeout=0.05)
    assert (derived == 0).all()
    del derived
    slot = ring.acquire(timeout=1)  # the last view is gone, so is the pin
    slot.abandon()


def test_producer_view_kept_after_commit_also_pins():
    ring = FrameRing(1, 2, 2, 1)
    slot = ring.acquire()
    written = slot.array
    slot.commit(0)
    ring.take().release()
    with pytest.raises(TimeoutError):
        ring.acquire(timeout=0.05)
    del written
    ring.acquire(timeout=1).abandon()


def test_views_outlive_the_ring_object():
    ring = FrameRing(1, 3, 3, 3)
    fill(ring, 0)
    view = ring.take().array
    del ring  # the view's base keeps the memory alive
    assert (view == 0).all()


def test_timeouts():
    ring = FrameRing(1, 1, 1, 1)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="next frame"):
        ring.take(timeout=0.2)
    assert time.monotonic() - start >= 0.19
    held = ring.acquire(timeout=0)
    with pytest.raises(TimeoutError):
        ring.acquire(timeout=0)
    held.abandon()
    with pytest.raises(ValueError, match="timeout"):
        ring.acquire(timeout=-1)


def test_close_wakes_every_waiter_with_a_clear_error():
    ring = FrameRing(1, 1, 1, 1)
    held = ring.acquire()
    errors: list[BaseException] = []

    def wait(call):
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever arrives
            errors.append(exc)

    waiters = [threading.Thread(target=wait, args=(ring.take,)) for _ in range(3)]
    waiters += [threading.Thread(target=wait, args=(ring.acquire,)) for _ in range(3)]
    for t in waiters:
        t.start()
    time.sleep(0.2)  # let them block
    ring.close()
    for t in waiters:
        t.join(timeout=5)
        assert not t.is_alive()
    assert len(errors) == 6
    assert all(isinstance(e, RingClosed) and "closed" in str(e) for e in errors)
    assert issubclass(RingClosed, RuntimeError)
    assert ring.closed
    held.abandon()
    with pytest.raises(RingClosed):
        ring.acquire(timeout=1)


def test_close_still_hands_out_frames_committed_in_order():
    ring = FrameRing(3, 1, 1, 1)
    fill(ring, 0)
    fill(ring, 1)
    ring.close()
    assert [ring.take().index, ring.take().index] == [0, 1]
    with pytest.raises(RingClosed, match="frame 2 will not arrive"):
        ring.take(timeout=1)


def test_waiting_releases_the_gil():
    ring = FrameRing(1, 1, 1, 1)
    counter = 0
    stop = threading.Event()

    def spin():
        nonlocal counter
        while not stop.is_set():
            counter += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        with pytest.raises(TimeoutError):
            ring.take(timeout=0.3)
        before = counter
        with pytest.raises(TimeoutError):
            ring.take(timeout=0.3)
        # Had the wait kept the GIL, the spinner could not have counted meanwhile.
        assert counter - before > 1000
    finally:
        stop.set()
        spinner.join()


def test_reset_sequence():
    ring = FrameRing(2, 1, 1, 1)
    ring.reset_sequence(10)
    assert ring.next_index == 10
    fill(ring, 10)
    with pytest.raises(RuntimeError, match="in flight"):
        ring.reset_sequence(0)
    assert ring.take().index == 10
    with pytest.raises(ValueError):
        ring.reset_sequence(-1)


@pytest.mark.parametrize("producers,consumers,slots", [(1, 1, 2), (4, 1, 3), (4, 3, 4), (3, 4, 1)])
def test_threads_lose_nothing_duplicate_nothing_and_keep_order(producers, consumers, slots):
    frames = 600
    height, width = 16, 24
    ring = FrameRing(slots, height, width, 3)
    counter = iter(range(frames))
    counter_lock = threading.Lock()
    owners: dict[int, str] = {}  # slot -> who holds it right now
    owners_lock = threading.Lock()
    delivered: list[int] = []
    failures: list[str] = []

    def claim(slot: int, who: str, previous: str | None) -> None:
        with owners_lock:
            if owners.get(slot) != previous:
                failures.append(f"slot {slot} handed to {who} while held by {owners.get(slot)}")
            owners[slot] = who

    def produce(me: int) -> None:
        while True:
            try:
                slot = ring.acquire(timeout=20)
            except RingClosed:  # the consumer closed the ring after the last frame
                return
            claim(slot.slot, f"producer{me}", None)
            with counter_lock:  # index taken after the slot: always inside the window
                index = next(counter, None)
            if index is None:
                claim(slot.slot, None, f"producer{me}")
                slot.abandon()
                return
            slot.array[...] = index % 251
            slot.array[0, 0, :] = (index >> 16) & 255, (index >> 8) & 255, index & 255
            claim(slot.slot, "committed", f"producer{me}")
            slot.commit(index)

    def consume(me: int) -> None:
        while True:
            try:
                frame = ring.take(timeout=20)
            except RingClosed:
                return
            arr = frame.array
            claim(frame.slot, f"consumer{me}", "committed")
            r, g, b = (int(v) for v in arr[0, 0])
            if (r << 16 | g << 8 | b) != frame.index or arr[-1, -1, 0] != frame.index % 251:
                failures.append(f"frame {frame.index} holds another frame's pixels")
            with owners_lock:
                delivered.append(frame.index)
                owners[frame.slot] = None
            del arr
            frame.release()
            if frame.index == frames - 1:
                ring.close()

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
    threads += [threading.Thread(target=consume, args=(i,)) for i in range(consumers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not failures, failures[:5]
    # take() hands indices out in order under the ring's lock; with several consumers the
    # appends interleave, so check the multiset, and the order for a single consumer.
    assert sorted(delivered) == list(range(frames))
    if consumers == 1:
        assert delivered == list(range(frames))
