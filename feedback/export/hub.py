"""A folder ready for the Hugging Face Hub: the exports under ``data/`` and a dataset card ``README.md``.

The card's YAML header is what the Hub and ``datasets`` read (licence, languages, size category,
one config per file, the votes table's features), so ``load_dataset(folder, "votes")`` works on the
folder as written and on the Hub repo after an upload. Every file of one release shares one salt,
so participant ids join across its files (and never with another release unless the organizer set
``export_salt``). Plain Python: pushing is the CLI's job (``handoff publish --push``).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq
import yaml

from feedback.export import ExportFilters, write_export

# (config name, export format, path in the folder). One file format per repo (the Hub and ``datasets``
# pick one loader for all configs), so the JSONL exports are converted to Parquet, nesting kept.
CONFIGS: tuple[tuple[str, str, str], ...] = (
    ("votes", "parquet", "data/votes.parquet"),
    ("conversations", "jsonl", "data/conversations.parquet"),
    ("arena", "arena", "data/arena.parquet"),
    ("dpo", "dpo", "data/dpo.parquet"),
)
# Licence identifiers the Hub knows (https://huggingface.co/docs/hub/repositories-licenses); anything
# else is published as "other" with the event's own licence text in LICENSE.md.
HUB_LICENCES = frozenset(
    {
        "apache-2.0",
        "mit",
        "cc-by-4.0",
        "cc-by-sa-4.0",
        "cc-by-nc-4.0",
        "cc-by-nc-sa-4.0",
        "cc-by-nd-4.0",
        "cc0-1.0",
        "odc-by",
        "odbl",
        "pddl",
        "cdla-permissive-2.0",
        "cdla-sharing-1.0",
    }
)
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


@dataclass(frozen=True)
class PublishedFolder:
    path: Path
    readme: Path
    rows: dict[str, int]  # per config
    licence: str  # the Hub identifier written in the card


def hub_licence(licences: set[str]) -> str:
    """The Hub identifier when every event has the same known licence, else ``other``."""
    names = {licence.strip().lower() for licence in licences}
    return names.pop() if len(names) == 1 and names <= HUB_LICENCES else "other"


def size_category(rows: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if rows < limit), "1M<n<10M")


def _languages(votes: Path) -> list[str]:
    """ISO 639-1 codes of the prompts' detected languages (``zh-cn`` counts as ``zh``)."""
    column = pq.read_table(votes, columns=["language"]).column("language").unique().to_pylist()
    codes = {value.split("-")[0].lower() for value in column if value and re.fullmatch(r"[a-z]{2}(-\w+)?", value)}
    return sorted(codes)


def _dtype(kind: pa.DataType) -> str:
    """The ``datasets`` dtype name of an Arrow column type (the card's features)."""
    if pa.types.is_timestamp(kind):
        return f"timestamp[{kind.unit}, tz={kind.tz}]" if kind.tz else f"timestamp[{kind.unit}]"
    return {"bool": "bool", "double": "float64", "string": "string"}.get(str(kind), str(kind))


def _jsonl_to_parquet(source: Path, target: Path) -> None:
    """One JSONL export as Parquet (nested records kept); reads the whole file, as publishing is rare."""
    table = pajson.read_json(source) if source.stat().st_size else pa.table({})
    pq.write_table(table, target, compression="zstd")
    source.unlink()


def _card_body(card: Path) -> str:
    """A data card without its title, its headings one level down: a section of the dataset card."""
    lines = card.read_text(encoding="utf-8").splitlines()[1:]
    return "\n".join("#" + line if line.startswith("## ") else line for line in lines).strip()


def write_folder(
    url: str, out: Path, filters: ExportFilters, *, default_licence: str, salt: bytes | None = None
) -> PublishedFolder:
    """Write every config's export and the dataset card into ``out`` (redacted, re-hashed ids)."""
    out = Path(out)
    salt = salt or secrets.token_bytes(32)
    rows: dict[str, int] = {}
    sections: list[str] = []
    licences: set[str] = set()
    for name, fmt, relative in CONFIGS:
        target = out / relative
        written = target if fmt == "parquet" else target.with_suffix(".jsonl")
        result = write_export(url, fmt, written, filters, redact=True, salt=salt, default_licence=default_licence)
        if written != target:
            _jsonl_to_parquet(written, target)
        rows[name] = result.rows
        body = _card_body(result.card_path)
        licences |= set(_section(body, "Licence").splitlines()) - {""}
        sections.append(f"## Config `{name}`: `{relative}`\n\n{body}")
        result.card_path.unlink()  # the dataset card holds it
    votes = out / CONFIGS[0][2]
    licence = hub_licence(licences)
    header: dict[str, Any] = {
        "pretty_name": "Handoff Playground feedback",
        "license": licence,
        "language": _languages(votes) or ["en"],
        "size_categories": [size_category(rows["votes"])],
        "task_categories": ["text-generation"],
        "tags": ["human-feedback", "pairwise-preference", "llm-routing", "handoff"],
        "configs": [
            {"config_name": name, "data_files": relative, **({"default": True} if name == "votes" else {})}
            for name, _, relative in CONFIGS
        ],
        "dataset_info": [
            {
                "config_name": "votes",
                "features": [{"name": f.name, "dtype": _dtype(f.type)} for f in pq.read_schema(votes)],
            }
        ],
    }
    if licence == "other":
        header |= {"license_name": "event-licence", "license_link": "LICENSE.md"}
        text = "\n\n".join(sorted(licences)) or default_licence
        (out / "LICENSE.md").write_text(f"# Licence\n\n{text}\n", encoding="utf-8")
    readme = out / "README.md"
    readme.write_text(
        "---\n"
        + yaml.safe_dump(header, sort_keys=False, allow_unicode=True)
        + "---\n\n# Handoff Playground feedback\n\n"
        "Blind side-by-side votes from live events comparing a small open-weight model alone (handoff off) "
        "with the same model handing hard prompts to a cloud model (handoff on). One config per file:\n\n"
        + "".join(f"- `{name}`: {rows[name]:,} rows in `{relative}`\n" for name, _, relative in CONFIGS)
        + "\n```python\nfrom datasets import load_dataset\n\n"
        'votes = load_dataset("REPO", "votes", split="train")  # or a local copy of this folder\n```\n\n'
        f"Written {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}.\n\n" + "\n\n".join(sections) + "\n",
        encoding="utf-8",
    )
    return PublishedFolder(out, readme, rows, licence)


def _section(markdown: str, title: str) -> str:
    """The text under a ``### title`` heading of a card body, up to the next heading."""
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^#|\Z)", markdown, flags=re.S | re.M)
    return match.group(1).strip() if match else ""
