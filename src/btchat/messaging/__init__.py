"""Messages between people: signed envelopes (``envelope``) and their local store (``store``)."""
