"""A small promoted version with a context (catalogue, popular lists, neighbours), an API client on it, and
a TCP proxy that can cut a real Redis connection (to test fallbacks against a store that really goes away)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fusionrec.config import RunConfig
from pipelines.privacy import stored_user_id
from serving.app import create_app
from serving.store import open_store

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# item -> [title, category, brand, price]
CATALOGUE = {
    "i1": ["Red Shoe", "shoes", "acme", 50.0],
    "i2": ["Blue Shoe", "shoes", "acme", 60.0],
    "i3": ["Green Shoe", "shoes", "bolt", 70.0],
    "i4": ["Wool Hat", "hats", "acme", 20.0],
    "i5": ["Straw Hat", "hats", "bolt", 25.0],
    "i6": ["Toy Car", "toys", "zoom", 15.0],
    "i7": ["Toy Train", "toys", "zoom", 35.0],
    "i8": ["Mystery Box", None, None, None],
}


def publish(cfg: RunConfig, version: str = "v1", order: list[str] | None = None) -> None:
    """Promote a tiny version through a separate store object, as the pipeline would: keyed by the users'
    pseudonyms, which the API computes from the ids in requests."""
    order = order or ["i1", "i2", "i3", "i4", "i6", "i5", "i7", "i8"]
    u1 = [(item, 1.0 - 0.1 * rank, "i4" if item == "i1" else None) for rank, item in enumerate(order)]
    context = {
        "items": CATALOGUE,
        "popular": [["i6", 30.0], ["i4", 20.0], ["i1", 10.0]],
        "popular_by_category": {"toys": [["i6", 30.0], ["i7", 5.0]], "hats": [["i4", 20.0]]},
        "neighbours": {"i2": ["i1", "i3"], "i6": ["i7"]},
    }
    store = open_store(cfg)
    store.publish(
        version,
        {
            stored_user_id("u1", cfg.pseudonymise): u1,
            stored_user_id("u2", cfg.pseudonymise): [(f"x{j}", 1.0 / (j + 1)) for j in range(100)],
        },
        [("i6", 30.0), ("i4", 20.0), ("i1", 10.0)],
        {"source": "test"},
        context=context,
    )
    store.close()


@pytest.fixture
def cfg(tmp_path, monkeypatch) -> RunConfig:
    monkeypatch.setenv("FUSIONREC_ADMIN_TOKEN", TOKEN)
    return RunConfig.from_env(home=tmp_path, serving_store="sqlite")


@pytest.fixture
def client(cfg: RunConfig) -> Iterator[TestClient]:
    with TestClient(create_app(cfg)) as client:
        yield client


def items(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [i["item_id"] for i in response.json()["items"]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut()`` drops every connection and refuses new ones until
    ``restore()`` (so the client really sees its server go away and come back)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        assert self._listener is not None
        with contextlib.suppress(OSError):  # wakes the accept() thread on Linux; close alone would not
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()
