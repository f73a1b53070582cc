"""`python -m harness.bench.rss -- COMMAND...`: run COMMAND, print one JSON line with its peak RSS.

The peak is the child's own `ru_maxrss`, from `os.wait4`. Linux starts a child's count at what its
parent's address space had reached when it forked, and keeps it across exec, so this launcher imports
the standard library only (its own peak, a few MiB, is the floor of any figure it gives, and is
reported beside it) and must itself be started by a small process's fork, not by a big one: see
`harness.bench.memory.measure_peak_rss`, which starts it from a forked shell.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

# ru_maxrss is in kilobytes on Linux, bytes on macOS
RSS_UNIT = 1 if sys.platform == "darwin" else 1024
TAIL_LINES = 15


def run_measured(command: Sequence[str]) -> dict[str, object]:
    """Run `command` to its end; its exit code, wall time, peak RSS and the last lines it printed."""
    with tempfile.TemporaryFile("w+b") as output:
        start = time.perf_counter()
        process = subprocess.Popen(list(command), stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # reaped here, so its own rusage is known
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        tail = output.read().decode(errors="replace").strip().splitlines()[-TAIL_LINES:]
    return {
        "command": list(command),
        "exit_code": process.returncode,
        "wall_s": wall,
        "peak_rss_bytes": usage.ru_maxrss * RSS_UNIT,
        "launcher_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RSS_UNIT,
        "output_tail": tail,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m harness.bench.rss -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    print(json.dumps(run_measured(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
