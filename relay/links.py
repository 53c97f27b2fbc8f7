"""An item's link → the one URL relay may post (pure). Parsed with a real URL parser and
rebuilt from its parts, so nothing a feed writes around or inside the link (a newline and a
mention, a disguised host, an unencoded space) can reach a post. No I/O, no DNS.

The rules, and why:
- http and https only, with a host: a post links to a web page, nothing else.
- Control characters, tabs, newlines and invisible format characters anywhere inside make
  the link invalid rather than being removed: a link that carries them was built to smuggle
  text (`https://host/\\n@someone@instance spam`) or to disguise itself, and cutting it at the
  first one would post a different page than the feed meant.
- A user name or password (`https://trusted.org@evil.example/`) makes it invalid: the part
  before '@' reads as the host to a person, while the browser goes to the part after it.
- The host is lowercased and IDNA-encoded (punycode), so a post shows the real host.
- Path, query and fragment are percent-encoded (spaces, non-ASCII, characters that end a
  URL in a post, an '@' where Mastodon could start a mention); valid %XX escapes are kept
  as they are, so a link that was already clean is posted unchanged.
- At most 4096 characters: longer links are refused by many servers and are not articles.

parse.py also looks at a link as the feed wrote it when feedparser's resolution against
the feed URL would have deleted its line breaks.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import urlsplit, urlunsplit

import idna

from relay.text import find_urls

MAX_LINK_CHARS = 4096
_SCHEMES = ("http", "https")
# RFC 3986 unreserved and sub-delims, plus what each component may hold unencoded.
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_SUB_DELIMS = "!$&'()*+,;="
_PATH_SAFE = frozenset(_UNRESERVED + _SUB_DELIMS + ":@/")
_QUERY_SAFE = frozenset(_UNRESERVED + _SUB_DELIMS + ":@/?")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_ASCII_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
# '@' that Mastodon's mention pattern could start at: not after '/', '=' or a word character.
_LIVE_AT = re.compile(r"(?<![/=A-Za-z0-9_])@")
# Unicode general categories that are never allowed inside a link (plain spaces are encoded).
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Zs"})


def normalise_link(raw: str) -> str:
    """The normalised http(s) URL for raw. Raises ValueError with a short reason."""
    text = raw.strip()
    if not text:
        raise ValueError("empty link")
    if len(text) > MAX_LINK_CHARS:
        raise ValueError(f"link longer than {MAX_LINK_CHARS} characters")
    for character in text:
        if character != " " and unicodedata.category(character) in _FORBIDDEN_CATEGORIES:
            raise ValueError(f"link contains {_describe(character)}")
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError("link cannot be parsed") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError("link is not http(s)")
    if not text[len(parts.scheme) + 1 :].startswith("//"):
        raise ValueError("link has no host")
    if "@" in parts.netloc:
        raise ValueError("user name or password in the link (it disguises the host)")
    host, port = _host_and_port(parts.netloc)
    netloc = host if port is None else f"{host}:{port}"
    path = _encode(parts.path, _PATH_SAFE)
    if path and not path.startswith("/"):
        path = "/" + path
    query = _encode(parts.query, _QUERY_SAFE)
    fragment = _encode(parts.fragment, _QUERY_SAFE)
    # an empty "?" or "#" is dropped by urlunsplit: it says nothing
    url = urlunsplit((scheme, netloc, path, query, fragment))
    url = _LIVE_AT.sub("%40", url[len(scheme) + 3 + len(netloc) :])
    url = f"{scheme}://{netloc}{url}"
    url = _keep_trailing_characters(url)
    if len(url) > MAX_LINK_CHARS:
        raise ValueError(f"link longer than {MAX_LINK_CHARS} characters")
    return url


def _describe(character: str) -> str:
    name = unicodedata.name(character, "")
    label = f"U+{ord(character):04X}"
    return f"{label} {name}" if name else f"a control character ({label})"


def _host_and_port(netloc: str) -> tuple[str, int | None]:
    if netloc.startswith("["):
        literal, _, rest = netloc[1:].partition("]")
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            raise ValueError("link has an invalid IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise ValueError("link has an invalid host")
        return f"[{address.compressed}]", _port(rest[1:])
    host, colon, port = netloc.rpartition(":")
    if not colon:
        host, port = netloc, ""
    return _host(host), _port(port)


def _port(text: str) -> int | None:
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ValueError("link has an invalid port")
    return int(text)


def _host(host: str) -> str:
    if not host:
        raise ValueError("link has no host")
    if host.endswith("."):
        host = host[:-1]  # the fully qualified form names the same host
    host = host.lower() if host.isascii() else _idna(host)
    labels = host.split(".")
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        # browsers read a numeric last label as an IPv4 address in any notation; only the
        # dotted-decimal form is unambiguous
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError("link has a numeric host that is not an IPv4 address") from None
    if len(host) > 253 or not all(_ASCII_LABEL.match(label) for label in labels):
        raise ValueError("link has an invalid host name")
    if any(label.startswith("xn--") for label in labels):
        _idna(host)  # punycode must decode to a valid name
    return host


def _idna(host: str) -> str:
    try:
        encoded = idna.encode(host, uts46=True).decode("ascii")
        idna.decode(encoded)
    except (idna.IDNAError, UnicodeError):
        raise ValueError("link has an invalid international host name") from None
    return encoded


def _encode(component: str, safe: frozenset[str]) -> str:
    out: list[str] = []
    index = 0
    while index < len(component):
        character = component[index]
        if character == "%" and _ESCAPE.match(component, index):
            out.append(component[index : index + 3])
            index += 3
            continue
        if character in safe:
            out.append(character)
        else:
            out.extend(f"%{byte:02X}" for byte in character.encode("utf-8"))
        index += 1
    return "".join(out)


def _keep_trailing_characters(url: str) -> str:
    """Encode the last characters that a post's URL detection would leave outside the link
    ("…/article." or "…?id=4)"), so the whole link stays one link."""
    while True:
        spans = find_urls(url)
        if not spans or spans[0][0] != 0:
            raise ValueError("link is not recognised as a URL in a post")
        end = spans[0][1]
        if end == len(url):
            return url
        # only ASCII punctuation is ever left outside: everything else is encoded already
        url = url[:end] + "".join(f"%{ord(character):02X}" for character in url[end:])
