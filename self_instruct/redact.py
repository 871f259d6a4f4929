"""URLs without their secrets, for manifests, messages and logs: a leaf that every layer may use
(the backends name their endpoints with it, the manifest records them, the CLI records its command)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_PARAM = re.compile(r"(key|token|secret|password|passwd|pwd|sig|signature|auth|credential)", re.I)


def redact_url(url: str) -> str:
    """The URL without any user:password part and with key-like query values hidden, for manifests,
    messages and logs (``?api-key=...`` becomes ``?api-key=REDACTED``)."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = urlencode(
        [
            (k, "REDACTED" if SECRET_PARAM.search(k) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
