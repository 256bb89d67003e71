"""AES-256-CBC with PKCS#7 padding, as WeCom and Feishu encrypt their callbacks."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class BadPadding(ValueError):
    """The plaintext's padding is wrong: the key is not the sender's, or the data was changed."""


def pad(data: bytes, block: int) -> bytes:
    n = block - len(data) % block
    return data + bytes([n]) * n


def unpad(data: bytes, block: int) -> bytes:
    if not data or len(data) % 16:
        raise BadPadding("ciphertext length is not a whole number of blocks")
    n = data[-1]
    if not 1 <= n <= block or data[-n:] != bytes([n]) * n:
        raise BadPadding("bad padding")
    return data[:-n]


def encrypt(key: bytes, iv: bytes, plaintext: bytes, block: int = 16) -> bytes:
    """`block` is the PKCS#7 block the plaintext is padded to (WeCom pads to 32)."""
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(pad(plaintext, block)) + enc.finalize()


def decrypt(key: bytes, iv: bytes, ciphertext: bytes, block: int = 16) -> bytes:
    if not ciphertext or len(ciphertext) % 16:
        raise BadPadding("ciphertext length is not a whole number of blocks")
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return unpad(dec.update(ciphertext) + dec.finalize(), block)
