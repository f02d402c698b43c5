"""A tiny authoritative DNS server on 127.0.0.1 (UDP) answering SRV questions.

Real DNS on the wire, served with dnspython's message codec, so the SRV
discovery is tested end to end without touching any outside resolver.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class SrvDnsServer:
    def __init__(self, records: dict[str, list[tuple[str, int]]]) -> None:
        self.records = {name.rstrip(".") + ".": targets for name, targets in records.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text()
            if name not in self.records:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.SRV and self.records[name]:
                texts = [f"10 10 {port} {host}." for host, port in self.records[name]]
                response.answer.append(dns.rrset.from_text_list(name, 60, "IN", "SRV", texts))
            self.sock.sendto(response.to_wire(), peer)

    def __enter__(self) -> SrvDnsServer:
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
