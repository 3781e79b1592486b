"""Toll-fraud controls, part one: which class of call a number dialled through a trunk is, and who may.

A number is classified as the carrier will see it, **after** the dialplan chose the trunk (the ``NUMBER`` of
``trunk:NAME/NUMBER``, which the B2BUA sends as the Request-URI's user, RFC 3261 19.1.1), and in its E.164
form (ITU-T E.164: ``+`` country code, at most 15 digits) as `pbx.dialplan.numbers.e164` computes it with
the tenant's country code and prefixes. A template mistake therefore cannot open the world: whatever the
template built, the number that leaves is the one that is checked.

The classes (docs/security.md, "Toll fraud"), first match wins:

1. ``emergency``: the number as sent, without a leading ``+``, is one of the tenant's emergency numbers
   (``911``, ``112``, ``999`` ...), or that number behind the tenant's country code (``+1911``, ``1911``).
   Never refused.
2. ``invalid``: no number at all (letters, a ``*`` or ``#`` other than a leading service code such as
   ``*67`` and a final ``#``, which are set aside; no E.164 form); always refused.
3. ``premium``: the E.164 form starts with one of the premium prefixes (``+1900``, ``+979`` ...).
4. ``international``: another country code, or one of the tenant's ``international`` prefixes inside its
   own country code (for NANP, the Caribbean area codes that are billed as international).
5. ``local``: starts with one of the tenant's local prefixes (E.164, ``+1555``).
6. ``national``: the rest of the tenant's own country code.

``internal`` names the calls that stay inside the PBX (extensions, groups, voicemail, IVR): every caller has
it, and no number through a trunk is ever ``internal``.

It knows nothing of SIP, calls or the config: plain values in, a `Verdict` out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pbx.dialplan.numbers import e164

CLASSES = ("internal", "local", "national", "international", "premium", "emergency")
"""Every outbound class, as written in the config (``outbound_classes``)."""

TRUNK_CLASSES = frozenset({"local", "national", "international", "premium"})
"""The classes of numbers a carrier bills: an extension with none of them cannot call out."""

ALWAYS = frozenset({"internal", "emergency"})
"""The classes every caller has, whatever its configuration says."""

DEFAULT_CLASSES = ("internal", "local", "national", "emergency")
"""A tenant's default for extensions that may call out (``may_call_out = true``, no ``outbound_classes``)."""

DEFAULT_EMERGENCY = ("112", "911", "999")
"""Emergency numbers every tenant has unless it lists its own."""

EMERGENCY_BY_COUNTRY = {
    "1": ("911",),
    "44": ("999", "112"),
    "49": ("110", "112"),
    "33": ("15", "17", "18", "112"),
    "61": ("000", "112"),
}
"""Further emergency numbers by country code (added to `DEFAULT_EMERGENCY` when the tenant lists none)."""

WORLD_PREMIUM = ("+979", "+870", "+881", "+882", "+883")
"""Premium for everyone: International Premium Rate Service (+979), Inmarsat (+870), the global satellite and
international networks (+881, +882, +883): the classic destinations of toll fraud."""

PREMIUM_BY_COUNTRY = {
    "1": ("+1900", "+1976"),
    "44": ("+449", "+4487"),
    "49": ("+49900", "+49137", "+49118"),
    "33": ("+338",),
}
"""National premium-rate ranges by country code (E.164 prefixes)."""

_NANP_FOREIGN = "242 246 264 268 284 345 441 473 649 658 664 721 758 767 784 809 829 849 868 869 876"
NANP_INTERNATIONAL = tuple(f"+1{area}" for area in _NANP_FOREIGN.split(" "))
"""The NANP area codes of countries other than the US and Canada (the Caribbean, Bermuda): billed as
international although they share country code 1; a favourite of toll fraud."""

_SEPARATORS = re.compile(r"[\s.()\-/]")
_NUMBER = re.compile(r"\+?[0-9]{1,32}")
_SERVICE_CODE = re.compile(r"^\*(?:1[0-9]{2}|[2-9][0-9])(?=[+0-9])")  # *67, *82, *1XX (NANP VSCs)
_COUNTRY = re.compile(r"[1-9][0-9]{0,2}")


def _clean(number: str) -> str:
    """The number without separators, a leading service code (``*67``) and a final ``#``."""
    cleaned = _SEPARATORS.sub("", number) if len(number) <= 64 else ""
    return _SERVICE_CODE.sub("", cleaned).removesuffix("#")


