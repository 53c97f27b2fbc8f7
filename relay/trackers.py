"""Tracking parameters and tracking redirects removed from the link relay posts (pure).

The rules are the ClearURLs catalogue (https://docs.clearurls.xyz/latest/specs/rules/),
maintained by its community and shipped on PyPI inside `unalix-rev`, which relay depends on
for that file only: ClearURLs' matching is re-implemented here, compiled once per process,
because unalix's own cleaner takes 1.4 ms a link and a first poll of 1000 feeds reads 20,000.

A parameter is removed only when a rule names it for that site (or for every site). Relay adds
a few providers of its own in the same format, for the French press and Google News, which the
catalogue misses (`RELAY_PROVIDERS`). Anything unexpected leaves the link as it was: a link with
its trackers still works, a link cut wrongly does not.
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

# Providers relay adds, in ClearURLs' format so they can be proposed upstream.
RELAY_PROVIDERS: dict[str, dict[str, Any]] = {
    # AT Internet (Piano Analytics) tags every link of the French press's feeds: Le Monde,
    # franceinfo, Libération, Les Échos (`?xtor=RSS-3208`, `#xtor=RSS-1`, `at_medium=…`).
    "atinternet": {"urlPattern": ".*", "rules": ["xtor", "xtref", "at_[a-z_]+"]},
    # The New York Times' RSS links carry where the click came from.
    "nytimes.com": {"urlPattern": r"^https?:\/\/(?:[a-z0-9-]+\.)*?nytimes\.com", "rules": ["partner", "emc", "smid"]},
    # Google News' old redirect links; the newer /rss/articles/ links are decoded separately.
    "news.google.com": {
        "urlPattern": r"^https?:\/\/news\.google\.com",
        "redirections": [r"^https?:\/\/news\.google\.com\/news\/url\?.*?\burl=(https?[^&]+)"],
    },
}

_MAX_REDIRECTIONS = 3
_QUERY_SEPARATOR = re.compile(r"[&;]")
_SCHEME = re.compile(r"\^?https\?:(?:\\/|/){2}")
_ANY_SUBDOMAIN = r"(?:[a-z0-9-]+\.)*?"


@dataclass(frozen=True, eq=False)  # hashed by identity: one object per provider
class _Provider:
    name: str
    host_hint: str  # a word the host must contain for the pattern to be tried ("" = always)
    spec: dict[str, Any]


@dataclass(frozen=True)
class _Rules:
    pattern: re.Pattern[str] | None  # None: every URL
    fields: re.Pattern[str] | None  # rules and referral marketing, one alternation
    raw_rules: tuple[re.Pattern[str], ...]
    exceptions: re.Pattern[str] | None
    redirections: tuple[re.Pattern[str], ...]


def clean_link(url: str) -> str:
    """url without the parameters the rules call tracking, and out of the redirects the
    rules know (google.com/url?q=…, news.google.com). Returns url unchanged when in doubt."""
    for _ in range(_MAX_REDIRECTIONS):
        target = _google_news_target(url) or _redirect_target(url)
        if not target:
            break
        url = target
    return _strip_fields(url)


def _redirect_target(url: str) -> str | None:
    for rules in _candidates(_host(url)):
        for redirection in rules.redirections:
            found = redirection.match(url)
            if found and found.group(1) and _applies(rules, url):
                target = unquote(found.group(1))
                if target.startswith(("http://", "https://")) and target != url:
                    return target
    return None


def _strip_fields(url: str) -> str:
    if "?" not in url and "#" not in url and "/ref=" not in url:
        return url  # the common case: nothing a rule could remove
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    query, fragment, path = parts.query, parts.fragment, parts.path
    for rules in _candidates((parts.hostname or "").lower()):
        if rules.fields is None and not rules.raw_rules:
            continue
        new_query, new_fragment, new_path = query, fragment, path
        if rules.fields is not None:
            if new_query:
                new_query = _without(new_query, rules.fields)
            if "=" in new_fragment:
                new_fragment = _without(new_fragment, rules.fields)
        for raw in rules.raw_rules:
            new_path = raw.sub("", new_path)
        # the site's pattern and exceptions are tried only when a rule would change something
        if (new_query, new_fragment, new_path) != (query, fragment, path) and _applies(rules, url):
            query, fragment, path = new_query, new_fragment, new_path
    if (query, fragment, path) == (parts.query, parts.fragment, parts.path):
        return url
    return urlunsplit((parts.scheme, parts.netloc, path, query, fragment))


def _without(pairs: str, fields: re.Pattern[str]) -> str:
    kept = [pair for pair in _QUERY_SEPARATOR.split(pairs) if pair and not fields.match(unquote(pair.split("=", 1)[0]))]
    return "&".join(kept)


def _applies(rules: _Rules, url: str) -> bool:
    return (rules.pattern is None or rules.pattern.match(url) is not None) and not (
        rules.exceptions and rules.exceptions.match(url)
    )


@functools.lru_cache(maxsize=1024)
def _candidates(host: str) -> tuple[_Rules, ...]:
    """The providers worth trying on a host, compiled on first use: a feed's links share a
    host, and most of the 200 providers are never needed in a run."""
    found = []
    for provider in _providers():
        if not provider.host_hint or provider.host_hint in host:
            rules = _compiled(provider)
            if rules is not None:
                found.append(rules)
    return tuple(found)


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _google_news_target(url: str) -> str | None:
    """The article behind a news.google.com/rss/articles/ID link, when ID carries it.

    Older IDs are base64 of a small protobuf holding the article's URL; newer ones are opaque
    and can only be resolved by asking Google, which relay does not do: those links stay as
    they are (they still lead to the article)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if (parts.hostname or "").lower() != "news.google.com":
        return None
    found = re.fullmatch(r"/(?:rss/)?articles/([A-Za-z0-9_-]{8,2000})", parts.path)
    if not found:
        return None
    encoded = found.group(1)
    try:
        data = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return None
    # field 4 (tag 0x22), length-delimited: the URL, when the ID is of the old kind
    start = data.find(b"\x22")
    if start < 0 or start + 2 > len(data):
        return None
    length, offset = data[start + 1], start + 2
    if length & 0x80:  # a two-byte varint: long URLs
        if offset >= len(data):
            return None
        length, offset = (length & 0x7F) | (data[offset] << 7), offset + 1
    candidate = data[offset : offset + length]
    if len(candidate) != length or not candidate.startswith((b"http://", b"https://")):
        return None
    try:
        text = candidate.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() and " " not in text else None


