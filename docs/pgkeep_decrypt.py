#!/usr/bin/env python3
"""Decrypt a pgkeep backup object without pgkeep, following docs/FORMAT.md.

    python3 pgkeep_decrypt.py --key-file pgkeep.key OBJECT.pgkeep -o archive.dump
    python3 pgkeep_decrypt.py --data-key-file data.key OBJECT.pgkeep > archive.dump
    pg_restore --list archive.dump

Needs: Python 3.8 or later and the package `cryptography`; objects compressed with zstd
(pgkeep's default) also need the package `zstandard` (gzip uses the standard library):

    python3 -m pip install cryptography zstandard

This file is self-contained: copy it anywhere and run it from any directory (all paths are
arguments). --key-file is the local master key file (32 bytes); --data-key-file is the
backup's own 32-byte data key, already unwrapped (for a KMS key: `aws kms decrypt` of the
wrapped key with the backup's encryption context, see docs/OPERATIONS.md).

It writes nothing unless the whole object authenticated and decompressed: the archive is
written to a private temporary file first and only then renamed to -o FILE (or copied to
stdout). Exit status: 0 done; 2 bad usage or a missing package; 3 corrupt object (a chunk
fails authentication, truncation, bad compressed data); 5 wrong key (the data key does not
unwrap with this key file); 1 anything else.
"""
import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zlib

EXIT_USAGE, EXIT_CORRUPT, EXIT_WRONG_KEY = 2, 3, 5
INSTALL = "install it with: python3 -m pip install cryptography zstandard"


class Failure(Exception):
    """One line for the user and the exit status it deserves."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError:
    print(f"pgkeep_decrypt: the Python package `cryptography` is missing; {INSTALL}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def no_duplicate_keys(pairs):
    """json.loads would keep the last of two equal keys; pgkeep refuses such JSON."""
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError(f"duplicate key {k!r}")
        obj[k] = v
    return obj


def key_file_id(key: bytes) -> str:
    """A key file's id as manifests show it: `file:` + 16 lowercase hex digits."""
    return "file:" + hashlib.sha256(b"pgkeep/key-id/v1\0" + key).hexdigest()[:16]


def unwrap_with_key_file(key_file_bytes: bytes, meta: dict) -> bytes:
    """The local key file wraps data keys with AES-256-GCM: nonce(12) || ciphertext || tag,
    associated data b"pgkeep/wrap/v1\\0" + backup_id + b"\\0" + database."""
    ours = key_file_id(key_file_bytes)
    if meta["key_id"] != ours:
        raise Failure(
            EXIT_WRONG_KEY,
            f"wrong key: backup {meta['backup_id']} was made with key {meta['key_id']}, "
            f"this key file is {ours}",
        )
    wrapped = base64.b64decode(meta["wrapped_key"], validate=True)
    aad = b"pgkeep/wrap/v1\0" + meta["backup_id"].encode() + b"\0" + meta["database"].encode()
    try:
        return AESGCM(key_file_bytes).decrypt(wrapped[:12], wrapped[12:], aad)
    except InvalidTag:
        raise Failure(
            EXIT_WRONG_KEY,
            f"wrong key: the data key of backup {meta['backup_id']} does not unwrap with this "
            "key file (the wrapped key belongs to another backup or database, or was altered)",
        ) from None


def decrypt_chunks(f, on_header):
    """Yields authenticated plaintext chunks of an object read from binary file `f`."""
    fixed = f.read(23)
    if len(fixed) < 23 or fixed[:6] != b"PGKEEP":
        raise Failure(EXIT_CORRUPT, "not a pgkeep object (it does not start with PGKEEP)")
    if fixed[6] != 1 or fixed[7] != 1:
        raise Failure(EXIT_CORRUPT, f"unsupported version {fixed[6]} / AEAD {fixed[7]}")
    chunk = int.from_bytes(fixed[8:12], "big")
    prefix = fixed[12:19]
    json_len = int.from_bytes(fixed[19:23], "big")
    if not 16 <= chunk <= 16 << 20 or json_len > 65536:
        raise Failure(EXIT_CORRUPT, "bad header (chunk size or metadata length out of range)")
    header = fixed + f.read(json_len)  # associated data of every chunk, exactly as stored
    if len(header) != 23 + json_len:
        raise Failure(EXIT_CORRUPT, "truncated header")
    try:
        meta = json.loads(header[23:].decode("utf-8"), object_pairs_hook=no_duplicate_keys)
    except ValueError as e:
        raise Failure(EXIT_CORRUPT, f"bad header metadata: {e}") from None
    if not isinstance(meta, dict):
        raise Failure(EXIT_CORRUPT, "bad header metadata: not a JSON object")
    # Until chunk 0 authenticates, only key_id, wrapped_key (and, to unwrap, backup_id and
    # database) are used; compression is acted on only after that.
    aead = AESGCM(on_header(meta))
    i = 0
    sealed = f.read(chunk + 16)
    while True:
        ahead = f.read(chunk + 16)  # is there anything after this chunk?
        last = not ahead
        nonce = prefix + i.to_bytes(4, "big") + (b"\x01" if last else b"\x00")
        try:
            yield aead.decrypt(nonce, sealed, header)
        except InvalidTag:
            raise Failure(
                EXIT_CORRUPT,
                f"corrupt object: chunk {i} fails authentication (altered, truncated or "
                "extended; or, with --data-key-file, the wrong data key)",
            ) from None
        if last:
            return
        sealed, i = ahead, i + 1


