// Builds and signs deployments with the official ThreeFold TypeScript client
// (@threefold/grid_client) and prints them as JSON test vectors for
// tests/gridtypes/test_ts_vectors.py. The tests only read the committed output
// (ts_client.json); npm is needed only to regenerate it:
//
//   mkdir -p /tmp/tsvec && cd /tmp/tsvec && npm init -y >/dev/null
//   npm install @threefold/grid_client@2.9.2
//   NODE_PATH=/tmp/tsvec/node_modules node <repo>/tests/gridtypes/vectors/generate_ts_vectors.mjs \
//     > <repo>/tests/gridtypes/vectors/ts_client.json
//
// Every deployment is built with the client's own classes (its primitives where it
// has one for the type, as its high-level modules do), hashed with its own
// challenge()/challenge_hash() and signed with its own Deployment.sign().
// The JSON recorded is JSON.stringify of the client's object: what it sends to a node.
//
// `network_plans` records a multi-node network planned offline by the client's own
// planner (its primitives `Network` class: addNode, addAccess), with the node answers it
// asks over RMB (public config, interfaces, taken WireGuard ports) and the grid proxy's
// access nodes injected; tests/client/test_netplan.py compares zos's planner with it. The
// client's randomness (tweetnacl keys, Math.random ports) is seeded so the output is the
// same on every run; the "network-mesh" vector is that plan's access node workload as the
// client sends it (data and the metadata its deploy handler writes).
//
// The deprecated `ipv4` type is missing: this client version refuses to build it (its
// Workload validator rejects PublicIPv4 data), so its vectors are derived by hand in
// test_ts_vectors.py from the same format.

import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.NODE_PATH || process.cwd(), "x.js"));
const grid = require("@threefold/grid_client");
const gridDir = path.dirname(require.resolve("@threefold/grid_client"));
const { QSFSPrimitive } = require(path.join(gridDir, "primitives/qsfs.js"));
const { Keyring } = require("@polkadot/keyring");
const { waitReady } = require("@polkadot/wasm-crypto");
const gridPackage = require(path.join(gridDir, "../../package.json"));
const gridRequire = createRequire(path.join(gridDir, "index.js"));
const nacl = gridRequire("tweetnacl");

const {
  DeploymentFactory,
  DiskPrimitive,
  GWPrimitive,
  KeypairType,
  Mycelium,
  Network,
  NetworkLight,
  Peer,
  PublicIPPrimitive,
  SignatureRequest,
  VMLightPrimitive,
  VMPrimitive,
  Volume,
  Workload,
  WorkloadTypes,
  ZdbBackend,
  ZdbGroup,
  ZdbPrimitive,
  ZlogsPrimitive,
  Znet,
} = grid;

// Well-known public test mnemonics (never hold funds).
const OWNER_MNEMONIC = "bottom drive obey lake curtain smoke basket hold race lonely fit walk";
const COSIGNER_MNEMONIC =
  "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
const OWNER_TWIN = 41;
const COSIGNER_TWIN = 42;
const EXPIRATION = 1700000000;

function workload(type, name, data, metadata = "", description = "") {
  const wl = new Workload();
  wl.version = 0;
  wl.name = name;
  wl.type = type;
  wl.data = data;
  wl.metadata = metadata;
  wl.description = description;
  return wl;
}

function volume() {
  const v = new Volume();
  v.size = 5 * 1024 ** 3;
  return workload(WorkloadTypes.volume, "vol1", v, "", "a volume");
}

function network() {
  const znet = new Znet();
  znet.ip_range = "10.20.0.0/16";
  znet.subnet = "10.20.2.0/24";
  znet.wireguard_private_key = "GDU+cjKrHNJS9fodzjFDzNFl5su3kJXTZ3ipPgUjOUE=";
  znet.wireguard_listen_port = 6882;
  const peer = new Peer();
  peer.subnet = "10.20.3.0/24";
  peer.wireguard_public_key = "cYvKjMRBLj3o3e4lxWOK6B9Xu8KR6Rp6t2TBlV4N8Hk=";
  peer.allowed_ips = ["10.20.3.0/24", "100.64.20.3/32"];
  peer.endpoint = "185.206.122.31:6882";
  znet.peers = [peer];
  const mycelium = new Mycelium();
  mycelium.hex_key = "8e3a7c1d52b4f6a09e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a291807f6e5d4c3";
  mycelium.peers = [];
  znet.mycelium = mycelium;
  return workload(
    WorkloadTypes.network,
    "net1",
    znet,
    JSON.stringify({ type: "network", name: "net1", version: 3, user_accesses: [] }),
    "a network",
  );
}

