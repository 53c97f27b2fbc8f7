"""feeds.yaml → frozen, validated models. ${ENV} secrets from the environment (or a .env
file next to feeds.yaml). No network, no state. Every problem is reported as
'file:line: field: message', all of them at once, each one short and on one line.

The file is written by the user but may be edited by others or copied from anywhere, so
reading it must stay cheap and safe: YAML aliases cannot multiply the document, duplicate
keys are errors, user values are shown shortened, and a value that came from ${VAR} is shown
as ${VAR}, never as the secret itself."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import yaml

from relay.errors import ConfigError
from relay.social import feed_url_of

if TYPE_CHECKING:  # built when a posting window is written: a no-op run does not load it
    from relay.window import Window

PLATFORMS = ("mastodon", "bluesky")
VISIBILITIES = ("public", "unlisted", "private")
# Aliases may repeat values, but never multiply the document: expansion beyond both of
# these is refused before anything is built from it (a 5000-feed file is ~125,000 values,
# written out, so it passes the second bound).
MAX_EXPANDED_VALUES = 100_000
MAX_EXPANSION_FACTOR = 2
SHOWN_CHARACTERS = 60
SECRET_MIN_LENGTH = 4  # shorter values would mask ordinary words in every message
_DURATION = re.compile(r"^\s*(\d{1,9})\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# The lookbehind starts a match only at the beginning of a run of scheme characters, so a
# long hostile line is scanned once, not once per character.
_CREDENTIALS = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*://)([^\s/?#@:]*):([^\s/?#@]+)@")


@dataclass(frozen=True)
class Pacing:
    max_per_run: int = 3
    min_interval: timedelta = timedelta(minutes=10)
    max_per_day: int = 40
    # the posting window (relay.window): hours, days, timezone as written; window is them
    # together, None when none is written (always open)
    hours: str = ""
    days: tuple[str, ...] = ()
    timezone: str = ""
    window: Window | None = None


@dataclass(frozen=True)
class Account:
    name: str
    platform: str
    pacing: Pacing
    # Mastodon
    instance: str = ""
    token: str = field(default="", repr=False)
    visibility: str = "public"
    max_characters: int | None = None  # overrides the instance's limit
    # Bluesky
    handle: str = ""
    app_password: str = field(default="", repr=False)
    service: str = "https://bsky.social"
    missing_secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Credit:
    """Who a feed's posts credit, per platform, as written in feeds.yaml: the only handles
    that ever become live mentions."""

    mastodon: str = ""  # "@user@instance" (or "@user" on the posting account's instance)
    bluesky: str = ""  # a handle, without "@"

    def shown(self, platform: str) -> str:
        """The credit as a post shows it on platform, "" when there is none."""
        if platform == "mastodon":
            return self.mastodon
        return f"@{self.bluesky}" if platform == "bluesky" and self.bluesky else ""


@dataclass(frozen=True)
class Feed:
    name: str
    url: str  # as written, ${VAR} included: what is shown and what state remembers
    every: timedelta
    max_age: timedelta
    backfill: int
    template: str
    language: str  # the feed's own language: when set, else defaults.language
    hashtags: tuple[str, ...]
    to: tuple[str, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_bytes: int = 10_000_000
    timeout: timedelta = timedelta(seconds=30)
    flood_threshold: int = 10
    flood_threshold_day: int = 30
    content_warning: str = ""
    sensitive: bool = False
    images: bool = False
    visibility: str = ""  # Mastodon: overrides the account's visibility when set
    category_hashtags: bool = False  # the item's categories become hashtags too
    tag_map: tuple[tuple[str, str], ...] = ()  # (hashtags.map_key of a category, its hashtag or "" to drop)
    max_hashtags: int | None = None  # at most this many hashtags in all
    credit: Credit = Credit()
    mode: tuple[tuple[str, str], ...] = ()  # (account, post|boost|quote); "" for every account
    fallback: str = "post"  # when the original is gone: post, or none
    bluesky_embed: str = "images"  # with images: true, Bluesky shows the images, or the link card
    thread: int = 1  # at most this many posts for an item whose text would be cut: 1 is never a thread
    priority: str = "normal"  # high, normal or low: the order of the outbox, by level first
    urgent: bool = False  # its items skip min_interval (never max_per_day or the posting window)

    def mode_for(self, account: str) -> str:
        """How this feed relays an account's ally's post to account: post, boost or quote."""
        modes = dict(self.mode)
        return modes.get(account, modes.get("", "post"))

    language_set: bool = False  # language: written for this feed (it outranks the channel's)
    line: int = 0
    fetch_url: str = field(default="", repr=False)  # url with ${VAR} substituted; never shown

    def __post_init__(self) -> None:
        if not self.fetch_url:
            object.__setattr__(self, "fetch_url", self.url)


@dataclass(frozen=True)
class Network:
    """Where content-derived URLs (images, link-card pages, redirects) may lead. Feeds
    themselves are trusted to be where the user says."""

    allow_private: bool = False


@dataclass(frozen=True)
class Alerts:
    """Who hears when something stops (relay.alerts): a ping URL (a dead-man switch), an
    email through SMTP, a Mastodon direct message to the owner."""

    ping: str = ""  # with ${VAR} substituted (it may hold a secret token); shown redacted
    email_url: str = field(default="", repr=False)  # smtp[s]://user:password@host:port, from ${VAR}
    email_to: str = ""
    email_from: str = ""
    dm_account: str = ""  # a Mastodon account of accounts:
    dm_to: str = ""  # "@owner@instance"
    feed_failing_after: timedelta = timedelta(hours=24)

    @property
    def notifies(self) -> bool:
        return bool(self.ping or self.email_url or self.dm_account)


@dataclass(frozen=True)
class Campaign:
    """A recurring call to action (relay.calls): posted at start, start + every, … until
    `until`, each occurrence once."""

    name: str
    template: str  # "message" for text
    text: str
    link: str
    vars: tuple[tuple[str, str], ...]
    every: timedelta
    start: datetime  # `from:`
    until: datetime | None
    to: tuple[str, ...]
    line: int = 0


@dataclass(frozen=True)
class Config:
    path: Path
    feeds: tuple[Feed, ...]
    accounts: Mapping[str, Account]
    template_dirs: tuple[Path, ...]
    warnings: tuple[str, ...] = field(default=())
    network: Network = Network()
    alerts: Alerts = Alerts()
    campaigns: tuple[Campaign, ...] = ()
    pacing: Pacing = Pacing()  # the top-level pacing: its window's clock reads `relay post --at`
    # what a call to action (relay post, campaigns:) takes from defaults:
    language: str = "fr"
    hashtags: tuple[str, ...] = ()
    # (value, variable) for every value substituted from ${VAR}, longest first
    secrets: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def redact(self, text: str) -> str:
        """The text as it may be shown: every substituted secret back to ${VAR}, and the
        password of any URL with credentials masked."""
        for value, variable in self.secrets:
            text = text.replace(value, f"${{{variable}}}")
        return mask_credentials(text)

    def feeds_named(self, names: Sequence[str]) -> list[Feed]:
        """The feeds named (all of them when none is); ConfigError for a name it lacks."""
        if not names:
            return list(self.feeds)
        known = {feed.name for feed in self.feeds}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(
                [f"{self.path.name}: no feed named {', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})"]
            )
        return [feed for feed in self.feeds if feed.name in names]


def mask_credentials(text: str) -> str:
    """scheme://user:password@host → scheme://user:***@host, anywhere in the text."""
    return _CREDENTIALS.sub(r"\1\2:***@", text)


