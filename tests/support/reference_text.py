"""relay's text cutting before issue 13, kept as the reference the faster code must match:
every cluster of the text found with \\X over the whole of it."""

import regex

CLUSTER = regex.compile(r"\X")


def reference_truncate(text: str, max_graphemes: int) -> str:
    """truncate before issue 13."""
    clusters = CLUSTER.findall(text)
    if len(clusters) <= max_graphemes:
        return text
    if max_graphemes <= 0:
        return ""
    kept = "".join(clusters[: max_graphemes - 1]).rstrip()
    space = kept.rfind(" ")
    if space > len(kept) * 2 // 3:
        kept = kept[:space].rstrip(" ,;:-–—")
    return kept + "…"
