"""An export written by two processes: the first half of the selection here, the second in a worker process.

At a million votes jsonl and csv are ~25-35 s of CPU, one thread's work (SQLite's reads, Arrow's text kernels);
a second process on the second core takes half of it. Formats whose file is a header and then each
conversation's text in order (``PARTS = True``: jsonl, csv) are written as two contiguous slices of the selection
(``iter_batches(part=...)``), the worker's into a file beside the output that is then appended to it
(``os.copy_file_range``, in the kernel), so the bytes are those one process writes. The worker is a plain
``python -m feedback.export.parts`` process (not forked: the app exports from a threaded server; not
multiprocessing's spawn, which re-runs the parent's ``__main__``, a page script under Streamlit), started before
the flag pass so that its imports overlap it; it then gets the flags the parent computed once, pickled (~10 bytes
a vote). Each process holds one batch: memory stays flat
in the number of votes, about twice one process's in all.
"""

from __future__ import annotations

import os
import pickle
import resource
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import BinaryIO

from feedback.export.dataset import Batch, ExportFilters, FlagOf, Tally, iter_batches


@dataclass(frozen=True)
class Reading:
    """What ``iter_batches`` needs besides the part: the same in every process of one export."""

    url: str
    filters: ExportFilters
    salt: bytes
    redact: bool
    signals: bool
    flag_of: FlagOf | None
    skip: frozenset[str]

    def batches(
        self, tally: Tally, part: tuple[int, int] = (0, 1), progress: Callable[[int], None] | None = None
    ) -> Iterator[Batch]:
        """``iter_batches`` of this reading's part, telling ``progress`` each batch's conversations."""
        for batch in iter_batches(
            self.url,
            self.filters,
            salt=self.salt,
            redact_pii=self.redact,
            tally=tally,
            signals=self.signals,
            flag_of=self.flag_of,
            skip=self.skip,
            part=part,
        ):
            yield batch
            if progress is not None:
                progress(len(batch))


def _write_body(
    fmt: str,
    reading: Reading,
    part: tuple[int, int],
    out: Path,
    tally: Tally,
    progress: Callable[[int], None] | None = None,
) -> int:
    module = import_module(f"feedback.export.{fmt}")
    with out.open("ab") as handle:
        return module.write_body(reading.batches(tally, part, progress), handle)


def _worker(fmt: str, part: tuple[int, int], out: Path, orders: BinaryIO, reply: BinaryIO) -> None:
    """The worker process: imports the format while the parent computes the flags, then reads the pickled
    ``Reading`` (None: nothing to do), writes its slice into ``out`` and answers (rows, tally, peak MiB) or the
    error's text, pickled."""
    try:
        import_module(f"feedback.export.{fmt}")
        reading = pickle.load(orders)
        if reading is None:
            return
        tally = Tally()
        rows = _write_body(fmt, reading, part, out, tally)
        answer = ("ok", rows, tally, peak_mib())
    except BaseException:  # noqa: BLE001 (the parent raises it)
        answer = ("error", traceback.format_exc(), None, 0.0)
    pickle.dump(answer, reply)
    reply.flush()


def peak_mib() -> float:
    """This process's own peak resident memory (VmHWM). Not ``ru_maxrss`` where /proc has it: Linux carries that
    over ``execve`` from the forked parent, so every child reported at least the parent's RSS (~450 MiB once the
    demo data generator is imported), whatever the job did."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class WorkerFailed(RuntimeError):
    """The export's worker process failed; the message holds its traceback."""


class Worker:
    """The second process of one export, started before the flag pass so that its imports overlap it."""

    def __init__(self, fmt: str, out: Path) -> None:
        self.fmt, self.out, self.tail = fmt, out, out.with_name(out.name + ".part")
        self.tail.write_bytes(b"")
        # a plain ``python -m`` child, not multiprocessing: its spawn re-runs the parent's ``__main__``, which under
        # Streamlit is a page script; the child imports what this process imports (its sys.path)
        path = [entry or os.getcwd() for entry in sys.path]
        read_end, self._write_end = os.pipe()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "feedback.export.parts", fmt, str(self.tail), str(self._write_end)],
            stdin=subprocess.PIPE,
            pass_fds=(self._write_end,),
            env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
        )
        os.close(self._write_end)
        self._replies = os.fdopen(read_end, "rb")

    def write(self, reading: Reading, tally: Tally, progress: Callable[[int], None] | None = None) -> tuple[int, float]:
        """Write the export with the worker (see the module); the rows written and the worker's peak MiB."""
        module = import_module(f"feedback.export.{self.fmt}")
        self._order(reading)
        self.out.write_bytes(module.header())
        rows = _write_body(self.fmt, reading, (0, 2), self.out, tally, progress)
        try:
            status, worker_rows, worker_tally, peak = pickle.load(self._replies)
        except EOFError as error:
            code = self._process.wait()
            raise WorkerFailed(f"the export's worker ended without a reply (exit {code})") from error
        self._process.wait()
        if status != "ok":
            raise WorkerFailed(worker_rows)
        _append(self.tail, self.out)
        tally.conversations += worker_tally.conversations
        tally.turns += worker_tally.turns
        tally.votes += worker_tally.votes
        tally.event_ids |= worker_tally.event_ids
        tally.redactions.update(worker_tally.redactions)
        tally.skipped.update(worker_tally.skipped)
        if progress is not None and worker_tally.conversations:
            progress(worker_tally.conversations)
        return rows + worker_rows, peak

    def _order(self, reading: Reading | None) -> None:
        stdin = self._process.stdin
        if stdin is not None and not stdin.closed:
            pickle.dump(reading, stdin)
            stdin.close()

    def close(self) -> None:
        """Stop the worker if it is still there (an error on the way) and remove its file."""
        try:
            if self._process.poll() is None:
                self._order(None)
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.terminate()
                    self._process.wait()
        except OSError:
            pass
        finally:
            self._replies.close()
            self.tail.unlink(missing_ok=True)


def _append(part: Path, out: Path) -> None:
    """``part``'s bytes at the end of ``out``, copied in the kernel where it can (``copy_file_range`` refuses a
    target opened for appending: ``out`` is opened to write at its end instead)."""
    with part.open("rb") as source, out.open("r+b") as target:
        start = target.seek(0, os.SEEK_END)
        size = os.fstat(source.fileno()).st_size
        done = 0
        try:
            while done < size:
                copied = os.copy_file_range(source.fileno(), target.fileno(), size - done)
                if not copied:
                    break
                done += copied
        except (AttributeError, OSError):
            pass
        if done == size:
            return
        source.seek(0)
        target.seek(start)
        target.truncate(start)
        shutil.copyfileobj(source, target, 1 << 20)


if __name__ == "__main__":  # the worker: python -m feedback.export.parts FORMAT PART_FILE REPLY_FD
    with os.fdopen(int(sys.argv[3]), "wb") as _reply:
        _worker(sys.argv[1], (1, 2), Path(sys.argv[2]), sys.stdin.buffer, _reply)
