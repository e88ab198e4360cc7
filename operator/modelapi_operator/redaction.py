"""Credentials never leave the operator: an artifact URI's query string (a presigned URL's signature) is redacted
from everything it writes for people to read: Deployment annotations, status, Events and logs (pure).

The pods still get the whole URI (they need it to download), and the revision hash is computed over the whole
pod template, so a new presigned URL still starts a new revision.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from typing import Final

REDACTED: Final = "<redacted>"
# A URL in free text followed by a query string: the query (up to whitespace, a quote or a fragment) goes.
_URL_QUERY = re.compile(r"(?P<url>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#'\"<>]*)\?[^\s#'\"<>]*")
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]+@")


def redact_uri(uri: str) -> str:
    """Scheme, host and path of ``uri``; a query becomes ``?<redacted>``, userinfo and fragment are dropped."""
    try:
        parts = urllib.parse.urlsplit(uri)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:  # not a URL at all (an invalid spec): redact whatever could be a query
        return redact_text(uri)
    query = REDACTED if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, query, ""))


def redact_text(text: str) -> str:
    """Every URL's query string and userinfo in free text (messages copied from pods, the API server, logs)."""
    text = _URL_QUERY.sub(lambda match: f"{match.group('url')}?{REDACTED}", text)
    return _USERINFO.sub(r"\g<scheme>***@", text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the rendered message of every record it sees (kopf logs whole bodies at
    debug level, and posts some of its log lines as Events)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: logging reports it when it formats it
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_log_redaction(*loggers: logging.Logger) -> None:
    """Redact on the given loggers (records logged on them directly) and on every handler of the root logger (all
    records that reach the output)."""
    redacting = RedactingFilter()
    for logger in loggers:
        logger.addFilter(redacting)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redacting)
