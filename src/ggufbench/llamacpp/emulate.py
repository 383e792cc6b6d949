"""A smaller GPU, emulated on a bigger one: a helper process holds device memory so that llama.cpp sees only
the configured amount free (config `gpu.emulate_free_gib`), and releases it when the job ends or is killed.

The helper talks to the CUDA driver (libcuda, shipped with the NVIDIA driver) through ctypes: no toolkit and
no framework. It takes a context on every visible device, allocates until the device reports the target
free, prints one JSON line saying what it did, and holds the memory until its stdin closes (the job ended,
or was killed and the kernel closed the pipe) or its parent dies (PR_SET_PDEATHSIG). The driver frees a
process's memory when the process exits, whatever way it exits.

What it cannot emulate: the smaller card's bandwidth, compute and PCIe link. Memory fits; speeds do not carry.
This file runs as a script too (`python emulate.py --free-mib N`), so it imports nothing from the package.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

MIB = 1 << 20
CHUNK = 2 << 30          # allocate in pieces of at most 2 GiB (one huge cudaMalloc can fail where pieces fit)
TOLERANCE_MIB = 64.0     # free memory this close to the target counts as the target
PR_SET_PDEATHSIG = 1


try:  # a GgufbenchError when imported from the package; a plain Exception when run as a script
    from ggufbench.core.errors import GgufbenchError as _Base
except ImportError:  # pragma: no cover - the helper process
    _Base = Exception


class EmulationError(_Base):
    """The memory could not be held as asked (no GPU, too little free, a driver error)."""


def _driver():
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        raise EmulationError(f"no GPU: the CUDA driver library libcuda.so.1 cannot be loaded ({e})") from e

    def check(status: int, what: str) -> None:
        if status != 0:
            msg = ctypes.c_char_p()
            cuda.cuGetErrorString(status, ctypes.byref(msg))
            text = msg.value.decode() if msg.value else f"error {status}"
            raise EmulationError(f"{what} failed: {text}")

    check(cuda.cuInit(0), "cuInit")
    return cuda, check


def hold(free_mib: float, at_most: bool = False) -> tuple[dict, list]:
    """Allocate on every visible device until it reports free_mib free; return (record, what keeps it held).
    at_most: a device with less free than that is left as it is (and the record says so) instead of refused."""
    cuda, check = _driver()
    count = ctypes.c_int()
    check(cuda.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
    if count.value == 0:
        raise EmulationError("no GPU: the CUDA driver sees no device")
    devices, keep = [], []
    for i in range(count.value):
        dev, ctx = ctypes.c_int(), ctypes.c_void_p()
        check(cuda.cuDeviceGet(ctypes.byref(dev), i), "cuDeviceGet")
        name = ctypes.create_string_buffer(256)
        check(cuda.cuDeviceGetName(name, 256, dev), "cuDeviceGetName")
        check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
        check(cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        check(cuda.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)), "cuMemGetInfo")
        before = free.value
        if before < free_mib * MIB - TOLERANCE_MIB * MIB and at_most:
            devices.append({"index": i, "name": name.value.decode(), "total_mib": total.value / MIB,
                            "free_before_mib": before / MIB, "held_mib": 0.0, "free_mib": before / MIB})
            continue
        if before < free_mib * MIB - TOLERANCE_MIB * MIB:
            raise EmulationError(
                f"gpu.emulate_free_gib asks for {free_mib:.0f} MiB free, but device {i} ({name.value.decode()}) "
                f"has only {before / MIB:.0f} MiB free of {total.value / MIB:.0f} MiB: another process holds the "
                "rest. Free the GPU, or emulate a smaller card")
        held = 0
        while free.value - free_mib * MIB > TOLERANCE_MIB * MIB:
            size = int(min(CHUNK, free.value - free_mib * MIB)) // (2 * MIB) * (2 * MIB)
            if size <= 0:
                break
            ptr = ctypes.c_uint64()
            check(cuda.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(size)), f"cuMemAlloc of {size / MIB:.0f} MiB")
            keep.append(ptr)
            held += size
            check(cuda.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)), "cuMemGetInfo")
        devices.append({"index": i, "name": name.value.decode(), "total_mib": total.value / MIB,
                        "free_before_mib": before / MIB, "held_mib": held / MIB, "free_mib": free.value / MIB})
    if not any(d["held_mib"] for d in devices) and at_most:
        return {"emulated": False, "target_free_mib": None, "devices": devices,
                "reason": f"the GPU has less than {free_mib:.0f} MiB free: it ran on what was free"}, keep
    return {"emulated": True, "target_free_mib": free_mib, "devices": devices}, keep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Hold GPU memory so that only --free-mib MiB stay free, until stdin "
                                             "closes.")
    ap.add_argument("--free-mib", type=float, required=True)
    ap.add_argument("--at-most", action="store_true", help="leave a device with less free memory as it is")
    args = ap.parse_args(argv)
    try:  # die with the parent even if the pipe stays open somewhere
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, 9)
    except (OSError, AttributeError):
        pass
    try:
        record, _keep = hold(args.free_mib, args.at_most)
    except EmulationError as e:
        print(json.dumps({"emulated": False, "error": str(e)}), flush=True)
        return 1
    print(json.dumps(record), flush=True)
    sys.stdin.read()  # until the job closes the pipe, or dies
    return 0


@contextmanager
def emulated_gpu(free_gib: float | None, gpu_build: bool, at_most: bool = False):
    """While inside: the GPU shows free_gib GiB free (gpu.emulate_free_gib). Yields the record every result row
    carries: {'emulated': False, 'reason'} when nothing is emulated, else what the helper held per device.
    Raises EmulationError (the job fails, naming why) when a CUDA build asks for it and it cannot be done;
    with at_most, a GPU that has less free than that is used as it is (a server check for a budget bigger
    than the card proves the command on less memory than the budget)."""
    if free_gib is None:
        yield {"emulated": False, "reason": "gpu.emulate_free_gib not set: the real GPU's free memory"}
        return
    if not gpu_build:
        yield {"emulated": False, "reason": "CPU build: llama.cpp uses no device memory, nothing to emulate"}
        return
    cmd = [sys.executable, str(Path(__file__).resolve()), "--free-mib", str(free_gib * 1024)]
    proc = subprocess.Popen(cmd + (["--at-most"] if at_most else []), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = {"error": f"the memory-holding helper exited ({proc.wait()}) without saying why"}
        if "error" in record:
            raise EmulationError(record.get("error", "the memory-holding helper failed"))
        yield record
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    raise SystemExit(main())
