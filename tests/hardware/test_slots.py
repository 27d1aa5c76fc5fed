"""A/B install: streaming with the verifier, trial boots, revert, abort, and the power-cut walk."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hardware.flash import BootRecord, Flash
from hardware.slot_lifecycle import (
    OUTCOMES,
    REFUSALS,
    TRANSITIONS,
    Outcome,
    SlotEvent,
    SlotState,
    next_state,
)
from hardware.slots import (
    ABORTED,
    CONFIRMED,
    REJECTED,
    REVERTED,
    TRIAL,
    ImageInfo,
    SlotManager,
    SlotWriter,
)
from storage.faults import FaultyFileSystem, PowerCut, PowerLoss, WritePointCounter
from uptane.errors import (
    BadHash,
    BadLength,
    EndlessDataAttack,
    IllegalSlotTransition,
    InstallFailed,
    LimitExceeded,
    MalformedInput,
    NoBootableImage,
    PartialBundleAttack,
    TrialNotConfirmed,
    UptaneError,
)
from uptane.limits import Limits, MiB
from uptane.metadata import TargetFile
from uptane.verify import ImageVerifier

SLOT = 16 * 1024
LIMITS = Limits.constrained().replace(chunk_size=1024)


def image(tag: str, size: int) -> bytes:
    out = b""
    while len(out) < size:
        out += hashlib.sha256(tag.encode() + len(out).to_bytes(8, "big")).digest()
    return out[:size]


def target(name: str, data: bytes, counter: int) -> TargetFile:
    return TargetFile(
        name,
        len(data),
        {"sha256": hashlib.sha256(data).hexdigest(), "sha512": hashlib.sha512(data).hexdigest()},
        release_counter=counter,
    )


def chunks(data: bytes, size: int = 700) -> Iterator[bytes]:
    """Link-sized chunks that do not line up with the slot writer's buffer."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def install(sm: SlotManager, data: bytes, t: TargetFile) -> None:
    verifier = ImageVerifier(t, LIMITS)
    writer = sm.begin_install(t.length, t)
    for c in chunks(data):
        verifier.update(c)
        writer.write(c)
    sm.finish_install(writer, verifier)


def booted_bytes(sm: SlotManager) -> bytes:
    st = sm.status()
    assert st.booted is not None and st.installed is not None
    return sm.flash.read(st.booted, 0, st.installed.length)


V0, V1, V2 = image("v0", 3000), image("v1", 5000), image("v2", 6100)
T0, T1, T2 = target("fw-v0.bin", V0, 1), target("fw-v1.bin", V1, 2), target("fw-v2.bin", V2, 3)


def provisioned(directory: Path, max_trial_boots: int = 2) -> SlotManager:
    """An ECU running V1 confirmed in one slot, with V0 still in the other."""
    sm = SlotManager(Flash(directory, SLOT), max_trial_boots=max_trial_boots, limits=LIMITS)
    for data, t in ((V0, T0), (V1, T1)):
        install(sm, data, t)
        sm.boot()
        sm.confirm()
    assert sm.status().installed == ImageInfo.from_target(T1)
    return sm


def test_blank_device_boots_nothing_then_takes_a_first_image(tmp_path: Path) -> None:
    sm = SlotManager(Flash(tmp_path, SLOT), limits=LIMITS)
    assert sm.boot() is None
    assert sm.status().installed is None and sm.status().release_counter is None
    install(sm, V0, T0)
    assert sm.boot() == "B"
    sm.confirm()
    assert booted_bytes(sm) == V0


def test_install_streams_into_the_inactive_slot_and_boots_on_trial(tmp_path: Path) -> None:
    sm = provisioned(tmp_path)
    active = sm.status().active
    target_slot = sm.inactive_slot()
    assert target_slot != active
    install(sm, V2, T2)
    st = sm.status()
    assert st.trial == target_slot and st.trial_image == ImageInfo.from_target(T2)
    assert st.active == active and st.installed == ImageInfo.from_target(T1)
    assert st.last_result is not None and st.last_result.outcome == TRIAL
    assert sm.flash.read(target_slot, 0, len(V2)) == V2
    # reboot: the trial slot runs
    sm2 = SlotManager(sm.flash.reopen(), limits=LIMITS)
    assert sm2.boot() == target_slot
    assert booted_bytes(sm2) == V2 and sm2.status().release_counter == 3
    sm2.confirm()
    st = sm2.status()
    assert st.active == target_slot and st.trial is None
    assert st.last_result is not None and st.last_result.outcome == CONFIRMED
    assert st.last_result.ok
    sm3 = SlotManager(sm2.flash.reopen(), limits=LIMITS)
    assert sm3.boot() == target_slot and booted_bytes(sm3) == V2