def _show(value: object) -> str:
    """A user value for a message: its repr, at most SHOWN_CHARACTERS long."""
    text = repr(value[: SHOWN_CHARACTERS + 1] if isinstance(value, str) else value)
    return text if len(text) <= SHOWN_CHARACTERS else text[: SHOWN_CHARACTERS - 1] + "…"


def _field(key: object, limit: int = SHOWN_CHARACTERS) -> str:
    """A user-written key as part of a field name: printable, one line, shortened."""
    text = str(key)
    if not text.isprintable():
        text = repr(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _problem(filename: str, line: int | None, where: str, message: str) -> str:
    """The one shape of every problem and warning: 'file:line: field: message' (the line
    and the field left out where there is none)."""
    location = filename if line is None else f"{filename}:{line}"
    return f"{location}: {where}: {message}" if where else f"{location}: {message}"


def _refusal(filename: str, line: int | None, where: str, message: str) -> ConfigError:
    """A problem that stops reading at once (the file cannot be read as a whole)."""
    return ConfigError([_problem(filename, line, where, message)])


def parse_duration(value: object) -> timedelta | None:
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return timedelta(seconds=value)
        if not isinstance(value, str):
            return None
        return _duration_text(value)
    except OverflowError:
        return None


@functools.lru_cache(maxsize=256)
def _duration_text(value: str) -> timedelta | None:
    """A duration written as text; the same few ("15m", "7d") come back for every feed."""
    try:
        match = _DURATION.match(value)
        if not match:
            return None
        return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    except OverflowError:
        return None


def _duration_hint(value: object) -> str:
    match = re.match(r"^\s*(\d{1,9})\s*([^\W\d_]+)", value) if isinstance(value, str) else None
    if match:
        word = match.group(2).lower()
        # French first: "1 semaine" is a week, "7 jours" days, "2 heures" hours
        french = {"sem": "w", "j": "d", "jour": "d", "h": "h", "heure": "h", "min": "m", "mois": ""}
        unit = next(
            (u for prefix, u in sorted(french.items(), key=lambda p: -len(p[0])) if word.startswith(prefix)), None
        )
        if unit is None:
            unit = word[0] if word[0] in _UNITS else None
        if unit:
            return f" (try {match.group(1)}{unit})"
    return " (try 30s, 15m, 1h, 7d or 2w)"


class _Lined(dict[str, Any]):
    """A YAML mapping that remembers the line of each key (1-based)."""

    line: int
    key_lines: dict[str, int]


class _LinedList(list[Any]):
    line: int
    item_lines: list[int]


def _make_loader(base: type[yaml.SafeLoader]) -> type[yaml.SafeLoader]:
    class Loader(base):  # type: ignore[valid-type,misc]
        def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
            # SafeLoader's scalar constructors raise plain ValueError and the like on values
            # such as `!!int abc` or `!!timestamp nope`: make them YAML errors with a line.
            try:
                return super().construct_object(node, deep)
            except (ValueError, TypeError, AttributeError, OverflowError):
                tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
                raise yaml.constructor.ConstructorError(
                    None, None, f"cannot read {_show(node.value)} as {_field(tag)}", node.start_mark
                ) from None

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
    return Loader


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Lined:
    mapping = _Lined()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        mapping[str(key)] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[str(key)] = key_node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> _LinedList:
    items = _LinedList(loader.construct_object(child, deep=True) for child in node.value)
    items.line = node.start_mark.line + 1
    items.item_lines = [child.start_mark.line + 1 for child in node.value]
    return items


# libyaml's parser when PyYAML was built with it (7 times faster on a 1000-feed file: the
# no-op cron run reads the whole file); the values are built by the same constructors, with
# the same lines and checks, either way. _PythonLoader is PyYAML's pure-Python reading.
_PythonLoader = _make_loader(yaml.SafeLoader)
_Loader = _make_loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _child_path(path: str, key_node: yaml.Node) -> str:
    name = _field(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
    return f"{path}.{name}" if path else name


def _read_yaml(source: str, filename: str) -> tuple[Any, list[str]]:
    """Parse feeds.yaml: compose the node graph, refuse aliases that multiply it, find
    duplicate keys, and only then build the values. Returns the data and the duplicate-key
    problems (reported with every other problem)."""
    loader: yaml.SafeLoader | None = None
    try:
        loader = _Loader(source)
        node = loader.get_single_node()
        if node is None:
            return None, []
        if "*" in source:  # no alias can be written without one
            _bound_aliases(node, filename)
        duplicates = _duplicate_keys(loader, node, filename)
        return loader.construct_document(node), duplicates
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        position = getattr(exc, "position", None)  # a ReaderError: a character YAML refuses
        if mark:
            line = mark.line + 1
        elif isinstance(position, int):
            line = source.count("\n", 0, position) + 1
        else:
            line = 1
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "tag:yaml.org,2002:merge" in reason:
            reason = "merge keys (<<) are not supported: write the keys out"
        if "nesting depth" in reason:  # libyaml's own bound, worded as Python's below
            reason = "nested too deeply"
        raise _refusal(filename, line, "invalid YAML", _field(reason, 200)) from None
    except RecursionError:
        raise _refusal(filename, 1, "invalid YAML", "nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _bound_aliases(root: yaml.Node, filename: str) -> None:
    """Count the values the document would hold with every alias expanded (memoised per
    node, so this is linear in what is written) and refuse a document that aliases multiply."""
    sizes: dict[int, int] = {}
    first_seen: dict[int, tuple[yaml.Node, str]] = {}
    repeated: set[int] = set()

    def size(node: yaml.Node, path: str) -> int:
        key = id(node)
        if key in sizes:
            if sizes[key] < 0:
                raise _refusal(
                    filename, _line(node), path or "document", "a YAML alias refers to the value that holds it"
                )
            repeated.add(key)
            return sizes[key]
        sizes[key] = -1
        first_seen[key] = (node, path)
        total = 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                total += size(key_node, path) + size(value_node, _child_path(path, key_node))
        elif isinstance(node, yaml.SequenceNode):
            for index, child in enumerate(node.value):
                total += size(child, f"{path}[{index}]")
        sizes[key] = total
        return total

    expanded = size(root, "")
    written = len(sizes)
    limit = max(MAX_EXPANDED_VALUES, MAX_EXPANSION_FACTOR * written)
    if expanded <= limit:
        return
    worst = max(repeated, key=lambda key: sizes[key])
    node, path = first_seen[worst]
    raise _refusal(
        filename,
        _line(node),
        path or "document",
        f"YAML aliases expand the file to {expanded:,} values, over the limit of {limit:,}:"
        " write the repeated values out",
    )


_STR_TAG = "tag:yaml.org,2002:str"


def _duplicate_keys(loader: yaml.SafeLoader, root: yaml.Node, filename: str) -> list[str]:
    problems: list[str] = []
    visited: set[int] = set()

    def walk(node: yaml.Node, path: str) -> None:
        if id(node) in visited:
            return
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_lines: dict[str, int] = {}
            for key_node, value_node in node.value:
                child = _child_path(path, key_node)
                if isinstance(key_node, yaml.ScalarNode):
                    # the key as the mapping will hold it: `1` and "1" are the same key
                    name = key_node.value if key_node.tag == _STR_TAG else str(loader.construct_object(key_node))
                    if name in first_lines:
                        problems.append(
                            _problem(
                                filename, _line(key_node), child, f"duplicate key (first at line {first_lines[name]})"
                            )
                        )
                    else:
                        first_lines[name] = _line(key_node)
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{path}[{index}]")

    walk(root, "")
    return problems


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=value lines of a .env file; a file that cannot be read is a ConfigError naming it."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _refusal(
            str(path),
            None,
            "",
            f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}): save it as UTF-8",
        ) from None
    except OSError as exc:
        raise _refusal(str(path), None, "", f"cannot read: {exc.strerror or exc}") from None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


