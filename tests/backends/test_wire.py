"""How tasks are pickled (procpool.backends.wire.dumps): the C pickler where it means the
same as cloudpickle, cloudpickle where it does not."""

from __future__ import annotations

import pickle
import sys
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
