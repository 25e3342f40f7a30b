"""Exports load where researchers work: Hugging Face ``datasets`` reads the Parquet and JSONL exports and
the Hub-ready folder of ``handoff publish`` (dataset card with YAML metadata); without a token, publish
says what to run instead of uploading."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from sqlalchemy import update
from typer.testing import CliRunner

from db.models import Event
from db.session import session_scope
from feedback.demo_data import generate
from feedback.export import ExportFilters, write_export
from feedback.export.hub import hub_licence, size_category, write_folder
from playground import settings as settings_module

datasets = pytest.importorskip("datasets")


def _card_header(readme: Path) -> dict:
    _, header, _ = readme.read_text(encoding="utf-8").split("---\n", 2)
    return yaml.safe_load(header)


def test_parquet_and_jsonl_exports_load_with_datasets(sqlite_url: str, tmp_path: Path) -> None:
    generate(sqlite_url, 120, seed=4)
    votes = write_export(sqlite_url, "parquet", tmp_path / "votes.parquet", ExportFilters())
    conversations = write_export(sqlite_url, "jsonl", tmp_path / "conversations.jsonl", ExportFilters())
    cache = str(tmp_path / "cache")
    table = datasets.load_dataset("parquet", data_files=str(votes.path), split="train", cache_dir=cache)
    assert table.num_rows == votes.rows == 120
    assert table.column_names == pq.read_schema(votes.path).names
    assert sorted(table["vote_id"]) == sorted(pq.read_table(votes.path).column("vote_id").to_pylist())
    chats = datasets.load_dataset("json", data_files=str(conversations.path), split="train", cache_dir=cache)
    assert chats.num_rows == conversations.rows
    assert {"id", "event", "turns"} <= set(chats.column_names)


def test_publish_folder_is_a_dataset_card_and_loads_by_config(sqlite_url: str, tmp_path: Path) -> None:
    generate(sqlite_url, 150, seed=6)
    with session_scope(sqlite_url) as session:
        session.execute(update(Event).values(licence="CC-BY-4.0"))
    folder = write_folder(sqlite_url, tmp_path / "hub", ExportFilters(), default_licence="not set")
    header = _card_header(folder.readme)
    assert header["license"] == "cc-by-4.0" and folder.licence == "cc-by-4.0"
    assert header["size_categories"] == ["n<1K"]
    assert "en" in header["language"] and all(len(code) == 2 for code in header["language"])
    votes_path = folder.path / "data" / "votes.parquet"
    features = [f["name"] for f in header["dataset_info"][0]["features"]]
    assert features == pq.read_schema(votes_path).names
    assert {c["config_name"] for c in header["configs"]} == {"votes", "conversations", "arena", "dpo"}
    assert not list(folder.path.rglob("*.card.md")) and not list(folder.path.rglob("*.jsonl"))  # one format, one card
    body = folder.readme.read_text(encoding="utf-8")
    assert "### Privacy" in body and "### Fields" in body and "`winner_arm`" in body

    cache = str(tmp_path / "cache")
    votes = datasets.load_dataset(str(folder.path), "votes", split="train", cache_dir=cache)
    assert votes.num_rows == folder.rows["votes"] == 150
    assert list(votes.features) == features
    pairs = datasets.load_dataset(str(folder.path), "dpo", split="train", cache_dir=cache)
    assert pairs.num_rows == folder.rows["dpo"] and set(pairs.column_names) == {"prompt", "chosen", "rejected"}


def test_mixed_or_unknown_licences_are_published_as_other_with_the_text() -> None:
    assert hub_licence({"MIT"}) == "mit"
    assert hub_licence({"MIT", "CC-BY-4.0"}) == "other"
    assert hub_licence({"Research use only, ask the organizers"}) == "other"
    assert [size_category(n) for n in (0, 999, 1000, 250_000, 2_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "100K<n<1M",
        "1M<n<10M",
    ]


def test_publish_without_a_token_writes_the_folder_and_says_what_to_run(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playground.cli import app

    generate(sqlite_url, 60, seed=7)
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("HANDOFF_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    settings_module.get_settings.cache_clear()
    out = tmp_path / "release"
    result = CliRunner().invoke(app, ["publish", "--out", str(out), "--push", "my-org/handoff-feedback"])
    settings_module.get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert (out / "README.md").exists() and (out / "data" / "votes.parquet").exists()
    assert (out / "LICENSE.md").exists()  # no event set a licence: "other", with the settings' text
    assert "No Hugging Face token is configured" in result.output
    assert f"hf upload my-org/handoff-feedback {out} . --repo-type dataset" in result.output
