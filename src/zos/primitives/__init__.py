"""Everything that touches the kernel or an external program (one place for it).

Loop devices, mounts and filesystems; network namespaces, bridges, veth and NAT over
netlink; WireGuard; runc bundles and cgroups; the reverse proxy. The engine and the
workload managers call these functions and never the kernel directly.
"""
