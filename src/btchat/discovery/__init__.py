"""Finding peers: contact rendezvous through the DHT (and LAN/tracker discovery)."""
