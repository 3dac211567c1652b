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

    The password is taken to run to the last ``@``, so one with an unencoded
    ``@`` is masked whole (SQLAlchemy would read only its first part as the
    password, and show the rest as the host).
    """
    return masked_text(url)


def masked_text(text: str, *urls: str | None) -> str:
    """``text`` with every ``scheme://user:password@`` masked, and each password of ``urls`` wherever else it appears.

    The second part catches a driver that quotes a password on its own, or decoded.
    """
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    for url in urls:
        password = password_of(url or "")
        for form in {password, urllib.parse.unquote(password)} if password else ():
            # Where it stands alone: a short password must not turn every word that contains it into ***.
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(form)}(?![A-Za-z0-9])", MASK, text)
    return text
