"""Real disk faults for the usage store, run by tests/test_usage.py inside ``unshare -Urm``.

A user namespace with its own mounts lets any user (root or not) mount a small tmpfs, remount
it read-only and fill it up: the kernel's own EROFS and ENOSPC, not a patched function.  This
script mounts one at the folder it is given, puts a :class:`UsageStore` in it, walks it through
"writable → read-only → writable → full → writable", and prints what it saw as one JSON line
for the test to check.  It is not a test itself (pytest does not collect it).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.canonical import Usage           # noqa: E402
from gateway.usage import UsageStore          # noqa: E402


def on_disk(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())["total_requests"]
    except FileNotFoundError:
        return 0


def wait_for(path: str, total: int, seconds: float = 5.0) -> int:
    deadline = time.monotonic() + seconds
    while on_disk(path) != total and time.monotonic() < deadline:
        time.sleep(0.05)
    return on_disk(path)


def fill(folder: str) -> str:
    """Fill the tmpfs to the last byte; the filler's path."""
    filler = os.path.join(folder, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def main(folder: str) -> None:
    mount = lambda *opts: subprocess.run(["mount", *opts], check=True)   # noqa: E731
    mount("-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", folder)
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("gateway.usage").addHandler(handler)

    path = os.path.join(folder, "usage.json")
    store = UsageStore(path)
    store.RETRY_EVERY = 0.2
    seen = {}
    for n in range(3):
        store.record("m", Usage(1))
    seen["writable"] = on_disk(path)

    mount("-o", "remount,ro", folder)
    for n in range(4):
        store.record("m", Usage(1))                 # never raises
    seen["read_only"] = on_disk(path)
    seen["read_only_seen_by_store"] = store.read()["total_requests"]
    mount("-o", "remount,rw", folder)
    seen["after_read_only"] = wait_for(path, 7)      # the retry writes them, no request needed

    filler = fill(folder)
    for n in range(5):
        store.record("m", Usage(1))
    seen["full"] = on_disk(path)
    seen["full_seen_by_store"] = store.read()["total_requests"]
    os.unlink(filler)
    seen["after_full"] = wait_for(path, 12)
    store.record("m", Usage(1))
    seen["final"] = on_disk(path)
    seen["files"] = sorted(os.listdir(folder))
    seen["modes"] = {name: oct(os.stat(os.path.join(folder, name)).st_mode & 0o777)
                     for name in seen["files"]}
    seen["log"] = lines
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1])
