#!/usr/bin/env python3
"""Decrypt a pgkeep backup object without pgkeep, following docs/FORMAT.md.

    python3 pgkeep_decrypt.py --key-file pgkeep.key OBJECT.pgkeep > archive.dump
    python3 pgkeep_decrypt.py --data-key-file data.key OBJECT.pgkeep > archive.dump
    pg_restore --list archive.dump

--key-file is the local master key file; --data-key-file is the backup's own 32-byte data key,
already unwrapped (for a KMS key: `aws kms decrypt` of the wrapped key with the backup's
encryption context, see docs/OPERATIONS.md).

Needs the `cryptography` package; zstd objects also need `zstandard` (gzip uses the standard
library). Streams chunk by chunk, so memory stays at about one chunk. Exits non-zero, and
says why, on any authentication failure, truncation or unknown format.
"""
import argparse
import base64
import itertools
import json
import sys
import zlib

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def unwrap_with_key_file(key_file_bytes: bytes, meta: dict) -> bytes:
    """The local key file wraps data keys with AES-256-GCM: nonce(12) || ciphertext || tag,
    associated data b"pgkeep/wrap/v1\\0" + backup_id + b"\\0" + database."""
    wrapped = base64.b64decode(meta["wrapped_key"])
    aad = b"pgkeep/wrap/v1\0" + meta["backup_id"].encode() + b"\0" + meta["database"].encode()
    return AESGCM(key_file_bytes).decrypt(wrapped[:12], wrapped[12:], aad)


def decrypt_chunks(f, on_header):
    """Yields authenticated plaintext chunks of an object read from binary file `f`."""
    fixed = f.read(23)
    if len(fixed) < 23 or fixed[:6] != b"PGKEEP":
        raise ValueError("not a pgkeep object")
    if fixed[6] != 1 or fixed[7] != 1:
        raise ValueError(f"unsupported version {fixed[6]} / AEAD {fixed[7]}")
    chunk = int.from_bytes(fixed[8:12], "big")
    prefix = fixed[12:19]
    json_len = int.from_bytes(fixed[19:23], "big")
    if not 16 <= chunk <= 16 << 20 or json_len > 65536:
        raise ValueError("bad header")
    header = fixed + f.read(json_len)  # associated data of every chunk, exactly as stored
    if len(header) != 23 + json_len:
        raise ValueError("truncated header")
    aead = AESGCM(on_header(json.loads(header[23:])))
    i = 0
    sealed = f.read(chunk + 16)
    while True:
        ahead = f.read(chunk + 16)  # is there anything after this chunk?
        last = not ahead
        nonce = prefix + i.to_bytes(4, "big") + (b"\x01" if last else b"\x00")
        # InvalidTag here means tampering, truncation, appended data or a wrong key.
        yield aead.decrypt(nonce, sealed, header)
        if last:
            return
        sealed, i = ahead, i + 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument("--key-file", help="the 32-byte pgkeep master key file")
    keys.add_argument("--data-key-file", help="the backup's unwrapped 32-byte data key")
    parser.add_argument("object", help="a .pgkeep object")
    args = parser.parse_args()
    key = open(args.key_file or args.data_key_file, "rb").read()
    if len(key) != 32:
        raise ValueError(f"a key is 32 bytes, this one is {len(key)}")
    meta_seen = {}

    def on_header(meta):
        meta_seen.update(meta)
        return unwrap_with_key_file(key, meta) if args.key_file else key

    out = sys.stdout.buffer
    with open(args.object, "rb") as f:
        chunks = decrypt_chunks(f, on_header)
        first = next(chunks)
        compression = meta_seen["compression"]
        if compression == "gzip":
            d = zlib.decompressobj(wbits=31)
            decompress, finish = d.decompress, d.flush
        elif compression == "zstd":
            import zstandard

            d = zstandard.ZstdDecompressor().decompressobj()
            decompress, finish = d.decompress, (lambda: b"")
        else:
            raise ValueError(f"unknown compression {compression!r}")
        for plain in itertools.chain([first], chunks):
            out.write(decompress(plain))
        out.write(finish())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # one clear line, non-zero exit
        print(f"pgkeep_decrypt: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
