"""btchat: a serverless peer-to-peer messenger on the BitTorrent Mainline DHT."""

__version__ = "0.1.0"
