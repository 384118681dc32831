"""Generates softmaxd_client/softmax_pb2.py from the bundled proto at build time.

The protobuf module is not committed: protoc stamps it with the protobuf
version it targets and the runtime refuses older majors, so it is generated
by the grpcio-tools of the build and the runtime requirement follows from it.
"""

import re
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE / "src" / "softmaxd_client" / "proto"
PROTO = "softmax/v1/softmax.proto"


def generate(out_dir: Path) -> Path:
    """Runs protoc (from grpcio-tools) on the bundled proto; returns the module path."""
    from grpc_tools import protoc
    import grpc_tools

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            PROTO,
        ]
        if protoc.main(args) != 0:
            sys.exit(f"protoc failed on {PROTO_ROOT / PROTO}")
        out_dir.mkdir(parents=True, exist_ok=True)
        for suffix in (".py", ".pyi"):
            src = Path(tmp, "softmax", "v1", "softmax_pb2" + suffix)
            (out_dir / ("softmax_pb2" + suffix)).write_bytes(src.read_bytes())
    return out_dir / "softmax_pb2.py"


def protobuf_requirement() -> str:
    """The protobuf runtime range that the generated module accepts."""
    with tempfile.TemporaryDirectory() as tmp:
        text = generate(Path(tmp)).read_text()
    found = re.search(r"Protobuf Python Version: (\d+)\.(\d+)\.(\d+)", text)
    if not found:
        return "protobuf>=5.26"
    major, minor, patch = (int(v) for v in found.groups())
    return f"protobuf>={major}.{minor}.{patch},<{major + 1}"


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        generate(Path(self.build_lib) / "softmaxd_client")


setup(
    cmdclass={"build_py": BuildPyWithStubs},
    install_requires=["grpcio>=1.62", "numpy>=1.24", protobuf_requirement()],
)
