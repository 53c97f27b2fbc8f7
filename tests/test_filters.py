from datetime import UTC, datetime, timedelta

from relay.filters import filter_reason
from relay.models import Item

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def item(title: str, summary: str = "", age_days: float = 0) -> Item:
    return Item("f", title, "https://e.org/", "e.org", title, summary, published=NOW - timedelta(days=age_days))


def reason(it: Item, include: tuple[str, ...] = (), exclude: tuple[str, ...] = (), max_age: int = 7) -> str | None:
    return filter_reason(it, include=include, exclude=exclude, max_age=timedelta(days=max_age), now=NOW)


def test_include_is_case_insensitive_substring() -> None:
    assert reason(item("Le HEALTH DATA HUB encore"), include=("health data hub",)) is None
    assert reason(item("Autre sujet"), include=("health data hub",)) == "matches none of include"


def test_include_matches_the_summary_too() -> None:
    assert reason(item("Titre", "parle de santé"), include=("santé",)) is None


def test_regex_patterns() -> None:
    assert reason(item("Microsoft Azure"), include=("/micro(soft)?|cloud act/",)) is None
    assert reason(item("Cloud Act"), exclude=("/cloud\\s+act/",)) == "excluded by '/cloud\\\\s+act/'"


def test_exclude_wins_over_include() -> None:
    assert reason(item("Santé : offre d'emploi"), include=("santé",), exclude=("offre d'emploi",)) is not None


def test_max_age() -> None:
    assert reason(item("vieux", age_days=8)) == "older than max_age (8 days old)"
    assert reason(item("récent", age_days=6)) is None