function networkLight() {
  const net = new NetworkLight();
  net.ip_range = "10.30.0.0/16";
  net.subnet = "10.30.4.0/24";
  net.wireguard_private_key = "mMzLzDBTBbL7TyjMI5MMWvfmHqBYkRSCBbKOmW1NtGU=";
  net.wireguard_listen_port = 3011;
  const peer = new Peer();
  peer.subnet = "10.30.5.0/24";
  peer.wireguard_public_key = "tI4gKhmvf3FxbwDmR2/dDjBu+fNPaFcxxJq3Pwr2hhE=";
  peer.allowed_ips = ["10.30.5.0/24", "100.64.30.5/32"];
  peer.endpoint = "[2a02:1802:5e:0:1::7]:3011";
  net.peers = [peer];
  net["node_id"] = 11; // the client's own addNode() adds this (unknown to zos)
  const mycelium = new Mycelium();
  mycelium.hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
  mycelium.peers = [];
  net.mycelium = mycelium;
  return workload(WorkloadTypes.networklight, "netlight1", net);
}

function zmachine() {
  const disks = [new DiskPrimitive().createMount("data1", "/data")];
  return new VMPrimitive().create(
    "vm1",
    "https://hub.grid.tf/tf-official-apps/base:latest.flist",
    2,
    2048,
    15,
    disks,
    "net1",
    "10.20.2.5",
    true,
    true,
    "a1b2c3d4e5f6",
    "pip1",
    "/sbin/zinit init",
    { SSH_KEY: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI test@zos", A_VAR: "x=y", Z: "" },
    JSON.stringify({ type: "vm", name: "vm1" }),
    "a virtual machine",
    0,
    false,
    ["0000:28:00.0/1002/731f"],
  );
}

function zmachineLight() {
  return new VMLightPrimitive().create(
    "vmlight1",
    "https://hub.grid.tf/tf-official-apps/base:latest.flist",
    1,
    512,
    0,
    [],
    "netlight1",
    "10.30.4.7",
    false,
    true,
    "0f1e2d3c4b5a",
    "",
    "/sbin/zinit init",
    { HELLO: "world" },
  );
}

function qsfs() {
  const backend = (i) => {
    const b = new ZdbBackend();
    b.address = `[2a02:1802:5e:0:${i}::1]:9900`;
    b.namespace = `ns${i}`;
    b.password = `pw${i}`;
    return b;
  };
  const group = new ZdbGroup();
  group.backends = [backend(1), backend(2), backend(3)];
  return new QSFSPrimitive().create(
    "qsfs1",
    2,
    3,
    "qsfs-meta",
    [backend(7), backend(8)],
    [group],
    "a secret passphrase",
    2,
  );
}

// ---- a network planned by the client's own planner ------------------------------------

// mulberry32: a small seeded PRNG, so the client's random keys and ports repeat.
function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// What each node answers over RMB: 11 has a public config (public IPv4 and IPv6),
// 12 has none but a public IPv6 on its zos interface, 13 is hidden (private addresses only).
const MESH = {
  name: "mesh",
  ip_range: "10.40.0.0/16",
  nodes: [
    {
      node_id: 11,
      public_config: {
        type: "macvlan",
        ipv4: "185.206.122.31/24",
        ipv6: "2a02:1802:5e:0:1::31/64",
        gw4: "185.206.122.1",
        gw6: "2a02:1802:5e:0:1::1",
        domain: "node11.example.com",
      },
      interfaces: { zos: ["10.10.0.11"], ygg: ["300:1234::11"] },
      taken_ports: [6882, 20000],
    },
    {
      node_id: 12,
      public_config: null,
      interfaces: { zos: ["192.168.1.12", "2a02:1802:5e:0:2::12"], ygg: [] },
      taken_ports: [],
    },
    {
      node_id: 13,
      public_config: null,
      interfaces: { zos: ["192.168.1.13"], ygg: [] },
      taken_ports: [3000],
    },
  ],
  // the steps, as the client's machine deployer calls them
  steps: [
    { add_node: 11 },
    { add_node: 12 },
    { add_node: 13 },
    { add_access: 11 },
  ],
};

function offlineNetwork(spec) {
  const byId = Object.fromEntries(spec.nodes.map((n) => [n.node_id, n]));
  const twinOf = (nodeId) => 1000 + nodeId;
  const nodeOfTwin = (twin) => byId[twin - 1000];
  const config = { twinId: OWNER_TWIN, backendStorage: { load: async () => ({}), list: async () => [] } };
  const network = new Network(spec.name, spec.ip_range, config);
  network.rmb = {
    request: async ([twin], cmd) => {
      const node = nodeOfTwin(twin);
      if (cmd === "zos.network.public_config_get") {
        if (!node.public_config) throw new Error("no public config");
        return node.public_config;
      }
      if (cmd === "zos.network.interfaces") return node.interfaces;
      if (cmd === "zos.network.list_wg_ports") return node.taken_ports;
      throw new Error(`unexpected ${cmd}`);
    },
  };
  network.capacity = {
    getNodeTwinId: async (nodeId) => twinOf(nodeId),
    getNode: async () => ({ features: ["zmachine", "network", "wireguard", "mycelium"] }),
    // the grid proxy's access nodes: those with a public IPv4 in their public config
    getAccessNodes: async () =>
      Object.fromEntries(
        spec.nodes
          .filter((n) => n.public_config && n.public_config.ipv4)
          .map((n) => [n.node_id, { ipv4: n.public_config.ipv4, ipv6: n.public_config.ipv6, domain: "" }]),
      ),
  };
  network.exists = async () => false;
  return network;
}

async function planNetwork(spec) {
  const random = seeded(14);
  const realRandom = Math.random;
  const realLog = console.log;
  Math.random = random;
  nacl.setPRNG((x, n) => {
    for (let i = 0; i < n; i++) x[i] = Math.floor(random() * 256);
  });
  console.log = (...args) => console.error(...args); // the planner logs to stdout
  try {
    const network = offlineNetwork(spec);
    const workloads = {};
    let wgConfig = "";
    for (const step of spec.steps) {
      if (step.add_node !== undefined) {
        workloads[step.add_node] = await network.addNode(step.add_node, false, "a mesh node");
      } else {
        wgConfig = await network.addAccess(step.add_access, true);
      }
    }
    // what the client's deploy handler does to every network workload before sending it
    for (const [nodeId, wl] of Object.entries(workloads)) network.updateWorkload(+nodeId, wl);
    return {
      ...spec,
      workloads: Object.fromEntries(Object.entries(workloads).map(([id, wl]) => [id, JSON.parse(JSON.stringify(wl))])),
      user_accesses: network.userAccesses,
      wg_config: wgConfig,
      _objects: workloads,
    };
  } finally {
    Math.random = realRandom;
    console.log = realLog;
  }
}

// One deployment per workload type, then deployments mixing types.
function cases(mesh) {
  const disk = () => new DiskPrimitive().create(10, "data1", "", "a disk");
  return [
    { name: "zmount", workloads: () => [disk()] },
    { name: "volume", workloads: () => [volume()] },
    {
      name: "zdb",
      workloads: () => [new ZdbPrimitive().create("zdb1", 7, "user", "s3cr3t!", true)],
    },
    { name: "ip", workloads: () => [new PublicIPPrimitive().create("pip1", "", "", 0, true, true)] },
    { name: "network", workloads: () => [network()] },
    { name: "network-light", workloads: () => [networkLight()] },
    // the mesh's access node workload (peers with and without endpoint, user access metadata)
    { name: "network-mesh", workloads: () => [mesh._objects[11]] },
    {
      name: "zmachine",
      workloads: () => [disk(), new PublicIPPrimitive().create("pip1", "", "", 0, true, false), zmachine()],
    },
    { name: "zmachine-light", workloads: () => [zmachineLight()] },
    {
      name: "gateway-name-proxy",
      workloads: () => [
        new GWPrimitive().createName("mygw", false, ["http://185.206.122.35:8080"], undefined),
      ],
    },
    {
      name: "gateway-fqdn-proxy",
      workloads: () => [
        new GWPrimitive().createFQDN(
          "app.example.com",
          true,
          ["10.20.2.5:443"],
          "fqdngw",
          "net1",
        ),
      ],
    },
    {
      name: "zlogs",
      workloads: () => [
        disk(),
        new PublicIPPrimitive().create("pip1", "", "", 0, true, false),
        zmachine(),
        new ZlogsPrimitive().create("vm1", "redis://10.20.2.9:6379/logs"),
      ],
    },
    { name: "qsfs", workloads: () => [qsfs()] },
    {
      name: "all-types",
      workloads: () => [
        network(),
        networkLight(),
        disk(),
        volume(),
        new ZdbPrimitive().create("zdb1", 7, "seq", "pw", false),
        new PublicIPPrimitive().create("pip1", "", "", 0, true, true),
        zmachine(),
        zmachineLight(),
        new GWPrimitive().createName("mygw", true, ["185.206.122.35:443"], "net1"),
        new GWPrimitive().createFQDN("app.example.com", false, ["http://10.20.2.5:80"], "fqdngw", "net1"),
        new ZlogsPrimitive().create("vm1", "wss://logs.example.com/stream"),
        qsfs(),
      ],
    },
  ];
}

async function publicKeys(mnemonic) {
  const out = {};
  for (const type of ["ed25519", "sr25519"]) {
    out[type] = Buffer.from(new Keyring({ type }).addFromUri(mnemonic).publicKey).toString("hex");
  }
  return out;
}

async function build(spec, keyType, multisig) {
  const factory = new DeploymentFactory({ twinId: OWNER_TWIN });
  const d = factory.create(spec.workloads(), EXPIRATION, `{"type":"${spec.name}"}`, "built by grid_client");
  const signers = [{ twin: OWNER_TWIN, mnemonic: OWNER_MNEMONIC }];
  if (multisig) {
    const cosigner = new SignatureRequest();
    cosigner.twin_id = COSIGNER_TWIN;
    cosigner.required = true;
    cosigner.weight = 2;
    d.signature_requirement.requests.push(cosigner);
    d.signature_requirement.weight_required = 3;
    signers.push({ twin: COSIGNER_TWIN, mnemonic: COSIGNER_MNEMONIC });
  }
  const challenge = d.challenge();
  const hash = d.challenge_hash();
  for (const s of signers) {
    await d.sign(s.twin, s.mnemonic, keyType === "sr25519" ? KeypairType.sr25519 : KeypairType.ed25519);
  }
  return {
    name: `${spec.name}${multisig ? "+multisig" : ""}${keyType === "sr25519" ? "+sr25519" : ""}`,
    types: [...new Set(d.workloads.map((w) => w.type))],
    key_type: keyType,
    signers: signers.map((s) => s.twin),
    challenge,
    hash,
    deployment_json: JSON.stringify(d),
  };
}

async function main() {
  await waitReady();
  const mesh = await planNetwork(MESH);
  const vectors = [];
  for (const spec of cases(mesh)) {
    vectors.push(await build(spec, "ed25519", false));
  }
  const all = cases(mesh).find((c) => c.name === "all-types");
  vectors.push(await build(all, "sr25519", false));
  vectors.push(await build(all, "ed25519", true));
  vectors.push(await build(cases(mesh)[0], "sr25519", true));
  delete mesh._objects;
  const out = {
    generator: "tests/gridtypes/vectors/generate_ts_vectors.mjs",
    package: `${gridPackage.name}@${gridPackage.version}`,
    twins: {
      [OWNER_TWIN]: { mnemonic: OWNER_MNEMONIC, ...(await publicKeys(OWNER_MNEMONIC)) },
      [COSIGNER_TWIN]: { mnemonic: COSIGNER_MNEMONIC, ...(await publicKeys(COSIGNER_MNEMONIC)) },
    },
    vectors,
    network_plans: [mesh],
  };
  process.stdout.write(JSON.stringify(out, null, 1) + "\n");
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
