"""Do-not-disturb and call forwarding set by phone: the `feature` action and what the dialplan sees of it.

The codes live in the dialplan templates (docs/features.md; the demo maps `*78`/`*79` to DND on/off, `*72`
+ number / `*73` to forward-all on/off, `*90`/`*91` forward on busy, `*52`/`*53` forward on no answer):

    feature dnd on                      feature forward_all "1003"          feature forward_all off

`feature` acts on the CALLER's own extension (known by digest authentication; a call from a trunk or a
trusted peer without an extension gets "failed"), writes the new settings durably through an
`IFeatureStore` (`pbx.store`), answers, and speaks a confirmation ("Do not disturb activated", "Call
forwarding activated: 1 0 0 3") unless `prompt=no`. Forwarding to the extension itself, or to a trunk or
SIP URI target by an extension that may not call out (a forwarding must not reach what its owner could not
dial), is refused (the `invalid` prompt, result "invalid"). Its result is "on", "off", "invalid" or
"failed".

`PhoneFeatures` keeps every extension's settings in memory (loaded once at start-up with `load`) so that a
render never waits for a disk: `overrides(tenant, extension)` is what the B2BUA lays over the configured
`ExtensionInfo` of the dialplan context (`ext.dnd`, `ext.forward_all` ...). A forwarding set by phone
replaces the configured one; turned off by phone, it is "" even when the config names a target.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pbx.apps.base import AppCall
from pbx.apps.ivr import IvrApps
from pbx.apps.voicemail.speech import spoken_digits
from pbx.dialplan import Action
from pbx.store import ExtensionFeatures, IFeatureStore

__all__ = ["FEATURES", "PROMPTS", "PhoneFeatures"]

FEATURES = ("dnd", "forward_all", "forward_busy", "forward_noanswer")
"""What `feature NAME ...` may change."""

PROMPTS: dict[str, tuple[str, str]] = {
    "dnd": ("dnd-on", "dnd-off"),
    "forward_all": ("forward-all-on", "forward-off"),
    "forward_busy": ("forward-busy-on", "forward-off"),
    "forward_noanswer": ("forward-noanswer-on", "forward-off"),
}
"""The confirmation prompts (scripts/make_prompts) of each feature: (turned on, turned off)."""


def _spoken_target(target: str) -> list[str]:
    """A forwarding target read back digit by digit (a trunk target: its number)."""
    return spoken_digits(target.rpartition("/")[2] if target.startswith("trunk:") else target)


class PhoneFeatures:
    """Every extension's DND and forwarding set by phone, in memory and in the store; the `feature` app.

    Args:
        store: where the settings are kept (`IFeatureStore`).
        clock: time source (the settings' `updated_at`).
        ivr: the media applications (answering, prompts).
    """

    _log = Logger()

    def __init__(self, store: IFeatureStore, clock: IReactorTime, ivr: IvrApps | None = None) -> None:
        self.store = store
        self.clock = clock
        self.ivr = ivr
        self._settings: dict[tuple[str, str], ExtensionFeatures] = {}
        self._overrides: dict[tuple[str, str], dict[str, Any]] = {}
        self.watchers: list[Callable[[ExtensionFeatures], None]] = []

    def load(self) -> Deferred[int]:
        """Read every extension's settings from the store (at start-up); fires with how many there are."""

        def loaded(rows: list[ExtensionFeatures]) -> int:
            for row in rows:
                self._remember(row)
            return len(rows)

        return self.store.all_features().addCallback(loaded)

    def register(self, apps: MutableMapping[str, Any]) -> None:
        """Plug `feature` into a B2BUA's `apps` table."""
        apps["feature"] = self.feature

    # -- what the dialplan sees -----------------------------------------------------------------------------

    def settings(self, tenant: str, extension: str) -> ExtensionFeatures:
        """The extension's settings (all unset when its owner never pressed a code)."""
        found = self._settings.get((tenant, extension))
        return found if found is not None else ExtensionFeatures(tenant=tenant, extension=extension)

    def overrides(self, tenant: str, extension: str) -> dict[str, Any] | None:
        """The fields of the context's `ExtensionInfo` that the owner set by phone, or None."""
        return self._overrides.get((tenant, extension))

    def _remember(self, features: ExtensionFeatures) -> None:
        self._settings[features.key] = features
        fields: dict[str, Any] = {"dnd": features.dnd} if features.dnd else {}
        for name in FEATURES[1:]:
            value = getattr(features, name)
            if value is not None:
                fields[name] = value
        if fields:
            self._overrides[features.key] = fields
        else:
            self._overrides.pop(features.key, None)

    def change(self, tenant: str, extension: str, name: str, value: str | bool) -> Deferred[None]:
        """Set one feature of an extension (in memory at once, durably when the Deferred fires).

        Raises:
            ValueError: an unknown feature name.
        """
        if name not in FEATURES:
            raise ValueError(f"unknown feature {name!r}")
        fields: dict[str, Any] = {name: value, "updated_at": self.clock.seconds()}
        changed = replace(self.settings(tenant, extension), **fields)
        self._remember(changed)
        for watcher in tuple(self.watchers):
            watcher(changed)
        return self.store.save_features(changed)

    # -- the application ---------------------------------------------------------------------------------

    async def feature(self, call: AppCall, action: Action) -> str:
        """`feature NAME on|off|TARGET [prompt=no]`: "on", "off", "invalid" or "failed"."""
        caller = getattr(call, "caller", None)
        extension = getattr(caller, "extension", "") or ""
        name, value = action.args[0], action.args[1]
        if not extension:
            self._log.info("Call {id}: feature {name}: the caller has no extension", id=call.id, name=name)
            return "failed"
        speak = action.options.get("prompt") != "no"
        if name == "dnd":
            on = value == "on"
            setting: str | bool = on
        else:
            on = value != "off"
            setting = value if on else ""
            outside = value.startswith(("trunk:", "sip:", "sips:"))
            if on and (value == extension or (outside and not getattr(caller, "may_call_out", False))):
                self._log.info(
                    "Call {id}: {ext} may not forward to {target}", id=call.id, ext=extension, target=value
                )
                await self._say(call, ["invalid"], speak)
                return "invalid"
        try:
            await self.change(call.tenant, extension, name, setting)
        except Exception:
            self._log.failure("Call {id}: could not store feature {name}", id=call.id, name=name)
            return "failed"
        self._log.info(
            "Call {id}: {tenant}/{ext} set {name} {value}",
            id=call.id, tenant=call.tenant, ext=extension, name=name, value=value,
        )  # fmt: skip
        on_prompt, off_prompt = PROMPTS[name]
        prompts = [on_prompt] if on else [off_prompt]
        if on and name != "dnd":
            prompts += _spoken_target(value)
        await self._say(call, prompts, speak)
        return "on" if on else "off"

    async def _say(self, call: AppCall, prompts: Sequence[str], speak: bool) -> None:
        if not speak or self.ivr is None or call.ended:
            return
        endpoint = await self.ivr._media(call, Action("answer"))
        if endpoint is not None and not call.ended:
            await self.ivr._play(call, endpoint, prompts, barge_in=False)
