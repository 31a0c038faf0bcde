"""Admission's edges (issue 20's mutation run): counts that start at zero and end at zero,
refusals that say when to retry, the explained-refusal budget, a reload's new limits, and an
inbound budget whose buckets hold no more than their burst however long a connection idled."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcore.config import Limits
from rtcore.core.limits.admission import EXPLAINED_REFUSALS_PER_IP, Admission, InboundBudget
from rtcore.core.limits.bucket import TokenBucket
from rtcore.core.limits.limiter import Chain, Rule
from rtcore.protocol import CloseCode

IP = "192.0.2.1"


def test_the_first_connection_of_an_ip_is_admitted_at_a_cap_of_one() -> None:
    admission = Admission(Limits(max_connections_per_ip=1))
    assert admission.admit(IP, 0.0) is None and admission.counts == {IP: 1}
    refused = admission.admit(IP, 0.0)
    assert refused is not None and refused.code == CloseCode.TOO_MANY_CONNECTIONS
    assert refused.reason == f"1 connections from {IP} already"


def test_counts_go_back_to_nothing() -> None:
    admission = Admission(Limits(max_connections_per_ip=5, connect_burst_per_ip=5))
    for _ in range(2):
        assert admission.admit(IP, 0.0) is None
    admission.release(IP)
    assert admission.counts == {IP: 1}
    admission.release(IP)
    assert admission.counts == {}
    admission.release(IP)  # one too many: still nothing, never negative
    assert admission.counts == {}
    assert admission.accept() and admission.accept() and admission.open == 2
    admission.ended()
    assert admission.open == 1
    admission.ended()
    assert admission.open == 0
    admission.ended()
    assert admission.open == 0


def test_a_connection_rate_refusal_says_when_to_retry() -> None:
    admission = Admission(Limits(connect_rate_per_ip=2.0, connect_burst_per_ip=1))
    assert admission.admit(IP, 0.0) is None
    refused = admission.admit(IP, 0.0)
    assert refused is not None and refused.code == CloseCode.CONNECTION_RATE_LIMITED
    assert refused.reason == f"too many new connections from {IP}; retry in 500 ms"
    assert admission.admit("192.0.2.2", 0.0) is None  # another IP has its own bucket


def test_a_reload_applies_the_new_rate_and_caps() -> None:
    admission = Admission(Limits(connect_rate_per_ip=1.0, connect_burst_per_ip=1))
    assert admission.admit(IP, 0.0) is None and admission.admit(IP, 0.0) is not None
    admission.apply(Limits(connect_rate_per_ip=1.0, connect_burst_per_ip=3, max_connections=7))
    assert admission.cap == 7 and admission.limits.connect_burst_per_ip == 3
    assert admission.admit(IP, 0.0) is None  # a new rule: a new, full bucket


def test_only_a_few_refusals_per_ip_are_explained_at_once() -> None:
    admission = Admission(Limits())
    assert all(admission.explain(IP) for _ in range(EXPLAINED_REFUSALS_PER_IP))
    assert not admission.explain(IP) and admission.explain("192.0.2.2")
    admission.explained(IP)
    assert admission.explain(IP) and not admission.explain(IP)


def test_a_sweep_forgets_full_connection_rate_buckets() -> None:
    admission = Admission(Limits(connect_rate_per_ip=1.0, connect_burst_per_ip=1))
    assert admission.admit(IP, 0.0) is None
    admission.sweep(0.5)
    assert len(admission._rate) == 1  # still refilling: kept
    admission.sweep(10.0)
    assert len(admission._rate) == 0


@pytest.mark.parametrize("kind", ["frames", "bytes"])
def test_an_idle_connection_gets_no_more_than_its_burst(kind: str) -> None:
    limits = Limits(
        inbound_frame_burst=5,
        inbound_frames_per_second=1.0,
        inbound_byte_burst=500,
        inbound_bytes_per_second=100.0,
    )
    budget = InboundBudget(limits, 0.0)
    budget.refill(10_000.0)  # idle for hours: the buckets are full, not fuller

    def charge() -> object:
        return budget.charge_frame() if kind == "frames" else budget.charge_bytes(100)

    assert [charge() for _ in range(5)] == [None] * 5
    refused = charge()
    assert refused is not None and refused.code == CloseCode.INBOUND_FLOOD  # type: ignore[attr-defined]
    expected = (
        "more than 1 frames a second (burst 5; pings and fragments count)"
        if kind == "frames"
        else "more than 100 bytes a second (burst 500)"
    )
    assert refused.reason == expected  # type: ignore[attr-defined]


def test_forgetting_a_connection_that_never_used_its_bucket() -> None:
    chain = Chain([Rule("c", 1.0, 1.0, scope="connection"), Rule("u", 1.0, 1.0)])
    assert chain.check("join", "ip", "conn-1", 0.0) is None
    chain.forget_connection("conn-2")  # never charged: nothing to drop, no error
    assert len(chain) == 2
    chain.forget_connection("conn-1")
    assert len(chain) == 1  # the client's bucket stays


@given(
    st.lists(
        st.tuples(
            st.one_of(st.just(0.0), st.floats(0.0, 3.0)),
            st.sampled_from(["frame", "bytes"]),
            st.integers(0, 700),
        ),
        max_size=60,
    )
)
def test_the_inbound_budget_refills_and_charges_as_two_token_buckets(
    steps: list[tuple[float, str, int]],
) -> None:
    """InboundBudget keeps its two buckets as numbers (idle memory): every charge is granted or
    refused exactly as a TokenBucket for frames and one for bytes would."""
    limits = Limits(
        inbound_frame_burst=5,
        inbound_frames_per_second=2.0,
        inbound_byte_burst=1000,
        inbound_bytes_per_second=300.0,
    )
    budget = InboundBudget(limits, 0.0)
    frames, data = TokenBucket(5.0, 2.0, 0.0), TokenBucket(1000.0, 300.0, 0.0)
    now = 0.0
    for wait, kind, n in steps:
        now += wait
        budget.refill(now)
        frames.refill(now)
        data.refill(now)
        if kind == "frame":
            assert (budget.charge_frame() is None) == frames.spend()
        else:
            assert (budget.charge_bytes(n) is None) == data.spend(n)
