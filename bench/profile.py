"""Sampling the daemon under test with py-spy (`python -m bench --profile DIR`).

py-spy comes from the `bench` extra (`pip install -e '.[bench]'`, done by `make bench`). It
attaches to the daemon subprocess without pausing it (`--nonblocking`) and writes collapsed
stacks, one file per daemon, which `top_functions` turns into a self-time table; the files
also load into speedscope or flamegraph.pl.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
from pathlib import Path


class Sampler:
    """py-spy recording one process until `stop()`."""

    def __init__(self, pid: int, output: Path, *, rate: int = 200) -> None:
        exe = shutil.which("py-spy") or str(Path(__file__).resolve().parent.parent
                                            / ".venv" / "bin" / "py-spy")
        self.output = output
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
             "--nonblocking", "--output", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def top_functions(collapsed: Path, n: int = 25) -> list[tuple[float, float, str]]:
    """(self %, inclusive %, frame) for the `n` frames with the most self time."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return []
    return [(own[f] / total * 100, inclusive[f] / total * 100, f)
            for f, _ in own.most_common(n)]


def summary(collapsed: Path, n: int = 25) -> str:
    lines = [f"{collapsed.name}: self% incl% frame"]
    lines += [f"  {s:5.1f} {i:5.1f} {frame}" for s, i, frame in top_functions(collapsed, n)]
    return "\n".join(lines)
