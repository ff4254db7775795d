"""One manager per workload type, all behind `zos.node.workloads.base.Manager`."""
