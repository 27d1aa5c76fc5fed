"""End to end (issue 17): encrypted images and deltas with every part a real process (the
Image repository, the Director, the time server-less stack of `make demo`: the serial
Secondary as ``uptane-secondary run`` on a pty wire, the CAN Secondary on python-can's
virtual bus in the vehicle process, the Primary as its own process).

- Release 2.0: the serial Secondary's image goes **encrypted** to its own key, the CAN
  Secondary's plain; release 3.0: the CAN Secondary gets a **delta** from 2.0, the serial
  Secondary an **encrypted delta** (both). Every ECU ends up running the exact full image,
  and the Director confirms it from the signed reports.
- The eavesdropper's view: every byte that crossed the serial line and every byte the
  Primary downloaded (both proxies), and every file the Primary keeps, are searched for a
  marker sprinkled through the serial Secondary's images: it is never there. (The same
  search finds the CAN Secondary's plain image's marker in the Primary's downloads: the
  search works.)
"""

from __future__ import annotations

import hashlib
import random

import pytest
from e2e_support import running_stack, slot_bytes

from demo.stack import CAN_ECU, SERIAL_ECU, Image

pytestmark = pytest.mark.slow

BRAKE_MARK = b"#BRAKE-SECRET-17#"
DOOR_MARK = b"#DOOR-PLAIN-17#"


def marked(tag: str, size: int, mark: bytes) -> bytes:
    """Pseudo-random firmware with ``mark`` every 211 bytes (a copy survives any framing
    of the link: frames, COBS, CBOR cut it in places, never everywhere)."""
    rnd = random.Random(tag)
    out = bytearray(rnd.randbytes(size))
    for off in range(0, size - len(mark), 211):
        out[off : off + len(mark)] = mark
    return bytes(out)


def changed(data: bytes, seed: int) -> bytes:
    """About 5 % of ``data`` rewritten, in runs (a firmware rebuild)."""
    rnd = random.Random(seed)
    out = bytearray(data)
    for _ in range(len(data) // 20 // 256):
        off = rnd.randrange(0, len(out) - 256)
        out[off : off + 256] = rnd.randbytes(256)
    return bytes(out)


def release(stack, version: str, counter: int, brake: bytes, door: bytes) -> dict[str, Image]:
    imgs = {
        SERIAL_ECU[0]: Image(f"brake/brake-{version}.bin", brake, SERIAL_ECU[1], counter),
        CAN_ECU[0]: Image(f"door/door-{version}.bin", door, CAN_ECU[1], counter),
    }
    stack.release(list(imgs.values()), how="upload")
    return imgs


def confirmed(stack, imgs: dict[str, Image]) -> None:
    """Each ECU runs the exact full image, and the Director confirmed it."""
    status = stack.status()
    for serial, img in imgs.items():
        info, data = slot_bytes(stack, serial)
        assert info.filename == img.path and data == img.data, serial
        ecu = next(e for e in status["ecus"] if e["serial"] == serial)
        assert ecu["installed"]["hashes"]["sha256"] == hashlib.sha256(img.data).hexdigest()
    states = {a["ecu"]: a["state"] for a in status["assignments"] if a["target"] in paths(imgs)}
    assert states == dict.fromkeys(imgs, "installed"), status["assignments"]


def paths(imgs: dict[str, Image]) -> set[str]:
    return {i.path for i in imgs.values()}


def director_targets(stack) -> dict:
    import json
    import urllib.request

    from demo.stack import VIN

    url = f"{stack.director_url}/vehicles/{VIN}/metadata/targets.json"
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())["signed"]["targets"]


def test_encrypted_images_and_deltas_end_to_end_never_show_the_plaintext(tmp_path) -> None:
    with running_stack(tmp_path) as car:
        stack = car.stack
        assert stack.wire is not None and stack.image_mitm and stack.director_mitm
        line = stack.wire.capture = bytearray()
        downloads = [stack.image_mitm.start_capture(), stack.director_mitm.start_capture()]

        # release 2.0: brake encrypted (serial), door plain (CAN)
        brake2 = marked("brake 2.0", 160 * 1024, BRAKE_MARK)
        door2 = marked("door 2.0", 48 * 1024, DOOR_MARK)
        r2 = release(stack, "2.0", 2, brake2, door2)
        stack.assign({s: i.path for s, i in r2.items()}, encrypt={SERIAL_ECU[0]})
        entries = director_targets(stack)
        brake_entry = entries[r2[SERIAL_ECU[0]].path]["custom"]
        assert set(brake_entry["encryptedImage"]["wrappedKeys"]) == {SERIAL_ECU[0]}
        assert "encryptedImage" not in entries[r2[CAN_ECU[0]].path]["custom"]
        cycle = stack.run_primary()
        assert cycle.returncode == 0, cycle.text
        assert stack.run_primary().returncode == 0  # the reports reach the Director
        confirmed(stack, r2)

        # release 3.0 with a delta from 2.0 for each; brake's encrypted too
        r3 = release(stack, "3.0", 3, changed(brake2, 1), changed(door2, 2))
        sizes = {}
        for serial in r3:
            path, size = stack.release_delta(r2[serial], r3[serial])
            sizes[serial] = (path, size)
            assert size <= 0.15 * len(r3[serial].data), (serial, size)
        stack.assign({s: i.path for s, i in r3.items()}, encrypt={SERIAL_ECU[0]})
        entries = director_targets(stack)
        for serial, (path, _size) in sizes.items():
            assert path in entries and r3[serial].path not in entries, sorted(entries)
        assert set(entries[sizes[SERIAL_ECU[0]][0]]["custom"]["encryptedImage"]["wrappedKeys"]) == {
            SERIAL_ECU[0]
        }
        assert "encryptedImage" not in entries[sizes[CAN_ECU[0]][0]]["custom"]
        cycle = stack.run_primary()
        assert cycle.returncode == 0, cycle.text
        assert stack.run_primary().returncode == 0
        confirmed(stack, r3)

        # the eavesdropper's view: the serial line, the Primary's downloads, its files
        assert len(line) > len(brake2) // 2  # the line carried the transfers
        assert BRAKE_MARK not in line
        for seen in downloads:
            assert BRAKE_MARK not in seen
        kept = [p for p in (stack.vehicle_dir / "primary").rglob("*") if p.is_file()]
        assert kept and not any(BRAKE_MARK in p.read_bytes() for p in kept)
        # ... and the same searches do find what crossed: the plain image's marker in the
        # downloads, and pieces of the brake's ciphertext on the serial line
        assert DOOR_MARK in downloads[0]
        name = brake_entry["encryptedImage"]["filename"]
        ct = (stack.director_dir / "ciphertexts" / name).read_bytes()
        pieces = [ct[off : off + 16] for off in range(1000, len(ct) - 16, 997)]
        assert sum(piece in line for piece in pieces) > len(pieces) // 2
