"""Finding peers: LAN (BEP 14), trackers, the DHT, rendezvous; each reports found addresses."""
