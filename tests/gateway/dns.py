"""A DNS server the tests control, answering the way CoreDNS answers for headless Services.

`_http._tcp.<svc>.<ns>.svc.<domain>` SRV queries get one record per pod, target
`<ip-dashed>.<svc>...`, with the targets' A records in the additional section; unknown names
get NXDOMAIN. UDP and TCP (the gateway falls back to TCP for a truncated answer). Records
change while the gateway runs (`set_pods`), and the server can stop answering (`paused`) or
truncate every UDP answer (`truncate`).
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading

from dnslib import QTYPE, RCODE, RR, SRV, A, DNSRecord


class DnsServer:
    def __init__(self, ttl: int = 5):
        self.ttl = ttl
        self.pods: dict[str, list[tuple[str, int]]] = {}  # SRV name -> [(ip, port)]
        self.hosts: dict[str, list[str]] = {}  # A name -> [ip]
        self.paused = False
        self.truncate = False
        self.queries = {"udp": 0, "tcp": 0}
        self.lock = threading.Lock()
        self.host = "127.0.0.1"
        self._udp = socketserver.ThreadingUDPServer((self.host, 0), self._udp_handler())
        port = self._udp.server_address[1]
        self._tcp = socketserver.ThreadingTCPServer((self.host, port), self._tcp_handler())
        self.port = port
        for server in (self._udp, self._tcp):
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def set_pods(self, srv_name: str, pods: list[tuple[str, int]] | None) -> None:
        """The ready pods behind an SRV name; None: the Service does not exist (NXDOMAIN)."""
        with self.lock:
            if pods is None:
                self.pods.pop(srv_name, None)
            else:
                self.pods[srv_name] = list(pods)

    def set_host(self, name: str, ips: list[str] | None) -> None:
        with self.lock:
            if ips is None:
                self.hosts.pop(name, None)
            else:
                self.hosts[name] = list(ips)

    def answer(self, data: bytes, udp: bool) -> bytes | None:
        request = DNSRecord.parse(data)
        reply = request.reply()
        name = str(request.q.qname).rstrip(".")
        with self.lock:
            self.queries["udp" if udp else "tcp"] += 1
            if self.paused:
                return None
            pods = self.pods.get(name)
            hosts = self.hosts.get(name)
            if request.q.qtype == QTYPE.SRV and pods is not None:
                service = name.split(".", 2)[2]  # drop _http._tcp.
                for ip, port in pods:
                    target = f"{ip.replace('.', '-')}.{service}"
                    reply.add_answer(RR(name, QTYPE.SRV, ttl=self.ttl, rdata=SRV(0, 100, port, target)))
                    reply.add_ar(RR(target, QTYPE.A, ttl=self.ttl, rdata=A(ip)))
            elif request.q.qtype == QTYPE.A and hosts is not None:
                for ip in hosts:
                    reply.add_answer(RR(name, QTYPE.A, ttl=self.ttl, rdata=A(ip)))
            elif pods is None and hosts is None:
                reply.header.rcode = RCODE.NXDOMAIN
            if udp and self.truncate:
                reply = request.reply()
                reply.header.tc = 1
        return reply.pack()

    def _udp_handler(self):
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                out = outer.answer(data, udp=True)
                if out is not None:
                    sock.sendto(out, self.client_address)

        return Handler

    def _tcp_handler(self):
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                sock: socket.socket = self.request
                head = sock.recv(2)
                if len(head) < 2:
                    return
                (length,) = struct.unpack("!H", head)
                data = b""
                while len(data) < length:
                    chunk = sock.recv(length - len(data))
                    if not chunk:
                        return
                    data += chunk
                out = outer.answer(data, udp=False)
                if out is not None:
                    sock.sendall(struct.pack("!H", len(out)) + out)

        return Handler

    def stop(self) -> None:
        for server in (self._udp, self._tcp):
            server.shutdown()
            server.server_close()