class _Checker:
    """Collects the problems (which refuse the file) and the warnings (which do not) of one
    file, so they are all reported at once."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def error(self, line: int, where: str, message: str) -> None:
        self.problems.append(_problem(self.filename, line, where, message))

    def warn(self, line: int | None, where: str, message: str) -> None:
        self.warnings.append(_problem(self.filename, line, where, message))


@dataclass(frozen=True)
class _Section:
    """One mapping being validated: its values (defaults included) and where to report a
    problem with each key: the key's own line, else the line of the default it came from,
    else the line of the mapping."""

    check: _Checker
    where: str
    values: Mapping[str, Any]
    line: int
    written: tuple[_Lined, ...]  # the mappings the values came from, nearest first

    def line_of(self, key: str) -> int:
        for mapping in self.written:
            if key in mapping.key_lines:
                return mapping.key_lines[key]
        return self.line

    def error(self, key: str, message: str) -> None:
        self.check.error(self.line_of(key), f"{self.where}.{key}", message)

    def warn(self, key: str, message: str) -> None:
        self.check.warn(self.line_of(key), f"{self.where}.{key}", message)


class _Secrets:
    """What ${VAR} substitution found: the values to redact and the variables not set."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.found: dict[str, str] = {}  # value → variable

    def substitute(self, value: str, missing: list[str], *, in_url: bool = False) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            found = self.env.get(name, "")
            if not found:
                missing.append(name)
                return ""
            if len(found) >= SECRET_MIN_LENGTH:
                self.found.setdefault(found, name)
                # an HTTP library may show the URL percent-encoded
                encoded = quote(found, safe="")
                if in_url and encoded != found:
                    self.found.setdefault(encoded, name)
            return found

        return _ENV_REF.sub(replace, value)

    def pairs(self) -> tuple[tuple[str, str], ...]:
        # longest first, so a secret that contains another is replaced whole
        return tuple(sorted(self.found.items(), key=lambda pair: -len(pair[0])))


_FEED_KEYS = {
    "name", "url", "every", "max_age", "backfill", "template", "language", "hashtags", "to",
    "include", "exclude", "max_bytes", "timeout", "flood_threshold", "flood_threshold_day",
    "content_warning", "sensitive", "images", "visibility", "category_hashtags", "tag_map", "max_hashtags",
    "credit", "mode", "fallback", "bluesky_embed", "thread", "priority", "urgent",
}  # fmt: skip
_DEFAULT_KEYS = _FEED_KEYS - {"name", "url"}
_ACCOUNT_KEYS = {
    "mastodon": {"platform", "instance", "token", "visibility", "max_characters", "pacing"},
    "bluesky": {"platform", "handle", "app_password", "service", "pacing"},
}
_ACCOUNT_STRINGS = ("instance", "token", "handle", "app_password", "service", "visibility")
_SECRET_KEYS = ("token", "app_password")
_PACING_KEYS = {"max_per_run", "min_interval", "max_per_day", "hours", "days", "timezone"}
_NETWORK_KEYS = {"allow_private"}
_TOP_KEYS = {"defaults", "accounts", "pacing", "feeds", "templates", "network", "alerts", "campaigns"}
_CAMPAIGN_KEYS = {"name", "template", "text", "link", "vars", "every", "from", "until", "to"}
_ALERTS_KEYS = {"ping", "email", "mastodon_dm", "feed_failing_after"}
_FEED_MINIMUMS = (("backfill", 0), ("max_bytes", 1024), ("flood_threshold", 1), ("flood_threshold_day", 1))
_SERVICE_URL = re.compile(r"^https?://[^/\s]+")
_HANDLE = re.compile(r"^[A-Za-z0-9.-]+\.[A-Za-z0-9-]+$")
_LANGUAGE_TAG = re.compile(r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$")
_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_FETCHED_SCHEMES = re.compile(r"^(https?|file)://", re.IGNORECASE)
_ANY_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)

_BUILTIN_DEFAULTS: dict[str, Any] = {
    "every": "15m",
    "max_age": "7d",
    "backfill": 1,
    "template": "news",
    "language": "fr",
    "hashtags": [],
    "to": None,  # every account
    "include": [],
    "exclude": [],
    "max_bytes": 10_000_000,
    "timeout": "30s",
    "flood_threshold": 10,
    "flood_threshold_day": 30,
    "content_warning": "",
    "sensitive": False,
    "images": False,
    "visibility": "",
    "category_hashtags": False,
    "tag_map": {},
    "max_hashtags": None,
    "credit": {},
    "mode": "post",
    "fallback": "post",
    "bluesky_embed": "images",
    "thread": 1,
    "priority": "normal",
    "urgent": False,
}


def load_config(
    path: Path | str,
    *,
    environ: Mapping[str, str],
    template_exists: Callable[[Config, str], bool] | None = None,
) -> Config:
    """Read and validate feeds.yaml. Raises ConfigError listing every problem. ${VAR} is
    looked up in `environ` (the caller's environment: nothing here reads os.environ), then
    in the .env file next to feeds.yaml."""
    path = Path(path)
    data, duplicates = _read_yaml(_read_source(path), path.name)
    data = _document(data, path.name)
    secrets = _Secrets({**read_dotenv(path.parent / ".env"), **environ})
    check = _Checker(path.name)
    check.problems.extend(duplicates)
    _unknown_keys(check, data, _TOP_KEYS, "")
    pacing = _pacing(check, data.get("pacing"), "pacing", data.key_lines.get("pacing", 1))
    accounts = _accounts(check, data, secrets, pacing)
    network = _network(check, data)
    alerts = _alerts(check, data, secrets, accounts)
    defaults, written_defaults = _defaults(check, data)
    feeds = _feeds(check, data, defaults, written_defaults, accounts, secrets)
    template_dirs = _template_dirs(check, data, path.parent)
    campaigns = _campaigns(check, data, accounts, pacing)
    config = Config(
        path,
        feeds,
        accounts,
        template_dirs,
        tuple(check.warnings),
        network=network,
        alerts=alerts,
        campaigns=campaigns,
        pacing=pacing,
        language=str(defaults.get("language") or "fr"),
        hashtags=tuple(str(tag).lstrip("#") for tag in defaults.get("hashtags") or () if isinstance(tag, str)),
        secrets=secrets.pairs(),
    )
    if template_exists is not None:
        _check_templates(check, config, template_exists)
    if check.problems:
        raise ConfigError(check.problems)
    return config


