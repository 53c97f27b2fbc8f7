"""A hostile loopback HTTP/2 server for the tests, built on h2 directly (hypercorn plays
by the rules): it takes requests and never answers them, and once `lower_after` streams
are open it lowers SETTINGS_MAX_CONCURRENT_STREAMS from 100 to 1. Its certificate is from
a CA of its own (trustme), trusted through client_context()."""

from __future__ import annotations

import socket
import ssl
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trustme


class SilentSettingsServer:
    def __init__(self, *, lower_after: int = 2) -> None:
        self.lower_after = lower_after
        self.ca = trustme.CA()
        self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(self._server_context)
        self._server_context.set_alpn_protocols(["h2"])
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.requests = 0
        self.lowered = threading.Event()
        self._sockets: list[socket.socket] = []

    def start(self) -> SilentSettingsServer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def stop(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            sock = self._server_context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            return
        self._sockets.append(sock)
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        connection.initiate_connection()
        connection.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100})
        streams: set[int] = set()
        try:
            sock.sendall(connection.data_to_send())
            while data := sock.recv(65536):
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams.add(event.stream_id)
                        self.requests += 1
                if len(streams) >= self.lower_after and not self.lowered.is_set():
                    connection.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
                    self.lowered.set()
                sock.sendall(connection.data_to_send())
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
            return
