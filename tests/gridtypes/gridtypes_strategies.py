"""Hypothesis strategies for valid deployments of every workload type."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from zos.gridtypes import (
    ZDB,
    Deployment,
    Encryption,
    GatewayFQDNProxy,
    GatewayNameProxy,
    GiB,
    MachineCapacity,
    MachineInterface,
    MachineMount,
    MachineNetwork,
    MachineNetworkLight,
    MiB,
    Mycelium,
    MyceliumIP,
    Network,
    NetworkLight,
    Peer,
    PublicIP,
    PublicIPv4,
    QuantumCompression,
    QuantumSafeConfig,
    QuantumSafeFS,
    QuantumSafeFSConfig,
    QuantumSafeMeta,
    SignatureRequest,
    SignatureRequirement,
    Volume,
    Workload,
    ZdbBackend,
    ZdbGroup,
    ZLogs,
    ZMachine,
    ZMachineLight,
    ZMount,
)

U8 = st.integers(0, 2**8 - 1)
U16 = st.integers(0, 2**16 - 1)
U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
POSITIVE64 = st.integers(1, 2**64 - 1)
text = st.text(max_size=20)
names = st.from_regex(r"[a-zA-Z0-9_]{1,36}", fullmatch=True)


@st.composite
def hex_bytes(draw, n: int) -> str:
    return draw(st.binary(min_size=n, max_size=n)).hex()


@st.composite
def cidr4(draw, prefix: int | None = None) -> str:
    p = draw(st.integers(8, 30)) if prefix is None else prefix
    net = ipaddress.ip_network((draw(st.integers(0, 2**32 - 1)), p), strict=False)
    return str(net)


@st.composite
def peers(draw) -> Peer:
    return Peer(
        subnet=draw(cidr4(24)),
        wireguard_public_key=draw(st.text(min_size=1, max_size=44)),
        allowed_ips=draw(st.lists(cidr4(), min_size=1, max_size=3)),
        endpoint=draw(st.sampled_from(["", "1.2.3.4:6000", "[2a02:1802::1]:51820"])),
    )


@st.composite
def network(draw) -> Network:
    return Network(
        ip_range="10.20.0.0/16",
        subnet=f"10.20.{draw(st.integers(0, 255))}.0/24",
        wireguard_private_key=draw(st.text(min_size=1, max_size=44)),
        wireguard_listen_port=draw(U16),
        peers=draw(st.lists(peers(), max_size=2)),
        mycelium=draw(st.none() | st.builds(Mycelium, hex_key=hex_bytes(32))),
    )


@st.composite
def network_light(draw) -> NetworkLight:
    return NetworkLight(
        subnet=f"10.30.{draw(st.integers(0, 255))}.0/24",
        mycelium=Mycelium(hex_key=draw(hex_bytes(32))),
        ip_range=draw(st.sampled_from(["", "10.30.0.0/16"])),
        wireguard_private_key=draw(text),
        wireguard_listen_port=draw(U16),
        peers=draw(st.lists(peers(), max_size=2)),
    )


backends_http = st.lists(
    st.sampled_from(["http://185.206.122.35:8080", "http://10.1.2.3", "http://[2a02::5]:80"]),
    min_size=1,
    max_size=3,
)
backends_tls = st.lists(
    st.sampled_from(["185.206.122.35:443", "10.1.2.3:8443", "[2a02::5]:443"]),
    min_size=1,
    max_size=3,
)


@st.composite
def gateway_base(draw) -> dict:
    tls = draw(st.booleans())
    return {
        "tls_passthrough": tls,
        "backends": draw(backends_tls if tls else backends_http),
        "network": draw(st.none() | names),
    }


@st.composite
def qsfs(draw) -> QuantumSafeFS:
    backend = st.builds(ZdbBackend, address=text, namespace=text, password=text)
    minimal = draw(st.integers(0, 100))
    enc = st.builds(Encryption, algorithm=st.just("AES"), key=hex_bytes(32))
    return QuantumSafeFS(
        cache=draw(U64),
        config=QuantumSafeFSConfig(
            minimal_shards=minimal,
            expected_shards=draw(st.integers(minimal, 2**32 - 1)),
            redundant_groups=draw(U32),
            redundant_nodes=draw(U32),
            max_zdb_data_dir_size=draw(U32),
            encryption=draw(enc),
            meta=QuantumSafeMeta(
                type="zdb",
                config=QuantumSafeConfig(
                    prefix=draw(text),
                    encryption=draw(enc),
                    backends=draw(st.lists(backend, max_size=2)),
                ),
            ),
            groups=draw(st.lists(st.builds(ZdbGroup, backends=st.lists(backend, max_size=2)))),
            compression=QuantumCompression(algorithm=draw(st.sampled_from(["snappy", ""]))),
        ),
    )


@st.composite
def machine_common(draw) -> dict:
    cpu = draw(st.integers(1, 255))
    memory = draw(st.integers(250 * MiB, 2**40))
    cap = MachineCapacity(cpu=cpu, memory=memory)
    size = draw(st.sampled_from([0, 2 * GiB, 50 * GiB]))
    return {
        "flist": draw(st.sampled_from(["https://hub.grid.tf/x.flist", "https://h/y.fl"])),
        "size": size,
        "compute_capacity": cap,
        "entrypoint": draw(text),
        "env": draw(st.dictionaries(st.text(max_size=8), text, max_size=4)),
        "corex": draw(st.booleans()),
        "gpu": draw(st.lists(st.sampled_from(["0000:28:00.0/1002/731f", "0000:01:00.0/10de/1"]))),
    }


SIMPLE = {
    "zmount": st.builds(ZMount, size=POSITIVE64),
    "volume": st.builds(Volume, size=POSITIVE64),
    "zdb": st.builds(
        ZDB,
        size=POSITIVE64,
        mode=st.sampled_from(["user", "seq"]),
        # What a node accepts: printable ASCII without spaces, at most 63, not "*".
        password=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20).filter(
            lambda p: p != "*"
        ),
        public=st.booleans(),
    ),
    "ip": st.builds(PublicIP, v4=st.booleans(), v6=st.just(True))
    | st.builds(PublicIP, v4=st.just(True), v6=st.booleans()),
    "ipv4": st.just(PublicIPv4()),
    "network": network(),
    "network-light": network_light(),
    "gateway-name-proxy": gateway_base().flatmap(
        lambda base: st.builds(
            GatewayNameProxy,
            name=st.from_regex(r"[a-zA-Z0-9_-]{1,20}", fullmatch=True),
            **{k: st.just(v) for k, v in base.items()},
        )
    ),
    "gateway-fqdn-proxy": gateway_base().flatmap(
        lambda base: st.builds(
            GatewayFQDNProxy,
            fqdn=st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){1,3}", fullmatch=True),
            **{k: st.just(v) for k, v in base.items()},
        )
    ),
    "qsfs": qsfs(),
}


@st.composite
def deployments(draw, max_simple: int = 4) -> Deployment:
    """A valid deployment (passes zos.gridtypes.validate), unsigned."""
    version = draw(st.integers(0, 5))
    wl_names = iter(draw(st.lists(names, min_size=12, max_size=12, unique=True)))
    workloads: list[Workload] = []

    def add(data, wl_type: str) -> Workload:
        wl = Workload(
            version=draw(st.integers(0, version)),
            name=next(wl_names),
            type=wl_type,
            data=data,
            metadata=draw(text),
            description=draw(text),
        )
        workloads.append(wl)
        return wl

    for wl_type in draw(st.lists(st.sampled_from(sorted(SIMPLE)), max_size=max_simple)):
        add(draw(SIMPLE[wl_type]), wl_type)

    if draw(st.booleans()):  # a machine with a disk, maybe a public ip, maybe logs
        disk = add(ZMount(size=draw(POSITIVE64)), "zmount")
        ip = add(PublicIP(v4=True), "ip") if draw(st.booleans()) else None
        myc = draw(st.none() | st.builds(MyceliumIP, network=names, hex_seed=hex_bytes(6)))
        vm = add(
            ZMachine(
                network=MachineNetwork(
                    public_ip=ip.name if ip else "",
                    planetary=draw(st.booleans()),
                    mycelium=myc,
                    interfaces=[MachineInterface(network="net1", ip="10.20.2.5")],
                ),
                mounts=[MachineMount(name=disk.name, mountpoint="/data")],
                **draw(machine_common()),
            ),
            "zmachine",
        )
        if draw(st.booleans()):
            add(ZLogs(zmachine=vm.name, output="redis://10.20.2.9:6379"), "zlogs")
    if draw(st.booleans()):
        add(
            ZMachineLight(
                network=MachineNetworkLight(
                    mycelium=draw(
                        st.none() | st.builds(MyceliumIP, network=names, hex_seed=hex_bytes(6))
                    ),
                    interfaces=[MachineInterface(network="netlight", ip="10.30.1.2")],
                ),
                **draw(machine_common()),
            ),
            "zmachine-light",
        )

    owner = draw(st.integers(1, 2**32 - 1))
    others = draw(
        st.lists(st.integers(1, 2**32 - 1).filter(lambda t: t != owner), max_size=2, unique=True)
    )
    requests = [
        SignatureRequest(twin_id=t, required=draw(st.booleans()), weight=draw(st.integers(0, 100)))
        for t in [owner, *others]
    ]
    total = sum(r.weight for r in requests)
    return Deployment(
        version=version,
        twin_id=owner,
        contract_id=draw(U64),
        metadata=draw(text),
        description=draw(text),
        expiration=draw(I64),
        signature_requirement=SignatureRequirement(
            requests=requests,
            weight_required=draw(st.integers(0, total)),
            signature_style=draw(st.sampled_from(["", "polka-wallet"])),
        ),
        workloads=workloads,
    )
