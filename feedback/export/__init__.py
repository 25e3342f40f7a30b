"""Researcher exports: one module per format behind one function, each with a data card beside it.

``write_export(url, fmt, out, filters)`` streams the data that counts (``db.visibility``) through a
format module (``jsonl``, ``csv``, ``parquet``, ``arena``, ``dpo``) and writes ``<out>.card.md``.
``dataset`` reads and redacts the columns every format shares (a batch of typed Arrow columns per table, read
through ADBC's SQLite driver on a SQLite file, ``db.arrow``), ``flat`` is the one-row-per-vote table of CSV and
Parquet, ``jsontext`` builds the JSON formats' text column-wise (jsonl, arena, dpo), ``arms`` names the arms as
models, ``card`` writes the data card. ``dataset.conversation_rows`` (nested row objects) is the reference the
tests hold the column-wise writers to.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from feedback.cpus import usable_cpus
from feedback.export.card import NO_LICENCE, write_card
from feedback.export.dataset import ExportFilters, Tally, count_conversations, reads_arrow

FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet", "arena", "dpo")

__all__ = ["FORMATS", "ExportFilters", "ExportResult", "UnknownFormat", "count_conversations", "write_export"]


class UnknownFormat(ValueError):
    def __init__(self, fmt: str) -> None:
        super().__init__(f"Unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}.")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    card_path: Path
    rows: int
    tally: Tally
    worker_peak_mib: float = 0.0  # peak resident memory of the second process, when it wrote in parts


def write_export(
    url: str,
    fmt: str,
    out: Path,
    filters: ExportFilters,
    *,
    redact: bool = True,
    progress: Callable[[int], None] | None = None,
    salt: bytes | None = None,
    default_licence: str | None = None,
    processes: int | None = None,
) -> ExportResult:
    """Write one export and its data card; ``progress`` gets the number of conversations per batch.

    ``salt`` re-hashes participant ids (the organizer's configured one, so exports join); None means
    a fresh random salt, and exports then can't be joined with each other. ``default_licence`` is
    what the card states for events that set no licence of their own. ``processes=2`` (the default where
    there are two cores) writes jsonl and csv from a SQLite file in two processes (``parts``), same bytes.
    """
    if fmt not in FORMATS:
        raise UnknownFormat(fmt)
    use_salt = salt or secrets.token_bytes(32)
    from feedback.export.parts import Reading, Worker  # run as the worker's main module: not imported at the top
    from feedback.vote_flags import flag_lookup  # imports the export filters itself

    module = import_module(f"feedback.export.{fmt}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tally = Tally()

    worker = None
    if getattr(module, "PARTS", False) and _processes(processes) > 1 and reads_arrow(url):
        worker = Worker(fmt, out)  # started first: its imports overlap the flag pass
    try:
        # only formats that write the decisions' signals (SIGNALS = True) pay for reading them; vote-quality
        # flags need every vote of the selection first (participants, repeats): formats that carry them
        # (FLAGS = True) pay for that one pass
        reading = Reading(
            url,
            filters,
            use_salt,
            redact,
            getattr(module, "SIGNALS", False),
            flag_lookup(url, filters) if getattr(module, "FLAGS", False) else None,
            getattr(module, "SKIPS", frozenset()),  # tables the format never reads
        )
        if worker is not None:
            rows, worker_peak = worker.write(reading, tally, progress)
        else:
            rows, worker_peak = module.write(reading.batches(tally, progress=progress), out, tally), 0.0
    finally:
        if worker is not None:
            worker.close()
    card = write_card(
        url,
        out,
        fmt,
        module,
        filters,
        tally,
        rows,
        redact=redact,
        salted_with_setting=bool(salt),
        default_licence=default_licence or NO_LICENCE,
    )
    return ExportResult(path=out, card_path=card, rows=rows, tally=tally, worker_peak_mib=worker_peak)


def _processes(asked: int | None) -> int:
    """Processes an export may use: as asked, else two where this process may run on two cores."""
    if asked is not None:
        return asked
    return min(2, usable_cpus())
