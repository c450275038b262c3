"""Listening sockets of a process, read from /proc (Linux; no dependency)."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path


def _address(hex_address: str, family: int) -> str:
    """/proc/net/tcp{,6} print each 32-bit word of the address in host byte order."""
    raw = bytes.fromhex(hex_address)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, raw)


def listening_addresses(pid: int, port: int) -> set[str]:
    """The addresses process ``pid`` listens on at TCP ``port`` (IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port and fields[9] in inodes:  # 0A: LISTEN
                found.add(_address(address, family))
    return found
