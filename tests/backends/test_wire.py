"""How tasks are pickled (procpool.backends.wire.dumps): the C pickler where it means the
same as cloudpickle, cloudpickle where it does not; and how a message is framed on the pipe."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import struct
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


# -- MessageReader: every whole message in the pipe per read ---------------------------


def _framed(body: bytes, long_header: bool = False) -> bytes:
    """``body`` as send_message frames it (the 12-byte header: as for over 2 GiB)."""
    header = struct.pack("!iQ", -1, len(body)) if long_header else struct.pack("!i", len(body))
    return header + body




def test_one_read_returns_every_whole_message_in_the_pipe_in_order(
        pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"".join(_framed(body) for body in (b"one", b"", b"three")))
    reader = wire.MessageReader(r)
    assert reader.read() == [b"one", b"", b"three"]


@pytest.mark.parametrize("long_header", [False, True])
@pytest.mark.parametrize("cut", [1, 3, 4, 5, 8, 11, 12, 13])
def test_a_message_cut_anywhere_comes_whole_once_its_rest_is_there(
        pipe: tuple[int, int], long_header: bool, cut: int) -> None:
    r, w = pipe
    first, second = _framed(b"first"), _framed(b"second message", long_header)
    data = first + second
    reader = wire.MessageReader(r)
    os.write(w, data[:len(first) + cut])  # the first whole, the second begun
    assert reader.read() == [b"first"]
    os.write(w, data[len(first) + cut:])
    assert reader.read() == [b"second message"]


def test_with_no_whole_message_yet_a_read_waits_for_the_first(pipe: tuple[int, int]) -> None:
    r, w = pipe
    body = bytes(range(256)) * 1000  # over a pipe's capacity: the writer blocks meanwhile
    writer = threading.Thread(target=lambda: [os.write(w, part) for part in (
        _framed(body)[:3], _framed(body)[3:], _framed(b"after"))])
    writer.start()
    reader = wire.MessageReader(r)
    got = reader.read()
    writer.join(timeout=30)
    got += reader.read() if got == [body] else []
    assert got == [body, b"after"]


def test_messages_written_by_send_message_read_back_at_any_size() -> None:
    writer, reader_conn = multiprocessing.Pipe(duplex=True)
    sizes = [0, 1, 16384, 100_000, 3_000_000]
    thread = threading.Thread(
        target=lambda: [wire.send_message(writer, bytes([s % 251]) * s) for s in sizes])
    thread.start()
    reader = wire.MessageReader(reader_conn.fileno())
    got: list[bytes] = []
    try:
        while len(got) < len(sizes):
            got += reader.read()
    finally:
        thread.join(timeout=30)
        writer.close()
        reader_conn.close()
    assert got == [bytes([s % 251]) * s for s in sizes]


@pytest.mark.parametrize("left", [b"", b"\x00\x00", _framed(b"cut short")[:7]])
def test_the_end_of_the_pipe_raises_eoferror(pipe: tuple[int, int], left: bytes) -> None:
    r, w = pipe
    os.write(w, left)  # nothing, or a message the writer never finished
    os.close(w)
    with pytest.raises(EOFError):
        wire.MessageReader(r).read()
