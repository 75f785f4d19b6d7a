"""A fixed contact book for benchmarks that run peerings by hand (the node's
``discovery.rendezvous.Directory``: whom to look for, and their device certificates)."""

from __future__ import annotations

from dataclasses import dataclass, field

from btchat.identity.keys import DeviceCertificate


@dataclass
class Book:
    contacts: list[bytes]
    certs: dict[bytes, list[DeviceCertificate]] = field(default_factory=dict)

    def reachable(self) -> list[bytes]:
        return list(self.contacts)

    def certs_of(self, contact: bytes) -> list[DeviceCertificate]:
        return list(self.certs.get(contact, []))

    def save_certs(self, contact: bytes, certs: list[DeviceCertificate]) -> None:
        self.certs[contact] = list(certs)