@functools.cache
def _providers() -> tuple[_Provider, ...]:
    return tuple(
        _Provider(name, _host_hint(str(spec.get("urlPattern", ""))), spec)
        for name, spec in {**_catalogue(), **RELAY_PROVIDERS}.items()
    )


def _catalogue() -> dict[str, dict[str, Any]]:
    """ClearURLs' data.min.json as unalix-rev ships it (found without importing unalix,
    whose import builds its own rules)."""
    spec = importlib.util.find_spec("unalix")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the ClearURLs rules are missing: install relay's dependencies (unalix-rev)")
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "rulesets" / "data.min.json"
    with open(path, encoding="utf-8") as handle:
        providers: dict[str, dict[str, Any]] = json.load(handle)["providers"]
    return providers


@functools.cache
def _compiled(provider: _Provider) -> _Rules | None:
    spec = provider.spec
    try:
        fields = [*spec.get("rules", ()), *spec.get("referralMarketing", ())]
        return _Rules(
            pattern=(
                None
                if spec["urlPattern"] in (".*", "^.*$")
                else re.compile(_anchored_to_host(str(spec["urlPattern"])), re.IGNORECASE)
            ),
            fields=re.compile("(?:" + "|".join(fields) + r")\Z", re.IGNORECASE) if fields else None,
            raw_rules=tuple(re.compile(raw, re.IGNORECASE) for raw in spec.get("rawRules", ())),
            exceptions=(
                re.compile("|".join(f"(?:{e})" for e in spec["exceptions"]), re.IGNORECASE)
                if spec.get("exceptions")
                else None
            ),
            redirections=tuple(re.compile(r, re.IGNORECASE) for r in spec.get("redirections", ())),
        )
    except (re.error, KeyError, TypeError):
        return None  # one rule Python's re cannot read must not take the others down


def _site_part(pattern: str) -> str | None:
    """What follows `^https?://` and any-subdomain in a site's pattern; None for patterns
    that are not about one site (`.*`)."""
    scheme = _SCHEME.match(pattern)
    if not scheme:
        return None
    rest = pattern[scheme.end() :]
    return rest.removeprefix(_ANY_SUBDOMAIN)


def _anchored_to_host(pattern: str) -> str:
    """A site's pattern must match its whole host: ClearURLs tests it against the whole URL,
    so `twitter.com` would also match twitter.company.example, and `x.com` x-com.fr."""
    rest = _site_part(pattern)
    if rest is not None and "/" not in rest:
        return f"(?:{pattern})(?=[/?#:]|$)"
    return pattern


def _host_hint(pattern: str) -> str:
    """The longest literal word of a site's pattern (amazon, nytimes): a cheap test that
    spares trying 190 regular expressions on every link."""
    rest = _site_part(pattern)
    if rest is None:
        return ""
    literal = re.sub(r"\[[^\]]*\]|\{[^}]*\}", " ", rest.replace(r"\-", "-"))
    while "(" in literal and literal != (ungrouped := re.sub(r"\([^()]*\)", " ", literal)):
        literal = ungrouped  # groups may be optional or alternatives: only what is outside counts
    if "|" in literal:
        return ""
    literal = literal.split("/")[0]
    # a word right after a backslash is an escape (\d, \b); one before ?, * or { is not all there
    words = re.findall(r"(?<!\\)[a-z0-9-]{3,}(?![?*{])", literal.lower())
    return max(words, key=len) if words else ""