def test_trial_not_confirmed_within_n_boots_reverts_and_reports(tmp_path: Path) -> None:
    sm = provisioned(tmp_path, max_trial_boots=3)
    old_slot = sm.status().active
    install(sm, V2, T2)
    flash = sm.flash
    for n in range(3):
        sm = SlotManager(flash.reopen(), max_trial_boots=3, limits=LIMITS)
        assert sm.boot() != old_slot, f"trial boot {n + 1}"
        assert sm.status().attempts == n + 1
        flash = sm.flash
    sm = SlotManager(flash.reopen(), max_trial_boots=3, limits=LIMITS)
    assert sm.boot() == old_slot
    st = sm.status()
    assert st.trial is None and st.installed == ImageInfo.from_target(T1)
    assert st.release_counter == 2 and booted_bytes(sm) == V1
    last = st.last_result
    assert last is not None and not last.ok and last.outcome == REVERTED
    assert last.filename == "fw-v2.bin"
    assert last.code == TrialNotConfirmed.code and last.attack == TrialNotConfirmed.attack
    with pytest.raises(InstallFailed):
        sm.confirm()  # nothing on trial any more
    # the ECU can take the update again
    install(sm, V2, T2)
    assert sm.boot() != old_slot
    sm.confirm()
    assert booted_bytes(sm) == V2


def test_abort_keeps_the_old_image(tmp_path: Path) -> None:
    sm = provisioned(tmp_path)
    writer = sm.begin_install(T2.length, T2)
    writer.write(V2[:2500])
    assert sm.status().installing
    sm.abort_install("link lost")
    with pytest.raises(InstallFailed):
        writer.write(V2[2500:])
    st = sm.status()
    assert not st.installing and st.trial is None and st.installed == ImageInfo.from_target(T1)
    assert st.last_result is not None and st.last_result.outcome == ABORTED
    assert st.last_result.reason == "link lost"
    sm2 = SlotManager(sm.flash.reopen(), limits=LIMITS)
    sm2.boot()
    assert booted_bytes(sm2) == V1


def test_5_4_3_4_bad_hash_is_rejected_recorded_and_never_booted(tmp_path: Path) -> None:
    sm = provisioned(tmp_path)
    evil = bytearray(V2)
    evil[100] ^= 1
    with pytest.raises(BadHash):
        install(sm, bytes(evil), T2)
    st = sm.status()
    assert st.trial is None and not st.installing
    assert st.last_result is not None and st.last_result.outcome == REJECTED
    assert st.last_result.attack == "arbitrary-software" and st.last_result.code == BadHash.code
    sm.boot()
    assert booted_bytes(sm) == V1


def test_a_verifier_that_checked_another_image_does_not_count(tmp_path: Path) -> None:
    sm = provisioned(tmp_path)
    writer = sm.begin_install(T2.length, T2)
    writer.write(V2)
    other = ImageVerifier(T0, LIMITS)
    other.update(V0)
    with pytest.raises(InstallFailed):
        sm.finish_install(writer, other)
    assert sm.status().trial is None


def test_finish_reads_the_slot_back_even_without_a_verifier(tmp_path: Path) -> None:
    """Bytes that did not land in flash as sent are caught by the read-back check."""
    sm = provisioned(tmp_path)
    writer = sm.begin_install(T2.length, T2)
    writer.write(V2)
    writer._flush()
    sm.flash.write(writer.slot, 10, b"\x00\x00")  # a flash bit error after programming
    with pytest.raises(BadHash):
        sm.finish_install(writer)
    assert sm.status().trial is None


def test_5_4_3_4_length_must_match_and_fit_the_slot(tmp_path: Path) -> None:
    sm = provisioned(tmp_path)
    writer = sm.begin_install(T2.length, T2)
    with pytest.raises(EndlessDataAttack):
        writer.write(V2 + b"x")
    writer.write(V2[:-1])
    with pytest.raises(BadLength):
        sm.finish_install(writer)
    assert sm.status().last_result.code == BadLength.code  # type: ignore[union-attr]
    with pytest.raises(BadLength):
        sm.begin_install(T2.length + 1, T2)
    huge = TargetFile("huge.bin", SLOT + 1, {"sha256": "00" * 32})
    with pytest.raises(EndlessDataAttack):
        sm.begin_install(huge.length, huge)
    assert sm.status().trial is None


