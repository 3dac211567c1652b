"""URLs as they may be shown: with any password masked.

An Optuna storage, a tracking URI or a remote URL can carry ``user:password@``.
Every message and log line shows such a URL through :func:`masked`, so a
password never reaches a terminal, a CI log or ``dvc repro``'s output; text that
may quote one (a driver's error) goes through :func:`masked_text`.
"""

from __future__ import annotations

import re
import urllib.parse

MASK = "***"

# scheme://user:password@ anywhere in a text; the password runs to the last '@' before whitespace.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):(?P<password>\S*)@")


def password_of(url: str) -> str | None:
    """The password in ``url``'s ``user:password@`` part, as written (percent-encoded or not), or None."""
    match = _USERINFO.match(url.strip())
    return match["password"] if match and match["password"] else None


def masked(url: str) -> str:
    """``url`` with its password shown as ``***``, e.g. ``postgresql+psycopg://bob:***@db.lan/optuna``.

    A database URL is rendered by SQLAlchemy (``hide_password=True``), which
    reads it as the engine does; any other URL has its ``user:password@`` part
    masked.
    """
    if password_of(url) is None:
        return url
    if not url.startswith(("http://", "https://")):
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            return make_url(url).render_as_string(hide_password=True)
        except (ArgumentError, ValueError):  # not a database URL: the general rule below
            pass
    return masked_text(url)


def masked_text(text: str, *urls: str | None) -> str:
    """``text`` with every ``scheme://user:password@`` masked, and each password of ``urls`` wherever else it appears.

    The second part catches a driver that quotes a password on its own, or decoded.
    """
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    for url in urls:
        password = password_of(url or "")
        if password:
            for form in {password, urllib.parse.unquote(password)}:
                text = text.replace(form, MASK)
    return text
