"""What a list of CIDR ranges really admits, however it is spelled.

``0.0.0.0/0`` is not the only way to open an endpoint to the internet: ``[0.0.0.0/1, 128.0.0.0/1]`` is the same,
and IPv6 forms that embed IPv4 addresses (``::ffff:0:0/96``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) cover all
of IPv4 too. :func:`breadth_problem` judges the union of the ranges, in addresses, not their spelling.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TypeVar

# One IP version at a time: ipaddress.collapse_addresses refuses to mix IPv4 and IPv6 networks.
Network = TypeVar("Network", ipaddress.IPv4Network, ipaddress.IPv6Network)

# Address space that is not "the internet": private, shared (CGNAT), loopback and link-local.
NON_PUBLIC_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16"))
NON_PUBLIC_V6 = tuple(ipaddress.IPv6Network(n) for n in ("fc00::/7", "fe80::/10", "::1/128"))
# The widest public ranges one stack may admit without access.allowAnySource: a /8 of IPv4 (16.7 million
# addresses, a whole cloud provider's allocation) and a /32 of IPv6 (a whole ISP's allocation).
MAX_PUBLIC_V4 = 2 ** 24
MAX_PUBLIC_V6 = 2 ** 96

# IPv6 prefixes whose low 32 bits are an IPv4 address: IPv4-mapped, IPv4-translated (SIIT), IPv4-compatible
# (deprecated) and the NAT64 well-known prefix (RFC 4291, RFC 2765, RFC 6052).
_EMBED_LOW32 = tuple(ipaddress.IPv6Network(n) for n in ("::ffff:0:0/96", "::ffff:0:0:0/96", "::/96", "64:ff9b::/96"))
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")   # bits 16..47 are an IPv4 address (RFC 3056)


def ipv4_inside(net: ipaddress.IPv6Network) -> list[ipaddress.IPv4Network]:
    """The IPv4 addresses an IPv6 range admits through the IPv4-embedding prefixes."""
    out: list[ipaddress.IPv4Network] = []
    for prefix in _EMBED_LOW32:
        if prefix.subnet_of(net):
            out.append(ipaddress.IPv4Network("0.0.0.0/0"))
        elif net.subnet_of(prefix):
            low = int(net.network_address) & 0xFFFFFFFF
            out.append(ipaddress.IPv4Network((low, net.prefixlen - 96)))
    if _SIX_TO_FOUR.subnet_of(net):
        out.append(ipaddress.IPv4Network("0.0.0.0/0"))
    elif net.subnet_of(_SIX_TO_FOUR):
        v4 = (int(net.network_address) >> 80) & 0xFFFFFFFF
        bits = min(32, net.prefixlen - 16)
        out.append(ipaddress.IPv4Network((v4 >> (32 - bits) << (32 - bits) if bits else 0, bits)))
    return out


def _public_size(nets: Iterable[Network], non_public: tuple[Network, ...]) -> int:
    """Addresses in the union of ``nets`` outside ``non_public``."""
    collapsed = list(ipaddress.collapse_addresses(nets))
    total = sum(n.num_addresses for n in collapsed)
    for private in non_public:
        for n in collapsed:
            if n.overlaps(private):
                total -= min(n, private, key=lambda x: x.num_addresses).num_addresses
    return total


def breadth_problem(ranges: Iterable[str]) -> str | None:
    """Why these ranges are (nearly) the whole internet, or None when they are a bounded set of clients."""
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for text in ranges:
        net = ipaddress.ip_network(text, strict=False)
        if isinstance(net, ipaddress.IPv4Network):
            v4.append(net)
        else:
            v6.append(net)
            v4.extend(ipv4_inside(net))
    everything4 = ipaddress.IPv4Network("0.0.0.0/0")
    everything6 = ipaddress.IPv6Network("::/0")
    if v4 and list(ipaddress.collapse_addresses(v4)) == [everything4]:
        return "together the ranges admit every IPv4 address (the same as 0.0.0.0/0)"
    if v6 and list(ipaddress.collapse_addresses(v6)) == [everything6]:
        return "together the ranges admit every IPv6 address (the same as ::/0)"
    public4 = _public_size(v4, NON_PUBLIC_V4) if v4 else 0
    if public4 > MAX_PUBLIC_V4:
        return (f"the ranges admit {public4:,} public IPv4 addresses, more than a /8 "
                f"({MAX_PUBLIC_V4:,}): that is most of the internet, not a list of clients")
    public6 = _public_size(v6, NON_PUBLIC_V6) if v6 else 0
    if public6 > MAX_PUBLIC_V6:
        return "the ranges admit more public IPv6 addresses than a /32: that is most of the internet"
    return None