def test_image_info_too_big_for_the_boot_record_is_refused_up_front(tmp_path: Path) -> None:
    sm = provisioned(tmp_path)
    before = sm.flash.read_boot()
    long_name = TargetFile("x" * 3000 + ".bin", len(V2), dict(T2.hashes), release_counter=3)
    with pytest.raises(LimitExceeded):
        sm.begin_install(long_name.length, long_name)
    assert sm.flash.read_boot() == before and not sm.status().installing
    install(sm, V2, T2)  # an ordinary image still goes in


def test_4_3_partial_bundle_no_new_install_while_one_is_on_trial(tmp_path: Path) -> None:
    sm = provisioned(tmp_path)
    install(sm, V2, T2)
    with pytest.raises(PartialBundleAttack):
        sm.begin_install(T0.length, T0)
    sm2 = SlotManager(sm.flash.reopen(), limits=LIMITS)
    sm2.boot()
    with pytest.raises(PartialBundleAttack):
        sm2.begin_install(T0.length, T0)
    sm2.confirm()
    install(sm2, V0, T0)  # after the confirm, a new install may start


def test_a_corrupted_trial_slot_is_never_booted(tmp_path: Path) -> None:
    sm = provisioned(tmp_path)
    install(sm, V2, T2)
    trial = sm.status().trial
    assert trial is not None
    sm.flash.write(trial, 0, b"\xde\xad")
    sm.flash.commit(trial)
    sm2 = SlotManager(sm.flash.reopen(), limits=LIMITS)
    assert sm2.boot() != trial
    assert booted_bytes(sm2) == V1
    last = sm2.status().last_result
    assert last is not None and last.outcome == REVERTED and last.code == NoBootableImage.code


def test_a_broken_active_slot_is_refused_not_booted(tmp_path: Path) -> None:
    sm = provisioned(tmp_path)
    sm.flash.write(sm.status().active, 0, b"\x00")
    with pytest.raises(NoBootableImage):
        SlotManager(sm.flash.reopen(), limits=LIMITS).boot()