def _read_source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _refusal(str(path), None, "", "no such file (try `relay init` or --config)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _refusal(str(path), None, "", f"cannot read: {exc}") from None


def _document(data: Any, filename: str) -> _Lined:
    """The top of the file: a mapping (an empty file is an empty mapping)."""
    if data is None:
        data = _Lined()
        data.line, data.key_lines = 1, {}
    if not isinstance(data, _Lined):
        raise _refusal(filename, 1, "", "the file must be a mapping with a 'feeds:' list")
    return data


def _defaults(check: _Checker, data: _Lined) -> tuple[dict[str, Any], tuple[_Lined, ...]]:
    """Every feed key's default (`defaults:` over the built-ins), and the `defaults:`
    mapping as written, if there is one (a problem with a default is shown at its line)."""
    defaults = dict(_BUILTIN_DEFAULTS)
    raw = data.get("defaults")
    if raw is None:
        return defaults, ()
    if not isinstance(raw, _Lined):
        check.error(data.key_lines["defaults"], "defaults", "must be a mapping")
        return defaults, ()
    _unknown_keys(check, raw, _DEFAULT_KEYS, "defaults")
    return {**defaults, **raw}, (raw,)


def _template_dirs(check: _Checker, data: _Lined, base: Path) -> tuple[Path, ...]:
    if "templates" not in data:
        return ((base / "templates").resolve(),)
    if isinstance(data["templates"], str):
        return ((base / data["templates"]).resolve(),)
    check.error(data.key_lines["templates"], "templates", "must be a folder path")
    return ()


def _check_templates(check: _Checker, config: Config, template_exists: Callable[[Config, str], bool]) -> None:
    for index, campaign in enumerate(config.campaigns):
        if not template_exists(config, campaign.template):
            check.error(
                campaign.line,
                f"campaigns[{index}].template",
                f"no template {_show(campaign.template)} (built in: {', '.join(builtin_templates())})",
            )
    for index, feed in enumerate(config.feeds):
        if not template_exists(config, feed.template):
            looked_in = ", ".join(str(directory) for directory in config.template_dirs)
            check.error(
                feed.line,
                f"feeds[{index}].template",
                f"no template {_show(feed.template)} (looked for {_field(feed.template)}.j2 in {looked_in}"
                " and the built-ins)",
            )


def builtin_templates() -> list[str]:
    """The names of the built-in templates (news, news-en, petition, appel, message…)."""
    from relay.catalog import BUILTIN_TEMPLATES

    return sorted({path.name.split(".")[0] for path in BUILTIN_TEMPLATES.glob("*.j2")})


CALL_VARIABLES = {"appel": ({"action"}, {"action", "why"})}  # a built-in call template: needed, known


def call_variables_problem(template: str, variables: Mapping[str, str]) -> str | None:
    """What is wrong with a call's variables for a built-in template that needs some."""
    if template not in CALL_VARIABLES:
        return None
    needed, known = CALL_VARIABLES[template]
    unknown = sorted(set(variables) - known)
    if unknown:
        return f"the template {template} knows {', '.join(sorted(known))}, not {', '.join(unknown)}"
    missing = sorted(name for name in needed if not str(variables.get(name) or "").strip())
    if missing:
        return f"the template {template} needs {', '.join(missing)} (the action asked of your followers)"
    return None


def _unknown_keys(check: _Checker, mapping: _Lined, allowed: set[str], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            hint = _close_match(key, allowed)
            check.error(
                mapping.key_lines.get(key, mapping.line),
                f"{prefix}{_field(key)}",
                "unknown key" + (f" (did you mean {hint!r}?)" if hint else ""),
            )


def _close_match(key: str, allowed: set[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.7)
    return matches[0] if matches else None


def _whole_number(section: _Section, key: str, low: int, fallback: int) -> int:
    value = section.values[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        section.error(key, f"{_show(value)} is not a whole number >= {low}")
        return fallback
    return value


def _duration(section: _Section, key: str, fallback: timedelta, *, positive: bool) -> timedelta:
    value = section.values[key]
    duration = parse_duration(value)
    if duration is None or (positive and duration.total_seconds() <= 0):
        section.error(key, f"{_show(value)} is not a duration{_duration_hint(value)}")
        return fallback
    return duration


def _string(section: _Section, key: str, fallback: str) -> str:
    value = section.values[key]
    if not isinstance(value, str):
        section.error(key, f"{_show(value)} must be a string")
        return fallback
    return value


def _strings(section: _Section, key: str) -> tuple[str, ...]:
    """A list of strings, or one string: stripped, blanks dropped."""
    value = section.values[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        section.error(key, "must be a list of strings")
        value = []
    return tuple(item.strip() for item in value if item.strip())


def _flag(section: _Section, key: str) -> bool:
    value = section.values[key]
    if not isinstance(value, bool):
        section.error(key, "must be true or false")
    return bool(value)


def _pacing(check: _Checker, raw: object, where: str, line: int, base: Pacing | None = None) -> Pacing:
    pacing = base or Pacing()
    if raw is None:
        return pacing
    if not isinstance(raw, _Lined):
        check.error(line, where, "must be a mapping of max_per_run, min_interval, max_per_day")
        return pacing
    _unknown_keys(check, raw, _PACING_KEYS, where)
    section = _Section(check, where, raw, line, (raw,))
    max_per_run, max_per_day = (
        _whole_number(section, key, 0, getattr(pacing, key)) if key in raw else getattr(pacing, key)
        for key in ("max_per_run", "max_per_day")
    )
    min_interval = pacing.min_interval
    if "min_interval" in raw:
        # 0 is allowed here: no minimum between two posts
        min_interval = _duration(section, "min_interval", min_interval, positive=False)
    hours, days, timezone = pacing.hours, pacing.days, pacing.timezone
    if "hours" in raw:
        hours = _window_hours(section)
    if "days" in raw:
        days = _window_days(section)
    if "timezone" in raw:
        timezone = _window_zone(section)
    return Pacing(
        max_per_run=max_per_run,
        min_interval=min_interval,
        max_per_day=max_per_day,
        hours=hours,
        days=days,
        timezone=timezone,
        window=_window(hours, days, timezone) if hours or days or timezone else None,
    )


def _window_hours(section: _Section) -> str:
    from relay.window import parse_hours

    value = section.values["hours"]
    if not isinstance(value, str) or parse_hours(value) is None:
        section.error("hours", f'{_show(value)} is not a time range like "08:00-21:30" (24:00 ends at midnight)')
        return ""
    return value.strip()


def _window_days(section: _Section) -> tuple[str, ...]:
    """mon … sun, and ranges like mon-fri."""
    from relay.window import DAYS

    value = section.values["days"]
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        section.error("days", f"{_show(value)} is not a list of days like [mon, tue, wed] or [mon-fri]")
        return ()
    days: list[str] = []
    for item in items:
        first, _, last = str(item).strip().lower().partition("-")
        if not isinstance(item, str) or first not in DAYS or (last and last not in DAYS):
            section.error(
                "days", f"{_show(item)} is not a day: mon, tue, wed, thu, fri, sat, sun, or a range like mon-fri"
            )
            return ()
        start, stop = DAYS.index(first), DAYS.index(last or first)
        days += [DAYS[(start + n) % 7] for n in range((stop - start) % 7 + 1)]
    return tuple(dict.fromkeys(days))


def _window_zone(section: _Section) -> str:
    from zoneinfo import ZoneInfo

    value = section.values["timezone"]
    try:
        if not isinstance(value, str) or not value.strip():
            raise ValueError
        ZoneInfo(value.strip())
    except (ValueError, OSError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        section.error("timezone", f"{_show(value)} is not a time zone name like Europe/Paris")
        return ""
    return value.strip()


def _window(hours: str, days: tuple[str, ...], timezone: str) -> Window:
    from zoneinfo import ZoneInfo

    from relay.window import DAYS, Window, parse_hours, system_zone

    start, end = parse_hours(hours or "00:00-24:00") or parse_hours("00:00-24:00")  # type: ignore[misc]
    zone, zone_name = (ZoneInfo(timezone), timezone) if timezone else system_zone()
    chosen = frozenset(DAYS.index(day) for day in days) if days else frozenset(range(7))
    shown_days = "" if not days or len(chosen) == 7 else " " + ",".join(days)
    return Window(start, end, chosen, zone, zone_name, f"{hours or '00:00-24:00'}{shown_days} {zone_name}")


def _network(check: _Checker, data: _Lined) -> Network:
    raw = data.get("network")
    if raw is None:
        return Network()
    if not isinstance(raw, _Lined):
        check.error(data.key_lines["network"], "network", "must be a mapping (like {allow_private: false})")
        return Network()
    _unknown_keys(check, raw, _NETWORK_KEYS, "network")
    allow_private = raw.get("allow_private", False)
    if not isinstance(allow_private, bool):
        check.error(raw.key_lines["allow_private"], "network.allow_private", "must be true or false")
        allow_private = False
    return Network(allow_private=allow_private)


def _campaigns(check: _Checker, data: _Lined, accounts: Mapping[str, Account], pacing: Pacing) -> tuple[Campaign, ...]:
    raw = data.get("campaigns")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        check.error(
            data.key_lines["campaigns"],
            "campaigns",
            "must be a list of campaigns (name, template or text, link, every, from, until)",
        )
        return ()
    campaigns: list[Campaign] = []
    names: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"campaigns[{index}]"
        if not isinstance(entry, _Lined):
            check.error(data.key_lines["campaigns"], where, "must be a mapping")
            continue
        _unknown_keys(check, entry, _CAMPAIGN_KEYS, where)
        section = _Section(
            check,
            where,
            {
                "template": "",
                "text": "",
                "link": "",
                "vars": {},
                "every": None,
                "from": None,
                "until": None,
                "to": None,
                **entry,
            },
            entry.line,
            (entry,),
        )
        name = str(entry.get("name") or "")
        if not _TEMPLATE_NAME.fullmatch(name):
            section.error("name", f"{_show(name)} must be a name of letters, digits, - and _")
        elif name in names:
            section.error("name", f"{_show(name)} is the name of another campaign: each needs its own")
        names.add(name)
        for required in ("every", "from"):
            if entry.get(required) is None:
                section.error(
                    required,
                    "missing (required)" + (": like 7d" if required == "every" else ': like "2026-12-01 09:00"'),
                )
        template, text = str(section.values["template"] or ""), str(section.values["text"] or "")
        if bool(template) == bool(text):
            section.error("template", 'write either template: NAME or text: "…"')
        link = str(section.values["link"] or "")
        if link and not re.match(r"^https?://[^/\s]+", link):
            section.error("link", f"{_show(link)} is not an http(s) URL")
        variables = section.values["vars"]
        if not isinstance(variables, dict) or not all(isinstance(v, str | int | float) for v in variables.values()):
            section.error("vars", 'must be a mapping of names to text, like {action: "Signez", why: "…"}')
            variables = {}
        every = (
            _duration(section, "every", timedelta(days=7), positive=True)
            if entry.get("every") is not None
            else timedelta(days=7)
        )
        if every < MIN_CAMPAIGN_EVERY:
            section.error(
                "every",
                f"{_show(section.values['every'])} is too often: a call repeated more than once an hour floods your followers",
            )
        if problem := call_variables_problem(template or "message", {str(k): str(v) for k, v in variables.items()}):
            section.error("vars", problem)
        start = _moment(section, "from", pacing) if entry.get("from") is not None else None
        until = _moment(section, "until", pacing) if section.values["until"] is not None else None
        if start is not None and until is not None and until < start:
            section.error("until", "is before from")
        to = _feed_accounts(section, accounts)
        if start is not None:
            campaigns.append(
                Campaign(
                    name=name,
                    template=template or "message",
                    text=text,
                    link=link,
                    vars=tuple((str(k), str(v)) for k, v in variables.items()),
                    every=every,
                    start=start,
                    until=until,
                    to=to,
                    line=entry.line,
                )
            )
    return tuple(campaigns)


MIN_CAMPAIGN_EVERY = timedelta(hours=1)


def _moment(section: _Section, key: str, pacing: Pacing) -> datetime | None:
    """A date and time ("2026-12-01 09:00", or a date) on the posting window's clock, else
    the system's; an ISO time with its offset as written."""
    value = section.values.get(key)
    moment = parse_moment(str(value) if value is not None else "", pacing)
    if moment is None:
        section.error(key, f'{_show(value)} is not a date and time like "2026-12-01 09:00"')
    return moment


def parse_moment(value: str, pacing: Pacing | None = None) -> datetime | None:
    from relay.window import system_zone

    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        zone = pacing.window.zone if pacing and pacing.window else system_zone()[0]
        moment = moment.replace(tzinfo=zone)
    return moment


def _alerts(check: _Checker, data: _Lined, secrets: _Secrets, accounts: Mapping[str, Account]) -> Alerts:
    raw = data.get("alerts")
    if raw is None:
        return Alerts()
    if not isinstance(raw, _Lined):
        check.error(data.key_lines["alerts"], "alerts", "must be a mapping of ping, email, mastodon_dm")
        return Alerts()
    _unknown_keys(check, raw, _ALERTS_KEYS, "alerts")
    section = _Section(check, "alerts", {"feed_failing_after": "24h", **raw}, raw.line, (raw,))
    failing_after = _duration(section, "feed_failing_after", timedelta(hours=24), positive=True)
    ping = ""
    if "ping" in raw:
        missing: list[str] = []
        value = raw["ping"]
        ping = secrets.substitute(value, missing, in_url=True) if isinstance(value, str) else ""
        if not re.match(r"^https?://[^/\s]+", ping) and not missing:
            section.error("ping", f"{_show(mask_credentials(str(value)))} is not an http(s) URL")
            ping = ""
        for variable in missing:
            section.warn("ping", f"${{{variable}}} is not set in the environment")
    email_url = email_to = email_from = ""
    if "email" in raw:
        email_url, email_to, email_from = _alert_email(check, raw, secrets)
    dm_account = dm_to = ""
    if "mastodon_dm" in raw:
        dm = raw["mastodon_dm"]
        where = "alerts.mastodon_dm"
        if not isinstance(dm, _Lined) or set(dm) != {"account", "to"}:
            check.error(raw.key_lines["mastodon_dm"], where, 'must be {account: NAME, to: "@owner@instance"}')
        else:
            dm_account, dm_to = str(dm["account"]), str(dm["to"]).strip()
            if dm_account not in accounts or accounts[dm_account].platform != "mastodon":
                check.error(
                    dm.key_lines["account"],
                    f"{where}.account",
                    f"{_show(dm_account)} is not a Mastodon account of accounts:",
                )
                dm_account = ""
            if not re.fullmatch(r"@[A-Za-z0-9_]+(@[A-Za-z0-9.-]+\.[A-Za-z]{2,})?", dm_to):
                check.error(
                    dm.key_lines["to"],
                    f"{where}.to",
                    f"{_show(dm_to)} is not a Mastodon handle like @owner@instance.org",
                )
                dm_to = ""
    return Alerts(
        ping=ping,
        email_url=email_url,
        email_to=email_to,
        email_from=email_from,
        dm_account=dm_account if dm_to else "",
        dm_to=dm_to if dm_account else "",
        feed_failing_after=failing_after,
    )


def _smtp_url_ok(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        return parts.scheme in ("smtp", "smtps") and bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:
        return False


def _alert_email(check: _Checker, raw: _Lined, secrets: _Secrets) -> tuple[str, str, str]:
    """alerts.email: {url: ${RELAY_SMTP_URL}, to: ADDRESS, from: ADDRESS (optional)}."""
    where = "alerts.email"
    email = raw["email"]
    if not isinstance(email, _Lined):
        check.error(raw.key_lines["email"], where, "must be a mapping: {url: ${RELAY_SMTP_URL}, to: ADDRESS}")
        return "", "", ""
    _unknown_keys(check, email, {"url", "to", "from"}, where)
    for key, what in (("url", "url: ${RELAY_SMTP_URL}"), ("to", "to: the address alerts go to")):
        if key not in email:
            check.error(email.line, f"{where}.{key}", f"missing ({what})")
    if "url" not in email or "to" not in email:
        return "", "", ""
    written = str(email["url"])
    reference = _ENV_REF.fullmatch(written.strip())
    if reference is None:
        check.error(
            email.key_lines["url"],
            f"{where}.url",
            "must be one ${VARIABLE} holding the whole URL (smtps://user:password@host:465), set in the"
            " environment or .env: the password never goes in feeds.yaml",
        )
        return "", "", ""
    missing: list[str] = []
    url = secrets.substitute(written.strip(), missing, in_url=True)
    for variable in missing:
        check.warn(email.key_lines["url"], f"{where}.url", f"${{{variable}}} is not set in the environment")
    if url and not _smtp_url_ok(url):
        check.error(
            email.key_lines["url"],
            f"{where}.url",
            f"${{{reference.group(1)}}} is not an smtp:// or smtps:// URL with a host (and a port, if any, in"
            " digits); write special characters of the password percent-encoded (/ as %2F, @ as %40)",
        )
        url = ""
    addresses = []
    for key in ("to", "from"):
        value = str(email.get(key, "")).strip()
        if value and not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+", value):
            check.error(email.key_lines[key], f"{where}.{key}", f"{_show(value)} is not an email address")
            value = ""
        addresses.append(value)
    return url, addresses[0], addresses[1]


def _accounts(check: _Checker, data: _Lined, secrets: _Secrets, pacing: Pacing) -> dict[str, Account]:
    raw_accounts = data.get("accounts")
    if raw_accounts is None:
        return {}
    if not isinstance(raw_accounts, _Lined):
        check.error(data.key_lines["accounts"], "accounts", "must be a mapping of account names")
        return {}
    accounts: dict[str, Account] = {}
    for name, raw in raw_accounts.items():
        account = _account(check, name, raw, raw_accounts.key_lines[name], secrets, pacing)
        if account is not None:
            accounts[name] = account
    return accounts


def _account(check: _Checker, name: str, raw: object, line: int, secrets: _Secrets, pacing: Pacing) -> Account | None:
    where = f"accounts.{_field(name)}"
    if not _NAME.match(name):
        check.error(line, where, "account names use letters, digits, '.', '_' and '-'")
    if not isinstance(raw, _Lined):
        check.error(line, where, "must be a mapping with a 'platform:' key")
        return None
    section = _Section(check, where, raw, line, (raw,))
    platform = raw.get("platform")
    if platform not in PLATFORMS:
        section.error("platform", f"{_show(platform)} is not one of: {', '.join(PLATFORMS)}")
        return None
    _unknown_keys(check, raw, _ACCOUNT_KEYS[platform], where)
    _refuse_written_secrets(section)
    written = _account_strings(section)
    missing: list[str] = []
    strings = {key: secrets.substitute(value, missing) for key, value in written.items()}
    settings = _mastodon(section, strings, written) if platform == "mastodon" else _bluesky(section, strings, written)
    account_pacing = _pacing(check, raw.get("pacing"), f"{where}.pacing", section.line_of("pacing"), pacing)
    for variable in missing:
        check.warn(None, where, f"${{{variable}}} is not set in the environment")
    return Account(name=name, platform=platform, pacing=account_pacing, missing_secrets=tuple(missing), **settings)


def _account_strings(section: _Section) -> dict[str, str]:
    """The string settings as written: messages show these (${VAR}), never what the
    environment put there."""
    written: dict[str, str] = {}
    for key in _ACCOUNT_STRINGS:
        if key in section.values:
            if isinstance(section.values[key], str):
                written[key] = section.values[key]
            else:
                section.error(key, "must be a string")
    return written


def _refuse_written_secrets(section: _Section) -> None:
    for key in section.values:
        secret = section.values[key] if key in _SECRET_KEYS else None
        if isinstance(secret, str) and secret and not _ENV_REF.fullmatch(secret.strip()):
            section.error(
                key, "secrets never go in feeds.yaml: write ${VARIABLE} and set it in the environment or in .env"
            )


def _mastodon(section: _Section, strings: dict[str, str], written: dict[str, str]) -> dict[str, Any]:
    """A Mastodon account's settings. `strings` are the values with ${VAR} substituted,
    `written` the same as written (what messages show)."""
    settings: dict[str, Any] = dict(strings)
    settings["instance"] = _service_url(
        section, "instance", strings, written, "an instance URL (like https://mastodon.social)"
    )
    if "token" not in section.values:
        section.error("token", "missing (write token: ${RELAY_MASTODON_TOKEN})")
    if strings.get("visibility", "public") not in VISIBILITIES:
        section.error("visibility", f"{_show(written.get('visibility', ''))} is not one of: {', '.join(VISIBILITIES)}")
    if "max_characters" in section.values:
        value = section.values["max_characters"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 50:
            section.error("max_characters", "must be a whole number >= 50")
        else:
            settings["max_characters"] = value
    return settings


def _bluesky(section: _Section, strings: dict[str, str], written: dict[str, str]) -> dict[str, Any]:
    """A Bluesky account's settings, as _mastodon does for Mastodon."""
    settings: dict[str, Any] = dict(strings)
    handle = strings.get("handle", "").lstrip("@")
    if not _HANDLE.match(handle):
        section.error("handle", f"{_show(written.get('handle', ''))} is not a handle (like collectif.bsky.social)")
    settings["handle"] = handle
    if "app_password" not in section.values:
        section.error("app_password", "missing (write app_password: ${RELAY_BLUESKY_APP_PASSWORD})")
    settings["service"] = _service_url(section, "service", strings, written, "a URL", "https://bsky.social")
    return settings


def _service_url(
    section: _Section, key: str, strings: dict[str, str], written: dict[str, str], what: str, default: str = ""
) -> str:
    url = strings.get(key, default)
    if not _SERVICE_URL.match(url):
        section.error(key, f"{_show(written.get(key, ''))} is not {what}")
    return url.rstrip("/")


def _feeds(
    check: _Checker,
    data: _Lined,
    defaults: dict[str, Any],
    written_defaults: tuple[_Lined, ...],
    accounts: Mapping[str, Account],
    secrets: _Secrets,
) -> tuple[Feed, ...]:
    raw_feeds = data.get("feeds")
    if raw_feeds is None:
        check.error(data.line, "feeds", "missing: list the feeds to relay under 'feeds:'")
        return ()
    if not isinstance(raw_feeds, _LinedList):
        check.error(data.key_lines["feeds"], "feeds", "must be a list")
        return ()
    feeds: list[Feed] = []
    names: set[str] = set()
    for index, raw in enumerate(raw_feeds):
        where, line = f"feeds[{index}]", raw_feeds.item_lines[index]
        if not isinstance(raw, _Lined):
            check.error(line, where, "must be a mapping with 'name:' and 'url:'")
            continue
        _unknown_keys(check, raw, _FEED_KEYS, where)
        section = _Section(check, where, {**defaults, **raw}, line, (raw, *written_defaults))
        feeds.append(_feed(section, index, names, accounts, secrets))
    return tuple(feeds)


def _feed(section: _Section, index: int, names: set[str], accounts: Mapping[str, Account], secrets: _Secrets) -> Feed:
    """One feed. The order of the checks is the order its problems are listed in."""
    name = _feed_name(section, index, names)
    url, fetch_url = _feed_url(section, secrets)
    every, max_age, timeout = (
        _duration(section, key, _builtin_duration(key), positive=True) for key in ("every", "max_age", "timeout")
    )
    backfill, max_bytes, flood_threshold, flood_threshold_day = (
        _whole_number(section, key, low, _BUILTIN_DEFAULTS[key]) for key, low in _FEED_MINIMUMS
    )
    template, language, content_warning, visibility = _feed_strings(section)
    hashtags, include, exclude = (_strings(section, key) for key in ("hashtags", "include", "exclude"))
    hashtags = _hashtags(section, hashtags)
    category_hashtags = _flag(section, "category_hashtags")
    tag_map = _tag_map(section, category_hashtags)
    max_hashtags = _max_hashtags(section, hashtags)
    credit = _credit(section)
    mode, fallback = _mode(section, accounts)
    bluesky_embed = _choice(section, "bluesky_embed", ("card", "images"))
    thread = _thread(section)
    priority = _choice(section, "priority", PRIORITIES)
    _check_patterns(section, "include", include)
    _check_patterns(section, "exclude", exclude)
    to = _feed_accounts(section, accounts)
    sensitive, images = _flag(section, "sensitive"), _flag(section, "images")
    return Feed(
        name=name,
        url=url,
        fetch_url=fetch_url,
        every=every,
        max_age=max_age,
        timeout=timeout,
        backfill=backfill,
        max_bytes=max_bytes,
        flood_threshold=flood_threshold,
        flood_threshold_day=flood_threshold_day,
        template=template,
        language=language,
        language_set="language" in section.written[0],  # written for this feed, not a default
        content_warning=content_warning,
        visibility=visibility,
        hashtags=hashtags,
        category_hashtags=category_hashtags,
        tag_map=tag_map,
        max_hashtags=max_hashtags,
        credit=credit,
        mode=mode,
        fallback=fallback,
        bluesky_embed=bluesky_embed,
        thread=thread,
        priority=priority,
        urgent=_flag(section, "urgent"),
        include=include,
        exclude=exclude,
        to=to,
        sensitive=sensitive,
        images=images,
        line=section.line,
    )


def _builtin_duration(key: str) -> timedelta:
    duration = parse_duration(_BUILTIN_DEFAULTS[key])
    assert duration is not None
    return duration


def _feed_name(section: _Section, index: int, names: set[str]) -> str:
    name = section.values.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        section.error("name", f"{_show(name)} is not a feed name (letters, digits, '.', '_', '-')")
        name = f"feed{index}"
    elif name in names:
        section.error("name", f"{_show(name)} is used by another feed")
    names.add(name)
    return name


def _feed_url(section: _Section, secrets: _Secrets) -> tuple[str, str]:
    """The URL as written (what is shown) and as fetched (${VAR} substituted)."""
    url = section.values.get("url")
    if not isinstance(url, str) or not url.strip():
        section.error("url", "missing: an http(s) URL, a file:// URL or a local path")
        return "", ""
    url = url.strip()
    missing: list[str] = []
    fetch_url = secrets.substitute(url, missing, in_url=True)
    for variable in missing:
        section.warn("url", f"${{{variable}}} is not set in the environment")
    if _ANY_SCHEME.match(fetch_url) and not _FETCHED_SCHEMES.match(fetch_url):
        section.error("url", f"{_show(mask_credentials(url))}: only http, https and file URLs are fetched")
    # a Mastodon or Bluesky profile is fetched as its feed, and shown as written
    return url, feed_url_of(fetch_url) or fetch_url


def _feed_strings(section: _Section) -> tuple[str, str, str, str]:
    """template, language, content_warning and visibility, stripped and checked."""
    template, language, content_warning, visibility = (
        _string(section, key, _BUILTIN_DEFAULTS[key]).strip()
        for key in ("template", "language", "content_warning", "visibility")
    )
    if not _LANGUAGE_TAG.match(language):
        section.error("language", f"{_show(language)} is not a language tag (like fr or fr-FR)")
    if visibility and visibility not in VISIBILITIES:
        section.error("visibility", f"{_show(visibility)} is not one of: {', '.join(VISIBILITIES)}")
    if not _TEMPLATE_NAME.match(template):
        section.error("template", f"{_show(template)} is not a template name (like news)")
    return template, language, content_warning, visibility


def _hashtags(section: _Section, tags: tuple[str, ...]) -> tuple[str, ...]:
    hashtags = tuple(tag.lstrip("#") for tag in tags)
    for tag in hashtags:
        if not re.fullmatch(r"\w+", tag):
            section.error("hashtags", f"{_show(tag)} is not a hashtag (letters, digits and _ only)")
    return hashtags


def _tag_map(section: _Section, enabled: bool) -> tuple[tuple[str, str], ...]:
    """category: hashtag (renamed) or category: "" / null (dropped); keys as hashtags.map_key."""
    raw = section.values["tag_map"]
    if not isinstance(raw, dict):
        section.error("tag_map", 'must be a mapping of category: hashtag (or "" to drop the category)')
        return ()
    if not raw:
        return ()
    from relay.hashtags import is_hashtag, map_key  # only here: `regex` is not for every run

    pairs: dict[str, str] = {}
    for category, tag in raw.items():
        if not isinstance(category, str) or not category.strip():
            section.error("tag_map", f"{_show(category)} is not a category")
            continue
        if tag is None:
            tag = ""
        if not isinstance(tag, str) or (tag.strip() and not is_hashtag(tag.strip().lstrip("#"))):
            section.error(
                "tag_map",
                f"{_show(category)}: {_show(tag)} is not a hashtag (a letter, then letters, digits and _;"
                ' "" drops the category)',
            )
            continue
        pairs[map_key(category)] = tag.strip().lstrip("#")
    if not enabled and "tag_map" in section.written[0]:
        section.warn("tag_map", "has no effect without category_hashtags: true")
    return tuple(pairs.items())


_MASTODON_ACCOUNT = re.compile(
    r"^@?([A-Za-z0-9_]+(?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?)(?:@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+))?$"
)


def _credit(section: _Section) -> Credit:
    """credit: {mastodon: "@user@instance", bluesky: handle}."""
    raw = section.values["credit"]
    if not isinstance(raw, dict):
        section.error(
            "credit", 'must be a mapping like {mastodon: "@collectif@instance", bluesky: collectif.bsky.social}'
        )
        return Credit()
    for key in raw:
        if key not in PLATFORMS:
            section.error("credit", f"{_show(key)} is not a platform ({', '.join(PLATFORMS)})")
    mastodon, bluesky = raw.get("mastodon") or "", raw.get("bluesky") or ""
    if not isinstance(mastodon, str) or (mastodon and not _MASTODON_ACCOUNT.match(mastodon.strip())):
        section.error("credit", f"mastodon: {_show(mastodon)} is not a Mastodon account (like @collectif@instance.org)")
        mastodon = ""
    if not isinstance(bluesky, str) or (bluesky and not _HANDLE.match(bluesky.strip().lstrip("@"))):
        section.error("credit", f"bluesky: {_show(bluesky)} is not a Bluesky handle (like collectif.bsky.social)")
        bluesky = ""
    mastodon, bluesky = mastodon.strip(), bluesky.strip().lstrip("@")
    return Credit(mastodon="@" + mastodon.lstrip("@") if mastodon else "", bluesky=bluesky)


MODES = ("post", "boost", "quote")


def _mode(section: _Section, accounts: Mapping[str, Account]) -> tuple[tuple[tuple[str, str], ...], str]:
    """mode: post | boost | quote, or a mapping of account: mode; fallback: post | none."""
    raw = section.values["mode"]
    modes: list[tuple[str, str]] = []
    if isinstance(raw, str):
        modes.append(("", raw))
    elif isinstance(raw, dict):
        for account, mode in raw.items():
            if account not in accounts:
                section.error("mode", f"{_show(account)} is not an account (accounts: {', '.join(accounts)})")
            modes.append((str(account), mode))
    else:
        section.error("mode", f"must be one of {', '.join(MODES)}, or a mapping of account: mode")
    checked = []
    for account, mode in modes:
        if mode not in MODES:
            section.error("mode", f"{_show(mode)} is not one of {', '.join(MODES)}")
        else:
            checked.append((account, mode))
    return tuple(checked), _choice(section, "fallback", ("post", "none"))


def _choice(section: _Section, key: str, choices: tuple[str, ...]) -> str:
    """One of a few words; the built-in default (with an error) when it is anything else."""
    value = section.values[key]
    if value not in choices:
        section.error(key, f"must be {' or '.join(choices)}")
        return str(_BUILTIN_DEFAULTS[key])
    return str(value)


def _max_hashtags(section: _Section, hashtags: tuple[str, ...]) -> int | None:
    value = section.values["max_hashtags"]
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        section.error("max_hashtags", f"{_show(value)} is not a whole number >= 0")
        return None
    if len(hashtags) > value:
        section.warn("max_hashtags", f"{len(hashtags)} hashtags written, only the first {value} are posted")
    return value


PRIORITIES = ("high", "normal", "low")  # the outbox serves them in this order
MAX_THREAD = 10  # a thread of more posts floods followers as much as ten items would


def _thread(section: _Section) -> int:
    value = section.values["thread"]
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_THREAD:
        section.error("thread", f"{_show(value)} is not a whole number from 1 (no thread) to {MAX_THREAD}")
        return 1
    return value


def _check_patterns(section: _Section, key: str, patterns: tuple[str, ...]) -> None:
    """include/exclude: a /slashed/ pattern is a regular expression, which must compile."""
    for pattern in patterns:
        if len(pattern) > 2 and pattern.startswith("/") and pattern.endswith("/"):
            try:
                re.compile(pattern[1:-1])
            except re.error as exc:
                section.error(key, f"{_show(pattern)} is not a valid regex: {exc}")


def _feed_accounts(section: _Section, accounts: Mapping[str, Account]) -> tuple[str, ...]:
    """`to:`, the accounts the feed posts to (every account when left out)."""
    to = section.values["to"]
    if to is None:
        to = list(accounts)
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not all(isinstance(name, str) for name in to):
        section.error("to", "must be a list of account names")
        to = []
    for name in to:
        if name not in accounts:
            known = ", ".join(_field(account) for account in accounts) or "none defined"
            section.error("to", f"account {_show(name)} is not defined under accounts: ({known})")
    return tuple(name for name in to if name in accounts)


def resolve_feed_url(config: Config, url: str) -> str:
    """Local paths are relative to feeds.yaml; URLs are returned as they are."""
    if re.match(r"^(https?|file)://", url, re.IGNORECASE):
        return url
    return (config.path.parent / url).resolve().as_uri()
