"""A long random search for inputs on which the C twin `pbx.sip._refusal` differs from the Python functions or
misbehaves, meant for a build under AddressSanitizer and UBSan (not run in CI: pytest does not collect it).

    gcc -shared -fPIC -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \\
        $(python3-config --includes) pbx/sip/_refusal.c -o /tmp/_refusal_asan.so
    LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \\
        .venv/bin/python -m tests.sip.fuzz_refusal /tmp/_refusal_asan.so --seconds 280

Each input is written to --last (a file) before it is tried, so a crash leaves it there. A mismatch is cut
down to its smallest form (bytes dropped while C and Python still differ) and printed; the exit status is 1.
Besides the datagrams of test_refusal_speedups.py, `refusal` gets spans that no scan makes (out of range,
reversed, negative, huge, of the wrong type): it may raise, never crash.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import sys
import time
from types import ModuleType


def load(path: str) -> ModuleType:
    """The extension built at `path`, as pbx.sip._refusal (so pbx.sip.refusal takes it too)."""
    spec = importlib.util.spec_from_file_location("pbx.sip._refusal", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["pbx.sip._refusal"] = module
    return module


def smallest(differs: object, data: bytes) -> bytes:
    """`data` with as many bytes dropped (runs, then single bytes) as keep `differs(data)` true."""
    assert callable(differs)
    size = max(1, len(data) // 2)
    while size >= 1:
        at = 0
        while at < len(data):
            cut = data[:at] + data[at + size :]
            if differs(cut):
                data = cut
            else:
                at += size
        size //= 2
    return data


def odd_spans(rng: random.Random, n: int) -> object:
    """A span as no scan makes it."""
    return rng.choice(
        [
            (rng.randint(-5, n + 5), rng.randint(-5, n + 5)),
            (n, n + 1),
            (-1, 0),
            (0, 2**63),
            (2**70, 0),
            (1.5, 2),
            [0, 1],
            (0,),
            (0, 1, 2),
            None,
        ]
    )


def odd_raw(rng: random.Random, raw: tuple[object, ...], n: int) -> object:
    """`raw` with one span, the Via tuple or the whole changed."""
    items = list(raw)
    which = rng.randrange(8)
    if which < 5:
        items[rng.choice([7, 8, 9, 10])] = odd_spans(rng, n)
    elif which == 5:
        vias = list(items[6])  # type: ignore[call-overload]
        vias[rng.randrange(len(vias))] = odd_spans(rng, n)
        items[6] = tuple(vias) if rng.random() < 0.8 else vias
    elif which == 6:
        items[6] = ()
    else:
        return rng.choice([tuple(items[:10]), None, items, (*items, 1)])
    return tuple(items)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", help="the built extension (.so)")
    parser.add_argument("--seconds", type=float, default=280)
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--last", default="/tmp/fuzz_refusal_last.bin")
    args = parser.parse_args()
    c = load(args.module)
    from . import test_refusal_speedups as t  # after the load: it imports pbx.sip.refusal

    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    print(f"seed {seed}, module {c.__file__}", flush=True)
    last = os.open(args.last, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    deadline = time.monotonic() + args.seconds
    taken = tried = 0
    pool: list[bytes] = []

    def usual(rng: random.Random) -> bytes:
        """A new usual request now and then, else one made before (making one is the slow part)."""
        if len(pool) < 5000 or rng.random() < 0.1:
            pool.append(t.usual_request(rng))
            return pool[-1]
        return rng.choice(pool)

    for tried in range(1, args.inputs + 1):
        data, methods = t.any_input(rng, usual)
        record = repr(methods).encode() + b"\n" + data
        os.ftruncate(last, 0)
        os.pwrite(last, record, 0)
        try:
            raw = t.agree(c, data, methods)
        except AssertionError:

            def differs(cut: bytes, methods: dict[bytes, str] = methods) -> bool:
                try:
                    t.agree(c, cut, methods)
                except AssertionError:
                    return True
                return False

            small = smallest(differs, data)
            print(f"MISMATCH after {tried} inputs, methods {methods!r}\n  smallest: {small!r}", flush=True)
            print(f"  python: {t.PYTHON.scan_new_request(small, methods)!r}", flush=True)
            print(f"  c:      {t.outcome(c.scan_new_request, small, methods)!r}", flush=True)
            return 1
        if raw is not None:
            taken += 1
            assert isinstance(raw, tuple)
            for _ in range(3):
                t.outcome(c.refusal, odd_raw(rng, raw, len(data)), data, t.STATUS, b"t", t.TAIL)
        if tried % 1024 == 0 and time.monotonic() > deadline:
            break
    os.close(last)
    print(f"{tried} inputs, {taken} taken, no difference, no crash", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
