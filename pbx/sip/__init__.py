"""The SIP protocol library: usable on its own (a softphone could be built on it), knows nothing of the PBX.

Layers inside, bottom up: `uri`, `headers`, `message`, `parser`, `validate`, `digest`/`auth`; `transport`
(UDP, TCP, TLS) and `tls`; `transaction`/`transaction_layer` (RFC 3261 17); `stack` (ties them together).
"""
