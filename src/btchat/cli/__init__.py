"""The ``btchat`` command line: DHT tools and the messenger commands.

Every command prints a human-readable line by default and one JSON object with
``--json``; it exits 0 on success and 1 with a one-line error on stderr otherwise.
``main.py`` parses and dispatches, ``dht.py`` holds the DHT tools, ``chat.py`` the
messenger commands (which talk to the daemon through its local API), ``render.py``
the output, ``base.py`` what all of them share.
"""

from btchat.cli.main import main

__all__ = ["main"]
