"""What a VM's names may look like, in one place: the host and the guest agree on them."""

from __future__ import annotations

import re

HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,62})$")  # zos names allow _
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")  # lower case, as the guest's sysfs has it
DISK_SERIAL = re.compile(r"^[A-Za-z0-9_-]{1,20}$")  # virtio-blk keeps 20 bytes
SHARE_TAG = re.compile(r"^[A-Za-z0-9_-]{1,31}$")  # 9p mount tags
