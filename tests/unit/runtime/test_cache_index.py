"""The node cache's bookkeeping (pure): LRU eviction within the bound, leases that protect an entry being read,
reservations of fills in progress, and the allowed endpoints of presigned URLs."""

from __future__ import annotations

import pytest

from modelapi_runtime.cache_agent.index import Entry, Index, NoRoom
from modelapi_runtime.cache_agent.presigned import EndpointNotAllowed, Store, object_key, parse_endpoint
from modelapi_runtime.exceptions import InvalidArtifactSpec


def _index(*sizes: int, bound: int = 100) -> Index:
    index = Index(bound)
    for n, size in enumerate(sizes):
        index.entries[f"k{n}"] = Entry(f"k{n}", f'"e{n}"', size, f"{n:064x}", last_used=float(n))
    return index


def test_reserve_evicts_least_recently_used_first_and_only_what_it_needs() -> None:
    index = _index(30, 30, 30)  # k0 oldest
    victims = index.reserve(50)  # 90 + 50 is 40 over the bound: two entries of 30 must go
    assert [v.key for v in victims] == ["k0", "k1"]
    assert sorted(index.entries) == ["k2"]
    assert index.used_bytes == 30 + 50  # the reservation counts until the fill is added or given up


def test_a_lease_keeps_an_entry_and_a_use_makes_it_recent() -> None:
    index = _index(30, 30, 30)
    entry = index.lease("k0", now=10.0)  # k0 in use and now the most recent
    victims = index.reserve(50)
    assert [v.key for v in victims] == ["k1", "k2"]
    assert "k0" in index.entries
    Index.release(entry)
    assert entry.leases == 0


def test_no_room_when_what_would_have_to_go_is_in_use_and_nothing_is_evicted() -> None:
    index = _index(60, 30)
    index.lease("k0", now=5.0)
    with pytest.raises(NoRoom, match="in use or being filled"):
        index.reserve(50)
    assert sorted(index.entries) == ["k0", "k1"]  # k1 could have gone, but it would not have made room
    assert index.reserved == 0


def test_an_artifact_larger_than_the_cache_is_refused_naming_both_sizes() -> None:
    with pytest.raises(NoRoom, match="150 bytes is more than the whole cache \\(100 bytes\\)"):
        _index().reserve(150)


def test_two_fills_cannot_count_on_the_same_free_space() -> None:
    index = _index(bound=100)
    index.reserve(60)
    with pytest.raises(NoRoom):
        index.reserve(60)
    index.unreserve(60)
    assert index.reserve(60) == []


def test_a_completed_fill_turns_its_reservation_into_an_entry_and_replaces_an_older_version() -> None:
    index = _index(40)
    old = index.lease("k0", now=1.0)
    index.reserve(50)
    new = Entry("k0", '"e9"', 50, "f" * 64, last_used=2.0)
    index.add(new, 50)
    assert index.reserved == 0
    assert index.entries["k0"] is new
    assert index.match("k0", '"e9"', 50) is new
    assert index.match("k0", '"e0"', 40) is None  # the store's version decides
    Index.release(old)  # the pod still reading the old version releases the old entry, not the new one
    assert new.leases == 0
    assert old.leases == 0


def test_match_needs_the_same_etag_and_size() -> None:
    index = _index(40)
    assert index.match("k0", '"e0"', 40) is not None
    assert index.match("k0", '"e0"', 41) is None
    assert index.match("k0", '"other"', 40) is None
    assert index.match("k9", '"e0"', 40) is None


@pytest.mark.parametrize(
    ("endpoint", "url", "allowed"),
    [
        ("http://10.245.0.1:9000", "http://10.245.0.1:9000/models/a.onnx?X-Amz-Signature=x", True),
        ("http://10.245.0.1:9000", "http://10.245.0.1:9001/models/a.onnx", False),
        ("http://10.245.0.1:9000", "https://10.245.0.1:9000/models/a.onnx", False),
        ("https://*.amazonaws.com", "https://models.s3.eu-west-1.amazonaws.com/a.onnx", True),
        ("https://*.amazonaws.com", "https://amazonaws.com.evil.example/a.onnx", False),
        ("https://*.amazonaws.com", "https://evilamazonaws.com/a.onnx", False),
        ("https://s3.example.com", "https://s3.example.com:443/a.onnx", True),
        ("https://s3.example.com", "http://169.254.169.254/latest/meta-data", False),
    ],
)
def test_only_allowed_endpoints_are_called(endpoint: str, url: str, allowed: bool) -> None:
    store = Store([endpoint])
    if allowed:
        store.check(url)
    else:
        with pytest.raises(EndpointNotAllowed, match="may not call that endpoint"):
            store.check(url)


def test_urls_with_userinfo_or_another_scheme_are_refused_without_echoing_their_query() -> None:
    store = Store(["http://10.0.0.1"])
    for url in ("http://user:pw@10.0.0.1/a?X-Amz-Signature=secret", "file:///etc/passwd", "ftp://10.0.0.1/a"):
        with pytest.raises(InvalidArtifactSpec) as raised:
            store.check(url)
        assert "secret" not in raised.value.message
        assert "pw" not in raised.value.message


def test_the_object_key_has_no_query_and_a_normal_port() -> None:
    assert (
        object_key("HTTPS://S3.example.com/models/a.onnx?X-Amz-Signature=abc")
        == "https://s3.example.com:443/models/a.onnx"
    )
    assert parse_endpoint("https://*.amazonaws.com").host == ".amazonaws.com"
