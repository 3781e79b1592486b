"""Subscribe to message-summary (RFC 3842) with Debian's liblinphone 5.1, the library linphonec is made of.

linphonec 5.1 has no command and no config key that subscribes to message-summary, but its library has the
generic `linphone_core_subscribe`; this script drives it through ctypes: it starts a core on the config given
(the account registers with its digest credentials), and once the account is registered it subscribes to
`message-summary` for RESOURCE. It prints, one line each, flushed:

    registered                      the account reached LinphoneRegistrationOk
    subscribed                      the SUBSCRIBE was sent
    state N                         the subscription's LinphoneSubscriptionState changed to N (4: active)
    notify EVENT JSON-BODY          a NOTIFY arrived (the body as a JSON string)

and runs for SECONDS (or until SIGTERM), then stops the core (which ends the subscription and unregisters).

Usage: python liblinphone_mwi.py CONFIG RESOURCE SECONDS
"""

from __future__ import annotations

import ctypes
import json
import signal
import sys
import time

REGISTRATION_OK = 2  # LinphoneRegistrationState
ENDED = (5, 6)  # LinphoneSubscriptionState: Terminated, Error


def main(config: str, resource: str, seconds: float) -> int:
    lib = ctypes.CDLL("liblinphone.so.10")
    p = ctypes.c_void_p
    for name, restype, argtypes in [
        ("linphone_factory_get", p, []),
        ("linphone_factory_create_core_3", p, [p, ctypes.c_char_p, ctypes.c_char_p, p]),
        ("linphone_factory_create_core_cbs", p, [p]),
        ("linphone_core_cbs_set_notify_received", None, [p, p]),
        ("linphone_core_cbs_set_subscription_state_changed", None, [p, p]),
        ("linphone_core_add_callbacks", None, [p, p]),
        ("linphone_core_start", ctypes.c_int, [p]),
        ("linphone_core_iterate", None, [p]),
        ("linphone_core_stop", None, [p]),
        ("linphone_core_unref", None, [p]),
        ("linphone_core_get_default_account", p, [p]),
        ("linphone_account_get_state", ctypes.c_int, [p]),
        ("linphone_core_create_address", p, [p, ctypes.c_char_p]),
        ("linphone_address_unref", None, [p]),
        ("linphone_core_subscribe", p, [p, p, ctypes.c_char_p, ctypes.c_int, p]),
        ("linphone_content_get_utf8_text", ctypes.c_char_p, [p]),
        ("linphone_event_terminate", None, [p]),
        ("linphone_event_get_subscription_state", ctypes.c_int, [p]),
    ]:
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes

    def say(line: str) -> None:
        print(line, flush=True)

    notify_type = ctypes.CFUNCTYPE(None, p, p, ctypes.c_char_p, p)
    state_type = ctypes.CFUNCTYPE(None, p, p, ctypes.c_int)

    def on_notify(core: int, event: int, name: bytes | None, body: int | None) -> None:
        text = lib.linphone_content_get_utf8_text(body) if body else None
        say(f"notify {(name or b'').decode()} {json.dumps((text or b'').decode('utf-8', 'replace'))}")

    def on_state(core: int, event: int, state: int) -> None:
        say(f"state {state}")

    notify_cb, state_cb = notify_type(on_notify), state_type(on_state)  # kept alive until the end
    factory = lib.linphone_factory_get()
    core = lib.linphone_factory_create_core_3(factory, config.encode(), None, None)
    if not core:
        say("error: no core")
        return 1
    cbs = lib.linphone_factory_create_core_cbs(factory)
    lib.linphone_core_cbs_set_notify_received(cbs, ctypes.cast(notify_cb, p))
    lib.linphone_core_cbs_set_subscription_state_changed(cbs, ctypes.cast(state_cb, p))
    lib.linphone_core_add_callbacks(core, cbs)
    lib.linphone_core_start(core)

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    registered = False
    subscription = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stopping:
        lib.linphone_core_iterate(core)
        account = lib.linphone_core_get_default_account(core)
        if not registered and account and lib.linphone_account_get_state(account) == REGISTRATION_OK:
            registered = True
            say("registered")
        if registered and subscription is None:
            address = lib.linphone_core_create_address(core, resource.encode())
            subscription = lib.linphone_core_subscribe(core, address, b"message-summary", 600, None)
            lib.linphone_address_unref(address)
            say("subscribed")
        time.sleep(0.02)  # liblinphone is polled: iterate about 50 times a second
    if subscription:  # the core's stop does not end it: unsubscribe (Expires: 0) and wait for the end
        lib.linphone_event_terminate(subscription)
        deadline = time.monotonic() + 5
        while (
            time.monotonic() < deadline
            and lib.linphone_event_get_subscription_state(subscription) not in ENDED
        ):
            lib.linphone_core_iterate(core)
            time.sleep(0.02)
    lib.linphone_core_stop(core)
    lib.linphone_core_unref(core)
    say("stopped")
    del notify_cb, state_cb
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