def decompressor(compression: str):
    """(decompress, finish, errors) for the header's `compression`; finish checks that the
    stream ended exactly at the end; errors are the codec's exceptions."""
    if compression == "gzip":
        d = zlib.decompressobj(wbits=31)  # exactly one gzip member

        def finish():
            tail = d.flush()
            if not d.eof or d.unused_data:
                raise Failure(EXIT_CORRUPT, "corrupt object: the gzip stream does not end exactly at the end")
            return tail

        return d.decompress, finish, (zlib.error,)
    if compression == "zstd":
        try:
            import zstandard
        except ImportError:
            raise Failure(
                EXIT_USAGE, f"this backup is zstd-compressed and the Python package `zstandard` is missing; {INSTALL}"
            ) from None
        d = zstandard.ZstdDecompressor().decompressobj()  # exactly one zstd frame

        def finish():
            if not d.eof or d.unused_data:
                raise Failure(EXIT_CORRUPT, "corrupt object: the zstd frame does not end exactly at the end")
            return b""

        return d.decompress, finish, (zstandard.ZstdError,)
    raise Failure(EXIT_CORRUPT, f"unknown compression {compression!r} (pgkeep writes zstd or gzip)")


def read_key(path: str) -> bytes:
    with open(path, "rb") as f:
        key = f.read(33)
    if len(key) != 32:
        raise Failure(EXIT_USAGE, f"{path}: a key is exactly 32 bytes")
    return key


def decrypt_to(object_path: str, key: bytes, key_is_master: bool, out) -> None:
    meta_seen = {}

    def on_header(meta):
        for field in ("backup_id", "database", "compression", "key_id", "wrapped_key"):
            if not isinstance(meta.get(field), str):
                raise Failure(EXIT_CORRUPT, f"bad header metadata: no string field {field!r}")
        meta_seen.update(meta)
        return unwrap_with_key_file(key, meta) if key_is_master else key

    with open(object_path, "rb") as f:
        chunks = decrypt_chunks(f, on_header)
        first = next(chunks)  # chunk 0 authenticated: the header is now trustworthy
        decompress, finish, errors = decompressor(meta_seen["compression"])
        try:
            out.write(decompress(first))
            for plain in chunks:
                out.write(decompress(plain))
        except errors as e:
            raise Failure(EXIT_CORRUPT, f"corrupt object: the archive does not decompress: {e}") from None
        out.write(finish())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument("--key-file", help="the 32-byte pgkeep master key file")
    keys.add_argument("--data-key-file", help="the backup's unwrapped 32-byte data key")
    parser.add_argument("-o", "--output", help="write the archive here (appears only when complete) instead of stdout")
    parser.add_argument("object", help="a .pgkeep object")
    args = parser.parse_args()
    key = read_key(args.key_file or args.data_key_file)
    if args.output and os.path.lexists(args.output):
        raise Failure(EXIT_USAGE, f"{args.output} exists; give a new file name")
    # Spool to a private temporary file: nothing is released before the end authenticated.
    directory = os.path.dirname(os.path.abspath(args.output)) if args.output else None
    fd, tmp = tempfile.mkstemp(prefix=".pgkeep_decrypt-", dir=directory)  # mode 0600
    try:
        with os.fdopen(fd, "w+b") as spool:
            decrypt_to(args.object, key, bool(args.key_file), spool)
            spool.flush()
            os.fsync(spool.fileno())
            if args.output:
                os.link(tmp, args.output)  # never over an existing file
            else:
                spool.seek(0)
                shutil.copyfileobj(spool, sys.stdout.buffer)
                sys.stdout.buffer.flush()
    finally:
        os.unlink(tmp)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as e:
        print(f"pgkeep_decrypt: {e}", file=sys.stderr)
        sys.exit(e.status)
    except Exception as e:  # one clear line, non-zero exit
        print(f"pgkeep_decrypt: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