def test_streaming_8_mib_keeps_memory_near_one_chunk(tmp_path: Path) -> None:
    limits = Limits.primary()  # 64 KiB chunks
    size, chunk = 8 * MiB, 64 * 1024

    def piece(i: int) -> bytes:
        return i.to_bytes(4, "big") * (chunk // 4)

    sha = hashlib.sha256()
    for i in range(size // chunk):
        sha.update(piece(i))
    t = TargetFile("big.bin", size, {"sha256": sha.hexdigest()}, release_counter=1)
    sm = SlotManager(Flash(tmp_path, size), limits=limits)
    tracemalloc.start()
    try:
        verifier = ImageVerifier(t, limits)
        writer = sm.begin_install(size, t)
        for i in range(size // chunk):
            c = piece(i)
            verifier.update(c)
            writer.write(c)
            del c
        sm.finish_install(writer, verifier)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 * MiB, f"peak {peak} bytes"
    assert sm.status().trial_image == ImageInfo.from_target(t)


# --- the power-loss walk ------------------------------------------------------------------

EXPECTED = {
    hashlib.sha256(V1).hexdigest(): ImageInfo.from_target(T1),
    hashlib.sha256(V2).hexdigest(): ImageInfo.from_target(T2),
}


def update_cycle(flash: Flash, stage: list[str]) -> None:
    """begin, chunks, finish, reboot, confirm: the whole install as a Secondary runs it."""
    sm = SlotManager(flash, max_trial_boots=2, limits=LIMITS)
    sm.boot()
    install(sm, V2, T2)
    stage.append("finished")
    sm = SlotManager(flash, max_trial_boots=2, limits=LIMITS)
    sm.boot()
    sm.confirm()
    stage.append("confirmed")


def check_boots_a_verified_image(flash: Flash) -> tuple[SlotManager, str]:
    """Reboot and check the ECU runs V1 or V2 whole, and reports what it runs."""
    sm = SlotManager(flash, max_trial_boots=2, limits=LIMITS)
    slot = sm.boot()
    assert slot is not None
    st = sm.status()
    assert st.installed is not None
    digest = hashlib.sha256(flash.read(slot, 0, st.installed.length)).hexdigest()
    assert digest in EXPECTED, "booted bytes are neither the old nor the new image"
    assert st.installed == EXPECTED[digest], "the report does not match the bytes booted"
    assert st.release_counter == EXPECTED[digest].release_counter
    return sm, digest


WALK_MODES = [
    pytest.param(0.5, False, id="raw-torn-half"),
    pytest.param(0.0, False, id="raw-torn-none"),
    pytest.param(0.9, True, id="volatile-cache"),
]


@pytest.mark.parametrize(("torn", "lose"), WALK_MODES)
def test_5_4_3_power_cut_at_every_write_point_of_an_install(
    tmp_path: Path, torn: float, lose: bool
) -> None:
    base = tmp_path / "base"
    provisioned(base, max_trial_boots=2)
    counter = WritePointCounter()
    shutil.copytree(base, tmp_path / "count")
    update_cycle(Flash(tmp_path / "count", fs=FaultyFileSystem(counter)), [])
    total = counter.count
    assert total > 10, counter.points
    new_seen_at = None
    for n in range(1, total + 1):
        d = tmp_path / f"cut{n}"
        shutil.copytree(base, d)
        stage: list[str] = []
        with pytest.raises(PowerLoss):
            cut = PowerCut(at_write=n, torn=torn, lose_unsynced=lose)
            update_cycle(Flash(d, fs=FaultyFileSystem(cut)), stage)
        sm, digest = check_boots_a_verified_image(Flash(d))
        is_new = EXPECTED[digest].filename == "fw-v2.bin"
        if stage:  # finish_install returned: the new image is committed as the trial
            assert is_new, f"cut at {n} ({counter.points[n - 1]}) lost a finished install"
        if new_seen_at is not None:  # once the switch is durable, no later cut undoes it
            assert is_new, f"cut at {n} ({counter.points[n - 1]}) went back to the old image"
        elif is_new:
            new_seen_at = n
            assert "boot" in counter.points[n - 1], "only the boot record switches slots"
        # more reboots, with no confirm (a trial may revert): always a whole image, true report
        for _ in range(3):
            sm, _ = check_boots_a_verified_image(sm.flash.reopen())
        # and the ECU is never left unable to update: the same install now succeeds
        if sm.status().trial is not None:
            sm.confirm()
        if sm.status().installed != ImageInfo.from_target(T2):
            install(sm, V2, T2)
            sm.boot()
            sm.confirm()
        _, final = check_boots_a_verified_image(sm.flash.reopen())
        assert EXPECTED[final].filename == "fw-v2.bin"
    assert new_seen_at is not None  # the walk reached the switch to the new image


def test_after_the_confirm_point_the_new_image_is_permanent(tmp_path: Path) -> None:
    """Cut at the very last write point with a raw flash: the confirm was programmed."""
    base = tmp_path / "base"
    provisioned(base, max_trial_boots=2)
    counter = WritePointCounter()
    shutil.copytree(base, tmp_path / "count")
    update_cycle(Flash(tmp_path / "count", fs=FaultyFileSystem(counter)), [])
    d = tmp_path / "last"
    shutil.copytree(base, d)
    with pytest.raises(PowerLoss):
        cut = PowerCut(at_write=counter.count, torn=0.0)
        update_cycle(Flash(d, fs=FaultyFileSystem(cut)), [])
    flash = Flash(d)
    for _ in range(4):  # more boots than max_trial_boots: no revert
        sm, digest = check_boots_a_verified_image(flash)
        assert EXPECTED[digest].filename == "fw-v2.bin"
        assert sm.status().trial is None
        flash = flash.reopen()


@pytest.mark.parametrize(
    "geometry",
    [b"[]", b"{}", b'{"slot_size": "big", "boot_copy_size": 4096}', b'{"slot_size": 0}'],
)
def test_a_damaged_flash_geometry_file_is_a_named_error(tmp_path: Path, geometry: bytes) -> None:
    Flash(tmp_path, 1 << 16)
    (tmp_path / "geometry.json").write_bytes(geometry)
    with pytest.raises(MalformedInput, match="geometry"):  # never a KeyError or TypeError
        Flash(tmp_path)


# --- the slot trial lifecycle (hardware/slot_lifecycle.py) ----------------------------------

#: a boot record exactly as the code before the lifecycle table wrote it (V1 confirmed in B,
#: V2 installed in A and booted once on trial): a device in the field keeps its slots
OLD_RECORD = (
    '{"active":"B","attempts":1,"confirmed":false,"data":{"images":{"A":{"filename":"'
    'fw-v2.bin","hashes":{"sha256":"6fec9c6b565800de989f134f3d6af4af2f86a178a6ac1b6f9'
    'cb96c5820b16ddc","sha512":"97d0a86101f159ce31b227abd27e5920404735f94778e4415b1c3'
    '05073e62a56495400433a1b8891c395d1150f82af26a4c0767b3ffa2b1c5272b250614737f8"},"l'
    'ength":6100,"releaseCounter":3},"B":{"filename":"fw-v1.bin","hashes":{"sha256":"'
    '70e29a00a32110769aabd072acc418bb746e4c7ed1254354e1292d69d50be37d","sha512":"b12e'
    "059ee107eaade7944a4634e092c77750021614c2f9981cb31b509d1113f1214393d4af25a2aeb15c"
    'e92a582c5d3e19c8ed303e012fea743a8ab571da5c99"},"length":5000,"releaseCounter":2}'
    '},"last":{"attack":"","code":0,"filename":"fw-v2.bin","outcome":"trial","reason"'
    ':"installed, waiting for a trial boot"}},"trial":"A"}'
)


def test_a_boot_record_written_by_the_old_code_still_loads(tmp_path: Path) -> None:
    flash = Flash(tmp_path, SLOT)
    for slot, data in (("A", V2), ("B", V1)):
        flash.write(slot, 0, data)
        flash.commit(slot)
    old = BootRecord.from_payload(OLD_RECORD.encode(), 7)
    flash.write_boot(old)
    sm = SlotManager(flash.reopen(), max_trial_boots=2, limits=LIMITS)
    st = sm.status()
    assert sm.state is SlotState.TRIAL and st.trial == "A" and st.attempts == 1
    assert st.installed == ImageInfo.from_target(T1) and st.trial_image == ImageInfo.from_target(T2)
    last = st.last_result
    assert last is not None and last.outcome is Outcome.TRIAL and last.outcome == "trial"
    assert last.ok and last.to_dict() == old.data["last"]  # written back the same way
    assert sm.boot() == "A" and sm.state is SlotState.TRIAL_BOOTED
    sm.confirm()
    record = sm.flash.read_boot()
    assert record is not None and record.active == "A" and record.trial is None
    assert record.data["last"]["outcome"] == "confirmed"  # the same strings as before
    assert booted_bytes(sm) == V2


def test_a_damaged_last_result_reports_none_instead_of_crashing(tmp_path: Path) -> None:
    sm = provisioned(tmp_path)
    data = json.loads(OLD_RECORD)["data"]
    data["last"] = {"outcome": "exploded", "filename": 5}
    sm.flash.write_boot(BootRecord("B", None, 0, True, data))
    assert SlotManager(sm.flash.reopen(), limits=LIMITS).status().last_result is None


def test_the_lifecycle_table_is_complete_and_every_state_reachable() -> None:
    reached = {SlotState.IDLE}
    frontier = [SlotState.IDLE]
    while frontier:
        for after in TRANSITIONS[frontier.pop()].values():
            if after not in reached:
                reached.add(after)
                frontier.append(after)
    assert reached == set(SlotState) == set(TRANSITIONS)
    used = {e for moves in TRANSITIONS.values() for e in moves}
    assert used == set(SlotEvent)
    for event in OUTCOMES:  # every recorded outcome belongs to a move the table allows
        assert any(event in moves for moves in TRANSITIONS.values())
    for state in SlotState:
        for event in SlotEvent:
            if event in TRANSITIONS[state]:
                assert next_state(state, event) is TRANSITIONS[state][event]
            else:
                error = REFUSALS.get(event, IllegalSlotTransition)
                with pytest.raises(error):
                    next_state(state, event)


def _in_state(directory: Path, state: SlotState) -> tuple[SlotManager, Any]:
    """A SlotManager in ``state``; the writer (for INSTALLING: all of V2 written) or None."""
    sm = provisioned(directory)
    writer = sm.begin_install(T2.length, T2)
    if state is SlotState.IDLE:
        sm.abort_install("to leave the inactive slot unclaimed")  # so RESUME can be tried
        return sm, None
    writer.write(V2)
    if state is SlotState.INSTALLING:
        return sm, writer
    sm.finish_install(writer, None)
    if state is SlotState.TRIAL_BOOTED:
        assert sm.boot() == writer.slot
    return sm, None


def _bad_finish(sm: SlotManager, writer: Any) -> None:
    """FINISH that fails its read-back: REJECT."""
    if writer is not None:
        writer._flush()
        sm.flash.write(writer.slot, 0, b"\x00")
    sm.finish_install(writer or SlotWriter(sm.flash, "A", ImageInfo.from_target(T2), 64))


def _boot_into_a_broken_trial(sm: SlotManager, writer: Any) -> None:
    """A reset with the trial slot no longer matching its image: RESET then REVERT (the
    other REVERT, attempts used up, is test_trial_not_confirmed_within_n_boots...)."""
    trial = sm.status().trial
    if trial is not None:
        sm.flash.write(trial, 0, b"\xde\xad")
        sm.flash.commit(trial)
    sm.boot()


#: each way of driving a SlotManager, the lifecycle events it is, and how it is called
ACTIONS: dict[str, tuple[tuple[SlotEvent, ...], Any]] = {
    "begin": ((SlotEvent.BEGIN,), lambda sm, w: sm.begin_install(T0.length, T0)),
    "resume": ((SlotEvent.RESUME,), lambda sm, w: sm.resume_install(T2, 0)),
    "finish": (
        (SlotEvent.FINISH,),
        lambda sm, w: sm.finish_install(
            w or SlotWriter(sm.flash, "A", ImageInfo.from_target(T2), 64)
        ),
    ),
    "finish-bad": ((SlotEvent.FINISH, SlotEvent.REJECT), _bad_finish),
    "abort": ((SlotEvent.ABORT,), lambda sm, w: sm.abort_install("stop")),
    "boot": ((SlotEvent.RESET, SlotEvent.TRIAL_BOOT), lambda sm, w: sm.boot()),
    "boot-bad-trial": ((SlotEvent.RESET, SlotEvent.REVERT), _boot_into_a_broken_trial),
    "confirm": ((SlotEvent.CONFIRM,), lambda sm, w: sm.confirm()),
}


def _expected(
    state: SlotState, events: tuple[SlotEvent, ...]
) -> tuple[SlotState | type[Exception], Outcome | None]:
    """The state the table says ``events`` lead to from ``state`` (or the error the first
    refused one raises) and the outcome recorded last. RESET leads to the recorded state,
    where the bootloader's TRIAL_BOOT or REVERT applies only if a trial is pending (else the
    active slot just boots); a FINISH whose checks fail is a REJECT instead."""
    first, *rest = events
    try:
        after = next_state(state, first)
    except (IllegalSlotTransition, PartialBundleAttack) as e:
        return type(e), None
    if first is SlotEvent.RESET and after is SlotState.IDLE:
        return after, None
    if first is SlotEvent.FINISH and rest:
        return next_state(state, rest[0]), OUTCOMES[rest[0]]
    for event in rest:
        after = next_state(after, event)
    return after, OUTCOMES.get(events[-1])


@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize("state", list(SlotState), ids=lambda s: s.value)
def test_every_slot_manager_move_follows_the_lifecycle_table(
    tmp_path: Path, state: SlotState, action: str
) -> None:
    """Each state, driven each way: the state after and the outcome recorded are the
    table's, and a move the table refuses raises its named error and writes nothing."""
    sm, writer = _in_state(tmp_path, state)
    assert sm.state is state and sm.status().state is state
    events, call = ACTIONS[action]
    expected, outcome = _expected(state, events)
    before = sm.flash.read_boot()
    if isinstance(expected, type):
        with pytest.raises(expected):
            call(sm, writer)
        assert sm.flash.read_boot() == before and sm.state is state, "a refused move wrote"
        return
    with contextlib.suppress(UptaneError):  # a rejected finish raises its verdict
        call(sm, writer)
    assert sm.state is expected
    if outcome is not None:
        last = sm.status().last_result
        assert last is not None and last.outcome is outcome
