"""Exports & reports: build any export format (or the improvement report) for a filter and download it."""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
import time
from importlib import import_module
from pathlib import Path

import streamlit as st

from db.models import Event
from db.session import session_scope
from feedback.export import FORMATS, ExportFilters, count_conversations, write_export
from feedback.report import build_report
from playground.organizer_access import database_url, require_identity, scope_picker
from playground.settings import get_settings
from playground.untrusted import inert

FORMAT_NOTES = {
    "jsonl": "one conversation per line, every turn, answer and vote",
    "csv": "one row per vote (spreadsheets)",
    "parquet": "one row per vote (pandas, DuckDB)",
    "arena": "FastChat arena battles",
    "dpo": "TRL preference pairs (chosen / rejected)",
}
KEEP_BUILT = dt.timedelta(days=1)
identity = require_identity()
url = database_url()
settings = get_settings()
out_dir = settings.data_dir / "exports"
st.title("Exports & reports")
st.caption(
    "Consented, visible data only: hidden comments and conversations are left out, PII is redacted and "
    "participant ids are re-hashed."
)

scope, label = scope_picker(url, identity, key="exports_scope")
dates = st.date_input("Days (UTC, optional)", value=[], key="exports_dates")
since, until = (list(dates) + [None, None])[:2] if isinstance(dates, (list, tuple)) else (dates, None)
event_code = None
if scope.event_ids is not None:
    with session_scope(url) as session:
        event_code = session.get(Event, scope.event_ids[0]).code
filters = ExportFilters(event=event_code, region=scope.region, since=since, until=until or since)
built: dict[str, dict[str, str]] = st.session_state.setdefault("exports_built", {})
filter_key = repr(filters)


def _build(fmt: str) -> None:
    """Write one export with a progress bar over conversations; remember its paths for download."""
    total = max(count_conversations(url, filters), 1)
    done = 0
    bar = st.progress(0.0, text=f"Building {fmt} …")

    def advance(n: int) -> None:
        nonlocal done
        done += n
        bar.progress(min(done / total, 1.0), text=f"Building {fmt}: {done:,} of {total:,} conversations")

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    suffix = import_module(f"feedback.export.{fmt}").SUFFIX
    out = out_dir / f"{stamp}-{secrets.token_hex(3)}-{fmt}{suffix}"
    result = write_export(
        url,
        fmt,
        out,
        filters,
        progress=advance,
        salt=settings.export_salt_bytes,
        default_licence=settings.export_licence,
    )
    bar.empty()
    previous = built.get(f"{filter_key}:{fmt}")
    built[f"{filter_key}:{fmt}"] = {"path": str(result.path), "card": str(result.card_path), "rows": str(result.rows)}
    if previous is not None:  # a rebuild replaces the file: the old one would only fill the disk
        for old in (previous["path"], previous["card"]):
            Path(old).unlink(missing_ok=True)


def _prune(folder: Path, keep: dt.timedelta = KEEP_BUILT) -> None:
    """Remove exports and reports built longer ago than ``keep`` (by anyone): they hold attendee text."""
    if not folder.is_dir():
        return
    cutoff = time.time() - keep.total_seconds()
    for item in folder.iterdir():
        if item.stat().st_mtime >= cutoff:
            continue
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)


_prune(out_dir)


st.subheader("Exports")
for fmt in FORMATS:
    left, middle, right = st.columns([2, 1, 1])
    left.markdown(f"**{fmt}** · {FORMAT_NOTES.get(fmt, '')}")
    if middle.button(f"Build {fmt}", key=f"build_{fmt}"):
        _build(fmt)
    if (done := built.get(f"{filter_key}:{fmt}")) is not None:
        path, card = Path(done["path"]), Path(done["card"])
        right.download_button(
            f"Download {fmt} ({int(done['rows']):,} rows)",
            path.read_bytes,  # read when clicked, not on every rerun of the page
            path.name,
            key=f"download_{fmt}",
            on_click="ignore",
        )
        right.download_button(
            "Data card", card.read_bytes, card.name, "text/markdown", key=f"card_{fmt}", on_click="ignore"
        )

st.subheader("Improvement report")
st.caption(
    "Win rates with bootstrap CIs per region, event, category and language, the leaderboard, where handoff "
    "helps or hurts, reason tags and comment themes: for the filter above."
)
reports: dict[str, dict[str, str]] = st.session_state.setdefault("reports_built", {})
if st.button("Build report", key="build_report", type="primary"):
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    with st.status("Building the improvement report …", expanded=True) as status:
        st.write(f"Computing win rates and bootstrap intervals for {inert(label)} …")
        report = build_report(url, out_dir / f"{stamp}-{secrets.token_hex(3)}-report", filters)
        st.write("Writing report.html, report.md and summary.json …")
        status.update(label=f"Report ready: {report.summary['overall']['votes']:,} votes", state="complete")
    reports[filter_key] = {"html": str(report.html_path), "md": str(report.md_path), "json": str(report.summary_path)}
if (paths := reports.get(filter_key)) is not None:
    columns = st.columns(3)
    for column, (kind, mime) in zip(
        columns, (("html", "text/html"), ("md", "text/markdown"), ("json", "application/json")), strict=False
    ):
        path = Path(paths[kind])
        column.download_button(
            f"Download {path.name}", path.read_bytes, path.name, mime, key=f"report_{kind}", on_click="ignore"
        )
