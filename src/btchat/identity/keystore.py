"""The identity key file: who you are, kept on disk under a passphrase.

``<data_dir>/identity.key`` is a small JSON document. The public key sits in the clear
so ``btchat id`` works without unlocking anything; everything secret (identity seed,
device key, device id, message-database key, device certificate) is sealed with
XChaCha20-Poly1305 under a key stretched from the passphrase with Argon2id, all from
libsodium. The whole header is authenticated as associated data, so no field (the key
shown to the user, the KDF parameters, the flags) can be altered without detection.

The message-database key is random and stored sealed in the file, not derived from the
passphrase, so changing the passphrase does not strand the message history.

A user may opt out of the passphrase (``passphrase=None``); the file then says so and
holds the same secrets in the clear, protected only by its 0600 mode, and there is no
database key (the history is stored unencrypted as well).
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hmac
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nacl.pwhash
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
)
from nacl.exceptions import CryptoError

from btchat.errors import StorageError
from btchat.files import write_atomic
from btchat.identity.keys import CertificateError, DeviceCertificate, DeviceKey, Identity

__all__ = [
    "FILE_FORMAT",
    "FILE_VERSION",
    "KEY_FILE_NAME",
    "KdfStrength",
    "KeyStore",
    "KeyStoreError",
    "LoadedKeys",
    "NoIdentity",
    "PassphraseRequired",
    "WrongPassphrase",
    "read_passphrase",
]

KEY_FILE_NAME = "identity.key"
FILE_FORMAT = "btchat-identity"
FILE_VERSION = 1
KDF_NAME = "argon2id"
CIPHER_NAME = "xchacha20poly1305-ietf"
#: Prefix of the associated data, so the header's MAC can mean nothing else.
AAD_CONTEXT = b"btchat identity key file v1\x00"
#: HKDF-SHA256 info strings for keys derived from the Argon2id output.
INFO_ENCRYPTION = b"btchat identity key file v1: encryption key"
INFO_CHECK = b"btchat identity key file v1: passphrase check"

KdfStrength = Literal["moderate", "interactive", "min"]
_KDF_LIMITS: dict[str, tuple[int, int]] = {
    "moderate": (nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE),
    "interactive": (
        nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    ),
    # Only for tests: fast, and no protection worth the name.
    "min": (nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN),
}
# What we accept when reading a file: anything we might have written, nothing that
# would let a tampered file make us spin for hours or allocate absurd memory.
_OPS_RANGE = (nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE * 4)
_MEM_RANGE = (nacl.pwhash.argon2id.MEMLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE)

_SALT_SIZE = nacl.pwhash.argon2id.SALTBYTES
_NONCE_SIZE = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_CHECK_SIZE = 16
_SEED, _DEVICE_PRIVATE, _DEVICE_ID, _DB_KEY = 32, 32, 16, 32
_MAX_FILE_SIZE = 64 * 1024


class KeyStoreError(StorageError):
    """The key file cannot be created, read, or trusted."""


class NoIdentity(KeyStoreError):
    """There is no key file yet."""


class WrongPassphrase(KeyStoreError):
    """The passphrase does not unlock the key file."""


class PassphraseRequired(KeyStoreError):
    """The key file is encrypted and no passphrase was given."""


@dataclass(frozen=True)
class LoadedKeys:
    """Everything unlocked from the key file.

    ``db_key`` is the 32-byte message-database key, or None when the identity is stored
    without a passphrase. It is kept out of ``repr`` so it cannot leak into logs.
    """

    identity: Identity
    device: DeviceKey
    certificate: DeviceCertificate
    db_key: bytes | None = field(repr=False)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, name: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise KeyStoreError(f"key file field {name!r} is missing or not text")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KeyStoreError(f"key file field {name!r} is not valid base64") from None
    if size is not None and len(data) != size:
        raise KeyStoreError(f"key file field {name!r} has the wrong length")
    return data


def _passphrase_bytes(passphrase: str) -> bytes:
    """NFC first, so the same passphrase typed on different systems gives the same bytes."""
    if not isinstance(passphrase, str):
        raise TypeError("a passphrase is a str")
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _hkdf(kek: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(kek)


def _canonical_header(header: dict[str, Any]) -> bytes:
    """The associated data: every header field, in one canonical byte form."""
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return AAD_CONTEXT + text.encode("ascii")


def _pack(keys: LoadedKeys) -> bytes:
    """seed || device private || device id || [db key, when encrypted] || certificate."""
    parts = [keys.identity.seed, keys.device.private_bytes, keys.device.device_id]
    if keys.db_key is not None:
        parts.append(keys.db_key)
    parts.append(keys.certificate.encode())
    return b"".join(parts)


def _unpack(material: bytes, public_key: bytes, *, has_db_key: bool) -> LoadedKeys:
    fixed = _SEED + _DEVICE_PRIVATE + _DEVICE_ID + (_DB_KEY if has_db_key else 0)
    if len(material) <= fixed:
        raise KeyStoreError("key file secret part is truncated")
    seed = material[:_SEED]
    device_private = material[_SEED : _SEED + _DEVICE_PRIVATE]
    device_id = material[_SEED + _DEVICE_PRIVATE : _SEED + _DEVICE_PRIVATE + _DEVICE_ID]
    db_key = material[fixed - _DB_KEY : fixed] if has_db_key else None
    identity = Identity.from_seed(seed)
    device = DeviceKey.from_bytes(device_private, device_id)
    try:
        certificate = DeviceCertificate.decode(material[fixed:])
    except CertificateError as exc:
        raise KeyStoreError(f"key file holds a bad device certificate: {exc}") from None
    if identity.public_key != public_key:
        raise KeyStoreError("key file is inconsistent: its secret key does not match its ID")
    if (
        certificate.identity != public_key
        or certificate.device_key != device.public_key
        or certificate.device_id != device.device_id
    ):
        raise KeyStoreError("key file is inconsistent: the device certificate does not match")
    return LoadedKeys(identity, device, certificate, db_key)


class KeyStore:
    """The key file in one data directory."""

    def __init__(self, data_dir: Path, *, kdf_strength: KdfStrength = "moderate") -> None:
        if kdf_strength not in _KDF_LIMITS:
            raise ValueError(f"kdf_strength must be one of {', '.join(_KDF_LIMITS)}")
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / KEY_FILE_NAME
        self.kdf_strength: KdfStrength = kdf_strength

    # ------------------------------------------------------------------ reading

    def exists(self) -> bool:
        return self.path.exists()

    def _read(self) -> dict[str, Any]:
        try:
            with self.path.open("rb") as f:
                raw = f.read(_MAX_FILE_SIZE + 1)
        except FileNotFoundError:
            raise NoIdentity(f"no identity in {self.data_dir}: run `btchat init`") from None
        except OSError as exc:
            raise KeyStoreError(f"cannot read {self.path}: {exc.strerror}") from None
        if len(raw) > _MAX_FILE_SIZE:
            raise KeyStoreError(f"{self.path} is too large to be a btchat key file")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise KeyStoreError(f"{self.path} is corrupt: not a JSON document") from None
        if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
            raise KeyStoreError(f"{self.path} is not a btchat identity key file")
        version = doc.get("version")
        if version != FILE_VERSION or isinstance(version, bool):
            raise KeyStoreError(
                f"{self.path} has key file version {version!r}; this btchat reads version "
                f"{FILE_VERSION} (is it newer than this program?)"
            )
        if not isinstance(doc.get("encrypted"), bool):
            raise KeyStoreError(f"{self.path} is corrupt: field 'encrypted' is missing")
        return doc

    @staticmethod
    def _public_key_of(doc: dict[str, Any]) -> bytes:
        value = doc.get("public_key")
        if not isinstance(value, str) or len(value) != 64:
            raise KeyStoreError("key file field 'public_key' is missing or malformed")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise KeyStoreError("key file field 'public_key' is not hex") from None

    def is_encrypted(self) -> bool:
        """Whether loading needs a passphrase; raises NoIdentity if there is no file."""
        return bool(self._read()["encrypted"])

    def public_key(self) -> bytes:
        """The identity's public key, read without the passphrase."""
        return self._public_key_of(self._read())

    def load(self, passphrase: str | None) -> LoadedKeys:
        """Unlock the key file. A passphrase given for an unencrypted file is ignored."""
        doc = self._read()
        public_key = self._public_key_of(doc)
        if not doc["encrypted"]:
            if set(doc) != {"format", "version", "public_key", "encrypted", "secret"}:
                raise KeyStoreError("key file has unexpected fields for an unencrypted identity")
            material = _unb64(doc.get("secret"), "secret")
            return _unpack(material, public_key, has_db_key=False)
        if passphrase is None:
            raise PassphraseRequired(
                "this identity is protected by a passphrase: give it with --passphrase-file, "
                "the BTCHAT_PASSPHRASE environment variable, or at the prompt"
            )
        header = {k: v for k, v in doc.items() if k != "ciphertext"}
        ciphertext = _unb64(doc.get("ciphertext"), "ciphertext")
        if header.get("cipher") != CIPHER_NAME:
            raise KeyStoreError(f"key file uses an unknown cipher {header.get('cipher')!r}")
        nonce = _unb64(header.get("nonce"), "nonce", _NONCE_SIZE)
        check = _unb64(header.get("check"), "check", _CHECK_SIZE)
        kdf = header.get("kdf")
        if not isinstance(kdf, dict) or kdf.get("algorithm") != KDF_NAME:
            raise KeyStoreError("key file uses an unknown key derivation function")
        salt = _unb64(kdf.get("salt"), "kdf.salt", _SALT_SIZE)
        ops, mem = kdf.get("opslimit"), kdf.get("memlimit")
        if not (
            isinstance(ops, int)
            and isinstance(mem, int)
            and not isinstance(ops, bool)
            and not isinstance(mem, bool)
            and _OPS_RANGE[0] <= ops <= _OPS_RANGE[1]
            and _MEM_RANGE[0] <= mem <= _MEM_RANGE[1]
        ):
            raise KeyStoreError("key file has out-of-range key derivation parameters")
        kek = nacl.pwhash.argon2id.kdf(32, _passphrase_bytes(passphrase), salt, ops, mem)
        if not hmac.compare_digest(_hkdf(kek, INFO_CHECK, _CHECK_SIZE), check):
            raise WrongPassphrase("wrong passphrase")
        try:
            material = crypto_aead_xchacha20poly1305_ietf_decrypt(
                ciphertext, _canonical_header(header), nonce, _hkdf(kek, INFO_ENCRYPTION, 32)
            )
        except CryptoError:
            raise KeyStoreError(
                f"{self.path} is corrupt or has been tampered with: it does not authenticate"
            ) from None
        return _unpack(material, public_key, has_db_key=True)

    # ------------------------------------------------------------------ writing

    def _document(self, keys: LoadedKeys, passphrase: str | None) -> dict[str, Any]:
        base: dict[str, Any] = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "public_key": keys.identity.public_key.hex(),
            "encrypted": passphrase is not None,
        }
        if passphrase is None:
            return {**base, "secret": _b64(_pack(keys))}
        if not passphrase:
            raise KeyStoreError("empty passphrase: use no passphrase at all instead")
        ops, mem = _KDF_LIMITS[self.kdf_strength]
        salt = os.urandom(_SALT_SIZE)
        nonce = os.urandom(_NONCE_SIZE)
        kek = nacl.pwhash.argon2id.kdf(32, _passphrase_bytes(passphrase), salt, ops, mem)
        header = {
            **base,
            "kdf": {"algorithm": KDF_NAME, "opslimit": ops, "memlimit": mem, "salt": _b64(salt)},
            "cipher": CIPHER_NAME,
            "nonce": _b64(nonce),
            "check": _b64(_hkdf(kek, INFO_CHECK, _CHECK_SIZE)),
        }
        ciphertext = crypto_aead_xchacha20poly1305_ietf_encrypt(
            _pack(keys), _canonical_header(header), nonce, _hkdf(kek, INFO_ENCRYPTION, 32)
        )
        return {**header, "ciphertext": _b64(ciphertext)}

    def _write(self, doc: dict[str, Any], *, replace: bool) -> None:
        """Write atomically (temp file, fsync, rename) with mode 0600 from the start."""
        data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("ascii")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise KeyStoreError(f"cannot write to {self.data_dir}: {exc.strerror}") from None
        try:
            write_atomic(self.path, data, replace=replace)
        except FileExistsError:
            raise KeyStoreError(
                f"an identity already exists in {self.data_dir}; refusing to overwrite it"
            ) from None
        except OSError as exc:
            raise KeyStoreError(f"cannot write {self.path}: {exc.strerror}") from None

    def create(self, passphrase: str | None, *, now: int) -> LoadedKeys:
        """Generate a new identity and device, certify the device, and save them.

        ``passphrase=None`` stores the keys unencrypted. Refuses to overwrite.
        """
        if self.exists():
            raise KeyStoreError(
                f"an identity already exists in {self.data_dir}; refusing to overwrite it"
            )
        identity = Identity.generate()
        device = DeviceKey.generate()
        keys = LoadedKeys(
            identity, device, identity.certify(device, now), self.new_db_key(passphrase)
        )
        return self.save_new(keys, passphrase)

    @staticmethod
    def new_db_key(passphrase: str | None) -> bytes | None:
        """A database key for a new identity: one when it has a passphrase, else none."""
        return os.urandom(_DB_KEY) if passphrase is not None else None

    def save_new(self, keys: LoadedKeys, passphrase: str | None) -> LoadedKeys:
        """Write a new key file for ``keys`` (a linked device has its identity from the
        old one and its own device key); refuses to overwrite. ``keys.db_key`` must be
        set exactly when there is a passphrase (:meth:`new_db_key`)."""
        if (keys.db_key is None) != (passphrase is None):
            raise KeyStoreError("a database key goes with a passphrase, and only then")
        _unpack(_pack(keys), keys.identity.public_key, has_db_key=keys.db_key is not None)
        self._write(self._document(keys, passphrase), replace=False)
        return keys

    def change_passphrase(self, old: str | None, new: str | None) -> LoadedKeys:
        """Re-seal the key file under a new passphrase (None: store unencrypted).

        Between two passphrases the database key is kept, so the history stays readable.
        Adding a passphrase to an unencrypted identity creates a database key, and removing
        it drops the key: in those two cases the caller must re-key the message database
        from the old ``db_key`` to the returned one.
        """
        keys = self.load(old)
        if new is None:
            db_key = None
        else:
            db_key = keys.db_key if keys.db_key is not None else os.urandom(_DB_KEY)
        keys = LoadedKeys(keys.identity, keys.device, keys.certificate, db_key)
        self._write(self._document(keys, new), replace=True)
        return keys


def read_passphrase(
    env_var: str = "BTCHAT_PASSPHRASE", file: Path | None = None, prompt: bool = False
) -> str | None:
    """The passphrase from a file, else the environment, else a prompt if allowed.

    A file wins over the variable (its one trailing newline is not part of the
    passphrase); an empty variable counts as unset. Returns None if there is none.
    """
    if file is not None:
        try:
            text = Path(file).read_bytes().decode("utf-8")
        except OSError as exc:
            raise KeyStoreError(f"cannot read passphrase file {file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise KeyStoreError(f"passphrase file {file} is not UTF-8 text") from None
        if text.endswith("\n"):
            text = text[:-1]
            if text.endswith("\r"):
                text = text[:-1]
        return text
    value = os.environ.get(env_var)
    if value:
        return value
    if prompt:
        return getpass.getpass("Passphrase: ")
    return None
