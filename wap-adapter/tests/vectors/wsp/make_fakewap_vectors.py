#!/usr/bin/env python3
"""Regenerate fakewap/*.hex: the datagrams Kannel's WAP client simulator
(/usr/lib/kannel/test/fakewap) sends, captured on a loopback UDP socket.

A minimal responder stands in for the gateway: it answers a WTP Invoke
carrying Connect with a WTP Result carrying ConnectReply (session id 5),
any other method Invoke with a Result carrying Reply 200 text/vnd.wap.wml
(a Post's Invoke first with a WTP Ack: fakewap waits for it),
and a connectionless request with a connectionless Reply. Each datagram
fakewap sends is written, as hex, to fakewap/<scenario>-<n>.hex.
The same exchanges run live in tests/wsp_fakewap.rs, which checks that
fakewap still sends exactly these octets.  Usage: python3 make_fakewap_vectors.py
"""
import os, socket, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fakewap")
FAKEWAP = "/usr/lib/kannel/test/fakewap"
BODY = b"<wml><card><p>hi</p></card></wml>"

SCENARIOS = {
    "cl-get": (["-M", "0"], "http://127.0.0.1/hello.wml"),
    "cl-post": (["-M", "0", "-P", "POSTFILE", "-C", "text"], "http://127.0.0.1/cgi?x=1"),
    "co-get": (["-M", "1"], "http://127.0.0.1/hello.wml"),
    "co-post": (["-M", "1", "-P", "POSTFILE", "-A", "Nokia7110/1.0 (04.94)"], "http://127.0.0.1/form"),
}

def wtp_user_data(d):
    """WSP octets of a WTP Invoke (header, then TPIs while CON is set)."""
    con = d[0] & 0x80
    i = 4
    while con:
        t = d[i]
        con = t & 0x80
        i += 1 + (d[i + 1] + 1 if t & 0x04 else t & 0x03)
    return d[i:]

def run(name, args, url, postfile):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    port = s.getsockname()[1]
    argv = [FAKEWAP, "-g", "127.0.0.1", "-p", str(port)]
    argv += [postfile if a == "POSTFILE" else a for a in args] + [url]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    n = 0
    try:
        while True:
            try:
                d, addr = s.recvfrom(65535)
            except socket.timeout:
                break
            n += 1
            with open(os.path.join(OUT, f"{name}-{n}.hex"), "w") as f:
                f.write(d.hex() + "\n")
            if name.startswith("cl-"):
                s.sendto(bytes([d[0], 0x04, 0x20, 0x01, 0x88]) + BODY, addr)
                continue
            if (d[0] >> 3) & 0x0f != 1:
                continue  # Ack
            tid = ((d[1] & 0x7f) << 8) | d[2]
            wsp = wtp_user_data(d)
            if wsp[0] == 0x05:
                break  # Disconnect: done
            hdr = bytes([0x16, 0x80 | (tid >> 8), tid & 0xFF])
            if wsp[0] == 0x01:
                s.sendto(hdr + bytes([0x02, 0x05, 0x00, 0x00]), addr)
            else:
                if 0x60 <= wsp[0] <= 0x7F:
                    # fakewap takes a POST's Result only after an Ack of
                    # its Invoke.
                    s.sendto(bytes([0x18, 0x80 | (tid >> 8), tid & 0xFF]), addr)
                s.sendto(hdr + bytes([0x04, 0x20, 0x01, 0x88]) + BODY, addr)
    finally:
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "killed"
        s.close()
    print(name, n, "datagrams, fakewap exit", rc)

os.makedirs(OUT, exist_ok=True)
for f in os.listdir(OUT):
    os.unlink(os.path.join(OUT, f))
postfile = os.path.join(OUT, "..", "post-body.txt")
for name, (args, url) in SCENARIOS.items():
    run(name, args, url, postfile)
