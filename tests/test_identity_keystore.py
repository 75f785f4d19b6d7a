"""The identity key file: creation, unlocking, tamper detection, passphrase handling."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from btchat.identity.keystore import (
    KeyStore,
    KeyStoreError,
    LoadedKeys,
    NoIdentity,
    PassphraseRequired,
    WrongPassphrase,
    read_passphrase,
)

NOW = 1_700_000_000


def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "data" / "sub", kdf_strength="min")


def doc_of(ks: KeyStore) -> dict[str, object]:
    return json.loads(ks.path.read_text())


def write_doc(ks: KeyStore, doc: dict[str, object]) -> None:
    ks.path.write_text(json.dumps(doc))


def same_keys(a: LoadedKeys, b: LoadedKeys) -> bool:
    return (
        a.identity.seed == b.identity.seed
        and a.device.private_bytes == b.device.private_bytes
        and a.device.device_id == b.device.device_id
        and a.certificate == b.certificate
        and a.db_key == b.db_key
    )


def test_roundtrip_encrypted(tmp_path: Path) -> None:
    ks = store(tmp_path)
    assert not ks.exists()
    created = ks.create("correct horse", now=NOW)
    assert ks.exists() and ks.is_encrypted()
    assert created.certificate.verify()
    assert created.certificate.created == NOW
    assert created.certificate.identity == created.identity.public_key
    assert created.db_key is not None and len(created.db_key) == 32
    loaded = KeyStore(ks.data_dir, kdf_strength="min").load("correct horse")
    assert same_keys(created, loaded)
    assert "db_key" not in repr(loaded)


def test_file_mode_and_no_secrets_in_clear(tmp_path: Path) -> None:
    ks = store(tmp_path)
    keys = ks.create("pw", now=NOW)
    assert stat.S_IMODE(ks.path.stat().st_mode) == 0o600
    raw = ks.path.read_bytes()
    for secret in (keys.identity.seed, keys.device.private_bytes, keys.db_key):
        assert secret is not None
        assert secret.hex().encode() not in raw
        assert base64.b64encode(secret) not in raw
    assert [p.name for p in ks.data_dir.iterdir()] == ["identity.key"]


def test_public_key_without_passphrase(tmp_path: Path) -> None:
    ks = store(tmp_path)
    keys = ks.create("pw", now=NOW)
    assert ks.public_key() == keys.identity.public_key


def test_missing(tmp_path: Path) -> None:
    ks = store(tmp_path)
    for call in (ks.public_key, ks.is_encrypted, lambda: ks.load("pw")):
        with pytest.raises(NoIdentity, match=r"no identity in .*run `btchat init`"):
            call()


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    ks = store(tmp_path)
    ks.create(None, now=NOW)
    before = ks.path.read_bytes()
    with pytest.raises(KeyStoreError, match="already exists"):
        ks.create("pw", now=NOW)
    assert ks.path.read_bytes() == before


def test_wrong_passphrase(tmp_path: Path) -> None:
    ks = store(tmp_path)
    ks.create("pw", now=NOW)
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        ks.load("pW")


def test_passphrase_required(tmp_path: Path) -> None:
    ks = store(tmp_path)
    ks.create("pw", now=NOW)
    with pytest.raises(PassphraseRequired, match="protected by a passphrase"):
        ks.load(None)


def test_passphrase_unicode_normalised(tmp_path: Path) -> None:
    ks = store(tmp_path)
    ks.create("caf\u00e9", now=NOW)  # precomposed
    ks.load("cafe\u0301")  # decomposed: same passphrase to a person


def test_tampered_ciphertext(tmp_path: Path) -> None:
    ks = store(tmp_path)
    ks.create("pw", now=NOW)
    doc = doc_of(ks)
    ct = bytearray(base64.b64decode(str(doc["ciphertext"])))
    ct[10] ^= 1
    doc["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    write_doc(ks, doc)
    with pytest.raises(KeyStoreError, match="tampered") as info:
        ks.load("pw")
    assert not isinstance(info.value, WrongPassphrase)


@pytest.mark.parametrize("field", ["public_key", "nonce", "extra"])
def test_tampered_header(tmp_path: Path, field: str) -> None:
    ks = store(tmp_path)
    ks.create("pw", now=NOW)
    other = KeyStore(tmp_path / "other", kdf_strength="min")
    other.create(None, now=NOW)
    doc = doc_of(ks)
    if field == "public_key":
        doc["public_key"] = other.public_key().hex()
    elif field == "nonce":
        doc["nonce"] = base64.b64encode(os.urandom(24)).decode()
    else:
        doc["extra"] = 1
    write_doc(ks, doc)
    with pytest.raises(KeyStoreError, match="tampered") as info:
        ks.load("pw")
    assert not isinstance(info.value, WrongPassphrase)


@pytest.mark.parametrize(
    "path",
    [
        ("format",),
        ("version",),
        ("encrypted",),
        ("public_key",),
        ("cipher",),
        ("nonce",),
        ("check",),
        ("kdf", "algorithm"),
        ("kdf", "salt"),
        ("kdf", "opslimit"),
        ("kdf", "memlimit"),
    ],
)
def test_every_header_field_is_protected(tmp_path: Path, path: tuple[str, ...]) -> None:
    """Changing any one header field makes the file refuse to load, whatever the field."""
    ks = store(tmp_path)
    ks.create("pw", now=NOW)
    doc = doc_of(ks)
    parent: dict[str, object] = doc
    for key in path[:-1]:
        parent = parent[key]  # type: ignore[assignment]
    name = path[-1]
    value = parent[name]
    if isinstance(value, bool):
        parent[name] = not value
    elif isinstance(value, int):
        parent[name] = value + 1
    elif name == "public_key":
        parent[name] = ("01" if str(value)[:2] == "00" else "00") + str(value)[2:]
    elif name in ("nonce", "check", "salt"):
        raw = base64.b64decode(str(value))
        parent[name] = base64.b64encode(bytes([raw[0] ^ 1]) + raw[1:]).decode()
    else:
        parent[name] = str(value) + "x"
    write_doc(ks, doc)
    with pytest.raises(KeyStoreError):
        ks.load("pw")


def test_tampered_kdf_params_rejected(tmp_path: Path) -> None:
    ks = store(tmp_path)
    ks.create("pw", now=NOW)
    doc = doc_of(ks)
    kdf = dict(doc["kdf"])  # type: ignore[call-overload]
    kdf["opslimit"] = kdf["opslimit"] + 1
    doc["kdf"] = kdf
    write_doc(ks, doc)
    with pytest.raises(KeyStoreError):
        ks.load("pw")
    kdf["memlimit"] = 1 << 40
    write_doc(ks, doc)
    with pytest.raises(KeyStoreError, match="out-of-range"):
        ks.load("pw")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a JSON document"),
        (b"\xff\xfe", "not a JSON document"),
        (b"[]", "not a btchat identity key file"),
        (b'{"format": "other"}', "not a btchat identity key file"),
        (b'{"format": "btchat-identity", "version": 99}', "version 99"),
        (b'{"format": "btchat-identity", "version": 1}', "encrypted"),
        (b" " * 70000, "too large"),
    ],
)
def test_corrupt_file(tmp_path: Path, content: bytes, message: str) -> None:
    ks = store(tmp_path)
    ks.data_dir.mkdir(parents=True)
    ks.path.write_bytes(content)
    with pytest.raises(KeyStoreError, match=message):
        ks.load("pw")


def test_bad_field_values(tmp_path: Path) -> None:
    ks = store(tmp_path)
    ks.create("pw", now=NOW)
    good = doc_of(ks)
    for key, value, message in [
        ("public_key", "zz", "public_key"),
        ("nonce", "!!", "nonce"),
        ("nonce", base64.b64encode(b"short").decode(), "wrong length"),
        ("cipher", "rot13", "unknown cipher"),
        ("kdf", {"algorithm": "scrypt"}, "unknown key derivation"),
    ]:
        write_doc(ks, {**good, key: value})
        with pytest.raises(KeyStoreError, match=message):
            ks.load("pw")


def test_unencrypted(tmp_path: Path) -> None:
    ks = store(tmp_path)
    created = ks.create(None, now=NOW)
    assert created.db_key is None
    assert not ks.is_encrypted()
    assert doc_of(ks)["encrypted"] is False
    assert stat.S_IMODE(ks.path.stat().st_mode) == 0o600
    assert same_keys(created, ks.load(None))
    assert same_keys(created, ks.load("ignored"))


def test_unencrypted_inconsistent_secret_rejected(tmp_path: Path) -> None:
    ks = store(tmp_path)
    ks.create(None, now=NOW)
    other = KeyStore(tmp_path / "o", kdf_strength="min")
    other.create(None, now=NOW)
    doc = doc_of(ks)
    doc["secret"] = doc_of(other)["secret"]
    write_doc(ks, doc)
    with pytest.raises(KeyStoreError, match="does not match its ID"):
        ks.load(None)
    doc["secret"] = base64.b64encode(b"\x00" * 40).decode()
    write_doc(ks, doc)
    with pytest.raises(KeyStoreError, match="truncated"):
        ks.load(None)


def test_db_key_stable_and_per_store(tmp_path: Path) -> None:
    a = store(tmp_path)
    b = KeyStore(tmp_path / "b", kdf_strength="min")
    ka = a.create("one", now=NOW)
    kb = b.create("two", now=NOW)
    assert a.load("one").db_key == ka.db_key == a.load("one").db_key
    assert kb.db_key != ka.db_key


def test_change_passphrase_keeps_everything(tmp_path: Path) -> None:
    ks = store(tmp_path)
    created = ks.create("old", now=NOW)
    changed = ks.change_passphrase("old", "new")
    assert same_keys(created, changed)
    with pytest.raises(WrongPassphrase):
        ks.load("old")
    assert same_keys(created, ks.load("new"))
    assert stat.S_IMODE(ks.path.stat().st_mode) == 0o600
    with pytest.raises(WrongPassphrase):
        ks.change_passphrase("old", "other")


def test_change_passphrase_between_modes(tmp_path: Path) -> None:
    ks = store(tmp_path)
    created = ks.create(None, now=NOW)
    protected = ks.change_passphrase(None, "pw")
    assert protected.db_key is not None
    assert protected.identity.seed == created.identity.seed
    assert ks.is_encrypted()
    assert ks.load("pw").db_key == protected.db_key
    plain = ks.change_passphrase("pw", None)
    assert plain.db_key is None and not ks.is_encrypted()
    assert same_keys(plain, ks.load(None))


def test_empty_passphrase_refused(tmp_path: Path) -> None:
    ks = store(tmp_path)
    with pytest.raises(KeyStoreError, match="empty passphrase"):
        ks.create("", now=NOW)
    assert not ks.exists()


def test_bad_kdf_strength(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kdf_strength"):
        KeyStore(tmp_path, kdf_strength="weak")  # type: ignore[arg-type]


def test_read_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BTCHAT_PASSPHRASE", raising=False)
    assert read_passphrase() is None
    monkeypatch.setenv("BTCHAT_PASSPHRASE", "from env")
    assert read_passphrase() == "from env"
    assert read_passphrase(env_var="OTHER_UNSET_VAR_XYZ") is None
    f = tmp_path / "pass"
    f.write_bytes(b"from file\n")
    assert read_passphrase(file=f) == "from file"
    f.write_bytes(b"two newlines\n\n")
    assert read_passphrase(file=f) == "two newlines\n"
    f.write_bytes(b"crlf\r\n")
    assert read_passphrase(file=f) == "crlf"
    f.write_bytes(b" spaces kept ")
    assert read_passphrase(file=f) == " spaces kept "
    with pytest.raises(KeyStoreError, match="cannot read passphrase file"):
        read_passphrase(file=tmp_path / "missing")
    monkeypatch.setenv("BTCHAT_PASSPHRASE", "")
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "typed")
    assert read_passphrase() is None
    assert read_passphrase(prompt=True) == "typed"
