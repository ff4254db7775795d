"""What the node agent's process loads: libraries only some nodes need stay out of it."""

from __future__ import annotations

import subprocess
import sys

from hangguard import HANG_GUARD


def test_the_agent_loads_without_aiohttp_or_cryptography() -> None:
    # nats-py would import aiohttp (~10 MiB) for websockets the bus never speaks;
    # cryptography (~7 MiB) is for encrypted volumes only, loaded by the first one.
    probe = (
        "import sys, zos.node.agent;"
        "loaded = {'aiohttp', 'cryptography'} & set(sys.modules);"
        "assert not loaded, f'the agent loaded {loaded}';"
        "from zos.primitives import fscrypt; assert len(fscrypt.key_identifier(bytes(32))) == 16;"
        "from aiohttp import web; from nats.aio import transport;"
        "assert web.Application and transport.aiohttp is None"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=HANG_GUARD)
