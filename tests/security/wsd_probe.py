#!/usr/bin/env python3
"""Directed (unicast) WS-Discovery probe with the PyPI `wsdiscovery` codec.

Usage: wsd_probe.py IP [PORT] [--multicast-if ADDR] [--type {NS}LOCAL ...]

Builds a Probe and a Resolve with wsdiscovery's own message builders, sends
them unicast to IP:PORT (3702), parses the answers with wsdiscovery's parser
and then fetches the DPWS metadata (WS-Transfer Get) from the XAddrs.
Prints one JSON object. Only unicast to the given (loopback) address is
sent: the library's multicast daemon is not started, so nothing leaves the
machine. With `--multicast-if ADDR` (TAP lab, inside a test's own network
namespace) IP is the WS-Discovery group 239.255.255.250 and the probe is
multicast out of the interface that has ADDR, as a real client does. Each
`--type {NS}LOCAL` adds a type to the Probe (the library declares a prefix
for NS on the envelope); without any, the Probe has no types.
"""
import json
import socket
import sys
import urllib.request
import uuid

from wsdiscovery.actions import constructProbe, constructResolve
from wsdiscovery.message import createSOAPMessage, parseSOAPMessage
from wsdiscovery.qname import QName


def ask(sock, addr, env):
    msg = createSOAPMessage(env)
    sock.sendto(msg.encode() if isinstance(msg, str) else msg, addr)
    try:
        data, _ = sock.recvfrom(65535)
    except socket.timeout:
        return None
    return parseSOAPMessage(data, addr[0])


def main():
    args = sys.argv[1:]
    mif = None
    if "--multicast-if" in args:
        i = args.index("--multicast-if")
        mif = args[i + 1]
        del args[i : i + 2]
    types = []
    while "--type" in args:
        i = args.index("--type")
        ns, local = args[i + 1][1:].split("}", 1)
        types.append(QName(ns, local))
        del args[i : i + 2]
    ip = args[0]
    port = int(args[1]) if len(args) > 1 else 3702
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if mif is not None:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(mif))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sock.settimeout(2.0)
    addr = (ip, port)
    out = {"matches": [], "resolved": None, "metadata": None}
    reply = ask(sock, addr, constructProbe(types, []))
    if reply is not None:
        for m in reply.getProbeResolveMatches():
            out["matches"].append({"epr": m.getEPR(), "xaddrs": m.getXAddrs(), "types": [str(t) for t in m.getTypes()]})
    if out["matches"]:
        epr = out["matches"][0]["epr"]
        r = ask(sock, addr, constructResolve(epr))
        if r is not None:
            out["resolved"] = [m.getXAddrs() for m in r.getProbeResolveMatches()]
        xaddr = out["matches"][0]["xaddrs"][0]
        get = (
            '<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
            'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"><s:Header>'
            '<a:Action>http://schemas.xmlsoap.org/ws/2004/09/transfer/Get</a:Action>'
            f'<a:MessageID>{uuid.uuid4().urn}</a:MessageID><a:To>{epr}</a:To></s:Header><s:Body/></s:Envelope>'
        )
        req = urllib.request.Request(xaddr, data=get.encode(), headers={"Content-Type": "application/soap+xml"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            out["metadata"] = resp.read().decode()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
