"""A server's TCP connections as the kernel lists them, so that a test waits for a request to be
taken or finished instead of sleeping."""
import os
import time

_LISTEN = "0A"


def _sockets():
    """(local port, state, inode) of every TCP socket the kernel lists, IPv4 and IPv6."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            yield int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]


def accepted(port: int) -> int:
    """How many connections to local ``port`` a server process has accepted and not closed yet.

    A connection still in the listen backlog is listed without an inode: accept() gives it one
    and the server's close() takes it away, whatever the client does.
    """
    count = 0
    for local_port, state, inode in _sockets():
        if local_port == port and state != _LISTEN and inode != "0":
            count += 1
    return count


def listening_ports(pid: int) -> set:
    """The TCP ports ``pid`` listens on: the kernel's LISTEN rows whose socket is one of the
    process's open files."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return {local_port for local_port, state, inode in _sockets()
            if state == _LISTEN and inode in inodes}


def wait_until(condition, timeout: float = 60.0, message: str = "timed out") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)
