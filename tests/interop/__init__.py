"""Interoperability tests against real libtorrent DHT nodes on loopback."""
