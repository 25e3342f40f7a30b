"""The public results wall (/wall?event=CODE) through Streamlit's AppTest: off until an organizer turns
it on, aggregates only, nothing an attendee wrote."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from db.events import EventInvalid, set_wall
from db.models import Event
from db.queries import wall_event
from db.session import session_scope
from playground.settings import Settings
from tests.conftest import ROOT
from tests.factories import make_event
from tests.organizer_data import Round, add_rounds

WALL = str(ROOT / "playground" / "views" / "wall.py")
SECRET_PROMPT = "my private prompt about Project Falcon"
SECRET_COMMENT = "Alice from accounting says B was rude"


def _wall(code: str, lang: str | None = None) -> AppTest:
    at = AppTest.from_file(WALL, default_timeout=60)
    at.query_params["event"] = code
    if lang:
        at.query_params["lang"] = lang
    return at.run()


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _everything_shown(at: AppTest) -> str:
    parts = [m.value for m in at.metric] + [m.label for m in at.metric]
    for kind in (at.markdown, at.text, at.title, at.header, at.subheader, at.caption, at.info):
        parts += [str(element.value) for element in kind]
    return "\n".join(parts)


@pytest.fixture
def event(organizer_env: Settings) -> int:
    url = organizer_env.resolved_database_url
    event_id = make_event(url, "WALL-1", "europe")
    add_rounds(url, event_id, [Round("on", comment=SECRET_COMMENT, tags_on=["accurate"]), Round("on"), Round("off")])
    add_rounds(url, event_id, [Round("tie")], prompt=SECRET_PROMPT)
    return event_id


def test_the_wall_is_off_until_an_organizer_turns_it_on(organizer_env: Settings, event: int) -> None:
    url = organizer_env.resolved_database_url
    at = _wall("WALL-1")
    assert "not available" in at.info[0].value and not at.metric
    with session_scope(url) as session:
        assert wall_event(session, "wall-1") is None
        set_wall(session, event, True)
    with session_scope(url) as session:
        assert wall_event(session, "wall-1").id == event
    assert "not available" in _wall("NO-SUCH-EVENT").info[0].value  # unknown and off look the same


def test_the_wall_shows_live_aggregates_and_nothing_attendees_wrote(organizer_env: Settings, event: int) -> None:
    url = organizer_env.resolved_database_url
    with session_scope(url) as session:
        set_wall(session, event, True)
    at = _wall("WALL-1")
    assert not at.exception
    assert _metric(at, "Votes") == "4"
    assert _metric(at, "Handoff win rate") == "67%"  # 2 of 3 decisive votes
    assert _metric(at, "Europe") == "67%" and _metric(at, "San Francisco Bay Area") == "–"
    shown = _everything_shown(at)
    assert "No clear difference yet" in shown and "95% CI" in shown
    for private in (SECRET_PROMPT, SECRET_COMMENT, "accurate", "What is a handoff?"):
        assert private not in shown


def test_the_wall_speaks_the_events_language_or_the_one_in_its_address(organizer_env: Settings, event: int) -> None:
    url = organizer_env.resolved_database_url
    with session_scope(url) as session:
        set_wall(session, event, True)
        session.get(Event, event).ui_language = "fr"
    french = _wall("WALL-1")
    assert not french.exception
    assert _metric(french, "Taux de victoire du handoff") == "67%" and _metric(french, "Votes") == "4"
    assert _metric(french, "Europe") == "67%" and french.title[0].value == "Le handoff aide-t-il ? Résultats en direct"
    assert "Pas encore de différence nette" in _everything_shown(french)
    japanese = _wall("WALL-1", lang="ja")
    assert _metric(japanese, "ハンドオフの勝率") == "67%" and _metric(japanese, "投票数") == "4"
    assert _metric(japanese, "ヨーロッパ") == "67%" and _metric(japanese, "アジア太平洋") == "–"
    assert "Handoff" not in _everything_shown(japanese)
    assert "n'est pas disponible" in _wall("NO-SUCH-EVENT", lang="fr").info[0].value


def test_turning_the_wall_on_for_a_missing_event_says_so(organizer_env: Settings) -> None:
    with session_scope(organizer_env.resolved_database_url) as session, pytest.raises(EventInvalid):
        set_wall(session, 999, True)
