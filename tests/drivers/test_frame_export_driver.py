"""The frame-export probe against the simulated QEMU's HXFR server, one build behaviour each.

The contract: FRAME_REQUEST with resource_id=0 is classified from what the QEMU build does with
it: the Feb-5 build rejects it (``rejected``, error code -2: the only passing verdict), v7 falls
back to the DisplaySurface and answers (``accepted``), v10 drops it (``ignored``, at the probe's
own timeout, never later); nothing listening is ``unreachable``. The result keeps the bytes
exchanged (the report shows them) and the verdict's explanation.
"""

from __future__ import annotations

import pytest

from harness.drivers.frame_export import EXPLANATIONS, probe_resource_id_zero

pytestmark = pytest.mark.timeout(90)

HXFR_MAGIC = "48584652"  # "HXFR"
#: The probe's timeout for the build that never answers.
IGNORE_TIMEOUT = 1.0


def _probe(rig, timeout: float = 5.0):
    fe = rig.target.frame_export
    assert fe.port == rig.info["frame_export_port"]
    return probe_resource_id_zero(fe.host, fe.port, timeout=timeout)


def test_feb5_build_rejects_resource_id_zero(rig) -> None:
    rig.boot()
    host = rig.host_driver()
    before = host.snapshot()
    result = _probe(rig)
    assert (result.verdict, result.error_code, result.message) == ("rejected", -2, "Error: -2")
    sent, *received = result.exchange
    assert sent["dir"] == "sent" and received and {r["dir"] for r in received} == {"received"}
    assert sent["hex"].startswith(HXFR_MAGIC) and received[0]["hex"].startswith(HXFR_MAGIC)
    assert result.as_dict()["explanation"] == EXPLANATIONS["rejected"] == result.explanation
    assert 0 < result.elapsed_ms < 5000
    # the request reached this QEMU: it logged why it refused
    assert b"resource_id=0 not supported" in host.new_log_bytes(before)


def test_v7_build_answers_with_a_frame(make_rig) -> None:
    result = _probe(make_rig(qemu_behaviour="v7-fallback").boot())
    assert result.verdict == "accepted" and result.error_code is None
    assert result.message.startswith("FRAME_RESPONSE with 1 NAL blob(s), ")
    assert [e["dir"] for e in result.exchange][:2] == ["sent", "received"]


def test_v10_build_ignores_it_until_the_probe_times_out(make_rig) -> None:
    result = _probe(make_rig(qemu_behaviour="v10-ignore").boot(), timeout=IGNORE_TIMEOUT)
    assert result.verdict == "ignored" and result.message == f"no reply within {IGNORE_TIMEOUT:.1f}s"
    assert [e["dir"] for e in result.exchange] == ["sent"]
    assert IGNORE_TIMEOUT * 1000 * 0.9 <= result.elapsed_ms <= IGNORE_TIMEOUT * 1000 + 2000


def test_nothing_listens_before_the_vm_boots(make_rig) -> None:
    result = _probe(make_rig())  # QEMU's frame export is bound when the VM boots
    assert result.verdict == "unreachable" and "failed" in result.message and result.exchange == []
