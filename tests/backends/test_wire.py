"""How tasks are pickled (procpool.backends.wire.dumps): the C pickler where it means the
same as cloudpickle, cloudpickle where it does not; and how a message is framed on the pipe."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import threading
import types

import cloudpickle
import pytest

from procpool.backends import wire
from tests import tasks


def test_what_an_importable_module_defines_goes_by_reference_with_the_c_pickler() -> None:
    payload = [(tasks.double, (21,), {})]
    assert wire.dumps(payload) == pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    assert wire.loads(wire.dumps(payload))[0][0] is tasks.double


def test_lambdas_and_closures_go_by_value() -> None:
    offset = 5
    fn = lambda x: x + offset  # noqa: E731
    clone = wire.loads(wire.dumps(fn))
    assert clone is not fn and clone(1) == 6


def test_what_main_defines_goes_by_value(monkeypatch: pytest.MonkeyPatch) -> None:
    main = types.ModuleType("__main__")
    exec("def triple(x):\n    return 3 * x\n", main.__dict__)
    monkeypatch.setitem(sys.modules, "__main__", main)
    data = wire.dumps(main.triple)
    assert b"triple" in data and pickle.loads(data)(2) == 6
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    assert pickle.loads(data)(2) == 6  # no lookup in the __main__ of where it is loaded


def test_a_module_registered_by_value_goes_by_value() -> None:
    cloudpickle.register_pickle_by_value(tasks)
    try:
        data = wire.dumps(tasks.double)
        assert data != pickle.dumps(tasks.double, protocol=pickle.HIGHEST_PROTOCOL)
        assert pickle.loads(data)(None, 4) == 8
    finally:
        cloudpickle.unregister_pickle_by_value(tasks)


# --- framing ------------------------------------------------------------------------------


def _round_trip(sizes: list[int]) -> list[bytes]:
    """Each size's message through send_message, as Connection.recv_bytes reads them."""
    writer, reader = multiprocessing.Pipe(duplex=True)
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.extend(reader.recv_bytes() for _ in sizes))
    thread.start()  # a reader, so that a message larger than the socket's buffer gets through
    try:
        for size in sizes:
            wire.send_message(writer, bytes([size % 251]) * size)
    finally:
        thread.join(timeout=30)
        writer.close()
        reader.close()
    return got


def test_a_message_is_framed_as_recv_bytes_reads_it_at_any_size() -> None:
    sizes = [0, 1, 16383, 16384, 16385, 100_000, 3_000_000]
    got = _round_trip(sizes)
    assert [len(message) for message in got] == sizes
    expected = [bytes([size % 251]) * size for size in sizes]
    assert got == expected


@pytest.mark.parametrize("first_write", [0, 2, 4, 10])
def test_a_write_cut_short_sends_the_rest_in_order(
    monkeypatch: pytest.MonkeyPatch, first_write: int
) -> None:
    real_writev = os.writev

    def short_writev(fd: int, parts: list[bytes]) -> int:  # as a signal mid-write leaves it
        return real_writev(fd, [b"".join(parts)[:first_write]])

    monkeypatch.setattr(os, "writev", short_writev)
    assert _round_trip([40_000, 3]) == [bytes([40_000 % 251]) * 40_000, bytes([3]) * 3]


def test_a_closed_connection_raises_oserror_as_send_bytes_does() -> None:
    writer, reader = multiprocessing.Pipe(duplex=True)
    reader.close()
    with pytest.raises(OSError):
        wire.send_message(writer, b"x" * 100)
    writer.close()
    with pytest.raises(OSError):
        wire.send_message(writer, b"x")
