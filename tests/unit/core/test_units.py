"""core.units: GiB and MiB are binary, as llama.cpp counts MiB."""

from ggufbench.core.units import GIB, MIB
from tests.support import DATA


def test_gib_and_mib_are_binary_as_llama_cpp_counts():
    assert GIB == 2**30 and MIB == 2**20 and GIB == 1024 * MIB
    # llama.cpp's own line pair: "allocating 2442.40 MiB on device 0" for "a buffer of size 2561041408"
    text = (DATA / "cuda-h200-oom" / "server_all_gpu.err").read_text()
    assert "allocating 2442.40 MiB" in text and "buffer of size 2561041408" in text
    assert f"{2561041408 / MIB:.2f}" == "2442.40"