@dataclass(frozen=True, slots=True)
class NumberRules:
    """How a tenant's numbers are classified (see the module docstring).

    Attributes:
        country: The tenant's country code (``"1"`` NANP, ``"44"`` UK ...).
        trunk_prefix: The national trunk prefix (None: ``""`` for country 1, else ``"0"``).
        international_prefix: The international call prefix (``""``: ``011`` for country 1, else ``00``).
        emergency: Emergency numbers as dialled (``"911"``); None: `DEFAULT_EMERGENCY` and the country's.
        premium: E.164 prefixes of premium numbers; None: `WORLD_PREMIUM` and the country's.
        international: E.164 prefixes inside the tenant's country code that count as international;
            None: the NANP Caribbean area codes for country 1, none elsewhere.
        local: E.164 prefixes of local numbers (``"+1555"``); none by default (everything is national).
        classes: The classes of an extension that may call out and names none (``may_call_out = true``).
    """

    country: str = "1"
    trunk_prefix: str | None = None
    international_prefix: str = ""
    emergency: tuple[str, ...] | None = None
    premium: tuple[str, ...] | None = None
    international: tuple[str, ...] | None = None
    local: tuple[str, ...] = ()
    classes: tuple[str, ...] = DEFAULT_CLASSES
    _emergency: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())
    emergency_numbers: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())

    def __post_init__(self) -> None:
        if not _COUNTRY.fullmatch(self.country):
            raise ValueError(f"country code {self.country!r} is not 1-3 digits")
        unknown = [c for c in self.classes if c not in CLASSES]
        if unknown:
            raise ValueError(f"unknown outbound class {unknown[0]!r}")
        if self.emergency is None:
            numbers = DEFAULT_EMERGENCY + EMERGENCY_BY_COUNTRY.get(self.country, ())
        else:
            numbers = tuple(self.emergency)
        forms: set[str] = set()
        for number in numbers:
            digits = number.lstrip("+")
            forms.update((digits, self.country + digits))  # 911, 1911 (and +1911: the '+' is dropped)
        object.__setattr__(self, "_emergency", frozenset(forms))
        object.__setattr__(self, "emergency_numbers", frozenset(n.lstrip("+") for n in numbers))
        if self.premium is None:
            object.__setattr__(self, "premium", WORLD_PREMIUM + PREMIUM_BY_COUNTRY.get(self.country, ()))
        if self.international is None:
            object.__setattr__(self, "international", NANP_INTERNATIONAL if self.country == "1" else ())

    def is_emergency(self, number: str) -> bool:
        """Whether `number` (as sent to the trunk) is one of the tenant's emergency numbers."""
        return _clean(number).lstrip("+") in self._emergency


@dataclass(frozen=True, slots=True)
class Verdict:
    """The class of one number and whether the caller may call it.

    Attributes:
        number: The number as it is sent (bounded to 40 characters, for logs).
        e164: Its E.164 form, ``""`` when it has none.
        kind: Its class (one of `CLASSES`, or ``"invalid"``).
        allowed: Whether the caller's classes include it (always for emergency, never for invalid).
        rule: Why, for the log: which rule decided (``"class international not allowed"``).
    """

    number: str
    e164: str
    kind: str
    allowed: bool
    rule: str


def classify(number: str, rules: NumberRules) -> tuple[str, str]:
    """(class, E.164 form) of `number` as the trunk will receive it (module docstring for the order)."""
    cleaned = _clean(number)
    if rules.is_emergency(cleaned):
        digits = cleaned.lstrip("+")
        return "emergency", "+" + (rules.country + digits if digits in rules.emergency_numbers else digits)
    if not _NUMBER.fullmatch(cleaned):
        return "invalid", ""
    form = e164(cleaned, rules.country, rules.trunk_prefix, rules.international_prefix)
    if not form:
        return "invalid", ""
    if form.startswith(tuple(rules.premium or ())):
        return "premium", form
    if not form.startswith("+" + rules.country) or form.startswith(tuple(rules.international or ())):
        return "international", form
    if form.startswith(rules.local):
        return "local", form
    return "national", form


def allowed_classes(rules: NumberRules, classes: Iterable[str], may_call_out: bool) -> frozenset[str]:
    """The classes of a caller: its own `classes` when it names some, else the tenant's default when it
    may call out, else none; `ALWAYS` (internal, emergency) in every case."""
    own = frozenset(classes)
    if not own and may_call_out:
        own = frozenset(rules.classes)
    return own | ALWAYS


def judge(number: str, rules: NumberRules, classes: Sequence[str] | frozenset[str]) -> Verdict:
    """Whether a caller with `classes` (`allowed_classes`) may call `number` through a trunk."""
    kind, form = classify(number, rules)
    shown = number[:40]
    if kind == "emergency":
        return Verdict(shown, form, kind, True, "emergency number")
    if kind == "invalid":
        return Verdict(shown, form, kind, False, "not a phone number")
    if kind in classes:
        return Verdict(shown, form, kind, True, f"class {kind} allowed")
    return Verdict(shown, form, kind, False, f"class {kind} not allowed")
