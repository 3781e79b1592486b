"""The operator's side of the PBX over HTTP (twisted.web): metrics, call traces, the console and its API."""
