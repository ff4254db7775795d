"""Zero-OS: the node operating system of a decentralized cloud, and the grid around it."""

__version__ = "0.1.0"
