"""SHA-256 of files, read in 1 MiB chunks: checkpoint checksums and corpus fingerprints."""

import hashlib
from pathlib import Path


def sha256_files(paths: list[Path], with_names: bool = False) -> str:
    """The hex digest of the files' bytes in order; `with_names` also hashes each file's name before its bytes
    (a corpus renamed is another corpus)."""
    h = hashlib.sha256()
    for path in paths:
        if with_names:
            h.update(path.name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
