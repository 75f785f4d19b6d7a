"""The stream layer: what a session and a channel link speak after their handshakes.

``core`` is the sans-I/O :class:`~btchat.stream.core.SecureStream` (length framing,
typed frames, keepalive/idle timers, rekey, close, backpressure and multiplexed
substreams); ``frames`` the wire dialects and substream frame layout; ``scheduler`` the
output scheduler that keeps chat ahead of bulk; ``events`` what the core reports;
``noise`` the Noise wrapper both handshakes drive. The handshakes themselves live in
:mod:`btchat.session` and :mod:`btchat.channels.link`; the one asyncio pump for any
byte stream is :mod:`btchat.net.pump`.
"""
