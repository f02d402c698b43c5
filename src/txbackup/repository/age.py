"""The age v1 file format (https://age-encryption.org/v1), streaming both ways.

Every encrypted object of a repository is a standard age file, so ``age -d -i
KEY`` decrypts it by hand. pyrage (the age library for Python) encrypts and
decrypts whole buffers or *pulls* from a reader; the codec is push-based on the
writing side (targets write into it), so this module implements the small part
of the format the data path needs with the ``cryptography`` package: an X25519
recipient stanza, the header MAC, and the ChaCha20-Poly1305 STREAM payload in
64 KiB chunks. Memory stays bounded by one chunk either way. The tests check
compatibility both ways against pyrage and the ``age`` command.

Small secrets (the repository identity wrapped to each user key, passphrases
with scrypt) go through pyrage itself (``repository.crypto``).

Whatever is read is untrusted: a header is bounded, parsed strictly (canonical
base64, one X25519 stanza body of 32 bytes), its MAC checked before any payload
byte is returned, and every chunk authenticated before it is handed on; a
truncated stream fails at its end (the last chunk carries a flag). Every
failure is ``AgeError`` (a ``ValueError``): the codec names the object.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

MAGIC = b"age-encryption.org/v1\n"
CHUNK = 64 * 1024
TAG = 16
MAX_HEADER = 16 * 1024
"""A header larger than this is not one we wrote (ours is about 200 bytes)."""
_X25519_LABEL = b"age-encryption.org/v1/X25519"
_B64 = re.compile(rb"[A-Za-z0-9+/]*")


class AgeError(ValueError):
    """Not an age file this key opens, or one that was altered."""


class NoIdentityMatch(AgeError):
    """The file is intact as far as read, but is not encrypted to the given identity."""


# -- keys: bech32 (BIP 173), the encoding of age1... recipients and AGE-SECRET-KEY-1... identities --
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
RECIPIENT_HRP = "age"
IDENTITY_HRP = "age-secret-key-"


def _polymod(values: list[int]) -> int:
    generator = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= generator[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = bits = 0
    out = []
    maxv = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad and bits:
        out.append((acc << (to_bits - bits)) & maxv)
    elif not pad and (bits >= from_bits or (acc << (to_bits - bits)) & maxv):
        raise AgeError("bech32: bad padding")
    return out


def bech32_encode(hrp: str, data: bytes) -> str:
    values = _convert(data, 8, 5, True)
    polymod = _polymod(_hrp_expand(hrp) + values + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[v] for v in values + checksum)


def bech32_decode(text: str, hrp: str) -> bytes:
    """The 32-byte key in ``text`` (either all lower or all upper case) of prefix ``hrp``."""
    if text.lower() != text and text.upper() != text:
        raise AgeError("bech32: mixed case")
    text = text.lower()
    prefix, _, rest = text.rpartition("1")
    if prefix != hrp or len(rest) < 6 or any(c not in _CHARSET for c in rest):
        raise AgeError(f"not a {hrp.upper() if hrp != RECIPIENT_HRP else hrp}1... key")
    values = [_CHARSET.index(c) for c in rest]
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise AgeError("bech32: bad checksum")
    key = bytes(_convert(values[:-6], 5, 8, False))
    if len(key) != 32:
        raise AgeError(f"key of {len(key)} bytes, expected 32")
    return key


class Identity:
    """An X25519 identity (``AGE-SECRET-KEY-1...``) and its recipient (``age1...``)."""

    def __init__(self, secret: bytes) -> None:
        self._key = X25519PrivateKey.from_private_bytes(secret)
        self._secret = secret
        self.public = self._key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(32))

    @classmethod
    def parse(cls, text: str) -> Identity:
        return cls(bech32_decode(text.strip(), IDENTITY_HRP))

    def __str__(self) -> str:
        return bech32_encode(IDENTITY_HRP, self._secret).upper()

    def __repr__(self) -> str:  # never the secret, whatever prints it
        return f"Identity({self.recipient})"

    @property
    def recipient(self) -> str:
        return bech32_encode(RECIPIENT_HRP, self.public)

    def derive(self, label: bytes) -> bytes:
        """A 32-byte secret derived from this identity for ``label`` (HKDF-SHA256): keys
        of other purposes that whoever holds the identity can always re-derive."""
        return _hkdf(self._secret, b"", label)

    def unwrap(self, share: bytes, body: bytes) -> bytes | None:
        """The file key of an X25519 stanza, or None if it is not for this identity."""
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:  # a low-order share: the shared secret would be all zeros
            raise AgeError("header: X25519 share is a low-order point") from None
        wrap_key = _hkdf(shared, share + self.public, _X25519_LABEL)
        try:
            return ChaCha20Poly1305(wrap_key).decrypt(bytes(12), body, None)
        except InvalidTag:
            return None


def parse_recipient(text: str) -> bytes:
    """The X25519 public key of an ``age1...`` recipient (AgeError if it is not one)."""
    return bech32_decode(text.strip(), RECIPIENT_HRP)


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    """Strict, canonical, unpadded base64 (as the spec requires)."""
    if not _B64.fullmatch(text) or len(text) % 4 == 1:
        raise AgeError("header: malformed base64")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise AgeError("header: malformed base64") from None
    if _b64(data) != text:
        raise AgeError("header: non-canonical base64")
    return data


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


# -- writing ------------------------------------------------------------------------------------------
class Encryptor:
    """Push plaintext in with ``write``; the age file goes out to ``sink`` chunk by
    chunk; ``finish`` writes the last chunk (an age file's last chunk is flagged, so
    a chunk is held until the next byte, or ``finish``, says whether it is the last)."""

    def __init__(self, recipient: bytes, sink: Callable[[bytes], object]) -> None:
        self._sink = sink
        file_key = os.urandom(16)
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
        if shared == bytes(32):
            raise AgeError("recipient is a low-order point")
        wrap_key = _hkdf(shared, share + recipient, _X25519_LABEL)
        body = ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None)
        header = MAGIC + b"-> X25519 " + _b64(share) + b"\n" + _b64(body) + b"\n---"
        mac = hmac.digest(_hkdf(file_key, b"", b"header"), header, "sha256")
        nonce = os.urandom(16)
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._counter = 0
        self._buffer = bytearray()
        self._finished = False
        sink(header + b" " + _b64(mac) + b"\n" + nonce)

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data).cast("B")
        pos, end = 0, view.nbytes
        while pos < end:
            if len(self._buffer) == CHUNK:  # more follows: the held chunk is not the last
                self._seal(self._buffer, last=False)
                self._buffer.clear()
            if not self._buffer and end - pos > CHUNK:
                # a whole chunk with more after it: sealed where it lies, no copy
                self._seal(view[pos : pos + CHUNK], last=False)
                pos += CHUNK
                continue
            take = min(CHUNK - len(self._buffer), end - pos)
            self._buffer += view[pos : pos + take]
            pos += take
        return end

    def finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._seal(bytes(self._buffer), last=True)
            self._buffer.clear()

    def _seal(self, chunk: bytes | bytearray | memoryview, last: bool) -> None:
        self._sink(self._aead.encrypt(_nonce(self._counter, last), chunk, None))
        self._counter += 1


# -- reading ------------------------------------------------------------------------------------------
class Decryptor:
    """The plaintext of the age file read from ``read`` (a file's ``read``), decrypted
    with ``identity``. The header is read and checked on construction; ``read``
    returns authenticated plaintext only, b"" at the verified end."""

    def __init__(self, read: Callable[[int], bytes], identity: Identity) -> None:
        self._read = read
        self._pending = b""
        file_key = self._header(identity)
        nonce = self._exactly(16)
        if len(nonce) != 16:
            raise AgeError("truncated: no payload")
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._counter = 0
        self._next = self._exactly(CHUNK + TAG)
        self._out = b""
        self._done = False

    def _exactly(self, size: int) -> bytes:
        """``size`` bytes, fewer only at the end of the stream (no copy in the common
        case: nothing pending, and the source answers the whole request at once)."""
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
        else:
            data = self._read(size)
            if len(data) >= size or not data:
                return data
        parts = [data]
        have = len(data)
        while have < size:
            more = self._read(size - have)
            if not more:
                break
            parts.append(more)
            have += len(more)
        return b"".join(parts)

    def _line(self, header: bytearray) -> bytes:
        """One header line (without its newline), appended to ``header`` with it."""
        while True:
            end = self._pending.find(b"\n")
            if end >= 0:
                line = self._pending[:end]
                header += self._pending[: end + 1]
                self._pending = self._pending[end + 1 :]
                if len(header) > MAX_HEADER:
                    raise AgeError(f"header longer than {MAX_HEADER} bytes")
                return line
            if len(self._pending) > MAX_HEADER:
                raise AgeError(f"header longer than {MAX_HEADER} bytes")
            data = self._read(4096)
            if not data:
                raise AgeError("truncated header" if header or self._pending else "empty, not an age file")
            self._pending += data

    def _header(self, identity: Identity) -> bytes:
        header = bytearray()
        if self._line(header) + b"\n" != MAGIC:
            raise AgeError("not an age v1 file")
        file_key = None
        x25519 = 0
        line = self._line(header)
        while line.startswith(b"-> "):
            args = line[3:].split(b" ")
            if any(not a or any(c < 33 or c > 126 for c in a) for a in args):
                raise AgeError("header: malformed stanza")
            body_parts = []
            while True:  # body lines are 64 columns, the last one shorter (maybe empty)
                body_line = self._line(header)
                body_parts.append(body_line)
                if len(body_line) > 64:
                    raise AgeError("header: stanza line too long")
                if len(body_line) < 64:
                    break
            body = _unb64(b"".join(body_parts))
            if args[0] == b"X25519":
                x25519 += 1
                if len(args) != 2:
                    raise AgeError("header: malformed X25519 stanza")
                share = _unb64(args[1])
                if len(share) != 32 or len(body) != 32:
                    raise AgeError("header: malformed X25519 stanza")
                if file_key is None:
                    file_key = identity.unwrap(share, body)
            line = self._line(header)
        if not line.startswith(b"--- "):
            raise AgeError("header: malformed (no MAC line)")
        mac = _unb64(line[4:])
        if len(mac) != 32:
            raise AgeError("header: malformed MAC")
        if file_key is None:
            raise NoIdentityMatch(
                "not encrypted to this key" if x25519 else "not encrypted to an X25519 key"
            )
        signed = bytes(header[: len(header) - len(line) - 1]) + b"---"
        if not hmac.compare_digest(hmac.digest(_hkdf(file_key, b"", b"header"), signed, "sha256"), mac):
            raise AgeError("header MAC mismatch (tampered)")
        return file_key

    def read(self, size: int = -1) -> bytes:
        while not self._out and not self._done:
            self._open_next()
        if size < 0 or size >= len(self._out):
            data, self._out = self._out, b""
        else:
            data, self._out = self._out[:size], self._out[size:]
        return data

    def _open_next(self) -> None:
        chunk = self._next
        if len(chunk) < TAG:
            raise AgeError("truncated payload")
        following = self._exactly(CHUNK + TAG) if len(chunk) == CHUNK + TAG else b""
        last = not following
        try:
            plain = self._aead.decrypt(_nonce(self._counter, last), chunk, None)
        except InvalidTag:
            raise AgeError("payload chunk fails authentication (tampered or truncated)") from None
        if last and not plain and self._counter > 0:
            raise AgeError("payload: empty last chunk")
        self._counter += 1
        self._next = following
        self._out = plain
        self._done = last
