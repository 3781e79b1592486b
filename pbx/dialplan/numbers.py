"""Phone number filters for dialplan templates: E.164 normalisation (ITU-T E.164, E.123) written where the
dialplan decides what to dial, e.g. ``dial trunk:carrier/{{ call.dialed[1:] | e164(country="1") }}``.

- ``e164(country="1", trunk_prefix="0", international="00")``: ``+CC...`` from what a person dialled:
  ``+...`` stays, an international prefix (``00`` or, for country 1, ``011``) becomes ``+``, a national number
  gets the country code (its national trunk prefix ``0`` dropped; NANP numbers have none). Visual
  separators (spaces, ``-``, ``.``, ``(``, ``)``) are ignored.
- ``strip_plus``: the number without its leading ``+`` (carriers that want ``15551234567``).
- ``national(country="1", trunk_prefix="0")``: a ``+CC...`` number of that country as dialled nationally
  (``+442071234567`` -> ``02071234567``, ``+15551234567`` -> ``5551234567``); other numbers unchanged.

Every filter returns ``""`` for a value that is not a number (so ``dial trunk:x/{{ ... }}`` then fails to
parse instead of dialling garbage) and never raises: a template author tests ``if n | e164``.
These are plain functions of strings; they run in the sandbox like any other filter.
"""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s.()\-/]")
_DIGITS = re.compile(r"\+?[0-9]{1,32}")
_COUNTRY = re.compile(r"[1-9][0-9]{0,2}")
MAX_DIGITS = 15
"""The longest E.164 number, without '+' (ITU-T E.164 6.1)."""


def _clean(value: object) -> str:
    text = "" if value is None else str(value)
    if len(text) > 64:
        return ""
    text = _SEPARATORS.sub("", text)
    return text if _DIGITS.fullmatch(text) else ""


def e164(value: object, country: str = "1", trunk_prefix: str | None = None, international: str = "") -> str:
    """The number in E.164 form (``+`` and up to 15 digits), or ``""`` when it cannot be one.

    Args:
        value: What was dialled.
        country: The country code of national numbers (``"1"`` NANP, ``"44"`` UK, ``"49"`` DE ...).
        trunk_prefix: The national trunk prefix dropped from national numbers; default ``""`` for country
            1 (NANP), else ``"0"``.
        international: The international call prefix; default ``"011"`` for country 1, else ``"00"``.
    """
    country = str(country)
    if not _COUNTRY.fullmatch(country):
        return ""
    nanp = country == "1"
    if trunk_prefix is None:
        trunk_prefix = "" if nanp else "0"
    prefix = international or ("011" if nanp else "00")
    number = _clean(value)
    if not number:
        return ""
    if number.startswith("+"):
        digits = number[1:]
    elif number.startswith(prefix):
        digits = number[len(prefix) :]
    elif nanp and len(number) == 11 and number.startswith("1"):
        digits = number  # 1 + area code + number
    else:
        national = number[len(trunk_prefix) :] if trunk_prefix and number.startswith(trunk_prefix) else number
        digits = country + national
    if not digits or digits[0] == "0" or len(digits) > MAX_DIGITS:
        return ""
    return "+" + digits


def strip_plus(value: object) -> str:
    """The number without a leading ``+``; ``""`` when it is no number."""
    number = _clean(value)
    return number[1:] if number.startswith("+") else number


def national(value: object, country: str = "1", trunk_prefix: str | None = None) -> str:
    """A ``+CC...`` number of `country` as dialled inside that country; other numbers as they are."""
    country = str(country)
    number = _clean(value)
    if not number or not _COUNTRY.fullmatch(country):
        return ""
    if trunk_prefix is None:
        trunk_prefix = "" if country == "1" else "0"
    if number.startswith("+" + country):
        return trunk_prefix + number[1 + len(country) :]
    return number


FILTERS = {"e164": e164, "strip_plus": strip_plus, "national": national}
"""The filters `pbx.dialplan.engine.make_environment` adds, by name."""
