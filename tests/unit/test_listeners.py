"""`--bind` address forms. (Opening sockets is tested in tests/functional/test_cli.py.)"""

from __future__ import annotations

import pytest
from brick.listeners import Address, parse_address

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8000", Address("tcp", host="127.0.0.1", port=8000)),
        ("0.0.0.0:0", Address("tcp", host="0.0.0.0", port=0)),
        ("localhost:65535", Address("tcp", host="localhost", port=65535)),
        (":9000", Address("tcp", host="0.0.0.0", port=9000)),
        ("example.org", Address("tcp", host="example.org", port=8000)),
        ("[::1]:8080", Address("tcp", host="::1", port=8080)),
        ("[::]:80", Address("tcp", host="::", port=80)),
        ("[fe80::1%eth0]:80", Address("tcp", host="fe80::1%eth0", port=80)),
        ("[::1]", Address("tcp", host="::1", port=8000)),
        ("unix:/run/brick.sock", Address("unix", path="/run/brick.sock")),
        ("unix:relative.sock", Address("unix", path="relative.sock")),
        ("unix:///run/brick.sock", Address("unix", path="/run/brick.sock")),
        ("fd://3", Address("fd", fd=3)),
    ],
)
def test_valid_addresses(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (Address("tcp", host="127.0.0.1", port=80), "127.0.0.1:80"),
        (Address("tcp", host="::1", port=80), "[::1]:80"),
        (Address("unix", path="/s"), "unix:/s"),
        (Address("fd", fd=4), "fd://4"),
    ],
)
def test_str_round_trips(address: Address, text: str) -> None:
    assert str(address) == text
    assert parse_address(text) == address


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1:http", "invalid port"),
        ("127.0.0.1:", "invalid port"),
        ("127.0.0.1:65536", "invalid port"),
        ("127.0.0.1:-1", "invalid port"),
        ("127.0.0.1:\uff18\uff10", "invalid port"),  # fullwidth digits: isdigit() is true
        ("::1:80", "needs brackets"),
        ("::1", "needs brackets"),
        ("[::1:80", "expected [IPv6]:PORT"),
        ("[::1]80", "expected [IPv6]:PORT"),
        ("[::1]:", "invalid port"),
        ("[127.0.0.1]:80", "expected an IPv6 address"),
        ("[]:80", "expected an IPv6 address"),
        ("bad host:80", "invalid host"),
        ("unix:", "empty unix socket path"),
        ("unix://", "empty unix socket path"),
        ("fd://", "fd:// needs a file descriptor number"),
        ("fd://3x", "fd:// needs a file descriptor number"),
        ("fd://-1", "fd:// needs a file descriptor number"),
    ],
)
def test_invalid_addresses(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_address(text)
    assert message in str(info.value)
    assert repr(text) in str(info.value)
