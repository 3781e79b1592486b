"""CPU per relayed RTP packet through the transforms of `pbx.media.dtmf_interwork.RtpPath`, in-process.

What a bridged call costs on top of plain relaying when its two phones differ: PCMU -> PCMA conversion, a
telephone-event payload type rewrite, and in-band DTMF detection (a caller without telephone-event talking
to a callee with it), each on a dial tone, on loud noise (speech-like energy) and on silence. No sockets,
no reactor: the transform is called on prepared packets, so the figures are comparable on a busy machine.

    python bench/interwork_paths.py            # 2 s of audio x 10 repeats each
    python bench/interwork_paths.py --repeats 30

Prints us of CPU per packet (best of the repeats); one direction of a G.711 call is 50 packets a second.
"""

from __future__ import annotations

import argparse
import random
import struct
import time

from twisted.internet.task import Clock

from pbx.media.dtmf_interwork import LegFormats, RtpPath
from pbx.media.g711 import ulaw_encode
from pbx.media.rtp import RtpPacket
from pbx.media.tones import silence_pcm, tone_pcm

PCMU = ((0, "pcmu"),)
PATHS = {
    "transcode PCMU->PCMA": (LegFormats(PCMU, 101), LegFormats(((8, "pcma"),), 101)),
    "retype telephone-event": (LegFormats(PCMU, 101), LegFormats(PCMU, 96)),
    "in-band detection": (LegFormats(PCMU), LegFormats(PCMU, 101)),
}


def audio() -> dict[str, bytes]:
    rng = random.Random(1)
    noise = struct.pack("<16000h", *(rng.randint(-6000, 6000) for _ in range(16000)))
    return {"dial tone": tone_pcm("dial", 2.0), "noise": noise, "silence": silence_pcm(2000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    clock = Clock()
    print(f"{'path':<24} {'audio':<10} {'us/packet':>10}")
    for path_name, (source, target) in PATHS.items():
        for audio_name, pcm in audio().items():
            payload = ulaw_encode(pcm)
            packets = [
                RtpPacket(0, i, 160 * i, 5, payload[160 * i : 160 * i + 160]).to_bytes()
                for i in range(len(payload) // 160)
            ]
            best = float("inf")
            for _ in range(args.repeats):
                path = RtpPath(clock, source, target, lambda packet: None, lambda digit, ms: None)
                start = time.process_time()
                for packet in packets:
                    path(packet)
                best = min(best, (time.process_time() - start) / len(packets))
            print(f"{path_name:<24} {audio_name:<10} {best * 1e6:>10.1f}")


if __name__ == "__main__":
    main()
