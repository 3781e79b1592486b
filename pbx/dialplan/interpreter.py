"""The one interpreter of the action language (docs/dialplan.md, "How actions run").

A live call (`pbx.b2bua.call.Call`) and `pbx dialplan simulate` run a call's actions through `run_actions`,
so a simulated call cannot drift from a real one. What differs between them is behind `ActionHost`: the live
host renders with the call's context and dials, answers and plays for real; the simulator's host assumes the
outcomes it is given and writes down what happens.

The interpreter owns the control flow and nothing else:

- actions run in order; one with `if=` runs only when the last unconditional dial's result is among its
  results (`RunState.should_run`);
- `dial` waits for the dial's result (a `declined` dial counts as `busy`); `cancelled` (the caller hung up)
  ends the run;
- `goto NAME` renders `NAME` and goes on from its first action; `ivr NAME` runs the ivr application (it
  answers) and then renders `ivr/NAME`; `menu` runs the menu application and renders the same template again
  with the digits collected; more than `MAX_RENDERS` renders is a `DialplanError` (a loop);
- `set` sets variables; `hangup` ends the run through the host;
- `voicemail` runs the voicemail application and ends the run (the caller left a message, or could not),
  except when the caller pressed 0 for the action's `operator=` target (the application returns
  `OPERATOR`): the interpreter then dials that target like an unconditional `dial` and, if nobody answers,
  goes on with the next action;
- every other action is an application of the host (`answer`, `play`, `record`, `progress`, `voicemail` ...).

The run stops as soon as the host reports the call ended (the caller hung up) or connected (a dial was
answered: the call is bridged and its actions are over). It knows nothing of SIP or media.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from pbx.dialplan.actions import OPERATOR, Action, DialplanError, RunState, template_for

MAX_RENDERS = 16
"""The most templates one call renders (``goto``, ``ivr``, menu re-renders) before it counts as a loop."""


class RenderLoopError(DialplanError):
    """More than `MAX_RENDERS` templates were rendered for one call (a goto loop?)."""


class ActionHost(Protocol):
    """What the interpreter asks of a call (live) or of the simulator."""

    @property
    def run_state(self) -> RunState:
        """The call's bookkeeping of dial results (one per call, across renders)."""

    @property
    def variables(self) -> dict[str, str]:
        """The call's variables (`set`), the context's `vars` on the next render."""

    @property
    def ended(self) -> bool:
        """The call is over (the caller hung up, or the host ended it): no more actions run."""

    @property
    def connected(self) -> bool:
        """A dial was answered and the call is bridged: no more actions run."""

    def starting(self, action: Action) -> None:
        """An action is about to run (its `if=` let it): for traces; the simulator writes it down."""

    def render(self, template: str, digits: str | None) -> list[Action]:
        """Render a template of the call's tenant with the call's context (`digits` for a menu's re-render;
        the context's `result` and `vars` are `run_state.result` and `variables`)."""

    def run_dial(self, action: Action) -> Awaitable[str]:
        """Run a `dial`; its result: one of `RESULTS`, "declined" or "cancelled"."""

    def run_app(self, action: Action) -> Awaitable[str]:
        """Run an application action (`answer`, `play`, `menu`, `ivr`, `record`, `voicemail` ...); its
        result (for `menu`: the digits collected)."""

    def run_hangup(self, action: Action) -> None:
        """Run `hangup [CODE]`: reject the call, or end it when it is answered."""


async def run_actions(host: ActionHost, template: str = "main") -> None:
    """Run the call's actions from `template` until they run out, the call ends or it is connected.

    Raises:
        DialplanError: a render failed or an action is not available; `RenderLoopError` when too many
            templates were rendered.
    """
    state = host.run_state
    actions = host.render(template, None)
    index = 0
    renders = 1

    def rendered(action: Action, name: str, digits: str | None) -> list[Action]:
        nonlocal renders
        renders += 1
        if renders > MAX_RENDERS:
            raise RenderLoopError("too many templates rendered (a loop?)", action.source, action.line)
        return host.render(name, digits)

    while index < len(actions) and not host.ended and not host.connected:
        action = actions[index]
        index += 1
        if not state.should_run(action):
            continue
        host.starting(action)
        name = action.name
        if name == "dial":
            result = await host.run_dial(action)
            if result == "cancelled" or host.ended:
                return
            state.dial_finished(action, "busy" if result == "declined" else result)
        elif name in ("goto", "ivr"):
            if name == "ivr":
                await host.run_app(action)
                if host.ended:
                    return
            template = template_for(action)
            actions, index = rendered(action, template, None), 0
        elif name == "menu":
            digits = await host.run_app(action)
            if host.ended or host.connected:
                return
            actions, index = rendered(action, template, digits), 0
        elif name == "set":
            host.variables.update(action.variables)
        elif name == "hangup":
            host.run_hangup(action)
            return
        elif name == "voicemail":
            outcome = await host.run_app(action)
            if outcome != OPERATOR or host.ended or "operator" not in action.options:
                return
            operator = Action("dial", (action.options["operator"],), {}, action.source, action.line)
            host.starting(operator)
            result = await host.run_dial(operator)
            if result == "cancelled" or host.ended:
                return
            state.dial_finished(operator, "busy" if result == "declined" else result)
        else:
            await host.run_app(action)
