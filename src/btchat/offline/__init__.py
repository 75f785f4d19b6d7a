"""Messages to contacts who are offline: DHT mailboxes, friend backup, Double Ratchet."""
