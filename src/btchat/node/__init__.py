"""The messenger daemon: composes DHT, rendezvous, sessions, storage and the API."""
