"""Keys of twins and nodes: ed25519 signing keys, X25519 keys for sealing data between twins."""

from zos.identity.keys import (
    Identity,
    KeyError_,
    load_key_file,
    new_mnemonic,
    public_key_from_hex,
    seed_from_mnemonic,
    verify_ed25519,
    verify_sr25519,
    write_key_file,
)
from zos.identity.sealing import (
    SealError,
    box_open,
    box_seal,
    open_sealed,
    seal,
    shared_key,
    x25519_public_from_ed25519,
)

__all__ = [
    "Identity",
    "KeyError_",
    "SealError",
    "box_open",
    "box_seal",
    "load_key_file",
    "new_mnemonic",
    "open_sealed",
    "public_key_from_hex",
    "seal",
    "seed_from_mnemonic",
    "shared_key",
    "verify_ed25519",
    "verify_sr25519",
    "write_key_file",
    "x25519_public_from_ed25519",
]
