"""harness.protocols.utmctl: utmctl's list/status/error formats (UTM utmctl/UTMCtl.swift)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols import utmctl as u
from harness.protocols.errors import LocalProtocolError, RemoteProtocolError

VM = "17DC4F96-F1A9-4B51-962B-03D85998E0E7"
STALE = "01CECE09-0000-4000-8000-000000000001"
# print("UUID                                 Status   Name") then "\(id) \(status padded to 8) \(name)"
LIST_OUTPUT = (
    "UUID                                 Status   Name\n"
    "17DC4F96-F1A9-4B51-962B-03D85998E0E7 started  Helix Base VM\n"
    "01CECE09-0000-4000-8000-000000000001 paused   old  two  spaces\n"
    "A0000000-0000-4000-8000-00000000000A resuming \n"
)
EVENT_ERROR = "Error from event: The operation couldn\u2019t be completed. (OSStatus error -1743.)\n"


def test_header_columns() -> None:
    assert u.LIST_HEADER.index("Status") == 37 and u.LIST_HEADER.index("Name") == 46  # UUID is 36 chars + space


def test_parse_list() -> None:
    assert u.parse_list(LIST_OUTPUT) == [
        u.VmEntry(VM, "started", "Helix Base VM"),
        u.VmEntry(STALE, "paused", "old  two  spaces"),
        u.VmEntry("A0000000-0000-4000-8000-00000000000A", "resuming", ""),
    ]
    assert u.parse_list(u.LIST_HEADER + "\n") == []
    assert u.parse_list(LIST_OUTPUT.encode().replace(b"\n", b"\r\n"))[0].status == "started"


def test_format_list_is_byte_exact() -> None:
    entries = u.parse_list(LIST_OUTPUT)
    assert u.format_list(entries) == LIST_OUTPUT
    assert u.format_list([]) == u.LIST_HEADER + "\n"


@pytest.mark.parametrize(
    "text",
    ["", "\n", "UUID Status Name\n", "garbage\n", u.LIST_HEADER + "\nnot-a-uuid started  x\n",
     u.LIST_HEADER + f"\n{VM} running  x\n", u.LIST_HEADER + f"\n{VM} started x\n", EVENT_ERROR],
)
def test_parse_list_garbage(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        u.parse_list(text)
    assert info.value.phase == "utm" and info.value.data is not None


@pytest.mark.parametrize("status", u.STATUSES)
def test_status_roundtrip(status: str) -> None:
    assert u.format_status(status) == status + "\n"
    assert u.parse_status(u.format_status(status)) == status


@pytest.mark.parametrize("text", ["", "running\n", "started started\n", "Started\n", u.NO_GUI_MESSAGE])
def test_parse_status_garbage(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        u.parse_status(text)
    assert info.value.phase == "utm"


def test_event_error_detection() -> None:
    err = u.find_event_error(EVENT_ERROR)
    assert err == u.EventError(-1743, EVENT_ERROR.strip(), False)
    assert u.format_event_error(-1743) == EVENT_ERROR
    with_note = u.find_event_error(EVENT_ERROR + u.NO_GUI_MESSAGE + "\n")
    assert with_note.osstatus == -1743 and with_note.no_gui
    assert u.find_event_error("Error from event: OSStatus -609\n").osstatus == -609
    assert u.find_event_error("The operation could not be completed. (OSStatus error -600.)").osstatus == -600
    assert u.find_event_error("Error from event: something else\n") == u.EventError(None, "Error from event: something else")
    note_only = u.find_event_error(u.NO_GUI_MESSAGE + "\n")
    assert note_only == u.EventError(None, u.NO_GUI_MESSAGE, True)
    assert u.find_event_error("") is None
    assert u.find_event_error("WARNING: attach command is not implemented yet!\n") is None
    assert u.NO_GUI_MESSAGE == "NOTE: utmctl does not work from SSH sessions or before logging in."


def test_validation() -> None:
    for bad in (lambda: u.VmEntry("x", "started", "n"), lambda: u.VmEntry(VM, "running", "n"),
                lambda: u.VmEntry(VM, "started", "a\nb"), lambda: u.format_status("running"),
                lambda: u.format_event_error("-1743")):  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError):
            bad()


uuids = st.uuids().map(lambda x: str(x).upper())
names = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\n\r\x85"), max_size=20)
entries = st.lists(st.builds(u.VmEntry, uuids, st.sampled_from(u.STATUSES), names), max_size=5)


@settings(max_examples=300, deadline=None)
@given(entries)
def test_list_roundtrip(items: list) -> None:
    assert u.parse_list(u.format_list(items)) == items


lines = [u.LIST_HEADER, f"{VM} started  x", EVENT_ERROR.strip(), u.NO_GUI_MESSAGE, "stopped", "OSStatus error -" + "9" * 20]
texts = st.one_of(st.text(max_size=100), st.lists(st.one_of(st.sampled_from(lines), st.text(max_size=15)), max_size=8).map("\n".join))


@settings(max_examples=800, deadline=None)
@given(texts)
def test_fuzz(text: str) -> None:
    for parse in (u.parse_list, u.parse_status):
        try:
            parse(text)
        except RemoteProtocolError as exc:
            assert exc.phase == "utm"
    found = u.find_event_error(text)
    assert found is None or isinstance(found, u.EventError)
