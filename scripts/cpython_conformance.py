"""Run CPython's own generic executor tests against ``procpool.Executor``.

The classes ``ExecutorTest``, ``WaitTests``, ``AsCompletedTests``,
``InitializerMixin``, ``FailingInitializerMixin`` and ``ExecutorShutdownTest``
of ``test.test_concurrent_futures`` run as they are, through one mixin that
sets ``executor_type = procpool.Executor``, once per start method. Three
tests of ``ExecutorShutdownTest`` start a subprocess that imports the executor
class *by name from concurrent.futures*, which no third-party class can pass;
each is replaced by the same test importing procpool (``REPLACED`` below).

Needs a Python whose ``test`` package has ``test.test_concurrent_futures``
(3.13 with CPython's test suite installed) and procpool installed in it;
anywhere else it prints a skip line and exits 0.

    python3.13 scripts/cpython_conformance.py [--methods fork forkserver spawn]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import textwrap
import unittest
from collections.abc import Callable
from typing import Any

#: CPython's test methods that import the executor from concurrent.futures by name in a
#: subprocess, and the procpool script each is replaced with: (script, expected stdout,
#: expected text on stderr or "" for none).
REPLACED: dict[str, tuple[str, str, str]] = {
    "test_interpreter_shutdown": ("""
        from procpool import Executor
        from test.test_concurrent_futures.test_shutdown import sleep_and_print
        if __name__ == "__main__":
            t = Executor(5, mp_context={context!r})
            t.submit(sleep_and_print, 1.0, "apple")
        """, "apple", ""),
    "test_submit_after_interpreter_shutdown": ("""
        import atexit
        @atexit.register
        def run_last():
            try:
                t.submit(id, None)
            except RuntimeError:
                print("runtime-error")
                raise
        from procpool import Executor
        if __name__ == "__main__":
            t = Executor(5, mp_context={context!r})
            t.submit(id, 42).result()
        """, "runtime-error", "RuntimeError: cannot schedule new futures"),
    "test_hang_gh83386": ("""
        from procpool import Executor
        from test.test_concurrent_futures.test_shutdown import sleep_and_print
        if __name__ == "__main__":
            t = Executor(max_workers=3, mp_context={context!r})
            t.submit(sleep_and_print, 1.0, "apple")
            t.shutdown(wait=False)
        """, "apple", ""),
}


def replacement(name: str) -> Callable[[Any], None]:
    script, out, err = REPLACED[name]

    def test(self: Any) -> None:
        from test.support.script_helper import assert_python_ok

        code = textwrap.dedent(script).format(context=self.ctx)
        _, stdout, stderr = assert_python_ok("-c", code)
        if err:
            self.assertIn(err, stderr.decode())
        else:
            self.assertFalse(stderr, stderr.decode())
        self.assertEqual(stdout.strip(), out.encode())

    test.__name__ = name
    test.__doc__ = f"{name}, with procpool.Executor imported from procpool"
    return test


def suite_for(method: str) -> unittest.TestSuite:
    from test.test_concurrent_futures import (
        executor,
        test_as_completed,
        test_init,
        test_shutdown,
        test_wait,
        util,
    )

    import procpool

    class ProcpoolMixin(util.ExecutorMixin):  # type: ignore[misc,name-defined]
        executor_type = procpool.Executor

        def get_context(self) -> Any:
            return multiprocessing.get_context(self.ctx)

    mixins = (executor.ExecutorTest, test_wait.WaitTests, test_as_completed.AsCompletedTests,
              test_init.InitializerMixin, test_init.FailingInitializerMixin,
              test_shutdown.ExecutorShutdownTest)
    suite = unittest.TestSuite()
    for mixin in mixins:
        attrs: dict[str, Any] = {"ctx": method, "__module__": mixin.__module__}
        attrs.update({name: replacement(name) for name in REPLACED if hasattr(mixin, name)})
        case = type(f"Procpool{method.title()}{mixin.__name__}",
                    (mixin, ProcpoolMixin, util.BaseTestCase), attrs)
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    return suite


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["fork", "forkserver", "spawn"])
    args = parser.parse_args()
    try:
        import test.test_concurrent_futures  # noqa: F401
    except ImportError:
        print(f"conformance: skipped, Python {sys.version.split()[0]} has no "
              "test.test_concurrent_futures")
        return 0
    from test import support

    support.verbose = False  # no per-test timings on stdout
    totals = [0, 0, 0]
    summary = []
    for method in args.methods:
        result = unittest.TextTestRunner(verbosity=1, stream=sys.stderr).run(suite_for(method))
        bad = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
        skipped = len(result.skipped)
        passed = result.testsRun - bad - skipped
        totals = [totals[0] + passed, totals[1] + bad, totals[2] + skipped]
        summary.append(f"{method}: {passed} passed, {bad} failed, {skipped} skipped")
    print(f"replaced (they import the executor by name from concurrent.futures): "
          f"{', '.join(REPLACED)}")
    print("\n".join(summary))
    print(f"conformance: {totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    return 1 if totals[1] else 0


if __name__ == "__main__":
    sys.exit(main())
